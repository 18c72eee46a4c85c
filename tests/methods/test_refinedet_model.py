"""RefineDet's parts and model: anchors, matching against refined anchors, negative anchor
filtering (hand-worked cases), forward / backward, detections and the ablation switches."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import torch
from torch import nn

from workbench.methods.refinedet import build_model, tiny_model
from workbench.methods.refinedet.model import (
    RefineDetConfig,
    ThresholdedSSDMatcher,
    assign_to_references,
    build_refinedet,
    filter_negatives,
    filtered_anchors,
    filtered_share_maps,
)
from workbench.modeling.assignment import SSDMatcher
from workbench.modeling.ssd import OneSizeAnchors
from workbench.ops import BoxCoder

from detector_support import one_thread  # noqa: F401 (autouse)
from detector_support import three_box_batch as batch

#: A narrow VGG-16 RefineDet on 128 px inputs: source maps 16, 8, 4, 2 (1,020 anchors).
SMALL = dict(width=0.125, size=128, tcb_channels=16, num_classes=3, anchor_sizes=(16.0, 32.0, 64.0, 128.0))
CODER = BoxCoder((10.0, 10.0, 5.0, 5.0))


def small(**changes) -> RefineDetConfig:
    return RefineDetConfig(**{**SMALL, **changes})


def built(seed: int = 0, **changes):
    torch.manual_seed(seed)
    return build_refinedet(small(**changes))


def set_arm(model, logits: tuple[float, float] | None = None, deltas: tuple[float, float, float, float] | None = None):
    """Make the ARM predict the same logits (background, object) and / or offsets at every
    anchor: zero weights, the values as biases."""
    with torch.no_grad():
        for name, values in (("arm_logits", logits), ("arm_deltas", deltas)):
            if values is None:
                continue
            for conv in model.arm_head.convs[name]:
                conv.weight.zero_()
                conv.bias.copy_(torch.tensor(values).repeat(conv.bias.shape[0] // len(values)))


# -- anchors ----------------------------------------------------------------------------------


def test_anchor_counts_at_320_and_512():
    """Paper section 2.2: four levels at strides 8..64, three anchors per location."""
    for size, maps, count in ((320, [(40, 40), (20, 20), (10, 10), (5, 5)], 6375),
                              (512, [(64, 64), (32, 32), (16, 16), (8, 8)], 16320)):
        model = build_refinedet(RefineDetConfig(width=0.125, num_classes=2, size=size))
        with torch.no_grad():
            sizes = [tuple(f.shape[-2:]) for f in model.backbone(torch.zeros(1, 3, size, size)).values()]
        assert sizes == maps
        anchors = model.anchor_generator((size, size), sizes)
        assert sum(a.shape[0] for a in anchors) == count
        assert model.anchor_generator.num_anchors_per_location() == [3, 3, 3, 3]


def test_anchor_hand_values():
    # first location of the stride-8 level, size 32: centre (4, 4); ratio 2: w = 32 sqrt 2, h = 32 / sqrt 2
    anchors = OneSizeAnchors((32, 64, 128, 256), strides=(8, 16, 32, 64))((320, 320), [(40, 40), (20, 20), (10, 10), (5, 5)])
    half_w, half_h = 16 * math.sqrt(2), 16 / math.sqrt(2)
    expected = torch.tensor([[-12.0, -12.0, 20.0, 20.0], [4 - half_w, 4 - half_h, 4 + half_w, 4 + half_h],
                             [4 - half_h, 4 - half_w, 4 + half_h, 4 + half_w]])
    torch.testing.assert_close(anchors[0][:3], expected)
    torch.testing.assert_close(anchors[0][3], torch.tensor([-4.0, -12.0, 28.0, 20.0]))  # next location: x first
    torch.testing.assert_close(anchors[3][0], torch.tensor([-96.0, -96.0, 160.0, 160.0]))  # stride 64, size 256


# -- matching, targets and filtering: hand-worked ------------------------------------------------


def test_odm_targets_are_encoded_against_the_refined_anchors():
    """Two refined anchors (the references), one GT each; variances 0.1 / 0.2."""
    refs = torch.tensor([[[10.0, 10.0, 30.0, 30.0], [100.0, 100.0, 140.0, 120.0], [200.0, 0.0, 210.0, 10.0]]])
    targets = [{"boxes": torch.tensor([[12.0, 10.0, 32.0, 30.0], [100.0, 100.0, 180.0, 120.0]]),
                "labels": torch.tensor([2, 1])}]
    _, labels, box_targets = assign_to_references(SSDMatcher(0.5), CODER, refs, targets, class_agnostic=False)
    assert labels.tolist() == [[2, 1, 0]]
    # reference 0: centre 20 -> GT centre 22 over width 20: dx = 10 * 2 / 20 = 1; same size
    torch.testing.assert_close(box_targets[0, 0], torch.tensor([1.0, 0.0, 0.0, 0.0]))
    # reference 1: centre 120 -> 140 over width 40: dx = 10 * 20 / 40 = 5; width 40 -> 80: dw = 5 ln 2
    torch.testing.assert_close(box_targets[0, 1], torch.tensor([5.0, 0.0, 5 * math.log(2.0), 0.0]))
    torch.testing.assert_close(box_targets[0, 2], torch.zeros(4))
    _, arm_labels, _ = assign_to_references(SSDMatcher(0.5), CODER, refs, targets, class_agnostic=True)
    assert arm_labels.tolist() == [[1, 1, 0]]


def test_the_arm_thresholds_are_configurable():
    anchors = torch.tensor([[0.0, 0.0, 10.0, 10.0], [0.0, 0.0, 10.0, 5.0], [0.0, 0.0, 10.0, 2.0]])  # IoU 1, 0.5, 0.2
    gt = torch.tensor([[0.0, 0.0, 10.0, 10.0]])
    assert ThresholdedSSDMatcher(0.5)(anchors, gt).labels.tolist() == [1, 1, 0]
    # 0.7 / 0.3 (the authors' advice for unstable training): 0.5 lies between -> ignored
    assert ThresholdedSSDMatcher(0.7, 0.3)(anchors, gt).labels.tolist() == [1, -1, 0]


def test_negative_anchor_filtering_by_hand():
    # background probabilities 0.995, 0.98, 0.5 and exactly 0.99 (not above the threshold)
    probs = torch.tensor([[0.995, 0.005], [0.98, 0.02], [0.5, 0.5], [0.99, 0.01]], dtype=torch.float64)
    assert filtered_anchors(probs.log()[None], 0.99).tolist() == [[True, False, False, False]]
    labels = torch.tensor([[0, 0, 2, -1, 1]])
    filtered = torch.tensor([[True, False, True, True, False]])
    # a filtered negative is left out (-1); a filtered positive stays positive
    assert filter_negatives(labels, filtered).tolist() == [[-1, 0, 2, -1, 1]]


def test_filtered_share_maps_by_hand():
    # two levels: 2 x 2 and 1 x 1 locations, 2 anchors each, on a 16 x 16 input (strides 8, 16)
    filtered = torch.tensor([1, 1, 1, 0, 0, 0, 0, 0] + [1, 0], dtype=torch.bool)
    maps = filtered_share_maps(filtered, [(2, 2), (1, 1)], 2, (16, 16), cell_scale=(2.0, 0.5))
    # each level at its own resolution, with its own cell in original pixels
    torch.testing.assert_close(maps["share_level0"], torch.tensor([[1.0, 0.5], [0.0, 0.0]]))
    torch.testing.assert_close(maps["share_level1"], torch.full((1, 1), 0.5))
    torch.testing.assert_close(maps["cell_size_share_level0"], torch.tensor([16.0, 4.0]))
    torch.testing.assert_close(maps["cell_size_share_level1"], torch.tensor([32.0, 8.0]))
    # their mean on the finest grid
    torch.testing.assert_close(maps["share"], torch.tensor([[0.75, 0.5], [0.25, 0.25]]))
    torch.testing.assert_close(maps["cell_size"], torch.tensor([16.0, 4.0]))
    # shown over the image, the coarse level covers the same pixels as it did spread to the fine grid
    from workbench.inspection.maps import record_map_pixels

    assert (record_map_pixels(maps, "share_level1", (32, 8)) == 0.5).all()
    np.testing.assert_array_equal(record_map_pixels(maps, "share_level0", (32, 8))[::16, ::4], [[1.0, 0.5], [0.0, 0.0]])


# -- the model: training ------------------------------------------------------------------------


def test_forward_backward_gives_both_modules_losses():
    model = built().train()
    images, targets = batch()
    out = model(images, targets)
    assert set(out.losses) == {"loss_arm_cls", "loss_arm_box", "loss_odm_cls", "loss_odm_box"}
    assert all(torch.isfinite(v) and v > 0 for v in out.losses.values())
    out.total_loss().backward()
    for part in (model.arm_head, model.tcb, model.odm_head, model.backbone.conv6):
        assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in part.parameters()), part


def test_the_odm_loss_does_not_reach_the_arm_head():
    """The refined anchors and the filter mask are detached: the ODM's losses train the TCBs,
    the ODM and the backbone, never the ARM's convolutions."""
    model = built().train()
    images, targets = batch()
    out = model(images, targets)
    (out.losses["loss_odm_cls"] + out.losses["loss_odm_box"]).backward()
    assert all(p.grad is None for p in model.arm_head.parameters())
    assert all(p.grad is not None for p in model.odm_head.parameters())


