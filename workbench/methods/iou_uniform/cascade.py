"""IoU-uniform R-CNN on Cascade R-CNN (the paper's "Cascade R-CNN + IoU-uniform R-CNN", Tables
1 to 3): the cascade of :mod:`workbench.methods.cascade_rcnn` whose stages regress and predict
the IoU with heads trained on generated samples, each stage at higher IoU intervals.

Each cascade stage ``k`` (IoU 0.5 / 0.6 / 0.7, offsets coded with (10, 10, 5, 5) /
(20, 20, 10, 10) / (30, 30, 15, 15), losses weighted 1 / 0.5 / 0.25) has

- a classification head (two FC and a linear layer) trained, as Cascade R-CNN's, on the RPN
  proposals (stage 1: 512 sampled, a quarter positives) or on every box the previous stage
  refined (``loss_rcnn_cls``, ``loss_rcnn_stage2_cls``, ``loss_rcnn_stage3_cls``);
- a class-agnostic box and IoU head (:class:`~workbench.methods.iou_uniform.model.IoUPredictor`)
  trained only on boxes jittered from the GT at the stage's IoU intervals
  (``loss_iouhead_*``, ``loss_iouhead_stage2_*``, ``loss_iouhead_stage3_*``). Stage 2 draws in
  (0.6, 0.7), (0.7, 0.8), (0.8, 1.0) and (0.9, 1.0), 16 each; stage 3 in (0.7, 0.8),
  (0.8, 1.0) and (0.9, 1.0), 20 each (the authors' code, ``../shared/METHODS.md`` section 2).

Both heads of a stage pool the same RoIs; the box head's offsets refine them for the next stage
(as Cascade R-CNN's regressor does; the last stage's box head therefore runs on the cascade's
RoIs only at inference). The box stages, in training order: the three cascade
stages (classification losses; their offsets only refine the boxes), then the three
generated-sample stages (the box and IoU heads' losses; training only, sharing the heads'
modules). At inference: the three cascade stages, then the last stage's heads on its refined
boxes ("eliminating feature offsets"). Detections: the last stage's refined boxes, scored by
the class probability averaged over the stages times the IoU predicted on the re-pooled boxes
(``iou_pred``; ``iou_pred_first``: the last stage's IoU on its input boxes).

Choices the sources leave open: the jitter of (0.9, 1.0) (the scale range (0.9, 1.25) is the
authors'; the centre offset bound 0.03 is chosen here so that about one candidate in seven is
kept), the interval weights of stages 2 and 3 (1 each), and which intervals are open at which
end (the op's: ``[lo, hi)``, the last closed).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Sequence

from workbench.config import TrainConfig
from workbench.errors import ConfigError
from workbench.methods import TWO_STAGE_VIEWS, Method
from workbench.methods import faster_rcnn as baseline
from workbench.methods.cascade_rcnn import CascadeRCNNConfig, stage_loss_name
from workbench.methods.iou_uniform import RECORD_VIEWS
from workbench.methods.iou_uniform.figures import RUN_FIGURES
from workbench.methods.iou_uniform.model import (
    IOU_LOSS_STAGE,
    IOU_PRED,
    IOU_PRED_FIRST,
    ClassificationLoss,
    ClassOnlyPredictor,
    IoUFields,
    IoUHeadSettings,
    IoUHeadLoss,
    IoUPredictor,
    IoUUniformPostprocess,
    RepoolGate,
    PositivesOnly,
    SplitHead,
    SplitPredictor,
    UniformIoUSource,
)
from workbench.modeling import AllCandidates, BoxStage, FasterRCNN, FasterRCNNConfig, build_faster_rcnn
from workbench.modeling.faster_rcnn import build_box_pooler, build_box_stage
from workbench.modeling.roi_heads import TwoMLPHead
from workbench.ops.uniform_iou import DEFAULT_INTERVALS, jitter_settings

#: Intervals, samples per interval, centre offset bounds and scale ranges of each stage.
STAGE_INTERVALS: tuple[tuple[tuple[float, float], ...], ...] = (
    DEFAULT_INTERVALS,
    ((0.6, 0.7), (0.7, 0.8), (0.8, 1.0), (0.9, 1.0)),
    ((0.7, 0.8), (0.8, 1.0), (0.9, 1.0)),
)
STAGE_PER_INTERVAL: tuple[int, ...] = (16, 16, 20)
#: The jitter of (0.9, 1.0): offset bound 0.03 (chosen here), scale range (0.9, 1.25) (authors').
HIGH_JITTER = (0.03, (0.9, 1.25))
STAGE_JITTER_OFFSETS: tuple[tuple[float, ...], ...] = (
    (0.75, 0.5, 0.3, 0.125), (0.5, 0.3, 0.125, HIGH_JITTER[0]), (0.3, 0.125, HIGH_JITTER[0]),
)
STAGE_JITTER_SCALES: tuple[tuple[tuple[float, float], ...], ...] = (
    ((0.5, 2.0), (0.6, 1.6), (0.7, 1.4), (0.8, 1.25)),
    ((0.6, 1.6), (0.7, 1.4), (0.8, 1.25), HIGH_JITTER[1]),
    ((0.7, 1.4), (0.8, 1.25), HIGH_JITTER[1]),
)
STAGE_INTERVAL_WEIGHTS: tuple[tuple[float, ...], ...] = ((1.0, 1.5, 3.0, 3.0), (1.0, 1.0, 1.0, 1.0), (1.0, 1.0, 1.0))


def _tuples(value):
    """Lists, at any depth, as tuples."""
    return tuple(_tuples(v) for v in value) if isinstance(value, (list, tuple)) else value


@dataclass(frozen=True)
class CascadeIoUUniformConfig(IoUHeadSettings):
    """The cascade's config (``cascade``, around the baseline's ``cascade.base``) plus, per
    stage, the generated samples and the interval weights; the other settings are the
    :class:`~workbench.methods.iou_uniform.model.IoUHeadSettings`."""

    cascade: CascadeRCNNConfig = field(default_factory=CascadeRCNNConfig)
    stage_intervals: tuple[tuple[tuple[float, float], ...], ...] = STAGE_INTERVALS
    stage_per_interval: tuple[int, ...] = STAGE_PER_INTERVAL
    stage_jitter_offsets: tuple[tuple[float, ...], ...] = STAGE_JITTER_OFFSETS
    stage_jitter_scales: tuple[tuple[tuple[float, float], ...], ...] = STAGE_JITTER_SCALES
    stage_interval_weights: tuple[tuple[float, ...], ...] = STAGE_INTERVAL_WEIGHTS

    def __post_init__(self) -> None:
        super().__post_init__()
        for name in ("stage_intervals", "stage_per_interval", "stage_jitter_offsets", "stage_jitter_scales",
                     "stage_interval_weights"):  # nested lists (a config read back from JSON) -> tuples
            object.__setattr__(self, name, _tuples(getattr(self, name)))
        n = len(self.cascade.stage_iou_thresholds)
        per_stage = (self.stage_intervals, self.stage_per_interval, self.stage_jitter_offsets,
                     self.stage_jitter_scales, self.stage_interval_weights)
        if any(len(v) != n for v in per_stage):
            raise ConfigError(f"the {n} cascade stages need as many intervals, sample counts, jitters and weights")
        for intervals, offsets, scales, weights in zip(self.stage_intervals, self.stage_jitter_offsets,
                                                       self.stage_jitter_scales, self.stage_interval_weights):
            try:
                jitter_settings(intervals, offsets, scales)
            except ValueError as err:
                raise ConfigError(str(err)) from None
            if len(weights) != len(intervals):
                raise ConfigError(f"intervals {intervals} need as many interval weights, got {weights}")

    @property
    def base(self) -> FasterRCNNConfig:
        return self.cascade.base


def cascade_iou_uniform_stages(cfg: CascadeIoUUniformConfig):
    """The box stages factory (see the module docstring): the cascade stages, the
    generated-sample stages, then (with ``repool``) the last stage's heads on its refined boxes."""
    casc, base = cfg.cascade, cfg.base

    def stages(in_channels: int, names: Sequence[str]) -> list[BoxStage]:
        pooler = build_box_pooler(base, names)
        in_features = in_channels * base.roi_output_size**2
        cascade_stages: list[BoxStage] = []
        generated: list[BoxStage] = []
        last = len(casc.stage_iou_thresholds) - 1
        settings = zip(casc.stage_iou_thresholds, casc.stage_box_weights, casc.stage_loss_weights,
                       cfg.stage_intervals, cfg.stage_per_interval, cfg.stage_jitter_offsets,
                       cfg.stage_jitter_scales, cfg.stage_interval_weights)
        for k, (iou, weights, loss_weight, intervals, per_interval, offsets, scales, iw) in enumerate(settings):
            later = k > 0 and not casc.resample_later_stages
            box_head = TwoMLPHead(in_features, base.box_representation_size)
            box_predictor = IoUPredictor(base.box_representation_size, cfg.box_init_std, cfg.iou_init_std)
            stage = build_box_stage(
                base, in_channels, names, pooler=pooler, box_weights=tuple(weights), iou_thresholds=(iou, iou),
                loss=ClassificationLoss(stage_loss_name(k)), loss_weight=loss_weight,
                sampler=AllCandidates() if later else None, add_gt_to_proposals=False if later else None,
                name=f"stage{k + 1}",
            )
            cls_predictor = ClassOnlyPredictor(base.box_representation_size, base.num_classes + 1)
            cascade_stages.append(dataclasses.replace(
                stage, head=SplitHead(stage.head, box_head, box_in_training=k < last),
                predictor=SplitPredictor(cls_predictor, box_predictor),
                fields=IoUFields((IOU_PRED_FIRST,) if cfg.repool else (IOU_PRED_FIRST, IOU_PRED)) if k == last else None,
            ))
            source = UniformIoUSource(tuple(intervals), per_interval, cfg.num_candidates, tuple(offsets),
                                      tuple(tuple(r) for r in scales))
            loss = IoUHeadLoss(tuple(intervals), tuple(iw) if cfg.use_interval_weights else None,
                               cfg.box_smooth_l1_beta, cfg.iou_smooth_l1_beta,
                               stage=IOU_LOSS_STAGE if k == 0 else f"{IOU_LOSS_STAGE}_stage{k + 1}")
            fg = min(lo for lo, _ in intervals)
            gen = build_box_stage(
                base, in_channels, names, pooler=pooler, box_weights=tuple(weights), iou_thresholds=(fg, fg),
                class_agnostic=True, sampler=PositivesOnly(), loss=loss, loss_weight=loss_weight,
                add_gt_to_proposals=False, name=f"generated{k + 1}",
            )
            generated.append(dataclasses.replace(gen, head=box_head, predictor=box_predictor, box_source=source,
                                                 in_inference=False))
        built = cascade_stages + generated
        if cfg.repool:
            built.append(dataclasses.replace(cascade_stages[-1], in_training=False, fields=IoUFields((IOU_PRED,)),
                                             name="repool",
                                             inference_gate=RepoolGate(base.box_score_thresh, score_passes(cfg))))
        return built

    return stages


