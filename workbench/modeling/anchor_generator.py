"""Anchor generator module: per-level cell anchors laid over each feature map.

Conventions: ``sizes[l]`` and ``aspect_ratios[l]`` describe level ``l``; a level has
``A_l = len(sizes[l]) * len(aspect_ratios[l])`` anchors per location. Anchors of level ``l`` are
``(A_l * H_l * W_l, 4)`` xyxy in padded-batch pixels, ordered location-major then cell anchor
(torchvision's order), so they line up with head outputs flattened as ``(N, H, W, A, C)``.
Every image of a padded batch shares the same anchors.

:class:`Anchors` is the call form every anchor generator keeps (this module's FPN anchors, SSD's
default boxes, RefineDet's one-size anchors, YOLOv3's anchor shapes), so the RPN and the dense
assembly take any of them.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor, nn

from workbench.ops import feature_strides, fpn_cell_anchors, grid_anchors


class Anchors(nn.Module):
    """An anchor generator: ``generator(padded_size, feature_sizes, dtype=torch.float32,
    device="cpu") -> [per level (H_l W_l A_l, 4)]`` xyxy in the pixels of a batch padded to
    ``padded_size`` (H, W), one level per feature map of size ``(H_l, W_l)``. A subclass gives
    :meth:`num_anchors_per_location` (``A_l`` per level) and :meth:`anchors`; the number of
    feature maps is checked here."""

    def num_anchors_per_location(self) -> list[int]:
        raise NotImplementedError(f"{type(self).__name__} must implement num_anchors_per_location()")

    def anchors(self, padded_size: tuple[int, int], feature_sizes: Sequence[tuple[int, int]], dtype: torch.dtype,
                device: torch.device | str) -> list[Tensor]:
        """The anchors of each level (the feature maps' count already checked)."""
        raise NotImplementedError(f"{type(self).__name__} must implement anchors()")

    def forward(
        self,
        padded_size: tuple[int, int],
        feature_sizes: Sequence[tuple[int, int]],
        dtype: torch.dtype = torch.float32,
        device: torch.device | str = "cpu",
    ) -> list[Tensor]:
        levels = len(self.num_anchors_per_location())
        if len(feature_sizes) != levels:
            raise ValueError(f"{type(self).__name__} has {levels} anchor levels, got {len(feature_sizes)} feature maps")
        return self.anchors(padded_size, feature_sizes, dtype, device)


class AnchorGenerator(Anchors):
    """Anchors for a list of feature maps; holds no tensors, only the anchor shapes."""

    def __init__(self, sizes: Sequence[Sequence[float]], aspect_ratios: Sequence[Sequence[float]]) -> None:
        super().__init__()
        if len(sizes) != len(aspect_ratios):
            raise ValueError(f"{len(sizes)} levels of anchor sizes but {len(aspect_ratios)} of aspect ratios")
        self.sizes = tuple(tuple(float(s) for s in level) for level in sizes)
        self.aspect_ratios = tuple(tuple(float(r) for r in level) for level in aspect_ratios)

    @property
    def num_levels(self) -> int:
        return len(self.sizes)

    def num_anchors_per_location(self) -> list[int]:
        """``A_l`` per level."""
        return [len(s) * len(r) for s, r in zip(self.sizes, self.aspect_ratios)]

    def anchors(self, padded_size: tuple[int, int], feature_sizes: Sequence[tuple[int, int]], dtype: torch.dtype,
                device: torch.device | str) -> list[Tensor]:
        """The stride of level ``l`` is ``(H // H_l, W // W_l)``; ``[(A_l * H_l * W_l, 4)]``."""
        strides = feature_strides(padded_size, feature_sizes)
        cells = fpn_cell_anchors(self.sizes, self.aspect_ratios, dtype=dtype, device=device)
        return grid_anchors(list(feature_sizes), strides, cells)
