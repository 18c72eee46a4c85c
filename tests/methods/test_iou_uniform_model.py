"""IoU-uniform R-CNN's model: its box stages, losses, switches and detections, on tiny inputs."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torchvision.ops import box_iou as tv_box_iou

from workbench.errors import ConfigError
from workbench.methods.iou_uniform.model import (
    IOU_PRED,
    IOU_PRED_FIRST,
    IoUHeadLoss,
    IoUUniformConfig,
    UniformIoUSource,
    build_iou_uniform_faster_rcnn,
    interval_weight,
)
from workbench.modeling.transform import rescale_boxes
from workbench.ops import BoxCoder, clip_boxes

from detector_support import detections_by_hand, one_thread, small_faster_rcnn, two_image_batch  # noqa: F401 (one_thread: autouse)


def _model(**overrides):
    torch.manual_seed(0)
    return build_iou_uniform_faster_rcnn(IoUUniformConfig(base=small_faster_rcnn(), **overrides))


def _net_targets(out, images, targets):
    """The targets in network-input pixels."""
    scaled = []
    for i, size in enumerate(out.raw["image_sizes"]):
        scale = torch.tensor([size[1] / images[i].shape[2], size[0] / images[i].shape[1]] * 2)
        scaled.append(targets[i]["boxes"] * scale)
    return scaled


SWITCHES = {
    "default": {},
    "rpn_samples": {"generated_samples": False},
    "equal": {"sample_count": "equal"},
    "double": {"sample_count": "double"},
    "no_interval_weights": {"use_interval_weights": False},
    "no_repool": {"repool": False},
    "class_score_nms": {"nms_score": "class"},
}


@pytest.mark.parametrize("switch", sorted(SWITCHES))
def test_a_training_step_gives_finite_losses_for_every_switch(switch):
    model = _model(**SWITCHES[switch]).train()
    images, targets = two_image_batch()
    out = model(images, targets, generator=torch.Generator().manual_seed(0))
    assert set(out.losses) == {"loss_rpn_cls", "loss_rpn_box", "loss_rcnn_cls", "loss_iouhead_box", "loss_iouhead_iou"}
    assert all(math.isfinite(float(v.detach())) for v in out.losses.values())
    assert float(out.losses["loss_iouhead_box"].detach()) > 0 and float(out.losses["loss_iouhead_iou"].detach()) > 0
    out.total_loss().backward()
    heads = model.roi_heads
    assert heads.box_predictor.cls_predictor.cls_score.weight.grad.abs().sum() > 0
    assert heads.box_predictor_1.bbox_pred.weight.grad.abs().sum() > 0
    assert heads.box_predictor_1.iou_pred.weight.grad.abs().sum() > 0
    assert not hasattr(heads.box_predictor.cls_predictor, "bbox_pred")  # the classification does not regress
    # the first stage's IoU head is the one the generated samples train, registered once
    assert heads.stages[0].predictor._box_predictor[0] is heads.box_predictor_1
    assert len(dict(model.named_parameters(remove_duplicate=False))) == len(list(model.parameters()))
    assert [p["name"] for p in out.raw["box_stages"]] == ["rcnn", "iou"]
    # in training the first stage only classifies: the IoU head runs on the generated samples
    assert set(out.raw["box_stages"][0]) == {"name", "rois", "class_logits", "sampled_labels"}


def test_the_iou_head_trains_on_generated_samples_of_uniform_iou():
    model = _model().train()
    images, targets = two_image_batch()
    out = model(images, targets, generator=torch.Generator().manual_seed(0))
    iou_pass = out.raw["box_stages"][1]
    for i, gt in enumerate(_net_targets(out, images, targets)):
        rois = iou_pass["rois"][i]
        iou = tv_box_iou(gt, rois)
        best = iou.max(dim=0).values
        assert bool((best >= 0.5).all()) and bool((iou_pass["sampled_labels"][i] > 0).all())
        # at most 16 per GT and interval, and the intervals are evenly filled
        intervals = torch.bucketize(best, torch.tensor([0.6, 0.7, 0.8]), right=True)
        counts = torch.bincount(iou.argmax(dim=0) * 4 + intervals, minlength=4 * gt.shape[0])
        assert int(counts.max()) <= 16 and int(counts.sum()) == rois.shape[0] >= 12 * gt.shape[0]
        size = out.raw["image_sizes"][i]
        assert bool((rois[:, 2] <= size[1]).all() and (rois[:, 3] <= size[0]).all() and (rois >= 0).all())


@pytest.mark.parametrize("count,factor", [("equal", 1), ("double", 2)])
def test_sample_count_follows_the_classification_stages_positives(count, factor):
    model = _model(sample_count=count).train()
    images, targets = two_image_batch()
    out = model(images, targets, generator=torch.Generator().manual_seed(0))
    cls_pass, iou_pass = out.raw["box_stages"]
    for i in range(2):
        positives = int((cls_pass["sampled_labels"][i] > 0).sum())
        assert positives > 0 and iou_pass["rois"][i].shape[0] == factor * positives


def test_without_generated_samples_the_iou_head_trains_on_positive_proposals():
    model = _model(generated_samples=False).train()
    images, targets = two_image_batch()
    out = model(images, targets, generator=torch.Generator().manual_seed(0))
    iou_pass = out.raw["box_stages"][1]
    for i, gt in enumerate(_net_targets(out, images, targets)):
        rois = iou_pass["rois"][i]
        assert 0 < rois.shape[0] <= 16  # the positives of a 64-RoI sample with a quarter positives
        assert bool((tv_box_iou(gt, rois).max(dim=0).values >= 0.5).all())
        # the GT boxes are among the candidates, as for the classification stage
        proposals_and_gt = torch.cat([out.raw["proposals"][i], gt])
        assert bool((tv_box_iou(rois, proposals_and_gt).max(dim=1).values > 0.9999).all())


def test_interval_weights_reach_the_loss_by_hand():
    # four positive samples and one background; offsets differ from their targets by 0.5 or 2
    # in one coordinate: smooth L1 (beta 1) 0.125 and 1.5
    box = torch.zeros(5, 4)
    box[0, 0], box[1, 1], box[2, 2], box[3, 3], box[4, 0] = 0.5, 2.0, 0.5, 2.0, 9.0
    targets = torch.zeros(5, 4)
    labels = torch.tensor([1, 2, 1, 3, 0])
    true_iou = torch.tensor([0.55, 0.65, 0.75, 0.9, 0.2])
    pred_iou = torch.tensor([0.55, 0.65, 0.25, 0.9, 0.0])  # off by 0.5 for the third: 0.5 - 0.25 = 0.25
    loss = IoUHeadLoss()(box, pred_iou, labels, targets, true_iou)
    weighted = (1.0 * 0.125 + 1.5 * 1.5 + 3.0 * 0.125 + 3.0 * 1.5) / 4
    assert float(loss["loss_iouhead_box"]) == pytest.approx(weighted)
    assert float(loss["loss_iouhead_iou"]) == pytest.approx(0.25 / 4)
    plain = IoUHeadLoss(interval_weights=None)(box, pred_iou, labels, targets, true_iou)
    assert float(plain["loss_iouhead_box"]) == pytest.approx((0.125 + 1.5 + 0.125 + 1.5) / 4)
    code = IoUHeadLoss(interval_weights=(1.0, 1.5, 2.0, 3.0))(box, pred_iou, labels, targets, true_iou)
    assert float(code["loss_iouhead_box"]) == pytest.approx((0.125 + 2.25 + 2.0 * 0.125 + 4.5) / 4)
    # no positive: zero, with a graph
    none = IoUHeadLoss()(box.requires_grad_(), pred_iou, torch.zeros(5, dtype=torch.int64), targets, true_iou)
    assert float(none["loss_iouhead_box"].detach()) == 0.0 and none["loss_iouhead_box"].requires_grad
    assert interval_weight(torch.tensor([0.4, 0.5, 0.6, 1.0]), ((0.5, 0.6), (0.6, 1.0)), (2.0, 5.0)).tolist() == [
        1.0, 2.0, 5.0, 5.0]


def test_interval_weights_reach_the_models_loss():
    """The same model, samples and generator with and without the weights: the box losses
    differ by the weights of the samples' intervals, recomputed from the raw outputs."""
    weighted, plain = _model(), _model(use_interval_weights=False)
    plain.load_state_dict(weighted.state_dict())
    images, targets = two_image_batch()
    weighted.train(), plain.train()
    with torch.no_grad():
        a = weighted(images, targets, generator=torch.Generator().manual_seed(4))
        b = plain(images, targets, generator=torch.Generator().manual_seed(4))
    iou_pass = a.raw["box_stages"][1]
    coder = BoxCoder(weights=(10.0, 10.0, 5.0, 5.0))
    per_sample, weights = [], []
    offsets = iou_pass["box_regression"].split([r.shape[0] for r in iou_pass["rois"]])
    for rois, pred, gt in zip(iou_pass["rois"], offsets, _net_targets(a, images, targets)):
        iou = tv_box_iou(gt, rois)
        best, matched = iou.max(dim=0)
        target = coder.encode(gt[matched], rois)
        per_sample.append(F.smooth_l1_loss(pred, target, beta=1.0, reduction="none").sum(dim=1))
        weights.append(torch.tensor([1.0, 1.5, 3.0, 3.0])[torch.bucketize(best, torch.tensor([0.6, 0.7, 0.8]),
                                                                          right=True)])
    per_sample, weights = torch.cat(per_sample), torch.cat(weights)
    assert float(b.losses["loss_iouhead_box"]) == pytest.approx(float(per_sample.mean()), rel=1e-5)
    assert float(a.losses["loss_iouhead_box"]) == pytest.approx(float((weights * per_sample).mean()), rel=1e-5)
    assert float(a.losses["loss_iouhead_iou"]) == pytest.approx(float(b.losses["loss_iouhead_iou"]), rel=1e-6)


