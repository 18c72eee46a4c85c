import math

import numpy as np
import pytest
import torch
import torchvision

from workbench.ops import NmsLedger, nms_with_ledger


def clustered_boxes(n, seed, num_centres=6, image=200.0, round_scores=None, integer_coords=False):
    """Boxes jittered around a few centres (many suppressions) plus a few uniform ones."""
    g = torch.Generator().manual_seed(seed)
    centres = torch.rand(num_centres, 2, generator=g) * image
    sizes = 10 + torch.rand(num_centres, 2, generator=g) * 50
    who = torch.randint(0, num_centres, (n,), generator=g)
    cxcy = centres[who] + torch.randn(n, 2, generator=g) * sizes[who] * 0.15
    wh = sizes[who] * torch.exp(torch.randn(n, 2, generator=g) * 0.2)
    uniform = torch.rand(n, generator=g) < 0.15
    cxcy[uniform] = torch.rand(int(uniform.sum()), 2, generator=g) * image
    boxes = torch.cat([cxcy - wh / 2, cxcy + wh / 2], dim=1)
    if integer_coords:
        boxes = boxes.round()
        boxes[:, 2:] = torch.maximum(boxes[:, 2:], boxes[:, :2] + 1)
    scores = torch.rand(n, generator=g)
    if round_scores:
        scores = torch.round(scores * round_scores) / round_scores  # many equal scores
    return boxes, scores


def greedy_python(boxes, scores, threshold, idxs=None):
    """Plain greedy NMS in Python with float32 arithmetic, recording who suppressed whom."""
    b = boxes.numpy().astype(np.float32)
    s = scores.numpy()
    n = len(b)
    order = sorted(range(n), key=lambda i: (-float(s[i]), i))  # stable descending
    areas = [(b[i, 2] - b[i, 0]) * (b[i, 3] - b[i, 1]) for i in range(n)]
    removed = [False] * n
    keep, suppressed_by, ious = [], [-1] * n, [math.nan] * n
    for pos, i in enumerate(order):
        if removed[i]:
            continue
        keep.append(i)
        for j in order[pos + 1 :]:
            if removed[j] or (idxs is not None and int(idxs[i]) != int(idxs[j])):
                continue
            w = max(np.float32(0), min(b[i, 2], b[j, 2]) - max(b[i, 0], b[j, 0]))
            h = max(np.float32(0), min(b[i, 3], b[j, 3]) - max(b[i, 1], b[j, 1]))
            inter = w * h
            iou = inter / (areas[i] + areas[j] - inter)
            if float(iou) > threshold:  # compared as a double, like the CPU kernel
                removed[j] = True
                suppressed_by[j] = i
                ious[j] = float(iou)
    return keep, suppressed_by, ious


def greedy_numpy(boxes, scores, threshold, members=None):
    """The same greedy NMS, one kept box at a time against all boxes (float32): for larger inputs."""
    b = boxes.numpy().astype(np.float32)
    n = len(b)
    order = torch.sort(scores, stable=True, descending=True).indices.numpy()
    if members is not None:
        order = order[np.isin(order, members.numpy())]
    areas = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    alive = np.zeros(n, dtype=bool)
    alive[order] = True
    suppressed_by = np.full(n, -1)
    ious = np.full(n, np.nan, dtype=np.float32)
    position = np.empty(n, dtype=np.int64)
    position[order] = np.arange(len(order))
    for i in order:
        if not alive[i]:
            continue
        later = order[position[i] + 1 :]
        later = later[alive[later]]
        w = np.maximum(np.float32(0), np.minimum(b[i, 2], b[later, 2]) - np.maximum(b[i, 0], b[later, 0]))
        h = np.maximum(np.float32(0), np.minimum(b[i, 3], b[later, 3]) - np.maximum(b[i, 1], b[later, 1]))
        inter = w * h
        iou = inter / (areas[i] + areas[later] - inter)
        hit = later[iou.astype(np.float64) > threshold]
        alive[hit] = False
        suppressed_by[hit] = i
        ious[hit] = iou[iou.astype(np.float64) > threshold]
    return suppressed_by, ious


