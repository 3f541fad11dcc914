"""Controlled worlds (medfilip.worlds, medfilip.phantom.primitives): tiny worlds at 32 px, the real
MiniLM (offline) for the text side, real rendering, real training."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from medfilip.evaluation.seeds import detectable_difference, paired_t_seeds
from medfilip.names import WorldArm
from medfilip.phantom.primitives import Placement, render_primitive
from medfilip.ssm import ssm_target
from medfilip.worlds import world as W
from medfilip.worlds.settings import WorldsConfig, load_worlds_config
from medfilip.worlds.sweep import text_side
from medfilip.worlds.train import Targets, arm_target, batch_order, train_arm

HIGHEST_RHO = 0.75  # what the fitted prototypes reach on the tiny config's renders (0.6 before the fit)
TINY = {
    "size": 32,
    "zones": ["lower"],
    "sides": ["right", "left"],
    "distance_patients": 6,
    "measure_patients": 6,
    "anneal_steps": 1500,
    "n_train": 96,
    "n_test": 64,
    "epochs": 1,
    "batch_size": 32,
}


@pytest.fixture(scope="module")
def cfg() -> WorldsConfig:
    return WorldsConfig(**TINY)


@pytest.fixture(scope="module")
def cache(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("worlds") / "texts.npz"


@pytest.fixture(scope="module")
def text(cfg, cache):
    return text_side(cfg, cache)


@pytest.fixture(scope="module")
def distances(cfg):
    return W.prototype_distances(cfg)


def test_gain_zero_severity_changes_no_pixel():
    for proto in W.PROTOTYPES[[0, 5, 10, 15]]:
        at = {s: render_primitive(proto, Placement("mid", "left", s), size=32, seed=3, gain=0.0) for s in W.SEVERITIES}
        assert np.array_equal(at["mild"], at["moderate"]) and np.array_equal(at["mild"], at["severe"])
        mild = render_primitive(proto, Placement("mid", "left", "mild"), size=32, seed=3, gain=1.0)
        severe = render_primitive(proto, Placement("mid", "left", "severe"), size=32, seed=3, gain=1.0)
        assert np.abs(mild.astype(int) - severe.astype(int)).sum() > 50
    # the finding draws inside its zone: another side leaves the image of that side alone
    a = render_primitive(W.PROTOTYPES[0], Placement("mid", "left", "severe"), size=32, seed=3)
    b = render_primitive(W.PROTOTYPES[8], Placement("mid", "left", "severe"), size=32, seed=3)
    assert not np.array_equal(a, b)


def test_prototype_checked():
    with pytest.raises(ValueError, match="6 values in \\[0, 1\\]"):
        render_primitive([0.5] * 5, Placement("mid", "left", "mild"), size=32, seed=0)
    with pytest.raises(ValueError, match="zone 'apex'"):
        Placement("apex", "left", "mild")


@pytest.mark.parametrize("rho", [-0.3, 0.0, 0.4, 0.7])
def test_permutation_reaches_rho_on_rendered_images(cfg, text, distances, rho):
    visual, measure = distances
    world = W.build_world(cfg, text, rho, 1.0, visual, measure)
    assert sorted(world.sigma) == list(range(16))
    assert abs(world.rho_search - rho) < 0.02
    # measured on renders of other patients
    assert abs(world.rho_measured - rho) <= 0.1
    # and a permutation keeps the set of visual distances
    assert np.allclose(np.sort(W.upper(world.category_visual())), np.sort(W.upper(visual)))


def test_highest_rho_is_reported_as_reached(cfg, text, distances):
    visual, measure = distances
    world = W.build_world(cfg, text, 1.0, 1.0, visual, measure)
    low = W.build_world(cfg, text, 0.0, 1.0, visual, measure)
    assert world.rho_measured > HIGHEST_RHO > low.rho_measured + 0.6


def test_fit_raises_the_reachable_correlation():
    from medfilip.worlds.prototypes import START, fit_prototypes

    rng = np.random.default_rng(0)
    text = np.abs(rng.normal(size=(16, 16)))
    text = (text + text.T) / 2
    np.fill_diagonal(text, 0)

    def euclid(p):  # a cheap distance: the fit works on any (P, P) distance function
        return np.linalg.norm(p[:, None] - p[None], axis=-1)

    seen = []
    fitted, r = fit_prototypes(text, euclid, start=START, iterations=300, seed=1, progress=lambda i, r: seen.append(r))
    assert fitted.shape == START.shape and fitted.min() >= 0 and fitted.max() <= 1
    assert r == pytest.approx(W.mantel(euclid(fitted), text)) and r > W.mantel(euclid(START), text) + 0.2
    assert seen == sorted(seen) and len(seen) == 300  # a move is kept only when it raises r
    again, r2 = fit_prototypes(text, euclid, start=START, iterations=300, seed=1)
    assert r2 == r and np.array_equal(again, fitted)


def test_oracle_target_equals_primitive_distances(cfg, text, distances):
    world = W.build_world(cfg, text, 0.4, 1.0, *distances)
    proto = W.PROTOTYPES[world.sigma]
    rows = []
    for c, s, loc in text.labels:
        p = proto[W.CATEGORIES.index(c)].copy()
        shift = {"mild": -0.5, "moderate": 0.0, "severe": 0.5}[s]
        p[:2] += shift
        rows.append([*p, 0.0, 0.5 * loc.startswith("left")])  # one zone: its coordinate is 0
    v = np.array(rows)
    d = np.linalg.norm(v[:, None] - v[None], axis=-1)
    oracle = world.oracle_similarity()
    np.testing.assert_allclose(oracle, 1 - d / d.max(), atol=1e-12)
    targets = Targets.of(world)
    ids = torch.tensor([0, 7, 7, 40, 95])
    got = arm_target(WorldArm.ssm_oracle.value, targets, ids, seed=0)
    want = targets.oracle_calibration.apply(torch.from_numpy(oracle).float()[ids][:, ids])
    want[ids[:, None] == ids[None, :]] = 1.0
    torch.testing.assert_close(got, want)
    assert targets.oracle_calibration.temperature > 0


def test_similarity_replaces_the_cosines():
    vectors = torch.nn.functional.normalize(torch.randn(4, 8), dim=-1)
    sim = torch.rand(4, 4)
    got = ssm_target([[0], [2, 3]], [1, 2], vectors, similarity=sim)
    want = torch.stack([sim[0, [1, 2]], torch.maximum(sim[2, [1, 2]], sim[3, [1, 2]])])
    torch.testing.assert_close(got, want)
    with pytest.raises(ValueError, match="similarity of shape"):
        ssm_target([[0]], [1], vectors, similarity=torch.rand(3, 3))


def test_arm_targets(cfg, text, distances):
    world = W.build_world(cfg, text, 0.4, 1.0, *distances)
    targets = Targets.of(world)
    ids = torch.tensor(
        [
            text.index[("nodule", "mild", "right lower zone")],
            text.index[("mass", "severe", "right lower zone")],
            text.index[("nodule", "severe", "right lower zone")],
        ]
    )
    identity = arm_target("identity", targets, ids, 0)
    assert torch.equal(identity, torch.eye(3))
    multi = arm_target("multi_hot", targets, ids, 0)
    assert multi[0, 2] == 1 and multi[0, 1] == 0
    ssm = arm_target("ssm", targets, ids, 0)
    raw = arm_target("ssm_raw", targets, ids, 0)
    assert torch.all(torch.diag(ssm) == 1) and 0 < ssm[0, 2] < 1
    assert raw[0, 1] > ssm[0, 1]  # the calibration pulls cross-category cosines down
    shuffled = arm_target("ssm_shuffled", targets, ids, 0)
    torch.testing.assert_close(torch.sort(shuffled, 1).values, torch.sort(ssm, 1).values)


def test_arms_share_initialisation_and_batches(cfg, text, distances):
    world = W.build_world(cfg, text, 0.4, 1.0, *distances)
    samples = W.draw_samples(cfg, "train", cfg.n_train)
    images = world.render(samples)
    ids = np.array([text.index[(s.category, s.placement.severity, s.placement.location)] for s in samples])
    a = train_arm(world, "identity", images, ids, seed=3, keep_initial=True)
    b = train_arm(world, "ssm", images, ids, seed=3, keep_initial=True)
    c = train_arm(world, "identity", images, ids, seed=4, keep_initial=True)
    assert all(torch.equal(a.initial_state[k], b.initial_state[k]) for k in a.initial_state)
    assert not torch.equal(a.initial_state["text.weight"], c.initial_state["text.weight"])
    assert len(a.batches) == len(b.batches) == 3 and all(np.array_equal(x, y) for x, y in zip(a.batches, b.batches))
    assert not all(np.array_equal(x, y) for x, y in zip(a.batches, c.batches))
    assert not torch.equal(a.model.text.weight, b.model.text.weight)  # the targets differ, so the steps do
    order = batch_order(100, 32, 2, seed=1)
    assert [len(x) for x in order] == [32, 32, 32, 4] * 2
    assert sorted(np.concatenate(order[:4])) == list(range(100))


def test_noise_rate_is_eta():
    cats = [c for c in W.trained_categories() for _ in range(2000)]
    for eta in (0.0, 0.15, 0.3):
        noisy = W.noisy_categories(cats, eta, seed=0)
        rate = np.mean([a != b for a, b in zip(cats, noisy)])
        assert abs(rate - eta) < 0.01
        assert all(W.FAMILY_OF[a] == W.FAMILY_OF[b] for a, b in zip(cats, noisy))
        assert all(W.role(b) != "held_out" for b in noisy)
    assert W.noisy_categories(cats[:50], 0.15, seed=0) == W.noisy_categories(cats[:50], 0.15, seed=0)


def test_samples_hold_out_combos_and_categories(cfg):
    train = W.draw_samples(cfg, "train", 400)
    test = W.draw_samples(cfg, "test", 400)
    held = W.held_out_combos()
    assert len(held) == 12 and not any((s.category, s.placement.severity) in held for s in train)
    assert not any(W.role(s.category) == "held_out" for s in train)
    assert any(W.role(s.category) == "held_out" for s in test)
    counts = {r: sum(W.role(s.category) == r for s in train) for r in ("frequent", "rare")}
    assert counts["frequent"] > 4 * counts["rare"] > 0
    assert {s.patient for s in train}.isdisjoint({s.patient for s in test})


def test_text_cache_is_reused_only_for_the_same_texts(cfg, cache, text, tmp_path):
    again = text_side(cfg, cache, encode=lambda texts: pytest.fail("embedded again"))
    assert again.texts == text.texts and np.array_equal(again.vectors, text.vectors)
    copy = tmp_path / "texts.npz"
    copy.write_bytes(cache.read_bytes())
    calls = []

    def fake(texts):
        calls.append(texts)
        return np.random.default_rng(0).normal(size=(len(texts), 8)).astype(np.float32)

    side = text_side(cfg.model_copy(update={"zones": ["upper"]}), copy, encode=fake)
    assert len(calls) == 1 and side.texts[0].startswith("mild right upper zone consolidation")
    assert text_side(cfg.model_copy(update={"zones": ["upper"]}), copy, encode=fake).vectors.shape[1] == 8
    assert len(calls) == 1  # the rewritten cache is reused


def test_labels_use_the_template(text):
    i = text.index[("pleural effusion", "severe", "right lower zone")]
    assert text.texts[i].startswith("severe right lower zone pleural effusion, where pleural effusion is ")
    assert all(any(s in t for s in W.SEVERITIES) for t in text.texts)


def test_settings_errors(tmp_path):
    bad = tmp_path / "w.yaml"
    bad.write_text(yaml.safe_dump({"worlds": {"zones": ["apex"]}}))
    with pytest.raises(ValueError, match=r"w.yaml: worlds.zones: .*unknown zones"):
        load_worlds_config(bad)
    pred = {
        "id": "X",
        "text": "t",
        "arm": "ssm",
        "versus": "identity",
        "metric": "auc",
        "rho": "eq1",
        "expect": "greater",
    }
    bad.write_text(yaml.safe_dump({"worlds": {"predictions": [pred]}}))
    with pytest.raises(ValueError, match=r"worlds.predictions.0.metric: .*unknown metric 'auc'"):
        load_worlds_config(bad)
    bad.write_text(yaml.safe_dump({"worlds": {"arms": ["ssm"]}}))
    with pytest.raises(ValueError, match="must include identity"):
        load_worlds_config(bad)
    shipped = load_worlds_config(Path(__file__).parents[2] / "config/worlds.yaml")
    assert {p.id for p in shipped.predictions} >= {"P1", "P3", "P6"}
    assert len(shipped.on_gpu().seeds) == 36 and shipped.on_gpu().size == shipped.size == 32
    assert shipped.endpoint.prediction == "P8" and shipped.endpoint.difference_that_matters == 0.01
    bad.write_text(
        yaml.safe_dump({"worlds": {"predictions": [{**pred, "metric": "cat_auc"}], "endpoint": {"prediction": "Y"}}})
    )
    with pytest.raises(
        ValueError, match=r"w.yaml: worlds: .*endpoint.prediction 'Y' is not one of the predictions \['X'\]"
    ):
        load_worlds_config(bad)
    # runs are reused and summarised only under the same key: the grid does not change it, a size does
    base = WorldsConfig()
    assert base.key() == WorldsConfig(seeds=[5], rhos=[0.0], device="cpu").key() != WorldsConfig(n_train=99).key()


def test_key_follows_the_prototypes(monkeypatch):
    from medfilip.worlds import prototypes

    before = WorldsConfig().key()
    monkeypatch.setattr(prototypes, "PROTOTYPES", prototypes.START)
    assert WorldsConfig().key() != before


def test_cli_end_to_end(tmp_path, cache):
    from medfilip.pipeline.cli import main

    conf = tmp_path / "worlds.yaml"
    conf.write_text(
        yaml.safe_dump(
            {
                "worlds": {
                    **TINY,
                    "rhos": [0.0, 1.0],
                    "gains": [1.0],
                    "etas": [0.0],
                    "seeds": [0, 1],
                    "arms": ["identity", "ssm"],
                    "n_train": 48,
                    "n_test": 48,
                    "distance_patients": 3,
                    "measure_patients": 3,
                    "anneal_steps": 300,
                    "predictions": [
                        {
                            "id": "P",
                            "text": "t",
                            "arm": "ssm",
                            "versus": "identity",
                            "metric": "cat_auc",
                            "rho": "eq1",
                            "expect": "greater",
                        }
                    ],
                    "endpoint": {"prediction": "P", "difference_that_matters": 0.02},
                }
            }
        )
    )
    out = {
        k: tmp_path / v
        for k, v in {
            "runs": "runs.csv",
            "table": "t.csv",
            "verdicts": "v.csv",
            "figure": "f.png",
            "show": "s.png",
        }.items()
    }
    args = ["world", "--worlds-config", str(conf), "--text-cache", str(cache)]
    assert main([*args, "--run", "--runs", str(out["runs"])]) == 0
    runs = list(csv.DictReader(out["runs"].open()))
    assert len(runs) == 2 * 2 * 2 and {r["config"] for r in runs} == {load_worlds_config(conf).key()}
    published = tmp_path / "published.csv"
    assert main([*args, "--run", "--runs", str(out["runs"]), "--publish", str(published)]) == 0  # nothing left
    assert published.read_text() == out["runs"].read_text()
    assert len(list(csv.DictReader(out["runs"].open()))) == 8
    a = [*args, "--summarise", "--runs", str(out["runs"]), "--table", str(out["table"])]
    assert main([*a, "--verdicts", str(out["verdicts"]), "--figure", str(out["figure"])]) == 0
    table = list(csv.DictReader(out["table"].open()))
    assert len(table) == 2 * 2 * 8 and {r["n"] for r in table} == {"2"}
    row = next(r for r in table if r["arm"] == "ssm" and r["metric"] == "cat_auc" and r["rho"] == "1.0")
    ssm = [float(r["cat_auc"]) for r in runs if r["arm"] == "ssm" and r["rho"] == "1.0"]
    ident = [float(r["cat_auc"]) for r in runs if r["arm"] == "identity" and r["rho"] == "1.0"]
    assert float(row["mean"]) == pytest.approx(np.mean(ssm), abs=1e-6)
    assert float(row["delta_vs_identity"]) == pytest.approx(np.mean(ssm) - np.mean(ident), abs=1e-6)
    verdict = next(csv.DictReader(out["verdicts"].open()))
    assert verdict["id"] == "P" and verdict["n"] == "2" and verdict["verdict"] in ("supported", "not supported")
    # the power statement: SD of the paired differences, pairs for the endpoint's 0.02, the detectable difference
    diffs = np.array(ssm) - np.array(ident)
    assert verdict["primary"] == "yes" and float(verdict["sd"]) == pytest.approx(diffs.std(ddof=1), abs=1e-6)
    assert verdict["pairs_for_0.02"] == str(paired_t_seeds(0.02, diffs.std(ddof=1)) or "")
    assert float(verdict["detectable"]) == pytest.approx(detectable_difference(2, diffs.std(ddof=1)), abs=1e-6)
    assert out["figure"].stat().st_size > 10_000
    assert main([*args, "--show", str(out["show"]), "--rho", "0.4"]) == 0
    assert out["show"].stat().st_size > 10_000
