"""Sigmoid focal loss (Lin et al., "Focal Loss for Dense Object Detection", ICCV 2017, eq. 5).

Conventions: ``logits`` are per-class sigmoid logits of any shape, ``target`` the same shape with
values in ``[0, 1]`` (one-hot rows for detection, all zeros for background). Nothing here reduces:
reduce with :func:`workbench.losses.reduce_loss` (RetinaNet divides the sum by the number of
positive anchors).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def sigmoid_focal_loss(logits: Tensor, target: Tensor, alpha: float = 0.25, gamma: float = 2.0) -> Tensor:
    """Element-wise ``-alpha_t * (1 - p_t) ** gamma * log(p_t)``.

    ``p = sigmoid(logits)``; ``p_t = p`` where the target is 1 and ``1 - p`` where it is 0 (linear
    in between); ``alpha_t = alpha`` for targets 1 and ``1 - alpha`` for targets 0. A negative
    ``alpha`` switches the class weighting off. The cross-entropy term is computed from the logits
    in the stable log-sum-exp form. Equal to ``torchvision.ops.sigmoid_focal_loss`` with
    ``reduction="none"`` up to float rounding (the same terms, regrouped to take fewer passes);
    the paper's defaults are ``alpha = 0.25``, ``gamma = 2``.
    """
    if gamma < 0:
        raise ValueError(f"sigmoid_focal_loss needs gamma >= 0, got {gamma}")
    target = target.to(logits.dtype)
    prob = torch.sigmoid(logits)
    ce = F.binary_cross_entropy_with_logits(logits, target, reduction="none")
    # 1 - p_t = 1 - (p t + (1 - p)(1 - t)) = p + t - 2 p t, in fewer passes over the tensor
    one_minus_pt = prob + target - 2 * prob * target
    modulation = one_minus_pt * one_minus_pt if gamma == 2 else one_minus_pt**gamma
    loss = ce * modulation
    if alpha >= 0:
        # alpha_t = alpha t + (1 - alpha)(1 - t) = (1 - alpha) + (2 alpha - 1) t
        loss = loss * ((1 - alpha) + (2 * alpha - 1) * target)
    return loss
