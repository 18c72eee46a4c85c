"""RoIAlign with torchvision's forward and, on the CPU, a sparse-matrix backward.

Linearity: for fixed boxes RoIAlign is linear in the features. Every output bin is the mean of
``sampling_ratio ** 2`` sampling points and every point is a bilinear interpolation of (at most)
four feature pixels, so with the features flattened to ``F`` (N*H*W, C) and the output to ``Y``
(K*PH*PW, C)::

    Y = W @ F        W: (K*PH*PW, N*H*W), 4 * sampling_ratio**2 entries per row,

the entries being the bilinear weights divided by the point count. The gradient with respect to
the features is therefore ``W^T @ dY``. torchvision's CPU backward
(``torchvision::_roi_align_backward``) computes the same sum by a scalar loop over every
(RoI, channel, bin, point), recomputing the weights per channel; here ``W^T`` is built once,
as a compressed-sparse-row matrix, and multiplied by the C-channel gradient in one sparse
product.

Conventions (of torchvision's CPU kernel ``torchvision/csrc/ops/cpu/roi_align_kernel.cpp``,
``roi_align_backward_kernel_impl`` and ``bilinear_interpolate_gradient``, followed here with the
same operation order in the input's dtype):

- the box is scaled by ``spatial_scale``; ``aligned=True`` subtracts 0.5 (a half-pixel shift),
  ``aligned=False`` subtracts nothing and clamps the box's width and height to at least 1;
- the bin size is the box size over the output size; sampling point ``i`` of bin ``p`` lies at
  ``start + p * bin + (i + 0.5) * bin / sampling_ratio`` (rows and columns alike);
- a point with ``y < -1`` or ``y > H`` (or ``x < -1`` or ``x > W``) contributes nothing;
  otherwise a negative coordinate is clamped to 0 and a point whose low neighbour is at or past
  the last row (column) uses that row (column) alone.

Entries of points that contribute nothing are kept with weight zero, so every row of ``W`` has
exactly ``4 * sampling_ratio**2`` entries and the row of an entry follows from its position
(no row index is built or sorted); a non-finite upstream gradient in a bin whose points all lie outside the map
therefore reaches the clamped pixels as NaN (0 * inf), where torchvision's loop skips it.

The sparse backward needs ``sampling_ratio > 0`` (a fixed point count per bin); the adaptive
count (``sampling_ratio <= 0``), CUDA / other devices, half precision, autocast and inputs
without a gradient go to ``torchvision.ops.roi_align`` unchanged.

Speed (``benchmarks/bench_roi_align.py``, one thread, 4 x 128 x 32 x 32 features, 7 x 7 bins,
sampling ratio 2, median of 7): torchvision's backward 229 / 670 / 3007 ms, this one 20 / 59 /
324 ms at 250 / 1000 / 4000 RoIs (11.6x / 11.4x / 9.3x); most of it is the int32 argsort that
orders the entries by pixel, the sparse product itself takes 7-16 ms per 1000 RoIs. A ``tiny``
training step (batch 4, CPU time, one thread) went from 716 to 537 ms for Faster R-CNN and
from 1358 to 819 ms for IoU-uniform R-CNN.

Memory: an entry costs about 30 bytes while its matrix is built (int32 column, row and row
pointers, the value and its sorted copy, the int64 sort order); at 7 x 7 with sampling ratio 2
(784 entries per RoI) building ``W^T`` for 1000 RoIs raised the peak resident memory by 28 MB,
and 24 MB per further 1000. The backward takes the RoIs ``ROIS_PER_CHUNK`` (512) at a time, so
its peak stays bounded: 48 MB above its inputs at 1000 RoIs, 57 MB at 4000 (the chunk's matrix,
the chunk's channels-last copy of the output gradient, the (N*H*W, C) gradient).
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import torch
from torch import Tensor
from torch.autograd.function import once_differentiable
from torch.nn.modules.utils import _pair
from torchvision import ops as tv_ops
from torchvision.ops._utils import check_roi_boxes_shape, convert_boxes_to_roi_format

__all__ = [
    "ROIS_PER_CHUNK",
    "roi_align",
    "roi_align_input_grad",
    "sampling_entries",
    "sampling_matrix",
    "transposed_sampling_matrix",
    "uses_sparse_backward",
]

#: RoIs whose transposed sampling matrix is built at once in the backward: bounds its memory
#: (about 14 MB at a 7 x 7 output and sampling ratio 2) and is faster than larger chunks (the
#: argsort grows as n log n; 4000 RoIs, one thread: 375 ms in chunks of 512, 524 ms in one).
ROIS_PER_CHUNK = 512

_INT32_MAX = 2**31 - 1


def _axis_samples(start: Tensor, bin_size: Tensor, pooled: int, ratio: int) -> Tensor:
    """(K, pooled, ratio) sampling coordinates along one axis, in the kernel's operation order:
    ``start + p * bin + ((i + 0.5) * bin) / ratio``."""
    p = torch.arange(pooled, dtype=start.dtype, device=start.device)
    i = torch.arange(ratio, dtype=start.dtype, device=start.device) + 0.5
    bins = start[:, None, None] + p[None, :, None] * bin_size[:, None, None]
    return bins + (i[None, None, :] * bin_size[:, None, None]) / ratio


def _axis_neighbours(v: Tensor, size: int, index_dtype: torch.dtype) -> tuple[Tensor, Tensor]:
    """Neighbour indices and bilinear weights of coordinates ``v`` on an axis of ``size`` pixels.

    Returns ``(index, weight)``, each of shape ``v.shape + (2,)`` (low, high); the weights of an
    out-of-range coordinate (``v < -1`` or ``v > size``) are zero, its indices stay in range.
    """
    inside = (v >= -1.0) & (v <= size)
    v = v.clamp(min=0, max=size)  # the upper clamp only guards the integer cast (v > size is outside)
    low = v.to(index_dtype)  # truncation == floor for v >= 0, as the kernel's (int) cast
    last = low >= size - 1
    low = low.clamp(max=size - 1)
    high = torch.where(last, low, low + 1)
    v = torch.where(last, low.to(v.dtype), v)
    frac = v - low
    weight = torch.stack((1.0 - frac, frac), dim=-1) * inside[..., None]
    return torch.stack((low, high), dim=-1), weight


def _index_dtype(*sizes: int) -> torch.dtype:
    """int32 when every index fits, else int64."""
    return torch.int32 if max(sizes) <= _INT32_MAX else torch.int64


def _csr(crow: Tensor, columns: Tensor, values: Tensor, size: tuple[int, int]) -> Tensor:
    """A CSR tensor from arrays built valid here (no invariant check, no "beta" warning)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta state")
        return torch.sparse_csr_tensor(crow, columns, values, size, check_invariants=False)


