"""The training loop: a step lowers the loss, a killed run resumes to the same weights, DDP ranks
agree, and the CLI writes the run folder and the curves figure."""

from __future__ import annotations

import csv
import os
import socket
from pathlib import Path

import pytest
import torch
import yaml

from medfilip.training.settings import ModelSettings, RunSettings, TrainingConfig
from medfilip.training.train import train_run

torch.set_num_threads(1)

CFG = TrainingConfig(
    model=ModelSettings(embed_dim=32, max_length=32, text_trainable_layers=1),
    epochs=2,
    batch_size=8,
    num_workers=0,
    checkpoint_every=2,
    device="cpu",
    mask_probability=0.5,
    augment=True,
)


def _train(corpus, out: Path, cfg: TrainingConfig = CFG, run: str = "medfilip", **kwargs):
    return train_run(
        run,
        cfg,
        images_dir=corpus["images"],
        labels_path=corpus["labels"],
        embeddings_path=corpus["embeddings"],
        out_dir=out,
        progress=False,
        **kwargs,
    )


def _log_rows(path: Path) -> list[dict]:
    with open(path, newline="") as fh:
        return [{k: v for k, v in row.items() if k != "images_per_s"} for row in csv.DictReader(fh)]


def test_one_step_lowers_the_loss_on_a_fixed_batch(corpus):
    from medfilip.images.store import ImageStore
    from medfilip.training.data import (
        BatchCollator,
        PretrainingDataset,
        read_label_table,
        training_items,
    )
    from medfilip.training.loss import ImageTextMatchingLoss, total_loss
    from medfilip.training.model import build_model

    labels, by_report = read_label_table(corpus["labels"], "triplet_explanation")
    store = ImageStore.open(corpus["images"])
    positions, ids, _ = training_items(store, by_report)
    dataset = PretrainingDataset(store, positions, ids, labels, mask_probability=0.0, augment=False, seed=0)
    model = build_model(CFG.model, store.size).train()
    vectors = torch.nn.functional.normalize(torch.randn(len(labels), 8), dim=1)
    batch = BatchCollator("ssm", model.text.tokenizer, 32, vectors=vectors, categories=labels.category_ids())(
        [dataset[(0, i)] for i in range(8)]
    )
    loss_fn = ImageTextMatchingLoss("mse_ce")
    optimizer = torch.optim.SGD(model.trainable_parameters(), lr=0.05)

    def loss_now():
        torch.manual_seed(0)  # the same dropout mask in the trained text layer each time
        out = model(batch.images, batch.input_ids, batch.attention_mask)
        return total_loss(loss_fn(out["image_features"], out["text_features"], out["logit_scale"], batch.target))

    before = loss_now()
    optimizer.zero_grad()
    before.backward()
    optimizer.step()
    with torch.no_grad():
        after = loss_now()
    assert after.item() < before.item() - 1e-3


def test_killed_run_resumes_to_identical_weights(corpus, tmp_path):
    straight = _train(corpus, tmp_path / "straight", return_model=True)
    assert straight.finished and straight.steps == 6  # 25 images // 8 = 3 steps x 2 epochs

    killed = _train(corpus, tmp_path / "resumed", stop_after_steps=3)
    assert not killed.finished and killed.steps == 3
    assert (tmp_path / "resumed" / "checkpoint.pt").exists() and not (tmp_path / "resumed" / "model.pt").exists()
    # the resumed process picks up the step-2 checkpoint, replays step 3, and uses a worker process
    resumed = _train(corpus, tmp_path / "resumed", cfg=CFG.model_copy(update={"num_workers": 1}), return_model=True)
    assert resumed.finished and resumed.steps == 6

    a, b = straight.model.state_dict(), resumed.model.state_dict()
    assert a.keys() == b.keys()
    different = [k for k in a if not torch.equal(a[k], b[k])]
    assert not different, different[:5]
    assert _log_rows(tmp_path / "straight" / "train_log.csv") == _log_rows(tmp_path / "resumed" / "train_log.csv")

    # outputs: model.pt, config.yaml with the run's settings and what was measured
    run_config = yaml.safe_load((tmp_path / "straight" / "config.yaml").read_text())
    assert run_config["run"] == {
        "name": "medfilip",
        "label_variant": "triplet_explanation",
        "target": "ssm",
        "loss": "mse_ce",
        "seed": None,
        "eval_text": None,
    }
    assert run_config["measured"]["steps"] == 6 and run_config["measured"]["n_dropped"] == 1
    assert "runs" not in run_config
    header = (tmp_path / "straight" / "train_log.csv").read_text().splitlines()[0]
    assert header == "step,epoch,loss,mse_loss,ce_loss,lr,logit_scale,images_per_s"


