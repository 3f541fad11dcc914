"""Image-text matching losses against an (N images x M texts) target.

With L2-normalised features, ``cos = img @ txt.T`` and ``logits = logit_scale * cos``. The target
``T`` (N x M) is clamped to [0, 1] first (an SSM cosine can be slightly negative).

- ``mse_ce`` (MedFILIP, paper eq. 9: L = L_MSE + L_CE)::

      L_MSE = mean_ij (cos_ij - T_ij)^2
      L_CE  = 1/2 [ mean_i H(T_i / sum_j T_ij, softmax_j logits_ij)        (image -> text)
                  + mean_j H(T_:j / sum_i T_ij, softmax_i logits_ij) ]     (text -> image)

  H(p, q) = -sum p log q; rows (columns) whose target sums to 0 are left out of their mean.
  The MSE compares the cosine, not the scaled logit, so it works at the target's scale.
- ``mse_bce`` (the reference code's train.py): MSE(logits, T) + BCEWithLogits(logits, T), both
  means over all N x M cells, on the scaled logits exactly as the reference computes them.
- ``infonce`` (ConVIRT / CLIP): L_CE alone; with one text per image and T the identity it is the
  usual symmetric InfoNCE, and images sharing a text get a shared soft target.

Each loss is an ``nn.Module`` returning a dict of ``*_loss`` terms; the training loop sums them.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from medfilip.names import LossKind, values

LOSS_KINDS = values(LossKind)


def soft_cross_entropy(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean over rows with a positive target mass of H(row-normalised target, softmax(logits row)).

    Written without data-dependent shapes or branches (no boolean indexing, no ``bool(...)``): rows
    without mass get weight 0, so the step never waits on the host and compiles to one graph. With
    no valid row at all the loss is 0 (still attached to the graph).
    """
    mass = target.sum(dim=1)
    valid = (mass > 0).to(logits.dtype)
    p = target / mass.clamp_min(torch.finfo(mass.dtype).tiny)[:, None]  # 0 where the mass is 0
    per_row = -(p * F.log_softmax(logits, dim=1)).sum(dim=1)
    return (per_row * valid).sum() / valid.sum().clamp_min(1.0)


def symmetric_soft_cross_entropy(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Image->text and text->image soft cross-entropy, averaged."""
    return 0.5 * (soft_cross_entropy(logits, target) + soft_cross_entropy(logits.T, target.T))


class ImageTextMatchingLoss(nn.Module):
    def __init__(self, kind: str = LossKind.mse_ce.value):
        super().__init__()
        if kind not in LOSS_KINDS:
            raise ValueError(f"loss {kind!r} is not one of {', '.join(LOSS_KINDS)}")
        self.kind = kind

    def forward(
        self,
        image_features: torch.Tensor,
        text_features: torch.Tensor,
        logit_scale: torch.Tensor,
        target: torch.Tensor,
    ) -> dict[str, torch.Tensor]:
        if target.shape != (image_features.shape[0], text_features.shape[0]):
            raise ValueError(
                f"target shape {tuple(target.shape)} != (images {image_features.shape[0]}, texts {text_features.shape[0]})"
            )
        cos = image_features.float() @ text_features.float().T
        logits = logit_scale * cos
        target = target.to(cos.dtype).clamp(0.0, 1.0)
        if self.kind == LossKind.mse_ce:
            return {
                "mse_loss": F.mse_loss(cos, target),
                "ce_loss": symmetric_soft_cross_entropy(logits, target),
            }
        if self.kind == LossKind.mse_bce:
            return {
                "mse_loss": F.mse_loss(logits, target),
                "bce_loss": F.binary_cross_entropy_with_logits(logits, target),
            }
        return {"ce_loss": symmetric_soft_cross_entropy(logits, target)}


def total_loss(terms: dict[str, torch.Tensor]) -> torch.Tensor:
    return sum(terms.values())
