"""Element-wise losses: every function returns a tensor of the same shape as its prediction.

Conventions: ``pred`` is what a head outputs, ``target`` what it should have output; nothing here
reduces. Reduce with :func:`workbench.losses.reduction.reduce_loss`, which owns the weighting and
normalisation rules, so each loss stays a plain formula with a hand-checkable value.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def smooth_l1(pred: Tensor, target: Tensor, beta: float = 1.0) -> Tensor:
    """Smooth L1 (Huber divided by ``beta``), element-wise.

    ``0.5 * d**2 / beta`` where ``d = |pred - target| < beta``, else ``d - 0.5 * beta``.
    ``beta == 0`` gives plain L1. Shapes: ``pred`` and ``target`` broadcast; the result has their
    broadcast shape.
    """
    if beta < 0:
        raise ValueError(f"smooth_l1 needs beta >= 0, got {beta}")
    diff = torch.abs(pred - target)
    if beta == 0:
        return diff
    return torch.where(diff < beta, 0.5 * diff * diff / beta, diff - 0.5 * beta)


def l1(pred: Tensor, target: Tensor) -> Tensor:
    """Absolute difference, element-wise; shapes broadcast."""
    return torch.abs(pred - target)


def binary_cross_entropy_with_logits(logits: Tensor, target: Tensor) -> Tensor:
    """Binary cross-entropy of ``sigmoid(logits)`` against ``target`` in ``[0, 1]``, element-wise.

    Shapes: ``logits`` and ``target`` equal; computed in the numerically stable log-sum-exp form.
    """
    return F.binary_cross_entropy_with_logits(logits, target.to(logits.dtype), reduction="none")


def cross_entropy(logits: Tensor, labels: Tensor) -> Tensor:
    """Softmax cross-entropy per row: ``logits`` (N, K), ``labels`` (N,) int64 in ``0..K-1`` -> (N,)."""
    return F.cross_entropy(logits, labels, reduction="none")
