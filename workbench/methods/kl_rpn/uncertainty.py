"""KL-RPN's uncertainty map: the predicted sigma of the box offsets, at the anchor centres.

KL-RPN's head predicts, per anchor and offset coordinate (x, y, w, h), ``beta = log(sigma**2)``
(``sigma`` in the box coder's offset units). The map shows those sigmas over the image:

- at each anchor location of each level (centre ``(x * stride, y * stride)`` in network-input
  pixels, as the anchor generator places them) it takes the anchor with the smallest
  ``sigma_x sigma_y sigma_w sigma_h`` (the largest log objectness ``-0.5 * sum(beta)``: the
  anchor KL-RPN ranks first there);
- each location is painted over the cell centred on its anchor centre,
  ``[x * stride - stride / 2, x * stride + stride / 2)`` (likewise in y), i.e. every point takes
  the location of the nearest anchor centre (points past the last centre take the last one);
- where levels overlap, the level whose anchor has the smallest sigma product wins (the same
  choice as the ranking of proposals).

Maps are stored per level (:mod:`workbench.inspection.maps`, per-level map records): one value
per anchor location of each level, as float16 (no replay reads them; float16 keeps three
significant digits of a sigma), and composed into one map only when shown. One record per image:

- ``sigma_mean_level{k}``: the chosen anchor's mean sigma of the four offset coordinates
  (offset units; higher is more uncertain);
- ``priority_level{k}``: its log objectness ``-0.5 * sum(beta)``, which picks the level where
  levels overlap;
- ``level_strides``, ``network_size``, ``network_scale``: where the locations lie.

Read through :func:`workbench.inspection.maps.as_map_record` (the trace reader does), the record
also gives the composed ``sigma_mean``, ``priority``, ``level`` and ``cell_size`` on a grid of
half the smallest stride: the map the record held before it was stored per level
(the same wherever every stride is a multiple of the smallest, as in a feature pyramid). The sigma of
each offset coordinate is kept per box (``sigma`` (P, 4) of the proposals and detections), not
as maps: four more per-level maps would double the trace (at 800 x 1333 px the tiny model has
22,323 anchor locations, 45 KB a float16 map; ``benchmarks/bench_trace_size.py``).

The detector returns them in ``DetectorOutput.raw["uncertainty_maps"]`` in evaluation mode and
records them in the trace as :data:`workbench.records.UNCERTAINTY_MAP`. :data:`RECORD_VIEWS`
declares how they are shown (with the ``sigma`` that proposals and detections carry).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from workbench import records as R
from workbench.inspection.maps import (
    LEVEL_STRIDES,
    LEVEL_SUFFIX,
    NETWORK_SCALE,
    NETWORK_SIZE,
    PRIORITY,
    LevelMaps,
    nearest_centre,
)
from workbench.methods import RecordView

COORDINATES = ("x", "y", "w", "h")
SIGMA_MEAN = "sigma_mean"
CELL_SIZE = R.MAP_CELL_SIZE
#: The stored maps' dtype (see the module docstring).
MAP_DTYPE = torch.float16

#: How KL-RPN's own records are shown, besides the two-stage ones
#: (``workbench.methods.TWO_STAGE_VIEWS``): the mean-sigma map as a heatmap and the sigma of
#: every proposal and detection as a per-box attribute.
SIGMA_MAP_VIEW = RecordView(
    R.UNCERTAINTY_MAP, "heatmap", field="offset_sigma", value=SIGMA_MEAN, layer="offset sigma",
    label="mean sigma of the box offsets (x, y, w, h) of the most certain anchor, at the anchor centres",
    higher="more uncertain", shown=True,
)
RECORD_VIEWS: tuple[RecordView, ...] = (
    SIGMA_MAP_VIEW,
    RecordView(R.PROPOSALS, "attribute", field="sigma", label="predicted sigma of the offsets (x, y, w, h)"),
    RecordView(R.DETECTIONS, "attribute", field="sigma", uncertainty=True,
               label="predicted sigma of the offsets (x, y, w, h) of the proposal it was refined from"),
)


def location_sigma(log_var: Tensor, num_anchors: int) -> tuple[Tensor, Tensor]:
    """One level's ``log_var`` (N, 4A, H, W) -> ``(log_objectness (N, H, W), sigma (N, 4, H, W))``
    of the anchor with the largest ``-0.5 * sum(beta)`` at each location."""
    n, channels, height, width = log_var.shape
    if channels != 4 * num_anchors:
        raise ValueError(f"log_var has {channels} channels, expected 4 x {num_anchors} anchors")
    per_anchor = log_var.view(n, num_anchors, 4, height, width)
    log_objectness, best = (-0.5 * per_anchor.sum(dim=2)).max(dim=1)  # (N, H, W)
    index = best[:, None, None].expand(n, 1, 4, height, width)
    beta = per_anchor.gather(1, index)[:, 0]  # (N, 4, H, W)
    return log_objectness, torch.exp(0.5 * beta)


def shown_locations(size: int, stride: float, num_locations: int) -> int:
    """How many anchor locations of a level (from the first) the composed map of an image of
    ``size`` network-input pixels can read: a cell centre of the display grid (cell at most
    ``stride / 2``) lies at most ``stride / 4`` past the image, so its nearest location is at
    most ``floor(size / stride + 3/4)``. The stored map keeps these, not the locations over the
    rest of the batch's padding."""
    return min(num_locations, int(size / stride + 0.75) + 1)


