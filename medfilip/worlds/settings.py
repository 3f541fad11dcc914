"""The ``worlds:`` section of config/worlds.yaml (the controlled-worlds sweep), validated.

Kept out of the pipeline config: the sweep has its own file (config/worlds.yaml) that names its
grid, its sizes and the predictions registered before any run. ``gpu:`` is a larger grid that
replaces the listed keys when ``medfilip world --grid gpu`` runs.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import yaml
from pydantic import Field, ValidationError, field_validator, model_validator

from medfilip.configbase import Strict
from medfilip.names import Device, LossKind, WorldArm
from medfilip.phantom.primitives import SIDES, ZONES

# what medfilip.worlds.metrics measures for each run (docs/worlds.md, "Metrics")
METRICS = ("cat_auc", "auc_frequent", "auc_rare", "close_auc", "severity_tau", "combo_auc", "heldout_auc", "probe_acc")


class Prediction(Strict):
    """One pre-registered prediction: ``arm`` minus ``versus`` on ``metric`` over the worlds selected by
    ``rho`` (``le0``: rho <= 0, ``eq1``: the largest rho, ``all``: every rho), ``eta`` (null = every eta) and the largest gain.

    ``expect``: ``not_greater`` (the paired t interval's low end is <= 0), ``greater`` (low end > 0),
    ``different`` (the interval excludes 0; if it does not, the prediction fails)."""

    id: str
    text: str
    arm: WorldArm
    versus: WorldArm
    metric: str
    rho: Literal["le0", "eq1", "all"]
    eta: float | None = None
    expect: Literal["not_greater", "greater", "different"]

    @field_validator("metric")
    @classmethod
    def _metric(cls, v: str) -> str:
        if v not in METRICS:
            raise ValueError(f"unknown metric {v!r}: use one of {list(METRICS)}")
        return v


class Endpoint(Strict):
    """The sweep's pre-registered primary endpoint: one of the predictions, and the power statement
    (the difference that matters, the level and the power at which the seeds were sized)."""

    prediction: str = Field(description="The id of the prediction that is the primary endpoint")
    difference_that_matters: float = Field(0.01, gt=0.0, le=1.0, description="The power statement's effect")
    alpha: float = Field(0.05, gt=0.0, lt=0.5, description="Two-sided level of the paired t interval")
    power: float = Field(0.8, gt=0.0, lt=1.0, description="Power at difference_that_matters")


class GridOverride(Strict):
    """The keys a GPU run enlarges (null keeps the CPU value)."""

    rhos: list[float] | None = None
    gains: list[float] | None = None
    etas: list[float] | None = None
    seeds: list[int] | None = None
    size: int | None = Field(None, ge=16, le=256)
    n_train: int | None = Field(None, ge=16)
    n_test: int | None = Field(None, ge=16)
    epochs: int | None = Field(None, ge=1)
    device: str | None = None


class WorldsConfig(Strict):
    rhos: list[float] = Field([-0.3, 0.0, 0.4, 0.7, 1.0], min_length=1, description="Target Mantel correlations")
    gains: list[float] = Field([0.0, 1.0], min_length=1, description="Severity gains g (0: severity draws nothing)")
    etas: list[float] = Field([0.0, 0.15], min_length=1, description="Label-noise rates (same-family swap)")
    seeds: list[int] = Field([0, 1], min_length=1, description="Training seeds (init and batch order, shared by arms)")
    arms: list[WorldArm] = Field(list(WorldArm), min_length=1)
    world_seed: int = Field(0, description="Seed of the patients, placements and label noise of every world")
    size: int = Field(32, ge=16, le=256, description="Image side in pixels")
    n_train: int = Field(1200, ge=16)
    n_test: int = Field(600, ge=16)
    frequencies: list[float] = Field(
        [1.0, 0.45, 0.12],
        min_length=3,
        max_length=3,
        description="Sampling weight of a family's 1st, 2nd, 3rd category",
    )
    zones: list[str] = Field(list(ZONES), min_length=1)
    sides: list[str] = Field(list(SIDES), min_length=1)
    distance_patients: int = Field(12, ge=2, description="Patients the permutation search renders each prototype on")
    measure_patients: int = Field(12, ge=2, description="Other patients on which the achieved correlation is measured")
    anneal_steps: int = Field(6000, ge=100)
    close_pairs: int = Field(6, ge=1, description="Visually closest category pairs scored by close_auc")
    calibration_share: float = Field(0.5, gt=0, lt=1, description="Own-category share of the temperature calibration")
    loss: LossKind = LossKind.mse_ce
    epochs: int = Field(8, ge=1)
    batch_size: int = Field(64, ge=2)
    lr: float = Field(2e-3, gt=0)
    embed_dim: int = Field(64, ge=4)
    threads: int = Field(1, ge=1, description="torch threads per run")
    device: Device = Field(Device.cpu, description="cpu, cuda or auto (cuda when available)")
    predictions: list[Prediction] = Field(default_factory=list)
    endpoint: Endpoint | None = Field(None, description="The primary endpoint (a prediction) and its power statement")
    gpu: GridOverride = Field(default_factory=GridOverride)

    @field_validator("zones")
    @classmethod
    def _zones(cls, v: list[str]) -> list[str]:
        bad = [z for z in v if z not in ZONES]
        if bad:
            raise ValueError(f"unknown zones {bad}: use {list(ZONES)}")
        return v

    @field_validator("sides")
    @classmethod
    def _sides(cls, v: list[str]) -> list[str]:
        bad = [s for s in v if s not in SIDES]
        if bad:
            raise ValueError(f"unknown sides {bad}: use {list(SIDES)}")
        return v

    @field_validator("rhos")
    @classmethod
    def _rhos(cls, v: list[float]) -> list[float]:
        if any(not -1 <= r <= 1 for r in v):
            raise ValueError(f"rhos must lie in [-1, 1], got {v}")
        return v

    @field_validator("etas")
    @classmethod
    def _etas(cls, v: list[float]) -> list[float]:
        if any(not 0 <= e < 1 for e in v):
            raise ValueError(f"etas must lie in [0, 1), got {v}")
        return v

    @model_validator(mode="after")
    def _identity_present(self) -> WorldsConfig:
        if WorldArm.identity.value not in self.arms:
            raise ValueError("arms must include identity (every delta is taken against it)")
        return self

    @model_validator(mode="after")
    def _endpoint_is_a_prediction(self) -> WorldsConfig:
        ids = [p.id for p in self.predictions]
        if len(set(ids)) != len(ids):
            raise ValueError(f"prediction ids must be unique, got {ids}")
        if self.endpoint is not None and self.endpoint.prediction not in ids:
            raise ValueError(f"endpoint.prediction {self.endpoint.prediction!r} is not one of the predictions {ids}")
        return self

    def key(self) -> str:
        """A hash of what makes a run's numbers (not the grid, the predictions, threads or device; the
        prototype table and the permutation search's version too): rows of
        runs.csv made under another key are neither reused nor summarised."""
        import hashlib
        import json

        skip = {"rhos", "gains", "etas", "seeds", "arms", "predictions", "endpoint", "gpu", "threads", "device"}
        data = {k: v for k, v in self.model_dump(mode="json").items() if k not in skip}
        # the worlds' prototypes and permutation search make the numbers too
        from medfilip.worlds.prototypes import PROTOTYPES, SEARCH

        data["prototypes"] = hashlib.sha256(PROTOTYPES.round(6).tobytes()).hexdigest()[:12]
        data["search"] = SEARCH
        return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:12]

    def on_gpu(self) -> WorldsConfig:
        """This config with the ``gpu:`` keys replacing their CPU values."""
        changes = {k: v for k, v in self.gpu.model_dump().items() if v is not None}
        return WorldsConfig.model_validate({**self.model_dump(), **changes})


def load_worlds_config(path: str | Path) -> WorldsConfig:
    """Read the ``worlds:`` section of ``path``; errors name the file and the field."""
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise ValueError(f"{path}: worlds config not found") from None
    except yaml.YAMLError as err:
        raise ValueError(f"{path}: not valid YAML ({err})") from None
    if not isinstance(data, dict) or "worlds" not in data:
        raise ValueError(f"{path}: expected a top-level `worlds:` section")
    try:
        return WorldsConfig.model_validate(data["worlds"] or {})
    except ValidationError as err:
        problems = "; ".join(f"{'.'.join(['worlds', *(str(x) for x in e['loc'])])}: {e['msg']}" for e in err.errors())
        raise ValueError(f"{path}: {problems}") from None
