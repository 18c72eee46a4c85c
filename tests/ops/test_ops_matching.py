import pytest
import torch
from torchvision.models.detection._utils import Matcher, SSDMatcher

from workbench.ops import (
    BELOW_LOW,
    BETWEEN,
    bipartite_match,
    bipartite_match_batched,
    box_iou,
    mark_ignored,
    match_boxes,
    match_boxes_ssd,
    match_boxes_ssd_batched,
    ssd_anchors,
)


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


def caffe_bipartite(iou):
    """Reference: Caffe SSD's bipartite loop (bbox_util.cpp, MatchBBox), written plainly:
    candidates in the outer loop, GTs left in the inner loop, first strict maximum kept,
    only positive overlaps considered."""
    num_gt, num_candidates = iou.shape
    values = iou.tolist()
    forced = [-1] * num_gt
    pool = list(range(num_gt))
    used = set()
    while pool:
        best_value, best_candidate, best_gt = -1.0, -1, -1
        for a in range(num_candidates):
            if a in used:
                continue
            for g in pool:
                if values[g][a] > 0 and values[g][a] > best_value:
                    best_value, best_candidate, best_gt = values[g][a], a, g
        if best_candidate < 0:
            break
        forced[best_gt] = best_candidate
        used.add(best_candidate)
        pool.remove(best_gt)
    return forced


def distinct_positive_best(iou):
    best_iou, best = iou.max(dim=1)
    return bool((best_iou > 0).all()) and best.unique().numel() == best.numel()


def no_collision_cases(count, num_gt, num_candidates):
    """The first ``count`` random IoU matrices whose GTs have distinct best candidates."""
    cases, seed = [], 0
    while len(cases) < count:
        iou = random_iou(num_gt, num_candidates, 100 + seed)
        if distinct_positive_best(iou):
            cases.append(iou)
        seed += 1
    return cases


@pytest.mark.parametrize("num_gt", [1, 3, 8])
def test_ssd_matching_equals_torchvision_without_collisions(num_gt):
    for iou in no_collision_cases(4, num_gt, 200):
        assert torch.equal(match_boxes_ssd(iou, 0.5), SSDMatcher(0.5)(iou.clone()))


def test_ssd_matching_equals_torchvision_on_anchor_overlaps():
    # SSD-style anchors of two levels on a 64 x 64 image and GT boxes drawn around them
    anchors = ssd_anchors([(8, 8), (4, 4)], [8, 16], (64, 64), [16.0, 32.0], [1.0, 2.0, 0.5])
    g = torch.Generator().manual_seed(3)
    checked = 0
    for _ in range(20):
        centre = torch.rand(5, 2, generator=g) * 64
        size = 8 + torch.rand(5, 2, generator=g) * 40
        gt = torch.cat([centre - size / 2, centre + size / 2], dim=1)
        iou = box_iou(gt, anchors)
        if distinct_positive_best(iou):
            assert torch.equal(match_boxes_ssd(iou, 0.5), SSDMatcher(0.5)(iou.clone()))
            checked += 1
    assert checked >= 10


def test_ssd_gt_without_overlap_takes_nothing():
    # GT 1 overlaps no candidate: its argmax is candidate 0, which GT 0 matches at IoU 0.6
    iou = torch.tensor([[0.6, 0.7, 0.1], [0.0, 0.0, 0.0]])
    assert SSDMatcher(0.5)(iou.clone()).tolist() == [1, 0, BELOW_LOW]  # the defect being avoided
    assert bipartite_match(iou).tolist() == [1, -1]
    assert match_boxes_ssd(iou, 0.5).tolist() == [0, 0, BELOW_LOW]
    # a GT overlapping nothing, alone: nothing is forced, every candidate is background
    assert match_boxes_ssd(torch.zeros(1, 3), 0.5).tolist() == [BELOW_LOW] * 3


