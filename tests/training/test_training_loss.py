"""The image-text matching losses against numbers worked out by hand.

Example used throughout: image features (1, 0), (0, 1); text features (1, 0), (0.6, 0.8);
so cos = [[1, 0.6], [0, 0.8]]; logit scale 2 gives logits [[2, 1.2], [0, 1.6]];
target T = [[1, 0.5], [0, 1]].
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from medfilip.training.loss import ImageTextMatchingLoss, soft_cross_entropy

IMG = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
TXT = torch.tensor([[1.0, 0.0], [0.6, 0.8]])
SCALE = torch.tensor(2.0)
TARGET = torch.tensor([[1.0, 0.5], [0.0, 1.0]])

# log-sum-exp of the four softmax groups
LSE_ROW0 = math.log(math.exp(2) + math.exp(1.2))  # 2.371101
LSE_ROW1 = math.log(math.exp(0) + math.exp(1.6))  # 1.783901
LSE_COL0 = math.log(math.exp(2) + math.exp(0))  # 2.126928
LSE_COL1 = math.log(math.exp(1.2) + math.exp(1.6))  # 2.113015


def test_mse_ce_matches_hand_computation():
    terms = ImageTextMatchingLoss("mse_ce")(IMG, TXT, SCALE, TARGET)
    # MSE on the cosine: ((1-1)^2 + (0.6-0.5)^2 + (0-0)^2 + (0.8-1)^2) / 4 = 0.05 / 4
    assert terms["mse_loss"].item() == pytest.approx(0.0125, abs=1e-6)
    # image -> text: row 0 target (1, .5)/1.5 = (2/3, 1/3); row 1 (0, 1)
    row0 = -(2 / 3 * (2 - LSE_ROW0) + 1 / 3 * (1.2 - LSE_ROW0))  # 0.637767
    row1 = -(1.6 - LSE_ROW1)  # 0.183901
    # text -> image: column 0 target (1, 0); column 1 (.5, 1)/1.5 = (1/3, 2/3)
    col0 = -(2 - LSE_COL0)  # 0.126928
    col1 = -(1 / 3 * (1.2 - LSE_COL1) + 2 / 3 * (1.6 - LSE_COL1))  # 0.646349
    expected = 0.5 * ((row0 + row1) / 2 + (col0 + col1) / 2)
    assert expected == pytest.approx(0.398736, abs=1e-6)
    assert terms["ce_loss"].item() == pytest.approx(expected, abs=1e-6)
    assert set(terms) == {"mse_loss", "ce_loss"}


def test_mse_bce_is_the_reference_codes_loss_on_scaled_logits():
    terms = ImageTextMatchingLoss("mse_bce")(IMG, TXT, SCALE, TARGET)
    # MSE(logits, T) = ((2-1)^2 + (1.2-.5)^2 + 0^2 + (1.6-1)^2) / 4 = 1.85 / 4
    assert terms["mse_loss"].item() == pytest.approx(0.4625, abs=1e-6)

    def bce(x, t):
        s = 1 / (1 + math.exp(-x))
        return -(t * math.log(s) + (1 - t) * math.log(1 - s))

    expected = (bce(2, 1) + bce(1.2, 0.5) + bce(0, 0) + bce(1.6, 1)) / 4
    assert expected == pytest.approx(0.466815, abs=1e-6)
    assert terms["bce_loss"].item() == pytest.approx(expected, abs=1e-6)


def test_infonce_with_identity_target_is_symmetric_clip_loss():
    identity = torch.eye(2)
    terms = ImageTextMatchingLoss("infonce")(IMG, TXT, SCALE, identity)
    rows = (-(2 - LSE_ROW0) - (1.6 - LSE_ROW1)) / 2
    cols = (-(2 - LSE_COL0) - (1.6 - LSE_COL1)) / 2
    assert terms["ce_loss"].item() == pytest.approx((rows + cols) / 2, abs=1e-6)
    assert terms["ce_loss"].item() == pytest.approx(0.298736, abs=1e-6)
    logits = SCALE * IMG @ TXT.T
    clip = (F.cross_entropy(logits, torch.arange(2)) + F.cross_entropy(logits.T, torch.arange(2))) / 2
    assert terms["ce_loss"].item() == pytest.approx(clip.item(), abs=1e-6)
    assert set(terms) == {"ce_loss"}


def test_negative_targets_are_clamped_and_empty_rows_skipped():
    logits = torch.tensor([[1.0, 0.0], [0.5, 0.5]])
    # row 1 has no positive mass (negative entries clamp to 0): only row 0 counts
    target = torch.tensor([[1.0, 0.0], [-0.2, 0.0]]).clamp(0, 1)
    assert soft_cross_entropy(logits, target).item() == pytest.approx(-(1 - math.log(math.e + 1)), abs=1e-6)
    loss = ImageTextMatchingLoss("mse_ce")(IMG, TXT, SCALE, torch.tensor([[1.0, -0.3], [0.0, 1.0]]))
    clamped = ImageTextMatchingLoss("mse_ce")(IMG, TXT, SCALE, torch.tensor([[1.0, 0.0], [0.0, 1.0]]))
    assert loss["mse_loss"].item() == pytest.approx(clamped["mse_loss"].item())


def test_gradients_flow_to_features_and_scale():
    img = IMG.clone().requires_grad_(True)
    scale = SCALE.clone().requires_grad_(True)
    terms = ImageTextMatchingLoss("mse_ce")(img, TXT, scale, TARGET)
    sum(terms.values()).backward()
    assert img.grad is not None and img.grad.abs().sum() > 0
    assert scale.grad is not None


def test_shape_mismatch_and_unknown_kind_are_errors():
    with pytest.raises(ValueError, match="target shape"):
        ImageTextMatchingLoss("mse_ce")(IMG, TXT, SCALE, torch.ones(2, 3))
    with pytest.raises(ValueError, match="not one of"):
        ImageTextMatchingLoss("hinge")
