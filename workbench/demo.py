"""``workbench demo``: the built-in dataset, a small detector trained on CPU, its evaluation.

Re-running the demo continues where it stopped: a finished run is reused, an interrupted one is
resumed.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

DEMO_DATA = "builtin:shapes"


@dataclass
class DemoResult:
    out: Path
    run_dirs: dict[str, Path]
    metrics: dict[str, dict[str, float]]
    seconds: float


def _train_or_reuse(method: str, preset: str, run_dir: Path, epochs: int | None, progress: bool) -> None:
    from workbench.config import apply_overrides
    from workbench.engine.checkpoint import load_checkpoint
    from workbench.engine.run_dir import RunDir
    from workbench.engine.trainer import load_run_config, train
    from workbench.methods import build_preset

    run = RunDir(run_dir)
    if run.last_checkpoint.exists():
        cfg = load_run_config(run_dir)
        state = load_checkpoint(run.last_checkpoint)
        if state["epoch"] >= cfg.schedule.epochs:
            log.info("%s: finished run found, reusing it", run_dir)
            return
        log.info("%s: resuming the interrupted run", run_dir)
        train(cfg, run_dir, resume=True, progress=progress)
        return
    cfg = apply_overrides(build_preset(method, preset), data=DEMO_DATA, epochs=epochs)
    train(cfg, run_dir, progress=progress)


def run_demo(out: Path, *, epochs: int | None = None, progress: bool = True) -> DemoResult:
    from workbench.data.check import check_data
    from workbench.engine.predict import evaluate_run, predict_run

    start = time.perf_counter()
    out.mkdir(parents=True, exist_ok=True)
    report = check_data(DEMO_DATA, progress=progress)
    (out / "data_check.txt").write_text(report.format() + "\n")
    print(report.format())

    runs = {"faster_rcnn": out / "runs" / "faster_rcnn_tiny"}
    metrics = {}
    for method, run_dir in runs.items():
        _train_or_reuse(method, "tiny", run_dir, epochs, progress)
        predict_run(run_dir, which="best", progress=progress)
        metrics[method] = evaluate_run(run_dir, which="best", progress=progress)
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    return DemoResult(out, runs, metrics, time.perf_counter() - start)


def format_summary(result: DemoResult) -> str:
    lines = [f"demo finished in {result.seconds / 60:.1f} min; everything is under {result.out}", ""]
    lines.append(f"{'method':<14} {'AP':>7} {'AP50':>7} {'AP75':>7}  run directory")
    for method, m in result.metrics.items():
        lines.append(f"{method:<14} {m['AP']:7.4f} {m['AP50']:7.4f} {m['AP75']:7.4f}  {result.run_dirs[method]}")
    lines += [
        "",
        "next:",
        f"  workbench evaluate --run {next(iter(result.run_dirs.values()))}",
        "  .venv/bin/jupyter lab notebooks/",
    ]
    return "\n".join(lines)
