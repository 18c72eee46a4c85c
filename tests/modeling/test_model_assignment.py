import pytest
import torch
import torch.nn.functional as F
from torchvision.models.detection._utils import Matcher as TorchvisionMatcher
from torchvision.models.detection._utils import SSDMatcher as TorchvisionSSDMatcher
from torchvision.ops import box_iou

from workbench.modeling import (
    Assignment,
    HardNegativeSampler,
    IoUMatcher,
    MatcherSettings,
    RandomSampler,
    SSDMatcher,
    assign_to_gt,
)
from workbench.ops import ssd_anchors


def random_boxes(n, seed, size=300.0):
    g = torch.Generator().manual_seed(seed)
    xy = torch.rand(n, 2, generator=g) * size
    return torch.cat([xy, xy + 8 + torch.rand(n, 2, generator=g) * 80], dim=1)


def old_assign(candidates, gt_boxes, high, low, allow, gt_labels=None):
    """What assign_to_gt computed before matchers became strategies (no ignored GT):
    torchvision's Matcher on the IoU, labels 1/0/-1 or the GT's class."""
    matched = TorchvisionMatcher(high, low, allow)(box_iou(gt_boxes, candidates))
    fg = torch.ones_like(matched) if gt_labels is None else gt_labels[matched.clamp(min=0)]
    labels = torch.where(matched >= 0, fg, torch.where(matched == -1, 0, -1))
    return labels, matched.clamp(min=0)


def test_matcher_settings_is_the_iou_matcher():
    assert MatcherSettings is IoUMatcher
    assert MatcherSettings(0.7, 0.3, True) == IoUMatcher(high=0.7, low=0.3, allow_low_quality=True)
    assert IoUMatcher(0.5, 0.4).allow_low_quality is False


@pytest.mark.parametrize("high,low,allow", [(0.7, 0.3, True), (0.5, 0.5, False), (0.5, 0.4, True)])
def test_iou_matcher_equals_torchvision_and_assign_to_gt(high, low, allow):
    candidates = random_boxes(400, 0)
    gt = random_boxes(6, 1) + 3.0
    gt_labels = torch.tensor([4, 1, 2, 2, 7, 3])
    matcher = IoUMatcher(high, low, allow)
    a = matcher(candidates, gt, gt_labels)
    labels, matched_gt = old_assign(candidates, gt, high, low, allow, gt_labels)
    assert torch.equal(a.labels, labels)
    assert torch.equal(a.matched_gt[a.labels > 0], matched_gt[labels > 0])
    assert torch.equal(a.max_iou, box_iou(gt, candidates).max(dim=0).values)
    via_function = assign_to_gt(candidates, gt, matcher, gt_labels=gt_labels)
    for field in ("labels", "matched_gt", "max_iou"):
        assert torch.equal(getattr(via_function, field), getattr(a, field))
    agnostic = matcher(candidates, gt)
    assert torch.equal(agnostic.labels, old_assign(candidates, gt, high, low, allow)[0])


def test_ssd_matcher_labels_ignore_and_empty():
    candidates = torch.tensor(
        [[0.0, 0, 10, 10], [0, 0, 10, 6], [20, 20, 30, 30], [50, 50, 60, 60], [0, 0, 10, 4]]
    )
    gt = torch.tensor([[0.0, 0, 10, 10], [20, 20, 30, 30], [100, 100, 110, 110]])
    labels = torch.tensor([3, 1, 5])
    a = SSDMatcher(0.5)(candidates, gt, labels)
    # IoU with GT 0: 1, 0.6, 0, 0, 0.4; GT 1 owns candidate 2; GT 2 overlaps nothing and takes
    # nothing (torchvision would give it candidate 0)
    assert a.labels.tolist() == [3, 3, 1, 0, 0]
    assert a.matched_gt[:3].tolist() == [0, 0, 1]
    iou = box_iou(gt, candidates)
    assert TorchvisionSSDMatcher(0.5)(iou.clone())[0].item() == 2
    # GT 1 ignored (a crowd box): candidate 2 overlaps it above 0.5, so it is ignored
    ignored = SSDMatcher(0.5)(candidates, gt, labels, gt_ignore=torch.tensor([False, True, False]))
    assert ignored.labels.tolist() == [3, 3, -1, 0, 0]
    # the matched GT index refers to the full GT list, ignored boxes included
    skip_first = SSDMatcher(0.5)(candidates, gt, labels, gt_ignore=torch.tensor([True, False, False]))
    assert skip_first.labels.tolist() == [-1, -1, 1, 0, 0] and int(skip_first.matched_gt[2]) == 1
    empty = SSDMatcher()(candidates, gt[:0], labels[:0])
    assert empty.labels.tolist() == [0] * 5 and empty.max_iou.tolist() == [0.0] * 5
    assert torch.equal(assign_to_gt(candidates, gt, SSDMatcher(0.5), gt_labels=labels).labels, a.labels)


