"""Libra R-CNN and Libra RetinaNet against their baselines: same data, budget and seeds; final
COCO AP, the component ablation, the hard negatives each sampler picks, and the cost.

Rows (``--rows``; each the ``tiny`` preset of its method with the data, epochs and seed of the
comparison, plus the switches of :data:`ROWS`):

- ``faster_rcnn`` / ``libra_rcnn`` and ``retinanet`` / ``libra_retinanet``: the paper's claims
  (+2.5 AP and +2.0 AP on COCO, Table 1);
- ``libra_rcnn_sampling`` / ``_pyramid`` / ``_loss``: one component alone (the paper's
  component ablation: each adds on its own); ``libra_rcnn_pos_balance`` (instance-balanced
  positives, random negatives: K = 1) and ``libra_rcnn_k2`` / ``_k5`` (its sampling ablation);
  ``libra_rcnn_loss_a<alpha>_g<gamma>`` (balanced L1 alone at the alpha / gamma grid of its
  loss ablation); ``libra_retinanet_pyramid`` / ``_loss``.

Measured with the weights after the last epoch:

- AP, AP50, AP75, APs, APm, APl (the trainer's COCO evaluation on the validation split after
  the last epoch);
- two-stage rows: the hard-negative statistic of the paper (section 3.1), the share of the box
  stage's negatives with IoU above 0.05, for all of them, for a random sampler and for the
  IoU-balanced sampler. With ``--trace-sampling-every N`` the runs record their sampling while
  they train (``workbench.engine.sampling_trace``) and the shares come from the records of the
  second half of the recorded steps: the candidates the box stage was given and what its own
  sampler picked (a random-sampling row has no IoU-balanced column). Runs without records: on
  the RPN proposals the trained model makes on the first ``--negatives-images`` training images
  (its training proposal settings, no augmentation), both samplers drawn from the same
  candidates. ``hard_negatives_source`` in ``compare.json`` says which;
- ``--cost``: a training step (forward + backward) and inference of each Libra row against its
  baseline on one validation batch, the rows taking turns in every repeat, median of
  ``--repeats``, with the time spent in the balanced pyramid (forward hooks around it).

Finished runs are reused and interrupted ones resumed. Results go to
``OUT/<row>/seed_<s>/compare.json``; tables are printed as markdown.

    python benchmarks/compare_libra.py --seeds 0 1 2 --rows faster_rcnn libra_rcnn --threads 1
    python benchmarks/compare_libra.py --seeds 0 --rows faster_rcnn libra_rcnn --trace-sampling-every 50
    python benchmarks/compare_libra.py --seeds 0 --rows libra_rcnn_sampling libra_rcnn_pyramid libra_rcnn_loss
    python benchmarks/compare_libra.py --seeds 0 --rows faster_rcnn libra_rcnn --cost
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from seed_table import ap_table_lines, comparison_parser, final_eval, over_seeds  # noqa: E402

AP_KEYS = ("AP", "AP50", "AP75", "APs", "APm", "APl")
OFF_RCNN = {"iou_balanced_sampling": False, "balanced_pyramid": False, "balanced_l1": False}
OFF_RETINA = {"balanced_pyramid": False, "balanced_l1": False}
#: Balanced L1's (alpha, gamma) grid of the paper's loss ablation.
LOSS_GRID = ((0.2, 1.0), (0.3, 1.0), (0.5, 1.0), (0.5, 1.5), (0.5, 2.0))
#: row -> (method, model config fields changed from the method's tiny preset)
ROWS: dict[str, tuple[str, dict]] = {
    "faster_rcnn": ("faster_rcnn", {}),
    "libra_rcnn": ("libra_rcnn", {}),
    "libra_rcnn_sampling": ("libra_rcnn", {**OFF_RCNN, "iou_balanced_sampling": True}),
    "libra_rcnn_pyramid": ("libra_rcnn", {**OFF_RCNN, "balanced_pyramid": True}),
    "libra_rcnn_loss": ("libra_rcnn", {**OFF_RCNN, "balanced_l1": True}),
    "libra_rcnn_pos_balance": ("libra_rcnn", {**OFF_RCNN, "iou_balanced_sampling": True, "num_bins": 1}),
    "libra_rcnn_k2": ("libra_rcnn", {**OFF_RCNN, "iou_balanced_sampling": True, "num_bins": 2}),
    "libra_rcnn_k5": ("libra_rcnn", {**OFF_RCNN, "iou_balanced_sampling": True, "num_bins": 5}),
    **{f"libra_rcnn_loss_a{a:g}_g{g:g}": ("libra_rcnn", {**OFF_RCNN, "balanced_l1": True, "alpha": a, "gamma": g})
       for a, g in LOSS_GRID},
    "retinanet": ("retinanet", {}),
    "libra_retinanet": ("libra_retinanet", {}),
    "libra_retinanet_pyramid": ("libra_retinanet", {**OFF_RETINA, "balanced_pyramid": True}),
    "libra_retinanet_loss": ("libra_retinanet", {**OFF_RETINA, "balanced_l1": True}),
}
#: The baseline each Libra row's cost is compared with.
BASELINE = {"libra_rcnn": "faster_rcnn", "libra_retinanet": "retinanet"}


def row_config(row: str, seed: int, args: argparse.Namespace):
    """The ``tiny`` preset of ``row``'s method with the row's switches, this comparison's data,
    epochs and seed, and ``--model-overrides`` (fields of the model config or of its base)."""
    from workbench.config import apply_overrides
    from workbench.methods import build_preset
    from workbench.pipelines.params import override_model

    method, changes = ROWS[row]
    cfg = build_preset(method, "tiny")
    model = override_model(cfg.model, {**changes, **json.loads(args.model_overrides or "{}")})
    cfg = dataclasses.replace(cfg, model=model)
    return apply_overrides(cfg, data=args.data, epochs=args.epochs, seed=seed, device="cpu",
                           trace_sampling_every=getattr(args, "trace_sampling_every", None))


def train_or_reuse(row: str, seed: int, args: argparse.Namespace) -> Path:
    """``OUT/<row>/seed_<seed>``, trained there unless a finished run is there (an interrupted
    one is resumed)."""
    from workbench.pipelines.runs import train_or_resume

    run_dir = Path(args.out) / row / f"seed_{seed}"
    train_or_resume(row_config(row, seed, args), run_dir)
    return run_dir


def hard_negative_shares(run_dir: Path, num_images: int, seed: int, split: str) -> dict[str, float]:
    """Share of negatives above IoU 0.05 (all, random-sampled, IoU-balanced-sampled) among the
    candidates the box stage samples from: the RPN's proposals with its training settings on the
    first ``num_images`` images of ``split``, plus the GT boxes."""
    from workbench.methods.libra.analysis import box_stage_sampling, figure_inputs, model_proposals, negative_ious
    from workbench.viz.sampling import share_above

    inputs = figure_inputs(str(run_dir), split=split, num_images=num_images, device="cpu", which="last")
    proposals, targets = model_proposals(inputs.model, inputs.images, inputs.targets, training_settings=True)
    ious = negative_ious(proposals, targets, generator=torch.Generator().manual_seed(seed),
                         **box_stage_sampling(inputs.model))
    return {name: share_above(values, 0.05) for name, values in ious.items()}


def recorded_hard_negative_shares(run_dir: Path) -> dict[str, float] | None:
    """Share of negatives above IoU 0.05 in the run's training-time sampling records of the
    second half of its recorded steps (``None``: the run recorded none)."""
    from workbench.inspection.sampling import load_sampling_traces, recorded_steps
    from workbench.methods.libra.analysis import recorded_negative_ious
    from workbench.viz.sampling import share_above

    traces = load_sampling_traces(run_dir)
    if traces is None:
        return None
    steps = recorded_steps(traces)
    ious = recorded_negative_ious(run_dir, min_step=steps[len(steps) // 2])
    return {name: share_above(values, 0.05) for name, values in ious.items()}


def measure(row: str, run_dir: Path, args: argparse.Namespace) -> dict:
    path = run_dir / "compare.json"
    if path.exists():
        return json.loads(path.read_text())
    from workbench.engine.trainer import load_run_config

    cfg = load_run_config(run_dir)
    result = {"row": row, "seed": cfg.seed, **final_eval(run_dir, AP_KEYS)}
    if ROWS[row][0] in ("faster_rcnn", "libra_rcnn"):
        recorded = recorded_hard_negative_shares(run_dir)
        if recorded is not None:
            result["hard_negatives"], result["hard_negatives_source"] = recorded, "training records"
        else:
            result["hard_negatives"] = hard_negative_shares(run_dir, args.negatives_images, cfg.seed,
                                                            cfg.data.train_split)
            result["hard_negatives_source"] = "proposals of the trained model"
    path.write_text(json.dumps(result) + "\n")
    return result


class _PyramidClock:
    """Wall time spent inside a module, from forward pre- and post-hooks."""

    def __init__(self, module: torch.nn.Module | None) -> None:
        self.total = 0.0
        self._start = 0.0
        self.handles = [] if module is None else [
            module.register_forward_pre_hook(lambda *_: self._begin()),
            module.register_forward_hook(lambda *_: self._end()),
        ]

    def _begin(self) -> None:
        self._start = time.perf_counter()

    def _end(self) -> None:
        self.total += time.perf_counter() - self._start


class _Timed:
    """One row's model and validation batch for the cost timing, with its measured seconds."""

    def __init__(self, run_dir: Path, batch_size: int) -> None:
        from workbench.methods.libra.analysis import figure_inputs
        from workbench.modeling.balanced_pyramid import find_balanced_pyramid

        self.inputs = figure_inputs(str(run_dir), num_images=batch_size, device="cpu", which="last")
        self.model = self.inputs.model
        self.clock = _PyramidClock(find_balanced_pyramid(self.model))
        self.seconds: dict[str, list[float]] = {"train_step": [], "inference": [], "pyramid_in_inference": []}

    def once(self, k: int) -> None:
        model, inputs = self.model, self.inputs
        model.train()
        start = time.perf_counter()
        out = model(inputs.images, inputs.targets, generator=torch.Generator().manual_seed(k))
        sum(out.losses.values()).backward()
        model.zero_grad(set_to_none=True)
        self.seconds["train_step"].append(time.perf_counter() - start)
        model.eval()
        self.clock.total = 0.0
        start = time.perf_counter()
        with torch.no_grad():
            model(inputs.images)
        self.seconds["inference"].append(time.perf_counter() - start)
        self.seconds["pyramid_in_inference"].append(self.clock.total)


