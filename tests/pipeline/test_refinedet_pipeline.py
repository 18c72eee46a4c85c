"""pipelines/refinedet.yaml: loads, trains SSD, RefineDet and the ablation rows from their
presets, and its notebook steps pass only parameters their notebooks define."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from pipeline_notebooks import trained_rows, undefined_notebook_parameters

from workbench.methods import build_preset
from workbench.pipelines import load_pipeline
from workbench.pipelines.params import override_model

PIPELINE = Path(__file__).resolve().parents[2] / "pipelines" / "refinedet.yaml"
SWITCHES = ("refine_anchors", "negative_filtering", "transfer_connection")


def test_the_pipeline_trains_the_rows_and_shows_refinedet(tmp_path):
    pipeline = load_pipeline(PIPELINE, tmp_path / "out")
    trained = trained_rows(pipeline)
    assert set(trained) == {"ssd", "refinedet", "no_refine", "no_filter", "no_tcb"}
    switched_off = {}
    for row, step in trained.items():
        cfg = build_preset(step.parameters["method"], step.parameters["preset"])
        model = override_model(cfg.model, step.parameters.get("model_overrides") or {})
        if cfg.method == "refinedet":
            switched_off[row] = [name for name in SWITCHES if not getattr(model, name)]
            assert dataclasses.replace(model, **{k: True for k in SWITCHES}) == cfg.model
    assert switched_off == {"refinedet": [], "no_refine": ["refine_anchors"], "no_filter": ["negative_filtering"],
                            "no_tcb": ["transfer_connection"]}
    assert undefined_notebook_parameters(pipeline) == {}
    names = [s.name for s in pipeline.steps]
    assert names.index("refinedet_notebook") > names.index("train_refinedet")
    assert names[-1] == "compare_runs"
