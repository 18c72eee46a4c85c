"""The FiftyOne export of a traced KL-RPN run, in a private database (see ``conftest``)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from export_support import assert_evaluation_marks, assert_suppressed_link_to_predictions, samples_by_image
from PIL import Image

from workbench.data.sources import open_dataset
from workbench.export.fiftyone import default_dataset_name, export_run
from workbench.inspection import load_traces
from workbench.inspection.maps import record_map_pixels
from workbench.methods import get_method
from workbench.methods.kl_rpn.uncertainty import RECORD_VIEWS

NAME = "wb-export-test"
#: KL-RPN's declared views (the sigma map and attributes included, whether or not its
#: ``METHOD`` lists them yet).
VIEWS = tuple(dict.fromkeys((*get_method("kl_rpn").record_views, *RECORD_VIEWS)))


@pytest.fixture(scope="module")
def exported(fiftyone_db, kl_run):
    """(dataset, summary, traces, val dataset) of the run's export."""
    dataset, summary = export_run(kl_run, name=NAME, views=VIEWS)
    traces = load_traces(kl_run, "val")
    data = open_dataset(traces.meta["data"], "val")
    return dataset, summary, traces, data


def test_one_sample_per_traced_image_with_metadata(exported):
    dataset, summary, traces, data = exported
    assert len(dataset) == len(traces) == summary.num_samples == 4
    assert dataset.persistent and dataset.name == NAME
    samples = samples_by_image(dataset, data)
    assert sorted(samples) == sorted(traces.image_ids)
    for sample in samples.values():
        assert Path(sample.filepath).is_file()
        assert (sample.metadata.width, sample.metadata.height) == (96, 96)
        assert sample.metadata.size_bytes == Path(sample.filepath).stat().st_size
    assert dataset.default_classes == data.class_names


def test_ground_truth_has_every_box_and_the_crowd_flag(exported):
    dataset, _, _, data = exported
    samples = samples_by_image(dataset, data)
    for index, record in enumerate(data.records):
        gt = samples[record.image_id].ground_truth.detections
        assert len(gt) == len(record)
        assert [d.iscrowd for d in gt] == [bool(v) for v in record.ignore]
        assert [d.label for d in gt] == [data.class_names[int(k) - 1] for k in record.labels]
        xywh = np.array([d.bounding_box for d in gt]).reshape(-1, 4) * 96
        np.testing.assert_allclose(xywh[:, :2], record.boxes[:, :2], atol=1e-6)
        np.testing.assert_allclose(xywh[:, :2] + xywh[:, 2:], record.boxes[:, 2:], atol=1e-6)


def test_predictions_are_the_runs_detections(exported, kl_run):
    dataset, _, traces, data = exported
    samples = samples_by_image(dataset, data)
    results = json.loads((kl_run / "predictions" / "val.json").read_text())
    for trace in traces:
        det = trace["detections"]
        preds = samples[trace.image_id].predictions.detections
        assert len(preds) == det["scores"].shape[0] == sum(r["image_id"] == trace.image_id for r in results)
        assert len(preds) > 0
        np.testing.assert_allclose([p.confidence for p in preds], det["scores"].double().numpy(), rtol=0, atol=0)
        assert [p.label for p in preds] == [data.class_names[int(k) - 1] for k in det["labels"]]
        rel = np.array([p.bounding_box for p in preds]) * 96
        np.testing.assert_allclose(rel[:, :2] + rel[:, 2:], det["boxes"][:, 2:].double().numpy(), atol=1e-4)
        # KL-RPN's per-detection sigma (a Detections extra) becomes an attribute, with its mean
        np.testing.assert_allclose([p.sigma for p in preds], det["sigma"].double().numpy(), rtol=0, atol=0)
        np.testing.assert_allclose([p.sigma_mean for p in preds], det["sigma"].double().mean(1).numpy(), rtol=1e-12)


def test_proposals_are_the_top_100_post_nms_proposals_with_sigma(exported):
    dataset, _, traces, data = exported
    samples = samples_by_image(dataset, data)
    for trace in traces:
        record = trace["rpn_proposals"]
        assert record["scores"].shape[0] == 150
        proposals = samples[trace.image_id].proposals.detections
        assert len(proposals) == 100
        np.testing.assert_allclose([p.confidence for p in proposals], record["scores"][:100].double().numpy(), rtol=0, atol=0)
        np.testing.assert_allclose([p.sigma for p in proposals], record["sigma"][:100].double().numpy(), rtol=0, atol=0)
        assert all(p.label == "proposal" for p in proposals)


