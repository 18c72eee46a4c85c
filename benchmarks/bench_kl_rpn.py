"""Cost of KL-RPN against the baseline RPN with the same backbone: time and parameters.

Both detectors come from their ``tiny`` presets (ResNet-18-FPN, 256 px) -- trained weights
from two run directories when given (realistic proposal and detection counts), fresh ones
otherwise -- and are timed alternately (the order flips every repeat) on the same batch of
built-in validation images:

- inference: ``model(images)`` in evaluation mode under ``torch.no_grad()``; KL-RPN with its
  uncertainty maps (the default) and without;
- training step with the same optimiser for both (SGD): forward with targets, backward, step;
- training step with each preset's own optimiser (KL-RPN: Adam; baseline: SGD).

Medians and their ratio (KL-RPN / baseline) are printed as markdown, then the parameter counts
of both detectors for the ``tiny``, ``r50_fpn_1x`` and ``vgg16_coco`` presets (backbone weights
not loaded; the counts do not depend on them).

    python benchmarks/bench_kl_rpn.py --threads 1
    python benchmarks/bench_kl_rpn.py --threads 1 --baseline-run RUN_A --kl-run RUN_B
"""

from __future__ import annotations

import dataclasses
import gc

import torch
from dataset_step import dataset_batch, method_parser, parse_method_args, train_step
from timing import interleaved, median_wall

from workbench.methods import build_preset, get_method

PARAM_PRESETS = ("tiny", "r50_fpn_1x", "vgg16_coco")


def load_models(args) -> tuple[torch.nn.Module, torch.nn.Module]:
    if args.baseline_run and args.kl_run:
        from workbench.engine.trainer import load_trained_model

        return load_trained_model(args.baseline_run, "last")[0], load_trained_model(args.kl_run, "last")[0]
    torch.manual_seed(0)
    base = get_method("faster_rcnn").build_model(build_preset("faster_rcnn", "tiny").model, args.num_classes)
    torch.manual_seed(0)
    kl = get_method("kl_rpn").build_model(build_preset("kl_rpn", "tiny").model, args.num_classes)
    return base, kl


def optimizer_of(model: torch.nn.Module, method: str, own: bool, lr_scale: float) -> torch.optim.Optimizer:
    params = [p for p in model.parameters() if p.requires_grad]
    cfg = build_preset(method, "tiny").optimizer
    if own and cfg.name == "adam":
        return torch.optim.Adam(params, lr=cfg.lr * lr_scale, betas=cfg.betas, weight_decay=cfg.weight_decay)
    # a tiny lr keeps repeated steps on one batch from changing the model much
    return torch.optim.SGD(params, lr=1e-5 * lr_scale, momentum=0.9, weight_decay=1e-4)


def count(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def parameter_rows(num_classes: int) -> list[tuple[str, int, int]]:
    """(preset, baseline count, KL-RPN count): the baseline is the KL-RPN preset's ``base``
    config (for ``tiny`` and ``r50_fpn_1x`` the baseline presets' models; the proposal score
    threshold, the only other change, has no parameters)."""
    rows = []
    for preset in PARAM_PRESETS:
        kl_cfg = build_preset("kl_rpn", preset).model
        kl_cfg = dataclasses.replace(kl_cfg, base=dataclasses.replace(kl_cfg.base, backbone_weights=None))
        counts = []
        for method, cfg in (("faster_rcnn", kl_cfg.base), ("kl_rpn", kl_cfg)):
            model = get_method(method).build_model(cfg, num_classes)
            counts.append(count(model))
            del model
            gc.collect()
        rows.append((preset, counts[0], counts[1]))
    return rows


def main() -> None:
    parser = method_parser(__doc__.splitlines()[0], data="builtin:shapes?train=300&val=100", repeats=11, warmup=2)
    parser.add_argument("--baseline-run", help="run directory of a trained faster_rcnn tiny")
    parser.add_argument("--kl-run", help="run directory of a trained kl_rpn tiny")
    parser.add_argument("--param-classes", type=int, default=80, help="classes for the parameter counts (COCO)")
    args = parse_method_args(parser)

    base, kl = load_models(args)
    images, targets = dataset_batch(args.data, args.images)
    rows = []

    base.eval()
    kl.eval()
    with torch.no_grad():
        t = interleaved(
            {
                "base": lambda: base(images),
                "kl": lambda: kl(images),
                "kl_nomaps": lambda: _without_maps(kl, images),
            },
            args.repeats, warmup=args.warmup,
        )
    rows.append(("inference", median_wall(t["base"]), median_wall(t["kl"])))
    rows.append(("inference, no uncertainty maps", median_wall(t["base"]), median_wall(t["kl_nomaps"])))

    for own, label in ((False, "train step, same optimiser (SGD)"), (True, "train step, preset optimisers")):
        base.train()
        kl.train()
        base_opt = optimizer_of(base, "faster_rcnn", own, 1e-3)
        kl_opt = optimizer_of(kl, "kl_rpn", own, 1e-3)
        t = interleaved(
            {
                "base": lambda: train_step(base, base_opt, images, targets, 0),
                "kl": lambda: train_step(kl, kl_opt, images, targets, 0),
            },
            args.repeats, warmup=args.warmup,
        )
        rows.append((label, median_wall(t["base"]), median_wall(t["kl"])))

    source = "trained runs" if args.baseline_run and args.kl_run else "fresh weights"
    print(f"\ntiny presets ({source}), {args.images} built-in val images, median of {args.repeats}; "
          f"CPU, {torch.get_num_threads()} thread(s); torch {torch.__version__}\n")
    print("| measure | baseline RPN (s) | KL-RPN (s) | KL-RPN / baseline |")
    print("|---|---:|---:|---:|")
    for label, b, k in rows:
        print(f"| {label} | {b:.3f} | {k:.3f} | {k / b:.3f} |")

    print(f"\nparameters ({args.param_classes} classes)\n")
    print("| preset | baseline RPN | KL-RPN | difference |")
    print("|---|---:|---:|---:|")
    for preset, b, k in parameter_rows(args.param_classes):
        print(f"| {preset} | {b:,} | {k:,} | {k - b:+,} ({(k - b) / 1e6:+.3f} M) |")


def _without_maps(model, images):
    model.uncertainty_maps = False
    try:
        return model(images)
    finally:
        model.uncertainty_maps = True


if __name__ == "__main__":
    main()