def test_odm_matches_and_encodes_against_the_refined_anchors():
    """With the ARM's offsets fixed at dx = 1 (a shift of a tenth of the width), the refined
    anchors are the shifted anchors and the ODM's labels and targets are theirs."""
    model = built(negative_filtering=False).train()
    set_arm(model, deltas=(1.0, 0.0, 0.0, 0.0))
    images, targets = batch()
    out = model(images, targets)
    anchors = torch.cat(out.raw["anchors"])
    shifted = anchors + torch.stack([(anchors[:, 2] - anchors[:, 0]) * 0.1, torch.zeros(len(anchors))] * 2, dim=1)
    refined = out.raw["refined_anchors"]
    torch.testing.assert_close(refined, shifted.expand_as(refined), atol=1e-4, rtol=0)
    odm = out.raw["odm_targets"]
    net_targets = model.transform(images, targets)[1]
    _, labels, box_targets = assign_to_references(SSDMatcher(0.5), CODER, refined, net_targets, class_agnostic=False)
    assert torch.equal(odm.labels, labels)
    torch.testing.assert_close(odm.box_targets, box_targets)
    # against the original anchors the assignment differs (the ARM's is on them)
    _, on_anchors, _ = assign_to_references(SSDMatcher(0.5), CODER, anchors.expand_as(refined), net_targets, False)
    assert not torch.equal(on_anchors, labels)
    _, arm_labels, _ = assign_to_references(SSDMatcher(0.5), CODER, anchors.expand_as(refined), net_targets, True)
    assert torch.equal(out.raw["arm_targets"].labels, arm_labels)


