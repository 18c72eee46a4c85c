"""Second stage: RoI pooling, box head, predictor, training targets, loss and detections.

Conventions:
- ``R`` RoIs over the batch (``R_i`` per image), ``K = num_classes + 1`` classes with column 0 the
  background; ``class_logits`` (R, K), ``box_regression`` (R, 4K) (or (R, 4) class-agnostic),
  offsets encoded by the box coder (baseline weights 10, 10, 5, 5);
- training RoIs are the proposals plus the (non-ignored) GT boxes, matched at IoU 0.5 and
  sampled by the injected sampler; labels ``1..C`` foreground, ``0`` background;
- the loss object takes the sampled RoIs' ``class_logits``, ``box_regression``, ``labels`` (M,)
  and ``targets`` (M, 4) and returns ``loss_rcnn_<kind>`` scalars; its ``box_loss`` is any
  element-wise loss (smooth L1 by default);
- extra heads (``extra_heads``, name -> module) are called with a :class:`RoIContext` and return
  an :class:`ExtraHeadOutput`; their raw outputs land in ``raw["<name>"]`` and their losses are
  merged, so a method can add a head without copying this one;
- the post-processing object turns the box head's outputs into :class:`Detections` in
  network-input pixels (the detector maps them to original pixels).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Protocol, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from workbench.losses import cross_entropy, reduce_loss, smooth_l1
from workbench.modeling.assignment import Assignment, MatcherSettings, Sampler, assign_to_gt
from workbench.modeling.trace import TraceRecorder, grouped_nms
from workbench.ops import BoxCoder, clip_boxes, size_at_least
from workbench.structures import Detections


class TwoMLPHead(nn.Module):
    """Flatten pooled features (R, C, S, S) and apply two ReLU fully connected layers -> (R, D)."""

    def __init__(self, in_features: int, representation_size: int = 1024) -> None:
        super().__init__()
        self.fc6 = nn.Linear(in_features, representation_size)
        self.fc7 = nn.Linear(representation_size, representation_size)

    def forward(self, pooled: Tensor) -> Tensor:
        hidden = F.relu(self.fc6(pooled.flatten(start_dim=1)))
        return F.relu(self.fc7(hidden))


class FastRCNNPredictor(nn.Module):
    """Linear class scores (R, K) and per-class box offsets (R, 4K) from box features (R, D)."""

    def __init__(self, in_features: int, num_classes_with_background: int) -> None:
        super().__init__()
        self.cls_score = nn.Linear(in_features, num_classes_with_background)
        self.bbox_pred = nn.Linear(in_features, num_classes_with_background * 4)

    def forward(self, box_features: Tensor) -> tuple[Tensor, Tensor]:
        flat = box_features.flatten(start_dim=1)
        return self.cls_score(flat), self.bbox_pred(flat)


def class_box_offsets(box_regression: Tensor, labels: Tensor) -> Tensor:
    """Pick each RoI's offsets for its label: (R, 4K) or (R, 4), labels (R,) -> (R, 4)."""
    if box_regression.shape[1] == 4:
        return box_regression
    rows = torch.arange(box_regression.shape[0], device=box_regression.device)
    return box_regression.view(box_regression.shape[0], box_regression.shape[1] // 4, 4)[rows, labels]


@dataclass(frozen=True)
class FastRCNNLoss:
    """Softmax cross-entropy (mean over the M sampled RoIs) and ``box_loss`` on the positives'
    offsets for their class (sum over positives / M)."""

    box_loss: Callable[[Tensor, Tensor], Tensor] = functools.partial(smooth_l1, beta=1.0 / 9.0)

    def __call__(
        self, class_logits: Tensor, box_regression: Tensor, labels: Tensor, targets: Tensor
    ) -> dict[str, Tensor]:
        num_sampled = max(int(labels.numel()), 1)
        positive = torch.where(labels > 0)[0]
        pred = class_box_offsets(box_regression[positive], labels[positive])
        box = self.box_loss(pred, targets[positive])
        return {
            "loss_rcnn_cls": reduce_loss(cross_entropy(class_logits, labels), reduction="mean"),
            "loss_rcnn_box": reduce_loss(box, reduction="mean", avg_factor=num_sampled),
        }


def select_detections(
    boxes: Tensor,
    scores: Tensor,
    image_size: tuple[int, int],
    score_thresh: float,
    nms_thresh: float,
    detections_per_image: int,
    min_size: float,
    recorder: TraceRecorder | None = None,
    image_index: int = 0,
    with_roi_index: bool = False,
) -> Detections:
    """One image: per-class boxes (R, K, 4) and scores (R, K) (column 0 background) ->
    :class:`Detections` after clipping, score threshold (strict ``>``), removal of boxes with a
    side below ``min_size``, per-class NMS and the top-``detections_per_image`` cut.
    ``with_roi_index`` adds ``extras["roi_index"]`` (N,) int64: the row (RoI) each detection
    came from, so a method can attach per-RoI values (e.g. KL-RPN's proposal sigma)."""
    num_classes = scores.shape[1]
    boxes = clip_boxes(boxes.reshape(-1, 4), image_size).view(-1, num_classes, 4)[:, 1:].reshape(-1, 4)
    labels = torch.arange(1, num_classes, device=scores.device).repeat(scores.shape[0])
    rois = None
    if with_roi_index:
        rois = torch.arange(scores.shape[0], device=scores.device).repeat_interleave(num_classes - 1)
    scores = scores[:, 1:].reshape(-1)
    keep = (scores > score_thresh) & size_at_least(boxes, min_size)
    boxes, scores, labels = boxes[keep], scores[keep], labels[keep]
    rois = rois[keep] if rois is not None else None
    if recorder is not None:
        recorder.put(image_index, "rcnn_candidates", boxes=boxes, scores=scores, labels=labels)
    keep = grouped_nms(boxes, scores, labels, nms_thresh, recorder, image_index, "rcnn_nms")
    keep = keep[:detections_per_image]
    extras = {"roi_index": rois[keep]} if rois is not None else {}
    return Detections(boxes[keep], scores[keep], labels[keep], extras)


@dataclass(frozen=True)
class FastRCNNPostprocess:
    """Softmax scores, decoded per-class boxes, then :func:`select_detections` per image
    (``with_roi_index``: see there)."""

    box_coder: BoxCoder
    score_thresh: float = 0.05
    nms_thresh: float = 0.5
    detections_per_image: int = 100
    min_size: float = 1e-2
    with_roi_index: bool = False

    def __call__(
        self,
        class_logits: Tensor,
        box_regression: Tensor,
        proposals: Sequence[Tensor],
        image_sizes: Sequence[tuple[int, int]],
        extras: Mapping[str, Any] | None = None,
        recorder: TraceRecorder | None = None,
    ) -> list[Detections]:
        counts = [int(p.shape[0]) for p in proposals]
        num_classes = class_logits.shape[1]
        reference = torch.cat(list(proposals), dim=0)
        groups = box_regression.shape[1] // 4
        boxes = self.box_coder.decode(box_regression, reference).reshape(reference.shape[0], groups, 4)
        if boxes.shape[1] == 1:
            boxes = boxes.expand(-1, num_classes, 4)
        scores = F.softmax(class_logits, dim=-1)
        out = []
        for i, (b, s, size) in enumerate(zip(boxes.split(counts), scores.split(counts), image_sizes)):
            out.append(
                select_detections(
                    b, s, size, self.score_thresh, self.nms_thresh, self.detections_per_image,
                    self.min_size, recorder, i, self.with_roi_index,
                )
            )
        return out


@dataclass
class SampledRoIs:
    """Training RoIs per image: ``rois`` (M_i, 4), ``labels`` (M_i,), ``targets`` (M_i, 4) encoded
    offsets to the matched GT, and the :class:`Assignment` restricted to them."""

    rois: list[Tensor]
    labels: list[Tensor]
    targets: list[Tensor]
    assignments: list[Assignment]


@dataclass
class RoIContext:
    """What an extra RoI head may use: features, sizes, the RPN proposals, the sampled training
    RoIs (when targets are given), the targets (network-input pixels) and the generator."""

    features: Mapping[str, Tensor]
    image_sizes: Sequence[tuple[int, int]]
    proposals: Sequence[Tensor]
    sampled: SampledRoIs | None
    targets: Sequence[Mapping[str, Tensor]] | None
    generator: torch.Generator | None
    training: bool


@dataclass
class ExtraHeadOutput:
    """An extra head's raw outputs (by name) and losses (``loss_<stage>_<kind>``)."""

    raw: dict[str, Any] = field(default_factory=dict)
    losses: dict[str, Tensor] = field(default_factory=dict)


class Postprocess(Protocol):
    def __call__(
        self,
        class_logits: Tensor,
        box_regression: Tensor,
        proposals: Sequence[Tensor],
        image_sizes: Sequence[tuple[int, int]],
        extras: Mapping[str, Any] | None = None,
        recorder: TraceRecorder | None = None,
    ) -> list[Detections]:
        ...


@dataclass
class RoIHeadsOutput:
    raw: dict[str, Any] = field(default_factory=dict)
    losses: dict[str, Tensor] = field(default_factory=dict)
    detections: list[Detections] = field(default_factory=list)


def append_gt(proposals: Tensor, target: Mapping[str, Tensor]) -> Tensor:
    """Proposals (P, 4) followed by the target's non-ignored GT boxes."""
    gt_boxes = target["boxes"].to(proposals.dtype)
    ignore = target.get("ignore")
    if ignore is not None:
        gt_boxes = gt_boxes[~ignore.to(torch.bool)]
    return torch.cat([proposals, gt_boxes], dim=0)


class RoIHeads(nn.Module):
    """Box branch of a two-stage detector; every part is injected.

    Args:
        box_pooler: ``(features, rois per image, image_sizes) -> (R, C, S, S)``
            (e.g. ``torchvision.ops.MultiScaleRoIAlign``).
        box_head: pooled features -> (R, D).
        box_predictor: (R, D) -> ``(class_logits, box_regression)``.
        box_coder: offsets of RoIs to GT (baseline weights 10, 10, 5, 5).
        matcher: IoU thresholds for RoI labels (baseline 0.5 / 0.5, no low-quality matches).
        sampler: ``sampler(assignment, generator) -> (pos_mask, neg_mask)``.
        loss: :class:`FastRCNNLoss` or any callable with its signature.
        postprocess: :class:`FastRCNNPostprocess` or any callable with its signature.
        add_gt_to_proposals: append the GT boxes to the proposals in training.
        extra_heads: name -> module called with a :class:`RoIContext`.
    """

    def __init__(
        self,
        box_pooler: nn.Module,
        box_head: nn.Module,
        box_predictor: nn.Module,
        *,
        box_coder: BoxCoder,
        matcher: MatcherSettings,
        sampler: Sampler,
        loss: Callable[[Tensor, Tensor, Tensor, Tensor], dict[str, Tensor]],
        postprocess: Postprocess,
        add_gt_to_proposals: bool = True,
        extra_heads: Mapping[str, nn.Module] | None = None,
    ) -> None:
        super().__init__()
        self.box_pooler = box_pooler
        self.box_head = box_head
        self.box_predictor = box_predictor
        self.box_coder = box_coder
        self.matcher = matcher
        self.sampler = sampler
        self.loss = loss
        self.postprocess = postprocess
        self.add_gt_to_proposals = add_gt_to_proposals
        self.extra_heads = nn.ModuleDict(dict(extra_heads or {}))

    def sample(
        self,
        proposals: Sequence[Tensor],
        targets: Sequence[Mapping[str, Tensor]],
        generator: torch.Generator | None = None,
    ) -> SampledRoIs:
        """Match proposals (plus GT) to the targets and sample the training RoIs of each image."""
        rois, labels, regression, assignments = [], [], [], []
        for proposals_i, target in zip(proposals, targets):
            candidates = append_gt(proposals_i, target) if self.add_gt_to_proposals else proposals_i
            gt_boxes = target["boxes"].to(candidates.dtype)
            assignment = assign_to_gt(
                candidates, gt_boxes, self.matcher, gt_labels=target["labels"], gt_ignore=target.get("ignore")
            )
            pos, neg = self.sampler(assignment, generator)
            idx = torch.where(pos | neg)[0]
            picked = Assignment(assignment.labels[idx], assignment.matched_gt[idx], assignment.max_iou[idx])
            rois_i = candidates[idx]
            if gt_boxes.shape[0] == 0:
                targets_i = torch.zeros_like(rois_i)
            else:
                targets_i = self.box_coder.encode(gt_boxes[picked.matched_gt], rois_i)
            rois.append(rois_i)
            labels.append(picked.labels)
            regression.append(targets_i)
            assignments.append(picked)
        return SampledRoIs(rois, labels, regression, assignments)

    def predict(
        self, features: Mapping[str, Tensor], rois: Sequence[Tensor], image_sizes: Sequence[tuple[int, int]]
    ) -> tuple[Tensor, Tensor]:
        """RoIs per image -> ``class_logits`` (R, K), ``box_regression`` (R, 4K)."""
        pooled = self.box_pooler(features, list(rois), list(image_sizes))
        return self.box_predictor(self.box_head(pooled))

    def forward(
        self,
        features: Mapping[str, Tensor],
        proposals: Sequence[Tensor],
        image_sizes: Sequence[tuple[int, int]],
        targets: Sequence[Mapping[str, Tensor]] | None = None,
        generator: torch.Generator | None = None,
        recorder: TraceRecorder | None = None,
    ) -> RoIHeadsOutput:
        """Losses on sampled RoIs when ``targets`` are given; detections in evaluation mode."""
        out = RoIHeadsOutput()
        sampled = None
        if targets is not None:
            sampled = self.sample(proposals, targets, generator)
            class_logits, box_regression = self.predict(features, sampled.rois, image_sizes)
            out.losses.update(
                self.loss(class_logits, box_regression, torch.cat(sampled.labels), torch.cat(sampled.targets))
            )
            out.raw.update(
                sampled_rois=sampled.rois, sampled_labels=sampled.labels,
                class_logits=class_logits, box_regression=box_regression,
            )
        context = RoIContext(features, image_sizes, proposals, sampled, targets, generator, self.training)
        extras: dict[str, Any] = {}
        for name, head in self.extra_heads.items():
            head_out = head(context)
            extras[name] = head_out.raw
            out.losses.update(head_out.losses)
        out.raw.update(extras)
        if not self.training:
            class_logits, box_regression = self.predict(features, proposals, image_sizes)
            out.raw.update(rois=list(proposals), class_logits=class_logits, box_regression=box_regression)
            out.detections = self.postprocess(class_logits, box_regression, proposals, image_sizes, extras, recorder)
        return out