def test_ssd_matcher_equals_torchvision_on_anchors_without_collisions():
    anchors = ssd_anchors([(10, 10), (5, 5)], [8, 16], (80, 80), [16.0, 36.0], [1.0, 2.0, 0.5])
    checked = 0
    for seed in range(10):
        gt = random_boxes(4, 10 + seed, size=50.0)
        iou = box_iou(gt, anchors)
        best_iou, best = iou.max(dim=1)
        if best.unique().numel() < 4 or not bool((best_iou > 0).all()):
            continue
        checked += 1
        matched = TorchvisionSSDMatcher(0.5)(iou.clone())
        a = SSDMatcher(0.5)(anchors, gt)
        assert torch.equal(a.labels, (matched >= 0).long())
        assert torch.equal(a.matched_gt[matched >= 0], matched[matched >= 0])
    assert checked >= 5


def test_every_sampler_takes_one_call_form():
    labels = torch.tensor([0, 2, 0, 0, -1, 0, 1, 0, 0, 0])
    a = Assignment(labels, torch.zeros_like(labels), torch.zeros(10))
    loss = torch.tensor([0.1, 5.0, 0.9, 0.3, 9.0, 0.8, 0.0, 0.2, 0.7, 0.6])
    random = RandomSampler(6, 0.5)
    plain = random(a, torch.Generator().manual_seed(0))
    with_losses = random(a, torch.Generator().manual_seed(0), losses=loss)
    assert torch.equal(plain[0], with_losses[0]) and torch.equal(plain[1], with_losses[1])
    hard = HardNegativeSampler(neg_pos_ratio=2)
    pos, neg = hard(a, None, losses=loss)
    assert torch.where(pos)[0].tolist() == [1, 6]
    assert torch.where(neg)[0].tolist() == [2, 5, 8, 9]  # 0.9, 0.8, 0.7, 0.6; ignored 4 left out
    # 3:1 by default: 6 of the 7 negatives, all but the easiest (index 0, loss 0.1)
    _, neg3 = HardNegativeSampler()(a, losses=loss)
    assert torch.where(neg3)[0].tolist() == [2, 3, 5, 7, 8, 9]
    with pytest.raises(ValueError, match="losses"):
        hard(a)
    with pytest.raises(ValueError):
        hard(a, losses=loss[:5])
    no_pos = Assignment(torch.zeros(4, dtype=torch.long), torch.zeros(4, dtype=torch.long), torch.zeros(4))
    assert not bool(HardNegativeSampler()(no_pos, losses=torch.rand(4))[1].any())
    assert int(HardNegativeSampler(min_negatives=2)(no_pos, losses=torch.rand(4))[1].sum()) == 2


def test_hard_negative_sampler_on_an_ssd_assignment():
    # the pieces as a dense detector uses them: match, per-anchor cross-entropy, mine
    anchors = ssd_anchors([(6, 6)], [10], (60, 60), [20.0], [1.0, 2.0])
    gt = torch.tensor([[5.0, 5, 28, 30], [30, 32, 55, 58]])
    a = SSDMatcher(0.5)(anchors, gt, torch.tensor([1, 2]))
    logits = torch.randn(anchors.shape[0], 3, generator=torch.Generator().manual_seed(0))
    ce = F.cross_entropy(logits, a.labels.clamp(min=0), reduction="none")
    pos, neg = HardNegativeSampler(3)(a, losses=ce)
    num_pos = int((a.labels > 0).sum())
    assert num_pos >= 2 and torch.equal(pos, a.labels > 0)
    assert int(neg.sum()) == 3 * num_pos and bool((a.labels[neg] == 0).all())
    assert float(ce[neg].min()) >= float(ce[(a.labels == 0) & ~neg].max())