def uncertainty_maps(
    log_var_per_level: Sequence[Tensor],
    anchors_per_location: Sequence[int],
    padded_size: tuple[int, int],
    image_sizes: Sequence[tuple[int, int]],
    original_sizes: Sequence[tuple[int, int]],
) -> list[LevelMaps]:
    """Head outputs ``[(N, 4A_l, H_l, W_l)]`` of a batch -> one per-level map record per image
    (see the module docstring). ``padded_size`` is the batch's network-input size ``(H, W)``; a
    level's stride is ``padded // H_l`` (as the anchor generator computes it). ``image_sizes``
    are the images' network-input sizes ``(h, w)`` inside it, ``original_sizes`` their sizes as
    stored."""
    if not log_var_per_level:
        raise ValueError("no feature levels")
    padded_h, padded_w = int(padded_size[0]), int(padded_size[1])
    with torch.no_grad():
        strides = [(padded_h // lv.shape[-2], padded_w // lv.shape[-1]) for lv in log_var_per_level]
        per_level = [location_sigma(lv.detach().float(), a) for lv, a in zip(log_var_per_level, anchors_per_location)]
        maps = []
        for i, ((h, w), original) in enumerate(zip(image_sizes, original_sizes)):
            fields: dict[str, Tensor] = {}
            for level, ((log_obj, sigma), (sy, sx)) in enumerate(zip(per_level, strides)):
                rows = shown_locations(int(h), sy, log_obj.shape[-2])
                cols = shown_locations(int(w), sx, log_obj.shape[-1])
                fields[f"{SIGMA_MEAN}{LEVEL_SUFFIX}{level}"] = sigma[i, :, :rows, :cols].mean(dim=0).to(MAP_DTYPE)
                fields[f"{PRIORITY}{LEVEL_SUFFIX}{level}"] = log_obj[i, :rows, :cols].to(MAP_DTYPE)
            fields[LEVEL_STRIDES] = torch.tensor(strides, dtype=torch.float64)
            fields[NETWORK_SIZE] = torch.tensor([int(h), int(w)], dtype=torch.int64)
            fields[NETWORK_SCALE] = torch.tensor([float(original[0]) / float(h), float(original[1]) / float(w)],
                                                 dtype=torch.float64)
            maps.append(LevelMaps(fields))
    return maps


__all__ = [
    "CELL_SIZE",
    "COORDINATES",
    "MAP_DTYPE",
    "RECORD_VIEWS",
    "SIGMA_MAP_VIEW",
    "SIGMA_MEAN",
    "location_sigma",
    "nearest_centre",
    "shown_locations",
    "uncertainty_maps",
]
