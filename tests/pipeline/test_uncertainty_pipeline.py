"""pipelines/uncertainty_rows.yaml: loads, trains every row of the paper's table from its preset,
and its notebook steps pass only parameters their notebooks define."""

from __future__ import annotations

from pathlib import Path

from workbench.methods import build_preset
from workbench.methods.uncertainty import ROWS
from workbench.pipelines import load_pipeline
from workbench.pipelines.spec import notebook_parameters

PIPELINE = Path(__file__).resolve().parents[2] / "pipelines" / "uncertainty_rows.yaml"


def test_the_pipeline_trains_every_row_and_shows_the_method(tmp_path):
    pipeline = load_pipeline(PIPELINE, tmp_path / "out")
    trained = {s.name[len("train_"):]: s for s in pipeline.steps if s.name.startswith("train_")}
    assert set(trained) == set(ROWS)
    for row, step in trained.items():
        cfg = build_preset(step.parameters["method"], step.parameters["preset"])
        assert cfg.method == "uncertainty_rescaling"
        expected = ROWS[row]
        assert cfg.model.branch == expected["branch"] and cfg.model.rescale == expected["rescale"]
        assert cfg.model.base.objectness_loss == expected.get("objectness_loss", "bce")
    for step in pipeline.steps:
        if step.kind == "notebook":
            assert set(step.parameters) <= notebook_parameters(step.notebook), step.name
    names = [s.name for s in pipeline.steps]
    assert names.index("uncertainty_method") > names.index("train_method")
    assert names[-1] == "compare_runs"
