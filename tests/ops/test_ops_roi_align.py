"""RoIAlign with the sparse backward against torchvision's op: the same forward bit for bit, the
same input gradient up to the order of the sums, torchvision's op wherever the sparse backward
does not apply."""

from __future__ import annotations

import pytest
import torch
import torchvision
from torchvision.ops import roi_align as tv_roi_align

from workbench.ops import roi_align, roi_align_input_grad, sampling_entries, uses_sparse_backward
from workbench.ops import sampling_matrix, transposed_sampling_matrix


def _rois(num: int, num_images: int, image_size: float, dtype: torch.dtype, seed: int) -> torch.Tensor:
    """Random boxes over an image of ``image_size`` pixels and beyond it: boxes partly or wholly
    outside the map, zero-size boxes and inverted ones (x2 < x1) included."""
    g = torch.Generator().manual_seed(seed)
    xy = torch.rand(num, 2, generator=g, dtype=dtype) * 1.4 * image_size - 0.2 * image_size
    wh = torch.rand(num, 2, generator=g, dtype=dtype) * 0.6 * image_size
    boxes = torch.cat([xy, xy + wh], dim=1)
    special = torch.tensor([
        [-3.0 * image_size, -2.0 * image_size, -1.5 * image_size, -1.2 * image_size],  # wholly outside, above left
        [1.2 * image_size, 1.1 * image_size, 2.0 * image_size, 3.0 * image_size],  # wholly outside, below right
        [-0.5 * image_size, -0.5 * image_size, 1.5 * image_size, 1.5 * image_size],  # covers the map and more
        [0.3 * image_size, 0.4 * image_size, 0.3 * image_size, 0.4 * image_size],  # a point
        [0.2 * image_size, 0.1 * image_size, 0.2 * image_size, 0.7 * image_size],  # zero width
        [image_size, image_size, image_size, image_size],  # a point on the far corner
        [0.6 * image_size, 0.6 * image_size, 0.2 * image_size, 0.3 * image_size],  # inverted
    ], dtype=dtype)
    boxes = torch.cat([special, boxes])
    index = torch.randint(0, num_images, (boxes.shape[0], 1), generator=g).to(dtype)
    return torch.cat([index, boxes], dim=1)


