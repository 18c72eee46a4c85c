"""Run-level steps behind the notebooks and the report: each is one call in a notebook cell.

- :func:`train_or_resume`: train a config into a run folder, reusing a finished run and resuming
  an interrupted one (so a re-executed notebook or pipeline continues where it stopped);
- :func:`evaluate_run_detailed`: one prediction pass (with traces) and its COCO evaluation,
  keeping the ``COCOeval`` (for precision-recall curves and AP per IoU);
- :func:`ensure_traces`: the run's saved traces of a split, predicting with traces first when
  there are none;
- :func:`select_traces`, :func:`traced_images`, :func:`run_dataset`, :func:`load_run`: what the
  figures need; :func:`figures_per_traced_image` and :func:`pooled_trace_figure`: the two forms
  of a method's figures of a run drawn from its traces (:class:`workbench.methods.RunFigure`);
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from workbench.config import TrainConfig
from workbench.engine.run_dir import RunDir
from workbench.errors import RunInterrupted, WorkbenchError

log = logging.getLogger(__name__)


def train_or_resume(cfg: TrainConfig, run_dir: Path | str, *, progress: bool = False, hooks: Sequence = ()):
    """Train ``cfg`` into ``run_dir``; a finished run there is kept as it is (its config wins)
    and an interrupted one is resumed. Returns the ``TrainResult`` (``None`` when reused).

    A run stopped by SIGINT / SIGTERM raises :class:`~workbench.errors.RunInterrupted` once its
    checkpoint is saved, so that a notebook, pipeline or comparison script stops there instead
    of evaluating a half-trained run; calling again resumes it. ``hooks`` go to the trainer."""
    from workbench.engine.checkpoint import load_checkpoint
    from workbench.engine.trainer import load_run_config, train

    run = RunDir(Path(run_dir))
    if not run.last_checkpoint.exists():
        return _finished(train(cfg, run.root, progress=progress, hooks=hooks))
    saved = load_run_config(run.root)
    state = load_checkpoint(run.last_checkpoint)
    if state["epoch"] >= saved.schedule.epochs:
        log.info("%s: finished run found, reusing it", run.root)
        return None
    log.info("%s: resuming the interrupted run", run.root)
    return _finished(train(saved, run.root, resume=True, progress=progress, hooks=hooks))


def _finished(result):
    if result.interrupted:
        raise RunInterrupted(
            f"{result.run_dir}: training was stopped at step {result.global_step} "
            f"({result.epochs_completed} epoch(s) complete); its checkpoint is saved and the same "
            "call resumes it"
        )
    return result


def run_dataset(run_dir: Path | str, split: str | None = None, data: str | None = None):
    """The dataset a run was trained on (or ``data``), split ``split`` (default its val split)."""
    from workbench.data.sources import open_dataset
    from workbench.engine.trainer import load_run_config

    cfg = load_run_config(run_dir)
    return open_dataset(data or cfg.data.spec, split or cfg.data.val_split)


def evaluate_run_detailed(
    run_dir: Path | str, *, which: str = "best", split: str | None = None, device: str = "auto",
    trace: bool = True,
):
    """Predict the whole ``split`` (default the run's val split) with the run's checkpoint and
    return its :class:`workbench.evaluation.CocoEvaluation`.

    One prediction pass writes what ``workbench predict --run RUN [--trace]`` writes (COCO
    results in ``RUN/predictions/<split>.json``, with ``trace`` also ``RUN/traces/<split>``;
    tracing does not change the detections), and the metrics go to
    ``RUN/eval/<which>_<split>.json`` as ``workbench evaluate --run`` writes them."""
    from workbench.atomic import write_text_atomic
    from workbench.engine.predict import eval_result_path, predict_run
    from workbench.engine.trainer import load_run_config
    from workbench.evaluation.detection import metrics_of_evaluation

    cfg = load_run_config(run_dir)
    split = split or cfg.data.val_split
    predict_run(Path(run_dir), which=which, split=split, device=device, progress="lines", trace=trace)
    evaluation = evaluation_from_predictions(run_dir, split)
    metrics = metrics_of_evaluation(evaluation, cfg.metric)  # COCO, AP per IoU, VOC for voc07 runs
    write_text_atomic(eval_result_path(run_dir, which, split), json.dumps(metrics, indent=2) + "\n")
    return evaluation


def category_names(dataset) -> dict[int, str]:
    """Category id -> name (for precision-recall legends)."""
    return {int(c["id"]): str(c["name"]) for c in dataset.categories}


def ensure_traces(run_dir: Path | str, split: str | None = None, *, device: str = "auto", which: str = "best"):
    """The run's saved traces of ``split`` (default its val split); when there are none, the
    run predicts with traces first (``workbench predict --run RUN --trace``)."""
    from workbench.engine.predict import predict_run
    from workbench.engine.trainer import load_run_config
    from workbench.inspection import load_traces

    split = split or load_run_config(run_dir).data.val_split
    if not has_traces(run_dir, split):
        log.info("%s: no traces of %s yet, predicting with traces", run_dir, split)
        predict_run(Path(run_dir), which=which, split=split, device=device, progress="lines", trace=True)
    return load_traces(run_dir, split)


def has_traces(run_dir: Path | str, split: str | None = None) -> bool:
    """Whether the run has saved traces of ``split`` (default its val split)."""
    from workbench.engine.trainer import load_run_config
    from workbench.inspection import trace_dir

    split = split or load_run_config(run_dir).data.val_split
    return (trace_dir(run_dir, split) / "manifest.json").is_file()


def traced_images(run_dir: Path | str, num_images: int | None, split: str | None = None):
    """``(dataset, images)``: the run's dataset and its first ``num_images`` saved traces of
    ``split`` (default its val split) paired with their pixels and ground truth
    (:class:`workbench.viz.explorer.ExplorerImage`), for the figures a method declares. The
    traces must exist (:func:`has_traces`; :func:`ensure_traces` writes them)."""
    from workbench.engine.trainer import load_run_config
    from workbench.inspection import load_traces
    from workbench.viz.explorer import explorer_images

    traces = load_traces(run_dir, split or load_run_config(run_dir).data.val_split)
    dataset = run_dataset(run_dir, traces.split)
    return dataset, explorer_images(select_traces(traces, None, num_images), dataset)


def figures_per_traced_image(run_dir: Path | str, max_images: int, record: str, draw: Callable[[Any], Any]) -> list:
    """``draw(image)`` for each of the run's first ``max_images`` traced images
    (:func:`traced_images`) whose trace holds ``record``: the form of a ``per_image``
    :class:`~workbench.methods.RunFigure`. Images without the record give no figure (e.g. traces
    written by another method's detector), so a run lacking it gives none."""
    _, images = traced_images(run_dir, max_images)
    return [draw(item) for item in images if record in item.records]


def pooled_trace_figure(run_dir: Path | str, max_images: int, values: Callable[[Any, list], tuple],
                        draw: Callable[..., Any]) -> list:
    """One figure pooled over the run's first ``max_images`` traced images: ``values(dataset,
    images)`` gives the arrays it shows, ``draw(*arrays, num_images)`` draws them (``num_images``:
    the traced images read, for the title). No figure when the first array is empty (no image
    held what it shows)."""
    dataset, images = traced_images(run_dir, max_images)
    arrays = values(dataset, images)
    if arrays[0].size == 0:
        return []
    return [draw(*arrays, len(images))]


def select_traces(traces, image_ids: Sequence[int] | None = None, num_images: int | None = None) -> list:
    """The traces of ``image_ids`` (in that order), else the first ``num_images`` traces."""
    if image_ids:
        try:
            return [traces.by_image_id(int(i)) for i in image_ids]
        except KeyError as exc:
            raise WorkbenchError(str(exc.args[0])) from None
    count = len(traces) if num_images is None else min(int(num_images), len(traces))
    return [traces[i] for i in range(count)]


@dataclass
class RunSummary:
    """What a comparison needs of a run: its name, folder, method, preset, seed, metrics records,
    the metrics of its last evaluation and its inference speed per image
    (:class:`workbench.engine.timing.InferenceSpeed`; ``None`` for a run written before it was
    recorded)."""

    name: str
    path: Path
    method: str
    preset: str
    records: list[dict[str, Any]] = field(default_factory=list)
    final: dict[str, Any] = field(default_factory=dict)
    seed: int | None = None
    speed: Any = None


def load_run(run_dir: Path | str, name: str | None = None) -> RunSummary:
    """A :class:`RunSummary` from the run folder's ``config.json`` and ``metrics.jsonl``; ``final``
    is its best-checkpoint evaluation when one was written, else its last epoch's; ``speed`` that
    of ``final``, else of the last evaluation that was timed (:func:`~workbench.engine.timing.run_speed`)."""
    from workbench.engine.timing import run_speed
    run = RunDir(Path(run_dir))
    config = run.read_config()
    records = run.read_metrics()
    evals = [r for r in records if r.get("kind") == "eval"]
    best = run.root / "eval" / f"best_{config['data']['val_split']}.json"
    if best.exists():
        final = json.loads(best.read_text())
    else:
        final = {k: v for k, v in evals[-1].items() if k not in ("kind", "step")} if evals else {}
    return RunSummary(
        name=name or run.root.name, path=run.root, method=config["method"], preset=config["preset"],
        records=records, final=final, seed=config.get("seed"), speed=run_speed(final, records),
    )


def evaluation_from_predictions(run_dir: Path | str, split: str | None = None):
    """:class:`workbench.evaluation.CocoEvaluation` of the COCO results that ``workbench
    predict`` wrote to ``RUN/predictions/<split>.json`` (it predicts the whole split) against
    the split's ground truth; no model is run. ``None`` when the file is not there."""
    from workbench.engine.trainer import load_run_config
    from workbench.evaluation import coco_gt_from_dict, evaluate_coco

    split = split or load_run_config(run_dir).data.val_split
    path = RunDir(Path(run_dir)).predictions / f"{split}.json"
    if not path.is_file():
        return None
    results = json.loads(path.read_text())
    coco_gt = coco_gt_from_dict(run_dataset(run_dir, split).to_coco_dict(), source=str(path))
    return evaluate_coco(coco_gt, results, source=str(path))


def objectness_offsets_of_runs(
    runs: Sequence[RunSummary], *, max_images: int | None = 100, device: str = "cpu", which: str = "best"
) -> dict[str, tuple[Any, Any]]:
    """Run name -> ``(high, low)`` offsets of its highest- and lowest-objectness proposals to
    their ground truth (KL-RPN paper Fig. 3; see :mod:`workbench.evaluation.proposals`),
    ready for :func:`workbench.viz.proposals.objectness_offsets_figure`."""
    from workbench.engine.trainer import resolve_device
    from workbench.evaluation.proposals import run_objectness_offsets

    device = str(resolve_device(device))
    out = {}
    for run in runs:
        offsets = run_objectness_offsets(run.path, which=which, max_images=max_images, device=device)
        out[run.name] = (offsets.high, offsets.low)
    return out
