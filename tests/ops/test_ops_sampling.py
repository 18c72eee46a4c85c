from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F
from torchvision.models.detection import _utils as det_utils
from torchvision.models.detection._utils import BalancedPositiveNegativeSampler
from torchvision.models.detection.ssd import SSD
from torchvision.ops import box_iou

from workbench import ops


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
    pos, neg = ops.sample_random(labels, num, fraction, gen(seed))
    assert torch.equal(pos, pos_tv[0].bool()) and torch.equal(neg, neg_tv[0].bool())
    torch.manual_seed(seed)  # None draws from the default generator, as torchvision does
    pos_default, _ = ops.sample_random(labels, num, fraction, None)
    assert torch.equal(pos_default, pos)


def test_sample_random_counts_and_labels():
    labels = random_labels(2000, 1, pos_fraction=0.01)
    num_pos_available = int((labels == 1).sum())
    pos, neg = ops.sample_random(labels, 256, 0.5, gen(0))
    assert int(pos.sum()) == num_pos_available < 128  # too few positives: all taken
    assert int(pos.sum() + neg.sum()) == 256  # negatives fill the rest
    assert bool((labels[pos] == 1).all() and (labels[neg] == 0).all())
    assert not bool((pos & neg).any())
    few = torch.tensor([1, 0, 0, -1, 1])
    pos, neg = ops.sample_random(few, 256, 0.5, gen(0))
    assert pos.tolist() == [True, False, False, False, True]
    assert neg.tolist() == [False, True, True, False, False]


def test_sample_random_does_not_mutate_and_is_reproducible():
    labels = random_labels(1000, 2)
    before = labels.clone()
    first = ops.sample_random(labels, 128, 0.25, gen(5))
    second = ops.sample_random(labels, 128, 0.25, gen(5))
    other = ops.sample_random(labels, 128, 0.25, gen(6))
    assert torch.equal(labels, before)
    assert torch.equal(first[0], second[0]) and torch.equal(first[1], second[1])
    assert not torch.equal(first[1], other[1])


def test_instance_balanced_positive_balances_ground_truths():
    # GT 0 has 300 positives, GT 1 has 40, GT 2 has 5: random sampling would be dominated by GT 0
    pos_gt = torch.cat([torch.zeros(300), torch.ones(40), torch.full((5,), 2.0)]).long()
    pos_gt = pos_gt[torch.randperm(345, generator=gen(0))]
    chosen = ops.sample_instance_balanced_positive(pos_gt, 64, gen(1))
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
        chosen = ops.sample_instance_balanced_positive(pos_gt, 23, gen(seed))
        counts = torch.bincount(pos_gt[chosen], minlength=5)
        assert int(counts.sum()) == 23
        assert int(counts.max() - counts.min()) <= 1  # 23 = 5 + 5 + 5 + 4 + 4


def test_instance_balanced_positive_edge_cases():
    pos_gt = torch.tensor([0, 0, 1])
    assert ops.sample_instance_balanced_positive(pos_gt, 10, gen(0)).tolist() == [0, 1, 2]
    assert ops.sample_instance_balanced_positive(pos_gt, 0, gen(0)).numel() == 0
    assert ops.sample_instance_balanced_positive(torch.zeros(0, dtype=torch.long), 5, gen(0)).numel() == 0
    a = ops.sample_instance_balanced_positive(torch.arange(40) % 3, 10, gen(3))
    b = ops.sample_instance_balanced_positive(torch.arange(40) % 3, 10, gen(3))
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
    chosen = ops.sample_iou_balanced_negative(iou, 384, gen(1))
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
    chosen = ops.sample_iou_balanced_negative(iou, 90, gen(2))
    assert chosen.numel() == 90 and chosen.unique().numel() == 90
    # the two short upper bins give all they have; the rest comes from the bottom bin
    assert int((iou[chosen] > 0).sum()) == 20


