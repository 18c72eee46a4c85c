"""The cost of RefineDet against SSD at the paper's input sizes, same batch, alternately.

Pairs (``--pairs``):

- ``320``: RefineDet320 (VGG-16, the VOC preset's model) against SSD300 (VGG-16, the VOC
  preset's model) at their own input sizes: the paper's comparison (40 fps against SSD300's
  46 fps on a Titan X, about 1.15x; the issue's target: at most 1.2x);
- ``320_same_input``: RefineDet320 against SSD300's network fed 320 x 320 images (default
  boxes laid out on its 40 x 40 ... 1 x 1 maps): the same pixels through the same VGG-16, so the
  ratio is the cost of RefineDet's ARM, transfer connections and two heads alone;
- ``512``: RefineDet512 against SSD512;
- ``tiny``: the two ``tiny`` presets (the miniature regime's models: the same MobileNetV2-FPN,
  anchors and post-processing, so the ratio is the cost of RefineDet's ARM, transfer
  connections and filtering alone).

Both models have random weights (the cost does not depend on them) and 20 classes. Measured,
interleaved in one process (``benchmarks/timing.py``), median of ``--repeats``:

- inference: ``model(images)`` in evaluation mode under ``torch.no_grad()`` (post-processing
  included: RefineDet keeps the 400 best candidates, SSD300 / SSD512 400 per class and SSD
  ``tiny`` the 400 best as RefineDet);
- training step: forward with targets, backward of the summed losses, one SGD step.

    python benchmarks/bench_refinedet.py --threads 1 --repeats 5
    python benchmarks/bench_refinedet.py --device cuda --images 8 --repeats 20 --pairs 320 512
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from timing import interleaved, median_cpu, median_wall  # noqa: E402

from workbench.methods import refinedet, ssd  # noqa: E402


def models(pair: str):
    """(name, model config, build) of RefineDet and of SSD for ``pair``."""
    if pair == "320":
        return [("refinedet320", refinedet.vgg16_320_voc().model, refinedet.build_model),
                ("ssd300", ssd.ssd300_voc().model, ssd.build_model)]
    if pair == "320_same_input":
        ssd320 = dataclasses.replace(ssd.ssd300_voc().model, size=320, anchor_steps=None)
        return [("refinedet320", refinedet.vgg16_320_voc().model, refinedet.build_model),
                ("ssd300 at 320", ssd320, ssd.build_model)]
    if pair == "512":
        return [("refinedet512", refinedet.vgg16_512_voc().model, refinedet.build_model),
                ("ssd512", ssd.ssd512_voc().model, ssd.build_model)]
    if pair == "tiny":
        return [("refinedet tiny", refinedet.tiny_model(None), refinedet.build_model),
                ("ssd tiny", ssd.tiny_model(None), ssd.build_model)]
    raise SystemExit(f"unknown pair {pair!r}: 320, 320_same_input, 512 or tiny")


def batch(n: int, device: torch.device):
    g = torch.Generator().manual_seed(0)
    images = [torch.rand(3, 375, 500, generator=g).to(device) for _ in range(n)]
    targets = [{"boxes": torch.tensor([[50.0, 60.0, 200.0, 300.0], [250.0, 40.0, 480.0, 200.0]], device=device),
                "labels": torch.tensor([3, 12], device=device)} for _ in range(n)]
    return images, targets


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", nargs="+", default=["320"])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--images", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    images, targets = batch(args.images, device)
    print("| pair | model | inference s | train step s | inference ratio | train ratio |")
    print("|---|---|---|---|---|---|")
    for pair in args.pairs:
        built = []
        for name, cfg, build in models(pair):
            torch.manual_seed(0)
            cfg = dataclasses.replace(cfg, backbone_weights=None) if hasattr(cfg, "backbone_weights") else cfg
            model = build(cfg, 20).to(device)
            optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=1e-4)
            built.append((name, model, optimizer))

        def infer(model):
            def run():
                model.eval()
                with torch.no_grad():
                    model(images)
            return run

        def step(model, optimizer):
            def run():
                model.train()
                optimizer.zero_grad()
                model(images, targets).total_loss().backward()
                optimizer.step()
            return run

        inference = interleaved({name: infer(m) for name, m, _ in built}, args.repeats, device=device)
        training = interleaved({name: step(m, o) for name, m, o in built}, args.repeats, device=device)
        base = built[1][0]
        for name, _, _ in built:
            wall_i, wall_t = median_wall(inference[name]), median_wall(training[name])
            ratio_i = wall_i / median_wall(inference[base])
            ratio_t = wall_t / median_wall(training[base])
            cpu = ""
            if device.type == "cpu":
                cpu = (f" (CPU time {median_cpu(inference[name]) / median_cpu(inference[base]):.2f}x /"
                       f" {median_cpu(training[name]) / median_cpu(training[base]):.2f}x)")
            print(f"| {pair} | {name} | {wall_i:.3f} | {wall_t:.3f} | {ratio_i:.2f}x | {ratio_t:.2f}x{cpu} |")


if __name__ == "__main__":
    main()
