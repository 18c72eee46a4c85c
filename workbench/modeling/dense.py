"""Single-stage ("dense") detectors: one assembly for SSD, RetinaNet and their descendants.

transform -> backbone (+ necks) -> dense head -> anchors -> (with targets) matcher, sampler,
loss -> (evaluation) post-processing with every NMS through the ledger. Each part is injected;
the assembly returns the same :class:`DetectorOutput` as the two-stage detector.

Conventions:
- ``N`` images, level ``l`` of size ``H_l x W_l`` with ``A_l`` anchors per location,
  ``A = sum_l A_l H_l W_l`` anchors per image, in (level, y, x, anchor) order;
- the head maps the list of feature maps to ``name -> [per level (N, A_l * C, H_l, W_l)]``;
  the baselines' names are ``cls_logits`` (C = classes) and ``deltas`` (C = 4, box-coder
  offsets to the anchor). The RPN's :func:`~workbench.modeling.rpn.flatten_levels` turns each
  into ``(N, A, C)``;
- the anchor generator is called ``anchor_generator(padded_size, feature_sizes, dtype=,
  device=) -> [per level (A_l H_l W_l, 4)]`` (xyxy, network-input pixels) and reports
  ``num_anchors_per_location()`` (the RPN's :class:`AnchorGenerator`, or SSD's default boxes);
- training: per image the matcher gives an :class:`Assignment` (labels ``c > 0`` / ``0`` /
  ``-1``); the loss object's :meth:`DenseLoss.classification` gives each anchor's
  classification loss (N, A); the sampler sees it (``losses=``, hard negative mining ranks by
  it) and returns the anchors that enter the loss; the loss object reduces over them and
  returns ``loss_<stage>_<kind>`` scalars;
- evaluation: the post-processing object turns the flat outputs into :class:`Detections` in
  network-input pixels (the detector maps them to original pixels).

Trace records (names from :mod:`workbench.records`, the same as the two-stage detector's):
``ANCHORS`` (``boxes``, ``levels``); ``FINAL_CANDIDATES`` (``boxes``, ``scores``, ``labels``,
``levels``, ``anchor_index``: the scored, decoded boxes that enter the final NMS); ``FINAL_NMS``
(the ledger of the final class-wise NMS); ``DETECTIONS``.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Callable, Iterator, Mapping, Optional, Protocol, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from workbench import records as R
from workbench.losses import cross_entropy, l1, reduce_loss, smooth_l1
from workbench.losses.focal import sigmoid_focal_loss
from workbench.modeling.assignment import AllCandidates, Assignment, Matcher, Sampler
from workbench.modeling.detector import Detector, Features, detections_to_original
from workbench.modeling.rpn import level_ids, run_head_on_anchors
from workbench.modeling.trace import TraceRecorder, grouped_nms
from workbench.modeling.transform import ImageBatch
from workbench.ops import BoxCoder, clip_boxes
from workbench.structures import Detections, DetectorOutput



@dataclass
class DenseTargets:
    """Training targets of a batch: ``labels`` (N, A) int64 (``c > 0`` / ``0`` / ``-1``),
    ``box_targets`` (N, A, 4) encoded offsets to the matched GT (zeros where not positive),
    ``positive`` / ``negative`` (N, A) bool: the anchors the sampler chose, and the
    per-image :class:`Assignment` they come from."""

    labels: Tensor
    box_targets: Tensor
    positive: Tensor
    negative: Tensor
    assignments: list[Assignment]


class DenseLoss(Protocol):
    """Loss of a dense head, in two steps so that a sampler can rank anchors by the first."""

    def classification(self, preds: Mapping[str, Tensor], labels: Tensor) -> Tensor:
        """Flat outputs ``(N, A, C)`` by name and labels (N, A) -> per-anchor loss (N, A)
        (any value where the label is ``-1``)."""
        ...

    def __call__(self, preds: Mapping[str, Tensor], cls_loss: Tensor, targets: DenseTargets) -> dict[str, Tensor]:
        """Reduce over the sampled anchors -> ``loss_<stage>_<kind>`` scalars."""
        ...


def sampled_dense_loss(
    loss: DenseLoss,
    sampler: Sampler,
    preds: Mapping[str, Tensor],
    labels: Tensor,
    box_targets: Tensor,
    assignments: Sequence[Assignment],
    generator: torch.Generator | None,
) -> tuple[dict[str, Tensor], DenseTargets]:
    """A dense head's losses and the targets they were reduced over: the per-anchor
    classification loss (N, A) of ``labels``, each image's anchors chosen by ``sampler`` from
    ``labels`` (which may differ from the assignments' own, e.g. after RefineDet's negative
    anchor filtering) with that loss to rank by (SSD's hard negative mining), then ``loss``
    reduced over the chosen anchors."""
    cls_loss = loss.classification(preds, labels)
    detached = cls_loss.detach()
    masks = [sampler(Assignment(labels[i], a.matched_gt, a.max_iou), generator, losses=detached[i])
             for i, a in enumerate(assignments)]
    positive = torch.stack([pos for pos, _ in masks])
    negative = torch.stack([neg for _, neg in masks])
    targets = DenseTargets(labels, box_targets, positive, negative, list(assignments))
    return loss(preds, cls_loss, targets), targets


#: A dense head's post-processing, ``postprocess(preds, anchors, level_counts, image_sizes,
#: recorder=None)``: flat outputs (N, A, C) by name, anchors (A, 4), anchors per level and the
#: image sizes -> detections per image in network-input pixels (e.g. :class:`SoftmaxPostprocess`).
DensePostprocess = Callable[
    [Mapping[str, Tensor], Tensor, Sequence[int], Sequence[tuple[int, int]], Optional[TraceRecorder]],
    list[Detections],
]


#: RetinaNet's sampler: every positive and every negative anchor (the focal loss does the
#: balancing); the same sampler as the cascade's later stages, under the name the dense
#: detectors have used.
AllAnchors = AllCandidates


@dataclass(frozen=True)
class _ReducedOverSampled:
    """What the dense losses share (a :class:`DenseLoss` each): the per-anchor classification
    loss of the subclass and its ``box_loss`` on the positives' offsets, reduced over the sampled
    anchors as its ``normalize`` says (:func:`_reduce_dense`), named ``loss_<stage>_cls`` /
    ``loss_<stage>_box`` and weighted by ``cls_weight`` / ``box_weight``."""

    stage: str = "dense"
    cls_weight: float = 1.0
    box_weight: float = 1.0

    def __call__(self, preds: Mapping[str, Tensor], cls_loss: Tensor, targets: DenseTargets) -> dict[str, Tensor]:
        return _reduce_dense(preds, cls_loss, targets, self.box_loss, self.normalize, self.stage,
                             self.cls_weight, self.box_weight)


@dataclass(frozen=True)
class FocalLoss(_ReducedOverSampled):
    """RetinaNet's loss: sigmoid focal loss over every class column of the sampled anchors and
    ``box_loss`` (L1 in torchvision's RetinaNet) on the positives' offsets, both normalised by
    the number of positives.

    ``first_label`` is the label of logit column 0: ``1`` (the workbench layout, one column per
    foreground class) or ``0`` (torchvision's layout, whose column 0 stands for the background
    and is never a positive's target). ``normalize``: ``"image"`` divides each image's sum by its
    own positives and averages over the images (torchvision); ``"batch"`` divides the batch sum
    by the batch's positives.
    """

    alpha: float = 0.25
    gamma: float = 2.0
    box_loss: Callable[[Tensor, Tensor], Tensor] = l1
    first_label: int = 1
    normalize: str = "image"

    def classification(self, preds: Mapping[str, Tensor], labels: Tensor) -> Tensor:
        logits = preds["cls_logits"]
        target = torch.zeros_like(logits)  # background and ignored anchors: all zeros
        image, anchor = torch.where(labels > 0)
        target[image, anchor, labels[image, anchor] - self.first_label] = 1.0
        return sigmoid_focal_loss(logits, target, self.alpha, self.gamma).sum(dim=-1)


@dataclass(frozen=True)
class SoftmaxLoss(_ReducedOverSampled):
    """SSD's loss: softmax cross-entropy (column 0 the background) over the sampled anchors
    (every positive and the mined negatives) and ``box_loss`` (smooth L1, beta 1) on the
    positives' offsets, both divided by the number of positives (``normalize="batch"``, as
    SSD: Liu et al., ECCV 2016, eq. 1, and torchvision's ``SSD.compute_loss``)."""

    box_loss: Callable[[Tensor, Tensor], Tensor] = functools.partial(smooth_l1, beta=1.0)
    normalize: str = "batch"

    def classification(self, preds: Mapping[str, Tensor], labels: Tensor) -> Tensor:
        logits = preds["cls_logits"]
        flat = logits.reshape(-1, logits.shape[-1])
        return cross_entropy(flat, labels.clamp(min=0).reshape(-1)).view(labels.shape)


def _reduce_dense(
    preds: Mapping[str, Tensor],
    cls_loss: Tensor,
    targets: DenseTargets,
    box_loss: Callable[[Tensor, Tensor], Tensor],
    normalize: str,
    stage: str,
    cls_weight: float,
    box_weight: float,
) -> dict[str, Tensor]:
    """Classification loss summed over the sampled anchors, ``box_loss`` summed over the
    positives' offsets (computed on the positives only), both normalised by the positives per
    image and averaged over the images (``"image"``) or by the batch's positives (``"batch"``).
    Unsampled anchors are masked with ``torch.where``, so their values (even non-finite) never
    reach the loss or its gradient."""
    positive = targets.positive
    sampled = positive | targets.negative
    cls_loss = torch.where(sampled, cls_loss, torch.zeros_like(cls_loss))
    image, anchor = torch.where(positive)
    box = box_loss(preds["deltas"][image, anchor], targets.box_targets[image, anchor]).sum(dim=-1)
    if normalize == "image":
        num_images = positive.shape[0]
        num_pos = positive.sum(dim=1).clamp(min=1).to(cls_loss.dtype)
        box_per_image = torch.zeros(num_images, dtype=box.dtype, device=box.device).index_add(0, image, box)
        cls = (cls_loss.sum(dim=1) / num_pos).mean()
        box_total = (box_per_image / num_pos).mean()
    elif normalize == "batch":
        num_pos = max(int(positive.sum()), 1)
        cls = reduce_loss(cls_loss, reduction="mean", avg_factor=num_pos)
        box_total = reduce_loss(box, reduction="mean", avg_factor=num_pos)
    else:
        raise ValueError(f"normalize must be 'image' or 'batch', got {normalize!r}")
    return {f"loss_{stage}_cls": cls * cls_weight, f"loss_{stage}_box": box_total * box_weight}


def record_candidates(
    recorder: TraceRecorder | None,
    image_index: int,
    boxes: Tensor,
    scores: Tensor,
    labels: Tensor,
    levels: Tensor,
    anchor_index: Tensor,
) -> None:
    """Record one image's candidates before the final NMS (:data:`~workbench.records.FINAL_CANDIDATES`:
    boxes, scores, labels, the level and the anchor each came from); nothing without a recorder."""
    if recorder is not None:
        recorder.put(
            image_index, R.FINAL_CANDIDATES, boxes=boxes, scores=scores, labels=labels, levels=levels,
            anchor_index=anchor_index,
        )


def final_nms(
    boxes: Tensor,
    scores: Tensor,
    labels: Tensor,
    anchor_index: Tensor,
    nms_thresh: float,
    detections_per_image: int,
    with_anchor_index: bool,
    recorder: TraceRecorder | None,
    image_index: int,
) -> Detections:
    """One image's detections from its candidates: class-wise NMS at ``nms_thresh`` through the
    ledger (recorded as :data:`~workbench.records.FINAL_NMS`) and the ``detections_per_image``
    best; ``with_anchor_index`` adds ``extras["anchor_index"]``."""
    keep = grouped_nms(boxes, scores, labels, nms_thresh, recorder, image_index, R.FINAL_NMS)
    keep = keep[:detections_per_image]
    extras = {"anchor_index": anchor_index[keep]} if with_anchor_index else {}
    return Detections(boxes[keep], scores[keep], labels[keep], extras)


@dataclass(frozen=True, kw_only=True)
class _CandidatesThenNMS:
    """What the dense post-processings share: per image, the candidates that their own
    ``_candidates`` yields (boxes (network-input pixels), scores, labels, levels and anchor
    index; at most ``topk_candidates`` scoring above ``score_thresh``, as each rule counts them),
    recorded, then class-wise NMS at ``nms_thresh`` and the ``detections_per_image`` best;
    ``with_anchor_index`` adds ``extras["anchor_index"]`` (the anchor each detection came from).
    The settings are keyword-only and have no default here: each detector's config holds its
    paper's values."""

    score_thresh: float
    topk_candidates: int
    nms_thresh: float
    detections_per_image: int
    with_anchor_index: bool = False

    def __call__(
        self,
        preds: Mapping[str, Tensor],
        anchors: Tensor,
        level_counts: Sequence[int],
        image_sizes: Sequence[tuple[int, int]],
        recorder: TraceRecorder | None = None,
    ) -> list[Detections]:
        out = []
        candidates = self._candidates(preds, anchors, level_counts, image_sizes)
        for i, (boxes, scores, labels, levels, anchor_index) in enumerate(candidates):
            record_candidates(recorder, i, boxes, scores, labels, levels, anchor_index)
            out.append(final_nms(boxes, scores, labels, anchor_index, self.nms_thresh, self.detections_per_image,
                                 self.with_anchor_index, recorder, i))
        return out

    def _candidates(
        self, preds: Mapping[str, Tensor], anchors: Tensor, level_counts: Sequence[int],
        image_sizes: Sequence[tuple[int, int]],
    ) -> Iterator[tuple[Tensor, Tensor, Tensor, Tensor, Tensor]]:
        """Per image: (boxes, scores, labels, levels, anchor index) of its candidates (each
        post-processing's own rule)."""
        raise NotImplementedError


@dataclass(frozen=True)
class SigmoidPostprocess(_CandidatesThenNMS):
    """RetinaNet's post-processing (torchvision ``RetinaNet.postprocess_detections``): per image
    and level, sigmoid scores of every (anchor, class) pair, those above ``score_thresh``
    (strict), the ``topk_candidates`` best of them, decoded and clipped; then class-wise NMS over
    the levels together and the ``detections_per_image`` best. ``first_label``: see
    :class:`FocalLoss`. ``with_anchor_index`` adds ``extras["anchor_index"]`` (the anchor each
    detection came from)."""

    box_coder: BoxCoder
    first_label: int = 1

    def _candidates(
        self, preds: Mapping[str, Tensor], anchors: Tensor, level_counts: Sequence[int],
        image_sizes: Sequence[tuple[int, int]],
    ) -> Iterator[tuple[Tensor, Tensor, Tensor, Tensor, Tensor]]:
        logits, deltas = preds["cls_logits"], preds["deltas"]
        for i, image_size in enumerate(image_sizes):
            boxes_l, scores_l, labels_l, levels_l, index_l = [], [], [], [], []
            offset = 0
            for level, count in enumerate(level_counts):
                scores, anchor_index, labels = top_pairs_per_image(
                    torch.sigmoid(logits[i, offset:offset + count]), self.score_thresh, self.topk_candidates,
                    self.first_label,
                )
                anchor_index = anchor_index + offset
                boxes = self.box_coder.decode(deltas[i, anchor_index], anchors[anchor_index])
                boxes_l.append(clip_boxes(boxes, image_size))
                scores_l.append(scores)
                labels_l.append(labels)
                levels_l.append(torch.full_like(anchor_index, level))
                index_l.append(anchor_index)
                offset += count
            yield torch.cat(boxes_l), torch.cat(scores_l), torch.cat(labels_l), torch.cat(levels_l), torch.cat(index_l)


def top_pairs_per_class(probabilities: Tensor, score_thresh: float, k: int) -> tuple[Tensor, Tensor, Tensor]:
    """SSD's candidate rule (torchvision ``SSD.postprocess_detections``; the Caffe SSD's
    ``DetectionOutput`` with ``top_k`` 400): one image's softmax probabilities (A, K + 1),
    column 0 the background -> per foreground class the anchors scoring above ``score_thresh``
    (strict), the ``k`` best of them, best first, classes in order: (scores, anchor index,
    labels)."""
    by_class = probabilities.t().contiguous()  # (K + 1, A): one contiguous row per class
    above = by_class > score_thresh
    index_l, scores_l, labels_l = [], [], []
    for label in range(1, by_class.shape[0]):
        index = torch.where(above[label])[0]
        scores, order = by_class[label, index].topk(min(k, int(index.shape[0])))
        index_l.append(index[order])
        scores_l.append(scores)
        labels_l.append(torch.full_like(order, label))
    return torch.cat(scores_l), torch.cat(index_l), torch.cat(labels_l)


def top_pairs_per_image(
    foreground: Tensor, score_thresh: float, k: int, first_label: int = 1
) -> tuple[Tensor, Tensor, Tensor]:
    """RefineDet's candidate rule ("the top 400 high confident detections per image", Zhang et
    al., CVPR 2018, section 2.2 "Inference"): one image's foreground probabilities (A, K),
    column ``j`` for label ``j + first_label`` -> the ``k`` most confident (anchor, class) pairs
    scoring above ``score_thresh`` (strict), best first: (scores, anchor index, labels).
    RetinaNet's rule is the same on each level's anchors (torchvision
    ``RetinaNet.postprocess_detections``), YOLOv3's on the products of objectness and class
    probability."""
    num_classes = foreground.shape[-1]
    scores = foreground.flatten()
    flat_index = torch.where(scores > score_thresh)[0]
    scores, order = scores[flat_index].topk(min(k, int(flat_index.shape[0])))
    flat_index = flat_index[order]
    return scores, torch.div(flat_index, num_classes, rounding_mode="floor"), flat_index % num_classes + first_label


@dataclass(frozen=True)
class SoftmaxPostprocess(_CandidatesThenNMS):
    """SSD's post-processing (torchvision ``SSD.postprocess_detections``): per image, softmax
    scores (column 0 the background), every anchor decoded and clipped; the candidates of
    :func:`top_pairs_per_class` (``per_class``, SSD's rule) or of :func:`top_pairs_per_image`
    (RefineDet's rule, for a baseline post-processed as RefineDet); then class-wise NMS and the
    ``detections_per_image`` best."""

    box_coder: BoxCoder
    per_class: bool = True

    def _candidates(
        self, preds: Mapping[str, Tensor], anchors: Tensor, level_counts: Sequence[int],
        image_sizes: Sequence[tuple[int, int]],
    ) -> Iterator[tuple[Tensor, Tensor, Tensor, Tensor, Tensor]]:
        probabilities = F.softmax(preds["cls_logits"], dim=-1)
        deltas = preds["deltas"]
        levels = level_ids(level_counts, anchors.device)
        for i, image_size in enumerate(image_sizes):
            decoded = clip_boxes(self.box_coder.decode(deltas[i], anchors), image_size)
            if self.per_class:
                scores, anchor_index, labels = top_pairs_per_class(probabilities[i], self.score_thresh,
                                                                   self.topk_candidates)
            else:
                scores, anchor_index, labels = top_pairs_per_image(probabilities[i, :, 1:], self.score_thresh,
                                                                   self.topk_candidates)
            yield decoded[anchor_index], scores, labels, levels[anchor_index], anchor_index


class DenseDetector(Detector):
    """Transform -> backbone -> dense head -> anchors -> loss / post-processing; every part
    injected (see the module docstring for each part's contract).

    Args:
        transform: images (and targets) -> (:class:`ImageBatch`, targets in network pixels).
        backbone: padded batch (N, 3, H, W) -> ordered dict of feature maps.
        head: list of feature maps -> ``name -> [per level (N, A_l * C, H_l, W_l)]``.
        anchor_generator: anchors per level for the padded batch.
        box_coder: encodes GT offsets for the loss (the post-processing holds its own).
        matcher: ``matcher(anchors, gt_boxes, gt_labels, gt_ignore) -> Assignment``.
        sampler: ``sampler(assignment, generator, losses=) -> (pos_mask, neg_mask)``.
        loss: a :class:`DenseLoss`.
        postprocess: a :class:`DensePostprocess`.
    """

    def __init__(
        self,
        transform: nn.Module,
        backbone: nn.Module,
        head: nn.Module,
        anchor_generator: nn.Module,
        *,
        box_coder: BoxCoder,
        matcher: Matcher,
        sampler: Sampler,
        loss: DenseLoss,
        postprocess: DensePostprocess,
    ) -> None:
        super().__init__(transform, backbone)
        self.head = head
        self.anchor_generator = anchor_generator
        self.box_coder = box_coder
        self.matcher = matcher
        self.sampler = sampler
        self.loss = loss
        self.postprocess = postprocess

    def detect(self, batch: ImageBatch, features: Features, net_targets: list[dict[str, Tensor]] | None,
               generator: torch.Generator | None, recorder: TraceRecorder | None) -> DetectorOutput:
        """Losses whenever targets are given; detections (original pixels) in evaluation mode;
        ``raw``: the head outputs per level under their names, ``anchors`` (per level),
        ``image_sizes``, ``original_sizes``, ``padded_size``.
        """
        out = run_head_on_anchors(self.head, self.anchor_generator, features, batch.padded_size)
        flat, anchors, level_counts = out.flat, out.anchors, out.level_counts

        raw: dict[str, object] = dict(out.head_out)
        raw.update(anchors=out.anchors_per_level, **batch.size_fields())
        losses = {} if net_targets is None else self._losses(flat, anchors, net_targets, generator)
        detections: list[Detections] = []
        if not self.training:
            if recorder is not None:
                levels = level_ids(level_counts, anchors.device)
                for i in range(len(batch)):
                    recorder.put(i, R.ANCHORS, boxes=anchors, levels=levels)
            with torch.no_grad():
                detached = {name: value.detach() for name, value in flat.items()}
                in_network = self.postprocess(detached, anchors, level_counts, batch.image_sizes, recorder)
            detections = detections_to_original(in_network, batch, recorder)
        return DetectorOutput(raw=raw, losses=losses, detections=detections)

    def assign(self, anchors: Tensor, targets: Sequence[Mapping[str, Tensor]]) -> tuple[list[Assignment], Tensor, Tensor]:
        """Match the anchors to each image's GT: assignments, labels (N, A) and encoded box
        targets (N, A, 4) (zeros where the anchor is not positive)."""
        assignments, box_targets = [], []
        for target in targets:
            gt_boxes = target["boxes"].to(anchors.dtype)
            assignment = self.matcher(anchors, gt_boxes, target["labels"], target.get("ignore"))
            assignments.append(assignment)
            encoded = torch.zeros_like(anchors)
            positive = torch.where(assignment.labels > 0)[0]
            if positive.numel() > 0:
                encoded[positive] = self.box_coder.encode(gt_boxes[assignment.matched_gt[positive]], anchors[positive])
            box_targets.append(encoded)
        labels = torch.stack([a.labels for a in assignments])
        return assignments, labels, torch.stack(box_targets)

    def _losses(
        self,
        flat: Mapping[str, Tensor],
        anchors: Tensor,
        targets: Sequence[Mapping[str, Tensor]],
        generator: torch.Generator | None,
    ) -> dict[str, Tensor]:
        assignments, labels, box_targets = self.assign(anchors, targets)
        losses, _ = sampled_dense_loss(self.loss, self.sampler, flat, labels, box_targets, assignments, generator)
        return losses
