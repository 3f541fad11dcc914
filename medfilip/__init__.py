"""MedFILIP: fine-grained medical vision-language pre-training as a reproducible pipeline.

As a library (imports torch, torchvision, transformers, numpy and pillow; nothing of the pipeline)::

    import medfilip
    model, preprocess = medfilip.load("results/models/medfilip")   # a run folder or an exported model folder
    result = medfilip.zero_shot(model, ["chest.png"], ["cardiomegaly", "pleural effusion", "normal"])
    result.ranked(0)                                                 # [{"class", "probability", "cosine"}, ...]

``model.encode_image(preprocess(path)[None])`` and ``model.encode_text([...])`` give L2-normalised
embeddings; ``medfilip.save_pretrained(model, "out/")`` writes a self-contained model folder that
``medfilip.from_pretrained`` (and ``load``) read back. A file the decoder refuses is an
``ImageDecodeError`` ("<path>: <reason>"); ``zero_shot`` on a list scores the other files and lists
each refused one in ``result.errors``. The names are resolved on first use, so
``import medfilip`` itself costs nothing.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_LAZY = {
    "load": "medfilip.pretrained",
    "from_pretrained": "medfilip.pretrained",
    "save_pretrained": "medfilip.pretrained",
    "Preprocess": "medfilip.pretrained",
    "zero_shot": "medfilip.inference",
    "ZeroShotPrediction": "medfilip.inference",
    "ClassKnowledge": "medfilip.inference",
    "UnknownClassError": "medfilip.inference",
    "ImageError": "medfilip.inference",
    "ImageDecodeError": "medfilip.images.preprocess",
}

__all__ = ["__version__", *_LAZY]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'medfilip' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_LAZY})
