"""SSD's ``tiny`` preset: RefineDet ``tiny``'s network, targets, post-processing and training
regime without the three components RefineDet adds, so that the two differ in those only."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from workbench.config import train_config_from_dict
from workbench.errors import ConfigError
from workbench.methods import get_method, refinedet, ssd
from workbench.methods.faster_rcnn import TINY_WEIGHTS
from workbench.modeling.ssd import SSDConfig, build_ssd

from detector_support import one_thread  # noqa: F401 (autouse)
from detector_support import painted_batch, three_box_batch


def _pair(weights=None, size: int = 256, **refinedet_changes):
    """SSD ``tiny`` and RefineDet ``tiny`` (with ``refinedet_changes``) for 3 classes, seeded."""
    torch.manual_seed(0)
    model = ssd.build_model(dataclasses.replace(ssd.tiny_model(weights), size=size), 3)
    torch.manual_seed(0)
    other = refinedet.build_model(dataclasses.replace(refinedet.tiny_model(weights), size=size, **refinedet_changes), 3)
    return model, other


def test_tiny_shares_refinedet_tinys_backbone_levels_and_anchors():
    model, other = _pair(weights=TINY_WEIGHTS)
    assert type(model.backbone) is type(other.backbone)
    assert type(model.backbone.extractor) is type(other.backbone.extractor)
    assert model.backbone.extractor.strides == other.backbone.extractor.strides == (8, 16, 32, 64)
    assert model.backbone.out_channels == other.backbone.out_channels == [128] * 4
    # the same layers frozen, the same pretrained values
    frozen = {name for name, p in model.backbone.named_parameters() if not p.requires_grad}
    assert frozen and frozen == {name for name, p in other.backbone.named_parameters() if not p.requires_grad}
    ours, theirs = model.backbone.state_dict(), other.backbone.state_dict()
    assert ours.keys() == theirs.keys() and all(torch.equal(ours[k], theirs[k]) for k in frozen)
    images = [torch.rand(3, 200, 300, generator=torch.Generator().manual_seed(1))]
    model.eval(), other.eval()
    with torch.no_grad():
        anchors, expected = model(images).raw["anchors"], other(images).raw["anchors"]
    assert [a.shape[0] for a in anchors] == [3 * 32 * 32, 3 * 16 * 16, 3 * 8 * 8, 3 * 4 * 4]
    assert len(anchors) == len(expected) and all(torch.equal(a, b) for a, b in zip(anchors, expected))
    # targets, box coding and post-processing settings
    assert model.matcher == other.odm_matcher and model.sampler == other.sampler
    assert model.box_coder == other.box_coder
    post = model.postprocess
    assert not post.per_class
    assert (post.score_thresh, post.topk_candidates, post.nms_thresh, post.detections_per_image) == (
        other.score_thresh, other.topk_candidates, other.nms_thresh, other.detections_per_img)
    assert (model.transform.size, model.transform.mean, model.transform.std) == (
        other.transform.size, other.transform.mean, other.transform.std)


def test_tiny_trains_in_refinedet_tinys_regime():
    cfg, other = ssd.tiny(), refinedet.tiny()
    assert (cfg.method, cfg.preset) == ("ssd", "tiny")
    assert (cfg.data, cfg.optimizer, cfg.schedule, cfg.batch_size) == (
        other.data, other.optimizer, other.schedule, other.batch_size)
    assert cfg.data.augmentation == "flip"  # as the two-stage tiny presets (faster_rcnn.miniature_flip)
    assert get_method("ssd").train_transforms is get_method("refinedet").train_transforms


def test_tiny_is_refinedets_detection_module_without_its_three_components():
    """With RefineDet's refinement, filtering and transfer connections off and its ODM's weights
    copied into SSD's head, SSD ``tiny`` gives the ODM's losses and RefineDet's detections."""
    model, other = _pair(size=128, refine_anchors=False, negative_filtering=False, transfer_connection=False)
    model.backbone.load_state_dict(other.backbone.state_dict())
    for level in range(4):
        model.head.cls_logits[level].load_state_dict(other.odm_head.convs["cls_logits"][level].state_dict())
        model.head.bbox_pred[level].load_state_dict(other.odm_head.convs["deltas"][level].state_dict())
    images, targets = three_box_batch()
    model.train(), other.train()
    ours, theirs = model(images, targets).losses, other(images, targets).losses
    torch.testing.assert_close(ours["loss_dense_cls"], theirs["loss_odm_cls"])
    torch.testing.assert_close(ours["loss_dense_box"], theirs["loss_odm_box"])
    model.eval(), other.eval()
    with torch.no_grad():
        ours, theirs = model(images).detections, other(images).detections
    for got, expected in zip(ours, theirs):
        assert got.boxes.shape[0] > 0
        torch.testing.assert_close(got.boxes, expected.boxes)
        torch.testing.assert_close(got.scores, expected.scores)
        assert torch.equal(got.labels, expected.labels)


def test_a_few_sgd_steps_lower_the_loss():
    """Eight SGD steps (lr 1e-4, momentum 0.9) on two images with one painted box each: finite
    losses, the total falling at every step and to under half its start. (At lr 1e-3 the
    Xavier-initialised head diverges within a few steps without the regime's warm-up.)"""
    model, _ = _pair(weights=TINY_WEIGHTS, size=128)
    images, targets = painted_batch(
        [(128, 128), (112, 144)], [[[20.0, 30.0, 80.0, 100.0]], [[50.0, 10.0, 120.0, 60.0]]], [[1], [2]])
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=1e-4, momentum=0.9)
    model.train()
    totals = []
    for _ in range(8):
        out = model(images, targets)
        loss = out.total_loss()
        assert all(torch.isfinite(v) for v in out.losses.values())
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        totals.append(float(loss.detach()))
    assert all(later < earlier for earlier, later in zip(totals, totals[1:])), totals
    assert totals[-1] < 0.5 * totals[0], totals
    assert all(torch.isfinite(p).all() for p in model.parameters())


def test_tiny_vgg16_keeps_the_quarter_width_vgg():
    cfg = get_method("ssd").presets["tiny_vgg16"]()
    assert (cfg.preset, cfg.model.backbone, cfg.model.width, cfg.model.backbone_weights) == ("tiny_vgg16", "vgg16", 0.25, None)
    assert cfg.model.anchor_sizes is None and cfg.model.candidates == "per_class"
    assert (cfg.schedule, cfg.batch_size) == (ssd.tiny().schedule, ssd.tiny().batch_size)
    # the from-scratch VGG keeps SSD's own augmentation; the same-backbone tiny trains with the flip
    assert cfg.data == dataclasses.replace(ssd.tiny().data, augmentation="method")


@pytest.mark.parametrize("preset", ["tiny", "tiny_vgg16", "ssd512_voc"])
def test_configs_read_back(preset):
    cfg = get_method("ssd").presets[preset]()
    back = train_config_from_dict(cfg.to_dict())
    assert back == cfg and isinstance(back.model, SSDConfig)


@pytest.mark.parametrize("changes, message", [
    ({"candidates": "per_level"}, "candidates"),
    ({"anchor_sizes": (16.0, 32.0, 64.0)}, "anchor_sizes"),
    ({"backbone": "resnet50_fpn"}, "backbone"),
])
def test_inconsistent_configs_are_refused(changes, message):
    with pytest.raises(ConfigError, match=message):
        build_ssd(dataclasses.replace(ssd.tiny_model(None), num_classes=2, **changes))
