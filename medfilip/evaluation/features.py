"""Frozen image-encoder features, extracted once per (run, dataset, split) and cached on disk.

What is cached: the **pooled output of the image encoder's backbone, before the projection** —
for the torchvision ResNet of :class:`medfilip.training.model.ImageEncoder`, the global-average-
pooled last stage (512 values for resnet18/34, 2,048 for resnet50), i.e. ``model.image.backbone``
applied to ``model.prepare_images`` of the store's uint8 images. This is what a linear probe reads
(the paper's Table II, as in ConVIRT / MedCLIP / MedKLIP: the frozen encoder's penultimate
features), and the projected zero-shot embedding is one linear layer away from it
(``model.image.proj``), so the cache loses nothing.

Files (``results/features/{run}/{dataset}/{split}.npy`` + ``{split}.json``):

- ``.npy``: float32 ``(n_images, dim)``, rows in the store's order for that split
  (``ImageStore.indices(split)``);
- ``.json``: ``run``, ``dataset``, ``split``, ``rows`` and ``image_ids`` (one per feature row),
  ``label_names``, ``feature`` (what the vectors are), ``dim``, ``model`` (path) and
  ``model_sha256`` (content hash of model.pt: the fingerprint a reader checks against), ``store``,
  ``n_images``, ``seconds``.

Both are written atomically (the JSON last, so its presence means the pair is complete). A split
the store does not have (``n_train: 0``) gives a ``(0, dim)`` array and a sidecar saying so; the
probe turns that into a documented skip row.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from medfilip.io import atomic_path, write_text_atomic
from medfilip.names import SPLITS

log = logging.getLogger(__name__)

FEATURE_KIND = "image encoder backbone, global-average-pooled, before the projection"


class FeatureError(ValueError):
    """A features file that is missing, incomplete or does not match its model or store."""


@dataclass
class Features:
    """One cached split: vectors, the store rows and image ids they belong to, and the sidecar."""

    vectors: np.ndarray  # float32 (n, dim)
    rows: np.ndarray  # int64 (n,) store row numbers
    image_ids: list[str]
    meta: dict[str, Any]

    @property
    def n(self) -> int:
        return int(self.vectors.shape[0])


def file_sha256(path: str | Path, chunk: int = 1 << 22) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()


def feature_paths(out_dir: str | Path, split: str) -> tuple[Path, Path]:
    out_dir = Path(out_dir)
    return out_dir / f"{split}.npy", out_dir / f"{split}.json"


def pooled_features(model: Any, images) -> torch.Tensor:  # noqa: F821
    """(B, dim) backbone features of a uint8 (B, S, S) batch: the encoder without its projection."""
    return model.image.backbone(model.prepare_images(images)).flatten(1).float()


def encode_rows(model: Any, store: Any, rows: np.ndarray, *, batch_size: int, device: str) -> np.ndarray:
    """float32 (len(rows), dim) pooled features of ``store[rows]``."""
    import torch

    rows = np.asarray(rows, dtype=np.int64)
    dim = int(model.image.feature_dim)
    chunks = []
    with torch.inference_mode():
        for start in range(0, rows.size, batch_size):
            batch = torch.from_numpy(store.get_batch(rows[start : start + batch_size])).to(device)
            chunks.append(pooled_features(model, batch).cpu().numpy())
    return np.concatenate(chunks).astype(np.float32, copy=False) if chunks else np.zeros((0, dim), np.float32)


def extract_features(
    run_dir: str | Path,
    store_dir: str | Path,
    out_dir: str | Path,
    *,
    splits: Sequence[str] = SPLITS,
    batch_size: int = 128,
    device: str = "cpu",
) -> dict[str, Features]:
    """Encode every image of ``splits`` of the store with the run's frozen image encoder and write
    ``{split}.npy`` + ``{split}.json`` into ``out_dir``. The model is loaded once for all splits."""
    import torch

    from medfilip.images.store import ImageStore
    from medfilip.training.model import MODEL_FILE, ModelError, load_trained

    run_dir, store_dir = Path(run_dir), Path(store_dir)
    model_file = run_dir / MODEL_FILE
    if not model_file.is_file():
        raise ModelError(f"{model_file}: no trained model in run folder {run_dir} (run `medfilip train` first)")
    store = ImageStore.open(store_dir)
    fingerprint = file_sha256(model_file)
    model = load_trained(run_dir, device)
    model.eval()
    if device == "cpu":
        model.image.to(memory_format=torch.channels_last)
        model.channels_last = True
    out: dict[str, Features] = {}
    for split in splits:
        rows = store.indices(split)
        started = time.perf_counter()
        vectors = encode_rows(model, store, rows, batch_size=batch_size, device=device)
        seconds = time.perf_counter() - started
        ids = [store.image_ids[int(r)] for r in rows]
        meta = {
            "run": run_dir.name,
            "dataset": store.dataset,
            "split": split,
            "feature": FEATURE_KIND,
            "dim": int(model.image.feature_dim),
            "image_arch": str(model.settings.image_arch),
            "image_size": int(model.image_size),
            "model": str(model_file),
            "model_sha256": fingerprint,
            "store": str(store_dir),
            "label_names": list(store.label_names),
            "n_images": int(rows.size),
            "seconds": round(seconds, 3),
            "images_per_s": round(rows.size / seconds, 1) if seconds > 0 and rows.size else None,
            "rows": rows.tolist(),
            "image_ids": ids,
        }
        if rows.size == 0:
            meta["note"] = f"the store has no {split} split"
        npy, sidecar = feature_paths(out_dir, split)
        with atomic_path(npy) as tmp, open(tmp, "wb") as fh:
            np.save(fh, vectors)
        write_text_atomic(json.dumps(meta) + "\n", sidecar)
        log.info("%s / %s / %s: %d images -> %s (%.1fs)", run_dir.name, store.dataset, split, rows.size, npy, seconds)
        out[split] = Features(vectors, rows, ids, meta)
    return out


def load_features(out_dir: str | Path, split: str, *, model_file: str | Path | None = None) -> Features:
    """A cached split; with ``model_file``, checked against the model's content hash."""
    npy, sidecar = feature_paths(out_dir, split)
    if not sidecar.is_file() or not npy.is_file():
        raise FeatureError(f"{sidecar}: no cached {split} features (run `medfilip features` first)")
    meta = json.loads(sidecar.read_text(encoding="utf-8"))
    vectors = np.load(npy)
    if vectors.ndim != 2 or vectors.shape[0] != len(meta.get("image_ids", [])):
        raise FeatureError(
            f"{npy}: {vectors.shape} features for {len(meta.get('image_ids', []))} image ids in {sidecar}"
        )
    if model_file is not None and Path(model_file).is_file() and file_sha256(model_file) != meta.get("model_sha256"):
        raise FeatureError(f"{sidecar}: features of another model than {model_file} (stale cache; re-run features)")
    return Features(
        vectors.astype(np.float32, copy=False), np.asarray(meta["rows"], np.int64), list(meta["image_ids"]), meta
    )
