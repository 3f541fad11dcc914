"""Replicate worlds (medfilip.worlds.replicates): per-world paired means, the spread between worlds, the slope on ρ."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from medfilip.worlds.replicates import between_worlds, slope_interval, world_means


def rows_of(
    effect_of_world: dict[tuple[int, float], float], measured: dict[float, float], seeds: int = 4
) -> list[dict]:
    """Runs where ssm − identity on cat_auc is ``effect`` in every seed of a world, other arms equal to identity."""
    rows = []
    for (ws, rho), effect in effect_of_world.items():
        for seed in range(seeds):
            base = 0.6 + 0.01 * seed
            for arm, value in (("identity", base), ("ssm", base + effect), ("multi_hot", base), ("ssm_oracle", base)):
                rows.append(
                    {
                        "world_seed": ws,
                        "arm": arm,
                        "rho": rho,
                        "gain": 1.0,
                        "eta": 0.0,
                        "seed": seed,
                        "rho_measured": measured[rho] + 0.01 * ws,
                        "cat_auc": value,
                    }
                )
    return rows


def test_world_means_pair_by_seed():
    rows = rows_of({(0, 0.0): 0.02, (1, 0.0): -0.01}, {0.0: 0.0})
    rows = [r for r in rows if not (r["world_seed"] == 1 and r["arm"] == "identity" and r["seed"] == 3)]
    got = world_means(rows, "ssm", "identity", "cat_auc")
    assert [(w["world_seed"], w["seeds"]) for w in got] == [(0, 4), (1, 3)]  # seed 3 of world 1 has no pair
    assert got[0]["mean"] == pytest.approx(0.02) and got[1]["mean"] == pytest.approx(-0.01)


def test_between_worlds_and_slope():
    effects = {(0, 0.0): 0.01, (1, 0.0): 0.03, (2, 0.0): 0.02, (0, 1.0): -0.02, (1, 1.0): 0.0, (2, 1.0): -0.04}
    table = between_worlds(rows_of(effects, {0.0: 0.0, 1.0: 0.8}))
    ssm = {r["rho"]: r for r in table if r["contrast"] == "ssm - identity"}
    at0 = ssm[0.0]
    assert at0["worlds"] == 3 and at0["mean"] == pytest.approx(0.02)
    assert at0["sd_between_worlds"] == pytest.approx(np.std([0.01, 0.03, 0.02], ddof=1), abs=1e-6)
    half = stats.t.ppf(0.975, 2) * np.std([0.01, 0.03, 0.02], ddof=1) / np.sqrt(3)
    assert at0["high"] - at0["mean"] == pytest.approx(half, abs=1e-6)
    x = [0.0, 0.01, 0.02, 0.8, 0.81, 0.82]
    y = [0.01, 0.03, 0.02, -0.02, 0.0, -0.04]
    fit = stats.linregress(x, y)
    assert ssm["slope"]["mean"] == pytest.approx(fit.slope, abs=1e-6) and ssm["slope"]["worlds"] == 6
    assert ssm["slope"]["low"] < fit.slope < ssm["slope"]["high"] < 0  # a clear downward slope
    flat = {r["rho"]: r for r in table if r["contrast"] == "multi_hot - identity"}
    assert flat[1.0]["mean"] == 0 and flat[1.0]["sd_between_worlds"] == 0


def test_slope_needs_three_worlds_and_spread():
    assert np.isnan(slope_interval([0.1, 0.2], [0.0, 1.0])[0])
    assert np.isnan(slope_interval([0.5, 0.5, 0.5], [0.0, 1.0, 2.0])[0])


def test_cli_replicates_train_other_worlds_and_read_the_sweeps(tmp_path, monkeypatch):
    import csv

    import yaml

    from medfilip.pipeline.cli import main
    from medfilip.worlds.settings import load_worlds_config
    from medfilip.worlds.sweep import text_side

    monkeypatch.chdir(tmp_path)  # the replicate runs go under results/worlds/replicates here
    micro = {
        "size": 32,
        "zones": ["lower"],
        "sides": ["right"],
        "distance_patients": 3,
        "measure_patients": 3,
        "anneal_steps": 200,
        "n_train": 32,
        "n_test": 32,
        "epochs": 1,
        "batch_size": 16,
        "rhos": [0.0, 1.0],
        "gains": [1.0],
        "etas": [0.0],
        "seeds": [0, 1],
        "arms": ["identity", "ssm", "multi_hot", "ssm_oracle"],
    }
    conf = tmp_path / "worlds.yaml"
    conf.write_text(yaml.safe_dump({"worlds": micro}))
    cache = tmp_path / "texts.npz"
    rng = np.random.default_rng(0)
    text_side(load_worlds_config(conf), cache, encode=lambda t: rng.normal(size=(len(t), 16)).astype(np.float32))
    args = ["world", "--worlds-config", str(conf), "--text-cache", str(cache), "--runs", str(tmp_path / "runs.csv")]
    assert main([*args, "--run"]) == 0
    table = tmp_path / "rep.csv"
    assert main([*args, "--replicates", "5", "--replicate-seeds", "2", "--replicates-table", str(table)]) == 0
    replicate = list(csv.DictReader((tmp_path / "results/worlds/replicates/runs.w5.csv").open()))
    assert len(replicate) == 4 * 2 * 2 and {r["config"] for r in replicate} != {"", None}
    own = {r["config"] for r in csv.DictReader((tmp_path / "runs.csv").open())}
    assert own.isdisjoint({r["config"] for r in replicate})  # another world seed: another key
    rows = {(r["contrast"], r["rho"]): r for r in csv.DictReader(table.open())}
    assert rows[("ssm - identity", "0.0")]["worlds"] == "2" and rows[("ssm - identity", "slope")]["worlds"] == "4"
