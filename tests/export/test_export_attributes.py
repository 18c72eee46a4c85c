"""Per-detection attributes a method declares (here IoU-uniform R-CNN's two predicted IoUs) reach
the FiftyOne dataset as numbers the App filters on: declared in the schema with what they show,
one value per detection, and ``filter_labels`` on them (the App's sidebar range filter) keeps
exactly the detections whose recorded value is in range. In a private database (``conftest``)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from workbench import records as R
from workbench.data.sources import open_dataset
from workbench.inspection import ImageTrace
from workbench.methods import DETECTIONS_VIEW, get_method

SIDE = 48
NUM_IMAGES = 6


def split_with_predicted_ious(root: Path):
    """A COCO split of ``NUM_IMAGES`` blank images with one box each, and per image 0-7
    detections carrying ``iou_pred`` and ``iou_pred_first`` (uniform in [0, 1))."""
    rng = np.random.default_rng(0)
    (root / "images").mkdir(parents=True)
    images, annotations, traces = [], [], []
    for i in range(NUM_IMAGES):
        name = f"{i}.png"
        Image.fromarray(np.zeros((SIDE, SIDE, 3), dtype=np.uint8)).save(root / "images" / name)
        images.append({"id": i + 1, "file_name": name, "width": SIDE, "height": SIDE})
        annotations.append({"id": i + 1, "image_id": i + 1, "category_id": 1, "bbox": [4.0, 4.0, 20.0, 20.0],
                            "area": 400.0, "iscrowd": 0})
        n = int(rng.integers(0, 8))
        corners = rng.uniform(0, SIDE / 2, (n, 2))
        boxes = np.concatenate([corners, corners + rng.uniform(4, SIDE / 2, (n, 2))], axis=1)
        detections = {
            R.BOXES: torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4),
            R.SCORES: torch.tensor(np.sort(rng.random(n))[::-1].copy(), dtype=torch.float32),
            R.LABELS: torch.ones(n, dtype=torch.int64),
            "iou_pred": torch.tensor(rng.random(n), dtype=torch.float32),
            "iou_pred_first": torch.tensor(rng.random(n), dtype=torch.float32),
        }
        traces.append(ImageTrace(i + 1, name, (SIDE, SIDE), {R.DETECTIONS: detections}))
    ann = root / "annotations.json"
    ann.write_text(json.dumps({"images": images, "annotations": annotations,
                               "categories": [{"id": 1, "name": "square"}]}))
    return open_dataset(str(ann), "val", image_dir=root / "images"), traces


@pytest.fixture(scope="module")
def exported(fiftyone_db, tmp_path_factory):
    from workbench.export.fiftyone import export_traces

    data, traces = split_with_predicted_ious(tmp_path_factory.mktemp("iou_split"))
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
