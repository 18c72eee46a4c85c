"""Validation AP against training time for the ``tiny`` recipes and the variants they came from.

Each recipe is trained on the same data with the given seeds; after every epoch the trainer
evaluates on the validation split. Training time is measured by a step hook, in wall seconds
and in CPU seconds of the process (all threads), and excludes evaluation and checkpointing: the
first step of each epoch (whose interval holds the previous epoch's evaluation) counts as the
median step of its epoch. Finished runs are reused (``OUT/<recipe>/seed_<s>/curve.json``); an
unfinished one is trained again from scratch.

    python benchmarks/learning_curve.py --recipes old new --epochs 4 --threads 2 \\
        --out runs/learning_curve --figure docs/learning_curve.png

Prints a markdown table (one row per recipe and epoch: time, CPU time, AP, AP50) for
docs/benchmarks.md. Recipes (``--list`` prints them):
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import shutil
import statistics
import time
from pathlib import Path
from typing import Callable

import torch

from workbench.config import OptimizerConfig, ScheduleConfig, TrainConfig, apply_overrides
from workbench.methods import faster_rcnn as baseline
from workbench.modeling import FasterRCNNConfig


def old_tiny() -> TrainConfig:
    """The ``tiny`` preset before the miniature regime, exactly: ResNet-18-FPN from scratch
    (trainable batch norm), strides 8-64 at 128 channels, 512-d box head on 128 RoIs, SGD lr 0.02
    for batch 4, 6 epochs with 100 warm-up steps from 1e-3 and a cosine decay."""
    cfg = baseline.tiny()
    model = FasterRCNNConfig(
        backbone="resnet18_fpn", trainable_backbone_layers=5, backbone_norm="bn",
        backbone_returned_layers=(2, 3, 4), fpn_channels=128, min_size=256, max_size=256,
        anchor_sizes=((16.0,), (32.0,), (64.0,), (128.0,)),
        rpn_pre_nms_top_n_train=1000, rpn_post_nms_top_n_train=500,
        rpn_pre_nms_top_n_test=500, rpn_post_nms_top_n_test=300,
        box_batch_size_per_image=128, box_representation_size=512,
        num_classes=cfg.model.num_classes,
    )
    return dataclasses.replace(
        cfg, model=model,
        optimizer=OptimizerConfig(name="sgd", lr=0.02, reference_batch_size=4, momentum=0.9, weight_decay=1e-4,
                                  grad_clip_norm=10.0),
        schedule=ScheduleConfig(epochs=6, warmup_iters=100, warmup_factor=1e-3, decay="cosine"),
    )


def _model(cfg: TrainConfig, **changes) -> TrainConfig:
    return dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, **changes))


def _optimizer(cfg: TrainConfig, **changes) -> TrainConfig:
    return dataclasses.replace(cfg, optimizer=dataclasses.replace(cfg.optimizer, **changes))


#: name -> (description, config builder). ``new`` is the ``tiny`` preset as shipped.
RECIPES: dict[str, tuple[str, Callable[[], TrainConfig]]] = {
    "old": ("ResNet-18-FPN from scratch, SGD (the previous tiny)", old_tiny),
    "old_mobilenet": ("previous tiny with MobileNetV2-FPN ImageNet (frozen BN, 5 levels) only swapped in",
                      lambda: _model(old_tiny(), backbone="mobilenet_v2_fpn", backbone_weights="IMAGENET1K_V1",
                                     backbone_norm="frozen_bn", trainable_backbone_layers=6,
                                     backbone_returned_layers=(1, 2, 3, 4),
                                     anchor_sizes=((16.0,), (32.0,), (64.0,), (128.0,), (256.0,)))),
    "new": ("the tiny preset (ImageNet MobileNetV2-FPN)", baseline.tiny),
    "new_scratch": ("the tiny preset from scratch (trainable BN, no ImageNet weights)", baseline.tiny_scratch),
    "new_sgd": ("tiny preset with SGD (lr 0.02, momentum 0.9) instead of AdamW",
                lambda: _optimizer(baseline.tiny(), name="sgd", lr=0.02, momentum=0.9, weight_decay=1e-4)),
    "new_all_trainable": ("tiny preset with every MobileNetV2 stage trainable",
                          lambda: _model(baseline.tiny(), trainable_backbone_layers=6)),
    "new_bottleneck": ("tiny preset with MobileNetV2 block 17 (320-channel bottleneck) at stride 32, not block 18",
                       lambda: _model(baseline.tiny(), backbone_mobilenet_top="bottleneck")),
    "new_wide_head": ("tiny preset with a 512-d box head on 128 RoIs per image",
                      lambda: _model(baseline.tiny(), box_representation_size=512, box_batch_size_per_image=128)),
}


class StepClock:
    """A trainer step hook: wall and CPU time of each step interval, by epoch."""

    def __init__(self) -> None:
        self.last: tuple[float, float] | None = None
        self.steps: dict[int, list[tuple[float, float]]] = {}

    def start(self) -> None:
        self.last = (time.perf_counter(), time.process_time())

    def __call__(self, record) -> None:
        now = (time.perf_counter(), time.process_time())
        if self.last is not None:
            self.steps.setdefault(record.epoch, []).append((now[0] - self.last[0], now[1] - self.last[1]))
        self.last = now

    def per_epoch(self) -> list[tuple[float, float]]:
        """(wall, cpu) seconds of training per epoch; the first interval of each epoch (model
        set-up, or the previous evaluation) is replaced by the epoch's median."""
        out = []
        for epoch in sorted(self.steps):
            steps = self.steps[epoch]
            wall = statistics.median(s[0] for s in steps[1:] or steps)
            cpu = statistics.median(s[1] for s in steps[1:] or steps)
            out.append((wall + sum(s[0] for s in steps[1:]), cpu + sum(s[1] for s in steps[1:])))
        return out


