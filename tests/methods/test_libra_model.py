"""Libra R-CNN / Libra RetinaNet: the sampler, the builders' parts, each switch, training steps."""

from __future__ import annotations

import dataclasses
import itertools

import pytest
import torch

from workbench.losses import balanced_l1, smooth_l1
from workbench.methods import faster_rcnn as rcnn_baseline
from workbench.methods import retinanet as retina_baseline
from workbench.methods.libra.model import (
    IoUBalancedSampler,
    LibraRCNNConfig,
    LibraRetinaNetConfig,
    build_libra_faster_rcnn,
    build_libra_retinanet,
    build_rcnn_model,
)
from workbench.modeling import build_faster_rcnn
from workbench.modeling.assignment import Assignment, RandomSampler
from workbench.modeling.balanced_pyramid import BalancedFeaturePyramid, find_balanced_pyramid
from workbench.modeling.retinanet import build_retinanet
from workbench.modeling.transform import rescale_boxes
from workbench.ops import box_iou, sample_libra
from workbench.errors import ConfigError

from detector_support import one_thread, painted_batch  # noqa: F401 (one_thread: autouse)


def rcnn_base(**overrides):
    values = dict(
        num_classes=2, min_size=96, max_size=96, fpn_channels=32, box_representation_size=64,
        box_batch_size_per_image=32, rpn_pre_nms_top_n_train=200, rpn_post_nms_top_n_train=100,
        rpn_pre_nms_top_n_test=200, rpn_post_nms_top_n_test=100,
    )
    values.update(overrides)
    return dataclasses.replace(rcnn_baseline.tiny_model(weights=None), **values)


def retina_base(**overrides):
    values = dict(num_classes=2, min_size=96, max_size=96, fpn_channels=32, head_num_convs=1, topk_candidates=100)
    values.update(overrides)
    return dataclasses.replace(retina_baseline.tiny_model(weights=None), **values)


def batch():
    return painted_batch(((96, 96), (96, 80)), [[[30.0, 20.0, 90.0, 70.0], [5.0, 5.0, 25.0, 30.0]], [[10.0, 50.0, 60.0, 90.0]]],
                         [[1, 2], [2]])


# --- the sampler ---------------------------------------------------------------------------


def assignment(num_pos_per_gt=(40, 4), neg_iou=None):
    gt = torch.cat([torch.full((n,), k) for k, n in enumerate(num_pos_per_gt)])
    if neg_iou is None:
        neg_iou = torch.cat([torch.full((200,), 0.01), torch.full((6,), 0.25), torch.full((6,), 0.45)])
    labels = torch.cat([torch.ones(gt.numel(), dtype=torch.int64), torch.zeros(neg_iou.numel(), dtype=torch.int64)])
    matched = torch.cat([gt, torch.zeros(neg_iou.numel(), dtype=torch.int64)])
    max_iou = torch.cat([torch.full((gt.numel(),), 0.7), neg_iou])
    return Assignment(labels, matched, max_iou)


def test_sampler_is_sample_libra_with_its_settings():
    a = assignment()
    sampler = IoUBalancedSampler(32, 0.25, num_bins=5)
    got = sampler(a, torch.Generator().manual_seed(3))
    want = sample_libra(a.labels, a.max_iou, a.matched_gt, 32, 0.25, torch.Generator().manual_seed(3), 5)
    assert all(torch.equal(x, y) for x, y in zip(got, want))


def test_instance_balance_and_its_switch():
    a = assignment()
    gt = a.matched_gt
    balanced, uniform = [], []
    for seed in range(20):
        pos, _ = IoUBalancedSampler(16, 0.5)(a, torch.Generator().manual_seed(seed))
        assert int(pos.sum()) == 8
        balanced.append(int((pos & (gt == 1)).sum()))
        pos, _ = IoUBalancedSampler(16, 0.5, positive_balance=False)(a, torch.Generator().manual_seed(seed))
        assert int(pos.sum()) == 8
        uniform.append(int((pos & (gt == 1)).sum()))
    assert balanced == [4] * 20  # ceil(8 / 2 GTs) = 4: the small GT gives all its 4 positives
    assert sum(uniform) / 20 < 2.0  # uniform: about 8 * 4 / 44 = 0.73 of them


