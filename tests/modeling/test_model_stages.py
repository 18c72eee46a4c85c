"""Faster R-CNN built by parts, and its box branch run as a sequence of stages.

The recorded numbers below come from the model as it was before the box branch became a
sequence of stages (the RoI heads with one box head, and KL-RPN built by editing a built
baseline), run on the same construction: they pin the single-stage outputs.
"""

from __future__ import annotations

import dataclasses

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from workbench.errors import ConfigError
from workbench.methods.kl_rpn.model import KLRPNConfig, build_model
from workbench.modeling import (
    AllCandidates,
    FastRCNNLoss,
    FasterRCNNConfig,
    build_box_pooler,
    build_box_postprocess,
    build_box_stage,
    build_faster_rcnn,
    build_roi_heads,
)
from workbench.ops import box_iou, clip_boxes

from detector_support import one_thread, small_faster_rcnn, two_image_batch  # noqa: F401 (one_thread: autouse)


def _small(**overrides) -> FasterRCNNConfig:
    return small_faster_rcnn(**{"box_score_thresh": 0.05, **overrides})


def _reinit_heads(model: nn.Module, seed: int) -> None:
    """Every parameter outside the backbone from one seeded generator, in name order, so that the
    weights do not depend on the order in which a builder creates the heads."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in sorted(model.named_parameters()):
            if not name.startswith("backbone."):
                p.copy_(torch.randn(p.shape, generator=g) * (0.05 if p.dim() > 1 else 0.01))


def _run(model: nn.Module):
    images, targets = two_image_batch()
    model.train()
    losses = model(images, targets, generator=torch.Generator().manual_seed(5)).losses
    model.eval()
    with torch.no_grad():
        out = model(images)
    return {k: float(v.detach()) for k, v in losses.items()}, out


def _weighted(t: torch.Tensor) -> float:
    """Sum of the entries times their 1-based position: a checksum that sees the order."""
    flat = t.double().reshape(-1)
    return float((flat * torch.arange(1, flat.numel() + 1, dtype=torch.float64)).sum())


def _check_detections(detections, expected) -> None:
    for det, (labels, boxes, scores, sigma) in zip(detections, expected):
        assert len(det) == 100
        assert _weighted(det.labels) == labels
        assert _weighted(det.boxes) == pytest.approx(boxes, rel=1e-6)
        assert _weighted(det.scores) == pytest.approx(scores, rel=1e-6)
        if sigma is None:
            assert det.extras == {}
        else:
            assert set(det.extras) == {"sigma"}
            assert _weighted(det.extras["sigma"]) == pytest.approx(sigma, rel=1e-6)


def test_single_stage_baseline_gives_the_recorded_outputs():
    torch.manual_seed(0)
    model = build_faster_rcnn(_small())
    _reinit_heads(model, 1)
    losses, out = _run(model)
    assert losses == pytest.approx(
        {"loss_rcnn_box": 0.14372318983078003, "loss_rcnn_cls": 1.2458744049072266,
         "loss_rpn_box": 0.026355698704719543, "loss_rpn_cls": 0.8241863250732422},
        rel=1e-6,
    )
    _check_detections(
        out.detections,
        [(9256, 5991765.445878029, 1306.7911430597305, None), (10256, 5473183.865595885, 1236.9678239375353, None)],
    )


def test_kl_rpn_gives_the_recorded_outputs_and_sigma_per_detection():
    torch.manual_seed(0)
    model = build_model(KLRPNConfig(base=_small(rpn_score_thresh=None)), num_classes=3)
    _reinit_heads(model, 1)
    losses, out = _run(model)
    assert losses == pytest.approx(
        {"loss_rcnn_box": 1.3834233283996582, "loss_rcnn_cls": 12.335309028625488, "loss_rpn_kl": 1.276974081993103},
        rel=1e-6,
    )
    _check_detections(
        out.detections,
        [(9041, 5234855.794881642, 1325.792479261756, 77380.30665121973),
         (11104, 4285525.918868646, 1200.5624917000532, 75785.56088662148)],
    )
    assert model.roi_heads.stages[0].loss_weight == 10.0 and model.rpn.loss_weight == 1.0


def test_state_dict_keys_of_the_box_branch_are_unchanged():
    model = build_faster_rcnn(_small())
    keys = {k for k in model.state_dict() if k.startswith("roi_heads.")}
    assert keys == {
        f"roi_heads.{part}.{kind}"
        for part in ("box_head.fc6", "box_head.fc7", "box_predictor.cls_score", "box_predictor.bbox_pred")
        for kind in ("weight", "bias")
    }
    assert model.roi_heads.box_head is model.roi_heads.stages[0].head
    assert model.roi_heads.box_predictor is model.roi_heads.stages[0].predictor


def _cascade(cfg: FasterRCNNConfig):
    """Cascade R-CNN's box branch (Cai and Vasconcelos, CVPR 2018): 3 class-agnostic stages at
    IoU 0.5 / 0.6 / 0.7, coder weights (10, 10, 5, 5) / (20, 20, 10, 10) / (30, 30, 15, 15),
    losses weighted 1 / 0.5 / 0.25; the later stages train on every box the previous stage
    refined (detectron2's cascade), one pooler for all."""
    settings = [
        ((10.0, 10.0, 5.0, 5.0), 0.5, 1.0),
        ((20.0, 20.0, 10.0, 10.0), 0.6, 0.5),
        ((30.0, 30.0, 15.0, 15.0), 0.7, 0.25),
    ]

    def stages(in_channels, names):
        pooler = build_box_pooler(cfg, names)
        built = []
        for k, (weights, iou, loss_weight) in enumerate(settings):
            later = k > 0
            built.append(
                build_box_stage(
                    cfg, in_channels, names, pooler=pooler, box_weights=weights, iou_thresholds=(iou, iou),
                    class_agnostic=True, loss_name="rcnn" if k == 0 else f"rcnn_stage{k + 1}",
                    loss_weight=loss_weight, sampler=AllCandidates() if later else None,
                    add_gt_to_proposals=False if later else None, name=f"stage{k + 1}",
                )
            )
        return built

    return stages


def _cascade_model(**overrides):
    cfg = _small(box_score_thresh=0.0, **overrides)
    torch.manual_seed(0)
    model = build_faster_rcnn(cfg, box_stages=_cascade(cfg), roi_postprocess=build_box_postprocess(cfg, (0, 1, 2)))
    _reinit_heads(model, 2)
    return model


def test_cascade_of_three_stages_trains_and_detects():
    model = _cascade_model()
    keys = {k.rsplit(".", 2)[0] for k in model.state_dict() if k.startswith("roi_heads.")}
    assert keys == {f"roi_heads.{p}{s}" for p in ("box_head", "box_predictor") for s in ("", "_1", "_2")}
    assert model.roi_heads.box_predictor_2.bbox_pred.out_features == 4  # class-agnostic
    images, targets = two_image_batch()
    model.train()
    out = model(images, targets, generator=torch.Generator().manual_seed(0))
    assert set(out.losses) == {
        "loss_rpn_cls", "loss_rpn_box", "loss_rcnn_cls", "loss_rcnn_box",
        "loss_rcnn_stage2_cls", "loss_rcnn_stage2_box", "loss_rcnn_stage3_cls", "loss_rcnn_stage3_box",
    }
    out.total_loss().backward()
    for k in ("", "_1", "_2"):
        assert float(getattr(model.roi_heads, f"box_predictor{k}").cls_score.weight.grad.abs().sum()) > 0
    passes = out.raw["box_stages"]
    assert [p["name"] for p in passes] == ["stage1", "stage2", "stage3"]
    # stage 2 trains on all boxes stage 1 refined from its sampled RoIs (detached, clipped,
    # none empty), labelled at IoU 0.6 without sampling again
    first, second = passes[0], passes[1]
    coder = model.roi_heads.stages[0].coder
    for i, size in enumerate(out.raw["image_sizes"]):
        rows = slice(sum(r.shape[0] for r in first["rois"][:i]), sum(r.shape[0] for r in first["rois"][: i + 1]))
        refined = clip_boxes(coder.decode(first["box_regression"][rows].detach(), first["rois"][i]), size)
        keep = (refined[:, 2] > refined[:, 0]) & (refined[:, 3] > refined[:, 1])
        torch.testing.assert_close(second["rois"][i], refined[keep])
        gt = targets[i]["boxes"] * torch.tensor([size[1] / images[i].shape[2], size[0] / images[i].shape[1]] * 2)
        best = box_iou(gt, second["rois"][i]).max(dim=0).values
        labels = second["sampled_labels"][i]
        assert bool((labels[best >= 0.6 + 1e-4] > 0).all()) and bool((labels[best < 0.6 - 1e-4] == 0).all())

    model.eval()
    with torch.no_grad():
        out = model(images)
    passes = out.raw["box_stages"]
    assert len(passes) == 3
    probabilities = sum(F.softmax(p["class_logits"], dim=1) for p in passes) / 3
    start = 0
    for i, det in enumerate(out.detections):
        assert len(det) > 0
        count = passes[0]["rois"][i].shape[0]
        # each stage re-pools the boxes the previous one refined, row for row
        for k in (1, 2):
            stage = model.roi_heads.stages[k - 1]
            rows = slice(start, start + count)
            refined = clip_boxes(stage.coder.decode(passes[k - 1]["box_regression"][rows], passes[k - 1]["rois"][i]),
                                 out.raw["image_sizes"][i])
            torch.testing.assert_close(passes[k]["rois"][i], refined)
        # every score is a class probability averaged over the three stages
        averaged = probabilities[start:start + count, 1:]
        for score, label in zip(det.scores, det.labels):
            assert bool(torch.isclose(averaged[:, label - 1], score, atol=1e-6).any())
        start += count


def test_stage_loss_weights_multiply_each_stages_losses():
    images, targets = two_image_batch()
    weighted = _cascade_model().train()
    plain_stages = _cascade(_small(box_score_thresh=0.0))

    def unweighted(in_channels, names):
        return [dataclasses.replace(s, loss_weight=1.0) for s in plain_stages(in_channels, names)]

    cfg = _small(box_score_thresh=0.0, rpn_loss_weight=2.0)
    plain = build_faster_rcnn(cfg, box_stages=unweighted)
    plain.load_state_dict(weighted.state_dict())
    plain.train()
    with torch.no_grad():
        a = weighted(images, targets, generator=torch.Generator().manual_seed(1)).losses
        b = plain(images, targets, generator=torch.Generator().manual_seed(1)).losses
    for key, factor in [("loss_rpn_cls", 0.5), ("loss_rcnn_cls", 1.0), ("loss_rcnn_stage2_box", 0.5),
                        ("loss_rcnn_stage3_cls", 0.25)]:
        assert float(a[key]) == pytest.approx(factor * float(b[key]), rel=1e-6)


class _ShiftedGT:
    """A box source: each GT box shifted right by ``dx`` pixels, twice (ignores the proposals)."""

    def __init__(self, dx: float) -> None:
        self.dx = dx
        self.calls = 0

    def __call__(self, proposals, targets, generator, image_sizes):
        self.calls += 1
        assert isinstance(generator, torch.Generator) and len(image_sizes) == len(targets)
        shift = torch.tensor([self.dx, 0.0, self.dx, 0.0])
        return [torch.cat([t["boxes"] + shift, t["boxes"] - shift]) for t in targets]


def test_a_box_source_replaces_the_proposals_in_training_and_fields_reach_the_detections():
    cfg = _small(box_score_thresh=0.0)
    source = _ShiftedGT(2.0)

    def stages(in_channels, names):
        first = build_box_stage(cfg, in_channels, names)
        second = build_box_stage(cfg, in_channels, names, class_agnostic=True, sampler=AllCandidates(),
                                 add_gt_to_proposals=False, loss_name="iou", name="iou")
        second = dataclasses.replace(
            second, input="proposals", box_source=source,
            fields=lambda outputs: {"second_logits": outputs["class_logits"]},
        )
        return [first, second]

    torch.manual_seed(0)
    model = build_faster_rcnn(cfg, box_stages=stages)
    _reinit_heads(model, 3)
    images, targets = two_image_batch()
    model.train()
    out = model(images, targets, generator=torch.Generator().manual_seed(0))
    assert source.calls == 1 and {"loss_iou_cls", "loss_iou_box", "loss_rcnn_cls"} <= set(out.losses)
    second = out.raw["box_stages"][1]
    for i, size in enumerate(out.raw["image_sizes"]):
        scale = torch.tensor([size[1] / images[i].shape[2], size[0] / images[i].shape[1]] * 2)
        gt = targets[i]["boxes"] * scale
        shift = torch.tensor([2.0, 0.0, 2.0, 0.0])
        # the source sees the targets in network-input pixels
        torch.testing.assert_close(second["rois"][i], torch.cat([gt + shift, gt - shift]))

    model.eval()
    with torch.no_grad():
        out = model(images)
    assert source.calls == 1  # training only
    first, second = out.raw["box_stages"]
    for i, det in enumerate(out.detections):
        assert len(det) > 0 and set(det.extras) == {"second_logits"}
        # the second stage ran on the proposals themselves
        torch.testing.assert_close(second["rois"][i], out.raw["rois"][i])
        # scores come from the last pass; each detection carries that pass's logits of its RoI
        probs = F.softmax(det.extras["second_logits"], dim=1)
        torch.testing.assert_close(probs[torch.arange(len(det)), det.labels], det.scores)
        offset = sum(r.shape[0] for r in out.raw["rois"][:i])
        rows = second["class_logits"][offset:offset + out.raw["rois"][i].shape[0]]
        assert bool((det.extras["second_logits"][:, None, :] == rows[None]).all(dim=2).any(dim=1).all())


def test_an_inference_stage_repools_refined_boxes_with_shared_modules():
    cfg = _small(box_score_thresh=0.0)

    def stages(in_channels, names):
        first = build_box_stage(cfg, in_channels, names)
        again = dataclasses.replace(first, in_training=False, name="repool")
        return [first, again]

    torch.manual_seed(0)
    model = build_faster_rcnn(cfg, box_stages=stages)
    baseline = build_faster_rcnn(cfg)
    assert list(model.state_dict()) == list(baseline.state_dict())  # a shared module is registered once
    _reinit_heads(model, 4)
    images, targets = two_image_batch()
    model.train()
    losses = model(images, targets, generator=torch.Generator().manual_seed(0)).losses
    assert set(losses) == {"loss_rpn_cls", "loss_rpn_box", "loss_rcnn_cls", "loss_rcnn_box"}
    model.eval()
    with torch.no_grad():
        out = model(images)
        first, second = out.raw["box_stages"]
        stage = model.roi_heads.stages[0]
        probs = F.softmax(first["class_logits"], dim=1)
        labels = probs[:, 1:].argmax(dim=1) + 1
        rows = torch.arange(labels.shape[0])
        offsets = first["box_regression"].view(labels.shape[0], -1, 4)[rows, labels]
        refined = stage.coder.decode(offsets, torch.cat(first["rois"]))
        sizes = out.raw["image_sizes"]
        counts = [r.shape[0] for r in first["rois"]]
        expected = [clip_boxes(b, s) for b, s in zip(refined.split(counts), sizes)]
        for got, want in zip(second["rois"], expected):
            torch.testing.assert_close(got, want)
        again = stage.predict(model.backbone(model.transform(images)[0].tensor), expected, sizes)
    torch.testing.assert_close(second["class_logits"], again["class_logits"])


def test_repeated_loss_names_and_conflicting_parts_are_refused():
    cfg = _small()

    def twice(in_channels, names):
        return [build_box_stage(cfg, in_channels, names), build_box_stage(cfg, in_channels, names)]

    model = build_faster_rcnn(cfg, box_stages=twice)
    images, targets = two_image_batch()
    with pytest.raises(ValueError, match="repeats loss names"):
        model.train()(images, targets, generator=torch.Generator().manual_seed(0))
    with pytest.raises(ConfigError, match="default box stage"):
        build_roi_heads(cfg, 32, ["0"], stages=twice, box_loss=torch.nn.functional.l1_loss)
    with pytest.raises(ConfigError, match="not both"):
        build_box_stage(cfg, 32, ["0"], box_loss=torch.nn.functional.l1_loss, loss=FastRCNNLoss())
    with pytest.raises(ValueError, match="input"):
        dataclasses.replace(twice(32, ["0"])[0], input="refined")


class _AddOne(nn.Module):
    def forward(self, features):
        return type(features)((k, v + 1) for k, v in features.items())


def test_builder_parts_neck_rpn_head_sampler_and_box_loss():
    seen = {}

    def neck(backbone):
        seen["channels"] = backbone.out_channels
        return _AddOne()

    def head(in_channels, num_anchors):
        seen["head"] = (in_channels, num_anchors)
        from workbench.modeling import RPNHead

        return RPNHead(in_channels, num_anchors)

    def l1(pred, target):
        return (pred - target).abs()

    class _Sampler:
        def __call__(self, assignment, generator=None, losses=None):
            seen["sampled"] = seen.get("sampled", 0) + 1
            return assignment.labels > 0, assignment.labels == 0

    model = build_faster_rcnn(_small(), neck=neck, rpn_head=head, roi_sampler=_Sampler(), box_loss=l1,
                              rcnn_loss_weight=3.0)
    assert seen == {"channels": 32, "head": (32, 3)}
    assert isinstance(model.backbone.neck[1], _AddOne)
    stage = model.roi_heads.stages[0]
    assert stage.loss.box_loss is l1 and stage.loss_weight == 3.0
    images, targets = two_image_batch()
    model.train()(images, targets, generator=torch.Generator().manual_seed(0))
    assert seen["sampled"] == 2  # one call per image


def test_kl_rpn_keeps_one_place_for_the_second_stage_weight():
    with pytest.raises(ConfigError, match="base.rcnn_loss_weight"):
        KLRPNConfig(base=_small(rcnn_loss_weight=2.0))
    cfg = KLRPNConfig(base=_small(rpn_score_thresh=None), rcnn_loss_weight=4.0)
    model = build_model(cfg, num_classes=3)
    assert [s.loss_weight for s in model.roi_heads.stages] == [4.0]