def test_checkpoint_of_other_settings_is_not_resumed(corpus, tmp_path, caplog):
    _train(corpus, tmp_path / "run", stop_after_steps=2)
    other = CFG.model_copy(update={"optimiser": CFG.optimiser.model_copy(update={"lr": 0.01}), "epochs": 1})
    result = _train(corpus, tmp_path / "run", cfg=other)
    assert "written under other settings" in caplog.text
    assert result.finished and result.steps == 3


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ddp_worker(rank: int, world: int, port: int, corpus: dict, out: str) -> None:
    os.environ.update(
        MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank)
    )
    torch.set_num_threads(1)
    result = _train(corpus, Path(out) / "run", stop_after_steps=1, return_model=True)
    torch.save(result.model.state_dict(), Path(out) / f"rank{rank}.pt")


@pytest.mark.slow
def test_ddp_ranks_hold_identical_weights_after_a_step(corpus, tmp_path):
    import torch.multiprocessing as mp

    from medfilip.training.model import build_model

    mp.spawn(_ddp_worker, args=(2, _free_port(), corpus, str(tmp_path)), nprocs=2, join=True)
    rank0 = torch.load(tmp_path / "rank0.pt")
    rank1 = torch.load(tmp_path / "rank1.pt")
    # parameters are identical (DDP averaged the gradients); BatchNorm running statistics are each
    # rank's own until the next forward broadcasts rank 0's, and rank 0's are the ones saved
    different = [k for k in rank0 if not torch.equal(rank0[k], rank1[k])]
    assert different and all(k.endswith(("running_mean", "running_var")) for k in different), different[:5]
    initial = build_model(CFG.model, 32, seed=CFG.seed).state_dict()
    moved = [k for k in initial if k.startswith("image.") and not torch.equal(initial[k], rank0[k])]
    assert moved, "a step was taken"


def test_cli_trains_a_run_and_draws_the_curves(corpus, tmp_path, monkeypatch):
    from medfilip.pipeline.cli import main

    config = tmp_path / "config.yaml"
    settings = CFG.model_dump(mode="json", exclude={"runs"})
    settings.update(
        epochs=1,
        runs={
            "tiny_convirt": RunSettings(label_variant="report", target="identity", loss="infonce").model_dump(
                mode="json"
            )
        },
    )
    config.write_text(yaml.safe_dump({"training": settings}))
    out = tmp_path / "models" / "tiny_convirt"
    code = main(
        [
            "-c",
            str(config),
            "train",
            "--run",
            "tiny_convirt",
            "--images",
            str(corpus["images"]),
            "--labels",
            str(corpus["labels"]),
            "--out",
            str(out),
            "--no-progress",
        ]
    )
    assert code == 0
    assert {"model.pt", "train_log.csv", "config.yaml", "checkpoint.pt", "text_encoder"} <= {
        p.name for p in out.iterdir()
    }
    figure = tmp_path / "figures" / "train_curves.png"
    assert main(["train-curves", "--runs", str(out), str(tmp_path / "models" / "absent"), "--out", str(figure)]) == 0
    assert figure.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert main(["-c", str(config), "train", "--run", "nope", "--out", str(out)]) == 1


def test_bf16_autocast_and_channels_last_compose_on_cpu(corpus, tmp_path):
    """The GPU path's pieces (bf16 autocast, channels_last images) run on CPU too, so a CPU-only
    machine catches dtype and memory-format mistakes before a GPU job does."""
    from medfilip.training.loss import ImageTextMatchingLoss, total_loss
    from medfilip.training.model import build_model
    from medfilip.training.precision import autocast

    model = build_model(CFG.model, 32).train()
    model.image.to(memory_format=torch.channels_last)
    model.channels_last = True
    images = torch.randint(0, 255, (4, 32, 32), dtype=torch.uint8)
    tokens = model.text.tokenizer(
        ["mild left base atelectasis", "normal", "small effusion", "cardiomegaly"], padding=True, return_tensors="pt"
    )
    with autocast("bf16", torch.device("cpu")):
        out = model(images, tokens["input_ids"], tokens["attention_mask"])
    assert out["image_features"].shape == (4, CFG.model.embed_dim)
    loss = total_loss(
        ImageTextMatchingLoss("mse_ce")(out["image_features"], out["text_features"], out["logit_scale"], torch.eye(4))
    )
    assert loss.dtype == torch.float32 and torch.isfinite(loss)
    loss.backward()
    conv = next(m for m in model.image.modules() if isinstance(m, torch.nn.Conv2d))
    assert conv.weight.grad is not None and torch.isfinite(conv.weight.grad).all()
    assert conv.weight.is_contiguous(memory_format=torch.channels_last)

    # and the loop with precision bf16 trains and saves a run
    result = _train(corpus, tmp_path / "bf16", cfg=CFG.model_copy(update={"precision": "bf16", "epochs": 1}))
    assert result.finished and (tmp_path / "bf16" / "model.pt").exists()
    assert all(float(r["loss"]) > 0 for r in _log_rows(tmp_path / "bf16" / "train_log.csv"))


