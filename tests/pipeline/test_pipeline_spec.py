"""Pipeline files: placeholders, defaults and one-line errors for malformed files."""

from __future__ import annotations

import sys

import pytest

from workbench.cli import main
from workbench.pipelines import PipelineError, load_pipeline, parse_parameter, run_pipeline


def write(tmp_path, text: str):
    path = tmp_path / "p.yaml"
    path.write_text(text)
    return path


def test_placeholders_defaults_and_shared_parameters(tmp_path, notebooks):
    path = write(tmp_path, """
output: results
parameters: {data: "builtin:shapes", run: "{out}/runs/a"}
steps:
  - name: one
    notebook: notebooks/log.ipynb
    parameters: {step: one, run: "{out}/runs/b", nested: {paths: ["{out}/x"]}}
  - name: two
    command: [workbench, --help]
""")
    pipeline = load_pipeline(path, tmp_path / "o")
    one, two = pipeline.steps
    out = str((tmp_path / "o").absolute())
    assert one.parameters == {"data": "builtin:shapes", "run": f"{out}/runs/b", "step": "one",
                              "nested": {"paths": [f"{out}/x"]}}
    assert one.output == (tmp_path / "o" / "notebooks" / "one.ipynb").absolute()
    assert one.notebook == (notebooks / "log.ipynb").resolve()
    assert two.kind == "command" and two.parameters == {}
    assert load_pipeline(path).out.name == "results"


@pytest.mark.parametrize(
    "text, message",
    [
        ("steps: []", "'steps' must be a non-empty list"),
        ("steps:\n  - {name: a}", "exactly one of 'notebook' or 'command'"),
        ("steps:\n  - {name: a, notebook: missing.ipynb}", "no such notebook"),
        ("steps:\n  - {name: a, command: [x]}\n  - {name: a, command: [y]}", "used twice"),
        ("steps:\n  - {name: a, command: [x], colour: red}", "unknown keys ['colour']"),
        ("steps: [a, b", "not valid YAML (line"),
        ("steps:\n  - {name: a, command: [x], group: 3}", "'group' must be a non-empty string"),
        ("steps:\n  - {name: a, command: [x], group: g}\n  - {name: b, command: [y]}\n"
         "  - {name: c, command: [z], group: g}", "steps of a group must be consecutive"),
    ],
)
def test_malformed_files_give_one_line(tmp_path, capsys, text, message):
    path = write(tmp_path, text)
    with pytest.raises(PipelineError, match="p.yaml") as info:
        load_pipeline(path)
    assert message in str(info.value)
    assert main(["pipeline", "run", str(path)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and message in err


def test_failing_command_names_exit_code_and_last_stderr_line(tmp_path):
    script = "import sys; print('first', file=sys.stderr); print('the real reason', file=sys.stderr); sys.exit(3)"
    path = write(tmp_path, f"steps:\n  - name: cmd\n    command: [{sys.executable!r}, -c, {script!r}]\n")
    pipeline = load_pipeline(path, tmp_path / "o")
    with pytest.raises(PipelineError) as info:
        run_pipeline(pipeline, echo=lambda line: None)
    message = str(info.value)
    assert "step 'cmd'" in message and "exit code 3" in message and "the real reason" in message
    assert "the real reason" in (tmp_path / "o" / "logs" / "cmd.log").read_text()


def test_workbench_commands_run_in_this_environment(tmp_path):
    path = write(tmp_path, "steps:\n  - name: help\n    command: [workbench, pipeline, run, --help]\n")
    outcomes = run_pipeline(load_pipeline(path, tmp_path / "o"), echo=lambda line: None)
    assert [o.status for o in outcomes] == ["ran"]


def test_overrides_reach_the_notebooks_that_declare_them(tmp_path, notebooks):
    path = write(tmp_path, """
steps:
  - {name: one, notebook: notebooks/log.ipynb, parameters: {step: one}}
  - {name: two, command: [workbench, --help]}
""")
    pipeline = load_pipeline(path, tmp_path / "o", overrides={"step": "changed", "log_file": "x.txt"})
    assert pipeline.steps[0].parameters == {"step": "changed", "log_file": "x.txt"}
    assert pipeline.steps[1].parameters == {}
    assert pipeline.steps[0].fingerprint() != load_pipeline(path, tmp_path / "o").steps[0].fingerprint()
    with pytest.raises(PipelineError, match="no notebook of this pipeline has the parameter.*epochs"):
        load_pipeline(path, tmp_path / "o", overrides={"epochs": 2})


def test_command_line_values_are_read_as_yaml():
    assert parse_parameter("2") == 2 and parse_parameter("[a, 1]") == ["a", 1]
    assert parse_parameter("builtin:shapes?train=8&val=4") == "builtin:shapes?train=8&val=4"
    assert parse_parameter("{min_size: 96}") == {"min_size": 96}
