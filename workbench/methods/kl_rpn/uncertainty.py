"""KL-RPN uncertainty maps: per pixel, how certain the RPN's most confident anchor there is.

For every feature location of every level the map takes the anchor with the largest
``log_objectness = -0.5 * sum(beta)`` (``beta = log(sigma**2)`` of its 4 offsets), i.e. the
smallest ``prod sigma``. Each level's map is spread over the padded network input (each cell
covers its ``stride x stride`` block), cropped to the image, reduced over levels by the maximum
(the most confident anchor of any level), and resized bilinearly to the original image size.

One dict per image, every map ``(H, W)`` in the original image's pixels:

- ``log_objectness``: float, ``-0.5 * sum(beta)`` of that anchor; higher is more certain;
  within ``[-2 * log_var_max, -2 * log_var_min]``;
- ``sigma_product``: float, ``sigma_x sigma_y sigma_w sigma_h = exp(-log_objectness)`` (> 0);
- ``level``: int64, the index of the feature level that gave the maximum (nearest resize).

The detector returns them in ``DetectorOutput.raw["uncertainty_maps"]`` in evaluation mode and
records them in the trace as ``uncertainty_map``.
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor


def location_log_objectness(log_var: Tensor, num_anchors: int) -> Tensor:
    """One level's ``log_var`` (N, 4A, H, W) -> the best anchor's ``-0.5 * sum(beta)`` (N, H, W)."""
    n, channels, height, width = log_var.shape
    if channels != 4 * num_anchors:
        raise ValueError(f"log_var has {channels} channels, expected 4 x {num_anchors} anchors")
    per_anchor = -0.5 * log_var.view(n, num_anchors, 4, height, width).sum(dim=2)
    return per_anchor.max(dim=1).values


def spread_to_input(level_map: Tensor, padded_size: tuple[int, int]) -> Tensor:
    """``(N, H_l, W_l)`` -> ``(N, H_pad, W_pad)``: each cell repeated over the block it covers."""
    return F.interpolate(level_map[:, None], size=tuple(padded_size), mode="nearest")[:, 0]


def uncertainty_maps(
    log_var_per_level: Sequence[Tensor],
    anchors_per_location: Sequence[int],
    padded_size: tuple[int, int],
    image_sizes: Sequence[tuple[int, int]],
    original_sizes: Sequence[tuple[int, int]],
) -> list[dict[str, Tensor]]:
    """Head outputs ``[(N, 4A_l, H_l, W_l)]`` of a batch -> one dict of ``(H_i, W_i)`` maps per
    image (see the module docstring). ``image_sizes`` are network-input sizes ``(h, w)`` inside
    ``padded_size``; ``original_sizes`` the sizes the maps are resized to."""
    with torch.no_grad():
        spread = [
            spread_to_input(location_log_objectness(lv.detach(), a), padded_size)
            for lv, a in zip(log_var_per_level, anchors_per_location)
        ]
        stacked = torch.stack(spread, dim=1)  # (N, L, H_pad, W_pad)
        best, level = stacked.max(dim=1)
        maps = []
        for i, ((h, w), original) in enumerate(zip(image_sizes, original_sizes)):
            size = (int(original[0]), int(original[1]))
            crop = best[i, :h, :w][None, None]
            log_obj = F.interpolate(crop, size=size, mode="bilinear", align_corners=False)[0, 0]
            level_i = F.interpolate(level[i, :h, :w][None, None].float(), size=size, mode="nearest")[0, 0]
            maps.append(
                {
                    "log_objectness": log_obj,
                    "sigma_product": torch.exp(-log_obj),
                    "level": level_i.to(torch.int64),
                }
            )
    return maps