def _by_hand(out, use_iou: bool, iou_pass_index: int):
    """Detections recomputed from the raw outputs: softmax(cls) x IoU, the boxes the first pass
    refined, threshold 0.05, per-class NMS 0.5 (torchvision), top 100; with each detection's RoI."""
    passes = out.raw["box_stages"]
    coder = BoxCoder(weights=(10.0, 10.0, 5.0, 5.0), clamp=math.log(1000.0 / 16))
    probs = F.softmax(passes[0]["class_logits"], dim=1)
    iou = passes[iou_pass_index]["iou"]
    scores = probs * iou[:, None] if use_iou else probs
    return detections_by_hand(out, passes[0], coder, scores)


@pytest.mark.parametrize("switch", ["default", "no_repool", "class_score_nms"])
def test_detections_are_scored_by_class_times_the_second_iou(switch):
    model = _model(**SWITCHES[switch]).eval()
    images, _ = two_image_batch()
    with torch.no_grad():
        out = model(images)
    passes = out.raw["box_stages"]
    repool = switch != "no_repool"
    assert [p["name"] for p in passes] == (["rcnn", "iou_repool"] if repool else ["rcnn"])
    torch.testing.assert_close(passes[0]["rois"], out.raw["rois"])  # the first pass runs on the proposals
    if repool:  # the second pass pooled the refined boxes of the first
        for i, det in enumerate(out.detections):
            coder = model.roi_heads.stages[0].coder
            rows = slice(sum(r.shape[0] for r in passes[0]["rois"][:i]),
                         sum(r.shape[0] for r in passes[0]["rois"][: i + 1]))
            refined = clip_boxes(coder.decode(passes[0]["box_regression"][rows], passes[0]["rois"][i]),
                                 out.raw["image_sizes"][i])
            torch.testing.assert_close(passes[1]["rois"][i], refined)
        assert not torch.equal(passes[1]["iou"], passes[0]["iou"])
    expected = _by_hand(out, use_iou=switch != "class_score_nms", iou_pass_index=-1)
    for det, hand in zip(out.detections, expected):
        assert len(det) > 0 and set(det.extras) == {IOU_PRED, IOU_PRED_FIRST}
        torch.testing.assert_close(det.boxes, hand.boxes)
        torch.testing.assert_close(det.scores, hand.scores)
        assert torch.equal(det.labels, hand.labels)
        torch.testing.assert_close(det.extras[IOU_PRED_FIRST], passes[0]["iou"][hand.roi])
        torch.testing.assert_close(det.extras[IOU_PRED], passes[-1]["iou"][hand.roi])