def check_invariants(ledger, boxes, scores, threshold, idxs=None):
    n = boxes.shape[0]
    assert ledger.suppressed_by.shape == (n,) and ledger.suppressor_iou.shape == (n,)
    kept = ledger.kept_mask
    assert int(kept.sum()) == ledger.keep.numel()
    assert bool(kept[ledger.keep].all())
    assert bool(torch.isnan(ledger.suppressor_iou[kept]).all())
    sup = ledger.suppressed_by[~kept]
    assert bool(kept[sup].all())  # every suppressor was kept
    assert bool((ledger.suppressor_iou[~kept] > threshold).all())
    assert bool((scores[sup] >= scores[~kept]).all())  # a suppressor comes first in score order
    if idxs is not None:
        assert torch.equal(idxs[sup], idxs[~kept])


SEEDS = range(12)
THRESHOLDS = [0.3, 0.5, 0.7]


@pytest.mark.parametrize("threshold", THRESHOLDS)
@pytest.mark.parametrize("seed", SEEDS)
def test_keep_equals_torchvision_nms(seed, threshold):
    boxes, scores = clustered_boxes(300 + 50 * seed, seed, round_scores=10 if seed % 2 else None)
    ledger = nms_with_ledger(boxes, scores, threshold)
    assert torch.equal(ledger.keep, torchvision.ops.nms(boxes, scores, threshold))
    check_invariants(ledger, boxes, scores, threshold)


@pytest.mark.parametrize("threshold", THRESHOLDS)
@pytest.mark.parametrize("seed", SEEDS)
def test_keep_equals_torchvision_batched_nms(seed, threshold):
    boxes, scores = clustered_boxes(200 + 40 * seed, seed, round_scores=20 if seed % 3 else None)
    idxs = torch.randint(0, 1 + seed % 4, (boxes.shape[0],), generator=torch.Generator().manual_seed(seed))
    ledger = nms_with_ledger(boxes, scores, threshold, idxs)
    assert torch.equal(ledger.keep, torchvision.ops.batched_nms(boxes, scores, idxs, threshold))
    check_invariants(ledger, boxes, scores, threshold, idxs)


@pytest.mark.parametrize("threshold", THRESHOLDS)
@pytest.mark.parametrize("seed", range(8))
def test_ledger_equals_brute_force(seed, threshold):
    boxes, scores = clustered_boxes(60, seed, num_centres=3, round_scores=5, integer_coords=seed % 2 == 1)
    idxs = torch.randint(0, 2, (60,), generator=torch.Generator().manual_seed(seed)) if seed >= 4 else None
    keep, suppressed_by, ious = greedy_python(boxes, scores, threshold, idxs)
    ledger = nms_with_ledger(boxes, scores, threshold, idxs)
    assert ledger.keep.tolist() == keep
    assert ledger.suppressed_by.tolist() == suppressed_by
    expected_iou = np.array(ious, dtype=np.float32)
    if idxs is None:
        np.testing.assert_array_equal(ledger.suppressor_iou.numpy(), expected_iou)
    else:  # torchvision shifts groups apart before NMS; the ledger reports the IoU NMS computed
        np.testing.assert_allclose(ledger.suppressor_iou.numpy(), expected_iou, rtol=1e-5)


@pytest.mark.parametrize("threshold", [0.5, 0.7])
def test_ledger_equals_reference_on_thousands_of_boxes(threshold):
    boxes, scores = clustered_boxes(3000, 1, num_centres=40, image=800.0, round_scores=50)
    ledger = nms_with_ledger(boxes, scores, threshold)
    suppressed_by, ious = greedy_numpy(boxes, scores, threshold)
    assert torch.equal(ledger.keep, torchvision.ops.nms(boxes, scores, threshold))
    np.testing.assert_array_equal(ledger.suppressed_by.numpy(), suppressed_by)
    np.testing.assert_array_equal(ledger.suppressor_iou.numpy(), ious)


