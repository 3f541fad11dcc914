"""``medfilip world --run --jobs N``: the sweep over N spawned processes (medfilip.worlds.jobs.run_sweep_jobs).

A micro grid (2 worlds x 2 arms, one seed, 48 images at 32 px), real rendering and training; the text
side's vectors come from a seeded fake encoder written into the text cache (the CLI reuses the cache), so
no MiniLM is loaded."""

from __future__ import annotations

import csv
import logging
import re
from pathlib import Path

import numpy as np
import pytest
import yaml

from medfilip.pipeline.cli import main
from medfilip.worlds.jobs import read_runs
from medfilip.worlds.settings import load_worlds_config
from medfilip.worlds.sweep import text_side

MICRO = {
    "size": 32,
    "zones": ["lower"],
    "sides": ["right", "left"],
    "distance_patients": 3,
    "measure_patients": 3,
    "anneal_steps": 300,
    "n_train": 48,
    "n_test": 48,
    "epochs": 1,
    "batch_size": 16,
    "rhos": [0.0, 1.0],
    "gains": [1.0],
    "etas": [0.0],
    "seeds": [0],
    "arms": ["identity", "ssm"],
}
KEY = ("arm", "rho", "gain", "eta", "seed", "config")
TRAINED = re.compile(r"worlds: (identity|ssm) rho (\S+) g \S+ eta \S+ seed (\d+): ")


def fake_encoder(texts: list[str]) -> np.ndarray:
    return np.random.default_rng(len(texts)).normal(size=(len(texts), 16)).astype(np.float32)


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """The micro config (and a copy on cuda), its text cache, and the rows of one ``--jobs 1`` sweep."""
    root = tmp_path_factory.mktemp("jobs")
    conf, on_cuda = root / "worlds.yaml", root / "worlds_cuda.yaml"
    conf.write_text(yaml.safe_dump({"worlds": MICRO}))
    on_cuda.write_text(yaml.safe_dump({"worlds": {**MICRO, "device": "cuda"}}))
    cache = root / "texts.npz"
    text_side(load_worlds_config(conf), cache, encode=fake_encoder)
    args = ["world", "--worlds-config", str(conf), "--text-cache", str(cache)]
    runs = root / "one" / "runs.csv"
    assert main([*args, "--run", "--runs", str(runs), "--jobs", "1"]) == 0
    return {"conf": conf, "cuda": on_cuda, "cache": cache, "args": args, "rows": read(runs)}


def read(path: Path) -> list[dict]:
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


def without_seconds(rows: list[dict]) -> list[dict]:
    return [{k: v for k, v in r.items() if k != "seconds"} for r in rows]


def write(path: Path, rows: list[dict]) -> None:
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def test_two_jobs_give_the_rows_of_one(world, tmp_path, capfd, caplog):
    caplog.set_level(logging.INFO)  # the level the workers take (the CLI sets INFO; pytest keeps WARNING)
    one = world["rows"]
    assert len(one) == 2 * 2 and len({tuple(r[k] for k in KEY) for r in one}) == 4
    runs = tmp_path / "runs.csv"
    assert main([*world["args"], "--run", "--runs", str(runs), "--jobs", "2"]) == 0
    err = capfd.readouterr().err
    # each world was trained in its own job, which logged to stderr
    assert {m.group(2) for m in re.finditer(r"\[job 0/2\]: " + TRAINED.pattern, err)} == {"0.00"}
    assert {m.group(2) for m in re.finditer(r"\[job 1/2\]: " + TRAINED.pattern, err)} == {"1.00"}
    two = read(runs)
    # every metric equal, in the same order (only the wall time of a run differs)
    assert without_seconds(two) == without_seconds(one)
    assert list(tmp_path.glob("runs.job*.csv")) == []
    before = runs.read_text()
    assert main([*world["args"], "--run", "--runs", str(runs), "--jobs", "2"]) == 0  # nothing left to train
    assert "[job" not in capfd.readouterr().err and runs.read_text() == before


