"""Cost of IoU-uniform R-CNN against its baselines: a training step and an inference.

The ``tiny`` presets of ``faster_rcnn``, ``iou_uniform``, ``cascade_rcnn`` and
``cascade_iou_uniform`` (fresh weights without the ImageNet file, or trained runs with
``--run METHOD=RUN_DIR``) are timed alternately on the same batch of built-in validation images:

- inference: ``model(images)`` in evaluation mode under ``torch.no_grad()``;
- training step: forward with targets, backward and an SGD step (a tiny lr, so that repeated
  steps on one batch change the model little);
- the sample generator alone: IoU-uniform's box source on the batch's GT boxes, and its share of
  IoU-uniform's training step.

Prints medians and ratios against the baseline of each pair as markdown (the issue's target:
at most 1.3x for both; the extra pooling passes are the method's price).

    python benchmarks/bench_iou_uniform.py --threads 1 --repeats 5
    python benchmarks/bench_iou_uniform.py --threads 1 --repeats 5 --per-interval 4
"""

from __future__ import annotations

import dataclasses

import torch
from dataset_step import dataset_batch, method_parser, parse_method_args, train_step
from timing import interleaved, median_wall

from workbench.methods import build_preset, get_method

METHODS = ("faster_rcnn", "iou_uniform", "cascade_rcnn", "cascade_iou_uniform")
PAIRS = (("iou_uniform", "faster_rcnn"), ("cascade_iou_uniform", "cascade_rcnn"), ("cascade_rcnn", "faster_rcnn"))


def _without_weights(model_cfg):
    """The config with no backbone weights file (fresh weights cost the same time)."""
    if hasattr(model_cfg, "backbone_weights"):
        return dataclasses.replace(model_cfg, backbone_weights=None)
    if hasattr(model_cfg, "cascade"):
        cascade = dataclasses.replace(model_cfg.cascade, base=_without_weights(model_cfg.cascade.base))
        return dataclasses.replace(model_cfg, cascade=cascade)
    return dataclasses.replace(model_cfg, base=_without_weights(model_cfg.base))


def load_models(args) -> dict[str, torch.nn.Module]:
    runs = dict(item.split("=", 1) for item in args.run)
    models = {}
    for method in METHODS:
        if method in runs:
            from workbench.engine.loading import load_trained_model

            models[method] = load_trained_model(runs[method], "last")[0]
        else:
            torch.manual_seed(0)
            cfg = _without_weights(build_preset(method, "tiny").model)
            if method == "iou_uniform" and args.per_interval is not None:
                cfg = dataclasses.replace(cfg, per_interval=args.per_interval)
            models[method] = get_method(method).build_model(cfg, args.num_classes)
    return models


def main() -> None:
    parser = method_parser(__doc__.splitlines()[0], data="builtin:shapes", repeats=5, warmup=1)
    parser.add_argument("--per-interval", type=int, default=None,
                        help="generated samples per GT and interval of iou_uniform (default the preset's 16)")
    parser.add_argument("--run", action="append", default=[], metavar="METHOD=RUN_DIR",
                        help="a trained run of a method's tiny preset (repeatable)")
    args = parse_method_args(parser)

    models = load_models(args)
    images, targets = dataset_batch(args.data, args.images)
    for model in models.values():
        model.eval()
    with torch.no_grad():
        infer = interleaved({m: (lambda m=m: models[m](images)) for m in METHODS}, args.repeats,
                            warmup=args.warmup, rotate=True)
    optimizers = {}
    for method, model in models.items():
        model.train()
        params = [p for p in model.parameters() if p.requires_grad]
        optimizers[method] = torch.optim.SGD(params, lr=1e-8, momentum=0.9)
    train = interleaved({m: (lambda m=m: train_step(models[m], optimizers[m], images, targets)) for m in METHODS},
                        args.repeats, warmup=args.warmup, rotate=True)

    source = next(s.box_source for s in models["iou_uniform"].roi_heads.stages if s.box_source is not None)
    sizes = [tuple(img.shape[-2:]) for img in images]
    no_proposals = [t["boxes"][:0] for t in targets]
    gen = interleaved({"source": lambda: source(no_proposals, targets, torch.Generator().manual_seed(0), sizes)},
                      args.repeats, warmup=args.warmup)

    per_interval = args.per_interval or build_preset("iou_uniform", "tiny").model.per_interval
    num_gt = sum(int(t["boxes"].shape[0]) for t in targets)
    print(f"\niou_uniform: {per_interval} generated samples per GT and interval; {num_gt} GT boxes in the batch")
    print(f"tiny presets, {args.images} built-in val images, median of {args.repeats}; CPU, "
          f"{torch.get_num_threads()} thread(s); torch {torch.__version__}\n")
    print("| method | inference (s) | training step (s) |")
    print("|---|---:|---:|")
    for m in METHODS:
        print(f"| {m} | {median_wall(infer[m]):.3f} | {median_wall(train[m]):.3f} |")
    print("\n| pair | inference ratio | training step ratio |")
    print("|---|---:|---:|")
    for a, b in PAIRS:
        print(f"| {a} / {b} | {median_wall(infer[a]) / median_wall(infer[b]):.2f} "
              f"| {median_wall(train[a]) / median_wall(train[b]):.2f} |")
    share = median_wall(gen["source"]) / median_wall(train["iou_uniform"])
    print(f"\nsample generator: {median_wall(gen['source']) * 1e3:.1f} ms per batch, "
          f"{share:.1%} of iou_uniform's training step")


if __name__ == "__main__":
    main()