def test_fractional_epochs_end_inside_the_last_epoch(corpus, tmp_path):
    # 25 images // 8 = 3 steps per epoch; 1.34 epochs = round(4.02) = 4 steps, the second epoch cut after 1
    cfg = CFG.model_copy(update={"epochs": 1.34, "augment": False, "checkpoint_every": 100})
    result = _train(corpus, tmp_path / "frac", cfg, resume=False)
    assert result.finished and result.steps == 4 and result.epochs_done == 1
    log = _log_rows(tmp_path / "frac" / "train_log.csv")
    assert [(int(r["step"]), int(r["epoch"])) for r in log] == [(1, 0), (2, 0), (3, 0), (4, 1)]
    # a run's own seed overrides training.seed
    seeded = CFG.model_copy(
        update={
            "epochs": 0.34,
            "augment": False,
            "runs": {"medfilip": RunSettings(label_variant="triplet_explanation", target="ssm", loss="mse_ce", seed=7)},
        }
    )
    one = _train(corpus, tmp_path / "s7", seeded, resume=False)
    default = _train(corpus, tmp_path / "s0", CFG.model_copy(update={"epochs": 0.34, "augment": False}), resume=False)
    assert one.steps == default.steps == 1
    assert (
        _log_rows(tmp_path / "s7" / "train_log.csv")[0]["loss"]
        != _log_rows(tmp_path / "s0" / "train_log.csv")[0]["loss"]
    )


def test_log_every_averages_the_device_sums_of_its_steps(corpus, tmp_path):
    # 3 steps per epoch, 2 epochs = 6 steps: rows after steps 4 and 6 (the last), each the mean of its steps
    cfg = CFG.model_copy(update={"augment": False, "checkpoint_every": 100})
    _train(corpus, tmp_path / "every1", cfg, resume=False)
    _train(corpus, tmp_path / "every4", cfg.model_copy(update={"log_every": 4}), resume=False)
    one = _log_rows(tmp_path / "every1" / "train_log.csv")
    four = _log_rows(tmp_path / "every4" / "train_log.csv")
    assert [int(r["step"]) for r in one] == [1, 2, 3, 4, 5, 6]
    assert [int(r["step"]) for r in four] == [4, 6]
    for row, steps in zip(four, ([0, 1, 2, 3], [4, 5])):
        for key in ("loss", "mse_loss", "ce_loss"):
            mean = sum(float(one[i][key]) for i in steps) / len(steps)
            assert float(row[key]) == pytest.approx(mean, abs=2e-6), key
        assert row["lr"] == one[steps[-1]]["lr"]


def test_max_pairs_trains_on_a_seeded_sample_not_the_first_images(corpus, tmp_path, caplog):
    import logging

    from medfilip.images.store import ImageStore
    from medfilip.training.sampling import sample_pairs

    cfg = CFG.model_copy(update={"augment": False, "epochs": 1, "max_pairs": 16, "checkpoint_every": 100})
    with caplog.at_level(logging.INFO, logger="medfilip.training.train"):
        result = _train(corpus, tmp_path / "sample", cfg, resume=False)
    assert result.n_images == 16 and result.steps == 2  # 16 pairs // batch 8
    assert "training.max_pairs = 16 of 25 pairs (seed 0)" in caplog.text
    store = ImageStore.open(corpus["images"])
    ids = [store.index.column("image_id").to_pylist()[int(p)] for p in store.indices("train")]
    chosen = sample_pairs(ids, 16, seed=0)
    assert list(chosen) != list(range(16))  # not the first 16


def test_a_missing_calibration_file_is_an_error_naming_it(corpus, tmp_path):
    # no falling back to raw cosines when the file the config's calibration wrote is not there
    import shutil

    embeddings = shutil.copy(corpus["embeddings"], tmp_path / "minilm.parquet")
    with pytest.raises(FileNotFoundError, match=r"minilm\.calibration\.json: no SSM calibration file"):
        _train({**corpus, "embeddings": embeddings}, tmp_path / "run")
    assert not (tmp_path / "run" / "model.pt").exists()
