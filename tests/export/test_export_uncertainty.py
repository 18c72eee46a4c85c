"""A run of the uncertainty-rescaled YOLOv3 through the generic path (``tiny`` shrunk, one epoch on
the built-in shapes, predictions with traces, the FiftyOne export with its evaluation): the
fields its declaration asks for are there, filled from its records, with nothing in the export
naming the method.

- ``bald_map``: the BALD map (maximum over the scales) as a heatmap over the image;
- ``predictions`` carry ``uncertainty`` (the BALD of each detection's anchor), so the App can
  filter the false positives by uncertainty;
- served by ``workbench app`` and loaded in headless Chromium, the App's sidebar lists the BALD
  map beside the detections (screenshot under ``test-output/``).
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from detector_support import SMALL_YOLOV3_96, traced_small_run
from export_support import TEST_OUTPUT, samples_by_image, stop_process
from PIL import Image

from workbench import records as R
from workbench.data.sources import open_dataset
from workbench.inspection import load_traces
from workbench.inspection.maps import record_map_pixels
from workbench.methods import get_method

METHOD = "uncertainty_rescaling"


@pytest.fixture(scope="module")
def uncertainty_run(tmp_path_factory, shapes_root):
    with traced_small_run(tmp_path_factory, METHOD, data=str(shapes_root), epochs=1, batch_size=4, seed=7,
                          model_overrides=SMALL_YOLOV3_96) as run:
        yield run


@pytest.fixture(scope="module")
def exported(fiftyone_db, uncertainty_run):
    from workbench.export.fiftyone import export_run

    dataset, summary = export_run(uncertainty_run, name="wb-uncertainty", evaluate=True)
    traces = load_traces(uncertainty_run, "val")
    yield dataset, summary, traces, open_dataset(traces.meta["data"], "val")
    dataset.delete()


def test_the_traces_hold_every_declared_record(uncertainty_run):
    traces = load_traces(uncertainty_run, "val")
    assert traces.method == METHOD and len(traces) == 4
    assert set(get_method(METHOD).records) <= set(traces.record_names)
    for trace in traces:
        record = trace[R.UNCERTAINTY_MAP]
        assert {"bald", "mu_stride8", "sigma_stride32", R.MAP_CELL_SIZE} <= set(record)
        assert "uncertainty" in trace[R.DETECTIONS]


def test_the_dataset_has_the_declared_fields(exported):
    dataset, summary, _, _ = exported
    declared = {v.field for v in get_method(METHOD).record_views if v.app and v.kind != "attribute"}
    assert declared == {"predictions", "suppressed", "bald_map"}
    assert declared <= set(dataset.get_field_schema())
    assert summary.heatmap_fields == ["bald_map"]  # the per-scale maps are figures only
    assert "BALD" in dataset.get_field("bald_map").description
    assert "BALD" in dataset.get_field("predictions.detections.uncertainty").description


def test_the_bald_map_is_a_heatmap_over_the_image(exported):
    dataset, _, traces, data = exported
    samples = samples_by_image(dataset, data)
    for trace in traces:
        heatmap = samples[trace.image_id].bald_map
        assert type(heatmap).__name__ == "Heatmap"
        with Image.open(heatmap.map_path) as png:
            assert png.size == (trace.orig_size[1], trace.orig_size[0])
    values = np.stack([record_map_pixels(t[R.UNCERTAINTY_MAP], "bald", t.orig_size) for t in traces])
    low, high = next(iter(dataset)).bald_map.value_range
    assert (low, high) == pytest.approx((values.min(), values.max()))


def test_every_prediction_carries_its_uncertainty_and_false_positives_filter_by_it(exported):
    from fiftyone import ViewField as F

    dataset, _, traces, data = exported
    samples = samples_by_image(dataset, data)
    values, fp_values = [], []
    for trace in traces:
        preds = samples[trace.image_id].predictions.detections
        expected = trace[R.DETECTIONS]["uncertainty"].double().numpy()
        np.testing.assert_allclose([p["uncertainty"] for p in preds], expected, rtol=0, atol=1e-6)
        values.extend(expected)
        fp_values.extend(p["uncertainty"] for p in preds if p["eval"] == "fp")
    assert len(values) > 0 and len(fp_values) > 0
    cut = float(np.median(fp_values))
    uncertain_fp = dataset.filter_labels("predictions", (F("eval") == "fp") & (F("uncertainty") > cut))
    assert uncertain_fp.count("predictions.detections") == sum(v > cut for v in fp_values)


@pytest.fixture(scope="module")
def served(exported, tmp_path_factory):
    """The exported dataset served by ``workbench app`` on a free port: its URL."""
    from workbench.export.database import free_port

    dataset, _, _, _ = exported
    port = free_port()
    log = tmp_path_factory.mktemp("app") / "app.log"
    with log.open("w") as out:
        process = subprocess.Popen([sys.executable, "-m", "workbench", "app", "--name", dataset.name, "--port", str(port)],
                                   stdout=out, stderr=subprocess.STDOUT, env=dict(os.environ))
    try:
        deadline = time.monotonic() + 180
        match = None
        while match is None and time.monotonic() < deadline and process.poll() is None:
            match = re.search(r"at (http://\S+) \(Ctrl-C", log.read_text(errors="replace"))
            time.sleep(0.2)
        assert match is not None, log.read_text(errors="replace")[-3000:]
        yield match.group(1)
    finally:
        stop_process(process, signal.SIGINT, timeout=30)


def test_the_app_lists_the_bald_map_beside_the_detections(served):
    from chromium_page import capture_app

    TEST_OUTPUT.mkdir(exist_ok=True)
    page = None
    for _ in range(4):
        page = capture_app(served, TEST_OUTPUT / "fiftyone_app_uncertainty.png", min_tiles=4)
        if page.drawn_tiles >= 4:
            break
    (TEST_OUTPUT / "fiftyone_app_uncertainty_dom.html").write_text(page.dom)
    assert page.tiles == 4 and page.drawn_tiles == 4, "the grid did not finish loading"
    for field in ("ground_truth", "predictions", "suppressed", "bald_map", "eval_tp", "eval_fp", "eval_fn"):
        assert f'data-cy="checkbox-{field}"' in page.dom, f"the sidebar does not list {field}"


def test_a_saved_view_shows_the_most_uncertain_detections(exported):
    """The method declares the detections' ``uncertainty`` an uncertainty: the export saves the
    view of the detections above its 90th percentile (the App's "filter by uncertainty")."""
    dataset, _, _, _ = exported
    (name,) = [n for n in dataset.list_saved_views() if n.endswith("-uncertain")]
    values = [v for v in dataset.values("predictions.detections.uncertainty", unwind=True) if v is not None]
    shown = dataset.load_saved_view(name).values("predictions.detections.uncertainty", unwind=True)
    cut = np.quantile(values, 0.9)
    assert shown and min(shown) >= cut
    assert len(shown) == sum(v >= cut for v in values)