def test_without_refinement_the_odm_uses_the_original_anchors():
    model = built(refine_anchors=False, negative_filtering=False).train()
    set_arm(model, deltas=(1.0, 0.0, 0.0, 0.0))
    images, targets = batch()
    out = model(images, targets)
    anchors = torch.cat(out.raw["anchors"])
    net_targets = model.transform(images, targets)[1]
    _, labels, box_targets = assign_to_references(SSDMatcher(0.5), CODER, anchors.expand(2, -1, -1), net_targets, False)
    assert torch.equal(out.raw["odm_targets"].labels, labels)
    torch.testing.assert_close(out.raw["odm_targets"].box_targets, box_targets)


def test_filtered_anchors_are_never_odm_negatives():
    """An ARM sure of the background everywhere (probability 1 - 1e-8) filters every anchor:
    the ODM keeps its positives and mines no negative; without filtering it mines 3 per
    positive."""
    images, targets = batch()
    for filtering in (True, False):
        model = built(negative_filtering=filtering).train()
        set_arm(model, logits=(10.0, -10.0))
        out = model(images, targets)
        odm = out.raw["odm_targets"]
        assert bool(out.raw["filtered"].all()) == filtering
        assert int(odm.positive.sum()) >= 3  # every GT keeps at least its best refined anchor
        if filtering:
            assert int(odm.negative.sum()) == 0
            assert bool((odm.labels[odm.labels <= 0] == -1).all())
        else:
            assert int(odm.negative.sum()) == 3 * int(odm.positive.sum())
        # the ARM mines 3:1 either way
        arm = out.raw["arm_targets"]
        assert int(arm.negative.sum()) == 3 * int(arm.positive.sum())


