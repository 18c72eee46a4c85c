"""The demo's RefineDet and uncertainty-rescaling steps (``pipelines/demo.yaml``), run through the
pipeline runner at a tiny budget: their two trainings side by side (the demo's ``train`` group,
with the steps' own one-epoch schedule), their notebooks and their FiftyOne exports.

- ``refinedet.ipynb`` shows the anchors before and after refinement, and RefineDet's dataset
  holds the refined anchors and the filtered-anchor heatmap;
- ``uncertainty.ipynb`` shows the BALD map, and the uncertainty run's dataset holds it as a
  heatmap on every sample.

The training steps keep the demo's parameters except the data (a private 8 + 4 image set of
96 px), the batch, the device and a shrunk model; the exports run the demo's own commands.
Here rather than beside the demo's file checks because the exports need the private FiftyOne
database of this folder's ``fiftyone_db``.
"""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path

import nbformat
import pytest

from workbench.demo import DEMO_PIPELINE
from workbench.pipelines import load_pipeline, run_pipeline
from workbench.pipelines.spec import Step

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "notebooks"))
from notebook_runs import figures, layers, title  # noqa: E402

pytestmark = pytest.mark.slow

#: The demo's runs shown here, with each model shrunk for 96-pixel images and a two-step epoch
#: (the export tests' sizes; every anchor of an untrained YOLOv3 kept, so there are detections).
#: Lists, not tuples: papermill passes a tuple to the notebook as its string.
SHRUNK = {
    "refinedet": {
        "backbone_weights": None, "backbone_norm": "bn", "fpn_channels": 32, "tcb_channels": 16, "size": 96,
        "topk_candidates": 100, "detections_per_img": 30, "trace_top_anchors": 40,
    },
    "uncertainty_rescaling": {
        "backbone_weights": None, "backbone_norm": "bn", "neck_channels": [16, 32, 64], "size": 96,
        "topk_candidates": 100, "detections_per_img": 30, "score_thresh": 0.0,
    },
}


def shown_here(step: Step) -> bool:
    """A step of the demo that trains, inspects or exports one of the runs of :data:`SHRUNK`."""
    return any(step.name.endswith(f"_{run}") for run in SHRUNK)


def shrunk(step: Step, data: Path) -> Step:
    """A training step on ``data`` with its method's shrunk model; other steps unchanged."""
    if step.notebook is None or step.notebook.name != "train.ipynb":
        return step
    method = step.parameters["method"]
    parameters = {**step.parameters, "data": str(data), "batch_size": 4, "device": "cpu", "seed": 7,
                  "model_overrides": SHRUNK[method]}
    return dataclasses.replace(step, parameters=parameters)


@pytest.fixture(scope="module")
def demo_out(fiftyone_db, shapes_root, tmp_path_factory) -> Path:
    """The output folder of the demo's steps of :data:`SHRUNK`, run by the pipeline runner."""
    patch = pytest.MonkeyPatch()
    patch.setenv("OMP_NUM_THREADS", "1")
    patch.setenv("WORKBENCH_CACHE", str(tmp_path_factory.mktemp("cache")))
    try:
        demo = load_pipeline(DEMO_PIPELINE, tmp_path_factory.mktemp("demo") / "out")
        steps = tuple(shrunk(s, shapes_root) for s in demo.steps if shown_here(s))
        outcomes = run_pipeline(dataclasses.replace(demo, steps=steps), stream_output=False, echo=lambda _: None)
    finally:
        patch.undo()
    assert [o.status for o in outcomes] == ["ran"] * len(steps)
    return demo.out


def test_the_demo_trains_both_runs_for_its_one_epoch(demo_out):
    from workbench.pipelines.runs import load_run

    for run in SHRUNK:
        summary = load_run(demo_out / "runs" / run)
        assert summary.method == run and summary.preset == "tiny"
        assert [r["epoch"] for r in summary.records if r.get("kind") == "eval"] == [1]


def test_the_refinedet_notebook_shows_the_anchors_before_and_after_refinement(demo_out):
    nb = nbformat.read(demo_out / "runs" / "refinedet" / "notebooks" / "refinedet.ipynb", as_version=4)
    refinement = [f for f in figures(nb) if title(f).startswith("the 30 most object-like anchors before")]
    assert len(refinement) == 3
    assert all({"anchors", "refined anchors"} <= set(layers(f)) for f in refinement)


def test_the_uncertainty_notebook_shows_the_bald_map(demo_out):
    nb = nbformat.read(demo_out / "runs" / "uncertainty_rescaling" / "notebooks" / "uncertainty.ipynb", as_version=4)
    maps = [f for f in figures(nb) if title(f).startswith("uncertainty map (BALD")]
    assert len(maps) == 3
    assert all("maximum over the scales" in [t["name"] for t in f["data"] if t["type"] == "heatmap"] for f in maps)


def test_the_refinedet_dataset_holds_the_refined_anchors(demo_out):
    import fiftyone as fo

    from workbench.export.fiftyone import default_dataset_name

    dataset = fo.load_dataset(default_dataset_name(demo_out / "runs" / "refinedet", "val"))
    assert len(dataset) == 4
    for sample in dataset:
        assert sample.refined_anchors.detections
        assert sample.filtered_anchors.map_path
        assert all(p["anchor_iou_after"] is not None for p in sample.predictions.detections)


def test_the_uncertainty_dataset_holds_the_bald_map(demo_out):
    import fiftyone as fo

    from workbench.export.fiftyone import default_dataset_name

    dataset = fo.load_dataset(default_dataset_name(demo_out / "runs" / "uncertainty_rescaling", "val"))
    assert len(dataset) == 4
    for sample in dataset:
        assert sample.bald_map.map_path
        assert sample.predictions.detections
        assert all(p["uncertainty"] is not None for p in sample.predictions.detections)
