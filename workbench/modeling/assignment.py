"""Target assignment and sampling of anchors / proposals against ground truth.

Conventions:
- ``candidates`` (A, 4) are anchors or proposals, ``gt_boxes`` (G, 4) xyxy, ``gt_labels`` (G,)
  int64 in ``1..C``; ``gt_ignore`` (G,) bool marks boxes (e.g. crowd) that never make
  positives: candidates overlapping one above the matcher's positive threshold are ignored;
- an :class:`Assignment` labels each candidate ``c > 0`` (positive, class ``c``; ``1`` for a
  class-agnostic stage), ``0`` (background) or ``-1`` (ignored);
- a matcher is called ``matcher(candidates, gt_boxes, gt_labels=None, gt_ignore=None)
  -> Assignment``; :class:`Matcher` holds that call form once and a subclass gives only its
  rule: :class:`IoUMatcher` (two thresholds and Faster R-CNN's low-quality rule) and
  :class:`SSDMatcher` (one threshold plus a candidate for each GT);
- a sampler is called ``sampler(assignment, generator=None, losses=None) -> (pos_mask,
  neg_mask)`` with (A,) bool masks; :class:`Sampler` holds that call form once and a subclass
  implements :meth:`Sampler.sample`. ``losses`` (A,) is a per-candidate loss that samplers may
  rank by (:class:`HardNegativeSampler` needs it: the classification loss of each candidate);
  random samplers ignore it, so one call form serves every sampler. Any other callable of the
  same form works where a sampler is expected (e.g. a wrapper that records the choice).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
from torch import Tensor

from workbench.ops import (
    BELOW_LOW,
    box_iou,
    mark_ignored,
    match_boxes,
    match_boxes_ssd,
    sample_hard_negatives,
    sample_random,
)

__all__ = [
    "AllCandidates",
    "Assignment",
    "HardNegativeSampler",
    "IoUMatcher",
    "Matcher",
    "MatcherSettings",
    "RandomSampler",
    "SSDMatcher",
    "Sampler",
    "assign_to_gt",
]


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


def _assign(
    candidates: Tensor,
    gt_boxes: Tensor,
    gt_labels: Tensor | None,
    gt_ignore: Tensor | None,
    match: Callable[[Tensor], Tensor],
    ignore_threshold: float,
) -> Assignment:
    """Shared body of the matchers: ``match`` maps the ``(G, A)`` IoU of the non-ignored GT to a
    ``(A,)`` match vector (``workbench.ops.matching`` codes); candidates whose IoU with an
    ignored GT exceeds ``ignore_threshold`` are then ignored (``workbench.ops.mark_ignored``).
    ``gt_labels=None`` gives class-agnostic labels 1/0/-1; with no (non-ignored) GT every other
    candidate is background."""
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
        matched = match(iou)
        max_iou = iou.max(dim=0).values
    if ignored_boxes.shape[0] > 0:
        matched = mark_ignored(matched, box_iou(ignored_boxes, candidates), ignore_threshold)
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


class Matcher:
    """Labels each candidate of one image against that image's ground truth. A matcher gives its
    own rule (:meth:`match`: GT-by-candidate IoU (G, A) -> matched GT index or a below/between
    code per candidate) and its threshold for ignored GT (:attr:`ignore_threshold`); the
    assignment that follows is the same for every matcher (``_assign``)."""

    def match(self, iou: Tensor) -> Tensor:
        raise NotImplementedError(f"{type(self).__name__} must implement match()")

    @property
    def ignore_threshold(self) -> float:
        raise NotImplementedError(f"{type(self).__name__} must define ignore_threshold")

    def __call__(
        self,
        candidates: Tensor,
        gt_boxes: Tensor,
        gt_labels: Tensor | None = None,
        gt_ignore: Tensor | None = None,
    ) -> Assignment:
        return _assign(candidates, gt_boxes, gt_labels, gt_ignore, self.match, self.ignore_threshold)


@dataclass(frozen=True)
class IoUMatcher(Matcher):
    """Two-threshold IoU matching (Faster R-CNN's RPN and box head, RetinaNet): best IoU
    ``>= high`` positive, ``< low`` background, in between ignored; ``allow_low_quality`` also
    makes each GT's best candidates positive (``workbench.ops.match_boxes``, equal to
    torchvision's ``Matcher``). Candidates overlapping an ignored GT above ``high`` are ignored."""

    high: float
    low: float
    allow_low_quality: bool = False

    def match(self, iou: Tensor) -> Tensor:
        return match_boxes(iou, self.high, self.low, self.allow_low_quality)

    @property
    def ignore_threshold(self) -> float:
        return self.high


#: The former name of :class:`IoUMatcher` (same fields, same order), kept for existing callers.
MatcherSettings = IoUMatcher


@dataclass(frozen=True)
class SSDMatcher(Matcher):
    """SSD / RefineDet matching: each GT first gets one candidate by greedy bipartite matching
    (highest IoU first, ties to the lower candidate then GT index; a GT overlapping no candidate
    gets none), then every other candidate with best IoU ``>= threshold`` matches that GT; the
    rest are background, none ignored (``workbench.ops.match_boxes_ssd``). The SSD paper's
    threshold is 0.5 (Liu et al., ECCV 2016, section 2.2). Candidates overlapping an ignored GT
    above ``threshold`` are ignored."""

    threshold: float = 0.5

    def match(self, iou: Tensor) -> Tensor:
        return match_boxes_ssd(iou, self.threshold)

    @property
    def ignore_threshold(self) -> float:
        return self.threshold


def assign_to_gt(
    candidates: Tensor,
    gt_boxes: Tensor,
    matcher: Matcher,
    gt_labels: Tensor | None = None,
    gt_ignore: Tensor | None = None,
) -> Assignment:
    """Match candidates (A, 4) to GT (G, 4) with ``matcher``: the same as
    ``matcher(candidates, gt_boxes, gt_labels, gt_ignore)``, kept for existing callers."""
    return matcher(candidates, gt_boxes, gt_labels, gt_ignore)


class Sampler:
    """Chooses which candidates of one image enter the loss: ``sampler(assignment, generator=None,
    losses=None) -> (pos_mask, neg_mask)``. ``losses`` (A,), when given, is a per-candidate loss
    (detached or not; samplers only rank it). A subclass implements :meth:`sample`."""

    def __call__(
        self,
        assignment: Assignment,
        generator: torch.Generator | None = None,
        losses: Tensor | None = None,
    ) -> tuple[Tensor, Tensor]:
        return self.sample(assignment, generator, losses)

    def sample(self, assignment: Assignment, generator: torch.Generator | None,
               losses: Tensor | None) -> tuple[Tensor, Tensor]:
        """(positive mask, negative mask), each (A,) bool, of ``assignment``'s candidates."""
        raise NotImplementedError(f"{type(self).__name__} must implement sample()")


@dataclass(frozen=True)
class RandomSampler(Sampler):
    """Uniform sampling of ``num_samples`` candidates, at most ``positive_fraction`` positives;
    negatives fill the rest. ``losses`` is accepted and not used."""

    num_samples: int
    positive_fraction: float

    def sample(self, assignment: Assignment, generator: torch.Generator | None,
               losses: Tensor | None) -> tuple[Tensor, Tensor]:
        return sample_random(assignment.labels, self.num_samples, self.positive_fraction, generator)


@dataclass(frozen=True)
class AllCandidates(Sampler):
    """Sampler that keeps every candidate that is not ignored (positives ``labels > 0``,
    negatives ``labels == 0``; ``-1`` stays out): detectron2's later cascade stages train on all
    the boxes the previous stage refined without sampling again, and RetinaNet on every anchor
    (its focal loss does the balancing). ``generator`` and ``losses`` are not used."""

    def sample(self, assignment: Assignment, generator: torch.Generator | None,
               losses: Tensor | None) -> tuple[Tensor, Tensor]:
        return assignment.labels > 0, assignment.labels == 0


@dataclass(frozen=True)
class HardNegativeSampler(Sampler):
    """SSD's hard negative mining: all positives, and the ``neg_pos_ratio`` x #positives
    negatives with the highest ``losses`` (ties to the lower index), at least ``min_negatives``
    when that many exist (``workbench.ops.sample_hard_negatives``). ``losses`` (A,) is required:
    each candidate's classification loss (for SSD, the softmax cross-entropy against its
    assigned label, which is background for every negative). ``generator`` is not used."""

    neg_pos_ratio: float = 3.0
    min_negatives: int = 0

    def sample(self, assignment: Assignment, generator: torch.Generator | None,
               losses: Tensor | None) -> tuple[Tensor, Tensor]:
        if losses is None:
            raise ValueError("HardNegativeSampler ranks negatives by their loss: pass losses (A,)")
        if losses.shape != assignment.labels.shape:
            raise ValueError(
                f"losses must be (A,) = {tuple(assignment.labels.shape)}, got {tuple(losses.shape)}"
            )
        return sample_hard_negatives(assignment.labels, losses, self.neg_pos_ratio, self.min_negatives)
