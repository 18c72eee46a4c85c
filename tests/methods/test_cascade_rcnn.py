"""Cascade R-CNN as a method: its stages, losses, score averaging and presets."""

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
from workbench.methods import METHODS, TWO_STAGE_VIEWS, build_preset, get_method
from workbench.methods.cascade_rcnn import CascadeRCNNConfig, build_cascade_rcnn
from workbench.modeling import AllCandidates, RandomSampler

from detector_support import detections_by_hand, one_thread, small_faster_rcnn, two_image_batch  # noqa: F401 (one_thread: autouse)


def _model(**overrides):
    torch.manual_seed(0)
    return build_cascade_rcnn(CascadeRCNNConfig(base=small_faster_rcnn(), **overrides))


def test_three_stages_with_the_papers_settings():
    model = _model()
    stages = model.roi_heads.stages
    assert [s.coder.weights for s in stages] == [(10.0, 10.0, 5.0, 5.0), (20.0, 20.0, 10.0, 10.0),
                                                 (30.0, 30.0, 15.0, 15.0)]
    assert [(s.matcher.high, s.matcher.low) for s in stages] == [(0.5, 0.5), (0.6, 0.6), (0.7, 0.7)]
    assert [s.loss_weight for s in stages] == [1.0, 0.5, 0.25]
    assert [s.predictor.bbox_pred.out_features for s in stages] == [4, 4, 4]  # class-agnostic
    assert stages[0].sampler == RandomSampler(64, 0.25) and stages[0].add_gt_to_proposals
    assert all(isinstance(s.sampler, AllCandidates) and not s.add_gt_to_proposals for s in stages[1:])
    assert stages[0].pooler is stages[1].pooler is stages[2].pooler
    assert model.roi_heads.postprocess.score_stages == (0, 1, 2)
    resampled = _model(resample_later_stages=True).roi_heads.stages
    assert all(s.sampler == RandomSampler(64, 0.25) and s.add_gt_to_proposals for s in resampled)


@pytest.mark.parametrize("resample", [False, True])
def test_a_training_step_gives_finite_weighted_losses(resample):
    model = _model(resample_later_stages=resample).train()
    images, targets = two_image_batch()
    out = model(images, targets, generator=torch.Generator().manual_seed(0))
    assert set(out.losses) == {"loss_rpn_cls", "loss_rpn_box"} | {
        f"loss_{s}_{k}" for s in ("rcnn", "rcnn_stage2", "rcnn_stage3") for k in ("cls", "box")}
    assert all(math.isfinite(float(v.detach())) for v in out.losses.values())
    out.total_loss().backward()
    for k in ("", "_1", "_2"):
        assert float(getattr(model.roi_heads, f"box_predictor{k}").bbox_pred.weight.grad.abs().sum()) > 0
    # the third stage labels its boxes at IoU 0.7
    third = out.raw["box_stages"][2]
    for i, size in enumerate(out.raw["image_sizes"]):
        scale = torch.tensor([size[1] / images[i].shape[2], size[0] / images[i].shape[1]] * 2)
        best = tv_box_iou(targets[i]["boxes"] * scale, third["rois"][i]).max(dim=0).values
        labels = third["sampled_labels"][i]
        assert bool((labels[best >= 0.7 + 1e-4] > 0).all()) and bool((labels[best < 0.7 - 1e-4] == 0).all())


def test_stage_loss_weights_scale_the_losses():
    weighted = _model()
    plain = _model(stage_loss_weights=(1.0, 1.0, 1.0))
    plain.load_state_dict(weighted.state_dict())
    images, targets = two_image_batch()
    with torch.no_grad():
        a = weighted.train()(images, targets, generator=torch.Generator().manual_seed(1)).losses
        b = plain.train()(images, targets, generator=torch.Generator().manual_seed(1)).losses
    for key, factor in [("loss_rcnn_box", 1.0), ("loss_rcnn_stage2_cls", 0.5), ("loss_rcnn_stage3_box", 0.25)]:
        assert float(a[key]) == pytest.approx(factor * float(b[key]), rel=1e-6)


def test_detections_average_the_class_scores_of_the_three_stages():
    model = _model().eval()
    images, _ = two_image_batch()
    with torch.no_grad():
        out = model(images)
    passes = out.raw["box_stages"]
    scores = sum(F.softmax(p["class_logits"], dim=1) for p in passes) / 3
    last = model.roi_heads.stages[2]
    for det, hand in zip(out.detections, detections_by_hand(out, passes[2], last.coder, scores), strict=True):
        assert len(det) == hand.scores.numel() > 0
        torch.testing.assert_close(det.boxes, hand.boxes)
        torch.testing.assert_close(det.scores, hand.scores)
        assert torch.equal(det.labels, hand.labels)


def test_registered_with_presets_from_the_baseline():
    assert METHODS["cascade_rcnn"] == "workbench.methods.cascade_rcnn"
    method = get_method("cascade_rcnn")
    assert method.model_config_type is CascadeRCNNConfig and method.record_views == TWO_STAGE_VIEWS
    for preset in ("tiny", "r50_fpn_1x"):
        base, cfg = build_preset("faster_rcnn", preset), build_preset("cascade_rcnn", preset)
        assert dataclasses.replace(cfg, method="faster_rcnn", model=base.model) == base
        assert cfg.model == CascadeRCNNConfig(base=base.model)
        assert train_config_from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg


def test_bad_stage_settings_are_refused():
    with pytest.raises(ConfigError, match="as many"):
        CascadeRCNNConfig(stage_loss_weights=(1.0, 0.5))
    with pytest.raises(ConfigError, match="score_stages"):
        CascadeRCNNConfig(score_stages=(3,))