def _features(shape: tuple[int, ...], dtype: torch.dtype, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(*shape, generator=g, dtype=dtype).requires_grad_(True)


def _input_grads(op, feats, rois, output_size, scale, ratio, aligned, seed=3):
    out = op(feats, rois, output_size, scale, ratio, aligned)
    upstream = torch.randn(out.shape, generator=torch.Generator().manual_seed(seed), dtype=out.dtype)
    (grad,) = torch.autograd.grad(out, feats, upstream)
    return out, grad


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("aligned", [False, True])
@pytest.mark.parametrize(("output_size", "ratio"), [(7, 2), ((3, 5), 1), (2, 3)])
def test_forward_bitwise_and_gradient_match_torchvision(dtype, aligned, output_size, ratio):
    feats = _features((3, 4, 13, 11), dtype, seed=0)
    rois = _rois(40, 3, 88.0, dtype, seed=1)
    scale = 1 / 8
    expected_out, expected_grad = _input_grads(tv_roi_align, feats, rois, output_size, scale, ratio, aligned)
    out, grad = _input_grads(roi_align, feats, rois, output_size, scale, ratio, aligned)
    assert type(out.grad_fn).__name__ == "_RoIAlignSparseBackwardBackward"
    assert torch.equal(out, expected_out)
    assert expected_grad.abs().max() > 1.0  # the comparison is not between zeros
    torch.testing.assert_close(grad, expected_grad, rtol=1e-4, atol=1e-5)


def test_gradient_matches_torchvision_on_the_tiny_level_sizes():
    """The training case: 4 images, 128 channels, several hundred RoIs at 7 x 7, ratio 2."""
    feats = _features((4, 128, 16, 16), torch.float32, seed=4)
    rois = _rois(300, 4, 128.0, torch.float32, seed=5)
    expected_out, expected_grad = _input_grads(tv_roi_align, feats, rois, 7, 1 / 8, 2, False)
    out, grad = _input_grads(roi_align, feats, rois, 7, 1 / 8, 2, False)
    assert torch.equal(out, expected_out)
    torch.testing.assert_close(grad, expected_grad, rtol=1e-4, atol=1e-5)


def test_gradient_is_the_same_in_chunks_of_rois():
    """The backward's RoI chunks add up to the gradient of all RoIs at once."""
    rois = _rois(25, 2, 72.0, torch.float64, seed=7)
    upstream = torch.randn(rois.shape[0], 3, 4, 4, generator=torch.Generator().manual_seed(6), dtype=torch.float64)
    whole = roi_align_input_grad(upstream, rois, (2, 3, 9, 9), 1 / 8, 2, rois_per_chunk=1000)
    chunked = roi_align_input_grad(upstream, rois, (2, 3, 9, 9), 1 / 8, 2, rois_per_chunk=4)
    assert whole.abs().max() > 0.1
    torch.testing.assert_close(chunked, whole, rtol=1e-12, atol=1e-12)


def test_boxes_as_a_list_per_image():
    feats = _features((2, 3, 10, 10), torch.float32, seed=8)
    boxes = [torch.tensor([[1.0, 2.0, 30.0, 40.0]]), torch.tensor([[5.0, 5.0, 60.0, 50.0], [0.0, 0.0, 8.0, 8.0]])]
    rois = torch.cat([torch.tensor([[0.0], [1.0], [1.0]]), torch.cat(boxes)], dim=1)
    out, grad = _input_grads(roi_align, feats, boxes, 3, 1 / 8, 2, False)
    expected_out, expected_grad = _input_grads(tv_roi_align, feats, rois, 3, 1 / 8, 2, False)
    assert torch.equal(out, expected_out)
    torch.testing.assert_close(grad, expected_grad, rtol=1e-4, atol=1e-5)


def test_no_rois_give_a_zero_gradient():
    feats = _features((2, 3, 6, 6), torch.float32, seed=9)
    out = roi_align(feats, torch.zeros(0, 5), 7, 0.5, 2)
    assert out.shape == (0, 3, 7, 7)
    (grad,) = torch.autograd.grad(out.sum() + feats.sum() * 0, feats)
    assert torch.equal(grad, torch.zeros_like(feats))


def test_sampling_matrix_is_the_forward_and_its_transpose_the_backward():
    """``W @ F`` is the forward and ``W^T`` the transposed matrix, entry for entry."""
    feats = _features((2, 5, 8, 7), torch.float64, seed=10)
    rois = _rois(12, 2, 60.0, torch.float64, seed=11)
    entries = sampling_entries(rois, feats.shape, (3, 4), 1 / 8, 2, aligned=True)
    assert entries[0].shape == (rois.shape[0], 3, 4, 4, 4) and entries[0].dtype == torch.int32
    matrix = sampling_matrix(*entries, 2 * 8 * 7)
    flat = feats.detach().permute(0, 2, 3, 1).reshape(-1, 5)
    pooled = (matrix @ flat).reshape(-1, 3, 4, 5).permute(0, 3, 1, 2)
    torch.testing.assert_close(pooled, tv_roi_align(feats.detach(), rois, (3, 4), 1 / 8, 2, True))
    transposed = transposed_sampling_matrix(*entries, 2 * 8 * 7)
    assert transposed.crow_indices().dtype == torch.int32
    torch.testing.assert_close(transposed.to_dense(), matrix.to_dense().t(), rtol=0, atol=0)


def test_sampling_entries_need_a_fixed_sampling_ratio():
    with pytest.raises(ValueError, match="sampling_ratio"):
        sampling_entries(torch.zeros(1, 5), (1, 1, 4, 4), 2, 1.0, 0)


@pytest.mark.parametrize(
    ("ratio", "dtype", "requires_grad", "grad_mode"),
    [(0, torch.float32, True, True), (-1, torch.float64, True, True), (2, torch.float32, False, True),
     (2, torch.float32, True, False)],
)
def test_fallbacks_call_torchvision(monkeypatch, ratio, dtype, requires_grad, grad_mode):
    """Adaptive sampling, inputs without a gradient and no-grad mode run torchvision's op."""
    calls = []
    original = torchvision.ops.roi_align

    def spy(*args, **kwargs):
        calls.append(args)
        return original(*args, **kwargs)

    monkeypatch.setattr(torchvision.ops, "roi_align", spy)
    feats = torch.randn(1, 2, 6, 6, dtype=dtype, requires_grad=requires_grad)
    rois = torch.tensor([[0.0, 1.0, 1.0, 20.0, 30.0]], dtype=dtype)
    with torch.set_grad_enabled(grad_mode):
        assert not uses_sparse_backward(feats, ratio)
        out = roi_align(feats, rois, 3, 0.25, ratio)
    assert len(calls) == 1
    assert torch.equal(out, original(feats, rois, 3, 0.25, ratio))
    if out.grad_fn is not None:
        assert type(out.grad_fn).__name__ != "_RoIAlignSparseBackwardBackward"


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")
def test_cuda_inputs_use_torchvision():
    feats = torch.randn(1, 2, 6, 6, device="cuda", requires_grad=True)
    rois = torch.tensor([[0.0, 1.0, 1.0, 20.0, 30.0]], device="cuda")
    assert not uses_sparse_backward(feats, 2)
    out = roi_align(feats, rois, 3, 0.25, 2)
    assert type(out.grad_fn).__name__ != "_RoIAlignSparseBackwardBackward"
    assert torch.equal(out, tv_roi_align(feats, rois, 3, 0.25, 2))
