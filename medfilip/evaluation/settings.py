"""Config section `evaluation:` (imported by medfilip.pipeline.config; keep this module free of heavy imports).

Zero-shot evaluation of every trained run on every evaluation set: the downstream stores
(results/images/{dataset}/, their labels) and the MIMIC-style sets built from the held-out
(validate / test) images of the pretraining corpus store (results/images/corpus/, ground truth =
the findings each image was rendered from).
"""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field, field_validator, model_validator

from medfilip.configbase import UNIQUE_ITEMS, RerunKeys, Strict
from medfilip.evaluation.probe.settings import LinearProbeSettings
from medfilip.evaluation.segmentation.settings import SegmentationSettings
from medfilip.names import DEFAULT_MULTI_LABEL, DEFAULT_SINGLE_LABEL, REFERENCE_RUN, ClassTextVariant, Device


def _unique(value: list[str] | None, what: str) -> list[str] | None:
    if value is None:
        return value
    twice = sorted({v for v in value if value.count(v) > 1})
    if twice:
        raise ValueError(f"{what} listed twice: {twice}")
    return value


class CorpusSetsSettings(Strict):
    enabled: bool = Field(
        True, description="Build the MIMIC-style single-label, multi-label and fine-grained sets from the corpus store"
    )
    single_label_classes: list[str] = Field(
        DEFAULT_SINGLE_LABEL,
        min_length=2,
        description="Classes of the single-label set: an image is kept when exactly one of them is among its "
        "findings ('normal' = no finding at all); scored by top-1 and per class",
        json_schema_extra=UNIQUE_ITEMS,
    )
    multi_label_classes: list[str] = Field(
        DEFAULT_MULTI_LABEL,
        min_length=1,
        description="Classes of the multi-label set (every held-out image; 'normal' = no finding at all)",
        json_schema_extra=UNIQUE_ITEMS,
    )
    fine_grained_categories: list[str] | None = Field(
        None,
        description="Categories whose severity+category pairs form the fine-grained set; null = any category",
        json_schema_extra=UNIQUE_ITEMS,
    )
    fine_grained_min_count: int = Field(
        5,
        ge=1,
        le=1_000_000,
        description="A severity+category pair becomes a fine-grained class when it has at least this many images "
        "in the test split and in the validate split",
    )

    fg_categories: int = Field(
        5,
        ge=1,
        le=1000,
        description="MIMIC-FG-style set corpus_fg: this many categories (the most common among held-out findings "
        "with a stated severity) ...",
    )
    fg_severities: int = Field(
        3,
        ge=2,
        le=100,
        description="... times this many severities of each (its most common ones); classes = severity + category, "
        "negatives include the same category at another severity",
    )

    severity_min_count: int = Field(
        20,
        ge=1,
        le=1_000_000,
        description="corpus_severity (severity measured as severity: negatives are the same category at another "
        "stated severity only, severities on the scale of resources/vocabulary/severity_scale.yaml, unstated ones "
        "left out): a severity + category class needs this many test images and as many same-category negatives; "
        "Kendall tau needs as many stated test images per category",
    )

    @field_validator("single_label_classes", "multi_label_classes", "fine_grained_categories")
    @classmethod
    def _no_repeats(cls, value, info):
        return _unique(value, info.field_name)


class BootstrapSettings(Strict):
    n_resamples: int = Field(
        1000, ge=1, le=1_000_000, description="Bootstrap resamples of the test images behind every interval"
    )
    seed: int = Field(0, ge=0, le=2**32 - 1, description="Seed of the resamples (the same for every run: paired)")


# the bootstrap of a table function called without one (the config's defaults; frozen, so shared)
DEFAULT_BOOTSTRAP = BootstrapSettings()


