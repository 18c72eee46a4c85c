import pytest
import torch
from torchvision.models.detection._utils import BalancedPositiveNegativeSampler

from workbench.ops import (
    sample_instance_balanced_positive,
    sample_iou_balanced_negative,
    sample_libra,
    sample_random,
)


def gen(seed):
    return torch.Generator().manual_seed(seed)


def random_labels(n, seed, pos_fraction=0.1, ignore_fraction=0.1):
    u = torch.rand(n, generator=gen(seed))
    labels = torch.zeros(n, dtype=torch.int64)
    labels[u < pos_fraction] = 1
    labels[(u >= pos_fraction) & (u < pos_fraction + ignore_fraction)] = -1
    return labels


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("num,fraction", [(256, 0.5), (512, 0.25), (20, 0.5)])
def test_sample_random_equals_torchvision_with_the_same_generator_state(seed, num, fraction):
    labels = random_labels(3000, seed, pos_fraction=0.02 if seed % 2 else 0.2)
    torch.manual_seed(seed)
    pos_tv, neg_tv = BalancedPositiveNegativeSampler(num, fraction)([labels])
    pos, neg = sample_random(labels, num, fraction, gen(seed))
    assert torch.equal(pos, pos_tv[0].bool()) and torch.equal(neg, neg_tv[0].bool())
    torch.manual_seed(seed)  # None draws from the default generator, as torchvision does
    pos_default, _ = sample_random(labels, num, fraction, None)
    assert torch.equal(pos_default, pos)


def test_sample_random_counts_and_labels():
    labels = random_labels(2000, 1, pos_fraction=0.01)
    num_pos_available = int((labels == 1).sum())
    pos, neg = sample_random(labels, 256, 0.5, gen(0))
    assert int(pos.sum()) == num_pos_available < 128  # too few positives: all taken
    assert int(pos.sum() + neg.sum()) == 256  # negatives fill the rest
    assert bool((labels[pos] == 1).all() and (labels[neg] == 0).all())
    assert not bool((pos & neg).any())
    few = torch.tensor([1, 0, 0, -1, 1])
    pos, neg = sample_random(few, 256, 0.5, gen(0))
    assert pos.tolist() == [True, False, False, False, True]
    assert neg.tolist() == [False, True, True, False, False]


def test_sample_random_does_not_mutate_and_is_reproducible():
    labels = random_labels(1000, 2)
    before = labels.clone()
    first = sample_random(labels, 128, 0.25, gen(5))
    second = sample_random(labels, 128, 0.25, gen(5))
    other = sample_random(labels, 128, 0.25, gen(6))
    assert torch.equal(labels, before)
    assert torch.equal(first[0], second[0]) and torch.equal(first[1], second[1])
    assert not torch.equal(first[1], other[1])


def test_instance_balanced_positive_balances_ground_truths():
    # GT 0 has 300 positives, GT 1 has 40, GT 2 has 5: random sampling would be dominated by GT 0
    pos_gt = torch.cat([torch.zeros(300), torch.ones(40), torch.full((5,), 2.0)]).long()
    pos_gt = pos_gt[torch.randperm(345, generator=gen(0))]
    chosen = sample_instance_balanced_positive(pos_gt, 64, gen(1))
    assert chosen.numel() == 64 and chosen.unique().numel() == 64
    assert torch.equal(chosen, chosen.sort().values)
    counts = torch.bincount(pos_gt[chosen], minlength=3).tolist()
    # GT 2 gives all 5; the other 59 are split 22 / 22 by the quota ceil(64 / 3) = 22 and 15
    # more filled at random from the positives left (GT 0 and GT 1)
    assert counts[2] == 5
    assert counts[1] >= 22 and counts[0] >= 22
    assert sum(counts) == 64


def test_instance_balanced_positive_round_robin_when_all_have_enough():
    pos_gt = torch.arange(5).repeat_interleave(torch.tensor([50, 40, 30, 20, 10]))
    for seed in range(5):
        chosen = sample_instance_balanced_positive(pos_gt, 23, gen(seed))
        counts = torch.bincount(pos_gt[chosen], minlength=5)
        assert int(counts.sum()) == 23
        assert int(counts.max() - counts.min()) <= 1  # 23 = 5 + 5 + 5 + 4 + 4


def test_instance_balanced_positive_edge_cases():
    pos_gt = torch.tensor([0, 0, 1])
    assert sample_instance_balanced_positive(pos_gt, 10, gen(0)).tolist() == [0, 1, 2]
    assert sample_instance_balanced_positive(pos_gt, 0, gen(0)).numel() == 0
    assert sample_instance_balanced_positive(torch.zeros(0, dtype=torch.long), 5, gen(0)).numel() == 0
    a = sample_instance_balanced_positive(torch.arange(40) % 3, 10, gen(3))
    b = sample_instance_balanced_positive(torch.arange(40) % 3, 10, gen(3))
    assert torch.equal(a, b)


def skewed_negative_ious(n=20000, seed=0):
    # like RPN proposals: most negatives overlap nothing, few are hard (IoU close to 0.5)
    g = gen(seed)
    easy = torch.rand(int(n * 0.9), generator=g) * 0.05
    hard = 0.05 + torch.rand(n - easy.numel(), generator=g) * 0.45
    iou = torch.cat([easy, hard])
    return iou[torch.randperm(n, generator=g)]