def sampling_entries(
    rois: Tensor,
    feature_shape: Sequence[int],
    output_size: int | tuple[int, int],
    spatial_scale: float,
    sampling_ratio: int,
    aligned: bool = False,
) -> tuple[Tensor, Tensor]:
    """Columns and values of the RoIAlign sampling matrix ``W``.

    ``rois`` (K, 5) ``[batch_index, x1, y1, x2, y2]`` in image coordinates; ``feature_shape``
    ``(N, C, H, W)`` (C unused); ``sampling_ratio`` ``r > 0``. Returns ``columns`` int32 (int64
    when the indices do not fit) and ``values`` in the dtype of ``rois``, both of shape
    ``(K, PH, 2r, PW, 2r)``: the entry ``[k, ph, j, pw, i]`` belongs to row ``(k, ph, pw)`` of
    ``W`` (bin ``(ph, pw)`` of RoI ``k``), ``j`` / ``i`` enumerate (sampling point, low / high
    neighbour) along y / x, and its column ``n*H*W + y*W + x`` is a feature pixel.

    The layout keeps each axis' terms together, so the entries are one broadcast of a
    (K, PH*2r, 1) by a (K, 1, PW*2r) tensor (a 7-d broadcast with the bins' rows contiguous was
    40 to 100 times slower).
    """
    if sampling_ratio <= 0:
        raise ValueError(f"the sampling matrix needs a fixed sampling_ratio > 0, got {sampling_ratio}")
    n, _, height, width = (int(s) for s in feature_shape)
    ph, pw = _pair(output_size)
    k, r2 = rois.shape[0], 2 * sampling_ratio
    index_dtype = _index_dtype(n * height * width, k * ph * pw * r2 * r2)
    offset = 0.5 if aligned else 0.0
    x1, y1, x2, y2 = (rois[:, i] * spatial_scale - offset for i in range(1, 5))
    roi_w, roi_h = x2 - x1, y2 - y1
    if not aligned:
        roi_w, roi_h = roi_w.clamp(min=1.0), roi_h.clamp(min=1.0)
    iy, wy = _axis_neighbours(_axis_samples(y1, roi_h / ph, ph, sampling_ratio), height, index_dtype)
    ix, wx = _axis_neighbours(_axis_samples(x1, roi_w / pw, pw, sampling_ratio), width, index_dtype)
    # y terms: the image's first pixel plus the row's offset, and the mean's 1 / count
    row_base = rois[:, 0].to(index_dtype)[:, None, None, None] * (height * width) + iy * width
    wy = wy / float(sampling_ratio * sampling_ratio)
    columns = row_base.reshape(k, ph * r2, 1) + ix.reshape(k, 1, pw * r2)
    values = wy.reshape(k, ph * r2, 1) * wx.reshape(k, 1, pw * r2)
    shape = (k, ph, r2, pw, r2)
    return columns.view(shape), values.view(shape)