def test_iou_balanced_negative_reproducible_and_pure():
    iou = skewed_negative_ious(5000, 3)
    before = iou.clone()
    a = ops.sample_iou_balanced_negative(iou, 256, gen(7))
    b = ops.sample_iou_balanced_negative(iou, 256, gen(7))
    c = ops.sample_iou_balanced_negative(iou, 256, gen(8))
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert torch.equal(iou, before)


def test_iou_balanced_negative_edge_cases():
    iou = torch.tensor([0.1, 0.0, 0.3])
    assert ops.sample_iou_balanced_negative(iou, 5, gen(0)).tolist() == [0, 1, 2]
    assert ops.sample_iou_balanced_negative(iou, 0, gen(0)).numel() == 0
    same = torch.full((50,), 0.2)  # a zero-width range
    assert ops.sample_iou_balanced_negative(same, 12, gen(0)).unique().numel() == 12
    assert ops.sample_iou_balanced_negative(torch.rand(100), 30, gen(0), num_bins=1).numel() == 30


def test_iou_balanced_negative_floor():
    iou = torch.cat([torch.zeros(1000), torch.rand(1000, generator=gen(4)) * 0.5 + 1e-3])
    chosen = ops.sample_iou_balanced_negative(iou, 200, gen(5), floor_thr=0.0, floor_fraction=0.5)
    assert chosen.numel() == 200 and chosen.unique().numel() == 200
    assert int((iou[chosen] == 0).sum()) == 100  # the floor set gets its fraction
    few_nonzero = torch.cat([torch.zeros(1000), torch.full((20,), 0.3)])
    chosen = ops.sample_iou_balanced_negative(few_nonzero, 200, gen(5), floor_thr=0.0, floor_fraction=0.5)
    assert chosen.numel() == 200 and int((few_nonzero[chosen] > 0).sum()) == 20


def test_sample_libra():
    n = 4000
    labels = random_labels(n, 9, pos_fraction=0.06)
    max_iou = torch.where(labels == 1, 0.5 + 0.5 * torch.rand(n, generator=gen(1)), skewed_negative_ious(n, 2))
    gt_index = torch.randint(0, 4, (n,), generator=gen(3))
    gt_index[(labels == 1) & (torch.arange(n) % 2 == 0)] = 0  # GT 0 dominates the positives
    labels_before = labels.clone()
    pos, neg = ops.sample_libra(labels, max_iou, gt_index, 512, 0.25, gen(4))
    assert torch.equal(labels, labels_before)
    assert int(pos.sum()) == 128 and int(neg.sum()) == 384
    assert bool((labels[pos] == 1).all() and (labels[neg] == 0).all())
    counts = torch.bincount(gt_index[pos], minlength=4)
    available = torch.bincount(gt_index[labels == 1], minlength=4)
    assert int(available[0]) > 100  # random sampling would give GT 0 most of the 128
    assert bool((counts >= torch.clamp(available, max=32)).all())  # quota ceil(128 / 4) each
    again = ops.sample_libra(labels, max_iou, gt_index, 512, 0.25, gen(4))
    assert torch.equal(again[0], pos) and torch.equal(again[1], neg)


def test_hard_negatives_hand_worked():
    # 1 positive (index 1), 1 ignored (index 4), negatives 0, 2, 3, 5, 6 with losses
    # 0.5, 2.0, 0.5, 1.0, 0.1; 3 per positive: 2 (2.0), 5 (1.0), then the tie at 0.5 between
    # 0 and 3 goes to the lower index, 0. The ignored and the positive, though their losses are
    # the highest, are never negatives.
    labels = torch.tensor([0, 1, 0, 0, -1, 0, 0])
    loss = torch.tensor([0.5, 9.0, 2.0, 0.5, 7.0, 1.0, 0.1])
    pos, neg = ops.sample_hard_negatives(labels, loss)
    assert pos.tolist() == [False, True, False, False, False, False, False]
    assert neg.tolist() == [True, False, True, False, False, True, False]
    _, neg_one = ops.sample_hard_negatives(labels, loss, neg_pos_ratio=1)
    assert torch.where(neg_one)[0].tolist() == [2]
    _, neg_all = ops.sample_hard_negatives(labels, loss, neg_pos_ratio=10)  # capped at the 5 negatives
    assert torch.where(neg_all)[0].tolist() == [0, 2, 3, 5, 6]
    _, neg_half = ops.sample_hard_negatives(labels, loss, neg_pos_ratio=2.5)  # int(2.5 * 1) = 2
    assert torch.where(neg_half)[0].tolist() == [2, 5]


