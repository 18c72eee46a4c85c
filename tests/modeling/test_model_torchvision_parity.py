"""The workbench Faster R-CNN against torchvision's, with the same weights loaded into both."""

from __future__ import annotations

import pytest
import torch
from torchvision.models.detection import FasterRCNN as TorchvisionFasterRCNN
from torchvision.models.detection import fasterrcnn_resnet50_fpn
from torchvision.models.detection.backbone_utils import resnet_fpn_backbone
from torchvision.ops.misc import FrozenBatchNorm2d

from workbench.modeling import TraceRecorder, config_from_torchvision, load_torchvision_faster_rcnn

from detector_support import one_thread  # noqa: F401 (one_thread: autouse)


NUM_CLASSES = 5  # foreground; torchvision counts 6 with the background


def _images(seed: int) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [torch.rand(3, 240, 320, generator=g), torch.rand(3, 300, 200, generator=g), torch.rand(3, 256, 256, generator=g)]


def _perturb_predictor(model: torch.nn.Module, seed: int) -> None:
    """Random init predicts near-uniform classes and zero offsets: spread them so the per-class
    NMS, the score ordering and the box decoding all matter."""
    g = torch.Generator().manual_seed(seed)
    predictor = model.roi_heads.box_predictor
    with torch.no_grad():
        predictor.cls_score.weight.copy_(torch.randn(predictor.cls_score.weight.shape, generator=g) * 0.05)
        predictor.bbox_pred.weight.copy_(torch.randn(predictor.bbox_pred.weight.shape, generator=g) * 0.05)
        model.rpn.head.bbox_pred.weight.add_(torch.randn(model.rpn.head.bbox_pred.weight.shape, generator=g) * 0.02)


@pytest.fixture(scope="module")
def r50_pair():
    torch.manual_seed(0)
    tv = fasterrcnn_resnet50_fpn(
        weights=None, weights_backbone=None, num_classes=NUM_CLASSES + 1, min_size=320, max_size=512,
        box_score_thresh=0.0,
    )
    _perturb_predictor(tv, 1)
    tv.eval()
    wb = load_torchvision_faster_rcnn(tv)
    return tv, wb


def test_config_copies_torchvision_settings(r50_pair):
    tv, wb = r50_pair
    cfg = config_from_torchvision(tv)
    assert cfg.backbone == "resnet50_fpn"
    assert cfg.num_classes == NUM_CLASSES
    assert (cfg.min_size, cfg.max_size) == (320, 512)
    assert cfg.box_score_thresh == 0.0
    assert cfg.anchor_sizes == ((32.0,), (64.0,), (128.0,), (256.0,), (512.0,))
    assert not wb.training
    # torchvision's batch norm (BatchNorm2d here) holds parameters; the workbench's frozen batch
    # norm holds the same numbers as buffers
    tv_state = {k: v for k, v in tv.state_dict().items() if not k.endswith("num_batches_tracked")}
    assert sum(v.numel() for v in tv_state.values()) == sum(v.numel() for v in wb.state_dict().values())


@pytest.fixture(scope="module")
def r50_outputs(r50_pair):
    """One forward of each model on three images of different sizes; torchvision's proposals are
    caught on the way."""
    tv, wb = r50_pair
    images = _images(2)
    caught = {}
    handle = tv.rpn.register_forward_hook(lambda module, args, output: caught.update(proposals=output[0]))
    with torch.no_grad():
        expected = tv(images)
        out = wb(images)
    handle.remove()
    return images, expected, caught["proposals"], out


def test_detections_match_torchvision(r50_outputs):
    images, expected, _, out = r50_outputs
    assert out.losses == {}
    assert len(out.detections) == len(images)
    for exp, det in zip(expected, out.detections):
        assert len(exp["boxes"]) > 20  # the comparison must cover many detections
        assert len(det) == len(exp["boxes"])
        assert torch.equal(det.labels, exp["labels"])
        torch.testing.assert_close(det.boxes, exp["boxes"], atol=1e-3, rtol=0)
        torch.testing.assert_close(det.scores, exp["scores"], atol=1e-4, rtol=0)