def test_negatives_are_balanced_over_iou_bins():
    # 200 negatives at IoU 0.01, 6 at 0.25, 6 at 0.45: bins over [0.01, 0.45] are
    # [0.01, 0.157), [0.157, 0.303), [0.303, 0.45]; 24 negatives, 8 a bin: the two short bins give
    # all their 6, the lowest bin the rest (12).
    a = assignment()
    _, neg = IoUBalancedSampler(32, 0.25, num_bins=3)(a, torch.Generator().manual_seed(0))
    iou = a.max_iou[neg]
    assert neg.sum() == 24 and int((iou == 0.45).sum()) == 6 and int((iou == 0.25).sum()) == 6
    _, neg = RandomSampler(32, 0.25)(a, torch.Generator().manual_seed(0))
    assert int((a.max_iou[neg] > 0.05).sum()) < 6


def test_bad_bins_are_refused():
    with pytest.raises(ConfigError):
        IoUBalancedSampler(8, 0.25, num_bins=0)
    with pytest.raises(ConfigError):
        LibraRCNNConfig(num_bins=0)
    with pytest.raises(ConfigError):
        LibraRCNNConfig(refine_type="attention")
    with pytest.raises(ConfigError):
        LibraRetinaNetConfig(beta=0.0)


# --- the builders' parts -------------------------------------------------------------------


def test_rcnn_parts_follow_the_config():
    cfg = LibraRCNNConfig(base=rcnn_base(), num_bins=2, positive_balance=False, refine_level=1, refine_type="conv",
                          alpha=0.3, gamma=1.0, beta=0.5)
    model = build_libra_faster_rcnn(cfg)
    stage = model.roi_heads.stages[0]
    assert stage.sampler == IoUBalancedSampler(32, 0.25, 2, False)
    box_loss = stage.loss.box_loss
    assert box_loss.func is balanced_l1 and box_loss.keywords == {"alpha": 0.3, "gamma": 1.0, "beta": 0.5}
    pyramid = find_balanced_pyramid(model)
    assert isinstance(pyramid, BalancedFeaturePyramid)
    assert (pyramid.num_levels, pyramid.refine_level, pyramid.refine_type) == (4, 1, "conv")
    assert pyramid is model.backbone.neck[1]


def test_refine_level_outside_the_pyramid_is_refused():
    with pytest.raises(ConfigError, match="refine_level"):
        build_libra_faster_rcnn(LibraRCNNConfig(base=rcnn_base(), refine_level=4))


def structure(model):
    return [(k, tuple(v.shape)) for k, v in model.state_dict().items()]


def test_all_switches_off_is_the_baseline_module_for_module():
    base = rcnn_base()
    off = LibraRCNNConfig(base=base, iou_balanced_sampling=False, balanced_pyramid=False, balanced_l1=False)
    torch.manual_seed(0)
    libra = build_libra_faster_rcnn(off)
    torch.manual_seed(0)
    baseline = build_faster_rcnn(base)
    assert structure(libra) == structure(baseline)
    assert all(torch.equal(a, b) for a, b in zip(libra.state_dict().values(), baseline.state_dict().values()))
    ls, bs = libra.roi_heads.stages[0], baseline.roi_heads.stages[0]
    assert ls.sampler == bs.sampler == RandomSampler(32, 0.25)
    assert ls.loss.box_loss.func is smooth_l1 and ls.loss.box_loss.keywords == bs.loss.box_loss.keywords


def test_each_rcnn_switch_changes_only_its_part():
    base = rcnn_base()
    baseline = build_faster_rcnn(base)
    only_sampling = build_libra_faster_rcnn(LibraRCNNConfig(base=base, balanced_pyramid=False, balanced_l1=False))
    assert structure(only_sampling) == structure(baseline)
    assert isinstance(only_sampling.roi_heads.stages[0].sampler, IoUBalancedSampler)
    assert only_sampling.roi_heads.stages[0].loss.box_loss.func is smooth_l1
    only_loss = build_libra_faster_rcnn(LibraRCNNConfig(base=base, iou_balanced_sampling=False, balanced_pyramid=False))
    assert structure(only_loss) == structure(baseline)
    assert isinstance(only_loss.roi_heads.stages[0].sampler, RandomSampler)
    assert only_loss.roi_heads.stages[0].loss.box_loss.func is balanced_l1
    only_pyramid = build_libra_faster_rcnn(LibraRCNNConfig(base=base, iou_balanced_sampling=False, balanced_l1=False))
    extra = [k for k, _ in structure(only_pyramid) if k.startswith("backbone.neck.1.")]
    assert extra and all(".refine." in k for k in extra)
    renamed = [(k.replace("backbone.neck.0.", "backbone.neck."), s) for k, s in structure(only_pyramid)
               if not k.startswith("backbone.neck.1.")]
    assert renamed == structure(baseline)
    assert isinstance(only_pyramid.roi_heads.stages[0].sampler, RandomSampler)


