"""KL-RPN against the baseline RPN: same data, budget and seeds; proposal recall and final AP.

For every seed, trains the ``tiny`` preset of ``faster_rcnn`` and of ``kl_rpn`` (each with its
own optimiser, everything else equal) with the given data and epochs -- optionally also
``faster_rcnn_adam``, the baseline with KL-RPN's optimiser, since the paper changes the
optimiser together with the RPN -- and ``kl_rpn_lambda1``, KL-RPN with the second-stage loss
weight lambda = 1 instead of the paper's 10 -- then measures on the validation split, with the weights
after the last epoch:

- AP, AP50, AP75 (COCO, from the trainer's evaluation after the last epoch);
- class-agnostic proposal recall AR@100/300/1000 (``workbench.evaluation.recall``), with the
  RPN set to keep 1000 boxes per level before NMS and 1000 per image after at test time (the
  presets keep 500 / 300, which would cap AR@1000 at AR@300);
- the paper's Fig. 3 statistic: mean L1 offsets (box-coder delta space) to the matched GT of
  the 5 x #GT highest- and lowest-scored proposals with IoU > 0 (after the presets' own
  test-time selection).

Finished runs are reused and interrupted ones resumed, so the script can be re-run (or run
once per method in two processes, then once more to print the table). Results go to
``OUT/<method>/seed_<s>/compare.json``; the table is printed as markdown; ``--figure`` writes
the offset histograms of the first seed as a self-contained HTML file, or a PNG.

    python benchmarks/compare_kl_rpn.py --data 'builtin:shapes?train=300&val=100' \\
        --epochs 6 --seeds 0 1 2 --out runs/compare_kl_rpn
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from seed_table import comparison_parser, final_eval, mean_spread, over_seeds  # noqa: E402

METHODS = ("faster_rcnn", "kl_rpn")
#: Optional row: the baseline trained with KL-RPN's optimiser (Adam), to separate the effect of
#: the optimiser from that of the RPN (the paper changes both).
BASELINE_WITH_KL_OPTIMIZER = "faster_rcnn_adam"
#: Optional row: KL-RPN with lambda = 1 instead of the paper's 10 on the second-stage losses.
KL_RPN_LAMBDA_1 = "kl_rpn_lambda1"
OPTIONAL_ROWS = (BASELINE_WITH_KL_OPTIMIZER, KL_RPN_LAMBDA_1)
LABELS = {"faster_rcnn": "RPN (baseline)", "kl_rpn": "KL-RPN", BASELINE_WITH_KL_OPTIMIZER: "RPN, KL-RPN's Adam",
          KL_RPN_LAMBDA_1: "KL-RPN, lambda = 1"}
RECALL_TOP_N = 1000
AP_KEYS = ("AP", "AP50", "AP75")
AR_KEYS = ("AR@100", "AR@300", "AR@1000")


def previous_tiny(name: str):
    """A compared row's ``tiny`` preset as it was before the miniature regime (ResNet-18-FPN
    from scratch; the baseline with SGD lr 0.02, KL-RPN with Adam lr 3e-4), to rerun the first
    comparison recorded in docs/benchmarks.md."""
    from workbench.config import OptimizerConfig
    from workbench.methods.kl_rpn import ADAM_BETAS, kl_model

    from learning_curve import old_tiny

    base = old_tiny()
    kl = dataclasses.replace(
        base, method="kl_rpn", model=kl_model(base.model),
        optimizer=OptimizerConfig(name="adam", lr=3e-4, reference_batch_size=4, betas=ADAM_BETAS,
                                  weight_decay=1e-4, grad_clip_norm=10.0),
    )
    if name == BASELINE_WITH_KL_OPTIMIZER:
        return dataclasses.replace(base, optimizer=kl.optimizer)
    if name == KL_RPN_LAMBDA_1:
        return dataclasses.replace(kl, model=dataclasses.replace(kl.model, rcnn_loss_weight=1.0))
    return kl if name == "kl_rpn" else base


def preset_config(name: str, seed: int, args: argparse.Namespace):
    """The ``tiny`` preset of a compared row with the data, epochs and seed of this comparison
    (with ``--previous-presets``, the presets before the miniature regime)."""
    from workbench.config import apply_overrides
    from workbench.methods import build_preset

    if args.previous_presets:
        cfg = previous_tiny(name)
    elif name == BASELINE_WITH_KL_OPTIMIZER:
        cfg = dataclasses.replace(build_preset("faster_rcnn", "tiny"), optimizer=build_preset("kl_rpn", "tiny").optimizer)
    elif name == KL_RPN_LAMBDA_1:
        cfg = build_preset("kl_rpn", "tiny")
        cfg = dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, rcnn_loss_weight=1.0))
    else:
        cfg = build_preset(name, "tiny")
    return apply_overrides(cfg, data=args.data, epochs=args.epochs, seed=seed, device="cpu")


def train_or_reuse(method: str, seed: int, args: argparse.Namespace) -> Path:
    from workbench.engine.checkpoint import load_checkpoint
    from workbench.engine.run_dir import RunDir
    from workbench.engine.trainer import load_run_config, train

    run_dir = Path(args.out) / method / f"seed_{seed}"
    run = RunDir(run_dir)
    if run.last_checkpoint.exists():
        cfg = load_run_config(run_dir)
        if load_checkpoint(run.last_checkpoint)["epoch"] >= cfg.schedule.epochs:
            return run_dir
        train(cfg, run_dir, resume=True, progress=False)
        return run_dir
    train(preset_config(method, seed, args), run_dir, progress=False)
    return run_dir


def measure(run_dir: Path) -> dict:
    from workbench.data.sources import open_dataset
    from workbench.engine.trainer import load_trained_model
    from workbench.evaluation.coco_files import coco_gt_from_dict
    from workbench.evaluation.recall import proposal_recall
    from workbench.methods.kl_rpn.analysis import (
        dataset_gt_boxes,
        objectness_offsets,
        rpn_proposals,
        settings_with_top_n,
    )

    path = run_dir / "compare.json"
    if path.exists():
        return json.loads(path.read_text())
    model, cfg, _ = load_trained_model(run_dir, "last", "cpu")
    dataset = open_dataset(cfg.data.spec, cfg.data.val_split)
    gt = coco_gt_from_dict(dataset.to_coco_dict(), source=str(dataset.source))
    many = rpn_proposals(model, dataset, batch_size=cfg.batch_size, settings=settings_with_top_n(model, RECALL_TOP_N))
    recall = proposal_recall(gt, many)
    preset = rpn_proposals(model, dataset, batch_size=cfg.batch_size)
    offsets = objectness_offsets(preset, dataset_gt_boxes(dataset))
    result = {
        "method": run_dir.parent.name,
        "seed": cfg.seed,
        **final_eval(run_dir, AP_KEYS),
        **{k: recall[k] for k in AR_KEYS},
        "offsets": offsets.summary(),
        "offset_arrays": {"high": offsets.high.tolist(), "low": offsets.low.tolist()},
    }
    path.write_text(json.dumps(result) + "\n")
    return result


def table(results: dict[str, list[dict]]) -> str:
    keys = AR_KEYS + AP_KEYS
    lines = ["| method | seeds | " + " | ".join(keys) + " |", "|---|---:|" + "---:|" * len(keys)]
    for method, rows in results.items():
        cells = [mean_spread([r[k] for r in rows]) for k in keys]
        lines.append(f"| {LABELS[method]} | {len(rows)} | " + " | ".join(cells) + " |")
    lines += ["", "Per seed:", "", "| method | seed | " + " | ".join(keys) + " |", "|---|---:|" + "---:|" * len(keys)]
    for method, rows in results.items():
        for r in rows:
            lines.append(f"| {LABELS[method]} | {r['seed']} | " + " | ".join(f"{r[k]:.4f}" for k in keys) + " |")
    coords = ("x", "y", "w", "h")
    lines += ["", "Mean L1 offset to the matched GT (delta space), highest / lowest objectness proposals:", "",
              "| method | " + " | ".join(f"{c} high / low" for c in coords) + " |", "|---|" + "---:|" * 4]
    for method, rows in results.items():
        cells = []
        for c in coords:
            high = statistics.mean(r["offsets"][f"high_{c}"] for r in rows)
            low = statistics.mean(r["offsets"][f"low_{c}"] for r in rows)
            cells.append(f"{high:.3f} / {low:.3f}")
        lines.append(f"| {LABELS[method]} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = comparison_parser(
        __doc__.splitlines()[0], rows=[*METHODS, *OPTIONAL_ROWS], default_rows=list(METHODS), out="runs/compare_kl_rpn",
        rows_flag="--methods", epochs_help="override the presets' 6 epochs",
        rows_help=f"rows to compare; {BASELINE_WITH_KL_OPTIMIZER}: the baseline with KL-RPN's Adam; "
                  f"{KL_RPN_LAMBDA_1}: KL-RPN with lambda = 1 on the second-stage losses",
    )
    parser.add_argument("--previous-presets", action="store_true",
                        help="the tiny presets before the miniature regime (ResNet-18-FPN from scratch), "
                             "to rerun the first recorded comparison")
    parser.add_argument("--figure", help="write the offset histograms (first seed) to this file (.html, or .png)")
    args = parser.parse_args()
    results = over_seeds(args, lambda method, seed: measure(train_or_reuse(method, seed, args)))
    print(table(results))
    if args.figure:
        from workbench.viz.export import save_html, save_png
        from workbench.viz.proposals import objectness_offsets_figure

        first = {LABELS[m]: (rows[0]["offset_arrays"]["high"], rows[0]["offset_arrays"]["low"]) for m, rows in results.items()}
        fig = objectness_offsets_figure(first)
        if args.figure.endswith(".png"):
            save_png(fig, args.figure, width=1200, height=fig.layout.height)
        else:
            save_html(fig, args.figure)
        print(f"\nwrote {args.figure}")


if __name__ == "__main__":
    main()
