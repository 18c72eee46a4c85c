"""Multi-scale RoIAlign whose CPU backward is :func:`workbench.ops.roi_align`'s sparse product.

:class:`SparseGradMultiScaleRoIAlign` is torchvision's ``MultiScaleRoIAlign`` with one change:
each level is pooled by :func:`workbench.ops.roi_align` instead of ``torchvision.ops.roi_align``.
The scales (inferred from the feature and image sizes), the level of each box (FPN paper,
equation (1), torchvision's ``LevelMapper``), the RoI format and the assembly of the levels'
outputs are torchvision's own, so the output is torchvision's bit for bit; only the input
gradient is summed in another order (see :mod:`workbench.ops.roi_align`). On the CPU
torchvision's backward took 796 ms of a 1,636 ms IoU-uniform R-CNN ``tiny`` training step and
180 ms of 932 ms for the Faster R-CNN baseline (profiled); the pooler's backward at 1000 RoIs
on the ``tiny`` FPN takes 118 ms against torchvision's 844 ms (``benchmarks/bench_roi_align.py``).
"""

from __future__ import annotations

import torch
import torchvision
from torch import Tensor
from torchvision.ops import MultiScaleRoIAlign
from torchvision.ops.poolers import _convert_to_roi_format, _filter_input, _setup_scales

from workbench.ops import roi_align

__all__ = ["SparseGradMultiScaleRoIAlign"]


class SparseGradMultiScaleRoIAlign(MultiScaleRoIAlign):
    """``torchvision.ops.MultiScaleRoIAlign`` (same arguments) pooling with
    :func:`workbench.ops.roi_align`; under ONNX tracing it is torchvision's module unchanged."""

    def forward(self, x: dict[str, Tensor], boxes: list[Tensor], image_shapes: list[tuple[int, int]]) -> Tensor:
        if torchvision._is_tracing():
            return super().forward(x, boxes, image_shapes)
        features = _filter_input(x, self.featmap_names)
        if self.scales is None or self.map_levels is None:
            self.scales, self.map_levels = _setup_scales(features, image_shapes, self.canonical_scale,
                                                         self.canonical_level)
        rois = _convert_to_roi_format(boxes)
        if len(features) == 1:
            return roi_align(features[0], rois, self.output_size, self.scales[0], self.sampling_ratio)
        levels = self.map_levels(boxes)
        first = features[0]
        result = torch.zeros((rois.shape[0], first.shape[1], *self.output_size), dtype=first.dtype,
                             device=first.device)
        for level, (feature, scale) in enumerate(zip(features, self.scales)):
            in_level = torch.where(levels == level)[0]
            pooled = roi_align(feature, rois[in_level], self.output_size, scale, self.sampling_ratio)
            result[in_level] = pooled.to(result.dtype)
        return result
