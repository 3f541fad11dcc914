"""A tiny pretraining corpus built in tmp_path: image store, labels.parquet, label embeddings."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
import torch

from medfilip.embeddings.calibration import calibration_path, write_calibration
from medfilip.images.store import ImageStoreWriter
from medfilip.io import write_parquet_atomic
from medfilip.labels.templates import render_label
from medfilip.names import LabelVariant, values
from medfilip.ssm import Calibration

torch.set_num_threads(1)

SIZE = 32
FINDINGS = [
    ("atelectasis", "mild", "left base", "collapse of lung tissue"),
    ("pleural effusion", "small", "right costophrenic angle", "fluid blunting the costophrenic angle"),
    ("cardiomegaly", "moderate", None, "an enlarged cardiac silhouette"),
    ("pneumonia", None, "right lower lobe", "patchy airspace opacity"),
]


def _rows(report_id: str, findings: list[tuple], report_text: str) -> list[dict]:
    rows = []
    for variant in ("triplet_explanation", "report"):
        if variant == "report":
            texts = [(report_text, None, None, None, None)]
        elif not findings:
            texts = [(render_label("normal", variant=variant), "normal", None, None, None)]
        else:
            texts = [(render_label(c, s, loc, e, variant=variant), c, s, loc, e) for c, s, loc, e in findings]
        for label, category, severity, location, explanation in texts:
            rows.append(
                {
                    "report_id": report_id,
                    "variant": variant,
                    "label": label,
                    "label_key": hashlib.sha256(label.encode()).hexdigest()[:16],
                    "category": category,
                    "severity": severity,
                    "location": location,
                    "polarity": "present",
                    "explanation": explanation,
                    "fine_grained_key": f"{severity}|{category}",
                    "is_normal": category == "normal",
                }
            )
    return rows


def build_corpus(root: Path, n_train: int = 24, seed: int = 0, n_validate: int = 0) -> dict[str, Path]:
    rng = np.random.default_rng(seed)
    images, labels = root / "images" / "corpus", root / "labels.parquet"
    rows = []
    with ImageStoreWriter(images, SIZE, "corpus", shard_size=10) as writer:
        for i in range(n_train + 3):
            report_id = f"r{i:03d}"
            findings = [FINDINGS[k] for k in sorted(set(rng.integers(0, len(FINDINGS), size=i % 3)))]
            image = rng.integers(0, 60, size=(SIZE, SIZE)).astype(np.uint8)
            for k, finding in enumerate(FINDINGS):  # each finding brightens its own quadrant
                if finding in findings:
                    image[(k // 2) * 16 : (k // 2) * 16 + 16, (k % 2) * 16 : (k % 2) * 16 + 16] += 150
            split = "train" if i < n_train + 2 - n_validate else "validate" if i < n_train + 2 else "test"
            writer.add(f"img{i:03d}", image, report_id=report_id, path=f"p{i}.png", view="PA", split=split)
            if i != n_train + 1:  # one train image whose report has no labels
                rows += _rows(
                    report_id, findings, f"report {i}: " + (", ".join(f[0] for f in findings) or "no finding")
                )
    write_parquet_atomic(pa.Table.from_pylist(rows), labels)
    texts = sorted({r["label"] for r in rows if r["variant"] == "triplet_explanation"})
    vec = np.random.default_rng(1).normal(size=(len(texts), 16)).astype(np.float32)
    vec /= np.linalg.norm(vec, axis=1, keepdims=True)
    embeddings = root / "embeddings.parquet"
    write_parquet_atomic(
        pa.table(
            {
                "key": [hashlib.sha256(t.encode()).hexdigest()[:32] for t in texts],
                "text": texts,
                "vector": pa.array([list(v) for v in vec], pa.list_(pa.float32())),
            }
        ),
        embeddings,
    )
    # training reads the SSM calibration beside the embeddings: here raw cosines (method none) for every variant
    write_calibration({v: Calibration("none") for v in values(LabelVariant)}, calibration_path(embeddings))
    return {"images": images, "labels": labels, "embeddings": embeddings}


@pytest.fixture(scope="session")
def corpus(tmp_path_factory) -> dict[str, Path]:
    return build_corpus(tmp_path_factory.mktemp("corpus"))
