"""The single-stage detectors through the generic path of every run: each method's ``tiny`` preset
(shrunk, see ``export_support.DENSE_OVERRIDES``) trains on the built-in shapes, ``workbench predict
--trace`` records its traces and ``workbench export fiftyone`` turns them into a FiftyOne dataset
whose fields are the views the method declares (detections, the boxes the final NMS suppressed,
each linked to the detection that suppressed it) plus the evaluation; the report shows the same.
Nothing here or in the code it runs branches on the method: the views come from its ``METHOD``.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from export_support import (
    DENSE_METHODS,
    assert_evaluation_marks,
    assert_suppressed_link_to_predictions,
    samples_by_image,
)

from workbench import records as R
from workbench.data.sources import open_dataset
from workbench.export.fiftyone import exported_suppressed_count
from workbench.inspection import load_traces
from workbench.methods import SINGLE_STAGE_VIEWS, get_method

NUM_SAMPLES = 4


def declared_fields(method: str) -> set[str]:
    """The FiftyOne fields the method's declaration asks for (attributes live inside boxes)."""
    return {v.field for v in get_method(method).record_views if v.app and v.kind != "attribute"}


@pytest.fixture(scope="module", params=DENSE_METHODS)
def exported(request, dense_exports):
    """(method, dataset, traces, val dataset, export command output) of one single-stage run."""
    import fiftyone as fo

    method = request.param
    run, name, output = dense_exports[method]
    traces = load_traces(run, "val")
    data = open_dataset(traces.meta["data"], "val")
    return method, fo.load_dataset(name), traces, data, output


def test_the_methods_declare_the_single_stage_views_and_their_traces_hold_them(dense_runs):
    for method, run in dense_runs.items():
        assert get_method(method).record_views == SINGLE_STAGE_VIEWS
        traces = load_traces(run, "val")
        assert traces.method == method and len(traces) == NUM_SAMPLES
        assert set(get_method(method).records) <= set(traces.record_names)
        assert R.PROPOSALS not in traces.record_names  # no RPN: nothing to show as proposals


def test_the_dataset_has_the_declared_fields_and_the_evaluation(exported):
    method, dataset, _, _, output = exported
    assert f"FiftyOne dataset '{dataset.name}': {NUM_SAMPLES} samples" in output
    assert len(dataset) == NUM_SAMPLES and dataset.info["method"] == method
    label_fields = {name for name, f in dataset.get_field_schema().items()
                    if getattr(f, "document_type", None) is not None and f.document_type.__name__ == "Detections"}
    assert label_fields == {"ground_truth"} | declared_fields(method) == {"ground_truth", "predictions", "suppressed"}
    assert {"eval_tp", "eval_fp", "eval_fn"} <= set(dataset.get_field_schema())
    assert set(dataset.info["fields"]) == label_fields
    assert dataset.get_field("suppressed").description == "boxes suppressed by the final NMS"


def test_predictions_are_the_traced_detections(exported):
    _, dataset, traces, data, _ = exported
    samples = samples_by_image(dataset, data)
    total = 0
    for trace in traces:
        det = trace[R.DETECTIONS]
        preds = samples[trace.image_id].predictions.detections
        assert len(preds) == det["scores"].shape[0] <= 30
        np.testing.assert_allclose([p.confidence for p in preds], det["scores"].double().numpy(), rtol=0, atol=0)
        assert [p.label for p in preds] == [data.class_names[int(k) - 1] for k in det["labels"]]
        rel = np.array([p.bounding_box for p in preds]).reshape(-1, 4) * 96
        np.testing.assert_allclose(rel[:, :2], det["boxes"][:, :2].double().numpy(), atol=1e-4)
        total += len(preds)
    assert total > 0


def test_suppressed_boxes_name_a_prediction_of_their_sample(exported):
    _, dataset, traces, data, output = exported
    samples = samples_by_image(dataset, data)
    total = 0
    for trace in traces:
        threshold = float(trace[R.FINAL_NMS][R.NMS_IOU_THRESHOLD])
        total += assert_suppressed_link_to_predictions(
            samples[trace.image_id], exported_suppressed_count(trace), threshold
        )
    assert total > 0 and dataset.count("suppressed.detections") == total
    assert f"{total} suppressed" in output


def test_evaluation_marks_true_false_positives_and_misses(exported):
    _, dataset, _, data, _ = exported
    assert dataset.list_evaluations() == ["eval"]
    assert dataset.get_evaluation_info("eval").config.pred_field == "predictions"
    samples = samples_by_image(dataset, data)
    for record in data.records:
        sample = samples[record.image_id]
        assert_evaluation_marks(sample, record)
    assert 0.0 <= dataset.load_evaluation_results("eval").mAP() <= 1.0


def test_the_fields_follow_the_declaration(dense_runs, fiftyone_db):
    """Declared under other names, the same records export under those names: the export reads
    the declaration, it does not know the fields."""
    from workbench.export.fiftyone import export_run

    views = tuple(dataclasses.replace(v, field=f"{v.field}_renamed") for v in SINGLE_STAGE_VIEWS)
    run = dense_runs[DENSE_METHODS[0]]
    dataset, summary = export_run(run, name="wb-dense-renamed", views=views, evaluate=False)
    try:
        assert set(summary.counts) == {"ground_truth", "predictions_renamed", "suppressed_renamed"}
        assert summary.counts["suppressed_renamed"] > 0
        first = dataset.first()
        kept = {p.id for p in first.predictions_renamed.detections}
        assert {b.suppressed_by for b in first.suppressed_renamed.detections} <= kept
    finally:
        dataset.delete()


def test_the_report_shows_detections_and_suppressed_boxes_without_proposals(dense_runs):
    from workbench.report import report_sections

    names = list(dense_runs)
    sections = report_sections(list(dense_runs.values()), names, max_images=4)
    titles = [s.title for s in sections]
    for name in names:
        (detections,) = [s for s in sections if s.title.startswith(f"{name}: detections")]
        assert "suppressed boxes" in detections.title and detections.figure is not None
        shown = {trace.name for trace in detections.figure.data}
        assert any("suppressed" in str(n) for n in shown), shown
        assert any(t.startswith(f"{name}: final NMS") for t in titles)
        assert not any(t.startswith(name) and "proposal" in t.lower() for t in titles)
    assert not any("Proposal recall" in t for t in titles)
