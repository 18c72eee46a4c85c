"""One stage of a two-stage detector's box branch, and how the RoI heads run a sequence of them.

The RoI heads run their stages one after another, as Cascade R-CNN does (Cai and Vasconcelos,
CVPR 2018; detectron2's ``CascadeROIHeads``): each stage pools its boxes, runs its head and
predictor, and (with targets) matches, samples and computes its losses; the boxes a stage
refines can be the next stage's input. The single-stage Faster R-CNN is one :class:`BoxStage`.

Conventions (shapes as in :mod:`workbench.modeling.roi_heads`):
- ``R`` RoIs over the batch (``R_i`` per image, boxes ``(R_i, 4)`` xyxy in network-input pixels);
- a predictor returns either ``(class_logits, box_regression)`` or a dict of named ``(R, ...)``
  outputs; :func:`as_outputs` turns both into a dict. Names: ``class_logits`` (R, K) with column
  0 the background, ``box_regression`` (R, 4K) per class or (R, 4) class-agnostic, and any other
  per-RoI output (e.g. a predicted IoU (R, 1));
- **inputs**: with targets, a stage trains on ``box_source(proposals, targets, generator,
  image_sizes)`` when it has one (e.g. jittered GT boxes clipped to the image), else on the
  RPN proposals (the first stage, or ``input="proposals"``) or on the boxes refined by the
  previous stage (detached, clipped, empty ones dropped), then matches and samples them. At
  inference a stage takes the proposals or the previous stage's refined boxes (clipped, none
  dropped), so row ``r`` of every stage belongs to proposal ``r`` of its image. A stage with
  an ``inference_gate`` pools only the boxes its gate keeps and fills the other rows of its
  outputs with NaN (e.g. a re-pooling pass that cannot change RoIs already below the score
  threshold), so the row correspondence holds for it too;
- **refined boxes** of a stage: its class-agnostic regression decoded on its RoIs, or, with
  per-class regression, the offsets of the highest-scoring foreground class (mmdetection's
  ``regress_by_class``); a stage without ``box_regression`` passes its RoIs on unchanged;
- **losses**: ``stage.loss.losses(outputs, sampled)`` returns ``loss_<stage>_<kind>`` scalars,
  multiplied by ``stage.loss_weight``; loss names must differ between stages;
- **per-RoI fields**: ``stage.fields(outputs)`` names per-RoI values ``(R, ...)`` (e.g.
  ``{"iou": ...}``) that the post-processing gathers into ``Detections.extras`` for each
  detection's RoI, as it does for the RPN's per-proposal fields (KL-RPN's ``sigma``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Literal, Mapping, Protocol, Sequence

import torch
from torch import Tensor, nn

from workbench.modeling.assignment import Assignment, Matcher, Sampler
from workbench.ops import BoxCoder, clip_boxes, nondegenerate

#: ``gate(previous inference passes) -> bool mask per image`` over the boxes a stage takes at
#: inference (see :attr:`BoxStage.inference_gate`).
RoIGate = Callable[[Sequence["StageOutput"]], list[Tensor]]

#: Output names a predictor's ``(class_logits, box_regression)`` tuple is read as.
CLASS_LOGITS = "class_logits"
BOX_REGRESSION = "box_regression"


@dataclass
class SampledRoIs:
    """Training RoIs per image: ``rois`` (M_i, 4), ``labels`` (M_i,), ``targets`` (M_i, 4) encoded
    offsets to the matched GT, and the :class:`Assignment` restricted to them."""

    rois: list[Tensor]
    labels: list[Tensor]
    targets: list[Tensor]
    assignments: list[Assignment]


class BoxSource(Protocol):
    """Training boxes of a stage in place of the proposals: RPN proposals per image (P_i, 4),
    targets (network-input pixels) and image sizes ``(height, width)`` -> boxes per image (B_i, 4)."""

    def __call__(
        self,
        proposals: Sequence[Tensor],
        targets: Sequence[Mapping[str, Tensor]],
        generator: torch.Generator | None,
        image_sizes: Sequence[tuple[int, int]],
    ) -> list[Tensor]:
        ...


class StageLoss(Protocol):
    """A stage's loss: predictor outputs over the sampled RoIs of the batch (name -> (M, ...), M
    the total of the per-image ``M_i``) and the :class:`SampledRoIs` -> ``loss_<stage>_<kind>``."""

    def losses(self, outputs: Mapping[str, Tensor], sampled: SampledRoIs) -> dict[str, Tensor]:
        ...


#: Named predictor outputs (R, ...) -> per-RoI fields (R, ...) carried to the detections.
RoIFields = Callable[[Mapping[str, Tensor]], Mapping[str, Tensor]]


def append_gt(proposals: Tensor, target: Mapping[str, Tensor]) -> Tensor:
    """Proposals (P, 4) followed by the target's non-ignored GT boxes."""
    gt_boxes = target["boxes"].to(proposals.dtype)
    ignore = target.get("ignore")
    if ignore is not None:
        gt_boxes = gt_boxes[~ignore.to(torch.bool)]
    return torch.cat([proposals, gt_boxes], dim=0)