def _exported_suppressions(trace) -> int:
    """Boxes the final NMS suppressed whose suppressor is among the detections (keep order)."""
    nms = trace["rcnn_nms"]
    exported_kept = set(nms["keep"][: trace["detections"]["scores"].shape[0]].tolist())
    return sum(1 for s in nms["suppressed_by"].tolist() if s in exported_kept)


def test_suppressed_boxes_name_a_prediction_of_their_sample(exported):
    dataset, summary, traces, data = exported
    samples = samples_by_image(dataset, data)
    total = 0
    for trace in traces:
        threshold = float(trace["rcnn_nms"]["iou_threshold"])
        total += assert_suppressed_link_to_predictions(samples[trace.image_id], _exported_suppressions(trace), threshold)
    assert total > 0 and summary.counts["suppressed"] == total
    assert dataset.count("suppressed.detections") == total


def test_offset_sigma_is_a_heatmap_of_the_image_size_that_says_what_it_shows(exported):
    dataset, summary, traces, data = exported
    assert summary.heatmap_fields == ["offset_sigma"]  # the per-coordinate maps are figures only
    description = dataset.get_field("offset_sigma").description
    assert "sigma" in description and "anchor centres" in description and "more uncertain" in description
    assert dataset.info["fields"]["offset_sigma"] == description
    assert "sigma" in dataset.get_field("proposals.detections.sigma").description
    for sample in dataset:
        heatmap = sample.offset_sigma
        assert type(heatmap).__name__ == "Heatmap" and list(heatmap.range) == [0.0, 255.0]
        assert heatmap.value == description
        with Image.open(heatmap.map_path) as png:
            assert png.size == (96, 96) and png.mode == "L"
        low, high = heatmap.value_range
        assert 0 < low < high
    values = np.stack([record_map_pixels(t["uncertainty_map"], "sigma_mean", t.orig_size) for t in traces])
    assert (low, high) == pytest.approx((values.min(), values.max()))
    # the PNG is the mean-sigma map on that range
    first = traces[0]
    sample = next(s for s in dataset if s.filepath.endswith(Path(first.file_name).name))
    with Image.open(sample.offset_sigma.map_path) as png:
        grey = np.asarray(png, dtype=float)
    expected = (record_map_pixels(first["uncertainty_map"], "sigma_mean", first.orig_size) - low) / (high - low) * 255
    assert np.abs(grey - expected).max() <= 0.5 + 1e-6


def test_evaluation_marks_true_false_positives_and_misses(exported):
    dataset, _, _, data = exported
    assert dataset.list_evaluations() == ["eval"]
    info = dataset.get_evaluation_info("eval")
    assert info.config.method == "coco" and info.config.compute_mAP
    samples = samples_by_image(dataset, data)
    for record in data.records:
        sample = samples[record.image_id]
        assert_evaluation_marks(sample, record)
        assert all(g.eval in ("tp", "fn") for g in sample.ground_truth.detections if not g.iscrowd)
    results = dataset.load_evaluation_results("eval")
    assert 0.0 <= results.mAP() <= 1.0


def test_exporting_again_replaces_the_dataset(exported, kl_run):
    import fiftyone as fo

    dataset, summary, _, _ = exported
    old_ids = set(dataset.values("id"))
    again, summary2 = export_run(kl_run, name=NAME, evaluate=False, views=VIEWS)
    assert fo.list_datasets().count(NAME) == 1
    assert len(again) == 4 and len(set(again.values("filepath"))) == 4
    assert not old_ids & set(again.values("id"))
    assert summary2.counts == summary.counts
    assert "eval" not in again.list_evaluations()
    assert sorted(p.name for p in (kl_run / "fiftyone" / NAME / "offset_sigma").iterdir()) == [
        f"{i}.png" for i in sorted(load_traces(kl_run, "val").image_ids)
    ]


def test_default_name_comes_from_the_run_directory(kl_run):
    assert default_dataset_name(kl_run, "val") == f"workbench-{kl_run.name}-val"