def test_without_repooling_the_first_iou_is_the_prediction():
    with_repool, without = _model(), _model(repool=False)
    without.load_state_dict(with_repool.state_dict())  # the re-pooling pass adds no parameters
    images, _ = two_image_batch()
    with torch.no_grad():
        a, b = with_repool.eval()(images), without.eval()(images)
    torch.testing.assert_close(a.raw["box_stages"][0]["iou"], b.raw["box_stages"][0]["iou"])
    for det in b.detections:
        assert torch.equal(det.extras[IOU_PRED], det.extras[IOU_PRED_FIRST])
    # re-pooling changes the scores, not the boxes the detections come from
    assert not torch.equal(a.detections[0].scores, b.detections[0].scores)


@pytest.mark.parametrize("switch", ["default", "class_score_nms"])
def test_the_repooling_gate_leaves_the_detections_exactly_as_without_it(switch):
    """Re-pooling only the RoIs whose class probability passes the score threshold changes no
    detection; the RoIs left out carry NaN for the second IoU, the others the full pass's."""
    import dataclasses

    from torch import nn

    from workbench.methods.iou_uniform.model import REPOOL_STAGE, IoUPredictor

    images, _ = two_image_batch()

    def build(thresh):
        torch.manual_seed(0)
        base = small_faster_rcnn(box_score_thresh=thresh)
        model = build_iou_uniform_faster_rcnn(IoUUniformConfig(base=base, **SWITCHES[switch])).eval()
        for module in model.modules():  # IoUs in (0.5, 1) so that class x IoU passes the threshold
            if isinstance(module, IoUPredictor):
                nn.init.constant_(module.iou_pred.bias, 3.0)
        return model

    with torch.no_grad():  # a threshold at the median class probability of this untrained model
        logits = build(0.05)(images).raw["box_stages"][0]["class_logits"]
    thresh = float(F.softmax(logits, dim=1)[:, 1:].max(dim=1).values.median())
    gated, full = build(thresh), build(thresh)
    stages = list(full.roi_heads.stages)
    k = next(i for i, s in enumerate(stages) if s.name == REPOOL_STAGE)
    assert stages[k].inference_gate is not None
    stages[k] = dataclasses.replace(stages[k], inference_gate=None)
    full.roi_heads.stages = tuple(stages)
    with torch.no_grad():
        a, b = gated(images), full(images)
    probs = F.softmax(a.raw["box_stages"][0]["class_logits"], dim=1)[:, 1:].max(dim=1).values
    kept = probs > thresh
    assert 0 < int(kept.sum()) < kept.numel()  # the gate leaves some RoIs out, not all
    gated_iou, full_iou = a.raw["box_stages"][-1]["iou"], b.raw["box_stages"][-1]["iou"]
    assert torch.isnan(gated_iou[~kept]).all()
    torch.testing.assert_close(gated_iou[kept], full_iou[kept])
    assert sum(len(d) for d in a.detections) > 0
    for det_a, det_b in zip(a.detections, b.detections):
        torch.testing.assert_close(det_a.boxes, det_b.boxes)
        torch.testing.assert_close(det_a.scores, det_b.scores)
        assert torch.equal(det_a.labels, det_b.labels)
        torch.testing.assert_close(det_a.extras[IOU_PRED], det_b.extras[IOU_PRED])


