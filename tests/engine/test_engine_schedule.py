import math

import pytest

from workbench.config import ScheduleConfig
from workbench.engine.sampler import TrainSampler, epoch_permutation, shard_indices
from workbench.engine.schedule import lr_factor


def test_warmup_is_linear_from_the_warmup_factor():
    s = ScheduleConfig(epochs=12, warmup_iters=100, warmup_factor=0.001, decay="constant")
    assert lr_factor(0, 50, s) == pytest.approx(0.001)
    assert lr_factor(50, 50, s) == pytest.approx(0.001 * 0.5 + 0.5)
    assert lr_factor(100, 50, s) == 1.0
    assert lr_factor(1000, 50, s) == 1.0


def test_step_decay_multiplies_by_gamma_after_each_milestone_epoch():
    s = ScheduleConfig(epochs=12, warmup_iters=0, decay="step", milestones=(8, 11), gamma=0.1)
    steps = 10
    assert lr_factor(8 * steps - 1, steps, s) == 1.0
    assert lr_factor(8 * steps, steps, s) == pytest.approx(0.1)
    assert lr_factor(11 * steps, steps, s) == pytest.approx(0.01)


def test_cosine_decays_to_the_floor_at_the_end():
    s = ScheduleConfig(epochs=4, warmup_iters=0, decay="cosine", min_lr_factor=0.05)
    assert lr_factor(0, 10, s) == pytest.approx(1.0)
    assert lr_factor(20, 10, s) == pytest.approx(0.05 + 0.95 * 0.5)
    assert lr_factor(40, 10, s) == pytest.approx(0.05)


def test_epoch_permutation_depends_on_seed_and_epoch_only():
    a = epoch_permutation(50, seed=1, epoch=3, shuffle=True)
    assert a == epoch_permutation(50, seed=1, epoch=3, shuffle=True)
    assert a != epoch_permutation(50, seed=1, epoch=4, shuffle=True)
    assert sorted(a) == list(range(50))


@pytest.mark.parametrize("world", [1, 2, 3])
def test_ranks_cover_every_item_of_an_epoch(world):
    n, bs = 23, 2
    samplers = [TrainSampler(n, bs, seed=0, rank=r, world_size=world) for r in range(world)]
    seen = [i for s in samplers for i in s]
    assert set(seen) == set(range(n))
    # every rank runs the same number of steps (padding wraps around)
    assert len({len(list(s)) for s in samplers}) == 1
    assert len(seen) == samplers[0].batches_per_epoch() * bs * world >= n


def test_resumed_sampler_skips_the_batches_already_trained():
    s = TrainSampler(20, 3, seed=5)
    s.set_epoch(2)
    full = list(s)
    s.set_epoch(2, start_batch=4)
    assert list(s) == full[12:]
    assert len(s) == len(full) - 12


def test_shards_split_evaluation_without_duplicates():
    parts = [shard_indices(11, r, 3) for r in range(3)]
    assert sorted(i for p in parts for i in p) == list(range(11))
    assert math.isclose(sum(map(len, parts)), 11)
