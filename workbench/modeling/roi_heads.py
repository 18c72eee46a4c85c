"""Second stage: RoI pooling, box head, predictor, training targets, loss and detections.

Conventions:
- ``R`` RoIs over the batch (``R_i`` per image), ``K = num_classes + 1`` classes with column 0 the
  background; ``class_logits`` (R, K), ``box_regression`` (R, 4K) (or (R, 4) class-agnostic),
  offsets encoded by the box coder (baseline weights 10, 10, 5, 5);
- the box branch is a sequence of :class:`~workbench.modeling.box_stages.BoxStage` (one for
  Faster R-CNN, three for Cascade R-CNN), run as :mod:`workbench.modeling.box_stages` describes;
  the modules of the first stage are registered as ``box_pooler``, ``box_head`` and
  ``box_predictor``, those of stage ``k >= 1`` as ``box_pooler_k``, ``box_head_k`` and
  ``box_predictor_k`` (a module shared with an earlier stage is registered once);
- training RoIs of the baseline stage are the proposals plus the (non-ignored) GT boxes, matched
  at IoU 0.5 and sampled by the injected sampler; labels ``1..C`` foreground, ``0`` background;
- :class:`FastRCNNLoss` takes the sampled RoIs' ``class_logits``, ``box_regression``, ``labels``
  (M,) and ``targets`` (M, 4) and returns ``loss_<stage>_cls`` / ``loss_<stage>_box`` scalars
  (``loss_rcnn_*`` by default); its ``box_loss`` is any element-wise loss (smooth L1 by default);
- extra heads (``extra_heads``, name -> module) are called with a :class:`RoIContext` and return
  an :class:`ExtraHeadOutput`; their raw outputs land in ``raw["<name>"]`` and their losses are
  merged, so a method can add a head without copying this one;
- the post-processing object turns the stages' outputs into :class:`Detections` in
  network-input pixels (the detector maps them to original pixels), and gathers every per-RoI
  field (the RPN's per-proposal fields, each stage's ``fields``) into ``Detections.extras``.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Optional, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from workbench.losses import cross_entropy, reduce_loss, smooth_l1
from workbench.modeling.box_stages import (
    BOX_REGRESSION,
    CLASS_LOGITS,
    BoxStage,
    SampledRoIs,
    StageOutput,
    append_gt,
    class_box_offsets,
    roi_fields_per_image,
    run_inference_stages,
    run_training_stages,
    stage_losses,
)
from workbench.modeling.trace import TraceRecorder, grouped_nms
from workbench.ops import clip_boxes, size_at_least
from workbench.structures import Detections

__all__ = [
    "ExtraHeadOutput",
    "FastRCNNLoss",
    "FastRCNNPostprocess",
    "FastRCNNPredictor",
    "Postprocess",
    "RoIContext",
    "RoIHeads",
    "RoIHeadsOutput",
    "SampledRoIs",
    "TwoMLPHead",
    "append_gt",
    "class_box_offsets",
    "select_detections",
]


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
    """Linear class scores (R, K) and per-class box offsets (R, 4K) from box features (R, D);
    ``class_agnostic``: one set of offsets (R, 4) for every class."""

    def __init__(self, in_features: int, num_classes_with_background: int, *, class_agnostic: bool = False) -> None:
        super().__init__()
        self.cls_score = nn.Linear(in_features, num_classes_with_background)
        self.bbox_pred = nn.Linear(in_features, 4 if class_agnostic else num_classes_with_background * 4)

    def forward(self, box_features: Tensor) -> tuple[Tensor, Tensor]:
        flat = box_features.flatten(start_dim=1)
        return self.cls_score(flat), self.bbox_pred(flat)


@dataclass(frozen=True)
class FastRCNNLoss:
    """Softmax cross-entropy (mean over the M sampled RoIs) and ``box_loss`` on the positives'
    offsets for their class (sum over positives / M), named ``loss_<stage>_cls`` and
    ``loss_<stage>_box``. Called on tensors, or as a stage's loss through :meth:`losses`."""

    box_loss: Callable[[Tensor, Tensor], Tensor] = functools.partial(smooth_l1, beta=1.0 / 9.0)
    stage: str = "rcnn"

    def __call__(
        self, class_logits: Tensor, box_regression: Tensor, labels: Tensor, targets: Tensor
    ) -> dict[str, Tensor]:
        num_sampled = max(int(labels.numel()), 1)
        positive = torch.where(labels > 0)[0]
        pred = class_box_offsets(box_regression[positive], labels[positive])
        box = self.box_loss(pred, targets[positive])
        return {
            f"loss_{self.stage}_cls": reduce_loss(cross_entropy(class_logits, labels), reduction="mean"),
            f"loss_{self.stage}_box": reduce_loss(box, reduction="mean", avg_factor=num_sampled),
        }

    def losses(self, outputs: Mapping[str, Tensor], sampled: SampledRoIs) -> dict[str, Tensor]:
        """The :class:`~workbench.modeling.box_stages.StageLoss` form: outputs over the batch's
        sampled RoIs and the sampled labels and targets."""
        return self(
            outputs[CLASS_LOGITS], outputs[BOX_REGRESSION], torch.cat(sampled.labels), torch.cat(sampled.targets)
        )


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