def test_iou_balanced_negative_favours_hard_negatives():
    iou = skewed_negative_ious()
    chosen = sample_iou_balanced_negative(iou, 384, gen(1))
    assert chosen.numel() == 384 and chosen.unique().numel() == 384
    random_pick = torch.randperm(iou.numel(), generator=gen(1))[:384]
    hard_balanced = float((iou[chosen] > 0.05).float().mean())
    hard_random = float((iou[random_pick] > 0.05).float().mean())
    assert hard_random < 0.2
    assert hard_balanced > 0.6
    # bins over the negatives' own range [min, max]: each of the 3 gets exactly 128 here
    low, high = float(iou.min()), float(iou.max())
    edges = torch.tensor([low + (high - low) / 3, low + 2 * (high - low) / 3])
    bins = torch.bucketize(iou[chosen], edges)
    assert torch.bincount(bins, minlength=3).tolist() == [128, 128, 128]


def test_iou_balanced_negative_fills_short_bins():
    iou = torch.cat([torch.zeros(500), torch.full((10,), 0.2), torch.full((10,), 0.45)])
    chosen = sample_iou_balanced_negative(iou, 90, gen(2))
    assert chosen.numel() == 90 and chosen.unique().numel() == 90
    # the two short upper bins give all they have; the rest comes from the bottom bin
    assert int((iou[chosen] > 0).sum()) == 20


def test_iou_balanced_negative_reproducible_and_pure():
    iou = skewed_negative_ious(5000, 3)
    before = iou.clone()
    a = sample_iou_balanced_negative(iou, 256, gen(7))
    b = sample_iou_balanced_negative(iou, 256, gen(7))
    c = sample_iou_balanced_negative(iou, 256, gen(8))
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert torch.equal(iou, before)


def test_iou_balanced_negative_edge_cases():
    iou = torch.tensor([0.1, 0.0, 0.3])
    assert sample_iou_balanced_negative(iou, 5, gen(0)).tolist() == [0, 1, 2]
    assert sample_iou_balanced_negative(iou, 0, gen(0)).numel() == 0
    same = torch.full((50,), 0.2)  # a zero-width range
    assert sample_iou_balanced_negative(same, 12, gen(0)).unique().numel() == 12
    assert sample_iou_balanced_negative(torch.rand(100), 30, gen(0), num_bins=1).numel() == 30


def test_iou_balanced_negative_floor():
    iou = torch.cat([torch.zeros(1000), torch.rand(1000, generator=gen(4)) * 0.5 + 1e-3])
    chosen = sample_iou_balanced_negative(iou, 200, gen(5), floor_thr=0.0, floor_fraction=0.5)
    assert chosen.numel() == 200 and chosen.unique().numel() == 200
    assert int((iou[chosen] == 0).sum()) == 100  # the floor set gets its fraction
    few_nonzero = torch.cat([torch.zeros(1000), torch.full((20,), 0.3)])
    chosen = sample_iou_balanced_negative(few_nonzero, 200, gen(5), floor_thr=0.0, floor_fraction=0.5)
    assert chosen.numel() == 200 and int((few_nonzero[chosen] > 0).sum()) == 20


def test_sample_libra():
    n = 4000
    labels = random_labels(n, 9, pos_fraction=0.06)
    max_iou = torch.where(labels == 1, 0.5 + 0.5 * torch.rand(n, generator=gen(1)), skewed_negative_ious(n, 2))
    gt_index = torch.randint(0, 4, (n,), generator=gen(3))
    gt_index[(labels == 1) & (torch.arange(n) % 2 == 0)] = 0  # GT 0 dominates the positives
    labels_before = labels.clone()
    pos, neg = sample_libra(labels, max_iou, gt_index, 512, 0.25, gen(4))
    assert torch.equal(labels, labels_before)
    assert int(pos.sum()) == 128 and int(neg.sum()) == 384
    assert bool((labels[pos] == 1).all() and (labels[neg] == 0).all())
    counts = torch.bincount(gt_index[pos], minlength=4)
    available = torch.bincount(gt_index[labels == 1], minlength=4)
    assert int(available[0]) > 100  # random sampling would give GT 0 most of the 128
    assert bool((counts >= torch.clamp(available, max=32)).all())  # quota ceil(128 / 4) each
    again = sample_libra(labels, max_iou, gt_index, 512, 0.25, gen(4))
    assert torch.equal(again[0], pos) and torch.equal(again[1], neg)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")
def test_sampling_stays_on_the_device():
    labels = random_labels(3000, 0).cuda()
    pos, neg = sample_random(labels, 256, 0.5, gen(0))
    assert pos.is_cuda and neg.is_cuda and int(pos.sum() + neg.sum()) == 256
    iou = skewed_negative_ious(3000).cuda()
    chosen = sample_iou_balanced_negative(iou, 100, torch.Generator(device="cuda").manual_seed(0))
    assert chosen.is_cuda and chosen.numel() == 100
    pos, neg = sample_libra(labels, iou, torch.zeros_like(labels), 256, 0.25, gen(0))
    assert pos.is_cuda and int(pos.sum() + neg.sum()) == 256
