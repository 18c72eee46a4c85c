"""IoU-uniform R-CNN on Cascade R-CNN: stages, generated samples per stage, detections, presets."""

from __future__ import annotations

import dataclasses
import json
import math

import pytest
import torch
import torch.nn.functional as F
from torchvision.ops import box_iou as tv_box_iou

from workbench.config import train_config_from_dict
from workbench.errors import ConfigError
from workbench.methods import METHODS, build_preset, get_method
from workbench.methods.cascade_rcnn import CascadeRCNNConfig
from workbench.methods.iou_uniform.cascade import CascadeIoUUniformConfig, build_cascade_iou_uniform
from workbench.ops import clip_boxes

from detector_support import detections_by_hand, one_thread, small_faster_rcnn, two_image_batch  # noqa: F401 (one_thread: autouse)


def _model(**overrides):
    torch.manual_seed(0)
    return build_cascade_iou_uniform(CascadeIoUUniformConfig(cascade=CascadeRCNNConfig(base=small_faster_rcnn()), **overrides))


def test_each_parameter_is_registered_once():
    model = _model()
    named = dict(model.named_parameters(remove_duplicate=False))
    assert len(named) == len(list(model.parameters()))
    assert sum(1 for k in model.state_dict() if k.startswith("roi_heads.box_predictor_")) > 0


def test_training_runs_the_cascade_and_the_generated_samples_of_each_stage():
    model = _model().train()
    images, targets = two_image_batch()
    out = model(images, targets, generator=torch.Generator().manual_seed(0))
    assert set(out.losses) == {"loss_rpn_cls", "loss_rpn_box", "loss_rcnn_cls", "loss_rcnn_stage2_cls",
                               "loss_rcnn_stage3_cls"} | {
        f"loss_iouhead{s}_{k}" for s in ("", "_stage2", "_stage3") for k in ("box", "iou")}
    assert all(math.isfinite(float(v.detach())) for v in out.losses.values())
    out.total_loss().backward()
    heads = model.roi_heads
    for k in range(3):
        stage = heads.stages[k]
        assert float(stage.predictor.cls_predictor.cls_score.weight.grad.abs().sum()) > 0
        assert float(heads.stages[3 + k].predictor.iou_pred.weight.grad.abs().sum()) > 0
        assert stage.head._box_head[0] is heads.stages[3 + k].head  # one box head per stage, shared
    passes = out.raw["box_stages"]
    assert [p["name"] for p in passes] == ["stage1", "stage2", "stage3", "generated1", "generated2", "generated3"]
    # stage 2 trains on the boxes stage 1's box head refined (coder weights 10, 10, 5, 5)
    coder = model.roi_heads.stages[0].coder
    start = 0
    for i, size in enumerate(out.raw["image_sizes"]):
        rows = slice(start, start + passes[0]["rois"][i].shape[0])
        start = rows.stop
        refined = clip_boxes(coder.decode(passes[0]["box_regression"][rows].detach(), passes[0]["rois"][i]), size)
        keep = (refined[:, 2] > refined[:, 0]) & (refined[:, 3] > refined[:, 1])
        torch.testing.assert_close(passes[1]["rois"][i], refined[keep])
        # generated samples: stage k's lowest interval and its count per (GT, interval)
        scale = torch.tensor([size[1] / images[i].shape[2], size[0] / images[i].shape[1]] * 2)
        gt = targets[i]["boxes"] * scale
        for k, (low, places, intervals) in enumerate([(0.5, 16, 4), (0.6, 16, 4), (0.7, 20, 3)]):
            rois = passes[3 + k]["rois"][i]
            best = tv_box_iou(gt, rois).max(dim=0).values
            assert bool((best >= low).all()) and rois.shape[0] <= gt.shape[0] * intervals * places
        high = tv_box_iou(gt, passes[5]["rois"][i]).max(dim=0).values
        assert int((high >= 0.9).sum()) >= 10 * gt.shape[0]  # the (0.9, 1.0) interval fills


