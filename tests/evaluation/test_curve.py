"""training.validate_every: the validate AUC curve is written during training, in the run's own text
form, and does not change what the run learns."""

from __future__ import annotations

import csv
from pathlib import Path

import torch

from medfilip.evaluation.curve import ValidateProbe
from medfilip.training.curve import CURVE_FILE
from medfilip.training.curves import plot_train_curves
from medfilip.training.settings import ModelSettings, RunSettings, TrainingConfig
from medfilip.training.train import train_run
from tests.training.conftest import build_corpus

torch.set_num_threads(1)

CFG = TrainingConfig(
    model=ModelSettings(embed_dim=32, max_length=32, text_trainable_layers=1),
    epochs=2,
    batch_size=8,
    num_workers=0,
    checkpoint_every=100,
    device="cpu",
    augment=False,
    runs={"medfilip": RunSettings(label_variant="triplet_explanation", target="identity", loss="mse_ce")},
)


def test_validate_curve_is_written_and_leaves_training_alone(tmp_path: Path):
    corpus = build_corpus(tmp_path / "corpus", n_train=30, n_validate=16)
    kw = {"images_dir": corpus["images"], "labels_path": corpus["labels"], "embeddings_path": None, "progress": False}
    plain = train_run("medfilip", CFG, out_dir=tmp_path / "plain", resume=False, return_model=True, **kw)
    cfg = CFG.model_copy(update={"validate_every": 0.5, "validate_images": 16})
    curved = train_run(
        "medfilip",
        cfg,
        out_dir=tmp_path / "curved",
        resume=False,
        return_model=True,
        validate_probe=ValidateProbe,
        **kw,
    )
    with open(tmp_path / "curved" / CURVE_FILE, newline="") as fh:
        rows = list(csv.DictReader(fh))
    # 16 train images // 8 = 2 steps an epoch; a check every round(0.5 x 2) = 1 step
    assert [int(r["step"]) for r in rows] == [1, 2, 3, 4]
    assert all(0.0 <= float(r["validate_auc"]) <= 1.0 and int(r["n_images"]) == 16 for r in rows)
    assert all(int(r["n_classes"]) >= 1 for r in rows)
    assert not (tmp_path / "plain" / CURVE_FILE).exists()
    # the checks run in eval mode and draw no random number: the same weights as without them
    for a, b in zip(plain.model.state_dict().values(), curved.model.state_dict().values()):
        assert torch.equal(a, b)
    figure = plot_train_curves([tmp_path / "plain", tmp_path / "curved"], tmp_path / "curves.png")
    assert figure.stat().st_size > 10_000
