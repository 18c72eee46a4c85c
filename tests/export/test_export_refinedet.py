"""A RefineDet run through the generic path (``tiny`` shrunk, one epoch on the built-in shapes,
``workbench predict --trace``, the FiftyOne export): the fields its declaration asks for are
there, filled from its own records, with nothing in the export naming the method.

- ``predictions`` carry ``anchor_iou_before`` / ``anchor_iou_after`` (and ``anchor_index``);
- ``detection_anchors``: the refined anchors of the top detections;
- ``refined_anchors``: the most object-like refined anchors by the ARM's probability;
- ``filtered_anchors``: the share of the anchors filtered per location, as a heatmap.
"""

from __future__ import annotations

import numpy as np
import pytest
from detector_support import SMALL_REFINEDET_96, traced_small_run
from export_support import samples_by_image

from workbench import records as R
from workbench.data.sources import open_dataset
from workbench.inspection import load_traces
from workbench.methods import get_method

SMALL = {**SMALL_REFINEDET_96, "trace_top_anchors": 40}


@pytest.fixture(scope="module")
def refinedet_run(tmp_path_factory, shapes_root):
    with traced_small_run(tmp_path_factory, "refinedet", data=str(shapes_root), epochs=1, batch_size=4, seed=7,
                          model_overrides=SMALL) as run:
        yield run


@pytest.fixture(scope="module")
def exported(fiftyone_db, refinedet_run):
    from workbench.export.fiftyone import export_run

    dataset, summary = export_run(refinedet_run, name="wb-refinedet", evaluate=False, max_proposals=None)
    yield dataset, summary, load_traces(refinedet_run, "val")
    dataset.delete()


def test_the_traces_hold_every_declared_record(refinedet_run):
    traces = load_traces(refinedet_run, "val")
    assert traces.method == "refinedet" and len(traces) == 4
    assert set(get_method("refinedet").records) <= set(traces.record_names)
    assert {R.ANCHORS, R.REFINED_ANCHORS, R.FINAL_CANDIDATES} <= set(traces.record_names)


def test_the_dataset_has_the_declared_fields(exported):
    dataset, summary, _ = exported
    declared = {v.field for v in get_method("refinedet").record_views if v.app and v.kind != "attribute"}
    assert declared == {"predictions", "suppressed", "detection_anchors", "refined_anchors", "filtered_anchors"}
    schema = dataset.get_field_schema()
    assert declared <= set(schema)
    assert dataset.get_field("refined_anchors").description.startswith("the most object-like refined anchors")


def test_predictions_carry_the_anchor_ious(exported):
    dataset, _, traces = exported
    samples = samples_by_image(dataset, open_dataset(traces.meta["data"], "val"))
    total = 0
    for trace in traces:
        sample = samples[trace.image_id]
        det = trace[R.DETECTIONS]
        preds = sample.predictions.detections
        assert len(preds) == det[R.SCORES].shape[0]
        np.testing.assert_allclose([p["anchor_iou_after"] for p in preds], det["anchor_iou_after"].double().numpy(),
                                   rtol=0, atol=1e-6)
        np.testing.assert_allclose([p["anchor_iou_before"] for p in preds], det["anchor_iou_before"].double().numpy(),
                                   rtol=0, atol=1e-6)
        anchors = sample.detection_anchors.detections
        assert len(anchors) == min(len(preds), 20)
        refined = sample.refined_anchors.detections
        assert len(refined) == 40 and all(r.label == "refined anchor" for r in refined)
        confidences = [r.confidence for r in refined]
        assert confidences == sorted(confidences, reverse=True)
        assert sample.filtered_anchors is not None and sample.filtered_anchors.map_path
        total += len(preds)
    assert total > 0


def test_the_app_lists_the_refinement_fields(exported, tmp_path):
    """The FiftyOne App (headless Chromium) shows the run's grid and lists every field the
    declaration asks for in its sidebar."""
    import os
    import signal
    import subprocess
    import sys
    import time

    from chromium_page import capture_app
    from export_support import TEST_OUTPUT, stop_process

    from workbench.export.app import dataset_url
    from workbench.export.database import free_port

    dataset, _, _ = exported
    port = free_port()
    log = tmp_path / "app.log"
    with log.open("w") as out:
        process = subprocess.Popen([sys.executable, "-m", "workbench", "app", "--name", dataset.name, "--port", str(port)],
                                   stdout=out, stderr=subprocess.STDOUT, env=dict(os.environ))
    try:
        deadline = time.monotonic() + 180
        while "Ctrl-C" not in log.read_text(errors="replace") and process.poll() is None and time.monotonic() < deadline:
            time.sleep(0.2)
        assert "Ctrl-C" in log.read_text(errors="replace"), log.read_text(errors="replace")[-3000:]
        TEST_OUTPUT.mkdir(exist_ok=True)
        page = None
        for _ in range(4):
            page = capture_app(dataset_url(dataset.name, port=port), TEST_OUTPUT / "fiftyone_app_refinedet.png",
                               min_tiles=4)
            if page.drawn_tiles >= 4:
                break
        assert page.tiles == 4 and page.drawn_tiles == 4, "the grid did not finish loading"
        for field in ("ground_truth", "predictions", "suppressed", "detection_anchors", "refined_anchors",
                      "filtered_anchors"):
            assert f'data-cy="checkbox-{field}"' in page.dom, f"the sidebar does not list {field}"
    finally:
        stop_process(process, signal.SIGINT, timeout=30)
