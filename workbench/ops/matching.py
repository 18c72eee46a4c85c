"""Matching candidates (anchors, proposals) to ground truth by an IoU matrix.

Conventions: ``iou`` is ``(G, A)``: G ground-truth boxes (rows) by A candidates (columns).
A match vector is ``(A,)`` int64 holding a GT index ``>= 0`` or one of the negative codes
:data:`BELOW_LOW` (background) and :data:`BETWEEN` (ignored), the codes of
``torchvision.models.detection._utils.Matcher``.
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["BELOW_LOW", "BETWEEN", "match_boxes", "match_boxes_ssd", "mark_ignored"]

#: Best IoU below the low threshold: a negative (background) candidate.
BELOW_LOW = -1
#: Best IoU in ``[low, high)``, or overlapping an ignore region: left out of the loss.
BETWEEN = -2


def match_boxes(iou: Tensor, high: float, low: float, allow_low_quality: bool = False) -> Tensor:
    """Best GT of each candidate: ``(G, A)`` -> ``(A,)`` int64.

    A candidate whose best IoU is ``>= high`` gets that GT's index, ``< low`` gets
    :data:`BELOW_LOW`, in between :data:`BETWEEN` (``high == low`` leaves no band).
    ``allow_low_quality`` (Faster R-CNN's RPN rule, as torchvision's ``Matcher``): for each GT,
    every candidate tied at that GT's highest IoU is restored to *its own* best GT, even below
    ``low``. Like torchvision, a GT that overlaps nothing has highest IoU 0, so it restores
    every candidate with IoU 0 to it. With no GT (G = 0) every candidate is :data:`BELOW_LOW`.
    """
    if low > high:
        raise ValueError(f"low threshold {low} is above high threshold {high}")
    if iou.dim() != 2:
        raise ValueError(f"iou must be (G, A), got shape {tuple(iou.shape)}")
    num_gt, num_candidates = iou.shape
    if num_gt == 0 or num_candidates == 0:
        return torch.full((num_candidates,), BELOW_LOW, dtype=torch.int64, device=iou.device)

    best_iou, best_gt = iou.max(dim=0)
    matched = torch.where(
        best_iou < low,
        BELOW_LOW,
        torch.where((best_iou >= low) & (best_iou < high), BETWEEN, best_gt),
    )
    if allow_low_quality:
        best_per_gt = iou.max(dim=1).values
        restored = (iou == best_per_gt[:, None]).any(dim=0)
        matched = torch.where(restored, best_gt, matched)
    return matched


def match_boxes_ssd(iou: Tensor, threshold: float) -> Tensor:
    """SSD / RefineDet matching: ``(G, A)`` -> ``(A,)`` int64.

    Best IoU ``>= threshold`` matches that GT, else :data:`BELOW_LOW`; then each GT's single best
    candidate is forced to that GT (a later GT wins a candidate that is best for two), as in
    ``torchvision.models.detection._utils.SSDMatcher``. With no GT: all :data:`BELOW_LOW`.
    """
    matched = match_boxes(iou, threshold, threshold, allow_low_quality=False)
    num_gt = iou.shape[0]
    if num_gt == 0 or iou.shape[1] == 0:
        return matched
    best_candidate = iou.argmax(dim=1)
    return matched.index_put((best_candidate,), torch.arange(num_gt, dtype=torch.int64, device=iou.device))


def mark_ignored(matched: Tensor, iou_with_ignore: Tensor, threshold: float) -> Tensor:
    """Mark candidates overlapping ignore regions (e.g. COCO crowd boxes) as :data:`BETWEEN`.

    ``matched`` (A,) from :func:`match_boxes`; ``iou_with_ignore`` (I, A) between the I ignore
    boxes and the candidates. A candidate whose IoU with any ignore box is ``> threshold`` is
    set to :data:`BETWEEN`, whatever it was. Returns a new tensor; ``matched`` is not changed.
    """
    if iou_with_ignore.shape[0] == 0:
        return matched.clone()
    overlapping = (iou_with_ignore > threshold).any(dim=0)
    return torch.where(overlapping, torch.full_like(matched, BETWEEN), matched)