class RetrievalSettings(Strict):
    max_images: int = Field(
        1000,
        ge=1,
        le=1_000_000,
        description="Held-out corpus images with exactly one finding used for retrieval (paper: 1,000); fewer "
        "when the held-out splits have fewer (a seeded draw when they have more)",
    )
    ks: list[int] = Field(
        [1, 5, 10],
        min_length=1,
        description="K of Precision@K and Recall@K",
        json_schema_extra={**UNIQUE_ITEMS, "items": {"type": "integer", "minimum": 1}},
    )
    baseline_prompt: str = Field(
        "This is an X-ray image of {category}",
        description="The baselines' text, scored for every run beside its own evaluation texts; must contain "
        "'{category}'",
    )

    @field_validator("ks")
    @classmethod
    def _positive_unique(cls, value):
        if any(k < 1 for k in value):
            raise ValueError(f"every K must be >= 1, got {value}")
        return _unique(value, "ks")

    @field_validator("baseline_prompt")
    @classmethod
    def _has_category(cls, value):
        if "{category}" not in value:
            raise ValueError(f"baseline_prompt must contain '{{category}}', got {value!r}")
        return value


class CaseStudySettings(Strict):
    n_images: int = Field(
        4, ge=1, le=32, description="Test images of the case study figure (one per most common category)"
    )


class PrimaryEndpoint(Strict):
    """The method comparison's pre-registered primary endpoint (written before the run; seeds.csv
    reports it in its last row, whatever it shows). No metric: no endpoint."""

    metric: str | None = Field(
        None,
        pattern=r"^[a-z0-9_]+$",
        description="A column of zeroshot.csv, e.g. own_downstream_mean_auc (each run scored with its own text "
        "form); null = no primary endpoint",
    )
    contrast: str | None = Field(
        None,
        pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]* - [A-Za-z0-9][A-Za-z0-9_.-]*$",
        description="'<method> - <method>': two methods of training.runs by their seed-0 run names (medfilip - "
        "no_ssm), differences paired by seed",
    )
    difference_that_matters: float = Field(
        0.01, gt=0.0, le=1.0, description="The smallest difference worth finding: the power statement's effect"
    )
    alpha: float = Field(0.05, gt=0.0, lt=0.5, description="Two-sided level of the paired t-test and its interval")
    power: float = Field(0.8, gt=0.0, lt=1.0, description="Power at difference_that_matters, for the seeds needed")

    @model_validator(mode="after")
    def _both_or_neither(self):
        if (self.metric is None) != (self.contrast is None):
            raise ValueError("primary_endpoint needs both metric and contrast (or neither)")
        return self

    @property
    def enabled(self) -> bool:
        return self.metric is not None

    @property
    def methods(self) -> tuple[str, str]:
        a, b = str(self.contrast).split(" - ")
        return a, b