def test_ssd_collision_goes_to_the_higher_iou_and_the_loser_takes_its_next_best():
    # both GTs have candidate 0 as their best; GT 0 overlaps it more and keeps it, GT 1 takes
    # its next best free candidate (1, IoU 0.4 below the threshold, still forced)
    iou = torch.tensor([[0.8, 0.3, 0.1, 0.0], [0.6, 0.4, 0.2, 0.0]])
    assert bipartite_match(iou).tolist() == [0, 1]
    assert match_boxes_ssd(iou, 0.5).tolist() == [0, 1, BELOW_LOW, BELOW_LOW]
    # the same with the GTs swapped: the outcome follows the IoU, not the GT order
    assert match_boxes_ssd(iou.flip(0), 0.5).tolist() == [1, 0, BELOW_LOW, BELOW_LOW]
    # torchvision gives the shared candidate to the GT written last, and GT 0 gets nothing
    assert SSDMatcher(0.5)(iou.clone()).tolist() == [1, BELOW_LOW, BELOW_LOW, BELOW_LOW]


def test_ssd_exact_tie_goes_to_the_lower_gt_index():
    iou = torch.tensor([[0.7, 0.2], [0.7, 0.3]])
    assert bipartite_match(iou).tolist() == [0, 1]
    assert match_boxes_ssd(iou, 0.5).tolist() == [0, 1]
    # equal IoU at two candidates of one GT: the lower candidate index
    assert bipartite_match(torch.tensor([[0.0, 0.4, 0.4]])).tolist() == [1]


def test_ssd_forcing_overrides_the_threshold_match_only_for_the_forced_candidate():
    # candidate 1 passes the threshold for GT 0 (0.9) but is GT 1's only overlap; greedy gives
    # GT 0 candidate 0 (0.95) first, then candidate 1 to GT 1
    iou = torch.tensor([[0.95, 0.9, 0.6], [0.0, 0.3, 0.0]])
    assert match_boxes_ssd(iou, 0.5).tolist() == [0, 1, 0]


def test_ssd_more_gts_than_candidates():
    iou = torch.tensor([[0.5, 0.2], [0.9, 0.1], [0.3, 0.6], [0.2, 0.1]])
    assert bipartite_match(iou).tolist() == [-1, 0, 1, -1]
    assert match_boxes_ssd(iou, 0.5).tolist() == [1, 2]
    assert bipartite_match(torch.zeros(0, 3)).tolist() == []
    assert bipartite_match(torch.zeros(2, 0)).tolist() == [-1, -1]


@pytest.mark.parametrize("num_gt,num_candidates", [(3, 200), (10, 200), (8, 20), (6, 6), (12, 5)])
@pytest.mark.parametrize("levels", [None, 5, 20])
def test_bipartite_equals_caffe_loop(num_gt, num_candidates, levels):
    # (3, 200) and (10, 200) take the reduced column set, the others the full matrix; coarse
    # levels make many exact ties and many zeros
    for seed in range(3):
        iou = random_iou(num_gt, num_candidates, seed, levels)
        assert bipartite_match(iou).tolist() == caffe_bipartite(iou)


@pytest.mark.parametrize("seed", range(6))
def test_ssd_matching_does_not_depend_on_gt_or_candidate_order(seed):
    # many GTs for few candidates, so best candidates collide; continuous IoU: no ties
    g = torch.Generator().manual_seed(seed)
    iou = torch.rand(12, 30, generator=g) ** 3
    iou[:, :3] += 0.5  # every GT's best is among candidates 0..2: collisions
    best = iou.argmax(dim=1)
    assert best.unique().numel() < best.numel()
    matched = match_boxes_ssd(iou, 0.5)
    forced = bipartite_match(iou)
    assert bool((forced >= 0).all()) and forced.unique().numel() == 12  # every GT got one

    gt_perm = torch.randperm(12, generator=g)  # row i of the permuted matrix is GT gt_perm[i]
    permuted = match_boxes_ssd(iou[gt_perm], 0.5)
    relabelled = torch.where(permuted >= 0, gt_perm[permuted.clamp(min=0)], permuted)
    assert torch.equal(relabelled, matched)
    assert torch.equal(bipartite_match(iou[gt_perm]), forced[gt_perm])

    cand_perm = torch.randperm(30, generator=g)  # column j is candidate cand_perm[j]
    assert torch.equal(match_boxes_ssd(iou[:, cand_perm], 0.5), matched[cand_perm])
    assert torch.equal(cand_perm[bipartite_match(iou[:, cand_perm])], forced)


