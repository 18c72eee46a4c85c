"""The demo's RefineDet and uncertainty-rescaling steps (``pipelines/demo.yaml``), run through the
pipeline runner at a tiny budget: their two trainings side by side (the demo's ``train`` group,
with the steps' own one-epoch schedule), their notebooks and their FiftyOne exports.

- ``refinedet.ipynb`` shows the anchors before and after refinement, and RefineDet's dataset
  holds the refined anchors, the filtered-anchor heatmap and the anchor IoUs of the detections;
- ``uncertainty.ipynb`` shows the BALD map, and the uncertainty run's dataset holds it as a
  heatmap on every sample and the uncertainty of every detection.

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
from detector_support import SMALL_REFINEDET_96, SMALL_YOLOV3_96

from workbench.demo import DEMO_PIPELINE
from workbench.pipelines import load_pipeline, run_pipeline
from workbench.pipelines.spec import Step

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "notebooks"))
from notebook_runs import figures, layers, title  # noqa: E402

pytestmark = pytest.mark.slow

#: The demo's runs shown here, each model shrunk for 96-pixel images and a two-step epoch (an
#: untrained YOLOv3 keeps every anchor, so its run has detections).
SHRUNK = {"refinedet": SMALL_REFINEDET_96, "uncertainty_rescaling": SMALL_YOLOV3_96}


def as_notebook_parameter(overrides: dict) -> dict:
    """``overrides`` with tuples as lists: papermill writes a tuple into the notebook as its
    string (the train notebook turns lists back into tuples)."""
    return {k: list(v) if isinstance(v, tuple) else v for k, v in overrides.items()}


def shown_here(step: Step) -> bool:
    """A step of the demo that trains, inspects or exports one of the runs of :data:`SHRUNK`."""
    return any(step.name.endswith(f"_{run}") for run in SHRUNK)


def shrunk(step: Step, data: Path) -> Step:
    """A training step on ``data`` with its method's shrunk model; other steps unchanged."""
    if step.notebook is None or step.notebook.name != "train.ipynb":
        return step
    method = step.parameters["method"]
    parameters = {**step.parameters, "data": str(data), "batch_size": 4, "device": "cpu", "seed": 7,
                  "model_overrides": as_notebook_parameter(SHRUNK[method])}
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


def exported_samples(demo_out: Path, run: str) -> list:
    """The samples of the dataset the demo's export step wrote for ``run`` (its default name)."""
    import fiftyone as fo

    from workbench.export.fiftyone import default_dataset_name

    return list(fo.load_dataset(default_dataset_name(demo_out / "runs" / run, "val")))


#: What each run's dataset shows on every sample: a box field that is never empty, a heatmap
#: and the attribute every detection carries.
EXPORTED = {
    "refinedet": ("refined_anchors", "filtered_anchors", "anchor_iou_after"),
    "uncertainty_rescaling": ("predictions", "bald_map", "uncertainty"),
}


@pytest.mark.parametrize("run", list(EXPORTED))
def test_every_sample_holds_the_runs_boxes_heatmap_and_attribute(demo_out, run):
    boxes, heatmap, attribute = EXPORTED[run]
    samples = exported_samples(demo_out, run)
    assert len(samples) == 4
    for sample in samples:
        assert sample[boxes].detections
        assert sample[heatmap].map_path
        assert all(p[attribute] is not None for p in sample.predictions.detections)
