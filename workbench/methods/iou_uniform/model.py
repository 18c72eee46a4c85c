"""IoU-uniform R-CNN (Zhu et al., "IoU-uniform R-CNN: Breaking Through the Limitations of RPN";
``papers/iou-uniform-rcnn.md``): what differs from the baseline Faster R-CNN.

The backbone, the RPN and the classification of the RoIs are the baseline's; the box branch is
three :class:`~workbench.modeling.BoxStage` passed to :func:`workbench.modeling.build_faster_rcnn`:

1. ``rcnn``: the baseline's box stage (RoIAlign, matcher 0.5, 512 RoIs with a quarter
   positives) with two heads on the same pooled features (:class:`SplitHead`,
   :class:`SplitPredictor`): the classification head (two FC, class scores only) and the IoU
   head below. Its loss is only the classification's softmax cross-entropy
   (``loss_rcnn_cls``): the classification does not regress (paper section 3.1, Fig. 4 (b)).
   At inference the IoU head's offsets refine the proposals and its IoU is the first prediction
   (``iou_pred_first``);
2. ``iou`` (training only): the IoU head, a separate class-agnostic head (two FC, one linear
   layer for 4 box offsets and one for the IoU through a sigmoid, :class:`IoUPredictor`),
   trained only on boxes jittered from the GT (:class:`UniformIoUSource`,
   :func:`workbench.ops.uniform_iou_samples`), or on the RPN's positive proposals with
   ``generated_samples=False`` (Table 6's first rows). Its loss (:class:`IoUHeadLoss`): smooth
   L1 (beta 1.0) on the offsets, each sample weighted by the IoU interval it lies in, and smooth
   L1 (beta 0.5) on the IoU (``loss_iouhead_box``, ``loss_iouhead_iou``);
3. ``iou_repool`` (inference only, the IoU head's modules): the refined boxes pooled again and
   their IoU predicted a second time ("eliminating feature offsets", section 3.2):
   ``iou_pred``. Without re-pooling (``repool=False``) ``iou_pred`` is the first prediction.

The classification and the first IoU prediction share one RoIAlign pass over the proposals
(pooling is most of a head's cost on the CPU); the heads stay separate.

Detections (:class:`IoUUniformPostprocess`): the refined boxes, scored by class probability x
``iou_pred`` (or by the class probability alone, ``nms_score="class"``), score threshold 0.05,
per-class NMS 0.5, 100 per image (the baseline's settings); each carries ``iou_pred`` and
``iou_pred_first`` in ``Detections.extras`` through the per-RoI field mechanism.

Facts from the authors' code (zl1994/IoU-Uniform-R-CNN, on mmdetection; ``../shared/METHODS.md``
section 2): the jitter per interval, 500 candidates, smooth L1 betas 1.0 and 0.5, the third
interval's weight 2.0 (the paper's is 3.0, the default here).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from workbench import records as R
from workbench.errors import ConfigError
from workbench.losses import cross_entropy, reduce_loss, smooth_l1
from workbench.modeling import FasterRCNN, FasterRCNNConfig, build_faster_rcnn
from workbench.modeling.assignment import Assignment, RandomSampler, Sampler
from workbench.modeling.box_stages import BOX_REGRESSION, CLASS_LOGITS, BoxStage, SampledRoIs, StageOutput
from workbench.modeling.faster_rcnn import build_box_pooler, build_box_stage
from workbench.modeling.roi_heads import TwoMLPHead, gather_fields, select_detections
from workbench.modeling.trace import TraceRecorder
from workbench.ops import box_iou, uniform_iou_samples
from workbench.ops.uniform_iou import DEFAULT_INTERVALS, interval_of, jitter_settings
from workbench.structures import Detections

#: Output name of the predicted IoU (R,) of :class:`IoUPredictor`.
IOU = "iou"
#: Per-detection extras: the IoU predicted on the re-pooled refined box, and on the proposal.
IOU_PRED = "iou_pred"
IOU_PRED_FIRST = "iou_pred_first"
#: Stage names (``raw["box_stages"]``).
CLS_STAGE, IOU_STAGE, REPOOL_STAGE = "rcnn", "iou", "iou_repool"
#: ``<stage>`` of the IoU head's losses: ``loss_iouhead_box`` and ``loss_iouhead_iou``.
IOU_LOSS_STAGE = "iouhead"

SAMPLE_COUNTS = ("generated", "equal", "double")
NMS_SCORES = ("class_iou", "class")


@dataclass(frozen=True)
class IoUHeadSettings:
    """The settings IoU-uniform R-CNN takes on Faster R-CNN (:class:`IoUUniformConfig`) and on
    the cascade (:class:`~workbench.methods.iou_uniform.cascade.CascadeIoUUniformConfig`) alike:

    - ``num_candidates``: jittered candidates drawn per GT and interval before the samples are
      kept (:func:`workbench.ops.uniform_iou_samples`);
    - ``use_interval_weights=False``: every sample's offset loss weighs 1 (Table 4 without
      "tuning weight");
    - ``repool``: predict the IoU again on the re-pooled refined boxes (section 3.2; Table 6);
    - ``nms_score``: ``"class_iou"`` (class probability x predicted IoU, section 3.2) or
      ``"class"`` (the class probability alone; Fig. 7's baseline);
    - ``box_smooth_l1_beta`` / ``iou_smooth_l1_beta``: 1.0 / 0.5 (the authors' code);
    - ``box_init_std`` / ``iou_init_std``: the offset and IoU layers start from N(0, std) with
      zero bias (0.001 for offsets: section 3.1; 0.01, mmdetection's for scores, for the IoU).
    """

    num_candidates: int = 500
    use_interval_weights: bool = True
    repool: bool = True
    nms_score: str = "class_iou"
    box_smooth_l1_beta: float = 1.0
    iou_smooth_l1_beta: float = 0.5
    box_init_std: float = 0.001
    iou_init_std: float = 0.01

    def __post_init__(self) -> None:
        if self.nms_score not in NMS_SCORES:
            raise ConfigError(f"nms_score must be one of {NMS_SCORES}, got {self.nms_score!r}")
        if self.num_candidates < 1:
            raise ConfigError(f"num_candidates must be >= 1, got {self.num_candidates}")


@dataclass(frozen=True)
class IoUUniformConfig(IoUHeadSettings):
    """The baseline's config (``base``) plus what IoU-uniform R-CNN adds; each component can be
    switched off for the paper's ablations (Tables 4, 5 and 6). Besides the
    :class:`IoUHeadSettings`:

    - ``intervals``, ``per_interval``, ``jitter_offsets``, ``jitter_scales``: the generated
      samples (:func:`workbench.ops.uniform_iou_samples`; section 4.1: 4 intervals, 64 samples
      per GT, i.e. 16 per interval; ``None`` jitter: the authors' per interval);
    - ``interval_weights``: weight of each sample's offset loss by the interval its IoU lies in
      (paper section 4.1: 1.0, 1.5, 3.0, 3.0; the authors' code uses 2.0 for the third);
    - ``generated_samples``: the IoU head trains on the generated samples; ``False``: on the RPN's
      positive proposals, sampled as the classification stage samples them (Table 6);
    - ``sample_count``: ``"generated"`` (all, at most ``per_interval`` per GT and interval),
      ``"equal"``: as many, drawn from them, as the classification stage's positives (the RPN
      proposals and GT boxes at IoU >= ``base.box_fg_iou_thresh``, at most a quarter of 512),
      ``"double"``: twice as many (Table 5);
    - ``box_loss_weight`` / ``iou_loss_weight``: multiply the two losses of the IoU head.

    The IoU head has ``base.box_representation_size`` features (1024 in the paper's setting) and
    codes offsets with ``base.box_weights``; ``base.box_smooth_l1_beta`` is unused (the
    classification stage does not regress).
    """

    base: FasterRCNNConfig = field(default_factory=FasterRCNNConfig)
    intervals: tuple[tuple[float, float], ...] = DEFAULT_INTERVALS
    per_interval: int = 16
    jitter_offsets: tuple[float, ...] | None = None
    jitter_scales: tuple[tuple[float, float], ...] | None = None
    interval_weights: tuple[float, ...] = (1.0, 1.5, 3.0, 3.0)
    generated_samples: bool = True
    sample_count: str = "generated"
    box_loss_weight: float = 1.0
    iou_loss_weight: float = 1.0

    def __post_init__(self) -> None:
        super().__post_init__()
        try:
            jitter_settings(self.intervals, self.jitter_offsets, self.jitter_scales)
        except ValueError as err:
            raise ConfigError(str(err)) from None
        if len(self.interval_weights) != len(self.intervals):
            raise ConfigError(f"{len(self.intervals)} intervals need as many interval_weights, "
                              f"got {len(self.interval_weights)}")
        if self.sample_count not in SAMPLE_COUNTS:
            raise ConfigError(f"sample_count must be one of {SAMPLE_COUNTS}, got {self.sample_count!r}")
        if self.sample_count != "generated" and not self.generated_samples:
            raise ConfigError("sample_count chooses among generated samples: it needs generated_samples=True")
        if self.per_interval < 1:
            raise ConfigError(f"per_interval must be >= 1, got {self.per_interval}")


class ClassOnlyPredictor(nn.Module):
    """Linear class scores (R, K) from box features (R, D); no box offsets."""

    def __init__(self, in_features: int, num_classes_with_background: int) -> None:
        super().__init__()
        self.cls_score = nn.Linear(in_features, num_classes_with_background)

    def forward(self, box_features: Tensor) -> dict[str, Tensor]:
        return {CLASS_LOGITS: self.cls_score(box_features.flatten(start_dim=1))}


@dataclass(frozen=True)
class ClassificationLoss:
    """``loss_<stage>_cls``: softmax cross-entropy averaged over the sampled RoIs (the baseline's
    classification loss without its box loss)."""

    stage: str = "rcnn"

    def losses(self, outputs: Mapping[str, Tensor], sampled: SampledRoIs) -> dict[str, Tensor]:
        labels = torch.cat(sampled.labels)
        return {f"loss_{self.stage}_cls": reduce_loss(cross_entropy(outputs[CLASS_LOGITS], labels), reduction="mean")}


class IoUPredictor(nn.Module):
    """Class-agnostic box offsets (R, 4) and the IoU with the matched GT in (0, 1) (R,) (a
    sigmoid) from box features (R, D)."""

    def __init__(self, in_features: int, box_init_std: float = 0.001, iou_init_std: float = 0.01) -> None:
        super().__init__()
        self.bbox_pred = nn.Linear(in_features, 4)
        self.iou_pred = nn.Linear(in_features, 1)
        nn.init.normal_(self.bbox_pred.weight, std=box_init_std)
        nn.init.normal_(self.iou_pred.weight, std=iou_init_std)
        nn.init.zeros_(self.bbox_pred.bias)
        nn.init.zeros_(self.iou_pred.bias)

    def forward(self, box_features: Tensor) -> dict[str, Tensor]:
        flat = box_features.flatten(start_dim=1)
        return {BOX_REGRESSION: self.bbox_pred(flat), IOU: torch.sigmoid(self.iou_pred(flat)).squeeze(1)}


class SplitHead(nn.Module):
    """Pooled features (R, C, S, S) -> ``(class features, box features)``: two heads on one
    RoIAlign pass. The box head is registered by the stage that trains it (the generated-sample
    stage), so it is held here without being registered a second time. With
    ``box_in_training=False`` the box head is skipped in training mode (box features ``None``):
    where nothing uses the stage's offsets in training, it spares a head pass over its RoIs."""

    def __init__(self, cls_head: nn.Module, box_head: nn.Module, box_in_training: bool = True) -> None:
        super().__init__()
        self.cls_head = cls_head
        self._box_head = (box_head,)
        self.box_in_training = box_in_training

    def forward(self, pooled: Tensor) -> tuple[Tensor, Tensor | None]:
        if self.training and not self.box_in_training:
            return self.cls_head(pooled), None
        return self.cls_head(pooled), self._box_head[0](pooled)


class SplitPredictor(nn.Module):
    """``(class features, box features)`` -> class logits and the box predictor's outputs
    (offsets, IoU; none for box features ``None``); the box predictor is held, not registered,
    as in :class:`SplitHead`."""

    def __init__(self, cls_predictor: nn.Module, box_predictor: nn.Module) -> None:
        super().__init__()
        self.cls_predictor = cls_predictor
        self._box_predictor = (box_predictor,)

    def forward(self, features: tuple[Tensor, Tensor | None]) -> dict[str, Tensor]:
        cls_features, box_features = features
        outputs = dict(self.cls_predictor(cls_features))
        if box_features is not None:
            outputs.update(self._box_predictor[0](box_features))
        return outputs


def interval_weight(ious: Tensor, intervals: Sequence[Sequence[float]], weights: Sequence[float]) -> Tensor:
    """Weight of each sample (M,) by the interval its IoU (M,) lies in (1 outside every interval)."""
    index = interval_of(ious, intervals)
    table = torch.tensor([*weights, 1.0], dtype=ious.dtype, device=ious.device)
    return table[index]  # index -1 reads the trailing 1.0


@dataclass(frozen=True)
class IoUHeadLoss:
    """The IoU head's losses over its positive training samples (M of them over the batch):

    - ``loss_<stage>_box``: ``sum_i w_i * sum_c smooth_l1(d_ic - t_ic, box_beta) / M`` with
      ``w_i`` the weight of the interval of sample ``i``'s IoU (paper equation (2));
    - ``loss_<stage>_iou``: ``sum_i smooth_l1(iou_i - IoU_i, iou_beta) / M``;

    targets: the encoded offsets to the matched GT and the IoU with it (the matcher's
    ``max_iou``: a positive's matched GT is its best GT). ``interval_weights=None``: all 1.
    Both are 0 (and keep the graph) without a positive.
    """

    intervals: tuple[tuple[float, float], ...] = DEFAULT_INTERVALS
    interval_weights: tuple[float, ...] | None = (1.0, 1.5, 3.0, 3.0)
    box_beta: float = 1.0
    iou_beta: float = 0.5
    box_weight: float = 1.0
    iou_weight: float = 1.0
    stage: str = IOU_LOSS_STAGE

    def __call__(self, box_regression: Tensor, iou: Tensor, labels: Tensor, targets: Tensor,
                 target_iou: Tensor) -> dict[str, Tensor]:
        positive = torch.where(labels > 0)[0]
        count = max(int(positive.numel()), 1)
        target_iou = target_iou[positive].to(iou.dtype)
        per_box = smooth_l1(box_regression[positive], targets[positive], beta=self.box_beta).sum(dim=1)
        weight = None
        if self.interval_weights is not None:
            weight = interval_weight(target_iou, self.intervals, self.interval_weights)
        box = reduce_loss(per_box, weight, reduction="mean", avg_factor=count)
        iou_loss = reduce_loss(smooth_l1(iou[positive], target_iou, beta=self.iou_beta), reduction="mean",
                               avg_factor=count)
        return {f"loss_{self.stage}_box": self.box_weight * box, f"loss_{self.stage}_iou": self.iou_weight * iou_loss}

    def losses(self, outputs: Mapping[str, Tensor], sampled: SampledRoIs) -> dict[str, Tensor]:
        """The :class:`~workbench.modeling.box_stages.StageLoss` form."""
        return self(
            outputs[BOX_REGRESSION], outputs[IOU], torch.cat(sampled.labels), torch.cat(sampled.targets),
            torch.cat([a.max_iou for a in sampled.assignments]),
        )


@dataclass(frozen=True)
class PositivesOnly:
    """Sampler of the positives only (the IoU head never trains on background): every positive,
    or the positives that ``inner`` samples."""

    inner: Sampler | None = None

    def __call__(self, assignment: Assignment, generator: torch.Generator | None = None,
                 losses: Tensor | None = None) -> tuple[Tensor, Tensor]:
        if self.inner is None:
            positive = assignment.labels > 0
        else:
            positive, _ = self.inner(assignment, generator, losses)
        return positive, torch.zeros_like(positive)


def _cycled_choice(n: int, k: int, generator: torch.Generator | None, device: torch.device) -> Tensor:
    """``k`` indices into ``range(n)``: random permutations of all of them one after another,
    cut at ``k`` (without replacement while ``k <= n``, each index as often as any other +- 1)."""
    if n == 0 or k == 0:
        return torch.zeros((0,), dtype=torch.int64, device=device)
    gen_device = generator.device if generator is not None else device
    perms = [torch.randperm(n, generator=generator, device=gen_device) for _ in range(math.ceil(k / n))]
    return torch.cat(perms)[:k].to(device)


@dataclass(frozen=True)
class UniformIoUSource:
    """:class:`~workbench.modeling.box_stages.BoxSource`: the IoU head's training boxes of each
    image, jittered from its non-ignored GT boxes (:func:`workbench.ops.uniform_iou_samples`).

    ``count``: ``"generated"`` (all of them), ``"equal"`` / ``"double"``: once / twice as many as
    the classification stage's positives (the proposals, plus the GT boxes when
    ``add_gt_to_proposals``, whose best IoU is ``>= fg_iou_thresh``, at most ``max_positives``),
    drawn from the generated ones by :func:`_cycled_choice` (their IoU distribution stays
    uniform; a sample repeats only when more are asked for than were generated).
    """

    intervals: tuple[tuple[float, float], ...] = DEFAULT_INTERVALS
    per_interval: int = 16
    num_candidates: int = 500
    offsets: tuple[float, ...] | None = None
    scales: tuple[tuple[float, float], ...] | None = None
    count: str = "generated"
    fg_iou_thresh: float = 0.5
    max_positives: int = 128
    add_gt_to_proposals: bool = True

    def __call__(self, proposals: Sequence[Tensor], targets: Sequence[Mapping[str, Tensor]],
                 generator: torch.Generator | None, image_sizes: Sequence[tuple[int, int]]) -> list[Tensor]:
        out = []
        for proposals_i, target, size in zip(proposals, targets, image_sizes):
            gt = target["boxes"].to(proposals_i.dtype)
            ignore = target.get("ignore")
            if ignore is not None:
                gt = gt[~ignore.to(torch.bool)]
            boxes = uniform_iou_samples(gt, size, self.intervals, self.per_interval, self.num_candidates, generator,
                                        offsets=self.offsets, scales=self.scales)[0]
            if self.count != "generated":
                wanted = (1 if self.count == "equal" else 2) * self.rpn_positives(proposals_i, gt)
                boxes = boxes[_cycled_choice(boxes.shape[0], wanted, generator, boxes.device)]
            out.append(boxes)
        return out

    def rpn_positives(self, proposals: Tensor, gt: Tensor) -> int:
        """How many positives the classification stage samples from ``proposals`` (P, 4)."""
        if gt.shape[0] == 0:
            return 0
        candidates = torch.cat([proposals, gt]) if self.add_gt_to_proposals else proposals
        best = box_iou(gt, candidates).max(dim=0).values
        return min(int((best >= self.fg_iou_thresh).sum()), self.max_positives)


@dataclass(frozen=True)
class IoUFields:
    """Per-RoI fields of an IoU pass: its predicted IoU under each of ``names``."""

    names: tuple[str, ...]

    def __call__(self, outputs: Mapping[str, Tensor]) -> dict[str, Tensor]:
        return {name: outputs[IOU] for name in self.names}


def class_probabilities(stages: Sequence[StageOutput], score_passes: Sequence[int]) -> Tensor:
    """The softmax of the ``class_logits`` of the inference passes ``score_passes``, averaged
    when more than one (R, K)."""
    probabilities = [F.softmax(stages[k].outputs[CLASS_LOGITS], dim=-1) for k in score_passes]
    return probabilities[0] if len(probabilities) == 1 else sum(probabilities) / len(probabilities)


@dataclass(frozen=True)
class RepoolGate:
    """The re-pooling pass's :data:`~workbench.modeling.box_stages.RoIGate`: only the refined
    boxes whose best foreground class probability (of the passes ``score_passes``, as the
    post-processing computes it) exceeds ``score_thresh`` are pooled again.

    Exact: a detection's score is that probability times the re-pooled IoU, a sigmoid in
    [0, 1], and the post-processing keeps scores strictly above ``score_thresh``; so no box left
    out could have become a detection, with or without ``use_iou``. In a trained detector most of
    the 300 proposals are background at inference and the second RoIAlign pass, the largest
    part of the re-pooling's cost on the CPU, shrinks to the candidates. The ``iou_pred`` of a
    RoI left out is NaN in the traced refined RoIs.
    """

    score_thresh: float
    score_passes: tuple[int, ...] = (0,)

    def __call__(self, passes: Sequence[StageOutput]) -> list[Tensor]:
        best = class_probabilities(passes, self.score_passes)[:, 1:].max(dim=1).values
        return list((best > self.score_thresh).split([int(r.shape[0]) for r in passes[0].rois]))


@dataclass(frozen=True)
class IoUUniformPostprocess:
    """Detections of the inference passes (for :func:`iou_uniform_stages`: ``rcnn`` and, with
    re-pooling, ``iou_repool``):

    - boxes: the RoIs of pass ``box_pass`` refined by its class-agnostic offsets (the proposals
      refined by the IoU head in the ``rcnn`` pass), one box for every class;
    - scores: the softmax of the ``class_logits`` of the passes ``score_passes`` (averaged when
      more than one) times, with ``use_iou``, the IoU of the last pass (the re-pooled one, else
      the first);

    then :func:`~workbench.modeling.roi_heads.select_detections` per image (score threshold,
    minimum size, per-class NMS, top-k) and every per-RoI field gathered into the extras. With a
    recorder, every refined RoI is recorded first (:data:`workbench.records.REFINED_ROIS`: its
    box, best foreground score and per-RoI fields).
    """

    score_thresh: float = 0.05
    nms_thresh: float = 0.5
    detections_per_image: int = 100
    min_size: float = 1e-2
    use_iou: bool = True
    score_passes: tuple[int, ...] = (0,)
    box_pass: int = 0

    def __call__(self, stages: Sequence[StageOutput], image_sizes: Sequence[tuple[int, int]],
                 roi_fields: Sequence[Mapping[str, Tensor]], recorder: TraceRecorder | None = None) -> list[Detections]:
        iou_pass, last = stages[self.box_pass], stages[-1]
        counts = [int(r.shape[0]) for r in stages[0].rois]
        scores = class_probabilities(stages, self.score_passes)
        if self.use_iou:
            # NaN: a RoI the re-pooling gate left out (its class score cannot pass the threshold)
            scores = scores * last.outputs[IOU].nan_to_num(0.0)[:, None]
        num_classes = scores.shape[1]
        refined = iou_pass.refined(image_sizes)
        out = []
        per_image = zip(refined, scores.split(counts), image_sizes, roi_fields)
        for i, (b, s, size, fields) in enumerate(per_image):
            if recorder is not None:
                recorder.put(i, R.REFINED_ROIS, boxes=b, scores=s[:, 1:].max(dim=1).values, **fields)
            boxes = b[:, None, :].expand(-1, num_classes, 4)
            det = select_detections(boxes, s, size, self.score_thresh,
                                    self.nms_thresh, self.detections_per_image, self.min_size, recorder, i,
                                    with_roi_index=bool(fields))
            out.append(gather_fields(det, fields) if fields else det)
        return out


def iou_uniform_stages(cfg: IoUUniformConfig):
    """The box stages factory ``(in_channels, featmap_names) -> [rcnn, iou(, iou_repool)]`` of
    ``cfg`` (see the module docstring); one RoIAlign pooler for all."""
    base = cfg.base

    def stages(in_channels: int, names: Sequence[str]) -> list[BoxStage]:
        pooler = build_box_pooler(base, names)
        iou_head = TwoMLPHead(in_channels * base.roi_output_size**2, base.box_representation_size)
        iou_predictor = IoUPredictor(base.box_representation_size, cfg.box_init_std, cfg.iou_init_std)
        main = build_box_stage(base, in_channels, names, pooler=pooler, loss=ClassificationLoss("rcnn"),
                               name=CLS_STAGE)
        first_names = (IOU_PRED_FIRST,) if cfg.repool else (IOU_PRED_FIRST, IOU_PRED)
        main = dataclasses.replace(
            main, head=SplitHead(main.head, iou_head, box_in_training=False),
            predictor=SplitPredictor(ClassOnlyPredictor(base.box_representation_size, base.num_classes + 1),
                                     iou_predictor),
            fields=IoUFields(first_names),
        )
        fg = min(lo for lo, _ in cfg.intervals)
        if cfg.generated_samples:
            source = UniformIoUSource(
                cfg.intervals, cfg.per_interval, cfg.num_candidates, cfg.jitter_offsets, cfg.jitter_scales,
                cfg.sample_count, base.box_fg_iou_thresh,
                int(base.box_batch_size_per_image * base.box_positive_fraction), base.box_add_gt_to_proposals,
            )
            sampler: Sampler = PositivesOnly()
        else:
            source = None
            sampler = PositivesOnly(RandomSampler(base.box_batch_size_per_image, base.box_positive_fraction))
        loss = IoUHeadLoss(
            cfg.intervals, cfg.interval_weights if cfg.use_interval_weights else None, cfg.box_smooth_l1_beta,
            cfg.iou_smooth_l1_beta, cfg.box_loss_weight, cfg.iou_loss_weight,
        )
        iou = build_box_stage(
            base, in_channels, names, pooler=pooler, iou_thresholds=(fg, fg), class_agnostic=True, sampler=sampler,
            loss=loss, loss_weight=1.0,
            add_gt_to_proposals=False if cfg.generated_samples else base.box_add_gt_to_proposals, name=IOU_STAGE,
        )
        iou = dataclasses.replace(iou, head=iou_head, predictor=iou_predictor, input="proposals", box_source=source,
                                  in_inference=False)
        built = [main, iou]
        if cfg.repool:
            built.append(dataclasses.replace(iou, in_training=False, in_inference=True, input="previous",
                                             box_source=None, fields=IoUFields((IOU_PRED,)), name=REPOOL_STAGE,
                                             inference_gate=RepoolGate(base.box_score_thresh)))
        return built

    return stages


def build_postprocess(cfg: IoUUniformConfig) -> IoUUniformPostprocess:
    base = cfg.base
    return IoUUniformPostprocess(base.box_score_thresh, base.box_nms_thresh, base.box_detections_per_img,
                                 base.box_min_size, use_iou=cfg.nms_score == "class_iou")


def build_iou_uniform_faster_rcnn(cfg: IoUUniformConfig) -> FasterRCNN:
    """Faster R-CNN of ``cfg.base`` with IoU-uniform R-CNN's box branch and post-processing."""
    return build_faster_rcnn(cfg.base, box_stages=iou_uniform_stages(cfg), roi_postprocess=build_postprocess(cfg))


def build_model(cfg: IoUUniformConfig, num_classes: int) -> FasterRCNN:
    """``num_classes`` counts the foreground classes of the dataset (the model adds background)."""
    return build_iou_uniform_faster_rcnn(dataclasses.replace(cfg, base=dataclasses.replace(cfg.base,
                                                                                          num_classes=num_classes)))


__all__ = [
    "ClassOnlyPredictor",
    "ClassificationLoss",
    "IOU",
    "IOU_PRED",
    "IOU_PRED_FIRST",
    "IoUFields",
    "IoUHeadSettings",
    "IoUHeadLoss",
    "IoUPredictor",
    "IoUUniformConfig",
    "IoUUniformPostprocess",
    "PositivesOnly",
    "RepoolGate",
    "SplitHead",
    "SplitPredictor",
    "UniformIoUSource",
    "build_iou_uniform_faster_rcnn",
    "build_model",
    "build_postprocess",
    "class_probabilities",
    "interval_weight",
    "iou_uniform_stages",
]