def time_models(runs: dict[str, tuple[Path, int]], repeats: int) -> dict[str, dict[str, float]]:
    """Row -> median seconds of a training step and of inference on its first validation batch,
    and of the balanced pyramid inside inference (0 without one). ``runs``: row -> (run, batch
    size). The rows take turns within every repeat, so that a change of the machine's load
    falls on every row alike and the ratios stay fair; the first round warms up allocators and
    caches and is left out."""
    timed = {row: _Timed(run_dir, batch) for row, (run_dir, batch) in runs.items()}
    for k in range(repeats + 1):
        for t in timed.values():
            t.once(k)
    return {row: {key: statistics.median(values[1:]) for key, values in t.seconds.items()} for row, t in timed.items()}


def ap_table(results: dict[str, list[dict]]) -> str:
    lines = ap_table_lines(results, AP_KEYS)
    shares = {row: rows for row, rows in results.items() if all("hard_negatives" in r for r in rows) and rows}
    if shares:
        names = list(dict.fromkeys(n for rows in shares.values() for r in rows for n in r["hard_negatives"]))
        lines += ["", "Share of the box stage's negatives above IoU 0.05 (paper: about 60% of hard negatives, "
                      "about 30% under random sampling):", "",
                  "| row | " + " | ".join(names) + " |", "|---|" + "---:|" * len(names)]
        for row, rows in shares.items():
            cells = [f"{np.mean([r['hard_negatives'][n] for r in rows]):.1%}"
                     if all(n in r["hard_negatives"] for r in rows) else "-" for n in names]
            lines.append(f"| {row} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = comparison_parser(
        __doc__.splitlines()[0], rows=list(ROWS), default_rows=["faster_rcnn", "libra_rcnn", "retinanet", "libra_retinanet"],
        out="runs/compare_libra",
    )
    parser.add_argument("--model-overrides", help="JSON object of model config fields for every row")
    parser.add_argument("--negatives-images", type=int, default=50,
                        help="training images for the hard negatives of runs without sampling records")
    parser.add_argument("--trace-sampling-every", type=int, default=None,
                        help="new runs record their box stage's sampling every N steps (the hard negatives come "
                             "from those records)")
    parser.add_argument("--cost", action="store_true", help="time each Libra row against its baseline (first seed)")
    parser.add_argument("--repeats", type=int, default=11)
    args = parser.parse_args()
    results = over_seeds(args, lambda row, seed: measure(row, train_or_reuse(row, seed, args), args))
    print(ap_table(results))
    if args.cost:
        seed = args.seeds[0]
        lines = ["", "| row | train step (s) | x baseline | inference (s) | x baseline | pyramid in inference (s) |",
                 "|---|---:|---:|---:|---:|---:|"]
        times = time_models({row: (Path(args.out) / row / f"seed_{seed}", row_config(row, seed, args).batch_size)
                             for row in args.rows}, args.repeats)
        for row, t in times.items():
            base = BASELINE.get(ROWS[row][0])
            ref = times.get(base) if base else None
            ratio = (lambda key: f"{t[key] / ref[key]:.2f}") if ref else (lambda key: "-")
            lines.append(f"| {row} | {t['train_step']:.3f} | {ratio('train_step')} | {t['inference']:.3f} | "
                         f"{ratio('inference')} | {t['pyramid_in_inference']:.3f} |")
        print("\n".join(lines))


if __name__ == "__main__":
    main()
