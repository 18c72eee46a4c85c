"""uniform_iou_samples: jittered GT copies per IoU interval (IoU-uniform R-CNN, section 3.1)."""

from __future__ import annotations

import pytest
import torch
from torchvision.ops import box_iou as tv_box_iou

from workbench.ops import uniform_iou_samples
from workbench.ops.uniform_iou import DEFAULT_INTERVALS, DEFAULT_JITTER, interval_of

IMAGE = (120, 128)  # (height, width)
#: Two overlapping boxes (the best-GT rule matters), one on the right edge (clipping matters).
GT = torch.tensor([[20.0, 20.0, 70.0, 60.0], [40.0, 30.0, 90.0, 80.0], [100.0, 10.0, 128.0, 50.0]])


def _check(boxes, gt_index, ious, interval_index, gt, intervals, per_interval):
    assert boxes.shape == (gt_index.shape[0], 4) and ious.shape == gt_index.shape == interval_index.shape
    height, width = IMAGE
    assert bool((boxes[:, 0::2] >= 0).all() and (boxes[:, 0::2] <= width).all())
    assert bool((boxes[:, 1::2] >= 0).all() and (boxes[:, 1::2] <= height).all())
    iou = tv_box_iou(gt, boxes)  # (G, M)
    rows = torch.arange(boxes.shape[0])
    torch.testing.assert_close(iou[gt_index, rows], ious)
    # the own GT is a best-overlapping GT
    assert bool((iou[gt_index, rows] >= iou.max(dim=0).values).all())
    last = len(intervals) - 1
    for k, (lo, hi) in enumerate(intervals):
        picked = ious[interval_index == k]
        assert bool((picked >= lo).all())
        assert bool((picked <= hi).all() if k == last else (picked < hi).all())
    for g in range(gt.shape[0]):
        for k in range(len(intervals)):
            assert int(((gt_index == g) & (interval_index == k)).sum()) <= per_interval
    # ordered by GT, then interval
    key = gt_index * len(intervals) + interval_index
    assert bool((key[1:] >= key[:-1]).all())


def test_every_sample_lies_in_its_interval_with_its_gt_the_best():
    out = uniform_iou_samples(GT, IMAGE, generator=torch.Generator().manual_seed(0))
    _check(*out, GT, DEFAULT_INTERVALS, 16)
    boxes, gt_index, ious, interval_index = out
    # 500 candidates fill the 16 places of every (GT, interval) but the lowest interval of GT 1,
    # where many candidates overlap GT 0 more than GT 1
    counts = torch.bincount(gt_index * 4 + interval_index, minlength=12).view(3, 4)
    assert bool((counts[[0, 2]] == 16).all()) and bool((counts[1, 1:] == 16).all())
    assert 0 < int(counts[1, 0]) < 16


def test_fewer_candidates_leave_some_places_empty_and_counts_stay_bounded():
    out = uniform_iou_samples(GT, IMAGE, per_interval=8, num_candidates=12, generator=torch.Generator().manual_seed(1))
    _check(*out, GT, DEFAULT_INTERVALS, 8)
    assert 0 < out[0].shape[0] < 3 * 4 * 8


def test_deterministic_for_a_generator():
    a = uniform_iou_samples(GT, IMAGE, generator=torch.Generator().manual_seed(7))
    b = uniform_iou_samples(GT, IMAGE, generator=torch.Generator().manual_seed(7))
    c = uniform_iou_samples(GT, IMAGE, generator=torch.Generator().manual_seed(8))
    for x, y in zip(a, b):
        assert torch.equal(x, y)
    assert not torch.equal(a[0], c[0])


def test_empty_gt_gives_empty_outputs():
    boxes, gt_index, ious, interval_index = uniform_iou_samples(torch.zeros((0, 4)), IMAGE)
    assert boxes.shape == (0, 4) and gt_index.shape == ious.shape == interval_index.shape == (0,)
    assert gt_index.dtype == interval_index.dtype == torch.int64


def test_hand_computed_jitters():
    gt = torch.tensor([[40.0, 40.0, 80.0, 80.0]])
    # no offset, no scaling: every candidate is the GT itself, IoU 1, in the closed last interval
    boxes, _, ious, k = uniform_iou_samples(
        gt, IMAGE, intervals=((0.5, 0.6), (0.8, 1.0)), per_interval=5, num_candidates=9,
        offsets=(0.0, 0.0), scales=((1.0, 1.0), (1.0, 1.0)), generator=torch.Generator().manual_seed(0),
    )
    assert k.tolist() == [1] * 5 and torch.equal(boxes, gt.expand(5, 4)) and bool((ious == 1).all())
    # width and height x1.25 about the same centre: IoU 1 / 1.25**2 = 0.64, in [0.6, 0.7)
    boxes, _, ious, k = uniform_iou_samples(
        gt, IMAGE, intervals=((0.6, 0.7), (0.7, 0.8)), per_interval=3, num_candidates=4,
        offsets=(0.0, 0.0), scales=((1.25, 1.25), (1.25, 1.25)), generator=torch.Generator().manual_seed(0),
    )
    assert k.tolist() == [0, 0, 0]
    torch.testing.assert_close(ious, torch.full((3,), 0.64))
    torch.testing.assert_close(boxes[0], torch.tensor([35.0, 35.0, 85.0, 85.0]))
    # x2 at the image corner: the box is clipped to (0, 0, 30, 30), IoU 400 / 900
    corner = torch.tensor([[0.0, 0.0, 20.0, 20.0]])
    boxes, _, ious, _ = uniform_iou_samples(
        corner, IMAGE, intervals=((0.4, 0.5),), per_interval=1, num_candidates=1,
        offsets=(0.0,), scales=((2.0, 2.0),), generator=torch.Generator().manual_seed(0),
    )
    torch.testing.assert_close(boxes, torch.tensor([[0.0, 0.0, 30.0, 30.0]]))
    torch.testing.assert_close(ious, torch.tensor([400.0 / 900.0]))


