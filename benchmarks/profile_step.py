"""Where the time of one CPU training step goes: data, each part's forward, backward, optimiser.

Forward times come from forward pre/post hooks on the named parts (inclusive of their children);
backward and the optimiser step are timed as a whole (autograd does not attribute them to
modules). Data time is the loader's time to produce a batch with the preset's transforms.
``--clock cpu`` (the default) measures the process's CPU time, which a busy machine disturbs
far less than wall time; with one thread it is the step's own compute.

    .venv/bin/python benchmarks/profile_step.py --method faster_rcnn --preset tiny --threads 1
    .venv/bin/python benchmarks/profile_step.py --recipe old --threads 1   # a learning_curve.py recipe

Prints a markdown table (median ms per step, share of the step) for docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections import defaultdict

import torch

from workbench.config import apply_overrides
from workbench.data.collate import collate_samples
from workbench.engine.inference import images_to_model_input, targets_to_device
from workbench.engine.trainer import build_optimizer, seed_everything
from workbench.engine.trainer import _load_data as load_data
from workbench.methods import build_preset, get_method

# Parts timed when the model has them (a missing name is skipped).
PARTS = (
    "transform",
    "backbone.body",
    "backbone.neck",
    "rpn.head",
    "rpn",
    "roi_heads.box_pooler",
    "roi_heads.box_head",
    "roi_heads.box_predictor",
    "roi_heads",
    "head",
)


def attach_timers(model: torch.nn.Module, totals: dict[str, float], clock=time.process_time) -> list:
    modules = dict(model.named_modules())
    handles = []
    for name in PARTS:
        module = modules.get(name)
        if module is None:
            continue
        starts: list[float] = []

        def pre(_m, _i, starts=starts):
            starts.append(clock())

        def post(_m, _i, _o, name=name, starts=starts):
            totals[name] += clock() - starts.pop()

        handles.append(module.register_forward_pre_hook(pre))
        handles.append(module.register_forward_hook(post))
    return handles


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--method", default="faster_rcnn")
    parser.add_argument("--preset", default="tiny")
    parser.add_argument("--steps", type=int, default=12)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--recipe", help="a recipe of benchmarks/learning_curve.py instead of --method/--preset")
    parser.add_argument("--clock", choices=["cpu", "wall"], default="cpu")
    parser.add_argument("--data", default=None)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    clock = time.process_time if args.clock == "cpu" else time.perf_counter

    if args.recipe:
        from learning_curve import RECIPES

        cfg = apply_overrides(RECIPES[args.recipe][1](), data=args.data)
        args.method, args.preset = cfg.method, f"recipe {args.recipe}"
    else:
        cfg = apply_overrides(build_preset(args.method, args.preset), data=args.data)
    seed_everything(cfg.seed)
    train_set, _ = load_data(cfg)
    model = get_method(cfg.method).build_model(cfg.model, len(train_set.categories))
    model.train()
    optimizer = build_optimizer(model, cfg, cfg.effective_lr())
    loader = torch.utils.data.DataLoader(
        train_set, batch_size=cfg.batch_size, shuffle=True, collate_fn=collate_samples,
        generator=torch.Generator().manual_seed(0),
    )
    rows: dict[str, list[float]] = defaultdict(list)
    iterator = iter(loader)
    for step in range(args.warmup + args.steps):
        totals: dict[str, float] = defaultdict(float)
        handles = attach_timers(model, totals, clock)
        t0 = clock()
        batch = next(iterator)
        t1 = clock()
        out = model(images_to_model_input(batch.images, torch.device("cpu")),
                    targets_to_device(batch.targets, torch.device("cpu")))
        t2 = clock()
        optimizer.zero_grad(set_to_none=True)
        sum(out.losses.values()).backward()
        t3 = clock()
        optimizer.step()
        t4 = clock()
        for h in handles:
            h.remove()
        if step < args.warmup:
            continue
        rows["data"].append(t1 - t0)
        rows["forward (all)"].append(t2 - t1)
        for name, value in totals.items():
            rows[f"  forward: {name}"].append(value)
        rows["backward"].append(t3 - t2)
        rows["optimizer step"].append(t4 - t3)
        rows["step (forward + backward + optimizer)"].append(t4 - t1)
    step = statistics.median(rows["step (forward + backward + optimizer)"])
    print(f"{args.method} / {args.preset}: batch {cfg.batch_size}, {args.threads} thread(s), "
          f"{args.clock} time, median of {args.steps} steps\n")
    print(f"| part | {args.clock} ms | share of step |")
    print("| --- | ---: | ---: |")
    order = ["data", "forward (all)"] + sorted(k for k in rows if k.startswith("  forward")) + [
        "backward", "optimizer step", "step (forward + backward + optimizer)"]
    for name in order:
        value = statistics.median(rows[name])
        print(f"| {name.strip()} | {1000 * value:.0f} | {value / step:.0%} |")


if __name__ == "__main__":
    main()
