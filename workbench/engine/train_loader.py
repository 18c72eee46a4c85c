"""The training data loader: one rank's batches of the training subset, epoch by epoch.

Resumable mid-epoch: ``set_epoch(epoch, start_batch)`` skips the batches a resumed run already
trained on, and the order (:class:`~workbench.engine.sampler.TrainSampler`) and the workers'
seeds depend only on the seed, the epoch and the rank, so an interrupted and resumed run sees
the same batches as an uninterrupted one.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import torch
from torch.utils.data import DataLoader, Subset

from workbench.engine.sampler import TrainSampler


class TrainLoader:
    """Batches (``workbench.data.collate.Batch``) of ``dataset[i]`` for ``i`` in ``indices``.

    ``len()`` is the number of batches of a whole epoch on this rank.
    """

    def __init__(self, dataset, indices: Sequence[int], batch_size: int, seed: int, *, num_workers: int = 0,
                 rank: int = 0, world_size: int = 1) -> None:
        self.dataset = dataset
        self.indices = list(indices)
        self.batch_size = batch_size
        self.seed = seed
        self.num_workers = num_workers
        self.rank = rank
        self.sampler = TrainSampler(len(self.indices), batch_size, seed, rank, world_size)
        self.epoch = 0

    def __len__(self) -> int:
        return self.sampler.batches_per_epoch()

    def set_epoch(self, epoch: int, start_batch: int = 0) -> None:
        self.epoch = epoch
        self.sampler.set_epoch(epoch, start_batch)

    def __iter__(self) -> Iterator:
        from workbench.data.collate import collate_samples

        g = torch.Generator().manual_seed(self.seed * 7919 + self.epoch * 104729 + self.rank)
        loader = DataLoader(
            Subset(self.dataset, self.indices),
            batch_size=self.batch_size,
            sampler=self.sampler,
            num_workers=self.num_workers,
            collate_fn=collate_samples,
            generator=g,
            persistent_workers=False,
        )
        return iter(loader)


__all__ = ["TrainLoader"]
