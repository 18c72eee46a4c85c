"""Running a pipeline: its steps in order, each executed notebook kept, resumable.

State: ``<out>/pipeline_state.json`` records each finished step with the fingerprint of what it
ran (:meth:`Step.fingerprint`). A later run skips the leading steps that finished with the same
fingerprint; from the first step that must run, every later step runs again (its inputs may
have changed). ``fresh=True`` ignores the state.

A failing notebook stops the pipeline with a :class:`PipelineError` naming the step, the
notebook, the failing cell and its error; the executed notebook (with the error in it) stays at
the step's output path. A failing command names its exit code and last line of stderr; its
stderr is kept in ``<out>/logs/<step>.log``.
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from workbench.atomic import write_text_atomic
from workbench.pipelines.spec import Pipeline, PipelineError, Step

STATE_FILE = "pipeline_state.json"
#: The kernel papermill starts: the spec named ``python3`` runs the interpreter running papermill.
KERNEL_NAME = "python3"
#: Kernel options: no start-up warnings on the console (cell errors still reach the notebook).
KERNEL_ARGUMENTS = ["--IPKernelApp.log_level=CRITICAL"]


@functools.cache
def _kernel_manager_class() -> type | None:
    """Kernels that talk over Unix sockets with names of their own, where there are some.

    Over TCP, jupyter_client picks each kernel's five ports by binding to port 0 and letting
    go; the kernel binds them again a moment later. When two kernels start together (a group's
    steps) one may lose a port in between ("Address already in use", the kernel dies before
    replying to ``kernel_info``): jupyter_client issue 487. Sockets named by a fresh UUID
    cannot collide. ``None`` (papermill's default manager) where Unix sockets do not exist."""
    if os.name != "posix":
        return None
    import tempfile
    import uuid

    from jupyter_client.manager import AsyncKernelManager
    from traitlets import default

    class UnixSocketKernelManager(AsyncKernelManager):
        @default("transport")
        def _default_transport(self) -> str:
            return "ipc"

        @default("ip")
        def _default_ip(self) -> str:  # the sockets are <ip>-1 ... <ip>-5, removed at shutdown
            return os.path.join(tempfile.gettempdir(), f"workbench-kernel-{uuid.uuid4().hex}")

    return UnixSocketKernelManager


@dataclass
class StepOutcome:
    """What happened to one step: ``ran`` or ``skipped`` (finished before, same fingerprint)."""

    name: str
    status: str
    seconds: float
    output: Path | None


def state_path(pipeline: Pipeline) -> Path:
    return pipeline.out / STATE_FILE


def read_state(pipeline: Pipeline) -> dict[str, Any]:
    """The state file's contents (``{"steps": {name: {...}}}``), empty when there is none."""
    path = state_path(pipeline)
    if not path.exists():
        return {"steps": {}}
    try:
        state = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise PipelineError(f"{path}: unreadable pipeline state ({exc}); delete it or pass --fresh") from exc
    state.setdefault("steps", {})
    return state


def write_state(pipeline: Pipeline, state: dict[str, Any]) -> None:
    """Write the state file atomically (a temp file, then rename)."""
    write_text_atomic(state_path(pipeline), json.dumps(state, indent=2, sort_keys=True) + "\n")


def first_line(text: Any, limit: int = 300) -> str:
    """The first non-empty line of ``text``, shortened to ``limit`` characters."""
    lines = [line.strip() for line in str(text).splitlines() if line.strip()]
    line = lines[0] if lines else ""
    return line if len(line) <= limit else line[: limit - 3] + "..."


def command_argv(command: tuple[str, ...]) -> list[str]:
    """A leading ``workbench`` becomes ``<this python> -m workbench`` (the same environment)."""
    if command[0] == "workbench":
        return [sys.executable, "-m", "workbench", *command[1:]]
    return list(command)


def execute_notebook(notebook: Path | str, output: Path | str, parameters: dict[str, Any] | None = None, *,
                     kernel_name: str = KERNEL_NAME, **options: Any) -> None:
    """Execute ``notebook`` with papermill into ``output``, without saving widget state.

    An executed notebook is a record read later without a kernel. There the saved state of its
    widgets does not render (papermill's output is untrusted), while it is most of the file: a
    Plotly ``FigureWidget`` saves plotly.js itself (about 5 MB) with its figure. The figures a
    record shows are its plain Plotly outputs (the explorer displays a static first view before
    its widget, :meth:`workbench.viz.explorer.TraceExplorer.static_figure`), so the size of a
    record follows what it shows. ``options`` go to ``papermill.execute_notebook``."""
    import papermill

    from workbench.viz.explorer import RECORD_ENV

    os.environ[RECORD_ENV] = "1"  # inherited by the kernels this process starts: they execute records
    manager = _kernel_manager_class()
    if manager is not None:
        options.setdefault("kernel_manager_class", manager)
    papermill.execute_notebook(str(notebook), str(output), parameters=parameters or {}, kernel_name=kernel_name,
                               progress_bar=False, extra_arguments=KERNEL_ARGUMENTS, store_widget_state=False,
                               **options)


def run_notebook(step: Step, *, kernel_name: str = KERNEL_NAME, log_output: bool = False,
                 stream_output: bool = True, streams: dict[str, Any] | None = None) -> None:
    """Execute the step's notebook with papermill into ``step.output``.

    With ``stream_output`` what the notebook's cells print (stdout and stderr: the training's
    progress lines, for one) is copied to this process's stdout and stderr while the cell
    runs, as ``papermill --log-output`` would show it but without papermill's own cell
    markers. ``log_output`` streams everything through papermill's logger instead (cell
    markers and results included). ``streams`` gives papermill other ``stdout_file`` and
    ``stderr_file`` objects (a group's labelled streams).
    """
    from papermill.exceptions import PapermillExecutionError

    step.output.parent.mkdir(parents=True, exist_ok=True)
    streams = dict(streams or {})
    if stream_output and not log_output:
        streams = {"stdout_file": sys.stdout, "stderr_file": sys.stderr}
    try:
        with _papermill_logging(log_output):
            execute_notebook(step.notebook, step.output, step.parameters, kernel_name=kernel_name,
                             log_output=log_output, **streams)
    except PapermillExecutionError as exc:
        raise PipelineError(
            f"step '{step.name}': notebook {step.notebook.name} failed in cell {exc.cell_index} "
            f"({exc.ename}: {first_line(exc.evalue)}); the executed notebook is {step.output}"
        ) from None


@contextlib.contextmanager
def _papermill_logging(log_output: bool):
    """papermill's own INFO lines only when cell output is streamed too."""
    logger = logging.getLogger("papermill")
    previous = logger.level
    if not log_output:
        logger.setLevel(logging.WARNING)
    try:
        yield
    finally:
        logger.setLevel(previous)


def run_command(step: Step, logs: Path) -> None:
    """Run the step's command; stdout goes to the console, stderr to ``logs/<step>.log``."""
    logs.mkdir(parents=True, exist_ok=True)
    log_file = logs / f"{step.name}.log"
    argv = command_argv(step.command)
    try:
        done = subprocess.run(argv, stdout=None, stderr=subprocess.PIPE, text=True)
    except OSError as exc:
        raise PipelineError(f"step '{step.name}': cannot run {argv[0]!r}: {exc.strerror}") from None
    log_file.write_text(done.stderr)
    if done.returncode != 0:
        lines = [line for line in done.stderr.splitlines() if line.strip()]
        last = first_line(lines[-1]) if lines else "no error output"
        raise PipelineError(
            f"step '{step.name}': command `{' '.join(step.command)}` failed with exit code "
            f"{done.returncode}: {last} (full stderr in {log_file})"
        )


def run_step(step: Step, pipeline: Pipeline, *, kernel_name: str = KERNEL_NAME, log_output: bool = False,
             stream_output: bool = True) -> None:
    """Run one step (a notebook or a command)."""
    if step.kind == "notebook":
        run_notebook(step, kernel_name=kernel_name, log_output=log_output, stream_output=stream_output)
    else:
        run_command(step, pipeline.out / "logs")


def is_finished(state: dict[str, Any], step: Step) -> bool:
    """Whether the state records ``step`` as finished with the same fingerprint."""
    entry = state["steps"].get(step.name)
    return bool(entry) and entry.get("fingerprint") == step.fingerprint()


def step_batches(steps: tuple[Step, ...]) -> list[list[Step]]:
    """The steps cut into batches that run one after the other: a step on its own, or the
    consecutive steps of one group (which run concurrently)."""
    batches: list[list[Step]] = []
    for step in steps:
        if batches and step.group is not None and batches[-1][0].group == step.group:
            batches[-1].append(step)
        else:
            batches.append([step])
    return batches


def run_pipeline(
    pipeline: Pipeline,
    *,
    fresh: bool = False,
    kernel_name: str = KERNEL_NAME,
    log_output: bool = False,
    stream_output: bool = True,
    echo: Callable[[str], None] | None = None,
) -> list[StepOutcome]:
    """Run the pipeline's steps in order, a group's steps concurrently (see the module
    docstring for resuming). What the notebooks print is streamed while they run
    (``stream_output``, see :func:`run_notebook`); a group's lines carry their step's name."""
    echo = echo or _print_flushed
    pipeline.out.mkdir(parents=True, exist_ok=True)
    state = {"steps": {}} if fresh else read_state(pipeline)
    state.update(pipeline=pipeline.name, source=str(pipeline.source))
    outcomes: list[StepOutcome] = []
    resuming = True
    numbers = {step.name: number for number, step in enumerate(pipeline.steps, start=1)}
    total = len(pipeline.steps)
    options = {"kernel_name": kernel_name, "log_output": log_output, "stream_output": stream_output}
    for batch in step_batches(pipeline.steps):
        to_run = []
        for step in batch:
            if resuming and is_finished(state, step):
                echo(f"[{numbers[step.name]}/{total}] {step.name}: finished before, skipped")
                outcomes.append(StepOutcome(step.name, "skipped", 0.0, step.output))
            else:
                to_run.append(step)
        resuming = resuming and not to_run
        if not to_run:
            continue
        for step in to_run:
            state["steps"].pop(step.name, None)
        write_state(pipeline, state)

        def finished(step: Step, seconds: float) -> None:
            state["steps"][step.name] = {
                "fingerprint": step.fingerprint(),
                "finished_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                "seconds": round(seconds, 2),
                "output": str(step.output) if step.output else None,
            }
            write_state(pipeline, state)
            echo(f"[{numbers[step.name]}/{total}] {step.name}: done in {seconds:.1f} s")
            outcomes.append(StepOutcome(step.name, "ran", seconds, step.output))

        if len(to_run) == 1:
            step = to_run[0]
            echo(f"[{numbers[step.name]}/{total}] {step.name}: {_describe(step)}")
            start = time.perf_counter()
            run_step(step, pipeline, **options)
            finished(step, time.perf_counter() - start)
        else:
            _run_together(to_run, pipeline, options, numbers, total, echo, finished)
    return outcomes


def _run_together(steps: list[Step], pipeline: Pipeline, options: dict[str, Any], numbers: dict[str, int],
                  total: int, echo: Callable[[str], None], finished: Callable[[Step, float], None]) -> None:
    """Run a group's steps at the same time, sharing the CPU's threads out between them. Every
    step runs to its end even when another fails (nothing written is lost); the first failure
    is raised once all have stopped."""
    threads = max(1, (os.cpu_count() or 1) // len(steps))
    echo(f"[{numbers[steps[0].name]}-{numbers[steps[-1].name]}/{total}] "
         f"{', '.join(s.name for s in steps)}: together, {threads} thread(s) each")
    for step in steps:
        echo(f"[{numbers[step.name]}/{total}] {step.name}: {_describe(step)}")
    errors: list[BaseException] = []
    with _thread_budget(threads), _papermill_logging(options["log_output"]):
        with ThreadPoolExecutor(max_workers=len(steps)) as pool:
            starts = {}
            futures = {}
            for step in steps:
                starts[step.name] = time.perf_counter()
                futures[pool.submit(_run_labelled, step, pipeline, options)] = step
            for future in as_completed(futures):
                step = futures[future]
                try:
                    future.result()
                except BaseException as exc:  # noqa: BLE001 - re-raised below, after the others end
                    errors.append(exc)
                    continue
                finished(step, time.perf_counter() - starts[step.name])
    if errors:
        raise errors[0]


def _run_labelled(step: Step, pipeline: Pipeline, options: dict[str, Any]) -> None:
    """One step of a group; a notebook's streamed output is prefixed with the step's name."""
    if step.kind == "notebook" and options["stream_output"] and not options["log_output"]:
        run_notebook(step, kernel_name=options["kernel_name"], log_output=False, stream_output=False,
                     streams={"stdout_file": _Labelled(step.name, sys.stdout),
                              "stderr_file": _Labelled(step.name, sys.stderr)})
    else:
        run_step(step, pipeline, **options)


class _Labelled:
    """A text stream that writes whole lines to ``target``, each prefixed with ``[label]``, so
    that the lines of concurrent steps stay apart."""

    _lock = threading.Lock()

    def __init__(self, label: str, target: Any) -> None:
        self.label = label
        self.target = target
        self.pending = ""

    def write(self, text: str) -> int:
        self.pending += text
        *lines, self.pending = self.pending.split("\n")
        if lines:
            with self._lock:
                self.target.write("".join(f"[{self.label}] {line}\n" for line in lines))
                self.target.flush()
        return len(text)

    def flush(self) -> None:
        pass


@contextlib.contextmanager
def _thread_budget(threads: int):
    """``OMP_NUM_THREADS`` for the kernels and processes started inside (torch reads it when it
    is imported), unless the user has set it."""
    if "OMP_NUM_THREADS" in os.environ:
        yield
        return
    os.environ["OMP_NUM_THREADS"] = str(threads)
    try:
        yield
    finally:
        os.environ.pop("OMP_NUM_THREADS", None)


def _print_flushed(line: str) -> None:
    """Print a step line at once, so it comes before what the step's notebook streams."""
    print(line, flush=True)


def _describe(step: Step) -> str:
    if step.kind == "notebook":
        return f"{step.notebook.name} -> {step.output}"
    return "$ " + " ".join(step.command)
