"""IoU-uniform R-CNN against Faster R-CNN, and on Cascade R-CNN against Cascade R-CNN, in the
miniature regime: same data, budget and seeds; AP at IoU 0.5 to 0.9; and the paper's ablations.

For every seed, trains the ``tiny`` preset of each row with the given data and epochs and reads
the evaluation after the last epoch: AP (0.5:0.95) and AP50, AP60, AP70, AP80, AP90 (the paper's
claim to check: the gain comes from the high IoUs, AP80 and AP90). Rows:

- ``faster_rcnn``, ``iou_uniform``, ``cascade_rcnn``, ``cascade_iou_uniform``: the comparisons;
- Table 4 (components added one by one): ``t4_uniform`` (the box head trained on generated
  samples, no IoU loss, detections scored by class alone, no interval weights), ``t4_efo``
  (+ the IoU predictor with re-pooling, scores class x IoU), then ``iou_uniform`` (+ interval
  weights);
- Table 5 (sample count): ``t5_equal``, ``t5_double`` (as many / twice as many generated samples
  as the RPN's positives);
- Table 6 (IoU head's training samples x re-pooling): ``t6_rpn_norepool``, ``t6_rpn``,
  ``t6_generated_norepool``, and ``iou_uniform``; re-pooling acts at inference only, so the
  ``norepool`` rows evaluate the trained ``t6_rpn`` and ``iou_uniform`` runs again without it
  (:data:`INFERENCE_ROWS`);
- ``iou_uniform_scaled``: the ``tiny_scaled`` preset (2 generated samples per GT and interval).

Finished runs are reused and interrupted ones resumed, so the script can be re-run (or run once
per row in several processes, then once more to print the table). Runs go to
``OUT/<row>/seed_<s>``; the table is printed as markdown (mean ± sample std over the seeds).

    python benchmarks/compare_iou_uniform.py --seeds 0 1 2 --out runs/compare_iou_uniform
    python benchmarks/compare_iou_uniform.py --rows faster_rcnn iou_uniform t4_uniform t4_efo --seeds 0
"""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

from seed_table import ap_table_lines, comparison_parser, final_eval, over_seeds

#: Row name -> (method, preset, overrides of the IoU-uniform model config).
ROWS: dict[str, tuple[str, str, dict]] = {
    "faster_rcnn": ("faster_rcnn", "tiny", {}),
    "iou_uniform": ("iou_uniform", "tiny", {}),
    "cascade_rcnn": ("cascade_rcnn", "tiny", {}),
    "cascade_iou_uniform": ("cascade_iou_uniform", "tiny", {}),
    "t4_uniform": ("iou_uniform", "tiny",
                   {"nms_score": "class", "use_interval_weights": False, "iou_loss_weight": 0.0}),
    "t4_efo": ("iou_uniform", "tiny", {"use_interval_weights": False}),
    "t5_equal": ("iou_uniform", "tiny", {"sample_count": "equal"}),
    "t5_double": ("iou_uniform", "tiny", {"sample_count": "double"}),
    "t6_rpn_norepool": ("iou_uniform", "tiny", {"generated_samples": False, "repool": False}),
    "t6_rpn": ("iou_uniform", "tiny", {"generated_samples": False}),
    "t6_generated_norepool": ("iou_uniform", "tiny", {"repool": False}),
    "iou_uniform_scaled": ("iou_uniform", "tiny_scaled", {}),
}
#: Rows that differ from another row only at inference: row -> (the trained row, the model
#: overrides). They evaluate that row's trained run again rather than train the same model twice.
INFERENCE_ROWS: dict[str, tuple[str, dict]] = {
    "t6_rpn_norepool": ("t6_rpn", {"repool": False}),
    "t6_generated_norepool": ("iou_uniform", {"repool": False}),
}
DEFAULT_ROWS = ("faster_rcnn", "iou_uniform", "cascade_rcnn", "cascade_iou_uniform")
AP_KEYS = ("AP", "AP50", "AP60", "AP70", "AP80", "AP90")


def row_config(row: str, seed: int, args: argparse.Namespace):
    """The row's preset with its overrides and the data, epochs and seed of this comparison."""
    from workbench.config import apply_overrides
    from workbench.methods import build_preset

    method, preset, overrides = ROWS[row]
    cfg = build_preset(method, preset)
    if overrides:
        cfg = dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, **overrides))
    return apply_overrides(cfg, data=args.data, epochs=args.epochs, seed=seed, device=args.device)


def train_or_reuse(row: str, seed: int, args: argparse.Namespace) -> Path:
    """``OUT/<row>/seed_<seed>``, trained there unless a finished run is there (an interrupted
    one is resumed)."""
    from workbench.pipelines.runs import train_or_resume

    run_dir = Path(args.out) / row / f"seed_{seed}"
    train_or_resume(row_config(row, seed, args), run_dir)
    return run_dir


def reevaluate(row: str, seed: int, args: argparse.Namespace) -> dict[str, float]:
    """The AP keys of an inference row: its trained row's last checkpoint evaluated on the
    validation split with the row's overrides, as the trainer evaluates after the last epoch.
    Kept in ``OUT/<row>/seed_<seed>/eval.json`` and reused."""
    import json

    from workbench.atomic import write_text_atomic
    from workbench.engine.inference import evaluate_predictions, predict_dataset
    from workbench.engine.loading import open_trained_run

    path = Path(args.out) / row / f"seed_{seed}" / "eval.json"
    if not path.exists():
        source, overrides = INFERENCE_ROWS[row]
        run = open_trained_run(train_or_reuse(source, seed, args), "last", device=args.device,
                               model_overrides=overrides)
        preds = predict_dataset(run.model, run.dataset, run.device, batch_size=run.cfg.batch_size)
        metrics = {"source": str(run.run_dir), "overrides": overrides,
                   **evaluate_predictions(run.dataset, preds, metric=run.cfg.metric)}
        path.parent.mkdir(parents=True, exist_ok=True)
        write_text_atomic(path, json.dumps(metrics, indent=2) + "\n")
    metrics = json.loads(path.read_text())
    return {k: metrics[k] for k in AP_KEYS if metrics.get(k) is not None}


def measure(row: str, seed: int, args: argparse.Namespace) -> dict[str, float]:
    if row in INFERENCE_ROWS:
        return reevaluate(row, seed, args)
    return final_eval(train_or_reuse(row, seed, args), AP_KEYS)


def main() -> None:
    parser = comparison_parser(
        __doc__.splitlines()[0], rows=list(ROWS), default_rows=list(DEFAULT_ROWS), out="runs/compare_iou_uniform"
    )
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    results = over_seeds(args, lambda row, seed: measure(row, seed, args))
    print("\n".join(ap_table_lines(results, AP_KEYS)))


if __name__ == "__main__":
    main()
