"""RefineDet's presets: the paper's settings, the miniature regime, and configs that read back."""

from __future__ import annotations

import dataclasses

import pytest

from workbench.config import train_config_from_dict
from workbench.methods import faster_rcnn
from workbench.methods import refinedet as method
from workbench.methods.refinedet.model import RefineDetConfig


def test_voc_presets_follow_the_paper():
    for preset, size in ((method.vgg16_320_voc, 320), (method.vgg16_512_voc, 512)):
        cfg = preset()
        model = cfg.model
        assert cfg.method == "refinedet" and cfg.preset == f"vgg16_{size}_voc" and cfg.metric == "voc07"
        assert model.size == size and model.backbone == "vgg16" and model.num_classes == 20
        assert model.backbone_weights == "IMAGENET1K_FEATURES"
        assert (cfg.optimizer.name, cfg.optimizer.lr, cfg.optimizer.reference_batch_size) == ("sgd", 1e-3, 32)
        assert (cfg.optimizer.momentum, cfg.optimizer.weight_decay, cfg.batch_size) == (0.9, 5e-4, 32)
        # 120k / 80k / 100k iterations of 32 images over VOC07+12 trainval (16,551 images)
        assert cfg.schedule.epochs == 232 and cfg.schedule.milestones == (155, 193)
        assert (model.l2norm_scales, model.anchor_sizes, model.anchor_strides) == (
            (10.0, 8.0), (32.0, 64.0, 128.0, 256.0), (8, 16, 32, 64))
        assert (model.topk_candidates, model.nms_thresh, model.detections_per_img) == (400, 0.45, 200)
        assert (model.filter_threshold, model.neg_pos_ratio, model.box_weights) == (0.99, 3.0, (10.0, 10.0, 5.0, 5.0))
        assert model.refine_anchors and model.negative_filtering and model.transfer_connection


def test_coco_presets():
    for preset, backbone, size in ((method.vgg16_320_coco, "vgg16", 320), (method.vgg16_512_coco, "vgg16", 512),
                                   (method.r101_320_coco, "resnet101", 320)):
        cfg = preset()
        assert cfg.model.backbone == backbone and cfg.model.size == size and cfg.model.num_classes == 80
        assert cfg.metric == "coco" and cfg.data.train_split == "train2017"
        # 400k iterations of 32 images, lr x0.1 after 280k and 360k, in epochs of train2017
        assert cfg.schedule.epochs == 108 and cfg.schedule.milestones == (76, 97)


def test_tiny_is_the_miniature_regime_with_the_light_backbone():
    cfg, baseline = method.tiny(), faster_rcnn.tiny()
    assert cfg.method == "refinedet" and cfg.preset == "tiny"
    # the flip alone, which is what the two-stage baseline's default augmentation is
    assert (cfg.data, cfg.optimizer, cfg.schedule, cfg.batch_size) == (
        dataclasses.replace(baseline.data, augmentation="flip"), baseline.optimizer, baseline.schedule,
        baseline.batch_size)
    model, base = cfg.model, baseline.model
    assert (model.backbone, model.backbone_weights, model.fpn_channels) == (base.backbone, base.backbone_weights,
                                                                            base.fpn_channels)
    assert model.size == base.min_size == 256
    assert model.anchor_sizes == tuple(s for (s,) in base.anchor_sizes)


@pytest.mark.parametrize("preset", ["tiny", "vgg16_512_voc", "r101_320_coco"])
def test_configs_read_back(preset, monkeypatch):
    from workbench import methods

    monkeypatch.setitem(methods.METHODS, "refinedet", "workbench.methods.refinedet")
    cfg = getattr(method, preset)()
    back = train_config_from_dict(cfg.to_dict())
    assert back == cfg and isinstance(back.model, RefineDetConfig)


def test_switches_are_config_fields():
    cfg = dataclasses.replace(method.tiny_model(None), refine_anchors=False, negative_filtering=False,
                              transfer_connection=False, arm_iou_thresh=0.7, arm_negative_iou_thresh=0.3)
    model = method.build_model(dataclasses.replace(cfg, size=64), 2)
    assert model.tcb is None and not model.refine_anchors and not model.negative_filtering
    assert (model.arm_matcher.threshold, model.arm_matcher.negative_threshold) == (0.7, 0.3)
