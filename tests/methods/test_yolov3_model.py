"""The YOLOv3-style detector: Darknet-53 and the neck, anchors and coding, the assignment, the
loss against hand-evaluated terms, the post-processing through the ledger, letterboxing, the
augmentation and the presets."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torchvision.ops import batched_nms

from workbench.data.sample import Sample
from workbench.losses import sigmoid_focal_loss
from workbench.losses.anchor import binary_anchor_loss
from workbench.methods import yolov3
from workbench.methods.yolov3.assignment import assign, best_anchor_at_centre, shape_iou
from workbench.methods.yolov3.coding import YOLOAnchors, YOLOV3_ANCHORS, decode, encode, shapes_per_level
from workbench.methods.yolov3.losses import YOLOLoss, YOLOTargets
from workbench.methods.yolov3.model import YOLOv3Config, anchor_shape_index, build_yolov3
from workbench.methods.yolov3.networks import Darknet53, YOLOv3Backbone
from workbench.methods.yolov3.transforms import HSVDistort, JitterCrop, random_scale, yolo_train_transform
from workbench.modeling import TraceRecorder

from detector_support import one_thread  # noqa: F401 (autouse)
from detector_support import three_box_batch as _batch

SMALL = YOLOv3Config(num_classes=3, darknet_width=0.125, neck_channels=(16, 32, 64), size=128)
SHAPES = torch.tensor(YOLOV3_ANCHORS, dtype=torch.float32)


# ------------------------------------------------------------------------------------ networks


def test_darknet53_has_52_convolutions_and_three_outputs():
    net = Darknet53()
    convs = [m for m in net.modules() if isinstance(m, nn.Conv2d)]
    assert len(convs) == 52  # Darknet-53 is these 52 plus the classifier
    params = sum(p.numel() for p in net.parameters())
    assert 40.5e6 < params < 40.7e6  # 41.6M with the 1024 x 1000 classifier
    out = Darknet53(width=0.25)(torch.rand(1, 3, 64, 96))  # stem of 8 channels
    assert [tuple(v.shape[1:]) for v in out.values()] == [(64, 8, 12), (128, 4, 6), (256, 2, 3)]
    assert net.out_channels == (256, 512, 1024)


def test_the_neck_gives_strides_8_16_32_with_darknet_channels():
    body = Darknet53(width=0.125)
    backbone = YOLOv3Backbone(body, body.out_channels, (16, 32, 64))
    out = list(backbone(torch.rand(2, 3, 128, 96)).values())
    assert [tuple(o.shape) for o in out] == [(2, 32, 16, 12), (2, 64, 8, 6), (2, 128, 4, 3)]
    assert YOLOv3Backbone(Darknet53(), (256, 512, 1024), (128, 256, 512)).out_channels == (256, 512, 1024)


# ------------------------------------------------------------------------------ anchors, coding


def test_anchors_are_centred_on_the_cells_with_three_shapes_per_level():
    shapes = shapes_per_level(YOLOV3_ANCHORS)
    assert shapes[0] == ((10, 13), (16, 30), (33, 23)) and shapes[2][-1] == (373, 326)
    gen = YOLOAnchors(shapes)
    levels = gen((64, 96), [(8, 12), (4, 6), (2, 3)])
    assert [len(a) for a in levels] == [8 * 12 * 3, 4 * 6 * 3, 2 * 3 * 3]
    first = levels[1][:3]  # level stride 16, cell (0, 0)
    torch.testing.assert_close(0.5 * (first[:, :2] + first[:, 2:]), torch.full((3, 2), 8.0))
    torch.testing.assert_close(first[:, 2:] - first[:, :2], torch.tensor(shapes[1]))
    # (level, y, x, anchor) order: the fourth anchor of level 0 is at cell x = 1
    torch.testing.assert_close(0.5 * (levels[0][3, 0] + levels[0][3, 2]), torch.tensor(12.0))
    index = anchor_shape_index(torch.cat(levels), SHAPES)
    assert index[:3].tolist() == [0, 1, 2] and index[-3:].tolist() == [6, 7, 8]


def test_coding_by_hand_and_round_trip():
    anchor = torch.tensor([[16.0, 16.0, 32.0, 48.0]])  # centre (24, 32), 16 x 32, stride 16
    gt = torch.tensor([[20.0, 20.0, 52.0, 36.0]])  # centre (36, 28), 32 x 16
    stride = torch.tensor([16.0])
    target = encode(gt, anchor, stride)
    # cell top-left (16, 24): offsets (36 - 16) / 16, (28 - 24) / 16; sizes log 2, log 1/2
    torch.testing.assert_close(target, torch.tensor([[1.25, 0.25, math.log(2.0), math.log(0.5)]]))
    inside = torch.tensor([[30.0, 30.0, 44.0, 36.0]])  # centre (37, 33)
    t = encode(inside, torch.tensor([[24.0, 24.0, 40.0, 40.0]]), stride)  # in the cell [24, 40) x [24, 40)
    raw = torch.cat([torch.logit(t[:, :2]), t[:, 2:]], dim=1)
    torch.testing.assert_close(decode(raw, torch.tensor([[24.0, 24.0, 40.0, 40.0]]), stride), inside)


# -------------------------------------------------------------------------------- assignment


def test_shape_iou_by_hand():
    iou = shape_iou(torch.tensor([[100.0, 80.0]]), torch.tensor([[116.0, 90.0], [50.0, 160.0]]))
    torch.testing.assert_close(iou, torch.tensor([[8000 / (116 * 90), 50 * 80 / (8000 + 8000 - 4000)]]))


def _anchors(size=(128, 128)):
    gen = YOLOAnchors(shapes_per_level(YOLOV3_ANCHORS))
    per_level = gen(size, [(size[0] // s, size[1] // s) for s in (8, 16, 32)])
    anchors = torch.cat(per_level)
    return anchors, anchor_shape_index(anchors, SHAPES)


def test_each_gt_goes_to_its_best_shape_at_its_centre_cell():
    anchors, shape = _anchors()
    gt = torch.tensor([[20.0, 30.0, 120.0, 110.0], [50.0, 50.0, 60.0, 62.0]])  # 100 x 80 at (70, 70); 10 x 12 at (55, 56)
    chosen = best_anchor_at_centre(anchors, shape, SHAPES, gt)
    # GT 0: shape (116, 90) = index 6, level 2 (stride 32, 4 x 4 cells), cell (2, 2)
    offset2 = (16 * 16 + 8 * 8) * 3
    assert int(chosen[0]) == offset2 + (2 * 4 + 2) * 3 + 0
    # GT 1: shape (10, 13) = index 0, level 0 (stride 8, 16 x 16 cells), cell x 6, y 7
    assert int(chosen[1]) == (7 * 16 + 6) * 3 + 0


def test_ignored_predictions_positives_and_collisions():
    anchors, shape = _anchors()
    gt = torch.tensor([[20.0, 30.0, 120.0, 110.0], [22.0, 32.0, 118.0, 108.0], [0.0, 0.0, 10.0, 12.0]])
    labels = torch.tensor([1, 2, 3])
    predicted = anchors.clone()
    predicted[5] = torch.tensor([21.0, 31.0, 119.0, 109.0])  # overlaps GT 0 far above 0.5
    a = assign(anchors, shape, SHAPES, predicted, gt, labels, gt_ignore=torch.tensor([False, False, True]),
               ignore_thresh=0.5)
    # GT 0 and GT 1 share the anchor: the later one (GT 1, label 2) keeps it; GT 2 is ignored
    assert int((a.labels > 0).sum()) == 1
    positive = int(torch.where(a.labels > 0)[0])
    assert int(a.labels[positive]) == 2 and int(a.matched_gt[positive]) == 1
    assert int(a.labels[5]) == -1
    assert float(a.max_iou[5]) > 0.5
    empty = assign(anchors, shape, SHAPES, predicted, torch.zeros(0, 4), torch.zeros(0, dtype=torch.int64), None, 0.5)
    assert (empty.labels == 0).all()


# -------------------------------------------------------------------------------------- loss


def test_loss_terms_by_hand():
    preds = {
        "obj_logits": torch.tensor([[[0.5], [-1.0], [2.0]]]),
        "cls_logits": torch.tensor([[[1.0, -1.0], [0.0, 0.0], [0.3, 0.2]]]),
        "deltas": torch.tensor([[[0.0, 1.0, 0.1, -0.2], [0.0, 0.0, 0.0, 0.0], [0.0, 0.0, 0.0, 0.0]]]),
    }
    labels = torch.tensor([[2, 0, -1]])
    box_targets = torch.zeros(1, 3, 4)
    box_targets[0, 0] = torch.tensor([0.25, 0.75, 0.0, 0.3])
    box_scale = torch.tensor([[1.9, 0.0, 0.0]])
    targets = YOLOTargets(labels, box_targets, box_scale, labels > 0, labels == 0)
    per = YOLOLoss().per_anchor(preds, targets)

    def bce(z, t):
        p = 1 / (1 + math.exp(-z))
        return -(t * math.log(p) + (1 - t) * math.log(1 - p))

    sig = lambda z: 1 / (1 + math.exp(-z))  # noqa: E731
    torch.testing.assert_close(per["obj"], torch.tensor([[bce(0.5, 1), bce(-1.0, 0), 0.0]]))
    torch.testing.assert_close(per["cls"], torch.tensor([[bce(1.0, 0) + bce(-1.0, 1), 0.0, 0.0]]))
    squared = (sig(0.0) - 0.25) ** 2 + (sig(1.0) - 0.75) ** 2 + 0.1**2 + (-0.2 - 0.3) ** 2
    torch.testing.assert_close(per["box"], torch.tensor([[0.5 * 1.9 * squared, 0.0, 0.0]]))
    reduced = YOLOLoss(obj_weight=2.0)(preds, targets)
    torch.testing.assert_close(reduced["loss_yolo_obj"], 2.0 * per["obj"].sum())
    weighted = YOLOLoss().reduce(per, {"obj": torch.tensor([[0.5, 0.25, 1.0]])})
    torch.testing.assert_close(weighted["loss_yolo_obj"], 0.5 * per["obj"][0, 0] + 0.25 * per["obj"][0, 1])


def test_objectness_loss_variants():
    logits = torch.tensor([-2.0, 0.0, 1.5, -0.3])
    target = torch.tensor([0.0, 1.0, 0.0, 1.0])
    assert build_yolov3(dataclasses.replace(SMALL, objectness_loss="focal")).loss.objectness_loss(logits, target).equal(
        sigmoid_focal_loss(logits, target, 0.25, 2.0))
    got = binary_anchor_loss(logits, target, gamma=0.5)
    p = torch.sigmoid(logits)
    ce = F.binary_cross_entropy_with_logits(logits, target, reduction="none")
    expected = torch.where(target > 0, ce, (2 * p) ** 0.5 * ce)  # positives plain, negatives (2p)^gamma
    torch.testing.assert_close(got, expected)
    with pytest.raises(Exception, match="objectness_loss"):
        build_yolov3(dataclasses.replace(SMALL, objectness_loss="hinge"))


# --------------------------------------------------------------------------- the whole model


@pytest.fixture(scope="module")
def small_model():
    torch.manual_seed(0)
    return build_yolov3(SMALL)


def test_training_gives_the_three_losses_and_finite_gradients(small_model):
    images, targets = _batch()
    small_model.train()
    out = small_model(images, targets)
    assert set(out.losses) == {"loss_yolo_obj", "loss_yolo_cls", "loss_yolo_box"}
    out.total_loss().backward()
    assert all(torch.isfinite(p.grad).all() for p in small_model.parameters() if p.grad is not None)
    small_model.zero_grad()


def test_letterbox_input_and_detections_in_original_pixels(small_model):
    small_model.eval()
    images, _ = _batch()
    recorder = TraceRecorder()
    with torch.no_grad():
        out = small_model(images, recorder=recorder)
    assert out.raw["padded_size"] == (128, 128)
    assert out.raw["image_sizes"] == [(96, 128), (128, 106)]  # longer side to 128, aspect kept
    for det, image in zip(out.detections, images):
        assert len(det) == 100
        assert (det.boxes[:, 2] <= image.shape[2] + 1e-3).all() and (det.boxes[:, 3] <= image.shape[1] + 1e-3).all()


def test_detections_are_obj_times_cls_through_a_class_wise_nms(small_model):
    small_model.eval()
    images, _ = _batch()
    recorder = TraceRecorder()
    with torch.no_grad():
        out = small_model(images[:1], recorder=recorder)
    raw = out.raw
    obj = torch.cat([o.permute(0, 2, 3, 1).reshape(1, -1) for o in raw["obj_logits"]], dim=1).sigmoid()[0]
    cls = torch.cat([c.view(1, 3, 3, *c.shape[-2:]).permute(0, 3, 4, 1, 2).reshape(1, -1, 3)
                     for c in raw["cls_logits"]], dim=1).sigmoid()[0]
    scores = (obj[:, None] * cls).flatten()
    candidates = recorder.images[0]["rcnn_candidates"]
    top = scores[scores > 0.005].sort(descending=True).values[:1000]
    torch.testing.assert_close(candidates["scores"], top)
    nms = recorder.images[0]["rcnn_nms"]
    keep = batched_nms(candidates["boxes"], candidates["scores"], candidates["labels"], 0.45)
    assert torch.equal(nms["keep"], keep)
    assert float(nms["iou_threshold"]) == pytest.approx(0.45)
    torch.testing.assert_close(out.detections[0].scores, candidates["scores"][keep[:100]])


# ----------------------------------------------------------------------------- augmentation


def _sample():
    g = torch.Generator().manual_seed(1)
    return Sample(image=torch.rand(3, 100, 200, generator=g), boxes=torch.tensor([[10.0, 10.0, 50.0, 40.0], [150.0, 60.0, 190.0, 95.0]]),
                  labels=torch.tensor([1, 2]), ignore=torch.tensor([False, False]), image_id=0, orig_size=(100, 200), file_name="x.png")


def _uint8_sample():
    """``_sample`` with its image in the 0..255 uint8 form every dataset returns."""
    sample = _sample()
    return sample.replace(image=(sample.image * 255).round().to(torch.uint8))


def test_hsv_distortion_keeps_the_boxes_and_the_range():
    sample = _sample()
    out = HSVDistort()(sample, generator=torch.Generator().manual_seed(0))
    assert torch.equal(out.boxes, sample.boxes) and out.image.shape == sample.image.shape
    assert out.image.min() >= 0 and out.image.max() <= 1 and not torch.equal(out.image, sample.image)


def test_exposure_scales_a_uint8_image_within_0_255():
    """darknet's exposure multiplies every channel, clamped at the top of the range: a uint8
    image stays uint8 in 0..255 (clamping it at 1, the float range, turned every non-black pixel
    white and the loader's ``/ 255`` then fed the network a blank image)."""
    sample = _uint8_sample()
    for seed in range(4):
        out = HSVDistort(hue=0.0, saturation=1.0, exposure=1.5)(sample, generator=torch.Generator().manual_seed(seed))
        draws = torch.Generator().manual_seed(seed)
        torch.rand((), generator=draws), random_scale(1.0, draws)  # the hue and saturation draws
        factor = random_scale(1.5, draws)
        assert out.image.dtype == torch.uint8
        expected = (sample.image.float() * factor).clamp(0, 255)
        assert (out.image.float() - expected).abs().max() <= 1.0


def test_the_training_transform_keeps_uint8_images_in_range():
    sample = _uint8_sample()
    for seed in range(5):
        out = yolo_train_transform()(sample, generator=torch.Generator().manual_seed(seed))
        assert out.image.dtype == torch.uint8
        assert out.image.float().std() > 0.25 * sample.image.float().std()


def test_jitter_crop_keeps_the_boxes_whose_centre_is_inside():
    sample = _sample()
    crop = JitterCrop(0.3)
    for seed in range(20):
        window = crop.window(100, 200, torch.Generator().manual_seed(seed))
        out = crop(sample, generator=torch.Generator().manual_seed(seed))
        assert out.size == (window.height, window.width)
        assert window.width >= 200 * 0.4 and window.height >= 100 * 0.4
        centres = 0.5 * (sample.boxes[:, :2] + sample.boxes[:, 2:])
        inside = ((centres[:, 0] > window.left) & (centres[:, 0] < window.left + window.width)
                  & (centres[:, 1] > window.top) & (centres[:, 1] < window.top + window.height))
        assert out.labels.tolist() == sample.labels[inside].tolist()
    first = yolo_train_transform()(sample, generator=torch.Generator().manual_seed(3))
    again = yolo_train_transform()(sample, generator=torch.Generator().manual_seed(3))
    assert torch.equal(first.image, again.image) and torch.equal(first.boxes, again.boxes)


# ---------------------------------------------------------------------------------- presets


def test_the_voc_preset_is_darknets_schedule_in_epochs():
    cfg = yolov3.darknet53_608_voc()
    assert cfg.model.backbone == "darknet53" and cfg.model.size == 608 and cfg.model.nms_thresh == 0.45
    assert cfg.metric == "voc07" and cfg.model.num_classes == 20
    assert (cfg.schedule.epochs, cfg.schedule.milestones) == (194, (155, 174))
    assert (cfg.optimizer.lr, cfg.optimizer.reference_batch_size, cfg.optimizer.weight_decay) == (1e-3, 64, 5e-4)
    assert cfg.model.anchors == YOLOV3_ANCHORS


def test_the_tiny_preset_trains_a_step():
    cfg = yolov3.tiny()
    assert cfg.model.backbone == "mobilenet_v2" and cfg.model.size == 256
    assert cfg.optimizer.name == "adamw" and cfg.data.spec == "builtin:shapes"
    assert cfg.data.augmentation == "flip" and yolov3.darknet53_608_voc().data.augmentation == "method"
    assert cfg.model.mobilenet_top == "bottleneck" and YOLOv3Config().mobilenet_top == "expansion"
    torch.manual_seed(0)
    model = yolov3.build_model(dataclasses.replace(cfg.model, backbone_weights=None, backbone_norm="bn", size=128), 3)
    images, targets = _batch()
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.01)
    loss = model.train()(images, targets).total_loss()
    loss.backward()
    optimizer.step()
    assert torch.isfinite(loss) and all(torch.isfinite(p).all() for p in model.parameters())


@pytest.mark.parametrize("top, channels", [("bottleneck", 320), ("expansion", 1280)])
def test_mobilenet_body_returns_the_chosen_stride_32_block(top, channels):
    from workbench.methods.yolov3.model import mobilenet_v2_body

    cfg = YOLOv3Config(backbone="mobilenet_v2", backbone_weights=None, mobilenet_top=top, size=128)
    body, out_channels = mobilenet_v2_body(cfg)
    outputs = body(torch.rand(1, 3, 128, 128))
    assert out_channels == (32, 96, channels)
    assert [tuple(o.shape) for o in outputs.values()] == [(1, 32, 16, 16), (1, 96, 8, 8), (1, channels, 4, 4)]
    # the last inverted residual's projection is linear; the expansion ends in ReLU6 (0..6)
    assert (outputs["2"].min() < 0) == (top == "bottleneck")


def test_mobilenet_top_is_checked():
    from workbench.errors import ConfigError

    with pytest.raises(ConfigError, match="mobilenet_top"):
        build_yolov3(YOLOv3Config(backbone="mobilenet_v2", backbone_weights=None, mobilenet_top="top", size=128))