def score_passes(cfg: CascadeIoUUniformConfig) -> tuple[int, ...]:
    """The inference passes whose class probabilities score the detections (every stage's,
    averaged, unless the cascade names them)."""
    casc = cfg.cascade
    return tuple(casc.score_stages) if casc.score_stages is not None else tuple(range(len(casc.stage_iou_thresholds)))


def build_cascade_iou_uniform(cfg: CascadeIoUUniformConfig) -> FasterRCNN:
    """Faster R-CNN of ``cfg.base`` with the cascade's IoU-uniform box stages."""
    base, n = cfg.base, len(cfg.cascade.stage_iou_thresholds)
    postprocess = IoUUniformPostprocess(
        base.box_score_thresh, base.box_nms_thresh, base.box_detections_per_img, base.box_min_size,
        use_iou=cfg.nms_score == "class_iou",
        score_passes=score_passes(cfg),
        box_pass=n - 1,
    )
    return build_faster_rcnn(base, box_stages=cascade_iou_uniform_stages(cfg), roi_postprocess=postprocess)


def build_model(cfg: CascadeIoUUniformConfig, num_classes: int) -> FasterRCNN:
    """``num_classes`` counts the foreground classes of the dataset (the model adds background)."""
    base = dataclasses.replace(cfg.base, num_classes=num_classes)
    return build_cascade_iou_uniform(dataclasses.replace(cfg, cascade=dataclasses.replace(cfg.cascade, base=base)))


