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

Maps are kept small: one value per cell of a grid whose cell is half the smallest stride
(``min stride / 2`` network-input pixels; every level's cell edges ``(x +- 1/2) * stride`` fall on
it), cropped to the image (``ceil(h / cell)`` x ``ceil(w / cell)`` cells; the last row and column
may extend past the image). :func:`workbench.inspection.maps.map_to_pixels` spreads such a map
over the original image's pixels when it is shown.

One dict per image, maps ``(R, C)``:

- ``sigma_x``, ``sigma_y``, ``sigma_w``, ``sigma_h``: float, the chosen anchor's sigma of each
  offset coordinate (offset units; higher is more uncertain);
- ``sigma_mean``: float, their mean;
- ``log_objectness``: float, ``-0.5 * sum(beta)`` of that anchor (higher is more certain);
- ``level``: int64, the feature level of that anchor;
- ``cell_size``: float ``(2,)``, a cell's ``(height, width)`` in original-image pixels.

The detector returns them in ``DetectorOutput.raw["uncertainty_maps"]`` in evaluation mode and
records them in the trace as :data:`workbench.records.UNCERTAINTY_MAP`. :data:`RECORD_VIEWS`
declares how they are shown (with the ``sigma`` that proposals and detections carry).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor

from workbench import records as R
from workbench.methods import RecordView

COORDINATES = ("x", "y", "w", "h")
SIGMA_FIELDS = tuple(f"sigma_{c}" for c in COORDINATES)
SIGMA_MEAN = "sigma_mean"
CELL_SIZE = R.MAP_CELL_SIZE

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
    *(RecordView(R.UNCERTAINTY_MAP, "heatmap", field=f"offset_sigma_{c}", value=f"sigma_{c}",
                 layer=f"offset sigma {c}", higher="more uncertain", app=False,
                 label=f"sigma of the {c} offset of the most certain anchor, at the anchor centres")
      for c in COORDINATES),
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


def nearest_centre(num_cells: int, cell: float, stride: float, num_locations: int, device=None) -> Tensor:
    """For each map cell ``k`` (covering ``[k * cell, (k + 1) * cell)``), the anchor location
    ``x`` whose cell ``[x * stride - stride / 2, x * stride + stride / 2)`` holds the cell's
    centre, clamped to ``[0, num_locations - 1]``."""
    centres = (torch.arange(num_cells, device=device, dtype=torch.float64) + 0.5) * cell
    index = torch.floor(centres / stride + 0.5).to(torch.int64)
    return index.clamp_(0, num_locations - 1)


def _grid_cell(strides: Sequence[int]) -> float:
    """Half the greatest common divisor of the strides: every level's cell edges lie on it."""
    return math.gcd(*[int(s) for s in strides]) / 2.0


def uncertainty_maps(
    log_var_per_level: Sequence[Tensor],
    anchors_per_location: Sequence[int],
    padded_size: tuple[int, int],
    image_sizes: Sequence[tuple[int, int]],
    original_sizes: Sequence[tuple[int, int]],
) -> list[dict[str, Tensor]]:
    """Head outputs ``[(N, 4A_l, H_l, W_l)]`` of a batch -> one dict of maps per image (see the
    module docstring). ``padded_size`` is the batch's network-input size ``(H, W)``; a level's
    stride is ``padded // H_l`` (as the anchor generator computes it). ``image_sizes`` are the
    images' network-input sizes ``(h, w)`` inside it, ``original_sizes`` their sizes as stored."""
    if not log_var_per_level:
        raise ValueError("no feature levels")
    padded_h, padded_w = int(padded_size[0]), int(padded_size[1])
    with torch.no_grad():
        strides = [(padded_h // lv.shape[-2], padded_w // lv.shape[-1]) for lv in log_var_per_level]
        cell_y = _grid_cell([s[0] for s in strides])
        cell_x = _grid_cell([s[1] for s in strides])
        rows = math.ceil(padded_h / cell_y)
        cols = math.ceil(padded_w / cell_x)
        best_obj: Tensor | None = None
        for level, (lv, a, (sy, sx)) in enumerate(zip(log_var_per_level, anchors_per_location, strides)):
            log_obj, sigma = location_sigma(lv.detach().float(), a)
            ys = nearest_centre(rows, cell_y, sy, lv.shape[-2], lv.device)
            xs = nearest_centre(cols, cell_x, sx, lv.shape[-1], lv.device)
            obj_grid = log_obj[:, ys][:, :, xs]  # (N, rows, cols)
            sigma_grid = sigma[:, :, ys][:, :, :, xs]  # (N, 4, rows, cols)
            if best_obj is None:
                best_obj, best_sigma = obj_grid, sigma_grid
                best_level = torch.zeros_like(obj_grid, dtype=torch.int64)
                continue
            better = obj_grid > best_obj  # ties keep the earlier (finer) level
            best_obj = torch.where(better, obj_grid, best_obj)
            best_sigma = torch.where(better[:, None], sigma_grid, best_sigma)
            best_level = torch.where(better, torch.full_like(best_level, level), best_level)
        maps = []
        for i, ((h, w), original) in enumerate(zip(image_sizes, original_sizes)):
            r, c = math.ceil(int(h) / cell_y), math.ceil(int(w) / cell_x)
            sigma_i = best_sigma[i, :, :r, :c]
            fields = {name: sigma_i[k].clone() for k, name in enumerate(SIGMA_FIELDS)}
            fields[SIGMA_MEAN] = sigma_i.mean(dim=0)
            fields["log_objectness"] = best_obj[i, :r, :c].clone()
            fields["level"] = best_level[i, :r, :c].clone()
            fields[CELL_SIZE] = torch.tensor(
                [cell_y * float(original[0]) / float(h), cell_x * float(original[1]) / float(w)],
                dtype=torch.float32, device=sigma_i.device,
            )
            maps.append(fields)
    return maps


__all__ = [
    "CELL_SIZE",
    "COORDINATES",
    "RECORD_VIEWS",
    "SIGMA_FIELDS",
    "SIGMA_MAP_VIEW",
    "SIGMA_MEAN",
    "location_sigma",
    "nearest_centre",
    "uncertainty_maps",
]
