"""IoU-uniform R-CNN's presets and declaration: what they change from the baseline's, the
paper's settings, and that they read back from JSON."""

from __future__ import annotations

import dataclasses
import json

import pytest

from workbench import records as R
from workbench.config import train_config_from_dict
from workbench.methods import METHODS, TWO_STAGE_VIEWS, build_preset, get_method
from workbench.methods.iou_uniform import IoUUniformConfig
from workbench.modeling import FasterRCNNConfig


def test_registered_with_its_presets_and_views():
    assert METHODS["iou_uniform"] == "workbench.methods.iou_uniform"
    method = get_method("iou_uniform")
    assert method.model_config_type is IoUUniformConfig
    assert set(method.presets) == {"tiny", "tiny_scaled", "r50_fpn_voc", "r101_fpn_voc", "r50_fpn_1x"}
    assert method.record_views[: len(TWO_STAGE_VIEWS)] == TWO_STAGE_VIEWS
    attributes = {v.field for v in method.views("attribute", R.DETECTIONS)}
    assert attributes == {"iou_pred", "iou_pred_first"}


def test_tiny_is_the_baselines_with_the_method():
    base, cfg = build_preset("faster_rcnn", "tiny"), build_preset("iou_uniform", "tiny")
    assert cfg.method == "iou_uniform" and cfg.preset == "tiny"
    assert dataclasses.replace(cfg, method="faster_rcnn", model=base.model) == base
    assert cfg.model == IoUUniformConfig(base=base.model)
    # the paper's defaults
    m = cfg.model
    assert m.intervals == ((0.5, 0.6), (0.6, 0.7), (0.7, 0.8), (0.8, 1.0))
    assert (m.per_interval, m.num_candidates, m.interval_weights) == (16, 500, (1.0, 1.5, 3.0, 3.0))
    assert (m.box_smooth_l1_beta, m.iou_smooth_l1_beta) == (1.0, 0.5)
    assert (m.generated_samples, m.sample_count, m.use_interval_weights, m.repool, m.nms_score) == (
        True, "generated", True, True, "class_iou")


@pytest.mark.parametrize("preset,backbone", [("r50_fpn_voc", "resnet50_fpn"), ("r101_fpn_voc", "resnet101_fpn")])
def test_voc_presets_are_the_papers_table_1_setting(preset, backbone):
    cfg = build_preset("iou_uniform", preset)
    base = cfg.model.base
    assert base == FasterRCNNConfig(backbone=backbone, backbone_weights="IMAGENET1K_V1", num_classes=20,
                                    min_size=600, max_size=1000)
    assert (base.box_batch_size_per_image, base.box_positive_fraction) == (512, 0.25)
    assert (base.box_score_thresh, base.box_nms_thresh, base.box_detections_per_img) == (0.05, 0.5, 100)
    o = cfg.optimizer
    assert (o.name, o.lr, o.reference_batch_size) == ("sgd", 0.005, 4)
    assert cfg.schedule.epochs == 12 and cfg.metric == "voc07"
    assert (cfg.data.train_split, cfg.data.val_split) == ("trainval", "test")


def test_coco_preset_changes_the_baselines_lr_and_clipping():
    base, cfg = build_preset("faster_rcnn", "r50_fpn_1x"), build_preset("iou_uniform", "r50_fpn_1x")
    assert cfg.model.base == base.model and cfg.schedule == base.schedule
    assert (cfg.schedule.epochs, cfg.schedule.milestones) == (12, (8, 11))
    assert (cfg.optimizer.lr, cfg.optimizer.reference_batch_size, cfg.optimizer.grad_clip_norm) == (0.01, 4, 35.0)
    assert cfg.effective_lr() == pytest.approx(0.01 * cfg.batch_size / 4)


def test_tiny_scaled_changes_only_the_sample_count():
    tiny, scaled = build_preset("iou_uniform", "tiny"), build_preset("iou_uniform", "tiny_scaled")
    assert scaled.model.per_interval == 2 and scaled.preset == "tiny_scaled"
    assert dataclasses.replace(scaled, preset="tiny", model=dataclasses.replace(scaled.model, per_interval=16)) == tiny


@pytest.mark.parametrize("preset", ["tiny", "tiny_scaled", "r50_fpn_voc", "r101_fpn_voc", "r50_fpn_1x"])
def test_presets_read_back_from_their_json(preset):
    cfg = build_preset("iou_uniform", preset)
    again = train_config_from_dict(json.loads(json.dumps(cfg.to_dict())))
    assert again == cfg and isinstance(again.model.base, FasterRCNNConfig)


def test_r101_backbone_builds():
    from workbench.modeling.backbones import build_backbone

    backbone = build_backbone("resnet101_fpn", None, 3, 16)
    assert backbone.feature_names == ("0", "1", "2", "3", "pool") and backbone.out_channels == 16
    assert len(backbone.body.layer3) == 23  # ResNet-101's third stage