def gather_fields(det: Detections, fields: Mapping[str, Tensor]) -> Detections:
    """Replace ``extras["roi_index"]`` (N,) by every per-RoI field (R_i, ...) at those rows."""
    roi_index = det.extras.pop("roi_index")
    det.extras.update({name: value[roi_index] for name, value in fields.items()})
    return det


@dataclass(frozen=True)
class FastRCNNPostprocess:
    """Softmax scores and decoded per-class boxes of the stages' inference passes, then
    :func:`select_detections` per image; each detection's ``extras`` hold every per-RoI field at
    its RoI.

    The scores are the softmax of the ``class_logits`` of the passes in ``score_stages``
    (indices into the inference passes; averaged when more than one, as Cascade R-CNN averages
    its stages' scores), the boxes those the last pass decodes on its RoIs with its stage's
    coder (class-agnostic offsets serve every class).
    """

    score_thresh: float = 0.05
    nms_thresh: float = 0.5
    detections_per_image: int = 100
    min_size: float = 1e-2
    score_stages: tuple[int, ...] = (-1,)

    def __call__(
        self,
        stages: Sequence[StageOutput],
        image_sizes: Sequence[tuple[int, int]],
        roi_fields: Sequence[Mapping[str, Tensor]],
        recorder: TraceRecorder | None = None,
    ) -> list[Detections]:
        last = stages[-1]
        counts = [int(r.shape[0]) for r in last.rois]
        probabilities = [F.softmax(stages[k].outputs[CLASS_LOGITS], dim=-1) for k in self.score_stages]
        scores = probabilities[0] if len(probabilities) == 1 else sum(probabilities) / len(probabilities)
        num_classes = scores.shape[1]
        reference = torch.cat(list(last.rois), dim=0)
        box_regression = last.outputs[BOX_REGRESSION]
        groups = box_regression.shape[1] // 4
        boxes = last.stage.coder.decode(box_regression, reference).reshape(reference.shape[0], groups, 4)
        if boxes.shape[1] == 1:
            boxes = boxes.expand(-1, num_classes, 4)
        out = []
        per_image = zip(boxes.split(counts), scores.split(counts), image_sizes, roi_fields)
        for i, (b, s, size, fields) in enumerate(per_image):
            det = select_detections(
                b, s, size, self.score_thresh, self.nms_thresh, self.detections_per_image,
                self.min_size, recorder, i, with_roi_index=bool(fields),
            )
            out.append(gather_fields(det, fields) if fields else det)
        return out


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


#: The RoI heads' post-processing, ``postprocess(stages, image_sizes, roi_fields, recorder=None)``:
#: inference passes of the stages, image sizes and per-RoI fields per image (R_i, ...) ->
#: detections per image (network-input pixels); :class:`FastRCNNPostprocess` is the baseline's.
Postprocess = Callable[
    [Sequence[StageOutput], Sequence[tuple[int, int]], Sequence[Mapping[str, Tensor]], Optional[TraceRecorder]],
    list[Detections],
]


@dataclass
class RoIHeadsOutput:
    raw: dict[str, Any] = field(default_factory=dict)
    losses: dict[str, Tensor] = field(default_factory=dict)
    detections: list[Detections] = field(default_factory=list)


