"""Workbench SSD against torchvision's ``ssd300_vgg16`` with the same weights; SSD parts."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from torchvision.models.detection import ssd300_vgg16
from torchvision.models.detection.anchor_utils import DefaultBoxGenerator
from torchvision.models.detection.image_list import ImageList

from workbench.methods import build_preset, get_method
from workbench.modeling import (
    DefaultBoxes,
    L2Norm,
    SSDConfig,
    TraceRecorder,
    build_ssd,
    load_torchvision_ssd,
    ssd_config_from_torchvision,
)
from workbench.modeling.ssd import (
    SSD300_RATIOS,
    SSD300_SCALES,
    SSD300_STEPS,
    SSD512_EXTRAS,
    SSD512_RATIOS,
    SSD512_STEPS,
    SSD512_VOC_SCALES,
)

from detector_support import one_thread, preset_training_step, torchvision_dense_parts  # noqa: F401 (one_thread: autouse)


NUM_CLASSES = 5  # foreground; torchvision counts 6 with the background


@pytest.mark.parametrize("steps", [SSD300_STEPS, None])
def test_default_boxes_equal_torchvision(steps):
    sizes = [(38, 38), (19, 19), (10, 10), (5, 5), (3, 3), (1, 1)]
    tv = DefaultBoxGenerator([[int(r) for r in level] for level in SSD300_RATIOS], scales=list(SSD300_SCALES),
                             steps=None if steps is None else list(steps))
    features = [torch.zeros(1, 1, h, w) for h, w in sizes]
    expected = tv(ImageList(torch.zeros(1, 3, 300, 300), [(300, 300)]), features)[0]
    ours = DefaultBoxes(SSD300_RATIOS, SSD300_SCALES, steps)
    got = torch.cat(ours((300, 300), sizes))
    assert got.shape == expected.shape == (8732, 4)  # the paper's SSD300 count
    torch.testing.assert_close(got, expected, rtol=0, atol=0)
    assert ours.num_anchors_per_location() == [4, 6, 6, 6, 4, 4]


def test_default_boxes_hand_values():
    # one level of 2 x 2 cells on a 100 x 100 image, scales 0.2 then 0.8, no ratios:
    # boxes (0.2, 0.2) and (0.4, 0.4) (sqrt(0.2 * 0.8)) centred at 25 / 75 px
    boxes = DefaultBoxes([()], [0.2, 0.8], steps=None)((100, 100), [(2, 2)])[0]
    assert boxes.shape == (8, 4)
    torch.testing.assert_close(boxes[0], torch.tensor([15.0, 15.0, 35.0, 35.0]))
    torch.testing.assert_close(boxes[1], torch.tensor([5.0, 5.0, 45.0, 45.0]))
    torch.testing.assert_close(boxes[2], torch.tensor([65.0, 15.0, 85.0, 35.0]))  # next location: x first


def test_l2norm_scales_unit_vectors():
    norm = L2Norm(3, scale=20.0)
    x = torch.tensor([3.0, 0.0, 4.0]).view(1, 3, 1, 1)
    torch.testing.assert_close(norm(x).flatten(), torch.tensor([12.0, 0.0, 16.0]))
    assert norm.weight.requires_grad


def test_source_map_sizes_300_and_512():
    torch.manual_seed(0)
    small = dataclasses.replace(SSDConfig(num_classes=2), width=0.125)
    model = build_ssd(small)
    with torch.no_grad():
        sizes = [tuple(f.shape[-2:]) for f in model.backbone(torch.zeros(1, 3, 300, 300)).values()]
    assert sizes == [(38, 38), (19, 19), (10, 10), (5, 5), (3, 3), (1, 1)]  # paper Fig. 2
    big = dataclasses.replace(small, size=512, extra_layers=SSD512_EXTRAS, anchor_aspect_ratios=SSD512_RATIOS,
                              anchor_scales=SSD512_VOC_SCALES, anchor_steps=SSD512_STEPS)
    model = build_ssd(big)
    with torch.no_grad():
        sizes = [tuple(f.shape[-2:]) for f in model.backbone(torch.zeros(1, 3, 512, 512)).values()]
    assert sizes == [(64, 64), (32, 32), (16, 16), (8, 8), (4, 4), (2, 2), (1, 1)]
    assert sum(h * w * a for (h, w), a in zip(sizes, model.anchor_generator.num_anchors_per_location())) == 24564


@pytest.fixture(scope="module")
def pair():
    torch.manual_seed(0)
    tv = ssd300_vgg16(weights=None, weights_backbone=None, num_classes=NUM_CLASSES + 1)
    # Random weights give near-uniform softmax scores: spread the class biases so that the score
    # threshold, the per-class top-k and the class-wise NMS all matter.
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for conv in tv.head.classification_head.module_list:
            conv.bias.copy_(torch.randn(conv.bias.shape, generator=g) * 2)
        for conv in tv.head.regression_head.module_list:
            conv.weight.mul_(3)
    tv.eval()
    return tv, load_torchvision_ssd(tv)


def test_config_copies_torchvision(pair):
    tv, wb = pair
    cfg = ssd_config_from_torchvision(tv)
    assert cfg.num_classes == NUM_CLASSES and cfg.size == 300
    assert cfg.anchor_scales == SSD300_SCALES and cfg.anchor_steps == SSD300_STEPS
    assert (cfg.iou_thresh, cfg.neg_pos_ratio, cfg.box_weights) == (0.5, 3.0, (10.0, 10.0, 5.0, 5.0))
    assert cfg == SSDConfig(num_classes=NUM_CLASSES)  # the defaults are torchvision's
    assert sum(v.numel() for v in tv.state_dict().values()) == sum(v.numel() for v in wb.state_dict().values())


def test_same_detections_as_torchvision(pair):
    tv, wb = pair
    g = torch.Generator().manual_seed(2)
    images = [torch.rand(3, 240, 320, generator=g), torch.rand(3, 300, 200, generator=g), torch.rand(3, 180, 180, generator=g)]
    with torch.no_grad():
        expected = tv(images)
        recorder = TraceRecorder()
        got = wb(images, recorder=recorder)
    for i, (tv_det, wb_det) in enumerate(zip(expected, got.detections)):
        assert len(tv_det["boxes"]) == len(wb_det) > 0
        assert torch.equal(tv_det["labels"], wb_det.labels)
        torch.testing.assert_close(wb_det.boxes, tv_det["boxes"], atol=1e-3, rtol=0)
        torch.testing.assert_close(wb_det.scores, tv_det["scores"], atol=1e-4, rtol=0)
        nms = recorder.images[i]["rcnn_nms"]
        assert int((nms["suppressed_by"] >= 0).sum()) > 0
    assert len({int(l) for det in expected for l in det["labels"]}) >= 3


def test_same_losses_as_torchvision(pair):
    """Hard negative mining and the normalisation by positives agree with torchvision's SSD on
    targets whose best default boxes do not collide (where torchvision's matcher and the
    workbench's bipartite matcher agree)."""
    tv, wb = pair
    g = torch.Generator().manual_seed(5)
    images = [torch.rand(3, 240, 320, generator=g), torch.rand(3, 300, 200, generator=g)]
    targets = [
        {"boxes": torch.tensor([[20.0, 30.0, 120.0, 150.0], [150.0, 40.0, 310.0, 230.0]]), "labels": torch.tensor([1, 3])},
        {"boxes": torch.tensor([[10.0, 10.0, 90.0, 200.0]]), "labels": torch.tensor([5])},
    ]
    from torchvision.ops import box_iou

    net_targets, head, anchors = torchvision_dense_parts(tv, images, targets)
    with torch.no_grad():
        matched = [tv.proposal_matcher(box_iou(t["boxes"], a)) for t, a in zip(net_targets, anchors)]
        expected = tv.compute_loss(net_targets, head, anchors, matched)
        got = wb(images, targets).losses
    torch.testing.assert_close(got["loss_dense_cls"], expected["classification"], rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(got["loss_dense_box"], expected["bbox_regression"], rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("preset", ["tiny", "tiny_vgg16"])
def test_tiny_presets_train_a_step(preset):
    cfg = build_preset("ssd", preset)
    model_cfg = dataclasses.replace(cfg.model, size=128)
    model, out, loss = preset_training_step("ssd", model_cfg, lr=1e-3)
    assert torch.isfinite(loss) and float(out.losses["loss_dense_box"].detach()) > 0
    assert all(torch.isfinite(p).all() for p in model.parameters())


def test_voc_presets_follow_the_paper_schedule():
    for name, size in (("ssd300_voc", 300), ("ssd512_voc", 512)):
        cfg = build_preset("ssd", name)
        assert cfg.model.size == size and cfg.metric == "voc07"
        assert (cfg.optimizer.lr, cfg.optimizer.reference_batch_size, cfg.optimizer.weight_decay) == (1e-3, 32, 5e-4)
        # 120k / 80k / 100k iterations of 32 images over VOC07+12 trainval (16,551 images)
        assert cfg.schedule.epochs == 232 and cfg.schedule.milestones == (155, 193)
    assert get_method("ssd").train_transforms is not None


def test_frozen_blocks_carry_over():
    tv = ssd300_vgg16(weights=None, weights_backbone=None, num_classes=3)
    for layer in list(tv.backbone.features)[:10]:  # conv1_x and conv2_x: the two lowest blocks
        for parameter in layer.parameters():
            parameter.requires_grad_(False)
    assert ssd_config_from_torchvision(tv).trainable_backbone_layers == 3
    wb = load_torchvision_ssd(tv)
    trainable = sum(p.numel() for p in wb.parameters() if p.requires_grad)
    assert trainable == sum(p.numel() for p in tv.parameters() if p.requires_grad)
