"""Training behaviour of the baseline Faster R-CNN (ResNet-18-FPN, small images)."""

from __future__ import annotations

import math

import pytest
import torch

from workbench.modeling import FasterRCNNConfig, build_faster_rcnn
from workbench.structures import DetectorOutput

from detector_support import one_thread, painted_batch, small_faster_rcnn  # noqa: F401 (one_thread: autouse)


LOSS_KEYS = {"loss_rpn_cls", "loss_rpn_box", "loss_rcnn_cls", "loss_rcnn_box"}


def _config(**overrides) -> FasterRCNNConfig:
    """The small model on larger images, with wider heads and more proposals and RoIs."""
    values = dict(
        min_size=128, max_size=160, fpn_channels=64, box_representation_size=256, rpn_pre_nms_top_n_train=500,
        rpn_post_nms_top_n_train=300, rpn_pre_nms_top_n_test=1000, rpn_post_nms_top_n_test=1000,
        box_batch_size_per_image=128,
    )
    return small_faster_rcnn(**{**values, **overrides})


def _batch():
    # the objects are painted so they can be learned
    return painted_batch(((128, 160), (144, 112)), [[[30.0, 20.0, 100.0, 90.0]], [[10.0, 60.0, 70.0, 130.0]]], [[1], [2]])


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return build_faster_rcnn(_config())


def test_training_step_losses_and_backward(model):
    model.train()
    images, targets = _batch()
    out = model(images, targets, generator=torch.Generator().manual_seed(1))
    assert isinstance(out, DetectorOutput)
    assert set(out.losses) == LOSS_KEYS
    assert all(math.isfinite(float(v.detach())) for v in out.losses.values())
    assert out.detections == []
    assert {"rpn_objectness", "rpn_deltas", "proposals", "class_logits", "box_regression"} <= set(out.raw)
    model.zero_grad()
    out.total_loss().backward()
    assert model.rpn.head.cls_logits.weight.grad is not None
    assert float(model.roi_heads.box_predictor.bbox_pred.weight.grad.abs().sum()) > 0
    # trainable_backbone_layers=3 freezes conv1 and layer1
    assert model.backbone.body.conv1.weight.grad is None
    assert model.backbone.body.layer1[0].conv1.weight.requires_grad is False
    assert model.backbone.body.layer4[0].conv1.weight.grad is not None


def test_same_generator_same_losses(model):
    model.train()
    images, targets = _batch()
    with torch.no_grad():
        a = model(images, targets, generator=torch.Generator().manual_seed(3)).losses
        b = model(images, targets, generator=torch.Generator().manual_seed(3)).losses
    for key in LOSS_KEYS:
        assert torch.equal(a[key], b[key])


def test_sgd_steps_lower_the_loss():
    torch.manual_seed(0)
    model = build_faster_rcnn(_config())
    model.train()
    images, targets = _batch()
    # random init with frozen batch norm normalises nothing: plain SGD at a small rate is stable
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.005)
    losses = []
    for _ in range(12):
        optimizer.zero_grad()
        loss = model(images, targets, generator=torch.Generator().manual_seed(0)).total_loss()
        loss.backward()
        optimizer.step()
        losses.append(float(loss.detach()))
    assert all(math.isfinite(v) for v in losses)
    assert sum(losses[-3:]) / 3 < 0.6 * losses[0], losses


def test_image_without_boxes(model):
    model.train()
    images, targets = _batch()
    targets[1] = {"boxes": torch.zeros((0, 4)), "labels": torch.zeros((0,), dtype=torch.int64)}
    out = model(images, targets, generator=torch.Generator().manual_seed(0))
    assert set(out.losses) == LOSS_KEYS
    assert all(math.isfinite(float(v.detach())) for v in out.losses.values())
    out.total_loss().backward()
    empty = [{"boxes": torch.zeros((0, 4)), "labels": torch.zeros((0,), dtype=torch.int64)} for _ in images]
    out = model(images, empty, generator=torch.Generator().manual_seed(0))
    assert float(out.losses["loss_rpn_box"].detach()) == 0.0
    assert float(out.losses["loss_rcnn_box"].detach()) == 0.0
    assert float(out.losses["loss_rpn_cls"].detach()) > 0.0
    out.total_loss().backward()


def test_ignored_boxes_make_no_positives(model):
    model.train()
    images, targets = _batch()
    for t in targets:
        t["ignore"] = torch.ones(1, dtype=torch.bool)
    out = model(images, targets, generator=torch.Generator().manual_seed(0))
    assert float(out.losses["loss_rpn_box"].detach()) == 0.0
    assert float(out.losses["loss_rcnn_box"].detach()) == 0.0
    labels = torch.cat(out.raw["sampled_labels"])
    assert int((labels > 0).sum()) == 0
    for t in targets:
        t["ignore"] = torch.zeros(1, dtype=torch.bool)
    out = model(images, targets, generator=torch.Generator().manual_seed(0))
    assert int((torch.cat(out.raw["sampled_labels"]) > 0).sum()) > 0


def test_eval_returns_detections_in_original_pixels(model):
    model.eval()
    images, targets = _batch()
    with torch.no_grad():
        out = model(images)
        with_targets = model(images, targets)
    assert isinstance(out, DetectorOutput) and out.losses == {}
    assert len(out.detections) == 2
    for det, image in zip(out.detections, images):
        assert det.boxes.shape[1] == 4 and det.labels.dtype == torch.int64
        if len(det):
            assert float(det.boxes[:, 2].max()) <= image.shape[-1] and float(det.boxes[:, 3].max()) <= image.shape[-2]
            assert int(det.labels.min()) >= 1 and int(det.labels.max()) <= 3
    assert set(with_targets.losses) == LOSS_KEYS
    for a, b in zip(out.detections, with_targets.detections):
        assert torch.equal(a.boxes, b.boxes)


def test_training_mode_needs_targets(model):
    model.train()
    images, _ = _batch()
    with pytest.raises(ValueError, match="targets"):
        model(images)
    with pytest.raises(ValueError, match="labels must be int64"):
        model(images, [{"boxes": torch.zeros((1, 4)), "labels": torch.zeros(1)}] * 2)
