"""Target assignment and sampling of anchors / proposals against ground truth.

Conventions:
- ``candidates`` (A, 4) are anchors or proposals, ``gt_boxes`` (G, 4) xyxy, ``gt_labels`` (G,)
  int64 in ``1..C``; ``gt_ignore`` (G,) bool marks boxes (e.g. crowd) that never make
  positives: candidates overlapping one above the positive threshold are ignored (``-1``);
- an :class:`Assignment` labels each candidate ``c > 0`` (positive, class ``c``; ``1`` for a
  class-agnostic stage), ``0`` (background) or ``-1`` (ignored);
- a sampler is any callable ``sampler(assignment, generator) -> (pos_mask, neg_mask)`` with (A,)
  bool masks; :class:`RandomSampler` is the baseline, IoU-balanced samplers plug in the same way.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import torch
from torch import Tensor

from workbench.ops import BELOW_LOW, box_iou, mark_ignored, match_boxes, sample_random


@dataclass(frozen=True)
class MatcherSettings:
    """IoU thresholds of a matcher: positive ``>= high``, negative ``< low``, between ignored;
    ``allow_low_quality`` also makes each GT's best candidates positive."""

    high: float
    low: float
    allow_low_quality: bool


@dataclass
class Assignment:
    """Per-candidate targets: ``labels`` (A,) int64, ``matched_gt`` (A,) int64 index into the
    image's GT (meaningful where the candidate is positive), ``max_iou`` (A,) best IoU with any
    non-ignored GT (0 without GT)."""

    labels: Tensor
    matched_gt: Tensor
    max_iou: Tensor

    def __len__(self) -> int:
        return int(self.labels.shape[0])


def assign_to_gt(
    candidates: Tensor,
    gt_boxes: Tensor,
    matcher: MatcherSettings,
    gt_labels: Tensor | None = None,
    gt_ignore: Tensor | None = None,
) -> Assignment:
    """Match candidates (A, 4) to GT (G, 4); ``gt_labels=None`` gives class-agnostic labels 1/0/-1.

    Candidates are matched to the non-ignored GT only; then every candidate whose IoU with an
    ignored GT exceeds ``matcher.high`` is ignored (``workbench.ops.mark_ignored``). With no
    (non-ignored) GT every other candidate is background.
    """
    num = candidates.shape[0]
    device = candidates.device
    gt_boxes = gt_boxes.to(candidates.dtype)
    ignored_boxes = gt_boxes[:0]
    if gt_ignore is not None and bool(gt_ignore.any()):
        keep = ~gt_ignore.to(torch.bool)
        ignored_boxes = gt_boxes[~keep]
        gt_boxes = gt_boxes[keep]
        gt_labels = None if gt_labels is None else gt_labels[keep]
        kept_index = torch.where(keep)[0]
    else:
        kept_index = None
    if gt_boxes.shape[0] == 0:
        matched = torch.full((num,), BELOW_LOW, dtype=torch.int64, device=device)
        max_iou = torch.zeros((num,), dtype=candidates.dtype, device=device)
    else:
        iou = box_iou(gt_boxes, candidates)
        matched = match_boxes(iou, matcher.high, matcher.low, matcher.allow_low_quality)
        max_iou = iou.max(dim=0).values
    if ignored_boxes.shape[0] > 0:
        matched = mark_ignored(matched, box_iou(ignored_boxes, candidates), matcher.high)
    positive = matched >= 0
    matched_gt = matched.clamp(min=0)
    if gt_labels is None or gt_boxes.shape[0] == 0:
        fg_labels = torch.ones((num,), dtype=torch.int64, device=device)
    else:
        fg_labels = gt_labels.to(torch.int64)[matched_gt]
    labels = torch.where(positive, fg_labels, torch.where(matched == BELOW_LOW, 0, -1))
    if kept_index is not None and kept_index.numel() > 0:
        matched_gt = kept_index[matched_gt]
    return Assignment(labels, matched_gt, max_iou)


class Sampler(Protocol):
    """Chooses which candidates of one image enter the loss."""

    def __call__(self, assignment: Assignment, generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
        ...


@dataclass(frozen=True)
class RandomSampler:
    """Uniform sampling of ``num_samples`` candidates, at most ``positive_fraction`` positives;
    negatives fill the rest."""

    num_samples: int
    positive_fraction: float

    def __call__(self, assignment: Assignment, generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
        return sample_random(assignment.labels, self.num_samples, self.positive_fraction, generator)
