"""Parts of the two-stage detector: layout, transform, backbones, assignment, injection points."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from torch import nn
from torchvision.models.detection.anchor_utils import AnchorGenerator as TorchvisionAnchorGenerator
from torchvision.models.detection.image_list import ImageList
from torchvision.models.detection.roi_heads import fastrcnn_loss
from torchvision.models.detection.rpn import concat_box_prediction_layers
from torchvision.models.detection.transform import GeneralizedRCNNTransform

from workbench.errors import ConfigError
from workbench.modeling import (
    AnchorGenerator,
    ExtraHeadOutput,
    FastRCNNLoss,
    FasterRCNNConfig,
    ImageTransform,
    MatcherSettings,
    ProposalSettings,
    RegionProposalNetwork,
    RPNHead,
    RPNLoss,
    RandomSampler,
    assign_to_gt,
    build_backbone,
    build_faster_rcnn,
    flatten_levels,
    select_detections,
)
from workbench.modeling.backbones import MAX_TRAINABLE_LAYERS
from workbench.modeling.faster_rcnn import proposal_settings
from workbench.ops import BoxCoder

from detector_support import one_thread, small_faster_rcnn  # noqa: F401 (one_thread: autouse)


def _small(**overrides) -> FasterRCNNConfig:
    values = dict(num_classes=2, rpn_pre_nms_top_n_train=2000, rpn_post_nms_top_n_train=200, box_score_thresh=0.0)
    return small_faster_rcnn(**{**values, **overrides})


def _target():
    return {"boxes": torch.tensor([[8.0, 10.0, 60.0, 70.0]]), "labels": torch.tensor([2])}


def test_flatten_levels_matches_torchvision_layout():
    g = torch.Generator().manual_seed(0)
    cls = [torch.randn(2, 3, 5, 4, generator=g), torch.randn(2, 3, 2, 3, generator=g)]
    reg = [torch.randn(2, 12, 5, 4, generator=g), torch.randn(2, 12, 2, 3, generator=g)]
    tv_cls, tv_reg = concat_box_prediction_layers(cls, reg)
    assert torch.equal(flatten_levels(cls, [3, 3]).reshape(-1, 1), tv_cls)
    assert torch.equal(flatten_levels(reg, [3, 3]).reshape(-1, 4), tv_reg)


def test_anchor_generator_matches_torchvision():
    sizes, ratios = ((32.0,), (64.0,)), ((0.5, 1.0, 2.0),) * 2
    features = [torch.zeros(1, 8, 16, 20), torch.zeros(1, 8, 8, 10)]
    tv = TorchvisionAnchorGenerator(sizes, ratios)
    expected = tv(ImageList(torch.zeros(1, 3, 64, 80), [(60, 75)]), features)[0]
    ours = AnchorGenerator(sizes, ratios)((64, 80), [(16, 20), (8, 10)])
    assert ours[0].shape == (16 * 20 * 3, 4)
    assert torch.equal(torch.cat(ours), expected)
    assert AnchorGenerator(((128.0, 256.0, 512.0),), ((0.5, 1.0, 2.0),)).num_anchors_per_location() == [9]


def test_transform_matches_torchvision_and_maps_boxes():
    images = [torch.rand(3, 50, 70), torch.rand(3, 90, 40)]
    targets = [{"boxes": torch.tensor([[7.0, 5.0, 70.0, 50.0]]), "labels": torch.tensor([1])}] * 2
    ours = ImageTransform(96, 128).eval()
    tv = GeneralizedRCNNTransform(96, 128, [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]).eval()
    batch, new_targets = ours(images, targets)
    tv_list, tv_targets = tv(images, [dict(t) for t in targets])
    assert torch.equal(batch.tensor, tv_list.tensors)
    assert batch.image_sizes == [tuple(s) for s in tv_list.image_sizes]
    assert batch.padded_size[0] % 32 == 0 and batch.padded_size[1] % 32 == 0
    assert batch.original_sizes == [(50, 70), (90, 40)]
    for a, b in zip(new_targets, tv_targets):
        torch.testing.assert_close(a["boxes"], b["boxes"])
    assert torch.equal(targets[0]["boxes"], torch.tensor([[7.0, 5.0, 70.0, 50.0]]))  # inputs untouched
    # several training sizes: the generator picks one per image
    multi = ImageTransform((64, 96), 1000).train()
    sizes = {min(multi([images[0]], generator=torch.Generator().manual_seed(s))[0].image_sizes[0]) for s in range(8)}
    assert sizes == {64, 96}
    with pytest.raises(ValueError, match="float"):
        ours([torch.zeros(3, 8, 8, dtype=torch.uint8)])


@pytest.mark.parametrize(
    "name, channels, names",
    [
        ("resnet18_fpn", 256, ("0", "1", "2", "3", "pool")),
        ("mobilenet_v2_fpn", 256, ("0", "1", "2", "3", "pool")),
        ("vgg16", 512, ("0",)),
    ],
)
def test_backbones(name, channels, names):
    backbone = build_backbone(name)
    with torch.no_grad():
        features = backbone(torch.rand(1, 3, 64, 96))
    assert tuple(features) == names == backbone.feature_names
    for feature, stride in zip(features.values(), backbone.strides):
        assert feature.shape[1] == channels == backbone.out_channels
        assert feature.shape[-2:] == (-(-64 // stride), -(-96 // stride))
    frozen = build_backbone(name, trainable_layers=0)
    assert not any(p.requires_grad for p in frozen.body.parameters())
    everything = build_backbone(name, trainable_layers=MAX_TRAINABLE_LAYERS[name])
    assert all(p.requires_grad for p in everything.body.parameters())


def test_backbone_weights_from_a_local_file(tmp_path):
    from torchvision.models import resnet18

    torch.manual_seed(3)
    source = resnet18()
    path = tmp_path / "r18.pth"
    torch.save({"state_dict": source.state_dict()}, path)
    backbone = build_backbone("resnet18_fpn", weights=str(path))
    assert torch.equal(backbone.body.conv1.weight, source.conv1.weight)
    assert torch.equal(backbone.body.layer2[0].bn1.running_var, source.layer2[0].bn1.running_var)
    with pytest.raises(ConfigError, match="IMAGENET1K_V1"):
        build_backbone("resnet18_fpn", weights="no-such-file.pth")
    bad = tmp_path / "bad.pth"
    torch.save({"conv1.weight": torch.zeros(1)}, bad)
    with pytest.raises(ConfigError, match="bad.pth: does not fit"):
        build_backbone("resnet18_fpn", weights=str(bad))
    with pytest.raises(ConfigError, match="unknown backbone"):
        build_backbone("resnet7")


def test_vgg16_and_mobilenet_detectors_run():
    images = [torch.rand(3, 96, 128)]
    vgg = build_faster_rcnn(_small(backbone="vgg16", anchor_sizes=((64.0, 128.0, 256.0),)))
    assert vgg.rpn.head.cls_logits.out_channels == 9
    out = vgg.train()(images, [_target()], generator=torch.Generator().manual_seed(0))
    assert set(out.losses) == {"loss_rpn_cls", "loss_rpn_box", "loss_rcnn_cls", "loss_rcnn_box"}
    with torch.no_grad():
        assert len(vgg.eval()(images).detections) == 1
    mobile = build_faster_rcnn(_small(backbone="mobilenet_v2_fpn"))
    out = mobile.train()(images, [_target()], generator=torch.Generator().manual_seed(0))
    out.total_loss().backward()
    with pytest.raises(ConfigError, match="anchor_sizes"):
        build_faster_rcnn(_small(backbone="vgg16"))


def test_proposal_settings_are_the_rpn_fields_of_the_config():
    cfg = FasterRCNNConfig(rpn_pre_nms_top_n_train=7, rpn_pre_nms_top_n_test=6, rpn_post_nms_top_n_train=5,
                           rpn_post_nms_top_n_test=4, rpn_nms_thresh=0.6, rpn_min_size=2.0, rpn_score_thresh=None)
    assert proposal_settings(cfg) == ProposalSettings(
        pre_nms_top_n_train=7, pre_nms_top_n_test=6, post_nms_top_n_train=5, post_nms_top_n_test=4,
        nms_thresh=0.6, min_size=2.0, score_thresh=None,
    )
    assert build_faster_rcnn(small_faster_rcnn(rpn_nms_thresh=0.6)).rpn.settings.nms_thresh == 0.6
    # torchvision's fasterrcnn_resnet50_fpn: rpn_pre_nms_top_n_train/test, rpn_post_nms_top_n_train/test,
    # rpn_nms_thresh, its RPN's min_size and rpn_score_thresh
    assert proposal_settings(FasterRCNNConfig()) == ProposalSettings(2000, 1000, 2000, 1000, 0.7, 1e-3, 0.0)


def test_assignment_labels_ignore_and_empty():
    matcher = MatcherSettings(0.5, 0.4, False)
    candidates = torch.tensor([[0.0, 0, 10, 10], [0, 0, 10, 9], [20, 20, 30, 30], [50, 50, 60, 60], [0, 0, 10, 4.5]])
    gt = torch.tensor([[0.0, 0, 10, 10], [20, 20, 30, 30]])
    a = assign_to_gt(candidates, gt, matcher, gt_labels=torch.tensor([3, 1]))
    assert a.labels.tolist() == [3, 3, 1, 0, -1]  # best IoU 1, 0.9, 1, 0, 0.45
    assert a.matched_gt[:3].tolist() == [0, 0, 1]
    torch.testing.assert_close(a.max_iou[:4], torch.tensor([1.0, 0.9, 1.0, 0.0]))
    ignored = assign_to_gt(candidates, gt, matcher, gt_labels=torch.tensor([3, 1]), gt_ignore=torch.tensor([False, True]))
    assert ignored.labels.tolist()[:4] == [3, 3, -1, 0]
    empty = assign_to_gt(candidates, torch.zeros((0, 4)), matcher, gt_labels=torch.zeros(0, dtype=torch.int64))
    assert empty.labels.tolist() == [0] * 5
    pos, neg = RandomSampler(4, 0.25)(a, torch.Generator().manual_seed(0))
    assert int(pos.sum()) == 1 and int(neg.sum()) == 1  # one positive allowed, one negative exists


def test_select_detections_per_class_nms():
    boxes = torch.tensor([[[0.0, 0, 1, 1], [0, 0, 10, 10], [0, 0, 10, 10]],
                          [[0.0, 0, 1, 1], [1, 0, 11, 10], [1, 0, 11, 10]],
                          [[0.0, 0, 1, 1], [40, 40, 45, 45], [40, 40, 40.001, 45]]])
    scores = torch.tensor([[0.1, 0.6, 0.3], [0.1, 0.5, 0.4], [0.1, 0.05, 0.8]])
    det = select_detections(boxes, scores, (30, 30), 0.05, 0.5, 100, 1e-2)
    # row 1 class 1 overlaps row 0 class 1 (IoU 0.82): suppressed; class 2 keeps one box; the
    # clipped row-2 boxes are degenerate and dropped; score 0.05 is not above the threshold
    assert det.labels.tolist() == [1, 2]
    torch.testing.assert_close(det.scores, torch.tensor([0.6, 0.4]))
    top1 = select_detections(boxes, scores, (30, 30), 0.05, 0.5, 1, 1e-2)
    assert len(top1) == 1


def test_losses_match_torchvision_formulas():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(12, 4, generator=g)
    regression = torch.randn(12, 16, generator=g)
    labels = torch.tensor([0, 1, 2, 3, 0, 0, 1, 0, 0, 2, 0, 0])
    targets = torch.randn(12, 4, generator=g)
    ours = FastRCNNLoss()(logits, regression, labels, targets)
    cls, box = fastrcnn_loss(logits, regression, [labels], [targets])
    torch.testing.assert_close(ours["loss_rcnn_cls"], cls)
    torch.testing.assert_close(ours["loss_rcnn_box"], box)
    objectness = torch.randn(10, 1, generator=g)
    deltas = torch.randn(10, 4, generator=g)
    rpn_labels = torch.tensor([1.0, 0, 0, 1, 0, 0, 0, 0, 1, 0])
    rpn = RPNLoss()({"objectness": objectness, "deltas": deltas}, rpn_labels, targets[:10])
    expected_box = torch.nn.functional.smooth_l1_loss(deltas[[0, 3, 8]], targets[[0, 3, 8]], beta=1 / 9, reduction="sum") / 10
    torch.testing.assert_close(rpn["loss_rpn_box"], expected_box)
    torch.testing.assert_close(
        rpn["loss_rpn_cls"], torch.nn.functional.binary_cross_entropy_with_logits(objectness[:, 0], rpn_labels)
    )


class _NegatedLogit:
    """A scoring that ranks by minus the logit and reports the key itself (no sigmoid)."""

    def rank(self, outputs):
        return -outputs["objectness"][..., 0]

    def score(self, rank):
        return rank


class _CountingHead(nn.Module):
    def forward(self, context):
        count = sum(int(p.shape[0]) for p in context.proposals)
        return ExtraHeadOutput(raw={"num_proposals": count}, losses={"loss_extra_dummy": torch.tensor(0.5)})


def test_injected_scoring_and_extra_head():
    model = build_faster_rcnn(_small())
    rpn = model.rpn
    model.rpn = RegionProposalNetwork(
        rpn.head, rpn.anchor_generator, box_coder=rpn.box_coder, matcher=rpn.matcher, sampler=rpn.sampler,
        scoring=_NegatedLogit(), loss=rpn.loss,
        settings=dataclasses.replace(proposal_settings(FasterRCNNConfig()), pre_nms_top_n_test=50,
                                     post_nms_top_n_test=40, score_thresh=None),
    )
    model.roi_heads.extra_heads["counter"] = _CountingHead()
    with torch.no_grad():
        model.rpn.head.cls_logits.bias.fill_(3.0)  # logits near 3: negated keys near -3
        out = model.eval()(
            [torch.rand(3, 96, 128)], [_target()], generator=torch.Generator().manual_seed(0)
        )
    scores = out.raw["proposal_scores"][0]
    assert scores.shape[0] == 40
    assert float(scores.max()) < -2.0  # the key itself, never squashed into (0, 1)
    assert bool((scores[:-1] >= scores[1:]).all())
    assert out.raw["counter"] == {"num_proposals": 40}
    assert float(out.losses["loss_extra_dummy"]) == 0.5
    assert isinstance(model.rpn.head, RPNHead)
    assert BoxCoder() == BoxCoder(weights=(1.0, 1.0, 1.0, 1.0))


def test_vgg16_weights_from_a_classification_checkpoint(tmp_path):
    """A VGG-16 checkpoint holds ``features.*`` and ``classifier.*``; the backbone takes the former."""
    torch.manual_seed(4)
    source = build_backbone("vgg16").body
    state = {f"features.{k}": v for k, v in source.state_dict().items()}
    state["classifier.0.weight"] = torch.zeros(2, 3)
    path = tmp_path / "vgg16.pth"
    torch.save(state, path)
    backbone = build_backbone("vgg16", weights=str(path))
    assert torch.equal(backbone.body["28"].weight, source["28"].weight)  # conv5_3
    assert "30" not in dict(backbone.body.named_children())  # stops before the last max-pool


class _AddOne(nn.Module):
    def forward(self, features):
        return type(features)((k, v + 1) for k, v in features.items())


def test_with_neck_appends_a_module_after_the_fpn():
    backbone = build_backbone("resnet18_fpn", fpn_channels=16)
    extended = backbone.with_neck(_AddOne())
    assert extended.body is backbone.body and extended.feature_names == backbone.feature_names
    x = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        plain, more = backbone(x), extended(x)
    assert list(more) == list(plain)
    for name in plain:
        torch.testing.assert_close(more[name], plain[name] + 1)