def _source_rows(positions: Tensor, output_size: tuple[int, int], r2: int) -> Tensor:
    """Row ``(k*PH + ph)*PW + pw`` of ``W`` of the entries at flat ``positions`` of the
    (K, PH, 2r, PW, 2r) layout of :func:`sampling_entries` (``r2 = 2r``)."""
    _, pw = output_size
    per_line = pw * r2  # entries of one (k, ph, j)
    bin_x = positions.remainder(per_line).div_(r2, rounding_mode="floor")
    return positions.div_(per_line * r2, rounding_mode="floor").mul_(pw).add_(bin_x)


def sampling_matrix(columns: Tensor, values: Tensor, num_pixels: int) -> Tensor:
    """``W`` (K*PH*PW, N*H*W) as a sparse CSR tensor from the entries of
    :func:`sampling_entries` (``num_pixels = N*H*W``): ``W @ F`` is RoIAlign's output with the
    features ``F`` laid out (N*H*W, C)."""
    k, ph, r2, pw, _ = columns.shape
    rows, per_row = k * ph * pw, r2 * r2
    crow = torch.arange(0, rows * per_row + 1, per_row, dtype=columns.dtype, device=columns.device)
    by_row = (0, 1, 3, 2, 4)
    return _csr(crow, columns.permute(by_row).reshape(-1), values.permute(by_row).reshape(-1), (rows, num_pixels))


def transposed_sampling_matrix(columns: Tensor, values: Tensor, num_pixels: int) -> Tensor:
    """``W^T`` (N*H*W, K*PH*PW) as a sparse CSR tensor from the entries of
    :func:`sampling_entries`, for the gradient ``W^T @ dY``.

    The entries are ordered by column with one stable argsort of the int32 column indices; the
    row of ``W`` each came from follows from its position in the layout of
    :func:`sampling_entries`, so no row index is materialised before the sort.
    """
    k, ph, r2, pw, _ = columns.shape
    columns = columns.reshape(-1)
    order = torch.argsort(columns, stable=True)
    crow = torch.zeros(num_pixels + 1, dtype=columns.dtype, device=columns.device)
    crow[1:] = torch.bincount(columns, minlength=num_pixels).cumsum(0)
    source_rows = _source_rows(order.to(columns.dtype), (ph, pw), r2)
    return _csr(crow, source_rows, values.reshape(-1)[order], (num_pixels, k * ph * pw))


