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

LOSS_KINDS = ("mse_ce", "mse_bce", "infonce")


def soft_cross_entropy(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean over rows with a positive target mass of H(row-normalised target, softmax(logits row))."""
    mass = target.sum(dim=1)
    valid = mass > 0
    if not bool(valid.any()):
        return logits.sum() * 0.0
    p = target[valid] / mass[valid, None]
    return -(p * F.log_softmax(logits[valid], dim=1)).sum(dim=1).mean()


def symmetric_soft_cross_entropy(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Image->text and text->image soft cross-entropy, averaged."""
    return 0.5 * (soft_cross_entropy(logits, target) + soft_cross_entropy(logits.T, target.T))


class ImageTextMatchingLoss(nn.Module):
    def __init__(self, kind: str = "mse_ce"):
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
        if self.kind == "mse_ce":
            return {
                "mse_loss": F.mse_loss(cos, target),
                "ce_loss": symmetric_soft_cross_entropy(logits, target),
            }
        if self.kind == "mse_bce":
            return {
                "mse_loss": F.mse_loss(logits, target),
                "bce_loss": F.binary_cross_entropy_with_logits(logits, target),
            }
        return {"ce_loss": symmetric_soft_cross_entropy(logits, target)}


def total_loss(terms: dict[str, torch.Tensor]) -> torch.Tensor:
    return sum(terms.values())
