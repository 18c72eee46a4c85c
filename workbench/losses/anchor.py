"""Anchor loss (Ryou, Jeong and Perona, "Anchor Loss: Modulating Loss Scale based on Prediction
Difficulty", ICCV 2019), in a binary (one sigmoid) form for an objectness score.

The paper's loss over classes ``k`` is ``-sum_k [y_k log p_k + (1 - y_k) (1 + p_k - q*)^gamma
log(1 - p_k)]`` with ``q*`` the probability of the true class, held fixed (the "anchor", no
gradient): the true-class term is plain cross-entropy, and a wrong class is penalised more the
closer its probability comes to the true class's (or passes it).

Binary form used here: one sigmoid ``p = sigmoid(logit)``, the object's probability; the
background has ``1 - p``.

- target 1 (the object is the true class): ``-log p``, unmodulated;
- target 0 (the background is the true class, ``q* = 1 - p``): the object class is the wrong
  one, ``-(1 + p - sg(1 - p))^gamma log(1 - p) = -(2 sg(p))^gamma log(1 - p)``.

So confident negatives (``p < 1/2``) are down-weighted and negatives scored as objects
(``p > 1/2``) up-weighted, up to ``2^gamma``. The paper's default ``gamma = 0.5``. Targets
between 0 and 1 interpolate the two factors.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def binary_anchor_loss(logits: Tensor, target: Tensor, gamma: float = 0.5) -> Tensor:
    """Element-wise ``(t + (1 - t) (2 sg(p))^gamma) * BCE(logits, t)`` (see the module
    docstring): plain cross-entropy on positives, negatives modulated by ``(2p)^gamma``."""
    if gamma < 0:
        raise ValueError(f"binary_anchor_loss needs gamma >= 0, got {gamma}")
    target = target.to(logits.dtype)
    ce = F.binary_cross_entropy_with_logits(logits, target, reduction="none")
    with torch.no_grad():
        factor = target + (1 - target) * (2.0 * torch.sigmoid(logits)) ** gamma
    return factor * ce


__all__ = ["binary_anchor_loss"]