def test_batched_ledger_on_the_per_group_path():
    # above 1,000 boxes on CPU torchvision runs NMS group by group (no coordinate offsets)
    boxes, scores = clustered_boxes(2500, 2, num_centres=20, image=600.0, round_scores=30)
    idxs = torch.randint(0, 5, (2500,), generator=torch.Generator().manual_seed(0))
    ledger = nms_with_ledger(boxes, scores, 0.5, idxs)
    assert torch.equal(ledger.keep, torchvision.ops.batched_nms(boxes, scores, idxs, 0.5))
    expected = np.full(2500, -1)
    for group in range(5):
        got, _ = greedy_numpy(boxes, scores, 0.5, members=torch.where(idxs == group)[0])
        expected[got >= 0] = got[got >= 0]
    np.testing.assert_array_equal(ledger.suppressed_by.numpy(), expected)
    check_invariants(ledger, boxes, scores, 0.5, idxs)


def test_batched_ledger_shares_the_rounding_of_shifted_boxes():
    # Below 1,000 boxes torchvision shifts each group by idx * (max + 1) and runs one NMS; the
    # shift changes the float rounding of IoU. Find a pair whose IoU equals the threshold in the
    # given coordinates (kept by plain NMS) but exceeds it after the shift (suppressed).
    g = torch.Generator().manual_seed(0)
    scores = torch.tensor([0.9, 0.8])
    for _ in range(200):
        a = torch.rand(1, 2, generator=g) * 50
        first = torch.cat([a, a + 5 + torch.rand(1, 2, generator=g) * 30], 1)
        boxes = torch.cat([first, first + torch.randn(1, 4, generator=g) * 2])
        threshold = float(torchvision.ops.box_iou(boxes[:1], boxes[1:]))
        idxs = torch.tensor([1, 1])
        if torchvision.ops.batched_nms(boxes, scores, idxs, threshold).numel() == 1:
            break
    else:
        pytest.fail("no pair found whose decision depends on the shift")
    assert nms_with_ledger(boxes, scores, threshold).keep.tolist() == [0, 1]
    ledger = nms_with_ledger(boxes, scores, threshold, idxs)
    assert ledger.keep.tolist() == [0]
    assert ledger.suppressed_by.tolist() == [-1, 0]
    assert float(ledger.suppressor_iou[1]) > threshold


def test_threshold_is_compared_like_the_cpu_kernel():
    # IoU 3/10 rounds to the float 0.30000001 > 0.3: suppressed; 7/10 rounds to 0.69999999: kept
    scores = torch.tensor([1.0, 0.5])
    at_03 = nms_with_ledger(torch.tensor([[0.0, 0.0, 10.0, 1.0], [0.0, 0.0, 3.0, 1.0]]), scores, 0.3)
    assert at_03.keep.tolist() == [0] and at_03.suppressed_by.tolist() == [-1, 0]
    at_07 = nms_with_ledger(torch.tensor([[0.0, 0.0, 10.0, 1.0], [0.0, 0.0, 7.0, 1.0]]), scores, 0.7)
    assert at_07.keep.tolist() == [0, 1] and at_07.suppressed_by.tolist() == [-1, -1]
    exact = nms_with_ledger(torch.tensor([[0.0, 0.0, 10.0, 1.0], [0.0, 0.0, 5.0, 1.0]]), scores, 0.5)
    assert exact.keep.tolist() == [0, 1]  # IoU exactly 0.5 is not above 0.5


def test_empty_input():
    ledger = nms_with_ledger(torch.zeros(0, 4), torch.zeros(0), 0.5)
    assert ledger.keep.shape == (0,) and ledger.keep.dtype == torch.int64
    assert ledger.suppressed_by.shape == (0,) and ledger.suppressor_iou.shape == (0,)
    batched = nms_with_ledger(torch.zeros(0, 4), torch.zeros(0), 0.5, torch.zeros(0, dtype=torch.int64))
    assert batched.keep.numel() == 0


