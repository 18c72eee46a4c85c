import pytest
import torch
from torchvision.models.detection._utils import Matcher, SSDMatcher

from workbench.ops import BELOW_LOW, BETWEEN, box_iou, mark_ignored, match_boxes, match_boxes_ssd


def random_iou(g_count, a_count, seed, levels=None):
    g = torch.Generator().manual_seed(seed)
    iou = torch.rand(g_count, a_count, generator=g) ** 2
    if levels:  # quantise to create ties, including exact ties at each GT's maximum
        iou = torch.round(iou * levels) / levels
    return iou


CASES = [(0.7, 0.3, True), (0.7, 0.3, False), (0.5, 0.5, False), (0.5, 0.4, True), (0.6, 0.6, True)]


@pytest.mark.parametrize("high,low,allow", CASES)
@pytest.mark.parametrize("seed", range(6))
def test_equals_torchvision_matcher(high, low, allow, seed):
    levels = 10 if seed % 2 else None
    iou = random_iou(1 + seed, 300, seed, levels)
    expected = Matcher(high, low, allow)(iou.clone())
    assert torch.equal(match_boxes(iou, high, low, allow), expected)


def test_equals_torchvision_matcher_on_box_overlaps():
    g = torch.Generator().manual_seed(0)
    anchors = torch.cat([torch.rand(500, 2, generator=g) * 400, torch.zeros(500, 2)], 1)
    anchors[:, 2:] = anchors[:, :2] + 20 + torch.rand(500, 2, generator=g) * 60
    gts = anchors[torch.randperm(500, generator=g)[:7]] + torch.randn(7, 4, generator=g) * 5
    iou = box_iou(gts, anchors)
    assert torch.equal(match_boxes(iou, 0.7, 0.3, True), Matcher(0.7, 0.3, True)(iou.clone()))


def test_codes_and_low_quality_rule():
    iou = torch.tensor(
        [
            [0.9, 0.5, 0.1, 0.2, 0.0],
            [0.1, 0.2, 0.25, 0.25, 0.0],
        ]
    )
    plain = match_boxes(iou, 0.7, 0.3, allow_low_quality=False)
    assert plain.tolist() == [0, BETWEEN, BELOW_LOW, BELOW_LOW, BELOW_LOW]
    # GT 1's best IoU 0.25 is shared by candidates 2 and 3: both restored to their own best GT
    low_quality = match_boxes(iou, 0.7, 0.3, allow_low_quality=True)
    assert low_quality.tolist() == [0, BETWEEN, 1, 1, BELOW_LOW]
    # high == low leaves no band of ignored candidates
    assert BETWEEN not in match_boxes(iou, 0.5, 0.5).tolist()


def test_does_not_mutate_input():
    iou = random_iou(4, 50, 1)
    before = iou.clone()
    match_boxes(iou, 0.7, 0.3, True)
    assert torch.equal(iou, before)


def test_empty_ground_truth_and_candidates():
    assert match_boxes(torch.zeros(0, 6), 0.7, 0.3, True).tolist() == [BELOW_LOW] * 6
    assert match_boxes(torch.zeros(3, 0), 0.7, 0.3, True).shape == (0,)
    assert match_boxes_ssd(torch.zeros(0, 4), 0.5).tolist() == [BELOW_LOW] * 4


def test_rejects_low_above_high():
    with pytest.raises(ValueError):
        match_boxes(random_iou(2, 3, 0), 0.3, 0.7)


@pytest.mark.parametrize("seed", range(5))
def test_ssd_matching_equals_torchvision(seed):
    iou = random_iou(3 + seed, 200, seed)
    expected = SSDMatcher(0.5)(iou.clone())
    got = match_boxes_ssd(iou, 0.5)
    assert torch.equal(got, expected)
    # every GT owns its best candidate, unless another GT has the same best candidate
    best = iou.argmax(dim=1)
    for gt, candidate in enumerate(best.tolist()):
        if int((best == candidate).sum()) == 1:
            assert int(got[candidate]) == gt
        assert int(got[candidate]) >= 0


def test_mark_ignored():
    matched = torch.tensor([0, BELOW_LOW, BETWEEN, 1, BELOW_LOW])
    iou_ignore = torch.tensor([[0.0, 0.8, 0.1, 0.2, 0.5], [0.9, 0.0, 0.0, 0.1, 0.49]])
    before = matched.clone()
    out = mark_ignored(matched, iou_ignore, 0.5)
    assert out.tolist() == [BETWEEN, BETWEEN, BETWEEN, 1, BELOW_LOW]
    assert torch.equal(matched, before)
    assert torch.equal(mark_ignored(matched, torch.zeros(0, 5), 0.5), matched)