def test_failed_job_keeps_files_and_a_rerun_trains_only_the_missing_runs(world, tmp_path, capfd, caplog):
    import torch

    if torch.cuda.is_available():
        pytest.skip("the failure comes from device cuda on a machine without CUDA")
    caplog.set_level(logging.INFO)
    one = world["rows"]
    mark = [{**r, "seconds": "-1"} for r in one]  # rows already there: never replaced by a retrained one
    runs, leftover = tmp_path / "runs.csv", tmp_path / "runs.job2of3.csv"  # left by an interrupted --jobs 3
    # the runs file: world rho 0 whole, a row twice; the job file: the first run of world rho 1 and a row
    # cut short by a killed worker (dropped at the merge, trained again)
    rho0 = [r for r in mark if r["rho"] == "0.0"]
    rho1 = [r for r in mark if r["rho"] == "1.0"]
    write(runs, [*rho0, rho0[1]])
    write(leftover, rho1[:1])
    with leftover.open("a") as f:
        f.write(",".join(list(rho1[1].values())[:-3]))
    # a failing job (device cuda without CUDA): a clear error naming its file; nothing merged, nothing lost
    cuda = ["world", "--worlds-config", str(world["cuda"]), "--text-cache", str(world["cache"])]
    with pytest.raises(SystemExit) as err:
        main([*cuda, "--run", "--runs", str(runs), "--jobs", "2"])
    message = str(err.value)
    assert f"1 of 1 jobs failed: {tmp_path / 'runs.job1of2.csv'} (exit code 1)" in message
    assert "run again to resume" in message
    assert "worlds.device = cuda" in capfd.readouterr().err  # the worker's error reached stderr
    assert leftover.exists() and len(read(runs)) == 3
    # what --summarise reads: the runs file and its job files, each run once, the cut row left out
    assert read_runs(runs) == [*rho0, rho1[0]]
    # the rerun starts only the job whose worlds have runs left, and trains only the missing run
    assert main([*world["args"], "--run", "--runs", str(runs), "--jobs", "2"]) == 0
    err = capfd.readouterr().err
    assert "[job 0/2]" not in err
    trained = [m.groups() for m in re.finditer(r"\[job 1/2\]: " + TRAINED.pattern, err)]
    assert trained == [(rho1[1]["arm"], "1.00", rho1[1]["seed"])]
    merged = read(runs)
    keys = [tuple(r[k] for k in KEY) for r in merged]
    assert len(keys) == len(set(keys)) == 4  # each run once
    assert [r for r in merged if r["seconds"] == "-1"] == [*rho0, rho1[0]]  # kept, not retrained
    assert without_seconds(merged) == without_seconds(one)  # in the order of one process, the same numbers
    assert list(tmp_path.glob("runs.job*.csv")) == []
    # one job (in this process) reads a leftover job file too: it trains only the run in neither file,
    # then folds the job file in
    write(runs, merged[:2])
    write(tmp_path / "runs.job1of2.csv", merged[1:3])
    caplog.clear()
    assert main([*world["args"], "--run", "--runs", str(runs)]) == 0
    trained = [m for r in caplog.records if (m := TRAINED.match(r.getMessage()))]
    last = merged[3]
    assert [(m.group(1), m.group(2), m.group(3)) for m in trained] == [(last["arm"], "1.00", last["seed"])]
    assert without_seconds(read(runs)) == without_seconds(merged) and list(tmp_path.glob("runs.job*.csv")) == []


def test_jobs_and_shard_refused(world, tmp_path):
    runs = tmp_path / "runs.csv"
    with pytest.raises(SystemExit, match=r"--jobs 2 with --shard 1/2: give one or the other"):
        main([*world["args"], "--run", "--runs", str(runs), "--jobs", "2", "--shard", "1/2"])
    with pytest.raises(SystemExit, match=r"--jobs -1: give N >= 1"):
        main([*world["args"], "--run", "--runs", str(runs), "--jobs", "-1"])
    assert not runs.exists()
