"""What the benchmarks that time methods on a dataset's images share: the first images of a
split as a batch, and one seeded training step of a workbench detector."""

from __future__ import annotations

import argparse

import torch


def dataset_batch(spec: str, num_images: int, split: str = "val"):
    """The first ``num_images`` images of ``split`` of the dataset ``spec`` (floats in [0, 1])
    and their targets."""
    from workbench.data.sources import open_dataset

    dataset = open_dataset(spec, split)
    samples = [dataset[i] for i in range(num_images)]
    images = [s.image.float() / 255.0 for s in samples]
    targets = [{"boxes": s.boxes, "labels": s.labels} for s in samples]
    return images, targets


def train_step(model, optimizer, images, targets, generator_seed: int = 0) -> None:
    """Forward with targets (the samplers driven by a generator seeded ``generator_seed``),
    backward of the total loss, one optimizer step."""
    optimizer.zero_grad(set_to_none=True)
    model(images, targets, generator=torch.Generator().manual_seed(generator_seed)).total_loss().backward()
    optimizer.step()


def method_parser(description: str, *, data: str, repeats: int, warmup: int) -> argparse.ArgumentParser:
    """The options every method benchmark takes (the dataset, the batch, the classes, the
    repeats and the threads); a script adds its own."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--data", default=data)
    parser.add_argument("--images", type=int, default=4, help="images per batch (the tiny presets' batch)")
    parser.add_argument("--num-classes", type=int, default=6)
    parser.add_argument("--repeats", type=int, default=repeats)
    parser.add_argument("--warmup", type=int, default=warmup)
    parser.add_argument("--threads", type=int, default=None)
    return parser


def parse_method_args(parser: argparse.ArgumentParser) -> argparse.Namespace:
    """The parsed command line, with torch's intra-op threads set from ``--threads``."""
    args = parser.parse_args()
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    return args
