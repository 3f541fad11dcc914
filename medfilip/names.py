"""The string vocabularies several modules share, as :class:`Choice` enums in one place, and the shared
constants (the splits, the default evaluation classes).

A member is its value wherever a string is expected (``LossKind.infonce == "infonce"``, ``str(member)``
and f-strings give the value), and the config models store the plain value (``Strict`` uses
``use_enum_values``): code reads a setting as a value or a member alike, with ``str(x)`` where it
needs the text.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from enum import Enum

_SEPARATORS = re.compile(r"[\s_/,\-]+")


# the run every paired difference is taken against, unless evaluation.reference_run names another
REFERENCE_RUN = "medfilip"

# the splits of every store and report shard, and the held-out ones an evaluation may score
SPLITS = ("train", "validate", "test")
HELD_OUT_SPLITS = ("validate", "test")


class Choice(str, Enum):
    """A setting's choice (every enum of the config): equal to, and printed as, its value. The config
    models keep plain values (use_enum_values); code handles a value or a member alike: ``str(x)``."""

    def __str__(self) -> str:
        return self.value


def normalise_name(name: str) -> str:
    """The matching key of a category name or synonym: lower case, ``_ / - ,`` and runs of spaces as one space
    (the knowledge dictionary and the library's class names both match through it)."""
    return _SEPARATORS.sub(" ", name.strip().lower()).strip()


class CategoryNames:
    """The name index of a set of categories: a category name or any of its synonyms, matched through
    :func:`normalise_name`, gives the canonical category (what the knowledge dictionary and the library's
    class names both resolve by). A category's own name wins over another category's synonym, and of two
    categories listing the same synonym the first keeps it (the dictionary's validation refuses both)."""

    def __init__(self, synonyms: Mapping[str, Iterable[str]]):
        """``synonyms``: category -> its synonyms, for every category (an empty list where it has none)."""
        by_key = {normalise_name(name): name for name in synonyms}
        for name, names in synonyms.items():
            for synonym in names:
                by_key.setdefault(normalise_name(synonym), name)
        self._by_key = by_key

    def resolve(self, name: str) -> str | None:
        """The canonical category of a category name or synonym (any case, ``_ / - ,`` as spaces), else None."""
        return self._by_key.get(normalise_name(name))

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and self.resolve(name) is not None

    def close_matches(self, name: str, n: int = 3) -> list[str]:
        """Up to ``n`` canonical categories whose name or a synonym is spelled close to ``name``, closest first."""
        import difflib

        close = difflib.get_close_matches(normalise_name(name), list(self._by_key), n=2 * n, cutoff=0.6)
        return list(dict.fromkeys(self._by_key[c] for c in close))[:n]

    def did_you_mean(self, name: str) -> str:
        """The tail of an unknown-name error: ``" (did you mean 'a', 'b'?)"`` naming :meth:`close_matches`,
        or "" when nothing is close."""
        names = self.close_matches(name)
        return f" (did you mean {', '.join(map(repr, names))}?)" if names else ""


class ReportSource(Choice):
    """The report corpora a reader exists for (reports.source, the `source` column of the shards)."""

    iu_xray = "iu_xray"
    mimic_cxr = "mimic_cxr"


class LabelVariant(Choice):
    """Label texts written to labels.parquet (medfilip.labels.templates renders them)."""

    category = "category"  # "{category}": no fine-grained triplet, no explanation
    triplet = "triplet"  # "{severity} {location} {category}"
    triplet_explanation = "triplet_explanation"  # the paper's full template (eq. 10)
    report = "report"  # the report text itself (ConVIRT-style)


class ClassTextVariant(Choice):
    """How a zero-shot class becomes a text (evaluation.text_variant): the label variants a class name can fill."""

    triplet_explanation = LabelVariant.triplet_explanation.value
    triplet = LabelVariant.triplet.value
    category = LabelVariant.category.value


class EvalText(Choice):
    """The text form a run is scored with (training.runs.*.eval_text; by default its label variant's own)."""

    triplet_explanation = ClassTextVariant.triplet_explanation.value
    triplet = ClassTextVariant.triplet.value
    category = ClassTextVariant.category.value
    report_sentence = "report_sentence"  # "There is {severity} {location} {category}.": what report-text runs read


# the evaluation text of each label variant: what a run trained on that variant reads
EVAL_TEXT_OF_LABEL_VARIANT = {
    LabelVariant.triplet_explanation.value: EvalText.triplet_explanation.value,
    LabelVariant.triplet.value: EvalText.triplet.value,
    LabelVariant.category.value: EvalText.category.value,
    LabelVariant.report.value: EvalText.report_sentence.value,
}


class Device(Choice):
    """Where a model runs (every ``device`` setting): cpu, cuda, or auto (cuda when torch sees a GPU;
    medfilip.devices.resolve_device reads it)."""

    cpu = "cpu"
    cuda = "cuda"
    auto = "auto"


class CalibrationMethod(Choice):
    """How SSM cosines become targets (embeddings.calibration.method; medfilip.ssm.Calibration)."""

    none = "none"
    floor = "floor"
    temperature = "temperature"


class TargetKind(Choice):
    """What a training run's soft targets are (training.runs.*.target)."""

    ssm = "ssm"  # the semantic similarity matrix, paper eqs. 4-5
    ssm_same_category = "ssm_same_category"  # SSM kept only within a category (reference code)
    multi_hot = "multi_hot"  # 1 where the text's category is one of the image's
    identity = "identity"  # 1 for the image's own texts
    ssm_shuffled = "ssm_shuffled"  # control: each row's SSM values permuted over its non-positive texts


# the targets computed from E_sim label embeddings (the others need none)
SSM_TARGETS = (TargetKind.ssm.value, TargetKind.ssm_same_category.value, TargetKind.ssm_shuffled.value)


class WorldArm(Choice):
    """The arms of the controlled worlds (medfilip.worlds): a target kind each, one image-text loss."""

    ssm = "ssm"  # calibrated E_sim cosines of the label texts
    ssm_raw = "ssm_raw"  # the same cosines, uncalibrated
    identity = "identity"  # 1 for the image's own label text
    multi_hot = "multi_hot"  # 1 where the text's category is the image's
    ssm_shuffled = "ssm_shuffled"  # calibrated SSM, each row permuted over its non-positive texts
    ssm_oracle = "ssm_oracle"  # the ceiling: similarities from the true primitive distances replace the cosines


class MaskedTargets(Choice):
    """What a masked label text is matched against (training.masked_targets)."""

    source = "source"  # the target of the unmasked label it was made from (the paper's, the default)
    entailment = "entailment"  # its own E_sim vector; a positive of every image with a label that entails it


class LossKind(Choice):
    """A training run's loss (training.runs.*.loss)."""

    mse_ce = "mse_ce"  # MSE + soft cross-entropy (paper eq. 9)
    mse_bce = "mse_bce"  # the reference code's MSE + BCE-with-logits
    infonce = "infonce"  # symmetric cross-entropy only


def values(enum: type[Enum]) -> tuple[str, ...]:
    """The values of an enum in declaration order (the vocabulary as plain strings)."""
    return tuple(member.value for member in enum)


# The IU-Xray MeSH categories with the most held-out reports (validate + test of the embedded corpus):
# every one has >= 20 held-out reports, so AUC and F1 are defined on both splits.
DEFAULT_SINGLE_LABEL = ["normal", "cardiomegaly", "atelectasis", "opacity", "pleural effusion", "granuloma"]
DEFAULT_MULTI_LABEL = [
    "cardiomegaly",
    "atelectasis",
    "opacity",
    "pleural effusion",
    "granuloma",
    "calcification",
    "degenerative changes",
    "support devices",
    "nodule",
    "emphysema",
    "hyperinflation",
    "scoliosis",
]