@pytest.mark.parametrize("num_candidates", [6, 40, 500])
@pytest.mark.parametrize("levels", [None, 4])
def test_batched_ssd_matching_equals_per_image(num_candidates, levels):
    # images with 0..7 GTs padded to 7; padded rows hold values that would match if read
    counts = [3, 0, 7, 1, 5]
    padded = torch.full((len(counts), 7, num_candidates), 0.9)
    valid = torch.zeros(len(counts), 7, dtype=torch.bool)
    per_image = []
    for i, count in enumerate(counts):
        iou = random_iou(count, num_candidates, 40 + i, levels)
        iou[:, :2] += 0.3 * (i % 2)  # odd images: best candidates collide
        padded[i, :count] = iou
        valid[i, :count] = True
        per_image.append(iou)
    before = padded.clone()
    matched = match_boxes_ssd_batched(padded, 0.5, gt_valid=valid)
    assert torch.equal(padded, before)
    assert matched.shape == (len(counts), num_candidates)
    for i, iou in enumerate(per_image):
        assert torch.equal(matched[i], match_boxes_ssd(iou, 0.5))
    # rows padded with -1 need no mask in the bipartite step
    forced = bipartite_match_batched(torch.where(valid[..., None], padded, torch.tensor(-1.0)))
    for i, iou in enumerate(per_image):
        assert forced[i, : counts[i]].tolist() == caffe_bipartite(iou)
        assert bool((forced[i, counts[i] :] == -1).all())
    with pytest.raises(ValueError):
        match_boxes_ssd_batched(padded, 0.5, gt_valid=valid[:, :3])
    assert match_boxes_ssd_batched(torch.zeros(2, 0, 5), 0.5).tolist() == [[BELOW_LOW] * 5] * 2


def test_ssd_matching_does_not_mutate_input():
    iou = random_iou(5, 40, 2, levels=4)
    before = iou.clone()
    match_boxes_ssd(iou, 0.5)
    bipartite_match(iou)
    assert torch.equal(iou, before)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")
@pytest.mark.parametrize("levels", [None, 5])
def test_ssd_matching_same_on_cuda_without_host_sync(levels):
    for num_gt, num_candidates in [(4, 300), (20, 300), (30, 25)]:
        iou = random_iou(num_gt, num_candidates, num_gt, levels)
        iou[:, 7] = iou.max() + 0.01  # every GT's best is candidate 7: a 1-way collision
        expected = match_boxes_ssd(iou, 0.5)
        on_gpu = iou.cuda()
        torch.cuda.synchronize()
        torch.cuda.set_sync_debug_mode("error")
        try:
            got = match_boxes_ssd(on_gpu, 0.5)
        finally:
            torch.cuda.set_sync_debug_mode("default")
        assert got.is_cuda
        assert torch.equal(got.cpu(), expected)
        assert bipartite_match(on_gpu).tolist() == caffe_bipartite(iou)


def test_mark_ignored():
    matched = torch.tensor([0, BELOW_LOW, BETWEEN, 1, BELOW_LOW])
    iou_ignore = torch.tensor([[0.0, 0.8, 0.1, 0.2, 0.5], [0.9, 0.0, 0.0, 0.1, 0.49]])
    before = matched.clone()
    out = mark_ignored(matched, iou_ignore, 0.5)
    assert out.tolist() == [BETWEEN, BETWEEN, BETWEEN, 1, BELOW_LOW]
    assert torch.equal(matched, before)
    assert torch.equal(mark_ignored(matched, torch.zeros(0, 5), 0.5), matched)
