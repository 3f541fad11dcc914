"""Every path and model reference of a config checked before any job runs.

:func:`validate_config` checks values (types, bounds, choices); this module checks what they point
at: the file or folder exists and is the right kind (a folder with ``config.json`` for a Hugging
Face model, a file for weights). The workflow calls :func:`check_paths` in ``rules/common.smk``
before it plans a job, and ``medfilip config`` calls it too, so a placeholder such as
``/path/to/resnet50.pth`` stops the run up front with its key path instead of failing the training
job hours later (after snakemake has removed that job's previous outputs).

Keys are found by walking the config models, so a path field added to any section is checked
without an entry here: ``Path`` fields must exist, string fields whose description says
"HuggingFace" are model references. ``KINDS`` only says which kind a known key must be.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from medfilip.configbase import ConfigError
from medfilip.names import ReportSource

# key path -> kind; keys not listed get their kind from their name and type (see _kind)
KINDS = {
    "reports.iu_xray.path": "file_or_dir",  # a folder of OpenI XML files or a .tgz of them
    "reports.mimic_cxr.root": "dir",
    "reports.mimic_cxr.metadata_csv": "file",
    "reports.mimic_cxr.split_csv": "file",
    "reports.mimic_cxr.image_root": "dir",
    "extraction.rules.vocabulary_dir": "dir",
    "extraction.openai.prompt": "file",
    "quality.mesh_mapping": "file",
    "knowledge.path": "file",
    "images.corpus.image_root": "dir",
    "training.model.image_weights": "file",
    "embeddings.model": "hf_model",
    "training.model.text_model": "hf_model",
}
PLACEHOLDER = "/path/to/"


def _unused(cfg: Any, key: str) -> bool:
    """Keys of a part of the config this run does not read (another report source or backend)."""
    source = getattr(cfg.reports, "source", None)
    if key.startswith("reports.mimic_cxr.") and source != ReportSource.mimic_cxr:
        return True
    if key.startswith("reports.iu_xray.") and source != ReportSource.iu_xray:
        return True
    return key.startswith("extraction.openai.") and cfg.extraction.backend != "openai"


def _leaves(model: BaseModel, prefix: str = "") -> Iterator[tuple[str, Any, Any]]:
    """(key path, value, field) of every leaf of a config model (dicts of models included)."""
    for name, field in type(model).model_fields.items():
        key = f"{prefix}{field.alias or name}"
        value = getattr(model, name)
        if isinstance(value, BaseModel):
            yield from _leaves(value, key + ".")
        elif isinstance(value, dict) and any(isinstance(v, BaseModel) for v in value.values()):
            for sub, item in value.items():
                if isinstance(item, BaseModel):
                    yield from _leaves(item, f"{key}.{sub}.")
        else:
            yield key, value, field


def _kind(key: str, value: Any, field: Any) -> str | None:
    generic = key.split(".")
    if len(generic) > 3 and generic[1] == "runs":  # training.runs.<name>.x: as training.x
        generic = [generic[0], *generic[3:]]
    known = KINDS.get(key) or KINDS.get(".".join(generic))
    if known:
        return known
    name = generic[-1]
    if isinstance(value, Path):
        if "weights" in name or name.endswith(("_file", "_csv")):
            return "file"
        if name.endswith(("root", "_dir")):
            return "dir"
        return "exists"
    if isinstance(value, str) and "huggingface" in (field.description or "").lower():
        return "hf_model"
    return None


def _offline() -> bool:
    return any(
        os.environ.get(v, "").lower() in ("1", "true", "yes") for v in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")
    )


def _hf_cached(repo_id: str) -> bool:
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:  # pragma: no cover - transformers brings it
        return False
    try:
        return isinstance(try_to_load_from_cache(repo_id, "config.json"), str)
    except Exception:  # noqa: BLE001 - an id the hub library rejects is simply not cached
        return False


def _problem(kind: str, value: Any) -> str | None:
    text = str(value)
    path = Path(text).expanduser()
    hint = " (a placeholder: fill in the real path)" if text.startswith(PLACEHOLDER) else ""
    if kind == "hf_model":
        if path.is_dir():
            return (
                None
                if (path / "config.json").is_file()
                else "folder has no config.json (not a Hugging Face model folder)"
            )
        if path.exists():
            return "is a file; a Hugging Face model is a folder with config.json"
        if text.startswith(("/", ".", "~")) or hint:
            return f"model folder not found{hint}"
        if _offline() and not _hf_cached(text):
            return (
                "not a local folder, and not in the Hugging Face cache while offline (HF_HUB_OFFLINE=1): "
                f"download it once (huggingface-cli download {text}) or give a local folder"
            )
        return None
    if not path.exists():
        what = {"dir": "folder", "file": "file"}.get(kind, "path")
        return f"{what} not found{hint}"
    if kind == "dir" and not path.is_dir():
        return "is a file, expected a folder"
    if kind == "file" and not path.is_file():
        return "is a folder, expected a file"
    if kind == "file" and path.stat().st_size == 0:
        return "file is empty"
    return None


def path_problems(cfg: Any, locate: Callable[[Path], Path] | None = None) -> list[str]:
    """One line per path or model reference that cannot be used: ``key = 'value': why``.

    ``locate`` maps a path to where it is looked up (the workflow's repository fallback); default:
    as given, relative to the working directory.
    """
    problems = []
    for key, value, field in _leaves(cfg):
        if value is None or _unused(cfg, key):
            continue
        kind = _kind(key, value, field)
        if kind is None:
            continue
        where = locate(Path(str(value))) if locate is not None and kind != "hf_model" else value
        if kind == "hf_model" and locate is not None and str(value).startswith((".", "~")):
            where = locate(Path(str(value)))
        why = _problem(kind, where)
        if why:
            shown = str(value) if str(where) == str(value) else f"{value} (looked up as {where})"
            problems.append(f"{key} = {shown!r}: {why}")
    return problems


def check_paths(cfg: Any, source: str = "config", locate: Callable[[Path], Path] | None = None) -> None:
    """Raise :class:`ConfigError` listing every path or model reference that cannot be used."""
    problems = path_problems(cfg, locate)
    if problems:
        n = len(problems)
        raise ConfigError(
            f"{source}: {n} path{'s' if n > 1 else ''} cannot be used (checked before any job runs)\n"
            + "\n".join(f"  {p}" for p in problems)
        )