def as_outputs(prediction: tuple[Tensor, Tensor] | Mapping[str, Tensor]) -> dict[str, Tensor]:
    """A predictor's return value as named outputs (see the module docstring)."""
    if isinstance(prediction, Mapping):
        return dict(prediction)
    class_logits, box_regression = prediction
    return {CLASS_LOGITS: class_logits, BOX_REGRESSION: box_regression}


def class_box_offsets(box_regression: Tensor, labels: Tensor) -> Tensor:
    """Pick each RoI's offsets for its label: (R, 4K) or (R, 4), labels (R,) -> (R, 4)."""
    if box_regression.shape[1] == 4:
        return box_regression
    rows = torch.arange(box_regression.shape[0], device=box_regression.device)
    return box_regression.view(box_regression.shape[0], box_regression.shape[1] // 4, 4)[rows, labels]


@dataclass(frozen=True)
class BoxStage:
    """Everything one box stage uses; the RoI heads register its modules and run it.

    Args:
        pooler: ``(features, rois per image, image_sizes) -> (R, C, S, S)``
            (e.g. ``torchvision.ops.MultiScaleRoIAlign``); stages may share one.
        head: pooled features -> (R, D).
        predictor: (R, D) -> ``(class_logits, box_regression)`` or a dict of named outputs.
        coder: offsets of RoIs to GT (baseline weights 10, 10, 5, 5).
        matcher: :class:`~workbench.modeling.assignment.Matcher` labelling the training RoIs
            (baseline ``IoUMatcher(0.5, 0.5)``, no low-quality matches).
        sampler: :class:`~workbench.modeling.assignment.Sampler`,
            ``sampler(assignment, generator) -> (pos_mask, neg_mask)``.
        loss: :class:`StageLoss`.
        loss_weight: multiplies every loss of the stage (Cascade R-CNN: 1, 0.5, 0.25).
        add_gt_to_proposals: append the non-ignored GT boxes to the training RoIs.
        input: ``"previous"``: the boxes refined by the previous stage (the RPN proposals for
            the first stage); ``"proposals"``: always the RPN proposals.
        box_source: training boxes from a :class:`BoxSource` instead of ``input``.
        fields: :data:`RoIFields`: per-RoI outputs carried to ``Detections.extras``.
        in_training / in_inference: whether the stage runs with targets / at inference (a stage
            that re-pools the refined boxes with the modules of an earlier one runs at inference
            only and passes the same modules).
        inference_gate: at inference, which of its input boxes the stage pools, given the
            passes before it (:data:`RoIGate`); the other rows of its outputs are NaN. For a
            pass whose outputs only matter for RoIs that can still become detections.
        name: names the stage in ``raw["box_stages"]``.
    """

    pooler: nn.Module
    head: nn.Module
    predictor: nn.Module
    coder: BoxCoder
    matcher: Matcher
    sampler: Sampler
    loss: StageLoss
    loss_weight: float = 1.0
    add_gt_to_proposals: bool = True
    input: Literal["previous", "proposals"] = "previous"
    box_source: BoxSource | None = None
    fields: RoIFields | None = None
    in_training: bool = True
    in_inference: bool = True
    inference_gate: RoIGate | None = None
    name: str = "rcnn"

    def __post_init__(self) -> None:
        if self.input not in ("previous", "proposals"):
            raise ValueError(f"BoxStage input must be 'previous' or 'proposals', got {self.input!r}")
        if self.loss_weight < 0:
            raise ValueError(f"BoxStage loss_weight must be >= 0, got {self.loss_weight}")

    def predict(
        self, features: Mapping[str, Tensor], rois: Sequence[Tensor], image_sizes: Sequence[tuple[int, int]]
    ) -> dict[str, Tensor]:
        """RoIs per image -> named outputs over the batch (R, ...)."""
        pooled = self.pooler(features, list(rois), list(image_sizes))
        return as_outputs(self.predictor(self.head(pooled)))

    def sample(
        self,
        boxes: Sequence[Tensor],
        targets: Sequence[Mapping[str, Tensor]],
        generator: torch.Generator | None = None,
    ) -> SampledRoIs:
        """Match the boxes of each image (plus its GT) to its targets and sample training RoIs."""
        rois, labels, regression, assignments = [], [], [], []
        for boxes_i, target in zip(boxes, targets):
            candidates = append_gt(boxes_i, target) if self.add_gt_to_proposals else boxes_i
            gt_boxes = target["boxes"].to(candidates.dtype)
            assignment = self.matcher(candidates, gt_boxes, target["labels"], target.get("ignore"))
            pos, neg = self.sampler(assignment, generator)
            idx = torch.where(pos | neg)[0]
            picked = Assignment(assignment.labels[idx], assignment.matched_gt[idx], assignment.max_iou[idx])
            rois_i = candidates[idx]
            if gt_boxes.shape[0] == 0:
                targets_i = torch.zeros_like(rois_i)
            else:
                targets_i = self.coder.encode(gt_boxes[picked.matched_gt], rois_i)
            rois.append(rois_i)
            labels.append(picked.labels)
            regression.append(targets_i)
            assignments.append(picked)
        return SampledRoIs(rois, labels, regression, assignments)

    def losses(self, outputs: Mapping[str, Tensor], sampled: SampledRoIs) -> dict[str, Tensor]:
        """The loss's values times ``loss_weight`` (a weight of 1 leaves them untouched)."""
        values = self.loss.losses(outputs, sampled)
        if self.loss_weight == 1.0:
            return dict(values)
        return {name: self.loss_weight * value for name, value in values.items()}

    def refine(
        self,
        outputs: Mapping[str, Tensor],
        rois: Sequence[Tensor],
        image_sizes: Sequence[tuple[int, int]],
        drop_empty: bool = False,
    ) -> list[Tensor]:
        """Refined boxes per image (detached, clipped to the image; see the module docstring).
        ``drop_empty`` removes boxes without area (training inputs of the next stage only)."""
        box_regression = outputs.get(BOX_REGRESSION)
        if box_regression is None:
            return [r.detach() for r in rois]
        box_regression = box_regression.detach()
        if box_regression.shape[1] != 4:
            class_logits = outputs[CLASS_LOGITS].detach()
            box_regression = class_box_offsets(box_regression, class_logits[:, 1:].argmax(dim=1) + 1)
        reference = torch.cat([r.detach() for r in rois], dim=0)
        boxes = self.coder.decode(box_regression, reference)
        refined = []
        for boxes_i, size in zip(boxes.split([int(r.shape[0]) for r in rois]), image_sizes):
            boxes_i = clip_boxes(boxes_i, size)
            refined.append(boxes_i[nondegenerate(boxes_i)] if drop_empty else boxes_i)
        return refined


@dataclass
class StageOutput:
    """One stage's pass over a batch: the ``stage``, its ``rois`` per image (R_i, 4), its named
    ``outputs`` (R, ...), the ``sampled`` training RoIs (with targets) and its per-RoI ``fields``
    (R, ...) (inference)."""

    stage: BoxStage
    rois: list[Tensor]
    outputs: dict[str, Tensor]
    sampled: SampledRoIs | None = None
    fields: dict[str, Tensor] = field(default_factory=dict)

    def refined(self, image_sizes: Sequence[tuple[int, int]], drop_empty: bool = False) -> list[Tensor]:
        return self.stage.refine(self.outputs, self.rois, image_sizes, drop_empty)


def run_training_stages(
    stages: Sequence[BoxStage],
    features: Mapping[str, Tensor],
    proposals: Sequence[Tensor],
    image_sizes: Sequence[tuple[int, int]],
    targets: Sequence[Mapping[str, Tensor]],
    generator: torch.Generator | None = None,
) -> list[StageOutput]:
    """Run every stage with ``in_training`` on its training inputs: sample, predict; in order."""
    results: list[StageOutput] = []
    for stage in stages:
        if not stage.in_training:
            continue
        if stage.box_source is not None:
            boxes = stage.box_source(proposals, targets, generator, image_sizes)
        elif stage.input == "proposals" or not results:
            boxes = list(proposals)
        else:
            boxes = results[-1].refined(image_sizes, drop_empty=True)
        sampled = stage.sample(boxes, targets, generator)
        outputs = stage.predict(features, sampled.rois, image_sizes)
        results.append(StageOutput(stage, sampled.rois, outputs, sampled))
    return results


def run_inference_stages(
    stages: Sequence[BoxStage],
    features: Mapping[str, Tensor],
    proposals: Sequence[Tensor],
    image_sizes: Sequence[tuple[int, int]],
) -> list[StageOutput]:
    """Run every stage with ``in_inference`` on the proposals or the previous refined boxes."""
    results: list[StageOutput] = []
    for stage in stages:
        if not stage.in_inference:
            continue
        if stage.input == "proposals" or not results:
            rois = list(proposals)
        else:
            rois = results[-1].refined(image_sizes)
        if stage.inference_gate is None:
            outputs = stage.predict(features, rois, image_sizes)
        else:
            outputs = gated_predict(stage, features, rois, image_sizes, stage.inference_gate(results))
        fields = {} if stage.fields is None else dict(stage.fields(outputs))
        results.append(StageOutput(stage, rois, outputs, None, fields))
    return results


def gated_predict(
    stage: BoxStage,
    features: Mapping[str, Tensor],
    rois: Sequence[Tensor],
    image_sizes: Sequence[tuple[int, int]],
    keep: Sequence[Tensor],
) -> dict[str, Tensor]:
    """``stage.predict`` on the RoIs of each image that ``keep`` (bool (R_i,) per image) selects,
    returned over all the RoIs (R, ...) with NaN in the rows not pooled."""
    if len(keep) != len(rois) or any(k.shape[0] != r.shape[0] for k, r in zip(keep, rois)):
        raise ValueError(f"inference gate of box stage {stage.name!r}: one mask per image, one entry per RoI")
    mask = torch.cat(list(keep)).to(torch.bool)
    kept = stage.predict(features, [r[k.to(torch.bool)] for r, k in zip(rois, keep)], image_sizes)
    outputs = {}
    for name, value in kept.items():
        full = value.new_full((mask.shape[0], *value.shape[1:]), float("nan"))
        full[mask] = value
        outputs[name] = full
    return outputs


def stage_losses(results: Sequence[StageOutput]) -> dict[str, Tensor]:
    """Weighted losses of every stage, merged; a loss name used by two stages is an error."""
    losses: dict[str, Tensor] = {}
    for result in results:
        assert result.sampled is not None, "losses need the sampled training RoIs"
        values = result.stage.losses(result.outputs, result.sampled)
        repeated = set(values) & set(losses)
        if repeated:
            raise ValueError(
                f"box stage {result.stage.name!r} repeats loss names {sorted(repeated)}: give each stage its own"
            )
        losses.update(values)
    return losses


def roi_fields_per_image(
    results: Sequence[StageOutput],
    proposal_fields: Sequence[Mapping[str, Tensor]] | None,
    counts: Sequence[int],
) -> list[dict[str, Tensor]]:
    """Every per-RoI field of an inference pass, per image (R_i, ...): the RPN's per-proposal
    fields, then each stage's ``fields``; a name given twice is an error."""
    if proposal_fields:
        per_image: list[dict[str, Tensor]] = [dict(f) for f in proposal_fields]
    else:
        per_image = [{} for _ in counts]
    for i, (fields, count) in enumerate(zip(per_image, counts)):
        for name, value in fields.items():
            if value.shape[0] != count:
                raise ValueError(f"per-proposal field {name!r} of image {i}: {value.shape[0]} rows for {count} RoIs")
    for result in results:
        for name, value in result.fields.items():
            if value.shape[0] != sum(counts):
                raise ValueError(
                    f"field {name!r} of box stage {result.stage.name!r}: {value.shape[0]} rows for {sum(counts)} RoIs"
                )
            for fields, part in zip(per_image, value.split(list(counts))):
                if name in fields:
                    raise ValueError(f"per-RoI field {name!r} is given twice")
                fields[name] = part
    return per_image