# -- the model: inference -------------------------------------------------------------------


def test_eval_mode_detections():
    model = built(topk_candidates=50, detections_per_img=20).eval()
    images, _ = batch()
    with torch.no_grad():
        out = model(images)
    num_anchors = sum(a.shape[0] for a in out.raw["anchors"])
    for det, image in zip(out.detections, images):
        assert 0 < len(det) <= 20
        assert bool((det.scores[:-1] >= det.scores[1:]).all()) and bool((det.scores > 0.01).all())
        assert set(det.labels.tolist()) <= {1, 2, 3}
        h, w = image.shape[-2:]
        assert bool((det.boxes[:, 0::2] <= w + 1e-4).all()) and bool((det.boxes[:, 1::2] <= h + 1e-4).all())
        assert bool((det.boxes >= 0).all())
        assert set(det.extras) == {"anchor_index", "anchor_iou_before", "anchor_iou_after"}
        assert bool((det.extras["anchor_index"] < num_anchors).all())
        for key in ("anchor_iou_before", "anchor_iou_after"):
            assert bool(((det.extras[key] >= 0) & (det.extras[key] <= 1)).all())


def test_inference_zeroes_the_scores_of_filtered_anchors():
    images, _ = batch()
    for filtering, expect_any in ((True, False), (False, True)):
        model = built(negative_filtering=filtering).eval()
        set_arm(model, logits=(10.0, -10.0))
        with torch.no_grad():
            out = model(images)
        assert any(len(d) > 0 for d in out.detections) == expect_any


def test_inference_decodes_against_the_refined_anchors():
    """The ODM's boxes are its offsets applied to the ARM's refined anchors: with both heads'
    offsets zero, every detection is its refined anchor (clipped), and with refinement off its
    original anchor."""
    images, _ = batch()
    for refine in (True, False):
        model = built(refine_anchors=refine).eval()
        set_arm(model, deltas=(1.0, 0.0, 0.0, 0.0))
        with torch.no_grad():
            for conv in model.odm_head.convs["deltas"]:
                conv.weight.zero_()
                conv.bias.zero_()
            out = model(images[:1])
        det = out.detections[0]
        anchors = torch.cat(out.raw["anchors"])
        reference = out.raw["refined_anchors"][0] if refine else anchors
        # the first image is 128 x 96, resized to 128 x 128: y scales by 96 / 128
        expected = reference[det.extras["anchor_index"]] * torch.tensor([1.0, 0.75, 1.0, 0.75])
        expected = torch.stack([expected[:, 0].clamp(0, 128), expected[:, 1].clamp(0, 96),
                                expected[:, 2].clamp(0, 128), expected[:, 3].clamp(0, 96)], dim=1)
        torch.testing.assert_close(det.boxes, expected, atol=1e-3, rtol=0)


def test_switches_build_the_ablations():
    assert built(transfer_connection=False).tcb is None
    model = built(transfer_connection=False).eval()
    assert [c.in_channels for c in model.odm_head.convs["cls_logits"]] == model.backbone.out_channels
    images, targets = batch()
    model.train()
    assert torch.isfinite(model(images, targets).total_loss())
    with_tcb = built()
    assert [c.in_channels for c in with_tcb.odm_head.convs["cls_logits"]] == [16] * 4


