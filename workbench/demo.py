"""``workbench demo``: the demo pipeline (``pipelines/demo.yaml``) and where its results are.

The pipeline builds the built-in dataset, trains the baseline (``faster_rcnn``) and KL-RPN
(``kl_rpn``) with their ``tiny`` presets, and RefineDet (``refinedet``) and the uncertainty
rescaling (``uncertainty_rescaling``) for one epoch of theirs, enough to show refined anchors and
a BALD map (each train notebook evaluates its run), predicts with traces, exports the four runs
to FiftyOne, executes the inspection notebooks (proposals, NMS decisions, anchors before and
after refinement, the BALD map), compares the two two-stage runs and writes ``report.html``.
Re-running continues where it stopped: finished steps are skipped, an interrupted training run
is resumed.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from workbench.errors import WorkbenchError

#: The demo pipeline of a source checkout (``pipelines/`` beside the ``workbench`` package).
DEMO_PIPELINE = Path(__file__).resolve().parents[1] / "pipelines" / "demo.yaml"


@dataclass
class DemoResult:
    out: Path
    run_dirs: dict[str, Path]
    metrics: dict[str, dict[str, Any]]
    seconds: float
    #: run name -> the epoch of its last evaluation (the runs train different schedules)
    epochs: dict[str, int | None] = field(default_factory=dict)
    notebooks: list[Path] = field(default_factory=list)
    report: Path | None = None
    steps_run: int = 0
    steps_skipped: int = 0


def find_runs(out: Path) -> dict[str, Path]:
    """Run name -> folder of every run under ``out/runs``."""
    runs_dir = out / "runs"
    if not runs_dir.is_dir():
        return {}
    return {p.name: p for p in sorted(runs_dir.iterdir()) if (p / "config.json").is_file()}


def run_demo(
    out: Path, *, epochs: int | None = None, fresh: bool = False, pipeline_file: Path | None = None,
    log_output: bool = False,
) -> DemoResult:
    """Run the demo pipeline into ``out`` (``epochs`` sets every run's epochs, the presets' and the
    pipeline's own one-epoch schedules alike)."""
    from workbench.pipelines import load_pipeline, run_pipeline
    from workbench.pipelines.runs import load_run

    path = Path(pipeline_file) if pipeline_file else DEMO_PIPELINE
    if not path.is_file():
        raise WorkbenchError(f"{path}: the demo pipeline is not there (it ships with a source checkout)")
    start = time.perf_counter()
    overrides = {"epochs": epochs} if epochs is not None else {}
    pipeline = load_pipeline(path, out, overrides)
    outcomes = run_pipeline(pipeline, fresh=fresh, log_output=log_output)
    runs = find_runs(pipeline.out)
    summaries = {name: load_run(p) for name, p in runs.items()}
    notebooks = [o.output for o in outcomes if o.output is not None]
    report = pipeline.out / "report.html"
    return DemoResult(
        out=pipeline.out, run_dirs=runs, metrics={name: s.final for name, s in summaries.items()},
        epochs={name: last_evaluated_epoch(s.records) for name, s in summaries.items()},
        seconds=time.perf_counter() - start, notebooks=notebooks, report=report if report.exists() else None,
        steps_run=sum(o.status == "ran" for o in outcomes), steps_skipped=sum(o.status == "skipped" for o in outcomes),
    )


def last_evaluated_epoch(records: list[dict[str, Any]]) -> int | None:
    """The epoch of the last ``eval`` record of a run's ``metrics.jsonl`` (``None`` without
    one); the demo's runs are evaluated after every epoch, so it is the epochs trained."""
    epochs = [r["epoch"] for r in records if r.get("kind") == "eval" and "epoch" in r]
    return epochs[-1] if epochs else None


def _metric(metrics: dict[str, Any], key: str) -> str:
    value = metrics.get(key)
    return f"{value:7.4f}" if isinstance(value, (int, float)) else f"{'n/a':>7}"


def format_summary(result: DemoResult) -> str:
    """What the demo made and how to open it."""
    lines = [
        f"demo finished in {result.seconds / 60:.1f} min ({result.steps_run} steps ran, "
        f"{result.steps_skipped} skipped); everything is under {result.out}",
        "",
        f"{'method':<22} {'epochs':>6} {'AP':>7} {'AP50':>7} {'AP75':>7}  run directory",
    ]
    for name, metrics in result.metrics.items():
        epochs = result.epochs.get(name)
        lines.append(f"{name:<22} {'n/a' if epochs is None else epochs:>6} {_metric(metrics, 'AP')} "
                     f"{_metric(metrics, 'AP50')} {_metric(metrics, 'AP75')}  {result.run_dirs[name]}")
    lines += ["", "executed notebooks:"] + [f"  {p}" for p in result.notebooks]
    if result.report is not None:
        lines += ["", f"report (one self-contained HTML file): {result.report}"]
    lines += ["", "next:", "  .venv/bin/jupyter lab notebooks/          # the notebooks, with widgets"]
    for run_dir in result.run_dirs.values():
        lines.append(f"  .venv/bin/workbench app --run {run_dir}   # FiftyOne App on http://127.0.0.1:5151")
    return "\n".join(lines)