def test_hard_negatives_without_positives_and_min_negatives():
    labels = torch.tensor([0, 0, -1, 0, 0])
    loss = torch.tensor([0.3, 0.9, 5.0, 0.1, 0.9])
    pos, neg = ops.sample_hard_negatives(labels, loss)
    assert not bool(pos.any()) and not bool(neg.any())  # as torchvision: no positive, no negative
    _, neg_min = ops.sample_hard_negatives(labels, loss, min_negatives=3)
    assert torch.where(neg_min)[0].tolist() == [0, 1, 4]  # 0.9, 0.9 (by index), then 0.3
    two_pos = torch.tensor([1, 0, 0, 0, 2])
    _, neg = ops.sample_hard_negatives(two_pos, torch.tensor([0.0, 0.1, 0.3, 0.2, 0.0]), 1, min_negatives=3)
    assert torch.where(neg)[0].tolist() == [1, 2, 3]  # max(1 * 2, 3) = 3


def test_hard_negatives_infinite_and_equal_losses():
    labels = torch.tensor([1, 0, 0, 0, 0, 0, 0, 0])
    loss = torch.tensor([1.0, -float("inf"), 0.2, 0.2, float("inf"), 0.2, 0.2, -float("inf")])
    _, neg = ops.sample_hard_negatives(labels, loss)
    assert torch.where(neg)[0].tolist() == [2, 3, 4]
    _, neg = ops.sample_hard_negatives(labels, loss, neg_pos_ratio=7)  # all 7 negatives, -inf included
    assert int(neg.sum()) == 7
    flat = torch.zeros(8)
    _, neg = ops.sample_hard_negatives(labels, flat, neg_pos_ratio=2)
    assert torch.where(neg)[0].tolist() == [1, 2]  # all equal: lowest indices


def test_hard_negatives_batched_equals_per_image_and_is_pure():
    g = gen(11)
    labels = torch.stack([random_labels(500, seed, pos_fraction=0.02 * seed) for seed in range(4)])
    loss = torch.rand(4, 500, generator=g).round(decimals=2)  # ties
    before = (labels.clone(), loss.clone())
    pos, neg = ops.sample_hard_negatives_batched(labels, loss, 3, min_negatives=5)
    assert torch.equal(labels, before[0]) and torch.equal(loss, before[1])
    for i in range(4):
        pos_i, neg_i = ops.sample_hard_negatives(labels[i], loss[i], 3, min_negatives=5)
        assert torch.equal(pos[i], pos_i) and torch.equal(neg[i], neg_i)
        num_pos = int((labels[i] >= 1).sum())
        assert int(neg_i.sum()) == min(max(3 * num_pos, 5), int((labels[i] == 0).sum()))
        # every chosen negative is at least as hard as every negative left out
        left_out = (labels[i] == 0) & ~neg_i
        if bool(left_out.any()):
            assert float(loss[i][neg_i].min()) >= float(loss[i][left_out].max())
    assert int(pos[0].sum()) == 0 and int(neg[0].sum()) == 5  # image 0 has no positive


def test_hard_negatives_rejects_bad_shapes():
    with pytest.raises(ValueError):
        ops.sample_hard_negatives_batched(torch.zeros(2, 5, dtype=torch.long), torch.zeros(2, 4))
    with pytest.raises(ValueError):
        ops.sample_hard_negatives(torch.zeros(2, 5, dtype=torch.long), torch.zeros(2, 5))


