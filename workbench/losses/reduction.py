"""The one reduction helper every workbench loss goes through.

Conventions: ``loss`` is element-wise (any shape); ``weight`` broadcasts to it; ``avg_factor`` is
the normaliser a detector chooses (e.g. the number of sampled anchors) instead of the element
count.
"""

from __future__ import annotations

from typing import Literal

from torch import Tensor

Reduction = Literal["none", "mean", "sum"]


def reduce_loss(
    loss: Tensor,
    weight: Tensor | None = None,
    reduction: Reduction = "mean",
    avg_factor: float | Tensor | None = None,
) -> Tensor:
    """Weight and reduce an element-wise loss.

    - ``reduction="none"``: the weighted loss, same shape as ``loss``;
    - ``reduction="sum"``: the sum of the weighted loss (``avg_factor`` must be ``None``);
    - ``reduction="mean"``: the sum divided by ``avg_factor`` when given, else the mean over all
      elements. An empty ``loss`` with no ``avg_factor`` reduces to ``0`` (not NaN), keeping the
      graph connected so ``backward`` still works.
    """
    if weight is not None:
        loss = loss * weight
    if reduction == "none":
        if avg_factor is not None:
            raise ValueError("avg_factor has no meaning with reduction='none'")
        return loss
    if reduction == "sum":
        if avg_factor is not None:
            raise ValueError("avg_factor needs reduction='mean'")
        return loss.sum()
    if reduction == "mean":
        if avg_factor is None:
            if loss.numel() == 0:
                return loss.sum()
            return loss.mean()
        return loss.sum() / avg_factor
    raise ValueError(f"unknown reduction {reduction!r}; use 'none', 'mean' or 'sum'")
