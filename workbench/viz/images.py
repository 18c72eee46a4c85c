"""One image with its layers: ground truth, detections, proposals, suppressed boxes, uncertainty.

Each layer is optional and is one or two traces whose ``meta["layer"]`` is one of
:data:`LAYERS`; ``layers`` says which are visible (hidden layers stay in the figure, so a widget
can show them again without rebuilding it). Inputs are mappings of tensors or arrays shaped like
the trace records of :mod:`workbench.modeling.trace` (``detections``, ``rpn_proposals``,
``rcnn_nms``, ``uncertainty_map``), so one image's records plug in directly
(:func:`trace_image_figure`).
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from typing import Any

import numpy as np
import plotly.graph_objects as go

from workbench.viz.boxes import box_layer, class_name, fit_axes, image_layer, to_boxes, to_image, to_numpy
from workbench.viz.maps import map_layer
from workbench.viz.nms import kept_detections, rerun_nms, suppression_layers

#: The layers of an image figure, bottom to top.
LAYERS = ("uncertainty", "proposals", "suppressed", "detections", "gt")
GT_COLOR = "#00ff7f"
DETECTION_COLOR = "#ffd700"
PROPOSAL_COLOR = "#9467bd"


def _above(record: Mapping[str, Any], threshold: float | None) -> np.ndarray:
    """Row indices of ``record`` whose score is at least ``threshold`` (all rows for None)."""
    scores = to_numpy(record["scores"])
    return np.arange(len(scores)) if threshold is None else np.flatnonzero(scores >= threshold)


def gt_layer(gt: Mapping[str, Any], class_names: Sequence[str] | None = None, visible: bool = True) -> go.Scatter:
    """Ground-truth boxes (``boxes``, optional ``labels``)."""
    boxes = to_boxes(gt["boxes"])
    labels = to_numpy(gt["labels"], dtype=np.int64) if gt.get("labels") is not None else None
    hover = [f"GT #{i}: {class_name(labels[i], class_names)}" if labels is not None else f"GT #{i}"
             for i in range(len(boxes))]
    return box_layer(boxes, name="ground truth", layer="gt", color=GT_COLOR, hover=hover, width=2.0, visible=visible)


def detections_layer(
    detections: Mapping[str, Any],
    *,
    score_threshold: float | None = None,
    class_names: Sequence[str] | None = None,
    visible: bool = True,
) -> go.Scatter:
    """Detections (``boxes``, ``scores``, ``labels``) with ``score >= score_threshold``."""
    rows = _above(detections, score_threshold)
    scores = to_numpy(detections["scores"])
    labels = to_numpy(detections["labels"], dtype=np.int64)
    hover = [f"{class_name(labels[i], class_names)} {scores[i]:.3f}" for i in rows]
    return box_layer(
        to_boxes(detections["boxes"])[rows], name="detections", layer="detections", color=DETECTION_COLOR,
        hover=hover, width=2.0, visible=visible, extra_meta={"index": rows.tolist()},
    )


def _sigma_text(sigma: np.ndarray | None, i: int) -> str:
    if sigma is None:
        return ""
    return "<br>sigma " + " ".join(f"{c}={v:.3f}" for c, v in zip("xywh", sigma[i]))


def proposals_layer(
    proposals: Mapping[str, Any], *, score_threshold: float | None = None, visible: bool = True
) -> go.Scatter:
    """Proposals (``boxes``, ``scores``, optional ``sigma`` (P, 4)) with ``score >= score_threshold``."""
    rows = _above(proposals, score_threshold)
    scores = to_numpy(proposals["scores"])
    sigma = to_numpy(proposals["sigma"]) if proposals.get("sigma") is not None else None
    hover = [f"proposal #{i}: score {scores[i]:.3f}{_sigma_text(sigma, i)}" for i in rows]
    return box_layer(
        to_boxes(proposals["boxes"])[rows], name="proposals", layer="proposals", color=PROPOSAL_COLOR,
        hover=hover, width=0.8, opacity=0.7, visible=visible, extra_meta={"index": rows.tolist()},
    )


def image_figure(
    image: Any = None,
    *,
    image_size: tuple[int, int] | None = None,
    gt: Mapping[str, Any] | None = None,
    detections: Mapping[str, Any] | None = None,
    proposals: Mapping[str, Any] | None = None,
    nms: Mapping[str, Any] | None = None,
    uncertainty: Any = None,
    score_threshold: float = 0.5,
    proposal_threshold: float | None = None,
    class_names: Sequence[str] | None = None,
    layers: Collection[str] = LAYERS,
    uncertainty_name: str = "uncertainty",
    title: str | None = None,
    height: int = 640,
) -> go.Figure:
    """The image with every layer given.

    - ``gt``: ``boxes`` (G, 4), optional ``labels``;
    - ``detections``: ``boxes``, ``scores``, ``labels``; shown with ``score >= score_threshold``;
    - ``proposals``: ``boxes``, ``scores`` (optional ``sigma``); ``score >= proposal_threshold``;
    - ``nms``: a class-wise NMS record; its suppressed boxes with ``score >= score_threshold``,
      each linked to its suppressor;
    - ``uncertainty``: an ``(H, W)`` map drawn as a heatmap under the boxes.

    ``layers`` lists the visible layers (see :data:`LAYERS`). ``image_size`` ``(h, w)`` sets the
    canvas when there is no image; ``height`` the figure's height in pixels.
    """
    unknown = set(layers) - set(LAYERS)
    if unknown:
        raise ValueError(f"unknown layers {sorted(unknown)}; known: {list(LAYERS)}")
    fig = go.Figure()
    if image is not None:
        fig.add_trace(image_layer(image))
    if uncertainty is not None:
        fig.add_trace(map_layer(uncertainty, name=uncertainty_name, visible="uncertainty" in layers))
    if proposals is not None:
        fig.add_trace(proposals_layer(proposals, score_threshold=proposal_threshold, visible="proposals" in layers))
    if nms is not None:
        fig.add_traces(suppression_layers(nms, min_score=score_threshold, class_names=class_names,
                                          visible="suppressed" in layers))
    if detections is not None:
        fig.add_trace(detections_layer(detections, score_threshold=score_threshold, class_names=class_names,
                                       visible="detections" in layers))
    if gt is not None:
        fig.add_trace(gt_layer(gt, class_names, visible="gt" in layers))
    rows, cols = _canvas_size(image, image_size, uncertainty, (gt, detections, proposals))
    fig.update_layout(title=title, legend=dict(orientation="h", y=-0.05), margin=dict(l=10, r=10, t=50, b=10),
                      height=height)
    return fit_axes(fig, rows, cols)


def _canvas_size(image: Any, image_size: tuple[int, int] | None, uncertainty: Any, box_sets) -> tuple[int, int]:
    if image is not None:
        h, w = to_image(image).shape[:2]
        return h, w
    if image_size is not None:
        return int(image_size[0]), int(image_size[1])
    if uncertainty is not None:
        h, w = to_numpy(uncertainty).shape
        return h, w
    boxes = np.concatenate([to_boxes(b["boxes"]) for b in box_sets if b is not None] + [np.ones((1, 4))])
    return int(np.ceil(boxes[:, 3].max())), int(np.ceil(boxes[:, 2].max()))


def trace_image_figure(
    records: Mapping[str, Mapping[str, Any]],
    *,
    image: Any = None,
    image_size: tuple[int, int] | None = None,
    gt: Mapping[str, Any] | None = None,
    score_threshold: float = 0.5,
    proposal_threshold: float | None = None,
    nms_iou: float | None = None,
    max_detections: int | None = None,
    class_names: Sequence[str] | None = None,
    layers: Collection[str] = LAYERS,
    uncertainty_field: str = "log_objectness",
    title: str | None = None,
) -> go.Figure:
    """:func:`image_figure` of one image's trace records (names of :mod:`workbench.modeling.trace`).

    With ``nms_iou`` the final class-wise NMS (``rcnn_nms``) is run again on its recorded input
    at that threshold and the detections are its kept boxes (at most ``max_detections``);
    otherwise the recorded ``detections`` and ``rcnn_nms`` are shown.
    """
    nms = records.get("rcnn_nms")
    detections = records.get("detections")
    if nms_iou is not None and nms is not None:
        nms = rerun_nms(nms, nms_iou)
        detections = kept_detections(nms, max_detections=max_detections)
    maps = records.get("uncertainty_map")
    uncertainty = maps.get(uncertainty_field) if maps is not None else None
    return image_figure(
        image, image_size=image_size, gt=gt, detections=detections, proposals=records.get("rpn_proposals"),
        nms=nms, uncertainty=uncertainty, score_threshold=score_threshold, proposal_threshold=proposal_threshold,
        class_names=class_names, layers=layers, uncertainty_name=uncertainty_field.replace("_", " "), title=title,
    )


def layer_traces(fig: go.Figure, layer: str) -> list[Any]:
    """The traces of ``fig`` that draw ``layer``."""
    return [trace for trace in fig.data if (trace.meta or {}).get("layer") == layer]
