"""Zero-shot classification with a trained model, outside the pipeline.

The class texts are the pipeline's (:func:`medfilip.evaluation.zeroshot.class_texts`): the paper's
eq. 10 template with the class's image-specific knowledge, ``render_label(category, severity,
explanation=<IKI explanation of category>)`` = "{severity} {category}, where {category} is
{explanation}". The scores are the pipeline's too (:func:`zero_shot_scores`): the cosine of the
L2-normalised image and text embeddings (what multi-label sets are scored by), and its softmax over
the classes at the model's learnt logit scale (what single-label sets are scored by). Both rank the
classes of an image the same way.

Class names are category names of the knowledge dictionary or any of their synonyms ("Effusion",
"pleural_effusion"), optionally preceded by a severity word ("severe cardiomegaly", the
fine-grained classes); a name that is neither raises :class:`UnknownClassError` naming close
matches.

Images the decoder refuses (missing, empty, not an image, truncated, too large, corrupt DICOM ...)
do not stop a batch: :func:`zero_shot` scores the others and lists each refusal in
``result.errors`` as an :class:`ImageError` (input position, name, one-line reason).
Imports: torch, numpy and the label template only.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, NamedTuple

import numpy as np
import torch

from medfilip.labels.templates import LabelVariant, eval_text
from medfilip.names import DEFAULT_MULTI_LABEL, DEFAULT_SINGLE_LABEL, CategoryNames, EvalText, values
from medfilip.names import normalise_name as normalise_name  # the class-name matching key, re-exported

DEFAULT_LOGIT_SCALE = 1.0 / 0.07
DEFAULT_TEXT_VARIANT = LabelVariant.triplet_explanation.value
# the template's variants and the report-style sentence ("There is mild cardiomegaly.", what a run
# trained on report text is scored with: medfilip.labels.templates.run_eval_text)
TEXT_VARIANTS = values(EvalText)


class UnknownClassError(ValueError):
    """A class name that is neither a category of the knowledge dictionary nor a synonym of one."""


@dataclass(frozen=True)
class ImageError:
    """An input that could not be scored: its position in the input (``index``), its name (the
    path as given, else ``"image <index>"``) and why, on one line (``reason``)."""

    index: int
    image: str
    reason: str

    def __str__(self) -> str:
        return f"{self.image}: {self.reason}"

    def to_record(self) -> dict[str, Any]:
        return {"image": self.image, "index": self.index, "error": self.reason}


class ImageBatch(NamedTuple):
    """Images through a preprocess one by one: the uint8 (B, S, S) tensor of those it accepted,
    their names and input positions, and one :class:`ImageError` per refused input."""

    images: torch.Tensor
    names: list[str]
    indices: list[int]
    errors: list[ImageError]


@dataclass(frozen=True)
class ClassKnowledge:
    """What class texts are built from: each category's IKI explanation and synonyms, and the
    classes :func:`zero_shot` scores when none are named (the pipeline's evaluation classes)."""

    explanations: Mapping[str, str]
    synonyms: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    default_classes: tuple[str, ...] = ()
    source: str = ""
    version: str | None = None
    # the name index of the categories and their synonyms (built from the fields above)
    names: CategoryNames = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        names = CategoryNames({name: self.synonyms.get(name, ()) for name in self.explanations})
        object.__setattr__(self, "names", names)

    @property
    def categories(self) -> list[str]:
        return list(self.explanations)

    def resolve(self, name: str) -> str | None:
        """The canonical category of a name or synonym (any case, ``_ / -`` as spaces), else None."""
        return self.names.resolve(name)

    def explanation(self, category: str) -> str:
        canonical = self.resolve(category)
        if canonical is None:
            raise self._unknown(category)
        return self.explanations[canonical]

    def class_spec(self, name: str) -> tuple[str, str | None]:
        """(category, severity) of a class name: a category or synonym, or "<severity> <category>"."""
        canonical = self.resolve(name)
        if canonical is not None:
            return canonical, None
        head, _, rest = " ".join(name.split()).partition(" ")
        canonical = self.resolve(rest) if rest else None
        if canonical is not None:
            return canonical, head.lower()
        raise self._unknown(name)

    def _unknown(self, name: str) -> UnknownClassError:
        hint = self.names.did_you_mean(name)
        where = f" of {self.source}" if self.source else ""
        return UnknownClassError(
            f"unknown class {name!r}: not a category or synonym in the knowledge dictionary{where}{hint}; "
            f"{len(self.explanations)} categories are known"
        )

    # -- (de)serialisation -------------------------------------------------------------------
    @classmethod
    def from_dictionary(cls, dictionary: Any, default_classes: Sequence[str] = ()) -> ClassKnowledge:
        """From a :class:`medfilip.knowledge.KnowledgeDictionary` (the pipeline's YAML)."""
        entries = [dictionary.entry(c) for c in dictionary.categories]
        return cls(
            explanations={e.category: e.explanation for e in entries},
            synonyms={e.category: tuple(e.synonyms) for e in entries},
            default_classes=tuple(default_classes),
            source=str(dictionary.path),
            version=dictionary.version,
        )

    @classmethod
    def from_yaml(cls, path: str | Path, default_classes: Sequence[str] | None = None) -> ClassKnowledge:
        from medfilip.knowledge.dictionary import load_knowledge

        return cls.from_dictionary(
            load_knowledge(path), pipeline_default_classes() if default_classes is None else default_classes
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "template": "{severity} {location} {category}, where {category} is {explanation}",
            "default_classes": list(self.default_classes),
            "knowledge_source": Path(self.source).name if self.source else None,
            "knowledge_version": self.version,
            "categories": {
                c: {"explanation": e, "synonyms": list(self.synonyms.get(c, ()))} for c, e in self.explanations.items()
            },
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any], source: str = "") -> ClassKnowledge:
        try:
            categories = data["categories"]
            return cls(
                explanations={str(c): str(v["explanation"]) for c, v in categories.items()},
                synonyms={str(c): tuple(map(str, v.get("synonyms", ()))) for c, v in categories.items()},
                default_classes=tuple(map(str, data.get("default_classes", ()))),
                source=source,
                version=data.get("knowledge_version"),
            )
        except (KeyError, TypeError, AttributeError) as err:
            raise ValueError(
                f"{source}: expected {{'categories': {{<category>: {{'explanation': ...}}}}}} ({err!r})"
            ) from None


