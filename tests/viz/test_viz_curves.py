"""Training curves from metrics records, per-class PR curves, score histograms, tables, maps."""

from __future__ import annotations

import numpy as np
import pytest
from pycocotools.coco import COCO

from workbench.evaluation import evaluate_coco
from workbench.viz.curves import compare_curves_figure, loss_names, pr_curves_figure, training_curves_figure
from workbench.viz.maps import map_overlay_figure
from workbench.viz.scores import pooled_scores, score_histogram_figure
from workbench.viz.tables import metrics_table_figure

RECORDS = [
    {"kind": "train", "epoch": 1, "step": 10, "lr": 0.01, "loss": 2.0, "loss_rpn_cls": 0.5, "loss_rcnn_box": 1.5},
    {"kind": "train", "epoch": 1, "step": 20, "lr": 0.02, "loss": 1.5, "loss_rpn_cls": 0.4, "loss_rcnn_box": None},
    {"kind": "eval", "epoch": 1, "step": 20, "AP": 0.1, "AP50": 0.3, "AP75": 0.05},
    {"kind": "train", "epoch": 2, "step": 30, "lr": 0.01, "loss": 1.0, "loss_rpn_cls": 0.3, "loss_rcnn_box": 0.7},
    {"kind": "eval", "epoch": 2, "step": 30, "AP": 0.2, "AP50": 0.4, "AP75": 0.1},
]


def by_key(fig):
    return {t.meta["key"]: t for t in fig.data}


def test_training_curves_have_every_loss_part_lr_and_eval_ap():
    fig = training_curves_figure(RECORDS)
    traces = by_key(fig)
    assert loss_names(RECORDS) == ["loss", "loss_rcnn_box", "loss_rpn_cls"]
    assert list(traces["loss"].x) == [10, 20, 30] and list(traces["loss"].y) == [2.0, 1.5, 1.0]
    assert list(traces["loss_rcnn_box"].x) == [10, 30], "a missing value is skipped"
    assert list(traces["lr"].y) == [0.01, 0.02, 0.01]
    assert list(traces["AP"].x) == [1, 2] and list(traces["AP50"].y) == [0.3, 0.4]
    assert traces["AP"].xaxis == "x3" and traces["lr"].xaxis == "x2"


def test_compare_curves_one_colour_per_run():
    fig = compare_curves_figure({"a": RECORDS, "b": RECORDS[:3]})
    runs = [(t.meta["run"], t.meta["key"]) for t in fig.data]
    assert runs == [("a", "loss"), ("a", "AP"), ("b", "loss"), ("b", "AP")]
    assert fig.data[0].line.color == fig.data[1].line.color != fig.data[2].line.color
    assert list(fig.data[3].y) == [0.1]


def tiny_evaluation():
    gt = COCO()
    gt.dataset = {
        "images": [{"id": 1, "width": 100, "height": 100}],
        "categories": [{"id": 1, "name": "circle"}, {"id": 2, "name": "square"}],
        "annotations": [
            {"id": 1, "image_id": 1, "category_id": 1, "bbox": [10, 10, 20, 20], "area": 400, "iscrowd": 0},
            {"id": 2, "image_id": 1, "category_id": 2, "bbox": [50, 50, 30, 30], "area": 900, "iscrowd": 0},
            {"id": 3, "image_id": 1, "category_id": 2, "bbox": [5, 60, 10, 10], "area": 100, "iscrowd": 0},
        ],
    }
    gt.createIndex()
    results = [
        {"image_id": 1, "category_id": 1, "bbox": [10, 10, 20, 20], "score": 0.9},
        {"image_id": 1, "category_id": 2, "bbox": [0, 0, 5, 5], "score": 0.95},
        {"image_id": 1, "category_id": 2, "bbox": [50, 50, 30, 30], "score": 0.8},
    ]
    return evaluate_coco(gt, results)


def test_pr_curves_one_line_per_class_with_its_ap():
    evaluation = tiny_evaluation()
    curves = evaluation.precision_recall_curves(0.5)
    fig = pr_curves_figure(curves, class_names={1: "circle", 2: "square"})
    assert [t.meta["category_id"] for t in fig.data] == [1, 2]
    circle, square = fig.data
    assert circle.name == "circle (AP 1.000)" and circle.meta["ap"] == pytest.approx(1.0)
    assert square.meta["ap"] == pytest.approx(float(np.mean(curves[2][1])))
    assert square.meta["ap"] < 0.5, "the square class misses one of two objects"
    assert np.array_equal(square.x, curves[2][0])


def test_score_histograms_share_bins_and_count_each_group():
    fig = score_histogram_figure({"before": np.array([0.0, 0.5, 1.0, 2.0]), "after": [1.0, 2.0]}, bins=4)
    before, after = fig.data
    assert before.meta == {"group": "before", "count": 4} and after.meta["count"] == 2
    assert before.xbins.start == after.xbins.start == 0.0 and before.xbins.size == pytest.approx(0.5)
    assert fig.layout.barmode == "overlay"
    dense = score_histogram_figure({"x": [1.0, 2.0]}, density=True)
    assert dense.data[0].histnorm == "probability density"


def test_pooled_scores_concatenates_over_images():
    records = [{"r": {"scores": np.array([1.0, 2.0])}}, {}, {"r": {"scores": np.array([3.0])}}]
    assert pooled_scores(records, "r").tolist() == [1.0, 2.0, 3.0]
    assert pooled_scores([], "r").size == 0


def test_metrics_table_rows_columns_and_missing_values():
    fig = metrics_table_figure({"a": {"AP": 0.123456, "AR100": 0.5}, "b": {"AP": None}})
    table = fig.data[0]
    assert list(table.header.values) == ["run", "AP", "AR100"]
    assert [list(c) for c in table.cells.values] == [["a", "b"], ["0.1235", "n/a"], ["0.5000", "n/a"]]


def test_map_overlay_checks_sizes():
    fig = map_overlay_figure(np.zeros((4, 6)), image=np.zeros((4, 6, 3), dtype=np.uint8), boxes=[[0, 0, 2, 2]])
    assert [t.type for t in fig.data] == ["image", "heatmap", "scatter"]
    assert fig.data[1].opacity == 0.5
    assert fig.layout.title.text == "map"
    assert map_overlay_figure(np.zeros((4, 6)), title="").layout.title.text == ""
    with pytest.raises(ValueError, match="differ in size"):
        map_overlay_figure(np.zeros((4, 6)), image=np.zeros((5, 6, 3), dtype=np.uint8))