@pytest.mark.parametrize("seed", range(3))
def test_hard_negatives_reproduce_torchvision_ssd_loss(seed):
    # torchvision's SSD.compute_loss ranks negatives by their cross-entropy and keeps 3 per
    # positive; its classification loss is (sum over positives + sum over chosen negatives) / #pos.
    # Run it on random outputs and compare with the same sum over our selection.
    g = gen(seed)
    num_images, num_anchors, num_classes = 3, 400, 5
    xy = torch.rand(num_anchors, 2, generator=g) * 200
    anchors = torch.cat([xy, xy + 10 + torch.rand(num_anchors, 2, generator=g) * 50], dim=1)
    logits = torch.randn(num_images, num_anchors, num_classes, generator=g) * 2
    deltas = torch.randn(num_images, num_anchors, 4, generator=g)
    targets, matched_idxs, labels = [], [], []
    for i in range(num_images):
        num_gt = 0 if i == 2 else 2 + i  # the last image has no object
        boxes = anchors[torch.randperm(num_anchors, generator=g)[:num_gt]] + 2.0
        gt_labels = torch.randint(1, num_classes, (num_gt,), generator=g)
        if num_gt:
            matched = det_utils.SSDMatcher(0.5)(box_iou(boxes, anchors))
            labels.append(torch.where(matched >= 0, gt_labels[matched.clamp(min=0)], 0))
        else:  # as torchvision's SSD does for an image without boxes
            matched = torch.full((num_anchors,), -1, dtype=torch.int64)
            labels.append(torch.zeros(num_anchors, dtype=torch.int64))
        targets.append({"boxes": boxes, "labels": gt_labels})
        matched_idxs.append(matched)
    fake_ssd = SimpleNamespace(box_coder=det_utils.BoxCoder((10.0, 10.0, 5.0, 5.0)), neg_to_pos_ratio=3)
    expected = SSD.compute_loss(
        fake_ssd, targets, {"bbox_regression": deltas, "cls_logits": logits}, [anchors] * num_images, matched_idxs
    )["classification"]

    labels = torch.stack(labels)
    ce = F.cross_entropy(logits.reshape(-1, num_classes), labels.reshape(-1), reduction="none").view(labels.shape)
    pos, neg = ops.sample_hard_negatives_batched(labels, ce, neg_pos_ratio=3)
    num_pos = int(pos.sum())
    assert num_pos > 0 and int(neg.sum()) == 3 * num_pos and not bool(neg[2].any())
    got = (ce[pos].sum() + ce[neg].sum()) / num_pos
    torch.testing.assert_close(got, expected, rtol=1e-6, atol=1e-6)
    # a different choice would change the sum: e.g. one negative fewer
    _, fewer = ops.sample_hard_negatives_batched(labels, ce, neg_pos_ratio=3 - 1 / num_pos)
    assert float((ce[pos].sum() + ce[fewer].sum()) / num_pos) < float(expected) - 1e-4


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")
def test_sampling_stays_on_the_device():
    labels = random_labels(3000, 0).cuda()
    pos, neg = ops.sample_random(labels, 256, 0.5, gen(0))
    assert pos.is_cuda and neg.is_cuda and int(pos.sum() + neg.sum()) == 256
    iou = skewed_negative_ious(3000).cuda()
    chosen = ops.sample_iou_balanced_negative(iou, 100, torch.Generator(device="cuda").manual_seed(0))
    assert chosen.is_cuda and chosen.numel() == 100
    pos, neg = ops.sample_libra(labels, iou, torch.zeros_like(labels), 256, 0.25, gen(0))
    assert pos.is_cuda and int(pos.sum() + neg.sum()) == 256
    loss = torch.rand(4, 3000, generator=gen(1)).round(decimals=2)  # ties
    batch = torch.stack([random_labels(3000, seed) for seed in range(4)])
    expected = ops.sample_hard_negatives_batched(batch, loss, 3, 2)
    got = ops.sample_hard_negatives_batched(batch.cuda(), loss.cuda(), 3, 2)
    assert got[1].is_cuda and torch.equal(got[0].cpu(), expected[0]) and torch.equal(got[1].cpu(), expected[1])
