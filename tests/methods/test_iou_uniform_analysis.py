"""What IoU-uniform R-CNN's figures are built from: RoI IoUs before and after refinement,
detections' true and predicted IoUs, and a run over a small generated dataset."""

from __future__ import annotations

import numpy as np
import torch

from workbench.data.shapes import ShapesConfig, generate_shapes
from workbench.data.sources import open_dataset
from workbench.methods.iou_uniform.analysis import collect_iou_analysis, detection_ious, nms_by_class_score, roi_ious
from workbench.methods.iou_uniform.model import IoUUniformConfig, build_iou_uniform_faster_rcnn
from workbench.modeling import FasterRCNNConfig
from workbench.viz.iou import iou_correlation_figure, localisation_gain, recall_at_ious

from detector_support import one_thread  # noqa: F401 (one_thread: autouse)


def test_roi_ious_keep_the_proposals_gt_by_hand():
    gt = torch.tensor([[0.0, 0.0, 10.0, 10.0], [20.0, 0.0, 30.0, 10.0]])
    proposals = torch.tensor([[0.0, 0.0, 10.0, 5.0], [20.0, 0.0, 30.0, 8.0], [50.0, 50.0, 60.0, 60.0]])
    # the first RoI is refined onto its GT; the second moves towards the *other* GT, but its
    # output IoU is still taken with its own (the proposal's best) GT
    refined = torch.tensor([[0.0, 0.0, 10.0, 10.0], [10.0, 0.0, 20.0, 10.0], [0.0, 0.0, 10.0, 10.0]])
    before, after = roi_ious(proposals, refined, gt)
    torch.testing.assert_close(before, torch.tensor([0.5, 0.8]))
    torch.testing.assert_close(after, torch.tensor([1.0, 0.0]))
    assert roi_ious(proposals, refined, gt[:0])[0].shape == (0,)


def test_detection_ious_only_count_the_gt_of_their_class():
    gt, gt_labels = torch.tensor([[0.0, 0.0, 10.0, 10.0]]), torch.tensor([2])
    boxes = torch.tensor([[0.0, 0.0, 10.0, 5.0], [0.0, 0.0, 10.0, 10.0]])
    torch.testing.assert_close(detection_ious(boxes, torch.tensor([2, 1]), gt, gt_labels), torch.tensor([0.5, 0.0]))


def test_a_run_over_a_small_dataset_feeds_the_figures(tmp_path):
    root = generate_shapes(tmp_path / "shapes", ShapesConfig(num_train=0, num_val=3, image_size=96, seed=1,
                                                             empty_fraction=0.0), progress=False, workers=0)
    dataset = open_dataset(str(root), "val", progress=False)
    base = FasterRCNNConfig(backbone="resnet18_fpn", num_classes=3, min_size=96, max_size=96, fpn_channels=32,
                            box_representation_size=64, rpn_pre_nms_top_n_test=200, rpn_post_nms_top_n_test=50)
    torch.manual_seed(0)
    model = build_iou_uniform_faster_rcnn(IoUUniformConfig(base=base, per_interval=4))
    analysis = collect_iou_analysis(model, dataset, batch_size=2)
    num_gt = sum(int((~r.ignore.astype(bool)).sum()) for r in dataset.records)
    assert num_gt > 0 and analysis.rpn_iou.size == 50 * 3
    # generated samples: at most 4 per GT and interval, all at IoU >= 0.5
    assert 0 < analysis.generated_iou.size <= 16 * num_gt and analysis.generated_iou.min() >= 0.5
    assert analysis.roi_input_iou.shape == analysis.roi_output_iou.shape and analysis.roi_input_iou.min() >= 0.5
    assert analysis.det_true_iou.shape == analysis.det_iou_pred.shape == analysis.det_iou_pred_first.shape
    assert len(analysis.detections) == len(analysis.ground_truth) == 3
    assert localisation_gain(analysis.roi_input_iou, analysis.roi_output_iou)["count"].sum() == analysis.roi_input_iou.size
    fig = iou_correlation_figure(analysis.det_true_iou, {"first": analysis.det_iou_pred_first,
                                                        "re-pooled": analysis.det_iou_pred}, low=0.0)
    assert len(fig.data) == 4
    with nms_by_class_score(model):
        assert model.roi_heads.postprocess.use_iou is False
        by_class = collect_iou_analysis(model, dataset, indices=[0], batch_size=1)
    assert model.roi_heads.postprocess.use_iou is True
    assert np.isfinite(recall_at_ious(by_class.detections, by_class.ground_truth)["recall"]).all()


def test_refined_rois_are_those_the_detections_take_for_the_baseline_too(tmp_path):
    from workbench.methods.faster_rcnn import build_model as build_baseline
    from workbench.methods.iou_uniform.analysis import refined_rois
    from workbench.ops import clip_boxes

    base = FasterRCNNConfig(backbone="resnet18_fpn", num_classes=3, min_size=96, max_size=96, fpn_channels=32,
                            box_representation_size=64, rpn_pre_nms_top_n_test=200, rpn_post_nms_top_n_test=50)
    images = [torch.rand(3, 96, 96, generator=torch.Generator().manual_seed(k)) for k in range(2)]
    for model in (build_iou_uniform_faster_rcnn(IoUUniformConfig(base=base)), build_baseline(base, 3)):
        model.eval()
        with torch.no_grad():
            raw = model(images).raw
        first = raw["box_stages"][0]
        stage = model.roi_heads.stages[0]
        offsets = first["box_regression"]
        if offsets.shape[1] != 4:  # the baseline: each RoI's best foreground class
            best = first["class_logits"][:, 1:].argmax(dim=1) + 1
            offsets = offsets.view(offsets.shape[0], -1, 4)[torch.arange(offsets.shape[0]), best]
        expected = stage.coder.decode(offsets, torch.cat(first["rois"])).split([r.shape[0] for r in first["rois"]])
        for got, want, size in zip(refined_rois(model, raw), expected, raw["image_sizes"]):
            torch.testing.assert_close(got, clip_boxes(want, size))
