"""Balanced L1 loss (Pang et al., "Libra R-CNN: Towards Balanced Learning for Object Detection",
CVPR 2019, section 3.3), element-wise.

Conventions as in :mod:`workbench.losses.basic`: ``pred`` and ``target`` broadcast, the result has
their broadcast shape, nothing is reduced.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor


def balanced_l1_b(alpha: float, gamma: float) -> float:
    """``b`` of the balanced L1 loss: the root of ``alpha * ln(b + 1) = gamma`` (paper eq. 9), so
    that the gradient is continuous where the loss turns linear."""
    return math.exp(gamma / alpha) - 1.0


def balanced_l1(
    pred: Tensor, target: Tensor, *, alpha: float = 0.5, gamma: float = 1.5, beta: float = 1.0
) -> Tensor:
    """Balanced L1 of ``x = pred - target``, element-wise, with ``b = exp(gamma / alpha) - 1``.

    With ``beta = 1`` it is the paper's equation (8):

    - ``|x| < 1``: ``alpha / b * (b|x| + 1) * ln(b|x| + 1) - alpha|x|``;
    - otherwise: ``gamma|x| + gamma / b - alpha`` (the constant ``C`` of eq. 8 that makes the
      two pieces meet at ``|x| = 1``);

    whose gradient is ``alpha * ln(b|x| + 1)`` inside and ``gamma`` outside (eq. 7), equal at
    the knee by eq. 9. ``beta`` moves the knee to ``|x| = beta`` by scaling the loss,
    ``L_beta(x) = beta * L_1(x / beta)``:

    - ``|x| < beta``: ``alpha / b * (b|x| + beta) * ln(b|x| / beta + 1) - alpha|x|``;
    - otherwise: ``gamma|x| + gamma * beta / b - alpha * beta``;

    so the gradient is ``alpha * ln(b|x| / beta + 1)`` inside and ``gamma`` outside for every
    ``beta``: continuous at the knee and zero at ``x = 0``. The authors' code (mmdetection's
    ``balanced_l1_loss``) writes ``(b|x| + 1)`` where this writes ``(b|x| + beta)``; the two agree
    for ``beta = 1``, but for ``beta != 1`` mmdetection's gradient is
    ``alpha * ln(b|x| / beta + 1) + alpha * (1 - beta) / (b|x| + beta)``: at ``beta = 0.11``
    (Libra RetinaNet) it starts at ``alpha * (1 / beta - 1) = 4.05`` at ``x = 0`` (a kink) and
    drops from 1.70 to ``gamma = 1.5`` at the knee. This function keeps the paper's gradient.
    """
    if not (alpha > 0 and gamma > 0 and beta > 0):
        raise ValueError(f"balanced_l1 needs alpha, gamma and beta > 0, got {alpha}, {gamma}, {beta}")
    b = balanced_l1_b(alpha, gamma)
    diff = torch.abs(pred - target)
    inside = alpha / b * (b * diff + beta) * torch.log1p(b * diff / beta) - alpha * diff
    outside = gamma * diff + gamma * beta / b - alpha * beta
    return torch.where(diff < beta, inside, outside)