def pipeline_default_classes() -> tuple[str, ...]:
    """The classes the pipeline's corpus sets evaluate by default: 'normal' + the multi-label classes."""
    return tuple(dict.fromkeys([*DEFAULT_SINGLE_LABEL, *DEFAULT_MULTI_LABEL]))


def class_text(
    category: str, severity: str | None, knowledge: ClassKnowledge, variant: str = DEFAULT_TEXT_VARIANT
) -> str:
    """The text of one class, exactly as the zero-shot evaluation renders it."""
    explanation = knowledge.explanation(category) if variant == LabelVariant.triplet_explanation.value else None
    return eval_text(category, severity=severity, explanation=explanation, variant=variant)


def class_texts(classes: Sequence[str], knowledge: ClassKnowledge, variant: str = DEFAULT_TEXT_VARIANT) -> list[str]:
    if variant not in TEXT_VARIANTS:
        raise ValueError(f"text variant {variant!r} is not one of {TEXT_VARIANTS}")
    return [class_text(*knowledge.class_spec(name), knowledge, variant) for name in classes]


def zero_shot_scores(
    image_emb: np.ndarray, text_emb: np.ndarray, *, softmax: bool = False, logit_scale: float = DEFAULT_LOGIT_SCALE
) -> np.ndarray:
    """(N, K) scores: cosine of image i and class text k, or its softmax over k at ``logit_scale``
    (the same arithmetic as :func:`medfilip.evaluation.zeroshot.zero_shot_scores`)."""
    cos = image_emb.astype(np.float64) @ text_emb.astype(np.float64).T
    if not softmax:
        return cos
    z = logit_scale * cos
    z -= z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def logit_scale_of(model: Any) -> float:
    value = getattr(model, "logit_scale", None)
    if value is None:
        return DEFAULT_LOGIT_SCALE
    if callable(value) and not isinstance(value, torch.Tensor):
        value = value()
    if isinstance(value, torch.Tensor):
        value = value.detach().float().cpu().item()
    return float(value)


