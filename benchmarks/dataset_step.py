"""What the benchmarks that time methods on a dataset's images share: the first images of a
split as a batch, and one seeded training step of a workbench detector."""

from __future__ import annotations

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