def test_proposals_match_torchvision(r50_pair, r50_outputs):
    tv, _ = r50_pair
    images, _, tv_proposals, out = r50_outputs
    image_list, _ = tv.transform(images)
    assert out.raw["image_sizes"] == [tuple(s) for s in image_list.image_sizes]
    assert len(out.raw["proposals"]) == len(images)
    for exp, got, scores in zip(tv_proposals, out.raw["proposals"], out.raw["proposal_scores"]):
        assert exp.shape[0] > 100
        assert got.shape == exp.shape
        torch.testing.assert_close(got, exp, atol=1e-3, rtol=0)
        assert bool((scores[:-1] >= scores[1:]).all())


def test_trace_does_not_change_detections(r50_pair, r50_outputs):
    _, wb = r50_pair
    images, _, _, plain = r50_outputs
    recorder = TraceRecorder()
    with torch.no_grad():
        traced = wb(images, recorder=recorder)
    assert len(recorder.images) == len(images)
    for a, b, record, image in zip(plain.detections, traced.detections, recorder.images, images):
        assert torch.equal(a.boxes, b.boxes) and torch.equal(a.scores, b.scores) and torch.equal(a.labels, b.labels)
        assert torch.equal(record["detections"]["boxes"], a.boxes)
        nms = record["rpn_nms"]
        kept = nms["keep"][: record["rpn_proposals"]["boxes"].shape[0]]
        assert torch.equal(record["rpn_proposals"]["scores"], nms["scores"][kept])
        suppressed = nms["suppressed_by"] >= 0
        assert bool(suppressed.any())
        assert bool((nms["suppressor_iou"][suppressed] > 0.7).all())
        assert int(suppressed.sum()) + nms["keep"].numel() == nms["scores"].numel()
        assert {"anchors", "rpn_proposals_pre_nms", "rcnn_candidates", "rcnn_nms"} <= set(record)
        # recorded boxes are in original-image pixels, like the detections
        height, width = image.shape[-2:]
        proposals = record["rpn_proposals"]["boxes"]
        assert float(proposals[:, 2].max()) <= width + 1e-3 and float(proposals[:, 3].max()) <= height + 1e-3
        assert float(proposals[:, 2].max()) > 0.9 * width


def test_training_losses_match_torchvision():
    """Same weights, same sampler draws (torch's default generator), same losses."""
    torch.manual_seed(0)
    backbone = resnet_fpn_backbone(backbone_name="resnet18", weights=None, norm_layer=FrozenBatchNorm2d, trainable_layers=3)
    tv = TorchvisionFasterRCNN(
        backbone, num_classes=NUM_CLASSES + 1, min_size=192, max_size=256,
        rpn_post_nms_top_n_train=500, box_batch_size_per_image=128,
    )
    _perturb_predictor(tv, 5)
    tv.train()
    wb = load_torchvision_faster_rcnn(tv)
    assert wb.training
    g = torch.Generator().manual_seed(6)
    images = [torch.rand(3, 160, 200, generator=g), torch.rand(3, 192, 144, generator=g)]
    targets = [
        {"boxes": torch.tensor([[10.0, 20.0, 90.0, 120.0], [100.0, 30.0, 180.0, 90.0]]), "labels": torch.tensor([1, 3])},
        {"boxes": torch.tensor([[5.0, 5.0, 60.0, 70.0]]), "labels": torch.tensor([2])},
    ]
    torch.manual_seed(7)
    tv_losses = tv(images, targets)
    torch.manual_seed(7)
    for _ in images:  # torchvision draws one number per image to pick the training min_size
        torch.empty(1).uniform_(0.0, 1.0)
    out = wb(images, targets)
    pairs = {
        "loss_rpn_cls": "loss_objectness",
        "loss_rpn_box": "loss_rpn_box_reg",
        "loss_rcnn_cls": "loss_classifier",
        "loss_rcnn_box": "loss_box_reg",
    }
    assert set(out.losses) == set(pairs)
    for ours, theirs in pairs.items():
        torch.testing.assert_close(out.losses[ours], tv_losses[theirs], atol=1e-5, rtol=1e-4)
    assert float(out.losses["loss_rcnn_box"].detach()) > 0 and float(out.losses["loss_rpn_box"].detach()) > 0
    assert out.detections == []
