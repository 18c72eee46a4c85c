"""Pipelines run their notebooks in order, keep them, fail with one line and resume."""

from __future__ import annotations

import sys
from pathlib import Path

import nbformat
import pytest
from pipeline_notebooks import log_lines

from workbench.cli import main
from workbench.pipelines import PipelineError, load_pipeline, run_pipeline

PIPELINE = """
name: tiny
parameters:
  log_file: "{out}/log.txt"
  fail_if_exists: "{out}/broken"
steps:
  - name: first
    notebook: ../notebooks/log.ipynb
    parameters: {step: first, fail_if_exists: ""}
  - name: second
    notebook: ../notebooks/log.ipynb
    parameters: {step: second}
    output: "{out}/elsewhere/second_run.ipynb"
  - name: third
    notebook: ../notebooks/log.ipynb
    parameters: {step: third, fail_if_exists: ""}
"""


def write_pipeline(tmp_path: Path, text: str = PIPELINE) -> Path:
    folder = tmp_path / "pipelines"
    folder.mkdir(exist_ok=True)
    path = folder / "tiny.yaml"
    path.write_text(text)
    return path


def test_steps_run_in_order_with_this_interpreter_and_keep_notebooks(tmp_path, notebooks):
    out = tmp_path / "out"
    pipeline = load_pipeline(write_pipeline(tmp_path), out)
    outcomes = run_pipeline(pipeline, echo=lambda line: None)

    lines = log_lines(out / "log.txt")
    assert [line.split()[0] for line in lines] == ["first", "second", "third"]
    assert {Path(line.split()[1]).resolve() for line in lines} == {Path(sys.executable).resolve()}
    assert [o.status for o in outcomes] == ["ran", "ran", "ran"]
    kept = [out / "notebooks" / "first.ipynb", out / "elsewhere" / "second_run.ipynb", out / "notebooks" / "third.ipynb"]
    for path, step in zip(kept, ["first", "second", "third"]):
        nb = nbformat.read(path, as_version=4)
        injected = [c for c in nb.cells if "injected-parameters" in c.metadata.get("tags", [])]
        assert injected and f"step = \"{step}\"" in injected[0].source
        assert "papermill" in nb.metadata


def test_failure_is_one_line_naming_step_notebook_and_cell(tmp_path, notebooks, capsys):
    out = tmp_path / "out"
    out.mkdir()
    (out / "broken").touch()
    code = main(["pipeline", "run", str(write_pipeline(tmp_path)), "--out", str(out)])

    err = capsys.readouterr().err.strip()
    assert code == 2
    assert len(err.splitlines()) == 1 and "Traceback" not in err
    assert "step 'second'" in err and "log.ipynb" in err
    assert "cell 2" in err and "ValueError: broken on purpose in second" in err
    executed = out / "elsewhere" / "second_run.ipynb"
    assert str(executed) in err
    outputs = [o for c in nbformat.read(executed, as_version=4).cells for o in c.get("outputs", [])]
    assert any(o.get("ename") == "ValueError" for o in outputs)
    assert [line.split()[0] for line in log_lines(out / "log.txt")] == ["first"]


def test_resume_reruns_only_what_did_not_finish(tmp_path, notebooks):
    out = tmp_path / "out"
    out.mkdir()
    (out / "broken").touch()
    path = write_pipeline(tmp_path)
    with pytest.raises(PipelineError):
        run_pipeline(load_pipeline(path, out), echo=lambda line: None)
    (out / "broken").unlink()

    outcomes = run_pipeline(load_pipeline(path, out), echo=lambda line: None)
    assert [o.status for o in outcomes] == ["skipped", "ran", "ran"]
    assert [line.split()[0] for line in log_lines(out / "log.txt")] == ["first", "second", "third"]

    again = run_pipeline(load_pipeline(path, out), echo=lambda line: None)
    assert [o.status for o in again] == ["skipped", "skipped", "skipped"]
    assert len(log_lines(out / "log.txt")) == 3


def test_changed_parameters_rerun_that_step_and_the_ones_after(tmp_path, notebooks):
    out = tmp_path / "out"
    path = write_pipeline(tmp_path)
    run_pipeline(load_pipeline(path, out), echo=lambda line: None)
    write_pipeline(tmp_path, PIPELINE.replace("{step: second}", "{step: second_v2}"))

    outcomes = run_pipeline(load_pipeline(path, out), echo=lambda line: None)
    assert [o.status for o in outcomes] == ["skipped", "ran", "ran"]
    steps = [line.split()[0] for line in log_lines(out / "log.txt")]
    assert steps == ["first", "second", "third", "second_v2", "third"]
