"""Workbench RetinaNet against torchvision's ``retinanet_resnet50_fpn`` with the same weights."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from torchvision.models.detection import retinanet_resnet50_fpn

from workbench.methods import build_preset
from workbench.methods.retinanet import tiny_model
from workbench.modeling import (
    RetinaNetConfig,
    TraceRecorder,
    build_retinanet,
    load_torchvision_retinanet,
    retinanet_config_from_torchvision,
)

from detector_support import one_thread, preset_training_step, torchvision_dense_parts  # noqa: F401 (one_thread: autouse)


NUM_CLASSES = 4  # foreground; torchvision counts 5 with its background column


def _images(seed: int) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [torch.rand(3, 200, 260, generator=g), torch.rand(3, 256, 180, generator=g), torch.rand(3, 224, 224, generator=g)]


@pytest.fixture(scope="module")
def pair():
    torch.manual_seed(0)
    tv = retinanet_resnet50_fpn(
        weights=None, weights_backbone=None, num_classes=NUM_CLASSES + 1, min_size=224, max_size=288,
    )
    # Random weights score every anchor near the 0.01 prior: spread the logits (including the
    # background column 0, which torchvision scores like any class) and the offsets so that the
    # threshold, the per-level top-k, the decoding and the class-wise NMS all matter.
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        logits = tv.head.classification_head.cls_logits
        logits.weight.mul_(30)
        logits.bias.copy_(torch.randn(logits.bias.shape, generator=g) * 0.7 - 1.0)
        tv.head.regression_head.bbox_reg.weight.mul_(10)
    tv.eval()
    return tv, load_torchvision_retinanet(tv)


def test_config_copies_torchvision(pair):
    tv, wb = pair
    cfg = retinanet_config_from_torchvision(tv)
    assert cfg.num_classes == NUM_CLASSES and cfg.background_column
    assert cfg.backbone == "resnet50_fpn" and cfg.backbone_returned_layers == (2, 3, 4)
    assert cfg.anchor_sizes[0] == (32.0, 40.0, 50.0)  # int(32 * 2 ** (1/3)), int(32 * 2 ** (2/3))
    assert cfg.anchor_sizes == RetinaNetConfig().anchor_sizes
    assert (cfg.fg_iou_thresh, cfg.bg_iou_thresh, cfg.allow_low_quality_matches) == (0.5, 0.4, True)
    assert (cfg.score_thresh, cfg.topk_candidates, cfg.nms_thresh, cfg.detections_per_img) == (0.05, 1000, 0.5, 300)
    assert not wb.training
    tv_state = {k: v for k, v in tv.state_dict().items() if not k.endswith("num_batches_tracked")}
    assert sum(v.numel() for v in tv_state.values()) == sum(v.numel() for v in wb.state_dict().values())


def test_default_head_bias_is_the_prior():
    model = build_retinanet(dataclasses.replace(tiny_model(weights=None), num_classes=3))
    expected = -torch.log(torch.tensor((1 - 0.01) / 0.01))
    torch.testing.assert_close(model.head.cls_logits.bias, expected.expand_as(model.head.cls_logits.bias))
    assert model.head.cls_logits.out_channels == 9 * 3  # one column per foreground class


@pytest.fixture(scope="module")
def outputs(pair):
    tv, wb = pair
    images = _images(2)
    with torch.no_grad():
        expected = tv(images)
        recorder = TraceRecorder()
        got = wb(images, recorder=recorder)
    return expected, got, recorder


def test_same_detections_as_torchvision(outputs):
    expected, got, _ = outputs
    total = 0
    for tv_det, wb_det in zip(expected, got.detections):
        assert len(tv_det["boxes"]) == len(wb_det)
        assert torch.equal(tv_det["labels"], wb_det.labels)
        torch.testing.assert_close(wb_det.boxes, tv_det["boxes"], atol=1e-3, rtol=0)
        torch.testing.assert_close(wb_det.scores, tv_det["scores"], atol=1e-4, rtol=0)
        total += len(wb_det)
    assert total > 100  # the perturbation leaves plenty of detections to compare
    assert len({int(l) for det in expected for l in det["labels"]}) >= 3


def test_trace_records_the_final_nms(outputs):
    _, got, recorder = outputs
    for i, det in enumerate(got.detections):
        nms = recorder.images[i]["rcnn_nms"]
        assert int((nms["suppressed_by"] >= 0).sum()) > 0  # something was suppressed
        assert torch.equal(nms["idxs"][nms["keep"][: len(det)]], det.labels)


def test_same_losses_as_torchvision(pair):
    """Both models in evaluation mode (batch norm statistics fixed) score the same targets."""
    tv, wb = pair
    images = _images(4)[:2]
    targets = [
        {"boxes": torch.tensor([[20.0, 30.0, 120.0, 150.0], [100.0, 40.0, 250.0, 190.0]]), "labels": torch.tensor([1, 3])},
        {"boxes": torch.tensor([[10.0, 10.0, 90.0, 200.0]]), "labels": torch.tensor([4])},
    ]
    net_targets, head, anchors = torchvision_dense_parts(tv, images, targets)
    with torch.no_grad():
        expected = tv.compute_loss(net_targets, head, anchors)
        got = wb(images, targets).losses
    torch.testing.assert_close(got["loss_dense_cls"], expected["classification"], rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(got["loss_dense_box"], expected["bbox_regression"], rtol=1e-4, atol=1e-6)


def test_tiny_preset_trains_a_step():
    cfg = build_preset("retinanet", "tiny")
    assert cfg.model.backbone == "mobilenet_v2_fpn"
    model_cfg = dataclasses.replace(cfg.model, backbone_weights=None, backbone_norm="bn", min_size=96, max_size=128)
    model, _, loss = preset_training_step("retinanet", model_cfg, lr=0.01)
    assert torch.isfinite(loss)
    assert all(torch.isfinite(p).all() for p in model.parameters())
