import math

import pytest
import torch
from torchvision.models.detection._utils import BoxCoder as TorchvisionBoxCoder

from workbench.ops import BoxCoder, box_iou


def boxes_pair(n, seed, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    xy = torch.rand(n, 2, generator=g, dtype=torch.float64) * 600
    wh = torch.rand(n, 2, generator=g, dtype=torch.float64) * 200 + 4
    refs = torch.cat([xy, xy + wh], 1)
    jitter = torch.randn(n, 4, generator=g, dtype=torch.float64) * 15
    gts = refs + jitter
    gts[:, 2:] = torch.maximum(gts[:, 2:], gts[:, :2] + 1)
    return gts.to(dtype), refs.to(dtype)


WEIGHTS = [(1.0, 1.0, 1.0, 1.0), (10.0, 10.0, 5.0, 5.0), (20.0, 20.0, 10.0, 10.0)]


@pytest.mark.parametrize("weights", WEIGHTS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_encode_equals_torchvision_bitwise(weights, dtype):
    gts, refs = boxes_pair(300, 0, dtype)
    ours = BoxCoder(weights).encode(gts, refs)
    theirs = TorchvisionBoxCoder(weights).encode_single(gts, refs)
    assert ours.shape == (300, 4)
    assert torch.equal(ours, theirs)


@pytest.mark.parametrize("weights", WEIGHTS)
@pytest.mark.parametrize("k", [1, 5])
def test_decode_equals_torchvision_bitwise(weights, k):
    _, refs = boxes_pair(200, 1)
    g = torch.Generator().manual_seed(2)
    deltas = torch.randn(200, 4 * k, generator=g) * 3
    deltas[:10] *= 100  # beyond the clamp
    ours = BoxCoder(weights).decode(deltas, refs)
    theirs = TorchvisionBoxCoder(weights).decode(deltas, [refs])
    assert ours.shape == ((200, 4) if k == 1 else (200, k, 4))
    assert torch.equal(ours.reshape(200, k, 4), theirs)
    assert bool(torch.isfinite(ours).all())  # the clamp keeps exp finite


def test_decode_accepts_three_dimensional_deltas():
    _, refs = boxes_pair(20, 3)
    deltas = torch.randn(20, 3, 4, generator=torch.Generator().manual_seed(0))
    coder = BoxCoder((10.0, 10.0, 5.0, 5.0))
    assert torch.equal(coder.decode(deltas, refs), coder.decode(deltas.reshape(20, 12), refs))


@pytest.mark.parametrize("weights", WEIGHTS)
def test_round_trip(weights):
    gts, refs = boxes_pair(500, 4, torch.float64)
    coder = BoxCoder(weights)
    torch.testing.assert_close(coder.decode(coder.encode(gts, refs), refs), gts, rtol=1e-9, atol=1e-9)
    # a reference encodes to zero against itself
    torch.testing.assert_close(coder.encode(refs, refs), torch.zeros(500, 4, dtype=torch.float64))


def test_clamp_bounds_decoded_size():
    refs = torch.tensor([[0.0, 0.0, 10.0, 10.0]])
    wide = BoxCoder().decode(torch.tensor([[0.0, 0.0, 50.0, 50.0]]), refs)
    assert math.isclose(float(wide[0, 2] - wide[0, 0]), 10 * 1000 / 16, rel_tol=1e-5)
    loose = BoxCoder(clamp=math.log(2.0)).decode(torch.tensor([[0.0, 0.0, 50.0, 0.0]]), refs)
    assert math.isclose(float(loose[0, 2] - loose[0, 0]), 20.0, rel_tol=1e-6)


def test_from_variances():
    coder = BoxCoder.from_variances((0.1, 0.1, 0.2, 0.2))
    assert coder.weights == (10.0, 10.0, 5.0, 5.0)
    gts, refs = boxes_pair(50, 5)
    # the SSD form: dx = (gx - rx) / (v * rw), dw = log(gw / rw) / v
    rw = refs[:, 2] - refs[:, 0]
    gcx, rcx = (gts[:, 0] + gts[:, 2]) / 2, (refs[:, 0] + refs[:, 2]) / 2
    deltas = coder.encode(gts, refs)
    torch.testing.assert_close(deltas[:, 0], (gcx - rcx) / (0.1 * rw))
    torch.testing.assert_close(deltas[:, 2], torch.log((gts[:, 2] - gts[:, 0]) / rw) / 0.2)


def test_decoded_boxes_overlap_their_targets():
    gts, refs = boxes_pair(100, 6)
    coder = BoxCoder()
    decoded = coder.decode(coder.encode(gts, refs), refs)
    assert bool((box_iou(decoded, gts).diagonal() > 0.9999).all())


def test_invalid_inputs():
    with pytest.raises(ValueError):
        BoxCoder((1.0, 1.0, 1.0))
    with pytest.raises(ValueError):
        BoxCoder((1.0, 0.0, 1.0, 1.0))
    with pytest.raises(ValueError):
        BoxCoder().decode(torch.zeros(3, 6), torch.zeros(3, 4))
    with pytest.raises(ValueError):
        BoxCoder().decode(torch.zeros(3, 4), torch.zeros(2, 4))
    with pytest.raises(ValueError):
        BoxCoder().encode(torch.zeros(3, 4), torch.zeros(2, 4))


def test_empty():
    coder = BoxCoder()
    assert coder.encode(torch.zeros(0, 4), torch.zeros(0, 4)).shape == (0, 4)
    assert coder.decode(torch.zeros(0, 4), torch.zeros(0, 4)).shape == (0, 4)
    assert coder.decode(torch.zeros(0, 8), torch.zeros(0, 4)).shape == (0, 2, 4)
