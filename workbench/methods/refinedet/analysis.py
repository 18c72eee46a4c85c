"""Arrays behind RefineDet's figures, read from its saved traces (see
:mod:`workbench.methods.refinedet` for the records):

- :func:`anchor_arrays`: per anchor of one image, the anchor, its refined box, the ARM's object
  probability and the filter mask;
- :func:`most_object_like`: the ``k`` anchors the ARM finds most object-like, before and after
  refinement (the anchor-refinement figure);
- :func:`detection_sources`: for each detection its original anchor, its refined anchor and its
  box (the detection-sources figure);
- :func:`matched_anchor_ious`: the IoU with their matched GT of the anchors before and after
  refinement (the IoU-shift histogram);
- :func:`filtered_maps`: the filtered-share maps of one image, per level and their mean;
- :func:`anchor_statistics` (with :func:`gt_boxes_by_image`): over a split, the mean IoU of matched anchors with their GT before
  and after refinement and the share of anchors the filter removes.

Boxes are in original-image pixels, as the traces hold them.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor

from workbench import records as R
from workbench.methods.refinedet.model import spread_to
from workbench.modeling.assignment import SSDMatcher
from workbench.ops import box_iou
from workbench.ops.boxes import pairwise_iou


def _records(trace: Any) -> Mapping[str, Mapping[str, Tensor]]:
    return trace.records if hasattr(trace, "records") else trace


def anchor_arrays(trace: Any) -> dict[str, Tensor]:
    """``anchors`` (A, 4), ``refined`` (A, 4), ``objectness`` (A,), ``filtered`` (A,) bool and
    ``levels`` (A,) of one traced image (float32; the trace stores refined boxes and
    probabilities as float16)."""
    records = _records(trace)
    anchors, arm = records[R.ANCHORS], records[R.REFINED_ANCHORS]
    return {
        "anchors": anchors[R.BOXES].float(),
        "refined": arm[R.BOXES].float(),
        "objectness": arm[R.SCORES].float(),
        "filtered": arm["filtered"].bool(),
        "levels": anchors[R.LEVELS],
    }


def most_object_like(trace: Any, k: int = 30) -> dict[str, Tensor]:
    """The ``k`` anchors with the highest ARM object probability: ``anchors``, ``refined``,
    ``objectness`` and ``anchor_index``, best first."""
    arrays = anchor_arrays(trace)
    objectness, index = arrays["objectness"].topk(min(k, int(arrays["objectness"].shape[0])))
    return {"anchors": arrays["anchors"][index], "refined": arrays["refined"][index], "objectness": objectness,
            "anchor_index": index}


def detection_sources(trace: Any, max_detections: int | None = 20) -> dict[str, Tensor]:
    """For the first ``max_detections`` detections (``None``: all): ``anchors`` (the anchor
    each came from), ``refined`` (its refined anchor, the ODM's reference), ``boxes``,
    ``labels``, ``scores``."""
    records = _records(trace)
    det = records[R.DETECTIONS]
    n = int(det[R.SCORES].shape[0]) if max_detections is None else min(max_detections, int(det[R.SCORES].shape[0]))
    index = det["anchor_index"][:n].long()
    return {
        "anchors": records[R.ANCHORS][R.BOXES][index].float(),
        "refined": records[R.DETECTION_ANCHORS][R.BOXES][:n].float(),
        "boxes": det[R.BOXES][:n].float(),
        "labels": det[R.LABELS][:n],
        "scores": det[R.SCORES][:n].float(),
    }


def matched_anchor_ious(anchors: Tensor, refined: Tensor, gt_boxes: Tensor, threshold: float = 0.5) -> tuple[Tensor, Tensor]:
    """The anchors the ARM is trained on as positives (SSD matching of the original anchors:
    each GT's best anchor and every anchor with IoU >= ``threshold``) -> (IoU of each anchor
    with its matched GT, IoU of its refined box with the same GT)."""
    gt_boxes = torch.as_tensor(gt_boxes, dtype=torch.float32).reshape(-1, 4)
    if gt_boxes.shape[0] == 0:
        return torch.zeros(0), torch.zeros(0)
    assignment = SSDMatcher(threshold)(anchors.float(), gt_boxes)
    positive = torch.where(assignment.labels > 0)[0]
    matched = gt_boxes[assignment.matched_gt[positive]]
    before = pairwise_iou(anchors[positive].float(), matched)
    after = pairwise_iou(refined[positive].float(), matched).nan_to_num(0.0)
    return before, after


def filtered_maps(trace: Any) -> tuple[dict[str, Tensor], Tensor]:
    """The filtered-share maps of one image (``"all levels"`` then ``"level k"``), all on the
    finest grid (a level stored at its own resolution is spread over it: each fine cell takes
    the location whose cell holds its centre), and that grid's cell size ``(height, width)`` in
    original pixels."""
    record = _records(trace)[R.FILTERED_ANCHOR_MAP]
    maps = {"all levels": record["share"]}
    level = 0
    while f"share_level{level}" in record:
        maps[f"level {level}"] = spread_to(record[f"share_level{level}"], tuple(record["share"].shape))
        level += 1
    return maps, record[R.MAP_CELL_SIZE]



@dataclass(frozen=True)
class AnchorStatistics:
    """Over the images of a split: ``images``, ``matched`` (anchors matched to a GT),
    ``mean_iou_before`` / ``mean_iou_after`` (their mean IoU with their GT, anchor and refined
    anchor), ``share_improved`` (matched anchors whose refined IoU is higher) and
    ``share_filtered`` (anchors the filter removes, of all anchors)."""

    images: int
    matched: int
    mean_iou_before: float
    mean_iou_after: float
    share_improved: float
    share_filtered: float


def anchor_statistics(traces: Iterable[Any], gt_by_image: Mapping[int, Any], threshold: float = 0.5) -> AnchorStatistics:
    """:class:`AnchorStatistics` of ``traces`` (each with ``image_id``), with ground truth
    ``image_id -> (G, 4)`` boxes in original pixels."""
    befores, afters, filtered, total, images = [], [], 0, 0, 0
    for trace in traces:
        arrays = anchor_arrays(trace)
        before, after = matched_anchor_ious(arrays["anchors"], arrays["refined"], gt_by_image[int(trace.image_id)],
                                            threshold)
        befores.append(before)
        afters.append(after)
        filtered += int(arrays["filtered"].sum())
        total += int(arrays["filtered"].numel())
        images += 1
    before = torch.cat(befores) if befores else torch.zeros(0)
    after = torch.cat(afters) if afters else torch.zeros(0)
    n = int(before.numel())
    return AnchorStatistics(
        images=images,
        matched=n,
        mean_iou_before=float(before.mean()) if n else float("nan"),
        mean_iou_after=float(after.mean()) if n else float("nan"),
        share_improved=float((after > before).float().mean()) if n else float("nan"),
        share_filtered=filtered / total if total else float("nan"),
    )


def gt_boxes_by_image(dataset: Any) -> dict[int, np.ndarray]:
    """``image_id -> (G, 4)`` ground-truth boxes of a dataset (its records), crowd / difficult
    boxes left out."""
    return {int(r.image_id): np.asarray(r.boxes)[~np.asarray(r.ignore, dtype=bool)] for r in dataset.records}


def split_ious(traces: Iterable[Any], gt_by_image: Mapping[int, Any], threshold: float = 0.5) -> tuple[np.ndarray, np.ndarray]:
    """:func:`matched_anchor_ious` pooled over ``traces``: (before, after) as NumPy arrays."""
    befores, afters = [], []
    for trace in traces:
        arrays = anchor_arrays(trace)
        before, after = matched_anchor_ious(arrays["anchors"], arrays["refined"], gt_by_image[int(trace.image_id)],
                                            threshold)
        befores.append(before.numpy())
        afters.append(after.numpy())
    return (np.concatenate(befores) if befores else np.zeros(0), np.concatenate(afters) if afters else np.zeros(0))


__all__ = [
    "AnchorStatistics",
    "anchor_arrays",
    "anchor_statistics",
    "detection_sources",
    "filtered_maps",
    "gt_boxes_by_image",
    "matched_anchor_ious",
    "most_object_like",
    "split_ious",
]
