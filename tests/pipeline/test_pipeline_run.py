"""Pipelines run their notebooks in order, keep them, fail with one line and resume."""

from __future__ import annotations

import os
import re
import sys
from pathlib import Path

import nbformat
import pytest
from pipeline_notebooks import log_lines, write_notebook

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


GROUPED = """
parameters:
  log_file: "{out}/log.txt"
  fail_if_exists: ""
steps:
  - name: before
    notebook: ../notebooks/log.ipynb
    parameters: {step: before}
  - name: left
    group: train
    notebook: ../notebooks/sleep.ipynb
  - name: right
    group: train
    notebook: ../notebooks/sleep.ipynb
  - name: after
    notebook: ../notebooks/log.ipynb
    parameters: {step: after}
"""

SLEEP_BODY = """
import os, time, json
start = time.time()
print(f"{step} is running", flush=True)
if Path(fail_if_exists).name and Path(fail_if_exists).exists():
    raise ValueError(f"broken on purpose in {step}")
time.sleep(seconds)
with open(log_file, "a") as f:
    f.write(json.dumps({"step": step, "start": start, "end": time.time(),
                        "threads": os.environ.get("OMP_NUM_THREADS")}) + "\\n")
"""


def grouped_pipeline(tmp_path: Path, notebooks: Path, seconds: float = 2.0) -> Path:
    body = "from pathlib import Path\n" + SLEEP_BODY
    params = f'step = "?"\nlog_file = "log.txt"\nfail_if_exists = ""\nseconds = {seconds}'
    write_notebook(notebooks / "sleep.ipynb", params, body)
    text = GROUPED.replace("notebook: ../notebooks/sleep.ipynb",
                           "notebook: ../notebooks/sleep.ipynb\n    parameters: {step: STEP, fail_if_exists: \"{out}/broken_STEP\"}")
    text = text.replace("STEP", "left", 2).replace("STEP", "right", 2)
    return write_pipeline(tmp_path, text)


def test_a_group_runs_its_steps_at_the_same_time_with_the_threads_shared(tmp_path, notebooks, monkeypatch, capsys):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setattr("os.cpu_count", lambda: 4)
    out = tmp_path / "out"
    path = grouped_pipeline(tmp_path, notebooks)
    outcomes = run_pipeline(load_pipeline(path, out))

    assert [o.name for o in outcomes if o.status == "ran"][0] == "before"
    assert outcomes[-1].name == "after" and {o.name for o in outcomes[1:3]} == {"left", "right"}
    import json
    lines = log_lines(out / "log.txt")
    assert lines[0].startswith("before") and lines[-1].startswith("after")
    runs = {r["step"]: r for r in map(json.loads, lines[1:3])}
    assert runs["left"]["start"] < runs["right"]["end"] and runs["right"]["start"] < runs["left"]["end"]
    assert runs["left"]["threads"] == runs["right"]["threads"] == "2"  # 4 CPUs shared by 2 steps
    assert "OMP_NUM_THREADS" not in os.environ  # restored after the group
    printed = capsys.readouterr().out
    assert "[left] left is running" in printed and "[right] right is running" in printed
    assert "left, right: together, 2 thread(s) each" in printed
    state = json.loads((out / "pipeline_state.json").read_text())
    assert set(state["steps"]) == {"before", "left", "right", "after"}


def test_a_failing_step_of_a_group_lets_the_other_finish_and_resume_runs_only_it(tmp_path, notebooks):
    out = tmp_path / "out"
    out.mkdir()
    (out / "broken_left").touch()
    path = grouped_pipeline(tmp_path, notebooks, seconds=0.5)
    with pytest.raises(PipelineError, match="step 'left'.*broken on purpose in left"):
        run_pipeline(load_pipeline(path, out), echo=lambda line: None)
    import json
    assert [json.loads(line)["step"] for line in log_lines(out / "log.txt")[1:]] == ["right"]
    assert set(json.loads((out / "pipeline_state.json").read_text())["steps"]) == {"before", "right"}

    (out / "broken_left").unlink()
    outcomes = run_pipeline(load_pipeline(path, out), echo=lambda line: None)
    assert [(o.name, o.status) for o in outcomes] == [
        ("before", "skipped"), ("right", "skipped"), ("left", "ran"), ("after", "ran")]


TRAIN_BODY = """
import sys
from pathlib import Path
sys.path.insert(0, support_dir)
from engine_support import small_config
from workbench.pipelines.runs import train_or_resume
print("training starts", flush=True)
train_or_resume(small_config(Path(data_root), epochs=1, log_every_steps=2), out_dir)
"""


@pytest.fixture
def train_notebook(tmp_path) -> Path:
    from workbench.data.shapes import ShapesConfig, generate_shapes

    folder = tmp_path / "notebooks"
    folder.mkdir()
    data = generate_shapes(tmp_path / "shapes", ShapesConfig(num_train=8, num_val=2, image_size=96, seed=3),
                           progress=False)
    support = Path(__file__).resolve().parents[1] / "engine"
    params = f'support_dir = "{support}"\ndata_root = "{data}"\nout_dir = "run"'
    return write_notebook(folder / "train.ipynb", params, TRAIN_BODY)


def test_pipeline_run_streams_the_training_progress_of_its_notebooks(tmp_path, train_notebook, capsys):
    text = 'steps:\n  - name: train\n    notebook: ../notebooks/train.ipynb\n    parameters: {out_dir: "{out}/run"}\n'
    out = tmp_path / "out"
    assert main(["pipeline", "run", str(write_pipeline(tmp_path, text)), "--out", str(out)]) == 0
    captured = capsys.readouterr()
    assert "training starts" in captured.out  # the cell's stdout, while the step runs
    assert captured.out.index("[1/1] train:") < captured.out.index("training starts")
    progress = [line for line in captured.err.splitlines()
                if re.match(r"^epoch 1/1 step [24]/4 loss \d+\.\d{4} lr \S+ \d+\.\d\d s/step ETA \S+$", line)]
    assert len(progress) == 2, captured.err[-2000:]
    assert "Executing Cell" not in captured.err + captured.out  # papermill's own markers only with --log-output
    assert (out / "run" / "checkpoints" / "last.pt").exists()


def test_kernels_started_together_talk_over_sockets_of_their_own(tmp_path):
    """Four notebooks at once: every kernel starts (no TCP port lost between two of them) and
    reports the Unix-socket transport with a name no other kernel has; no socket is left."""
    import glob
    import json
    import tempfile
    from concurrent.futures import ThreadPoolExecutor

    from workbench.pipelines.runner import execute_notebook

    notebook = tmp_path / "connection.ipynb"
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(
        "import json\nfrom ipykernel.connect import get_connection_info\n"
        "info = json.loads(get_connection_info())\nprint(info['transport'], info['ip'])")]
    nbformat.write(nb, notebook)

    def run(i: int) -> list[str]:
        out = tmp_path / f"run{i}.ipynb"
        execute_notebook(notebook, out)
        return nbformat.read(out, as_version=4).cells[0].outputs[0]["text"].split()

    with ThreadPoolExecutor(max_workers=4) as pool:
        printed = list(pool.map(run, range(4)))
    assert {transport for transport, _ in printed} == {"ipc"}
    assert len({ip for _, ip in printed}) == 4
    assert not [p for _, ip in printed for p in glob.glob(ip + "-*")]
    assert all(ip.startswith(tempfile.gettempdir()) for _, ip in printed)
