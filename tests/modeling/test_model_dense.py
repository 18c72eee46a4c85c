"""The dense (single-stage) assembly: focal loss values, losses, training, evaluation, traces."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch
import torchvision

from workbench import records as R
from workbench.losses import sigmoid_focal_loss
from workbench.methods.retinanet import tiny_model as retinanet_tiny
from workbench.methods.ssd import tiny_model as ssd_tiny
from workbench.modeling import (
    AllAnchors,
    DenseDetector,
    TraceRecorder,
    build_retinanet,
    build_ssd,
)
from workbench.modeling.assignment import Assignment, HardNegativeSampler
from workbench.ops import nms_with_ledger
from workbench.structures import Detections

from detector_support import one_thread  # noqa: F401 (one_thread: autouse)


def test_focal_loss_hand_values():
    # logit 0 -> p = 0.5: target 1: -0.25 * 0.5**2 * log(0.5); target 0: -0.75 * 0.5**2 * log(0.5)
    logits = torch.tensor([0.0, 0.0, math.log(3.0)])
    target = torch.tensor([1.0, 0.0, 1.0])
    got = sigmoid_focal_loss(logits, target, alpha=0.25, gamma=2.0)
    # logit log 3 -> p = 0.75, p_t = 0.75: 0.25 * 0.25**2 * -log(0.75)
    expected = torch.tensor([0.25 * 0.25 * math.log(2.0), 0.75 * 0.25 * math.log(2.0), 0.25 * 0.0625 * -math.log(0.75)])
    torch.testing.assert_close(got, expected)
    # gamma 0 and alpha < 0: plain binary cross-entropy
    plain = sigmoid_focal_loss(logits, target, alpha=-1, gamma=0.0)
    torch.testing.assert_close(plain, torch.nn.functional.binary_cross_entropy_with_logits(logits, target, reduction="none"))


def test_focal_loss_equals_torchvision():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(50, 7, generator=g) * 3
    target = (torch.rand(50, 7, generator=g) > 0.8).float()
    got = sigmoid_focal_loss(logits, target)
    torch.testing.assert_close(got, torchvision.ops.sigmoid_focal_loss(logits, target, reduction="none"))


def test_all_anchors_sampler_leaves_out_ignored():
    labels = torch.tensor([2, 0, -1, 1, 0])
    pos, neg = AllAnchors()(Assignment(labels, torch.zeros(5, dtype=torch.int64), torch.zeros(5)))
    assert pos.tolist() == [True, False, False, True, False]
    assert neg.tolist() == [False, True, False, False, True]


def _batch(sizes=((96, 128), (128, 80))):
    g = torch.Generator().manual_seed(3)
    images, targets = [], []
    for i, (h, w) in enumerate(sizes):
        image = torch.rand(3, h, w, generator=g) * 0.2
        boxes = torch.tensor([[10.0, 12.0, 50.0, 60.0], [w - 40.0, h - 36.0, w - 4.0, h - 6.0]])
        for box in boxes.round().long().tolist():
            image[:, box[1]:box[3], box[0]:box[2]] = torch.tensor([0.9, 0.2, 0.1])[:, None, None]
        images.append(image)
        targets.append({"boxes": boxes, "labels": torch.tensor([1, 2 if i == 0 else 1])})
    return images, targets


def _retinanet() -> DenseDetector:
    torch.manual_seed(0)
    cfg = dataclasses.replace(retinanet_tiny(weights=None), num_classes=2, min_size=128, max_size=128)
    return build_retinanet(cfg)


def _ssd() -> DenseDetector:
    torch.manual_seed(0)
    return build_ssd(dataclasses.replace(ssd_tiny(weights=None), num_classes=2, size=128))


@pytest.mark.parametrize("build", [_retinanet, _ssd], ids=["retinanet", "ssd"])
def test_losses_finite_and_decreasing(build):
    model = build().train()
    images, targets = _batch()
    optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    history = []
    for _ in range(6):
        out = model(images, targets)
        assert set(out.losses) == {"loss_dense_cls", "loss_dense_box"}
        assert all(torch.isfinite(v) for v in out.losses.values())
        assert out.detections == []
        loss = out.total_loss()
        history.append(float(loss.detach()))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert history[-1] < history[0]


@pytest.mark.parametrize("build", [_retinanet, _ssd], ids=["retinanet", "ssd"])
def test_eval_returns_detections_and_records_the_nms(build):
    model = build().eval()
    images, targets = _batch()
    with torch.no_grad():
        plain = model(images)
        recorder = TraceRecorder()
        traced = model(images, targets, recorder=recorder)
    assert len(plain.detections) == 2 and all(isinstance(d, Detections) for d in plain.detections)
    assert set(traced.losses) == {"loss_dense_cls", "loss_dense_box"}  # targets in eval: losses too
    for i, (a, b) in enumerate(zip(plain.detections, traced.detections)):
        assert torch.equal(a.boxes, b.boxes) and torch.equal(a.scores, b.scores) and torch.equal(a.labels, b.labels)
        h, w = images[i].shape[-2:]
        if len(a):  # original-image pixels
            assert float(a.boxes[:, 2].max()) <= w + 1e-4 and float(a.boxes[:, 3].max()) <= h + 1e-4
            assert int(a.labels.min()) >= 1
        image = recorder.images[i]
        assert {R.ANCHORS, R.FINAL_CANDIDATES, R.FINAL_NMS, R.DETECTIONS} <= set(image)
        nms = image[R.FINAL_NMS]
        # the ledger reproduces batched NMS on the recorded input, and the detections are its first kept boxes
        ledger = nms_with_ledger(nms["boxes"], nms["scores"], float(nms["iou_threshold"]), nms["idxs"])
        assert torch.equal(ledger.keep, nms["keep"])
        kept = nms["keep"][: len(a)]
        torch.testing.assert_close(nms["boxes"][kept], a.boxes)
        assert torch.equal(nms["idxs"][kept], a.labels)
        suppressed = nms["suppressed_by"] >= 0
        assert bool((nms["suppressor_iou"][suppressed] > float(nms["iou_threshold"])).all())
    assert plain.raw["anchors"][0].shape[1] == 4 and "cls_logits" in plain.raw and "deltas" in plain.raw


def test_hard_negative_mining_bounds_the_negatives():
    model = _ssd().train()
    images, targets = _batch()
    out = model(images, targets)
    assert float(out.losses["loss_dense_cls"].detach()) > 0
    # the sampler keeps at most 3 negatives per positive, chosen by the per-anchor loss
    anchors = torch.cat(out.raw["anchors"])
    assignments, labels, _ = model.assign(anchors, [
        {**t, "boxes": t["boxes"] * torch.tensor([128 / im.shape[-1], 128 / im.shape[-2]] * 2)}
        for t, im in zip(targets, images)
    ])
    losses = torch.rand(labels.shape[1])
    pos, neg = HardNegativeSampler(3.0)(assignments[0], losses=losses)
    assert int(neg.sum()) == min(3 * int(pos.sum()), int((labels[0] == 0).sum()))
    assert float(losses[neg].min()) >= float(losses[(labels[0] == 0) & ~neg].max())


def test_training_without_targets_is_an_error():
    model = _retinanet().train()
    with pytest.raises(ValueError, match="needs targets"):
        model(_batch()[0])


def test_empty_ground_truth_trains():
    model = _retinanet().train()
    images, _ = _batch()
    targets = [{"boxes": torch.zeros((0, 4)), "labels": torch.zeros((0,), dtype=torch.int64)} for _ in images]
    out = model(images, targets)
    assert float(out.losses["loss_dense_box"].detach()) == 0.0 and torch.isfinite(out.losses["loss_dense_cls"])
    out.total_loss().backward()