@dataclass
class ZeroShotPrediction:
    """Scores of N images against K classes. ``probs`` (softmax over the K classes at the model's
    logit scale) and ``cosine`` rank the classes the same way; read ``cosine`` for multi-label
    questions (each class on its own), ``probs`` for "which one of these"."""

    classes: list[str]
    texts: list[str]
    cosine: torch.Tensor  # (N, K) float64
    probs: torch.Tensor  # (N, K) float64, rows sum to 1
    logit_scale: float
    images: list[str] = field(default_factory=list)  # names of the scored inputs (paths), when known
    errors: list[ImageError] = field(default_factory=list)  # the inputs that could not be decoded
    indices: list[int] = field(default_factory=list)  # input position of each scored row, when known

    def __len__(self) -> int:
        return int(self.probs.shape[0])

    def ranked(self, index: int = 0) -> list[dict[str, Any]]:
        """Image ``index``'s classes, best first: ``[{"class", "probability", "cosine"}, ...]``."""
        order = torch.argsort(self.probs[index], descending=True, stable=True).tolist()
        return [
            {
                "class": self.classes[k],
                "probability": float(self.probs[index, k]),
                "cosine": float(self.cosine[index, k]),
            }
            for k in order
        ]

    def top(self, index: int = 0) -> str:
        return self.ranked(index)[0]["class"]

    def to_records(self, *, errors: bool = False) -> list[dict[str, Any]]:
        """One record per scored image: its name (when known) and its ranked classes. With
        ``errors=True`` the refused inputs too, as ``{"image", "index", "error"}``, in input order."""
        records = [
            {"image": self.images[i] if i < len(self.images) else i, "predictions": self.ranked(i)}
            for i in range(len(self))
        ]
        if not errors or not self.errors:
            return records
        positions = self.indices if len(self.indices) == len(records) else list(range(len(records)))
        keyed = [(p, 0, r) for p, r in zip(positions, records, strict=True)]
        keyed += [(e.index, 1, e.to_record()) for e in self.errors]
        return [r for _, _, r in sorted(keyed, key=lambda t: t[:2])]


def _encode_texts(model: Any, texts: Sequence[str], batch_size: int) -> np.ndarray:
    with torch.inference_mode():
        parts = [
            model.encode_text(list(texts[i : i + batch_size])).float().cpu().numpy()
            for i in range(0, len(texts), batch_size)
        ]
    return np.concatenate(parts).astype(np.float32, copy=False)


def _image_name(image: Any, index: int) -> str:
    return str(image) if isinstance(image, (str, Path)) else getattr(image, "filename", "") or f"image {index}"


def preprocess_each(images: Sequence[Any], preprocess: Any, *, size: int | None = None) -> ImageBatch:
    """Run ``preprocess`` on each image; a decoder refusal (:class:`ImageDecodeError`) or a file
    that cannot be read (``OSError``, e.g. a truncated PIL image) becomes that input's
    :class:`ImageError` and the others go on. Other errors (an array of the wrong shape) raise.
    ``size`` is the square's side, for an empty batch (else taken from ``preprocess.image_size``)."""
    from medfilip.images.preprocess import ImageDecodeError

    squares, names, indices, errors = [], [], [], []
    for i, image in enumerate(images):
        name = _image_name(image, i)
        try:
            squares.append(preprocess(image))
        except ImageDecodeError as err:
            errors.append(ImageError(i, name, err.reason))
            continue
        except OSError as err:
            errors.append(ImageError(i, name, " ".join(f"cannot read the image: {err}".split())))
            continue
        names.append(name)
        indices.append(i)
    if squares:
        batch = torch.stack(squares)
    else:
        side = int(size or getattr(preprocess, "image_size", 0) or 0)
        batch = torch.zeros((0, side, side), dtype=torch.uint8)
    return ImageBatch(batch, names, indices, errors)