def test_identical_boxes_and_tied_scores():
    boxes = torch.tensor([[10.0, 10.0, 50.0, 50.0]]).repeat(7, 1)
    scores = torch.tensor([0.5, 0.9, 0.9, 0.1, 0.9, 0.5, 0.2])
    ledger = nms_with_ledger(boxes, scores, 0.5)
    # the stable descending order visits box 1 first among the three 0.9s
    assert ledger.keep.tolist() == torchvision.ops.nms(boxes, scores, 0.5).tolist() == [1]
    assert ledger.suppressed_by.tolist() == [1, -1, 1, 1, 1, 1, 1]
    assert ledger.suppressor_iou[ledger.suppressed_by >= 0].tolist() == [1.0] * 6
    all_tied = nms_with_ledger(boxes, torch.full((7,), 0.3), 0.5)
    assert all_tied.keep.tolist() == [0] and all_tied.suppressed_by.tolist() == [-1] + [0] * 6


def test_single_group_equals_plain_nms():
    boxes, scores = clustered_boxes(400, 3)
    plain = nms_with_ledger(boxes, scores, 0.5)
    grouped = nms_with_ledger(boxes, scores, 0.5, torch.zeros(400, dtype=torch.int64))
    assert torch.equal(plain.keep, grouped.keep)
    assert torch.equal(plain.suppressed_by, grouped.suppressed_by)


def test_degenerate_boxes_are_never_suppressed_or_suppressing():
    boxes = torch.tensor([[0.0, 0.0, 10.0, 10.0], [5.0, 5.0, 5.0, 5.0], [5.0, 5.0, 5.0, 5.0]])
    ledger = nms_with_ledger(boxes, torch.tensor([0.9, 0.8, 0.7]), 0.1)
    assert ledger.keep.tolist() == torchvision.ops.nms(boxes, torch.tensor([0.9, 0.8, 0.7]), 0.1).tolist()
    assert ledger.keep.tolist() == [0, 1, 2]


def test_ledger_container():
    boxes, scores = clustered_boxes(100, 4)
    ledger = nms_with_ledger(boxes, scores, 0.5)
    assert isinstance(ledger, NmsLedger) and len(ledger) == 100
    as_dict = ledger.to_dict()
    assert set(as_dict) == {"keep", "suppressed_by", "suppressor_iou", "iou_threshold"}
    assert float(as_dict["iou_threshold"]) == 0.5
    assert torch.equal(as_dict["keep"], ledger.keep)
    assert ledger.kept_mask.dtype == torch.bool and int(ledger.kept_mask.sum()) == ledger.keep.numel()


def test_gradients_do_not_flow_and_inputs_are_unchanged():
    boxes, scores = clustered_boxes(80, 5)
    boxes.requires_grad_(True)
    before = boxes.detach().clone()
    ledger = nms_with_ledger(boxes, scores, 0.5)
    assert not ledger.suppressor_iou.requires_grad
    assert torch.equal(boxes.detach(), before)


def test_rejects_bad_shapes():
    with pytest.raises(ValueError):
        nms_with_ledger(torch.zeros(3, 4), torch.zeros(2), 0.5)
    with pytest.raises(ValueError):
        nms_with_ledger(torch.zeros(3, 4), torch.zeros(3), 0.5, torch.zeros(2, dtype=torch.int64))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")
@pytest.mark.parametrize("threshold", THRESHOLDS)
@pytest.mark.parametrize("seed", range(4))
def test_cuda_keep_equals_torchvision_and_ledger_is_consistent(seed, threshold):
    boxes, scores = clustered_boxes(3000, seed, num_centres=30, image=800.0, round_scores=20 if seed % 2 else None)
    boxes, scores = boxes.cuda(), scores.cuda()
    idxs = torch.randint(0, 3, (3000,), device="cuda")
    for group_ids in (None, idxs):
        ledger = nms_with_ledger(boxes, scores, threshold, group_ids)
        expected = (
            torchvision.ops.nms(boxes, scores, threshold)
            if group_ids is None
            else torchvision.ops.batched_nms(boxes, scores, group_ids, threshold)
        )
        assert ledger.keep.is_cuda and torch.equal(ledger.keep, expected)
        check_invariants(ledger, boxes, scores, threshold, group_ids)
        cpu = nms_with_ledger(boxes.cpu(), scores.cpu(), threshold, None if group_ids is None else group_ids.cpu())
        agree = (cpu.suppressed_by == ledger.suppressed_by.cpu()).float().mean()
        assert float(agree) > 0.999
