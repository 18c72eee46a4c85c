"""Cascade R-CNN (Cai and Vasconcelos, "Cascade R-CNN: Delving into High Quality Object
Detection", CVPR 2018), a baseline of the IoU-uniform paper (``../shared/METHODS.md``).

The baseline Faster R-CNN with three class-agnostic box stages in sequence, each trained on the
boxes the previous one refined, at rising IoU thresholds: 0.5 / 0.6 / 0.7, offsets coded with
weights (10, 10, 5, 5) / (20, 20, 10, 10) / (30, 30, 15, 15), losses weighted 1 / 0.5 / 0.25
(``loss_rcnn_*``, ``loss_rcnn_stage2_*``, ``loss_rcnn_stage3_*``). The first stage samples the
proposals as the baseline does (512 RoIs, a quarter positives, GT boxes added); the later ones
train on every box the previous stage refined (detectron2's ``CascadeROIHeads``), or sample again
with ``resample_later_stages`` (mmdetection's ``CascadeRoIHead``). At inference each stage
re-pools the previous stage's boxes; the class scores are averaged over the stages and the boxes
are the last stage's. One RoIAlign pooler serves every stage.

Presets (:meth:`workbench.methods.Method.extended`): ``tiny`` (the baseline's miniature regime
with the cascade) and ``r50_fpn_1x`` (the baseline's COCO 1x, SGD lr 0.02 for 16 images, 12
epochs, steps 8 and 11, with the cascade, as detectron2's and mmdetection's Cascade R-CNN R50-FPN
1x; paper Table 2's Cascade R-CNN R50-FPN: 40.4 AP on COCO val in the IoU-uniform paper).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Sequence

from workbench.errors import ConfigError
from workbench.methods import faster_rcnn as baseline
from workbench.modeling import AllCandidates, BoxStage, FasterRCNN, FasterRCNNConfig, build_faster_rcnn
from workbench.modeling.faster_rcnn import build_box_pooler, build_box_postprocess, build_box_stage


@dataclass(frozen=True)
class CascadeRCNNConfig:
    """The baseline's config (``base``) plus the cascade's stages (one entry per stage).

    ``base.box_weights``, ``box_fg_iou_thresh`` / ``box_bg_iou_thresh`` and ``rcnn_loss_weight``
    are replaced by the per-stage values; ``score_stages`` are the stages whose class scores are
    averaged at inference (default all).
    """

    base: FasterRCNNConfig = field(default_factory=FasterRCNNConfig)
    stage_iou_thresholds: tuple[float, ...] = (0.5, 0.6, 0.7)
    stage_box_weights: tuple[tuple[float, float, float, float], ...] = (
        (10.0, 10.0, 5.0, 5.0), (20.0, 20.0, 10.0, 10.0), (30.0, 30.0, 15.0, 15.0),
    )
    stage_loss_weights: tuple[float, ...] = (1.0, 0.5, 0.25)
    resample_later_stages: bool = False
    score_stages: tuple[int, ...] | None = None

    def __post_init__(self) -> None:
        n = len(self.stage_iou_thresholds)
        if n < 1 or len(self.stage_box_weights) != n or len(self.stage_loss_weights) != n:
            raise ConfigError(f"the cascade needs as many box weights and loss weights as IoU thresholds ({n}), "
                              f"got {len(self.stage_box_weights)} and {len(self.stage_loss_weights)}")
        if self.score_stages is not None and any(not -n <= k < n for k in self.score_stages):
            raise ConfigError(f"score_stages {self.score_stages} must index the {n} stages")


def stage_loss_name(k: int) -> str:
    """The ``<stage>`` of stage ``k``'s loss names (0-based): ``rcnn``, ``rcnn_stage2``, ..."""
    return "rcnn" if k == 0 else f"rcnn_stage{k + 1}"


def cascade_stages(cfg: CascadeRCNNConfig):
    """The box stages factory ``(in_channels, featmap_names) -> [BoxStage]`` of ``cfg``."""
    base = cfg.base

    def stages(in_channels: int, names: Sequence[str]) -> list[BoxStage]:
        pooler = build_box_pooler(base, names)
        built = []
        settings = zip(cfg.stage_iou_thresholds, cfg.stage_box_weights, cfg.stage_loss_weights)
        for k, (iou, weights, loss_weight) in enumerate(settings):
            plain = k > 0 and not cfg.resample_later_stages
            built.append(build_box_stage(
                base, in_channels, names, pooler=pooler, box_weights=tuple(weights), iou_thresholds=(iou, iou),
                class_agnostic=True, loss_name=stage_loss_name(k), loss_weight=loss_weight,
                sampler=AllCandidates() if plain else None, add_gt_to_proposals=False if plain else None,
                name=f"stage{k + 1}",
            ))
        return built

    return stages


def build_cascade_rcnn(cfg: CascadeRCNNConfig) -> FasterRCNN:
    """Faster R-CNN of ``cfg.base`` with the cascade's box stages and score averaging."""
    score_stages = cfg.score_stages if cfg.score_stages is not None else tuple(range(len(cfg.stage_iou_thresholds)))
    return build_faster_rcnn(cfg.base, box_stages=cascade_stages(cfg),
                             roi_postprocess=build_box_postprocess(cfg.base, score_stages))


def build_model(cfg: CascadeRCNNConfig, num_classes: int) -> FasterRCNN:
    """``num_classes`` counts the foreground classes of the dataset (the model adds background)."""
    return build_cascade_rcnn(dataclasses.replace(cfg, base=dataclasses.replace(cfg.base, num_classes=num_classes)))


def cascade_model(preset: str, base: FasterRCNNConfig) -> CascadeRCNNConfig:
    """The baseline preset's model with the cascade's three stages (the same in every preset)."""
    return CascadeRCNNConfig(base=base)


METHOD = baseline.METHOD.extended(
    "cascade_rcnn", "Cascade R-CNN: three box stages at IoU 0.5 / 0.6 / 0.7, each refining the previous one's boxes",
    CascadeRCNNConfig, build_model, cascade_model, presets=("tiny", "r50_fpn_1x"),
    paper="Cascade R-CNN: Delving into High Quality Object Detection (Cai and Vasconcelos, CVPR 2018)",
)

__all__ = ["METHOD", "CascadeRCNNConfig", "build_cascade_rcnn", "build_model", "cascade_model", "cascade_stages",
           "stage_loss_name"]
