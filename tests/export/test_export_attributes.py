"""Per-detection attributes a method declares (here IoU-uniform R-CNN's two predicted IoUs) reach
the FiftyOne dataset as numbers the App filters on: declared in the schema with what they show,
one value per detection, and ``filter_labels`` on them (the App's sidebar range filter) keeps
exactly the detections whose recorded value is in range. In a private database (``conftest``)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from export_support import synthetic_split

from workbench import records as R
from workbench.methods import DETECTIONS_VIEW, get_method


def with_predicted_ious(traces, seed: int = 0):
    """The traces, their detections carrying ``iou_pred`` and ``iou_pred_first`` (uniform in
    [0, 1)) as a method adds per-box fields."""
    rng = np.random.default_rng(seed)
    for trace in traces:
        count = len(trace[R.DETECTIONS][R.SCORES])
        for name in ("iou_pred", "iou_pred_first"):
            trace[R.DETECTIONS][name] = torch.tensor(rng.random(count), dtype=torch.float32)
    return traces


@pytest.fixture(scope="module")
def exported(fiftyone_db, tmp_path_factory):
    from workbench.export.fiftyone import export_traces

    data, traces = synthetic_split(tmp_path_factory.mktemp("iou_split"), num_images=8)
    traces = with_predicted_ious(traces)
    attributes = get_method("iou_uniform").views("attribute", R.DETECTIONS)
    dataset, _ = export_traces(traces, data, "wb-predicted-iou", views=(DETECTIONS_VIEW, *attributes))
    yield dataset, traces, attributes
    dataset.delete()


def test_the_predicted_ious_are_declared_with_what_they_show(exported):
    import fiftyone as fo

    dataset, _, attributes = exported
    assert {v.field for v in attributes} == {"iou_pred", "iou_pred_first"}
    for view in attributes:
        schema_field = dataset.get_field(f"predictions.detections.{view.field}")
        assert isinstance(schema_field, fo.FloatField) and schema_field.description == view.title


def test_every_detection_carries_its_recorded_values(exported):
    dataset, traces, _ = exported
    for name in ("iou_pred", "iou_pred_first"):
        exported_values = np.concatenate([np.asarray(v or [], dtype=float)
                                          for v in dataset.values(f"predictions.detections.{name}")])
        recorded = np.concatenate([t[R.DETECTIONS][name].numpy() for t in traces])
        np.testing.assert_allclose(exported_values, recorded, rtol=1e-6)


@pytest.mark.parametrize("low, high", [(0.7, 1.0), (0.0, 0.3)])
def test_the_app_filter_on_the_predicted_iou_keeps_the_detections_in_range(exported, low, high):
    from fiftyone import ViewField as F

    dataset, traces, _ = exported
    kept = dataset.filter_labels("predictions", (F("iou_pred") >= low) & (F("iou_pred") <= high), only_matches=False)
    recorded = np.concatenate([t[R.DETECTIONS]["iou_pred"].numpy() for t in traces])
    expected = int(((recorded >= low) & (recorded <= high)).sum())
    assert 0 < kept.count("predictions.detections") == expected < len(recorded)
    # combined with the evaluation: false positives the method expected to be well localised
    confident_fp = dataset.filter_labels("predictions", (F("eval") == "fp") & (F("iou_pred") >= low))
    assert confident_fp.count("predictions.detections") > 0
    assert all(d.eval == "fp" and d.iou_pred >= low for s in confident_fp for d in s.predictions.detections)