def test_transfer_connection_adds_the_level_above():
    """The TCB of a level below the top depends on the level above (the deconvolution); the top
    level's does not depend on the lower ones."""
    model = built()
    tcb = model.tcb
    feats = [torch.randn(1, c, s, s) for c, s in zip(model.backbone.out_channels, (16, 8, 4, 2))]
    base = tcb(feats)
    changed = list(feats)
    changed[3] = feats[3] + 1.0
    out = tcb(changed)
    assert not torch.allclose(out[0], base[0]) and not torch.allclose(out[2], base[2])
    changed = list(feats)
    changed[0] = feats[0] + 1.0
    out = tcb(changed)
    torch.testing.assert_close(out[3], base[3])
    assert [tuple(o.shape[-2:]) for o in out] == [(16, 16), (8, 8), (4, 4), (2, 2)]


def test_vgg_l2norm_scales_and_new_layers():
    model = built()
    assert float(model.backbone.l2norm4.weight.detach()[0]) == 10.0 and float(model.backbone.l2norm5.weight.detach()[0]) == 8.0
    fc6 = model.backbone.fc7[1]
    assert isinstance(fc6, nn.Conv2d) and fc6.dilation == (3, 3) and fc6.kernel_size == (3, 3)


def test_resnet101_sources_and_a_training_step():
    torch.manual_seed(0)
    cfg = RefineDetConfig(backbone="resnet101", backbone_norm="bn", trainable_backbone_layers=5, num_classes=3,
                          size=320, tcb_channels=16)
    model = build_refinedet(cfg)
    with torch.no_grad():
        maps = model.backbone(torch.zeros(1, 3, 320, 320))
    assert [tuple(f.shape[1:]) for f in maps.values()] == [(512, 40, 40), (1024, 20, 20), (2048, 10, 10), (512, 5, 5)]
    model = build_refinedet(dataclasses.replace(cfg, size=128)).train()
    images, targets = batch()
    assert torch.isfinite(model(images, targets).total_loss())


def test_tiny_model_trains_a_step():
    cfg = dataclasses.replace(tiny_model(weights=None), size=128)
    torch.manual_seed(0)
    model = build_model(cfg, 3).train()
    images, targets = batch()
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    out = model(images, targets)
    out.total_loss().backward()
    optimizer.step()
    assert all(torch.isfinite(v) for v in out.losses.values())
    assert all(torch.isfinite(p).all() for p in model.parameters())
    anchors = sum(a.shape[0] for a in out.raw["anchors"])
    assert anchors == 3 * (16 * 16 + 8 * 8 + 4 * 4 + 2 * 2)


def test_a_few_steps_teach_the_arm_to_move_anchors_onto_objects():
    """Overfitting four images with one painted box each: the ARM's refined anchors end closer
    to their GT than the anchors they came from (the mean IoU of the ARM's matched anchors
    rises), most anchors are filtered as easy background, and the losses fall."""
    from workbench.methods.refinedet.analysis import matched_anchor_ious

    torch.manual_seed(0)
    model = build_model(dataclasses.replace(tiny_model(), size=128), 3)
    g = torch.Generator().manual_seed(0)
    images, targets = [], []
    for k in range(4):
        image = torch.rand(3, 128, 128, generator=g) * 0.3
        x0, y0, w, h = 10 + 20 * k, 15 + 10 * k, 40 + 5 * k, 50 - 5 * k
        image[k % 3, y0:y0 + h, x0:x0 + w] = 1.0
        images.append(image)
        targets.append({"boxes": torch.tensor([[x0, y0, x0 + w, y0 + h]], dtype=torch.float32),
                        "labels": torch.tensor([k % 3 + 1])})
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    first = None
    for _ in range(32):
        model.train()
        out = model(images, targets)
        first = first or {k: float(v) for k, v in out.losses.items()}
        optimizer.zero_grad()
        out.total_loss().backward()
        optimizer.step()
    last = {k: float(v) for k, v in out.losses.items()}
    assert all(last[k] < first[k] for k in first)
    model.eval()
    with torch.no_grad():
        out = model(images)
    anchors = torch.cat(out.raw["anchors"])
    pairs = [matched_anchor_ious(anchors, out.raw["refined_anchors"][i], t["boxes"]) for i, t in enumerate(targets)]
    before = torch.cat([b for b, _ in pairs])
    after = torch.cat([a for _, a in pairs])
    assert float(after.mean()) > float(before.mean()) + 0.15
    assert float(out.raw["filtered"].float().mean()) > 0.5
