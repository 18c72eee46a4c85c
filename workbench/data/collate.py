"""Batching ``Sample``s, and a seeded DataLoader.

A ``Batch`` keeps images as a list (sizes differ until a model pads or resizes them) and one
target dict per image: ``boxes`` (N_i, 4) float32 ``xyxy``, ``labels`` (N_i,) int64 ``1..C``,
``ignore`` (N_i,) bool.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, Sampler

from workbench.data.sample import Sample


@dataclass
class Batch:
    """Samples of one step. ``images[i]`` is (3, H_i, W_i) uint8; ``orig_sizes[i]`` is the
    ``(height, width)`` of image ``i`` as stored."""

    images: list[Tensor]
    targets: list[dict[str, Tensor]]
    image_ids: list[int]
    orig_sizes: list[tuple[int, int]]
    file_names: list[str]

    def __len__(self) -> int:
        return len(self.images)

    def to(self, device: torch.device | str, non_blocking: bool = False) -> "Batch":
        """The same batch with images and targets on ``device``."""
        return Batch(
            [img.to(device, non_blocking=non_blocking) for img in self.images],
            [{k: v.to(device, non_blocking=non_blocking) for k, v in t.items()} for t in self.targets],
            list(self.image_ids),
            list(self.orig_sizes),
            list(self.file_names),
        )


def collate_samples(samples: list[Sample]) -> Batch:
    """Gather samples into a ``Batch`` (no padding, no stacking)."""
    return Batch(
        images=[s.image for s in samples],
        targets=[{"boxes": s.boxes, "labels": s.labels, "ignore": s.ignore} for s in samples],
        image_ids=[s.image_id for s in samples],
        orig_sizes=[tuple(s.orig_size) for s in samples],
        file_names=[s.file_name for s in samples],
    )


def seed_worker(worker_id: int) -> None:
    """Seed Python's and NumPy's generators in a DataLoader worker from the torch seed that
    PyTorch gave the worker (itself drawn from the loader's generator)."""
    seed = torch.initial_seed() % 2**32
    random.seed(seed)
    np.random.seed(seed)


def make_loader(
    dataset: Dataset,
    batch_size: int,
    shuffle: bool,
    num_workers: int = 0,
    seed: int = 0,
    sampler: Sampler | None = None,
    drop_last: bool = False,
) -> DataLoader:
    """A DataLoader of ``Batch``es whose order and worker seeds follow ``seed``.

    With a ``sampler`` (e.g. a ``DistributedSampler``) ``shuffle`` is left to it. The shuffle
    order comes from a ``torch.Generator`` seeded with ``seed``; each worker's torch seed is
    drawn from the same generator, so augmentations in workers are reproducible too. With
    ``num_workers=0`` augmentations use the main process's global torch generator.
    """
    generator = torch.Generator()
    generator.manual_seed(seed)
    return DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=shuffle if sampler is None else False,
        sampler=sampler,
        num_workers=num_workers,
        collate_fn=collate_samples,
        worker_init_fn=seed_worker,
        generator=generator,
        drop_last=drop_last,
        persistent_workers=False,
    )