class RoIHeads(nn.Module):
    """Box branch of a two-stage detector: a sequence of box stages and a post-processing.

    Args:
        stages: :class:`~workbench.modeling.box_stages.BoxStage` in order (at least one).
        postprocess: :class:`FastRCNNPostprocess` or any :class:`Postprocess`.
        extra_heads: name -> module called with a :class:`RoIContext`.

    ``raw`` keys: ``box_stages`` (one dict per pass: ``name``, ``rois``, the named outputs and,
    with targets, ``sampled_labels``); the first pass's ``class_logits`` / ``box_regression``
    with ``rois`` (inference) or ``sampled_rois`` / ``sampled_labels`` (with targets). In
    evaluation mode with targets the flat keys and ``box_stages`` are those of the detection
    pass.
    """

    def __init__(
        self,
        stages: Sequence[BoxStage],
        postprocess: Postprocess,
        *,
        extra_heads: Mapping[str, nn.Module] | None = None,
    ) -> None:
        super().__init__()
        if not any(s.in_training for s in stages) or not any(s.in_inference for s in stages):
            raise ValueError("RoIHeads needs at least one box stage that trains and one that runs at inference")
        registered: set[int] = set()
        for k, stage in enumerate(stages):
            suffix = "" if k == 0 else f"_{k}"
            parts = (("box_pooler", stage.pooler), ("box_head", stage.head), ("box_predictor", stage.predictor))
            for prefix, module in parts:
                if id(module) not in registered:
                    self.add_module(prefix + suffix, module)
                    registered.add(id(module))
        self.stages: tuple[BoxStage, ...] = tuple(stages)
        self.postprocess = postprocess
        self.extra_heads = nn.ModuleDict(dict(extra_heads or {}))

    def forward(
        self,
        features: Mapping[str, Tensor],
        proposals: Sequence[Tensor],
        image_sizes: Sequence[tuple[int, int]],
        targets: Sequence[Mapping[str, Tensor]] | None = None,
        generator: torch.Generator | None = None,
        recorder: TraceRecorder | None = None,
        proposal_fields: Sequence[Mapping[str, Tensor]] | None = None,
    ) -> RoIHeadsOutput:
        """Losses of every stage when ``targets`` are given; detections in evaluation mode.

        ``proposal_fields``: per image, per-proposal values (P_i, ...) gathered into the
        detections' ``extras`` (e.g. KL-RPN's ``sigma``).
        """
        out = RoIHeadsOutput()
        sampled = None
        if targets is not None:
            passes = run_training_stages(self.stages, features, proposals, image_sizes, targets, generator)
            out.losses.update(stage_losses(passes))
            sampled = passes[0].sampled
            out.raw.update(
                sampled_rois=passes[0].rois,
                sampled_labels=sampled.labels,
                class_logits=passes[0].outputs.get(CLASS_LOGITS),
                box_regression=passes[0].outputs.get(BOX_REGRESSION),
                box_stages=[_describe(p) for p in passes],
            )
        context = RoIContext(features, image_sizes, proposals, sampled, targets, generator, self.training)
        for name, head in self.extra_heads.items():
            head_out = head(context)
            out.raw[name] = head_out.raw
            out.losses.update(head_out.losses)
        if not self.training:
            passes = run_inference_stages(self.stages, features, proposals, image_sizes)
            out.raw.update(
                rois=list(proposals),
                class_logits=passes[0].outputs.get(CLASS_LOGITS),
                box_regression=passes[0].outputs.get(BOX_REGRESSION),
                box_stages=[_describe(p) for p in passes],
            )
            fields = roi_fields_per_image(passes, proposal_fields, [int(p.shape[0]) for p in proposals])
            out.detections = self.postprocess(passes, image_sizes, fields, recorder)
        return out


def _describe(result: StageOutput) -> dict[str, Any]:
    """A stage pass for ``raw["box_stages"]``."""
    described: dict[str, Any] = {"name": result.stage.name, "rois": result.rois, **result.outputs}
    if result.sampled is not None:
        described["sampled_labels"] = result.sampled.labels
    return described
