"""pipelines/uncertainty_rows.yaml: loads, trains every row of the paper's table from its preset,
and its notebook steps pass only parameters their notebooks define."""

from __future__ import annotations

from pathlib import Path

from pipeline_notebooks import trained_rows, undefined_notebook_parameters

from workbench.methods import build_preset
from workbench.methods.uncertainty import ROWS
from workbench.pipelines import load_pipeline

PIPELINE = Path(__file__).resolve().parents[2] / "pipelines" / "uncertainty_rows.yaml"


def test_the_pipeline_trains_every_row_and_shows_the_method(tmp_path):
    pipeline = load_pipeline(PIPELINE, tmp_path / "out")
    trained = trained_rows(pipeline)
    assert set(trained) == set(ROWS)
    for row, step in trained.items():
        cfg = build_preset(step.parameters["method"], step.parameters["preset"])
        assert cfg.method == "uncertainty_rescaling"
        expected = ROWS[row]
        assert cfg.model.branch == expected["branch"] and cfg.model.rescale == expected["rescale"]
        assert cfg.model.base.objectness_loss == expected.get("objectness_loss", "bce")
    assert undefined_notebook_parameters(pipeline) == {}
    names = [s.name for s in pipeline.steps]
    assert names.index("uncertainty_method") > names.index("train_method")
    assert names[-1] == "compare_runs"
