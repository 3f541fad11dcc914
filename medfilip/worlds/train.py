"""Training one arm in one world: a small image encoder against the world's frozen label vectors.

The image side is a 3-layer CNN; the text side is the E_sim vector of each label text (frozen,
as the text cache makes the lower layers) through a trained linear map. Batches hold images and
their own label texts (N x N); the arm only decides the target (``medfilip.ssm`` builds every
SSM kind, ``training.loss`` is the loss). For one seed every arm starts from the same weights
(``torch.manual_seed(seed)`` right before the model is built) and sees the same batches in the
same order (``numpy.random.default_rng(seed)`` permutes each epoch): :func:`batch_order`.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from medfilip.names import WorldArm
from medfilip.phantom.anatomy import stable_seed
from medfilip.ssm import Calibration, shuffle_non_positives, ssm_target
from medfilip.training.loss import ImageTextMatchingLoss, total_loss
from medfilip.worlds.world import CATEGORIES, World


class WorldImageEncoder(nn.Module):
    def __init__(self, dim: int):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(1, 16, 3, stride=2, padding=1),
            nn.ReLU(),
            nn.Conv2d(16, 32, 3, stride=2, padding=1),
            nn.ReLU(),
            nn.Conv2d(32, 64, 3, stride=2, padding=1),
            nn.ReLU(),
            nn.AdaptiveAvgPool2d(2),
            nn.Flatten(),
        )
        self.head = nn.Linear(256, dim)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return nn.functional.normalize(self.head(self.body(x)), dim=-1)


class WorldModel(nn.Module):
    def __init__(self, text_dim: int, dim: int):
        super().__init__()
        self.image = WorldImageEncoder(dim)
        self.text = nn.Linear(text_dim, dim)
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1 / 0.07)))

    def encode_text(self, vectors: torch.Tensor) -> torch.Tensor:
        return nn.functional.normalize(self.text(vectors), dim=-1)


def build_model(seed: int, text_dim: int, dim: int) -> WorldModel:
    torch.manual_seed(seed)
    return WorldModel(text_dim, dim)


def batch_order(n: int, batch_size: int, epochs: int, seed: int) -> list[np.ndarray]:
    """The index batches of a run: a fresh permutation per epoch from ``seed`` (last short batch dropped
    when it has fewer than 2 images)."""
    rng = np.random.default_rng(stable_seed("world-batches", seed))
    out = []
    for _ in range(epochs):
        perm = rng.permutation(n)
        out.extend(b for b in np.array_split(perm, range(batch_size, n, batch_size)) if len(b) >= 2)
    return out


def to_tensor(images: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(images.astype(np.float32) / 255.0 - 0.5)[:, None]


@dataclass
class Targets:
    """Everything an arm's target needs about the labels of a world."""

    vectors: torch.Tensor  # (L, D)
    calibration: Calibration
    oracle: torch.Tensor  # (L, L) oracle similarity
    oracle_calibration: Calibration
    category: torch.Tensor  # (L,) category index

    def to(self, device) -> Targets:
        return Targets(
            self.vectors.to(device),
            self.calibration,
            self.oracle.to(device),
            self.oracle_calibration,
            self.category.to(device),
        )

    @classmethod
    def of(cls, world: World) -> Targets:
        from medfilip.worlds.world import fit_temperature_share

        text = world.text
        category = np.array([CATEGORIES.index(c) for c, _, _ in text.labels])
        oracle = world.oracle_similarity()
        t_oracle = fit_temperature_share(oracle, category, np.ones(len(category)), world.cfg.calibration_share)
        return cls(
            torch.from_numpy(text.vectors.astype(np.float32)),
            Calibration("temperature", temperature=text.temperature),
            torch.from_numpy(oracle.astype(np.float32)),
            Calibration("temperature", temperature=t_oracle),
            torch.from_numpy(category),
        )


def arm_target(arm: str, targets: Targets, label_ids: torch.Tensor, seed: int) -> torch.Tensor:
    """The (N, N) target of a batch whose image i carries label ``label_ids[i]`` and text j is label
    ``label_ids[j]``. Positives (1 in every arm): the text is the image's own label."""
    ids = label_ids.long()
    positives = ids[:, None] == ids[None, :]
    image_ids = list(ids.view(-1, 1))
    arm = WorldArm(arm).value
    if arm == WorldArm.identity.value:
        return positives.float()
    if arm == WorldArm.multi_hot.value:
        cat = targets.category[ids]
        return (cat[:, None] == cat[None, :]).float()
    if arm == WorldArm.ssm_raw.value:
        return ssm_target(image_ids, ids, targets.vectors, positives=positives)
    if arm == WorldArm.ssm_oracle.value:
        return ssm_target(
            image_ids,
            ids,
            targets.vectors,
            similarity=targets.oracle,
            calibration=targets.oracle_calibration,
            positives=positives,
        )
    target = ssm_target(image_ids, ids, targets.vectors, calibration=targets.calibration, positives=positives)
    if arm == WorldArm.ssm_shuffled.value:
        content = hash(tuple(ids.cpu().tolist())) & 0xFFFFFFFF
        target = shuffle_non_positives(target, positives, int(stable_seed("world-shuffle", seed, content)[0]))
    return target


@dataclass
class RunResult:
    model: WorldModel
    seconds: float
    losses: list[float] = field(default_factory=list)
    batches: list[np.ndarray] = field(default_factory=list)
    initial_state: dict | None = None


def train_arm(
    world: World,
    arm: str,
    images: np.ndarray,
    label_ids: np.ndarray,
    seed: int,
    *,
    targets: Targets | None = None,
    keep_initial: bool = False,
) -> RunResult:
    """Train ``arm`` on ``images`` (uint8 N x S x S) with (possibly noisy) label ids."""
    cfg = world.cfg
    torch.set_num_threads(cfg.threads)
    from medfilip.devices import resolve_device

    device = torch.device(resolve_device(cfg.device, "worlds.device"))
    targets = (targets or Targets.of(world)).to(device)
    model = build_model(seed, targets.vectors.shape[1], cfg.embed_dim)
    initial = {k: v.clone() for k, v in model.state_dict().items()} if keep_initial else None
    model.to(device)
    loss_fn = ImageTextMatchingLoss(cfg.loss)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=1e-4)
    x_all = to_tensor(images).to(device)
    y_all = torch.from_numpy(np.asarray(label_ids, dtype=np.int64)).to(device)
    batches = batch_order(len(images), cfg.batch_size, cfg.epochs, seed)
    start = time.perf_counter()
    losses = []
    model.train()
    for b in batches:
        idx = torch.from_numpy(b).to(device)
        ids = y_all[idx]
        img = model.image(x_all[idx])
        txt = model.encode_text(targets.vectors[ids])
        target = arm_target(arm, targets, ids, seed)
        loss = total_loss(loss_fn(img, txt, model.logit_scale.exp().clamp(max=100), target))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        losses.append(loss.detach())
    model.cpu().eval()
    losses = [float(x) for x in torch.stack(losses).cpu()] if losses else []
    return RunResult(model, time.perf_counter() - start, losses, batches, initial)
