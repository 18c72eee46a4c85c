"""Losses: element-wise functions (``basic``, ``kl``) and one reduction helper (``reduction``).

Each loss returns an unreduced tensor; :func:`reduce_loss` weights and normalises it.
"""

from workbench.losses.anchor import binary_anchor_loss
from workbench.losses.bald import bald, difficulty
from workbench.losses.balanced_l1 import balanced_l1
from workbench.losses.basic import binary_cross_entropy_with_logits, cross_entropy, l1, smooth_l1
from workbench.losses.focal import sigmoid_focal_loss
from workbench.losses.kl import kl_rpn_loss
from workbench.losses.reduction import reduce_loss

__all__ = [
    "bald",
    "balanced_l1",
    "binary_anchor_loss",
    "binary_cross_entropy_with_logits",
    "cross_entropy",
    "difficulty",
    "kl_rpn_loss",
    "l1",
    "reduce_loss",
    "sigmoid_focal_loss",
    "smooth_l1",
]