def test_interval_bounds_are_half_open_except_the_last():
    ious = torch.tensor([0.49, 0.5, 0.5999, 0.6, 0.7, 0.8, 0.95, 1.0])
    assert interval_of(ious, DEFAULT_INTERVALS).tolist() == [-1, 0, 0, 1, 2, 3, 3, 3]


def test_settings_are_checked():
    with pytest.raises(ValueError, match="no default jitter"):
        uniform_iou_samples(GT, IMAGE, intervals=((0.9, 1.0),))
    with pytest.raises(ValueError, match="as many"):
        uniform_iou_samples(GT, IMAGE, offsets=(0.1,), scales=((0.9, 1.1),))
    assert set(DEFAULT_JITTER) == set(DEFAULT_INTERVALS)


def _loop_reference(gt, image_size, intervals, per_interval, num_candidates, generator):
    """A plain Python loop over GT boxes and intervals, one candidate at a time."""
    height, width = image_size
    out = []
    for g in range(gt.shape[0]):
        x1, y1, x2, y2 = gt[g].tolist()
        w, h, cx, cy = x2 - x1, y2 - y1, (x1 + x2) / 2, (y1 + y2) / 2
        for k, (lo, hi) in enumerate(intervals):
            s, (slo, shi) = DEFAULT_JITTER[(lo, hi)]
            kept = 0
            for _ in range(num_candidates):
                ox, oy, sw, sh = torch.rand(4, generator=generator).tolist()
                ncx, ncy = cx + (2 * ox - 1) * s * w, cy + (2 * oy - 1) * s * h
                nw, nh = w * (slo + sw * (shi - slo)), h * (slo + sh * (shi - slo))
                box = torch.tensor([[min(max(ncx - nw / 2, 0), width), min(max(ncy - nh / 2, 0), height),
                                     min(max(ncx + nw / 2, 0), width), min(max(ncy + nh / 2, 0), height)]])
                iou = tv_box_iou(gt, box)[:, 0].nan_to_num(0.0)
                own = float(iou[g])
                inside = lo <= own < hi or (k == len(intervals) - 1 and own == hi)
                if inside and own >= float(iou.max()) and kept < per_interval:
                    out.append((g, k, own))
                    kept += 1
    return out


def test_agrees_in_distribution_with_a_per_gt_loop():
    """Counts per (GT, interval) (unsaturated: 64 places, 60 candidates) and mean IoUs per
    interval over 12 seeds each; the two draw different numbers, so they agree in distribution."""
    seeds, per_interval, num_candidates = 12, 64, 60
    counts_vec = torch.zeros(3, 4)
    counts_loop = torch.zeros(3, 4)
    iou_vec = torch.zeros(4)
    iou_loop = torch.zeros(4)
    for seed in range(seeds):
        _, g, ious, k = uniform_iou_samples(GT, IMAGE, per_interval=per_interval, num_candidates=num_candidates,
                                            generator=torch.Generator().manual_seed(seed))
        counts_vec.index_put_((g, k), torch.ones_like(ious), accumulate=True)
        iou_vec.index_put_((k,), ious, accumulate=True)
        ref = _loop_reference(GT, IMAGE, DEFAULT_INTERVALS, per_interval, num_candidates,
                              torch.Generator().manual_seed(1000 + seed))
        for gi, ki, iou in ref:
            counts_loop[gi, ki] += 1
            iou_loop[ki] += iou
    mean_iou_vec = iou_vec / counts_vec.sum(0)
    mean_iou_loop = iou_loop / counts_loop.sum(0)
    # about 3% to 35% of the candidates are kept: unsaturated counts that have something to compare
    rate = counts_vec / (seeds * num_candidates)
    assert float(rate.min()) > 0.02 and float(rate.max()) < 0.5
    # per (GT, interval) a count of about n p from n = 720 draws: the difference of two such counts
    # has a spread of about sqrt(2 n p (1 - p)), below 18 for p <= 0.35; allow 4 spreads
    spread = (2 * counts_loop * (1 - counts_loop / (seeds * num_candidates))).sqrt()
    assert bool(((counts_vec - counts_loop).abs() <= 4 * spread + 2).all())
    torch.testing.assert_close(mean_iou_vec, mean_iou_loop, atol=0.015, rtol=0)
