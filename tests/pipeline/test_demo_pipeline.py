"""The demo pipeline file: what `make demo` runs, checked without running it."""

from __future__ import annotations

from pathlib import Path

import pytest
from pipeline_notebooks import undefined_notebook_parameters

from workbench.demo import DEMO_PIPELINE, DemoResult, format_summary, last_evaluated_epoch, run_demo
from workbench.errors import WorkbenchError
from workbench.methods import METHODS
from workbench.pipelines import load_pipeline


#: (method, preset, epochs of the step; None: the preset's) of every training run, in order.
TRAINED = [("faster_rcnn", "tiny", None), ("kl_rpn", "tiny", None), ("refinedet", "tiny", 1),
           ("uncertainty_rescaling", "tiny", 1)]


def test_demo_trains_the_methods_then_exports_inspects_compares_and_reports(tmp_path):
    pipeline = load_pipeline(DEMO_PIPELINE, tmp_path)
    names = [s.name for s in pipeline.steps]
    assert names[0] == "data" and names[-1] == "report"
    trains = [s for s in pipeline.steps if s.notebook is not None and s.notebook.name == "train.ipynb"]
    assert [(s.parameters["method"], s.parameters["preset"], s.parameters.get("epochs")) for s in trains] == TRAINED
    assert all(s.parameters["method"] in METHODS for s in trains)
    assert {s.group for s in trains} == {"train"}
    for step in trains:
        run = Path(step.parameters["out_dir"])
        assert step.output == run / "notebooks" / "train.ipynb" and run.parent == tmp_path / "runs"
    exports = [s.command for s in pipeline.steps if s.command and s.command[:3] == ("workbench", "export", "fiftyone")]
    assert [Path(c[c.index("--run") + 1]).name for c in exports] == [m for m, _, _ in TRAINED]
    assert names.index("export_kl_rpn") > names.index("train_kl_rpn")
    compare = next(s for s in pipeline.steps if s.name == "compare_runs")
    assert compare.parameters["run_dirs"] == [str(tmp_path / "runs" / "faster_rcnn"), str(tmp_path / "runs" / "kl_rpn")]
    report = pipeline.steps[-1].command
    assert report[:2] == ("workbench", "report") and str(tmp_path / "report.html") in report


def test_refinedet_and_the_bald_map_are_shown_from_their_runs(tmp_path):
    pipeline = load_pipeline(DEMO_PIPELINE, tmp_path)
    steps = {s.name: s for s in pipeline.steps}
    names = list(steps)
    for shown, notebook, run in [("refined_anchors_refinedet", "refinedet.ipynb", "refinedet"),
                                 ("bald_map_uncertainty_rescaling", "uncertainty.ipynb", "uncertainty_rescaling")]:
        step = steps[shown]
        assert step.notebook.name == notebook
        assert step.parameters["run_dir"] == str(tmp_path / "runs" / run)
        assert step.output == tmp_path / "runs" / run / "notebooks" / notebook
        assert names.index(shown) > names.index(f"train_{run}")
    assert undefined_notebook_parameters(pipeline) == {}


def test_epochs_reach_only_the_train_notebooks(tmp_path):
    pipeline = load_pipeline(DEMO_PIPELINE, tmp_path, overrides={"epochs": 2})
    with_epochs = {s.name: s.parameters["epochs"] for s in pipeline.steps if "epochs" in s.parameters}
    assert with_epochs == {f"train_{method}": 2 for method, _, _ in TRAINED}


def test_the_epochs_trained_are_those_of_the_last_evaluation():
    records = [{"kind": "train", "epoch": 1, "step": 250}, {"kind": "eval", "epoch": 1, "step": 250, "AP": 0.1},
               {"kind": "train", "epoch": 2, "step": 500}, {"kind": "eval", "epoch": 2, "step": 500, "AP": 0.2},
               {"kind": "train", "epoch": 3, "step": 510}]
    assert last_evaluated_epoch(records) == 2
    assert last_evaluated_epoch([{"kind": "train", "epoch": 1, "step": 20}]) is None


def test_a_missing_pipeline_file_is_one_clear_error(tmp_path):
    with pytest.raises(WorkbenchError, match="the demo pipeline is not there"):
        run_demo(tmp_path / "out", pipeline_file=tmp_path / "nope.yaml")


def test_summary_says_where_everything_is_and_how_to_open_it(tmp_path):
    names = ["faster_rcnn", "kl_rpn", "uncertainty_rescaling"]
    runs = {name: tmp_path / "runs" / name for name in names}
    result = DemoResult(
        out=tmp_path, run_dirs=runs, seconds=600,
        metrics={"faster_rcnn": {"AP": 0.25, "AP50": 0.5, "AP75": 0.2}, "kl_rpn": {},
                 "uncertainty_rescaling": {"AP": 0.125, "AP50": 0.25, "AP75": 0.0625}},
        epochs={"faster_rcnn": 3, "kl_rpn": None, "uncertainty_rescaling": 1},
        notebooks=[tmp_path / "notebooks" / "compare_runs.ipynb"], report=tmp_path / "report.html",
        steps_run=10, steps_skipped=0,
    )
    text = format_summary(result)
    assert "demo finished in 10.0 min" in text
    assert "faster_rcnn                 3  0.2500  0.5000  0.2000" in text
    assert "kl_rpn                    n/a     n/a" in text
    assert "uncertainty_rescaling       1  0.1250  0.2500  0.0625" in text
    assert str(tmp_path / "report.html") in text and "compare_runs.ipynb" in text
    assert ".venv/bin/jupyter lab notebooks/" in text
    assert f"workbench app --run {runs['kl_rpn']}" in text