def test_switches_are_checked():
    with pytest.raises(ConfigError, match="sample_count"):
        IoUUniformConfig(sample_count="triple")
    with pytest.raises(ConfigError, match="generated_samples"):
        IoUUniformConfig(generated_samples=False, sample_count="equal")
    with pytest.raises(ConfigError, match="nms_score"):
        IoUUniformConfig(nms_score="iou")
    with pytest.raises(ConfigError, match="interval_weights"):
        IoUUniformConfig(interval_weights=(1.0, 2.0))
    with pytest.raises(ConfigError, match="default jitter"):
        IoUUniformConfig(intervals=((0.9, 1.0),), interval_weights=(1.0,))


def test_sample_source_without_gt_and_with_ignored_gt():
    source = UniformIoUSource(count="equal")
    proposals = [torch.tensor([[0.0, 0.0, 10.0, 10.0]])]
    empty = {"boxes": torch.zeros((0, 4)), "labels": torch.zeros((0,), dtype=torch.int64)}
    assert source(proposals, [empty], torch.Generator().manual_seed(0), [(64, 64)])[0].shape == (0, 4)
    crowd = {"boxes": torch.tensor([[5.0, 5.0, 40.0, 40.0]]), "labels": torch.tensor([1]),
             "ignore": torch.tensor([True])}
    plain = UniformIoUSource()
    assert plain(proposals, [crowd], torch.Generator().manual_seed(0), [(64, 64)])[0].shape == (0, 4)