@pytest.mark.parametrize("repool", [True, False])
def test_detections_average_the_stages_and_multiply_the_last_iou(repool):
    model = _model(repool=repool).eval()
    images, _ = two_image_batch()
    with torch.no_grad():
        out = model(images)
    passes = out.raw["box_stages"]
    assert [p["name"] for p in passes] == ["stage1", "stage2", "stage3"] + (["repool"] if repool else [])
    probs = sum(F.softmax(p["class_logits"], dim=1) for p in passes[:3]) / 3
    scores = probs * passes[-1]["iou"][:, None]
    coder = model.roi_heads.stages[2].coder
    expected = detections_by_hand(out, passes[2], coder, scores)
    for i, (det, hand) in enumerate(zip(out.detections, expected, strict=True)):
        if repool:
            torch.testing.assert_close(passes[3]["rois"][i], hand.refined)
        assert len(det) == hand.scores.numel() > 0
        torch.testing.assert_close(det.boxes, hand.boxes)
        torch.testing.assert_close(det.scores, hand.scores)
        torch.testing.assert_close(det.extras["iou_pred"], passes[-1]["iou"][hand.roi])
        torch.testing.assert_close(det.extras["iou_pred_first"], passes[2]["iou"][hand.roi])


def test_registered_with_presets_and_read_back_from_json():
    assert METHODS["cascade_iou_uniform"] == "workbench.methods.iou_uniform.cascade"
    method = get_method("cascade_iou_uniform")
    assert {v.field for v in method.views("attribute")} == {"iou_pred", "iou_pred_first"}
    base, cfg = build_preset("faster_rcnn", "tiny"), build_preset("cascade_iou_uniform", "tiny")
    assert dataclasses.replace(cfg, method="faster_rcnn", model=base.model) == base
    assert cfg.model.base == base.model
    coco = build_preset("cascade_iou_uniform", "r50_fpn_1x")
    assert coco.optimizer == build_preset("iou_uniform", "r50_fpn_1x").optimizer
    for preset in (cfg, coco):
        assert train_config_from_dict(json.loads(json.dumps(preset.to_dict()))) == preset


def test_stage_settings_are_checked():
    with pytest.raises(ConfigError, match="as many"):
        CascadeIoUUniformConfig(stage_per_interval=(16, 16))
    with pytest.raises(ConfigError, match="interval weights"):
        CascadeIoUUniformConfig(stage_interval_weights=((1.0,), (1.0,) * 4, (1.0,) * 3))


def test_model_overrides_reach_the_baseline_inside_the_cascade():
    from workbench.pipelines.params import train_config

    cfg = train_config("cascade_iou_uniform", "tiny", model_overrides={"min_size": 96, "repool": False,
                                                                       "resample_later_stages": True})
    assert cfg.model.base.min_size == 96 and cfg.model.repool is False and cfg.model.cascade.resample_later_stages
    with pytest.raises(ConfigError, match="unknown model config fields"):
        train_config("cascade_iou_uniform", "tiny", model_overrides={"no_such_field": 1})


@pytest.mark.parametrize("overrides", [{"use_interval_weights": False}, {"repool": False}, {"nms_score": "class"}])
def test_each_switch_trains_and_detects(overrides):
    model = _model(**overrides).train()
    images, targets = two_image_batch()
    out = model(images, targets, generator=torch.Generator().manual_seed(0))
    assert len(out.losses) == 11 and all(math.isfinite(float(v.detach())) for v in out.losses.values())
    out.total_loss().backward()
    model.eval()
    with torch.no_grad():
        det = model(images).detections
    assert all(len(d) > 0 and set(d.extras) == {"iou_pred", "iou_pred_first"} for d in det)
    if overrides.get("repool") is False:
        assert all(torch.equal(d.extras["iou_pred"], d.extras["iou_pred_first"]) for d in det)
