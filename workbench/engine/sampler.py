"""Index samplers that resume mid-epoch and split work across ranks deterministically."""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch.utils.data import Sampler


def epoch_permutation(num_items: int, seed: int, epoch: int, shuffle: bool) -> list[int]:
    """The order of one epoch: a permutation drawn from (seed, epoch), the same on every rank."""
    if not shuffle:
        return list(range(num_items))
    g = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    return torch.randperm(num_items, generator=g).tolist()


class TrainSampler(Sampler[int]):
    """Training order for one rank: the epoch permutation, padded to a multiple of
    ``world_size * batch_size`` by wrapping, every ``world_size``-th batch for this rank.

    ``start_batch`` skips the batches a resumed run already trained on.
    """

    def __init__(self, num_items: int, batch_size: int, seed: int, rank: int = 0, world_size: int = 1):
        if num_items == 0:
            raise ValueError("cannot train on an empty dataset")
        self.num_items = num_items
        self.batch_size = batch_size
        self.seed = seed
        self.rank = rank
        self.world_size = world_size
        self.epoch = 0
        self.start_batch = 0

    def batches_per_epoch(self) -> int:
        per_step = self.batch_size * self.world_size
        return -(-self.num_items // per_step)

    def set_epoch(self, epoch: int, start_batch: int = 0) -> None:
        self.epoch = epoch
        self.start_batch = start_batch

    def _indices(self) -> list[int]:
        order = epoch_permutation(self.num_items, self.seed, self.epoch, shuffle=True)
        total = self.batches_per_epoch() * self.batch_size * self.world_size
        order = (order * (-(-total // len(order))))[:total]
        mine = []
        for b in range(self.batches_per_epoch()):
            start = (b * self.world_size + self.rank) * self.batch_size
            mine.extend(order[start : start + self.batch_size])
        return mine[self.start_batch * self.batch_size :]

    def __iter__(self) -> Iterator[int]:
        return iter(self._indices())

    def __len__(self) -> int:
        return (self.batches_per_epoch() - self.start_batch) * self.batch_size


def shard_indices(num_items: int, rank: int, world_size: int) -> list[int]:
    """Evaluation split across ranks: every item exactly once, no padding."""
    return list(range(rank, num_items, world_size))