class EvaluationConfig(Strict):
    rerun_keys: ClassVar[RerunKeys] = {
        # the real-image tables (workflow/rules/real.smk): zero-shot, probe and retrieval in one job
        "real_eval": (
            "text_variant",
            "single_label_score",
            "protocols",
            "bootstrap",
            "reference_run",
            "linear_probe.fractions",
            "linear_probe.seeds",
            "linear_probe.c_grid",
            "linear_probe.max_iter",
            "retrieval.ks",
        ),
        "zeroshot": (
            "text_variant",
            "compare_category_text",
            "single_label_score",
            "protocols",
            "datasets",
            "corpus",
            "bootstrap",
            "reference_run",
            "mismatched_explanation",
        ),
        "retrieval": ("retrieval", "bootstrap", "text_variant", "reference_run"),
        "seed_summary": ("primary_endpoint", "reference_run"),
        "ablation_table": ("reference_run",),
        "case_study": ("case_study", "retrieval.baseline_prompt"),
        "probe_fit": ("linear_probe.fractions", "linear_probe.seeds", "linear_probe.c_grid", "linear_probe.max_iter"),
        "probe_baseline": ("linear_probe.fractions", "linear_probe.seeds", "linear_probe.baselines"),
        "linear_probe": ("bootstrap", "reference_run"),  # + which baselines and datasets are skipped (rows saying why)
        "segmentation_run": ("segmentation", "!segmentation.device"),
        "segmentation_baseline": ("segmentation", "!segmentation.device"),
        "segmentation_table": ("bootstrap", "reference_run"),
    }

    text_variant: ClassTextVariant = Field(
        ClassTextVariant.triplet_explanation,
        description="Class text: triplet_explanation = '{category}, where {category} is {explanation}' (paper eqs. "
        "10-11, IKI), triplet = severity/location/category only, category = the category name",
    )
    reference_run: str = Field(
        REFERENCE_RUN,
        min_length=1,
        description="The run of training.runs every paired difference (delta_*_vs_<run> columns) is taken against: "
        "zero-shot, retrieval, linear-probe, segmentation, ablation and seed tables",
    )
    compare_category_text: list[str] = Field(
        ["covid"],
        description="Sets also scored with the category name alone, as '{set}_by_category' (unseen classes: by "
        "category vs by explanation); a name not evaluated is ignored",
        json_schema_extra=UNIQUE_ITEMS,
    )
    single_label_score: Literal["softmax", "cosine"] = Field(
        "softmax",
        description="Per-class score on single-label sets: softmax over the classes of logit_scale x cosine, or the "
        "cosine itself (multi-label sets always use the cosine)",
    )
    protocols: list[Literal["test", "validate"]] = Field(
        ["test", "validate"],
        min_length=1,
        description="F1/accuracy threshold protocols: test = chosen on the test set (paper, MedKLIP, KAD); validate = "
        "chosen on the validate split, applied to test",
        json_schema_extra=UNIQUE_ITEMS,
    )
    datasets: list[str] | None = Field(
        None,
        description="Downstream stores to evaluate (results/images/{name}/); null = every dataset enabled in datasets:",
        json_schema_extra=UNIQUE_ITEMS,
    )
    batch_size: int = Field(64, ge=1, le=65536, description="Images encoded per forward pass")
    device: Device = Field(Device.auto, description="cpu, cuda, or auto (cuda when available)")
    corpus: CorpusSetsSettings = Field(
        CorpusSetsSettings(),
        description="MIMIC-style sets built from the held-out (validate, test) images of the pretraining corpus "
        "store, ground truth = the findings each image was rendered from",
    )
    bootstrap: BootstrapSettings = Field(
        BootstrapSettings(),
        description="Bootstrap intervals of every evaluation table (resamples of the test images)",
    )
    mismatched_explanation: dict[str, str] = Field(
        {"covid-19 pneumonia": "cardiomegaly"},
        description="Unseen-class control: a set with this class is also scored as '{set}_mismatched', the class's "
        "text carrying the explanation of the category named here (the phantom draws COVID-19 from its own "
        "explanation, so covid_auc is partly built in); {} = no control",
    )
    retrieval: RetrievalSettings = Field(
        RetrievalSettings(),
        description="Image-text retrieval (paper Table V) on held-out corpus images with exactly one finding",
    )
    case_study: CaseStudySettings = Field(CaseStudySettings(), description="Case study figure (paper Fig. 5)")
    segmentation: SegmentationSettings = Field(
        SegmentationSettings(),
        description="Segmentation (paper Table IV): a UNet with each run's pretrained image encoder and one with a "
        "random-init encoder, fine-tuned on fractions of the SIIM-ACR train split, Dice and IoU on test; "
        "checkpoint, threshold and minimum area chosen on validate",
    )
    linear_probe: LinearProbeSettings = Field(
        LinearProbeSettings(), description="Linear probe (paper Table II) and its fine-tuned baselines"
    )
    primary_endpoint: PrimaryEndpoint = Field(
        PrimaryEndpoint(),
        description="The method comparison's primary endpoint, written before the run (config/simulation.yaml): "
        "metric, contrast, difference_that_matters, alpha, power; seeds.csv reports it in its last row; null = none",
    )

    @field_validator("compare_category_text", "protocols", "datasets")
    @classmethod
    def _no_repeats(cls, value, info):
        return _unique(value, info.field_name)
