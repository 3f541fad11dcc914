"""Load a trained MedFILIP model outside the pipeline, and write it as a self-contained folder.

``model, preprocess = medfilip.load(path)`` reads either

- a **pipeline run folder** (``results/models/<run>/``: ``model.pt``, ``text_encoder/``, written by
  ``medfilip train``). Class texts need the knowledge dictionary, which the run folder does not
  hold: it is found as ``resources/knowledge/dictionary.yaml`` in the project above the run folder
  (or the current directory), or named with ``knowledge=``; or
- a **model folder** written by :func:`save_pretrained` (``medfilip export RUN_DIR OUT_DIR``)::

      config.json          format, model settings (architecture, embedding size, pooling ...), image
                           size, the run it came from
      model.safetensors    every weight of both towers and the logit scale
      text_encoder/        the HuggingFace config and tokenizer of the text tower
      preprocess.json      image size, letterbox, decoding, channels, normalisation
      classes.json         the knowledge dictionary's explanations and synonyms (class texts) and the
                           default classes

  It needs none of the pipeline (no YAML reader, no Parquet, no config).

``preprocess`` turns one image (a path to a PNG, JPEG or DICOM file, a PIL image, a 2-D numpy array)
into the uint8 (S, S) tensor an image store holds, with the pipeline's own decoders and letterbox
(:mod:`medfilip.images.preprocess`); a list gives a (B, S, S) batch. ``model.encode_image`` then
does what evaluation does to a store batch (float, /255, ``(x - mean) / std``, channels), so an
image embedded here equals the one the zero-shot table scored.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from medfilip.inference import DEFAULT_TEXT_VARIANT, ClassKnowledge, ImageBatch, preprocess_each
from medfilip.training.model import (
    IMAGE_MEAN,
    IMAGE_STD,
    MODEL_FILE,
    TEXT_ENCODER_DIR,
    DualEncoder,
    ModelError,
    assemble_model,
    load_weights,
    read_trained,
)

log = logging.getLogger(__name__)

FORMAT = "medfilip-dual-encoder"
FORMAT_VERSION = 1
CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
PREPROCESS_FILE = "preprocess.json"
CLASSES_FILE = "classes.json"
KNOWLEDGE_FILE = Path("resources") / "knowledge" / "dictionary.yaml"


# -- preprocessing ------------------------------------------------------------------------------
class Preprocess:
    """An image → the uint8 (S, S) tensor of an image store (``medfilip preprocess``'s decoders and
    letterbox); a list or tuple of images → (B, S, S). ``mean``, ``std`` and ``channels`` are what
    ``model.encode_image`` applies after it (kept here so ``preprocess.json`` tells the whole story).

    A file the decoder refuses raises :class:`~medfilip.images.preprocess.ImageDecodeError`
    ("<path>: <reason>"), for a list too; :meth:`batch` keeps the others and lists the refusals."""

    def __init__(self, image_size: int, *, channels: int = 1, mean: float = IMAGE_MEAN, std: float = IMAGE_STD):
        self.image_size = int(image_size)
        self.channels = int(channels)
        self.mean = float(mean)
        self.std = float(std)

    def __repr__(self) -> str:
        return (
            f"Preprocess(image_size={self.image_size}, letterbox, channels={self.channels}, "
            f"mean={self.mean}, std={self.std})"
        )

    def __call__(self, image: Any) -> torch.Tensor:
        if isinstance(image, (list, tuple)):
            return torch.stack([self(x) for x in image])
        return torch.from_numpy(self.square(image))

    def batch(self, images: Sequence[Any]) -> ImageBatch:
        """Many images, refusals kept apart: ``(images, names, indices, errors)`` with the uint8
        (B, S, S) tensor of the accepted ones, their names and input positions, and one
        :class:`~medfilip.inference.ImageError` (index, image, reason) per refused input."""
        return preprocess_each(list(images), self, size=self.image_size)

    def square(self, image: Any) -> np.ndarray:
        """uint8 (S, S): decoded (path) or converted (PIL, array) to grey, then letterboxed."""
        from medfilip.images.preprocess import _pil_to_gray, letterbox, load_square, to_uint8

        if isinstance(image, (str, os.PathLike)):
            return load_square(image, self.image_size)[0]
        if isinstance(image, torch.Tensor):
            image = image.detach().cpu().numpy()
        if isinstance(image, np.ndarray):
            array = image
            if array.ndim == 3 and array.shape[-1] in (3, 4):
                from PIL import Image

                array = _pil_to_gray(Image.fromarray(np.ascontiguousarray(array[..., :3]).astype(np.uint8)))
            if array.ndim != 2:
                raise ValueError(
                    f"preprocess: expected a 2-D grey image or (H, W, 3) colour array, got shape {array.shape}"
                )
            if array.dtype == bool or array.dtype != np.uint8:  # 16-bit and float images: stretched as a 16-bit PNG is
                values = array.astype(np.float32)
                array = to_uint8(values, float(values.min()), float(values.max()))
            return letterbox(array, self.image_size)
        if hasattr(image, "mode") and hasattr(image, "convert"):  # a PIL image
            return letterbox(_pil_to_gray(image), self.image_size)
        raise TypeError(f"preprocess: cannot read an image from {type(image).__name__} (a path, PIL image or array)")

    def to_json(self) -> dict[str, Any]:
        from medfilip.images.preprocess import PERCENTILES

        return {
            "image_size": self.image_size,
            "resize": "letterbox",
            "resample": "lanczos (reducing_gap 3.0); JPEG drafted at reduced scale first",
            "grey": "8-bit as is; 16-bit / 32-bit stretched min..max; colour to luminance (PIL 'L')",
            "dicom": {
                "window": "VOI LUT, else first WindowCenter/WindowWidth, else percentiles",
                "percentiles": list(PERCENTILES),
                "monochrome1": "inverted",
            },
            "tensor": "uint8 (S, S); encode_image: float / 255, (x - mean) / std, repeated to channels",
            "channels": self.channels,
            "mean": self.mean,
            "std": self.std,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any], source: str = "") -> Preprocess:
        try:
            if data.get("resize", "letterbox") != "letterbox":
                raise ValueError(f"resize {data.get('resize')!r} (this medfilip letterboxes)")
            return cls(
                int(data["image_size"]),
                channels=int(data["channels"]),
                mean=float(data["mean"]),
                std=float(data["std"]),
            )
        except (KeyError, TypeError, ValueError) as err:
            raise ModelError(f"{source}: unusable preprocessing parameters ({err})") from None

    @classmethod
    def for_model(cls, model: DualEncoder) -> Preprocess:
        return cls(model.image_size, channels=model.image.channels)


def _check_preprocess(preprocess: Preprocess, model: DualEncoder, source: Path) -> None:
    """The folder's preprocessing must be what this model's encode_image does."""
    expected = Preprocess.for_model(model)
    problems = [
        f"{k} {getattr(preprocess, k)!r} (model: {getattr(expected, k)!r})"
        for k in ("image_size", "channels", "mean", "std")
        if getattr(preprocess, k) != getattr(expected, k)
    ]
    if problems:
        raise ModelError(f"{source}: preprocessing does not match the model: {', '.join(problems)}")


# -- knowledge ----------------------------------------------------------------------------------
def find_knowledge(run_dir: Path) -> Path | None:
    """``resources/knowledge/dictionary.yaml`` of the project holding ``run_dir``, else of the
    current directory, else of the source tree this package runs from."""
    here = Path(__file__).resolve().parent.parent
    for root in (*Path(run_dir).resolve().parents, Path.cwd(), here):
        if (root / KNOWLEDGE_FILE).is_file():
            return root / KNOWLEDGE_FILE
    return None


def _knowledge(value: ClassKnowledge | str | Path | None, run_dir: Path) -> ClassKnowledge | None:
    if isinstance(value, ClassKnowledge):
        return value
    path = Path(value) if value is not None else find_knowledge(run_dir)
    if path is None:
        log.warning(
            "%s: no knowledge dictionary found (resources/knowledge/dictionary.yaml); zero_shot needs knowledge=",
            run_dir,
        )
        return None
    if path.suffix == ".json":
        return ClassKnowledge.from_json(json.loads(path.read_text(encoding="utf-8")), str(path))
    return ClassKnowledge.from_yaml(path)


# -- loading ------------------------------------------------------------------------------------
def _device(device: str | torch.device) -> str | torch.device:
    """``"auto"``: CUDA when there is a GPU, else the CPU; anything else as given."""
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return device


def is_pretrained_folder(path: str | Path) -> bool:
    return (Path(path) / CONFIG_FILE).is_file() and (Path(path) / WEIGHTS_FILE).is_file()


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ModelError(
            f"{path}: missing (a model folder has {CONFIG_FILE}, {WEIGHTS_FILE}, {PREPROCESS_FILE}, "
            f"{CLASSES_FILE}, {TEXT_ENCODER_DIR}/)"
        ) from None
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ModelError(f"{path}: not valid JSON ({err})") from None
    if not isinstance(data, dict):
        raise ModelError(f"{path}: expected a JSON object")
    return data


def from_pretrained(path: str | Path, device: str | torch.device = "cpu") -> DualEncoder:
    """The model of a :func:`save_pretrained` folder, in eval mode on ``device``, with
    ``model.preprocess`` and ``model.knowledge`` attached."""
    from safetensors.torch import load_file

    from medfilip.training.settings import ModelSettings

    path = Path(path)
    config = _read_json(path / CONFIG_FILE)
    if config.get("format") != FORMAT:
        raise ModelError(f"{path / CONFIG_FILE}: field 'format' is {config.get('format')!r}, expected {FORMAT!r}")
    if config.get("format_version") != FORMAT_VERSION:
        raise ModelError(
            f"{path / CONFIG_FILE}: field 'format_version' is {config.get('format_version')!r}; "
            f"this medfilip reads {FORMAT_VERSION}"
        )
    try:
        settings = ModelSettings(**config["model_settings"])
        image_size = int(config["image_size"])
    except (KeyError, TypeError, ValueError) as err:
        raise ModelError(f"{path / CONFIG_FILE}: field 'model_settings' or 'image_size' unusable ({err})") from None
    model = assemble_model(settings, image_size, path / TEXT_ENCODER_DIR)
    try:
        state = load_file(str(path / WEIGHTS_FILE))
    except Exception as err:  # noqa: BLE001 - safetensors raises its own error types for bad files
        raise ModelError(f"{path / WEIGHTS_FILE}: cannot read the weights ({err})") from err
    load_weights(model, state, path / WEIGHTS_FILE)
    model.to(_device(device)).eval()
    preprocess = Preprocess.from_json(_read_json(path / PREPROCESS_FILE), str(path / PREPROCESS_FILE))
    _check_preprocess(preprocess, model, path / PREPROCESS_FILE)
    model.preprocess = preprocess
    model.knowledge = ClassKnowledge.from_json(_read_json(path / CLASSES_FILE), str(path / CLASSES_FILE))
    model.text_variant = config.get("text_variant", DEFAULT_TEXT_VARIANT)
    model.run_info = config.get("run", {})
    return model


def load_run(
    run_dir: str | Path, device: str | torch.device = "cpu", *, knowledge: ClassKnowledge | str | Path | None = None
) -> DualEncoder:
    """The model of a pipeline run folder with ``model.preprocess`` and ``model.knowledge`` attached."""
    from medfilip.training.settings import ModelSettings

    run_dir = Path(run_dir)
    payload = read_trained(run_dir)
    model = assemble_model(
        ModelSettings(**payload["model_settings"]), payload["image_size"], run_dir / TEXT_ENCODER_DIR
    )
    load_weights(model, payload["state_dict"], run_dir / MODEL_FILE)
    model.to(_device(device)).eval()
    model.preprocess = Preprocess.for_model(model)
    model.knowledge = _knowledge(knowledge, run_dir)
    model.text_variant = DEFAULT_TEXT_VARIANT
    model.run_info = {**(payload.get("run") or {}), "steps": payload.get("steps")}
    return model


def load(
    path: str | Path, device: str | torch.device = "cpu", *, knowledge: ClassKnowledge | str | Path | None = None
) -> tuple[DualEncoder, Preprocess]:
    """``(model, preprocess)`` from a pipeline run folder or a :func:`save_pretrained` folder, the
    model in eval mode on ``device`` ("cpu", "cuda", "auto" = cuda when there is a GPU).

    ``knowledge`` (a run folder only; a model folder carries its own): the knowledge dictionary
    YAML (or a ClassKnowledge) the class texts come from."""
    path = Path(path)
    if path.is_file() and path.name in (MODEL_FILE, CONFIG_FILE, WEIGHTS_FILE):
        path = path.parent
    if not path.is_dir():
        raise ModelError(f"{path}: no such model folder")
    if is_pretrained_folder(path):
        model = from_pretrained(path, device)
        if knowledge is not None:
            model.knowledge = _knowledge(knowledge, path)
    elif (path / MODEL_FILE).is_file():
        model = load_run(path, device, knowledge=knowledge)
    else:
        raise ModelError(
            f"{path}: neither a model folder ({CONFIG_FILE} + {WEIGHTS_FILE}) nor a pipeline run folder "
            f"({MODEL_FILE} + {TEXT_ENCODER_DIR}/)"
        )
    return model, model.preprocess


# -- saving -------------------------------------------------------------------------------------
def save_pretrained(
    model: DualEncoder,
    out_dir: str | Path,
    *,
    knowledge: ClassKnowledge | str | Path | None = None,
    default_classes: Sequence[str] | None = None,
    run_info: dict[str, Any] | None = None,
) -> Path:
    """Write ``model`` as a self-contained folder (see the module docstring); replaces ``out_dir``
    as a whole, so a reader never sees half a folder. ``knowledge`` defaults to the model's."""
    from safetensors.torch import save_file

    from medfilip import __version__

    out_dir = Path(out_dir)
    classes = (
        knowledge
        if isinstance(knowledge, ClassKnowledge)
        else (_knowledge(knowledge, out_dir) if knowledge is not None else getattr(model, "knowledge", None))
    )
    if classes is None:
        raise ModelError(
            f"{out_dir}: save_pretrained needs the knowledge dictionary (knowledge=...) for the class texts"
        )
    if default_classes is not None:
        for name in default_classes:
            classes.class_spec(name)  # unknown names fail here, not at prediction time
        classes = ClassKnowledge(
            classes.explanations, classes.synonyms, tuple(default_classes), classes.source, classes.version
        )
    preprocess = getattr(model, "preprocess", None) or Preprocess.for_model(model)
    config = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "medfilip_version": __version__,
        "model_settings": model.settings.model_dump(mode="json"),
        "image_size": model.image_size,
        "text_variant": getattr(model, "text_variant", DEFAULT_TEXT_VARIANT),
        "logit_scale": float(model.logit_scale.detach().cpu()),
        "run": run_info if run_info is not None else getattr(model, "run_info", {}),
    }
    # contiguous copies: safetensors refuses views and tensors that share memory
    state = {k: v.detach().cpu().contiguous().clone() for k, v in model.state_dict().items()}
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", dir=out_dir.parent))
    try:
        tmp.chmod(0o755)  # mkdtemp makes it private; the folder is meant to be shared
        text_dir = tmp / TEXT_ENCODER_DIR
        text_dir.mkdir()
        model.text.model.config.save_pretrained(text_dir)
        model.text.tokenizer.save_pretrained(text_dir)
        save_file(state, str(tmp / WEIGHTS_FILE), metadata={"format": "pt", "medfilip_format": FORMAT})
        for name, data in (
            (CONFIG_FILE, config),
            (PREPROCESS_FILE, preprocess.to_json()),
            (CLASSES_FILE, classes.to_json()),
        ):
            (tmp / name).write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
        (tmp / WEIGHTS_FILE).chmod(0o644)  # safetensors writes it private; the folder is meant to be shared
        old = None
        if out_dir.exists():
            old = out_dir.parent / f".{out_dir.name}.old-{os.getpid()}"
            out_dir.rename(old)
        tmp.rename(out_dir)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out_dir