def test_a_trace_records_every_refined_roi_and_the_detections_carry_both_ious():
    from workbench import records as R
    from workbench.inspection.collect import complete_records
    from workbench.methods import get_method
    from workbench.modeling import TraceRecorder

    model = _model().eval()
    images, _ = two_image_batch()
    recorder = TraceRecorder()
    with torch.no_grad():
        plain = model(images)
        out = model(images, recorder=recorder)
    passes = out.raw["box_stages"]
    start = 0
    for i, det in enumerate(out.detections):
        torch.testing.assert_close(det.scores, plain.detections[i].scores)  # recording changes nothing
        count = passes[0]["rois"][i].shape[0]
        rows = slice(start, start + count)
        start += count
        rois = recorder.images[i][R.REFINED_ROIS]
        scale = (out.raw["original_sizes"][i], out.raw["image_sizes"][i])
        # row r refines proposal r; boxes in original pixels like every recorded box
        torch.testing.assert_close(rois["boxes"], rescale_boxes(passes[1]["rois"][i], scale[1], scale[0]))
        assert recorder.images[i][R.PROPOSALS]["boxes"].shape[0] == count
        torch.testing.assert_close(rois[IOU_PRED], passes[1]["iou"][rows])
        torch.testing.assert_close(rois[IOU_PRED_FIRST], passes[0]["iou"][rows])
        probs = F.softmax(passes[0]["class_logits"][rows], dim=1)[:, 1:] * passes[1]["iou"][rows, None]
        torch.testing.assert_close(rois["scores"], probs.max(dim=1).values)
        records = complete_records(recorder.images[i], det)
        assert set(records[R.DETECTIONS]) >= {"boxes", "scores", "labels", IOU_PRED, IOU_PRED_FIRST}
    method = get_method("iou_uniform")
    assert {v.field for v in method.views("attribute", R.REFINED_ROIS)} == {IOU_PRED, IOU_PRED_FIRST}
    assert method.views("boxes", R.REFINED_ROIS)[0].max_boxes == 100


@pytest.mark.parametrize("switch", ["default", "equal", "rpn_samples"])
def test_images_without_gt_train_with_zero_iou_head_losses(switch):
    model = _model(**SWITCHES[switch]).train()
    images, _ = two_image_batch()
    empty = {"boxes": torch.zeros((0, 4)), "labels": torch.zeros((0,), dtype=torch.int64)}
    out = model(images, [empty, empty], generator=torch.Generator().manual_seed(0))
    assert float(out.losses["loss_iouhead_box"].detach()) == 0.0 == float(out.losses["loss_iouhead_iou"].detach())
    assert float(out.losses["loss_rcnn_cls"].detach()) > 0
    out.total_loss().backward()
    assert all(p.grad is None or bool(torch.isfinite(p.grad).all()) for p in model.parameters())


def test_the_fiftyone_documents_carry_the_predicted_ious():
    from workbench import records as R
    from workbench.export.fiftyone import box_documents
    from workbench.inspection.collect import complete_records
    from workbench.inspection.traces import ImageTrace
    from workbench.methods import get_method
    from workbench.modeling import TraceRecorder

    model = _model().eval()
    images, _ = two_image_batch()
    recorder = TraceRecorder()
    with torch.no_grad():
        out = model(images, recorder=recorder)
    trace = ImageTrace(1, "a.png", tuple(images[0].shape[1:]), complete_records(recorder.images[0], out.detections[0]))
    method = get_method("iou_uniform")
    for record, count in ((R.DETECTIONS, len(out.detections[0])), (R.REFINED_ROIS, 100)):
        (view,) = method.views("boxes", record)
        docs = box_documents(trace, view, ["a", "b", "c"], method.views("attribute", record), view.max_boxes)
        assert len(docs) == count
        assert all(0.0 < d[IOU_PRED] < 1.0 and 0.0 < d[IOU_PRED_FIRST] < 1.0 for d in docs)
    torch.testing.assert_close(torch.tensor([d[IOU_PRED] for d in docs], dtype=torch.float32),
                               trace.records[R.REFINED_ROIS][IOU_PRED][:100])
