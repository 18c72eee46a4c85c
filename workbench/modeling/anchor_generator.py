"""Anchor generator module: per-level cell anchors laid over each feature map.

Conventions: ``sizes[l]`` and ``aspect_ratios[l]`` describe level ``l``; a level has
``A_l = len(sizes[l]) * len(aspect_ratios[l])`` anchors per location. Anchors of level ``l`` are
``(A_l * H_l * W_l, 4)`` xyxy in padded-batch pixels, ordered location-major then cell anchor
(torchvision's order), so they line up with head outputs flattened as ``(N, H, W, A, C)``.
Every image of a padded batch shares the same anchors.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor, nn

from workbench.ops import feature_strides, fpn_cell_anchors, grid_anchors


class AnchorGenerator(nn.Module):
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

    def forward(
        self,
        padded_size: tuple[int, int],
        feature_sizes: Sequence[tuple[int, int]],
        dtype: torch.dtype = torch.float32,
        device: torch.device | str = "cpu",
    ) -> list[Tensor]:
        """Anchors per level for a batch padded to ``padded_size`` (H, W).

        The stride of level ``l`` is ``(H // H_l, W // W_l)``. Returns ``[(A_l * H_l * W_l, 4)]``.
        """
        if len(feature_sizes) != self.num_levels:
            raise ValueError(f"anchor generator has {self.num_levels} levels, got {len(feature_sizes)} feature maps")
        strides = feature_strides(padded_size, feature_sizes)
        cells = fpn_cell_anchors(self.sizes, self.aspect_ratios, dtype=dtype, device=device)
        return grid_anchors(list(feature_sizes), strides, cells)
