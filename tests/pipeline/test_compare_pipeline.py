"""pipelines/compare_methods.yaml and `workbench pipeline compare`, which writes it: loaded and
checked, never trained here."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from workbench.cli import main
from workbench.errors import ConfigError
from workbench.methods import METHODS, get_method
from workbench.pipelines import load_pipeline
from workbench.pipelines.compare import COMPARE_PIPELINE, compare_pipeline, with_baselines


def train_steps(pipeline):
    return [s for s in pipeline.steps if s.notebook is not None and s.notebook.name == "train.ipynb"]


def test_trains_every_method_and_its_baseline_over_the_seeds_then_exports_compares_and_reports(tmp_path):
    pipeline = load_pipeline(COMPARE_PIPELINE, tmp_path)
    names = [s.name for s in pipeline.steps]
    assert names[0] == "data" and names[-3:] == ["export", "compare_runs", "report"]
    trains = train_steps(pipeline)
    runs = {(s.parameters["method"], s.parameters["seed"]) for s in trains}
    methods = {m for m, _ in runs}
    assert methods <= set(METHODS)
    assert runs == {(m, seed) for m in methods for seed in (0, 1, 2)}
    for step in trains:
        method = step.parameters["method"]
        assert step.parameters["preset"] == "tiny" and "tiny" in get_method(method).presets
        assert step.parameters["trace"] is True
        run = Path(step.parameters["out_dir"])
        assert run == tmp_path / "runs" / method / f"seed_{step.parameters['seed']}"
        assert step.output == run / "notebooks" / "train.ipynb"
        baseline = get_method(method).baseline
        assert baseline is None or baseline in methods
    # training runs side by side, two at a time
    groups = [s.group for s in trains]
    assert all(groups) and max(groups.count(g) for g in groups) == 2
    run_dirs = [s.parameters["out_dir"] for s in trains]
    export = pipeline.steps[names.index("export")].command
    assert export[:3] == ("workbench", "export", "fiftyone")
    assert [export[i + 1] for i, a in enumerate(export) if a == "--run"] == run_dirs
    assert export[export.index("--name") + 1] == "compare_methods"
    compare = pipeline.steps[names.index("compare_runs")]
    assert compare.notebook.name == "compare_runs.ipynb" and compare.parameters["run_dirs"] == run_dirs
    report = pipeline.steps[-1].command
    assert [report[i + 1] for i, a in enumerate(report) if a == "--run"] == run_dirs
    assert str(tmp_path / "report.html") in report


def test_every_registered_method_is_in_the_file(tmp_path):
    methods = {s.parameters["method"] for s in train_steps(load_pipeline(COMPARE_PIPELINE, tmp_path))}
    missing = set(METHODS) - methods
    assert not missing, (f"methods registered since pipelines/compare_methods.yaml was written: {sorted(missing)}; "
                         "write it again: workbench pipeline compare --file pipelines/compare_methods.yaml")


def test_the_file_is_what_the_generator_writes():
    document = yaml.safe_load(COMPARE_PIPELINE.read_text())
    trains = [s["parameters"] for s in document["steps"] if s.get("notebook", "").endswith("train.ipynb")]
    methods = list(dict.fromkeys(p["method"] for p in trains))
    seeds = list(dict.fromkeys(p["seed"] for p in trains))
    assert document == compare_pipeline(methods, seeds)


def test_epochs_reach_only_the_training_runs(tmp_path):
    pipeline = load_pipeline(COMPARE_PIPELINE, tmp_path, overrides={"epochs": 1})
    assert [s.name for s in pipeline.steps if "epochs" in s.parameters] == [s.name for s in train_steps(pipeline)]


def test_baselines_come_first_and_follow_the_chain():
    assert with_baselines(["kl_rpn"]) == ["faster_rcnn", "kl_rpn"]
    assert with_baselines(["cascade_iou_uniform", "kl_rpn"]) == ["faster_rcnn", "cascade_rcnn", "cascade_iou_uniform",
                                                                  "kl_rpn"]
    assert with_baselines(["faster_rcnn"]) == ["faster_rcnn"]
    with pytest.raises(ConfigError, match="unknown method 'nope'"):
        with_baselines(["nope"])
    with pytest.raises(ConfigError, match="seeds"):
        compare_pipeline(["kl_rpn"], [0, 0])


def test_cli_writes_a_chosen_comparison_anywhere(tmp_path, capsys):
    path = tmp_path / "sub" / "mine.yaml"
    path.parent.mkdir()
    assert main(["pipeline", "compare", "--file", str(path), "--method", "kl_rpn", "--seed", "3", "--seed", "4",
                 "--concurrent", "1", "--name", "mine"]) == 0
    assert "4 training run(s)" in capsys.readouterr().out
    pipeline = load_pipeline(path, tmp_path / "out", overrides={"epochs": 1})
    trains = train_steps(pipeline)
    assert [(s.parameters["method"], s.parameters["seed"]) for s in trains] == [
        ("faster_rcnn", 3), ("kl_rpn", 3), ("faster_rcnn", 4), ("kl_rpn", 4)]
    assert all(s.group is None for s in trains) and all(s.notebook.is_file() for s in trains)
    assert pipeline.name == "mine" and "mine" in pipeline.steps[-3].command