def _image_batch(images: Any, preprocess: Any, on_error: str = "collect") -> ImageBatch:
    """uint8 (B, S, S) from a preprocessed tensor, or one or many images for ``preprocess``."""
    if isinstance(images, torch.Tensor):
        batch = images if images.ndim == 3 else images.unsqueeze(0)
        return ImageBatch(batch, [], list(range(batch.shape[0])), [])
    single = isinstance(images, (str, Path)) or not isinstance(images, Iterable) or isinstance(images, np.ndarray)
    images = [images] if single else list(images)
    if preprocess is None:
        raise ValueError(
            "zero_shot: images that are not a preprocessed tensor need a preprocess "
            "(medfilip.load returns one; it is also model.preprocess)"
        )
    if single or on_error == "raise":  # one image: nothing else to answer, so its error is raised
        names = [_image_name(x, i) for i, x in enumerate(images)]
        return ImageBatch(torch.stack([preprocess(x) for x in images]), names, list(range(len(images))), [])
    return preprocess_each(images, preprocess)


def zero_shot(
    model: Any,
    images: Any,
    classes: Sequence[str] | None = None,
    *,
    knowledge: ClassKnowledge | None = None,
    text_variant: str = DEFAULT_TEXT_VARIANT,
    preprocess: Any = None,
    batch_size: int = 64,
    on_error: Literal["collect", "raise"] = "collect",
) -> ZeroShotPrediction:
    """Score ``images`` against ``classes`` with the pipeline's class texts and scores.

    ``images``: a uint8 tensor (B, S, S) from ``preprocess``, or one or a list of paths (PNG, JPEG,
    DICOM), PIL images or numpy arrays. ``classes``: category names, synonyms or
    "<severity> <category>"; None = the model's default classes (the pipeline's evaluation classes).
    ``knowledge`` and ``preprocess`` default to what :func:`medfilip.load` attached to the model.

    A list with images the decoder refuses (missing, empty, not an image, truncated, too large,
    corrupt DICOM ...): with ``on_error="collect"`` (the default) the others are scored, and each
    refused one is an :class:`ImageError` in ``result.errors`` (``result.images`` and
    ``result.indices`` name and place the scored rows; ``result.to_records(errors=True)`` lists
    both in input order). All refused gives a result with no rows. ``on_error="raise"``, or a
    single image not in a list, raises the :class:`~medfilip.images.preprocess.ImageDecodeError`
    ("<path>: <reason>"). Unknown classes raise before any image is decoded.
    """
    if on_error not in ("collect", "raise"):
        raise ValueError(f"zero_shot: on_error must be 'collect' or 'raise', not {on_error!r}")
    knowledge = knowledge or getattr(model, "knowledge", None)
    if knowledge is None:
        raise ValueError(
            "zero_shot: no knowledge dictionary for the class texts; pass knowledge="
            "medfilip.ClassKnowledge.from_yaml('resources/knowledge/dictionary.yaml') or load the model "
            "with medfilip.load(path, knowledge=...)"
        )
    if classes is None:
        classes = list(knowledge.default_classes) or knowledge.categories
    classes = list(classes)
    if not classes:
        raise ValueError("zero_shot: no classes to score")
    if len(set(classes)) != len(classes):
        raise ValueError(f"zero_shot: a class is named twice: {sorted({c for c in classes if classes.count(c) > 1})}")
    texts = class_texts(classes, knowledge, text_variant)
    batch, names, indices, errors = _image_batch(images, preprocess or getattr(model, "preprocess", None), on_error)
    scale = logit_scale_of(model)
    if batch.shape[0] == 0:  # every input refused: no rows, the errors say why
        empty = torch.zeros((0, len(classes)), dtype=torch.float64)
        return ZeroShotPrediction(classes, texts, empty, empty.clone(), scale, names, errors, indices)
    if hasattr(model, "eval"):
        model.eval()
    with torch.inference_mode():
        image_emb = np.concatenate(
            [
                model.encode_image(batch[i : i + batch_size]).float().cpu().numpy()
                for i in range(0, batch.shape[0], batch_size)
            ]
        )
    text_emb = _encode_texts(model, texts, batch_size)
    cosine = zero_shot_scores(image_emb, text_emb)
    probs = zero_shot_scores(image_emb, text_emb, softmax=True, logit_scale=scale)
    return ZeroShotPrediction(
        classes, texts, torch.from_numpy(cosine), torch.from_numpy(probs), scale, names, errors, indices
    )