def tiny() -> TrainConfig:
    """The baseline's ``tiny`` with the cascade and the method; nothing else changes."""
    cfg = baseline.tiny()
    model = CascadeIoUUniformConfig(cascade=CascadeRCNNConfig(base=cfg.model))
    return dataclasses.replace(cfg, method="cascade_iou_uniform", model=model)


def r50_fpn_1x() -> TrainConfig:
    """IoU-uniform R-CNN's COCO setting (``iou_uniform``'s ``r50_fpn_1x``: lr 0.01 for 4 images,
    gradient clipping 35) with the cascade; Table 2: 40.9 AP on COCO val."""
    from workbench.methods.iou_uniform import r50_fpn_1x as single

    cfg = single()
    model = CascadeIoUUniformConfig(cascade=CascadeRCNNConfig(base=cfg.model.base))
    return dataclasses.replace(cfg, method="cascade_iou_uniform", model=model)


METHOD = Method(
    name="cascade_iou_uniform",
    paper="IoU-uniform R-CNN: Breaking Through the Limitations of RPN (Zhu et al.)",
    baseline="cascade_rcnn",
    description="Cascade R-CNN whose stages regress and predict the IoU with heads trained on jittered GT boxes "
                "at rising IoU intervals (IoU-uniform R-CNN)",
    model_config_type=CascadeIoUUniformConfig,
    build_model=build_model,
    presets={"tiny": tiny, "r50_fpn_1x": r50_fpn_1x},
    record_views=(*TWO_STAGE_VIEWS, *RECORD_VIEWS),
    run_figures=RUN_FIGURES,
)

__all__ = ["METHOD", "CascadeIoUUniformConfig", "SplitHead", "SplitPredictor", "build_cascade_iou_uniform",
           "build_model", "cascade_iou_uniform_stages", "r50_fpn_1x", "tiny"]