def roi_align_input_grad(
    grad_output: Tensor,
    rois: Tensor,
    feature_shape: Sequence[int],
    spatial_scale: float,
    sampling_ratio: int,
    aligned: bool = False,
    rois_per_chunk: int = ROIS_PER_CHUNK,
) -> Tensor:
    """The gradient of RoIAlign with respect to its (N, C, H, W) input: ``W^T @ dY``.

    ``grad_output`` (K, C, PH, PW); the RoIs are taken ``rois_per_chunk`` at a time, so the
    matrix never holds more than that many RoIs' entries.
    """
    n, channels, height, width = (int(s) for s in feature_shape)
    ph, pw = grad_output.shape[-2:]
    grad = grad_output.new_zeros(n * height * width, channels)
    for start in range(0, rois.shape[0], rois_per_chunk):
        chunk = slice(start, start + rois_per_chunk)
        entries = sampling_entries(rois[chunk], feature_shape, (ph, pw), spatial_scale, sampling_ratio, aligned)
        matrix = transposed_sampling_matrix(*entries, n * height * width)
        dy = grad_output[chunk].permute(0, 2, 3, 1).reshape(-1, channels)
        grad.addmm_(matrix, dy)
    return grad.view(n, height, width, channels).permute(0, 3, 1, 2).contiguous()


class _RoIAlignSparseBackward(torch.autograd.Function):
    """torchvision's RoIAlign forward; :func:`roi_align_input_grad` as the backward."""

    @staticmethod
    def forward(ctx, input: Tensor, rois: Tensor, output_size: tuple[int, int], spatial_scale: float,
                sampling_ratio: int, aligned: bool) -> Tensor:
        ctx.save_for_backward(rois)
        ctx.settings = (tuple(input.shape), spatial_scale, sampling_ratio, aligned)
        return torch.ops.torchvision.roi_align(input, rois, spatial_scale, output_size[0], output_size[1],
                                               sampling_ratio, aligned)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_output: Tensor):
        (rois,) = ctx.saved_tensors
        shape, spatial_scale, sampling_ratio, aligned = ctx.settings
        grad = roi_align_input_grad(grad_output, rois, shape, spatial_scale, sampling_ratio, aligned)
        return grad, None, None, None, None, None


def uses_sparse_backward(input: Tensor, sampling_ratio: int) -> bool:
    """Whether :func:`roi_align` takes the sparse backward: a float32 / float64 CPU input that
    needs a gradient, a fixed ``sampling_ratio > 0``, autocast off."""
    return (
        input.device.type == "cpu"
        and input.dtype in (torch.float32, torch.float64)
        and not input.is_quantized
        and sampling_ratio > 0
        and torch.is_grad_enabled()
        and input.requires_grad
        and not torch.is_autocast_enabled("cpu")
    )


def roi_align(
    input: Tensor,
    boxes: Tensor | Sequence[Tensor],
    output_size: int | tuple[int, int],
    spatial_scale: float = 1.0,
    sampling_ratio: int = -1,
    aligned: bool = False,
) -> Tensor:
    """``torchvision.ops.roi_align`` (same arguments, same output, bit for bit) whose backward is
    the sparse product of this module where :func:`uses_sparse_backward`, else torchvision's op.

    ``boxes``: (K, 5) ``[batch_index, x1, y1, x2, y2]`` or a list of per-image (L_i, 4) boxes.
    The gradient equals torchvision's up to the order of the sums (about 1e-6 relative in
    float32). No gradient flows to the boxes (as in torchvision).
    """
    if not uses_sparse_backward(input, sampling_ratio):
        return tv_ops.roi_align(input, boxes, output_size, spatial_scale, sampling_ratio, aligned)
    check_roi_boxes_shape(boxes)
    rois = boxes if isinstance(boxes, Tensor) else convert_boxes_to_roi_format(boxes)
    return _RoIAlignSparseBackward.apply(input, rois, _pair(output_size), float(spatial_scale),
                                         int(sampling_ratio), bool(aligned))