def run_recipe(name: str, seed: int, args: argparse.Namespace) -> dict:
    from workbench.engine.trainer import train

    run_dir = Path(args.out) / name / f"seed_{seed}"
    result_path = run_dir / "curve.json"
    if result_path.exists():
        return json.loads(result_path.read_text())
    if run_dir.exists():
        shutil.rmtree(run_dir)
    cfg = apply_overrides(RECIPES[name][1](), data=args.data, epochs=args.epochs, seed=seed, device="cpu")
    clock = StepClock()
    clock.start()
    train(cfg, run_dir, progress=False, hooks=[clock])
    evals = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    evals = [r for r in evals if r["kind"] == "eval"]
    wall = cpu = 0.0
    points = []
    for (w, c), ev in zip(clock.per_epoch(), evals):
        wall, cpu = wall + w, cpu + c
        points.append({"epoch": ev["epoch"], "train_wall_s": wall, "train_cpu_s": cpu,
                       **{k: ev[k] for k in ("AP", "AP50", "AP75")}})
    result = {"recipe": name, "seed": seed, "threads": torch.get_num_threads(), "data": args.data,
              "steps_per_epoch": len(clock.steps.get(0, [])), "points": points}
    result_path.write_text(json.dumps(result, indent=1) + "\n")
    return result


def table(results: list[dict]) -> str:
    lines = ["| recipe | seed | epoch | train wall (min) | train CPU (min) | AP | AP50 | AP75 |",
             "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for r in results:
        for p in r["points"]:
            lines.append(f"| {r['recipe']} | {r['seed']} | {p['epoch']} | {p['train_wall_s'] / 60:.1f} | "
                         f"{p['train_cpu_s'] / 60:.1f} | {p['AP']:.3f} | {p['AP50']:.3f} | {p['AP75']:.3f} |")
    return "\n".join(lines)


def figure(results: list[dict]):
    """AP50 and AP against training CPU time (the steadier clock on a shared machine), one
    colour per recipe and seed in both panels."""
    import plotly.graph_objects as go
    from plotly.colors import qualitative
    from plotly.subplots import make_subplots

    fig = make_subplots(rows=1, cols=2, subplot_titles=("AP50 (val)", "AP (val)"))
    for i, r in enumerate(results):
        colour = qualitative.Plotly[i % len(qualitative.Plotly)]
        x = [p["train_cpu_s"] / 60 for p in r["points"]]
        for col, key in ((1, "AP50"), (2, "AP")):
            fig.add_trace(go.Scatter(x=x, y=[p[key] for p in r["points"]], mode="lines+markers",
                                     name=f"{r['recipe']} (seed {r['seed']})", line_color=colour,
                                     legendgroup=f"{r['recipe']}{r['seed']}", showlegend=col == 1), row=1, col=col)
    threads = results[0]["threads"]
    for col in (1, 2):
        fig.update_xaxes(title_text=f"training CPU time (min, {threads} thread{'s' if threads > 1 else ''})",
                         rangemode="tozero", row=1, col=col)
        fig.update_yaxes(range=[0, 1], row=1, col=col)
    fig.update_layout(title="tiny recipes on builtin:shapes: validation AP against training CPU time",
                      height=450, width=1100)
    return fig


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--recipes", nargs="+", default=["old", "new"], choices=list(RECIPES))
    parser.add_argument("--list", action="store_true", help="print the recipes and exit")
    parser.add_argument("--data", default="builtin:shapes")
    parser.add_argument("--epochs", type=int, default=None, help="override the recipes' epochs")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads")
    parser.add_argument("--out", default="runs/learning_curve")
    parser.add_argument("--figure", help="write the curves to this file (.html, or .png)")
    args = parser.parse_args()
    if args.list:
        for name, (text, _) in RECIPES.items():
            print(f"{name}: {text}")
        return
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    results = [run_recipe(name, seed, args) for name in args.recipes for seed in args.seeds]
    print(f"\ndata {args.data}; training time excludes evaluation\n")
    print(table(results))
    if args.figure:
        from workbench.viz.export import save_html, save_png

        fig = figure(results)
        if args.figure.endswith(".png"):
            save_png(fig, args.figure, width=1100, height=450)
        else:
            save_html(fig, args.figure)
        print(f"\nwrote {args.figure}")


if __name__ == "__main__":
    main()