def test_retinanet_switches():
    base = retina_base()
    torch.manual_seed(0)
    off = build_libra_retinanet(LibraRetinaNetConfig(base=base, balanced_pyramid=False, balanced_l1=False))
    torch.manual_seed(0)
    baseline = build_retinanet(base)
    assert structure(off) == structure(baseline)
    assert all(torch.equal(a, b) for a, b in zip(off.state_dict().values(), baseline.state_dict().values()))
    assert off.loss.box_loss is baseline.loss.box_loss
    on = build_libra_retinanet(LibraRetinaNetConfig(base=base))
    assert on.loss.box_loss.func is balanced_l1
    assert on.loss.box_loss.keywords == {"alpha": 0.5, "gamma": 1.5, "beta": 0.11}
    pyramid = find_balanced_pyramid(on)
    assert (pyramid.num_levels, pyramid.refine_level, pyramid.refine_type) == (5, 1, "non_local")


# --- training steps ------------------------------------------------------------------------

RCNN_KEYS = {"loss_rpn_cls", "loss_rpn_box", "loss_rcnn_cls", "loss_rcnn_box"}


@pytest.mark.parametrize("sampling,pyramid,loss", list(itertools.product([True, False], repeat=3)))
def test_rcnn_training_step_for_every_switch_combination(sampling, pyramid, loss):
    torch.manual_seed(0)
    cfg = LibraRCNNConfig(base=rcnn_base(), iou_balanced_sampling=sampling, balanced_pyramid=pyramid,
                          balanced_l1=loss, refine_level=1)
    model = build_libra_faster_rcnn(cfg).train()
    images, targets = batch()
    out = model(images, targets, generator=torch.Generator().manual_seed(0))
    assert set(out.losses) == RCNN_KEYS
    assert all(torch.isfinite(v) for v in out.losses.values())
    sum(out.losses.values()).backward()
    if pyramid:
        assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in find_balanced_pyramid(model).parameters())


def test_rcnn_box_loss_is_balanced_l1_of_the_sampled_positives():
    torch.manual_seed(0)
    cfg = LibraRCNNConfig(base=rcnn_base(), balanced_pyramid=False, alpha=0.5, gamma=1.5, beta=1.0)
    model = build_libra_faster_rcnn(cfg).train()
    images, targets = batch()
    out = model(images, targets, generator=torch.Generator().manual_seed(0))
    stage = model.roi_heads.stages[0]
    goals = []
    for rois, labels, target, size, original in zip(out.raw["sampled_rois"], out.raw["sampled_labels"], targets,
                                                    out.raw["image_sizes"], out.raw["original_sizes"]):
        gt = rescale_boxes(target["boxes"], original, size)
        matched = box_iou(gt, rois).argmax(dim=0)  # positives (IoU >= 0.5) match their best GT
        positive = labels > 0
        goals.append(stage.coder.encode(gt[matched[positive]], rois[positive]))
    labels = torch.cat(out.raw["sampled_labels"])
    positive = torch.where(labels > 0)[0]
    assert positive.numel() > 0
    pred = out.raw["box_regression"].view(labels.numel(), -1, 4)[positive, labels[positive]]
    expected = balanced_l1(pred, torch.cat(goals)).sum() / labels.numel()
    assert torch.allclose(out.losses["loss_rcnn_box"], expected, atol=1e-6)
    assert not torch.allclose(out.losses["loss_rcnn_box"], smooth_l1(pred, torch.cat(goals), beta=1 / 9).sum() / labels.numel())


@pytest.mark.parametrize("pyramid,loss", list(itertools.product([True, False], repeat=2)))
def test_retinanet_training_step_for_every_switch_combination(pyramid, loss):
    torch.manual_seed(0)
    model = build_libra_retinanet(LibraRetinaNetConfig(base=retina_base(), balanced_pyramid=pyramid,
                                                       balanced_l1=loss)).train()
    images, targets = batch()
    out = model(images, targets)
    assert set(out.losses) == {"loss_dense_cls", "loss_dense_box"}
    assert all(torch.isfinite(v) for v in out.losses.values())
    sum(out.losses.values()).backward()


def test_conv_refine_trains_and_inference_gives_detections():
    torch.manual_seed(0)
    model = build_rcnn_model(LibraRCNNConfig(base=rcnn_base(box_score_thresh=0.0), refine_level=1, refine_type="conv"), 2)
    images, targets = batch()
    model.train()
    out = model(images, targets, generator=torch.Generator().manual_seed(0))
    assert all(torch.isfinite(v) for v in out.losses.values())
    model.eval()
    with torch.no_grad():
        out = model(images)
    assert len(out.detections) == 2 and out.detections[0].boxes.shape[-1] == 4
