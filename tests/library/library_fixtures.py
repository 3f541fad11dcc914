"""A tiny model that has learnt something real: trained for a few seconds on phantom radiographs.

Three kinds of image are rendered with the project's phantom simulator: no finding, a large
pleural effusion (both sides), severe cardiomegaly. Their label texts are the pipeline's (the
knowledge dictionary's explanations in the eq. 10 template); the model is the pipeline's dual
encoder trained by the pipeline's ``train_run`` (multi-hot target: same-category texts match).
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pyarrow as pa

from medfilip.images.preprocess import letterbox
from medfilip.images.store import ImageStoreWriter
from medfilip.io import write_parquet_atomic
from medfilip.knowledge import load_knowledge
from medfilip.labels.templates import render_label
from medfilip.phantom.render import Finding, render_phantom

ROOT = Path(__file__).resolve().parents[2]
KNOWLEDGE = ROOT / "resources" / "knowledge" / "dictionary.yaml"
SIZE = 32  # the store's (and the model's) image size
RENDER = 64  # phantoms are drawn larger and letterboxed down, as files are at prediction time
KINDS = {
    "normal": [],
    "pleural effusion": [Finding("pleural effusion", "bilateral", "large")],
    "cardiomegaly": [Finding("cardiomegaly", None, "severe")],
}
CLASSES = list(KINDS)


def phantom(kind: str, seed: int, size: int = RENDER) -> np.ndarray:
    return render_phantom(KINDS[kind], size=size, seed=seed)


def build_corpus(root: Path, n_per_kind: int = 16) -> dict[str, Path]:
    knowledge = load_knowledge(KNOWLEDGE)
    images, labels_path = root / "images" / "corpus", root / "labels.parquet"
    rows = []
    with ImageStoreWriter(images, SIZE, "corpus", shard_size=64) as writer:
        for i in range(n_per_kind):
            for kind in KINDS:
                report_id = f"{kind.replace(' ', '_')}_{i:03d}"
                square = letterbox(phantom(kind, seed=1000 + i), SIZE)
                writer.add(
                    f"img_{report_id}", square, report_id=report_id, path=f"{report_id}.png", view="PA", split="train"
                )
                findings = KINDS[kind] or [Finding("normal")]
                for f in findings:
                    label = render_label(f.category, f.severity, f.location, knowledge.explanation(f.category))
                    rows.append(
                        {
                            "report_id": report_id,
                            "variant": "triplet_explanation",
                            "label": label,
                            "label_key": hashlib.sha256(label.encode()).hexdigest()[:16],
                            "category": f.category,
                            "severity": f.severity,
                            "location": f.location,
                            "polarity": "present",
                            "explanation": knowledge.explanation(f.category),
                            "fine_grained_key": f"{f.severity}|{f.category}",
                            "is_normal": f.category == "normal",
                        }
                    )
    write_parquet_atomic(pa.Table.from_pylist(rows), labels_path)
    return {"images": images, "labels": labels_path}


def train_tiny_model(root: Path, *, epochs: float = 6.0, seed: int = 0) -> Path:
    """A run folder (model.pt, text_encoder/, config.yaml) as ``medfilip train`` writes it."""
    from medfilip.training.settings import ModelSettings, OptimiserSettings, RunSettings, TrainingConfig
    from medfilip.training.train import train_run

    corpus = build_corpus(root / "corpus")
    cfg = TrainingConfig(
        model=ModelSettings(embed_dim=32, max_length=96, text_trainable_layers=0),
        optimiser=OptimiserSettings(lr=0.05, t_0=100.0),
        epochs=epochs,
        batch_size=12,
        num_workers=0,
        checkpoint_every=10_000,
        device="cpu",
        mask_probability=0.0,
        augment=False,
        seed=seed,
        runs={"tiny": RunSettings(label_variant="triplet_explanation", target="multi_hot", loss="mse_ce")},
    )
    out = root / "models" / "tiny"
    train_run(
        "tiny",
        cfg,
        images_dir=corpus["images"],
        labels_path=corpus["labels"],
        embeddings_path=None,
        out_dir=out,
        progress=False,
    )
    return out
