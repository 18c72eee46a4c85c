"""NMS decisions: suppressed boxes linked to their suppressors, and a threshold explorer.

Inputs are NMS records as the trace stores them (:mod:`workbench.modeling.trace`): a mapping with
``boxes`` (N, 4), ``scores`` (N,), ``idxs`` (N,) (class or level), ``keep`` (K,),
``suppressed_by`` (N,) (-1 for kept boxes), ``suppressor_iou`` (N,) and ``iou_threshold``.
Tensors or arrays both work.

:func:`nms_slider_figure` runs a fresh NMS (:func:`workbench.ops.nms_with_ledger`, whose keep set
is ``torchvision.ops.batched_nms``'s) over the same input boxes at every threshold of a slider;
the kept trace of each step carries its keep indices in ``meta["keep"]``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import plotly.graph_objects as go
import torch

from workbench.ops import nms_with_ledger
from workbench.viz.boxes import box_layer, canvas_size, class_name, fit_axes, image_layer, to_boxes, to_numpy

KEPT_COLOR = "#2ca02c"
SUPPRESSED_COLOR = "#d62728"
LINK_COLOR = "#ff7f0e"
#: Slider steps of :func:`nms_slider_figure` by default.
DEFAULT_THRESHOLDS = (0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)


def group_text(group: int, group_kind: str, class_names: Sequence[str] | None) -> str:
    """``"circle"`` for a class group, ``"level 2"`` for an FPN level group."""
    if group_kind == "class":
        return class_name(int(group), class_names)
    return f"{group_kind} {int(group)}"


def rerun_nms(record: Mapping[str, Any], iou_threshold: float) -> dict[str, torch.Tensor]:
    """The NMS record of the same input boxes at another ``iou_threshold`` (a fresh ledger)."""
    boxes = torch.as_tensor(record["boxes"])
    scores = torch.as_tensor(record["scores"])
    idxs = record.get("idxs")
    idxs = None if idxs is None else torch.as_tensor(idxs)
    ledger = nms_with_ledger(boxes, scores, iou_threshold, idxs)
    out = {"boxes": boxes, "scores": scores, **ledger.to_dict()}
    if idxs is not None:
        out["idxs"] = idxs
    return out


def nms_input(record: Mapping[str, Any], *, min_score: float | None = None, top_k: int | None = None) -> dict[str, Any]:
    """The input boxes of an NMS record restricted to ``scores >= min_score`` and then the
    ``top_k`` best scores (a stable sort, so ties keep their order). Returns ``boxes``,
    ``scores``, ``idxs`` (when recorded) and ``index``: the positions in the record."""
    scores = torch.as_tensor(record["scores"])
    index = torch.arange(scores.shape[0])
    if min_score is not None:
        index = index[scores[index] >= min_score]
    if top_k is not None and index.numel() > top_k:
        order = torch.sort(scores[index], descending=True, stable=True).indices[:top_k]
        index = torch.sort(index[order]).values
    out = {"boxes": torch.as_tensor(record["boxes"])[index], "scores": scores[index], "index": index}
    if record.get("idxs") is not None:
        out["idxs"] = torch.as_tensor(record["idxs"])[index]
    return out


def _suppressed_rows(record: Mapping[str, Any], min_score: float | None) -> np.ndarray:
    suppressed_by = to_numpy(record["suppressed_by"], dtype=np.int64)
    rows = np.flatnonzero(suppressed_by >= 0)
    if min_score is not None:
        rows = rows[to_numpy(record["scores"])[rows] >= min_score]
    return rows


def _suppression_texts(
    record: Mapping[str, Any], rows: np.ndarray, group_kind: str, class_names: Sequence[str] | None
) -> list[str]:
    scores = to_numpy(record["scores"])
    by = to_numpy(record["suppressed_by"], dtype=np.int64)
    iou = to_numpy(record["suppressor_iou"])
    threshold = float(to_numpy(record["iou_threshold"]))
    idxs = to_numpy(record["idxs"], dtype=np.int64) if record.get("idxs") is not None else None
    texts = []
    for j in rows:
        group = f"{group_text(idxs[j], group_kind, class_names)}<br>" if idxs is not None else ""
        texts.append(
            f"box #{j} suppressed by #{by[j]}<br>{group}IoU {iou[j]:.3f} > {threshold:.2f}<br>"
            f"score {scores[j]:.3f} (suppressor {scores[by[j]]:.3f})"
        )
    return texts


def link_coordinates(boxes: np.ndarray, rows: np.ndarray, targets: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Segments from the centre of each box ``rows[i]`` to the centre of ``targets[i]``; 3
    values per segment (start, end, gap)."""
    centres = np.stack([(boxes[:, 0] + boxes[:, 2]) / 2, (boxes[:, 1] + boxes[:, 3]) / 2], axis=1)
    start, end = centres[rows], centres[targets]
    gap = np.full((len(rows), 1), np.nan)
    xs = np.concatenate([start[:, :1], end[:, :1], gap], axis=1).reshape(-1)
    ys = np.concatenate([start[:, 1:], end[:, 1:], gap], axis=1).reshape(-1)
    return xs, ys


def suppression_layers(
    record: Mapping[str, Any],
    *,
    min_score: float | None = None,
    group_kind: str = "class",
    class_names: Sequence[str] | None = None,
    visible: bool = True,
    name: str = "suppressed",
) -> list[go.Scatter]:
    """Two traces (layer ``suppressed``): the suppressed boxes with ``score >= min_score``, and
    a line from each to the box that suppressed it. Hover: both indices, IoU and scores."""
    rows = _suppressed_rows(record, min_score)
    boxes = to_boxes(record["boxes"])
    texts = _suppression_texts(record, rows, group_kind, class_names)
    targets = to_numpy(record["suppressed_by"], dtype=np.int64)[rows]
    outline = box_layer(
        boxes[rows], name=name, layer="suppressed", color=SUPPRESSED_COLOR, hover=texts, width=1.0,
        dash="dot", visible=visible, extra_meta={"index": rows.tolist()},
    )
    xs, ys = link_coordinates(boxes, rows, targets)
    links = go.Scatter(
        x=xs, y=ys, mode="lines+markers", name=f"{name}: link to suppressor", legendgroup="suppressed",
        line=dict(color=LINK_COLOR, width=1), marker=dict(size=[4, 7, 0] * len(rows), color=LINK_COLOR),
        hovertext=[t for t in texts for _ in range(3)], hoverinfo="text", visible=visible,
        meta={"layer": "suppressed", "role": "links", "pairs": [[int(j), int(k)] for j, k in zip(rows, targets)]},
    )
    return [outline, links]


def kept_layer(
    record: Mapping[str, Any],
    *,
    group_kind: str = "class",
    class_names: Sequence[str] | None = None,
    visible: bool = True,
    name: str = "kept",
) -> go.Scatter:
    """The kept boxes of an NMS record, in keep order; ``meta["keep"]`` lists their indices."""
    keep = to_numpy(record["keep"], dtype=np.int64)
    scores = to_numpy(record["scores"])
    by = to_numpy(record["suppressed_by"], dtype=np.int64)
    idxs = to_numpy(record["idxs"], dtype=np.int64) if record.get("idxs") is not None else None
    victims = np.bincount(by[by >= 0], minlength=len(by)) if len(by) else np.zeros(0, dtype=np.int64)
    texts = [
        f"box #{i} kept<br>{group_text(idxs[i], group_kind, class_names) + '<br>' if idxs is not None else ''}"
        f"score {scores[i]:.3f}<br>suppressed {victims[i]} box(es)"
        for i in keep
    ]
    return box_layer(
        to_boxes(record["boxes"])[keep], name=name, layer="kept", color=KEPT_COLOR, hover=texts,
        visible=visible, extra_meta={"keep": keep.tolist()},
    )


def _step_traces(record: Mapping[str, Any], threshold: float, group_kind: str, class_names, visible: bool):
    kept = kept_layer(record, group_kind=group_kind, class_names=class_names, visible=visible,
                      name=f"kept at IoU {threshold:.2f}")
    kept.meta = {**kept.meta, "threshold": threshold}
    layers = suppression_layers(record, group_kind=group_kind, class_names=class_names, visible=visible)
    for trace in layers:
        trace.meta = {**trace.meta, "threshold": threshold}
    return [kept, *layers]


def nms_slider_figure(
    boxes: Any,
    scores: Any,
    idxs: Any = None,
    *,
    thresholds: Sequence[float] = DEFAULT_THRESHOLDS,
    active: int | None = None,
    image: Any = None,
    image_size: tuple[int, int] | None = None,
    group_kind: str = "class",
    class_names: Sequence[str] | None = None,
    title: str = "NMS decisions",
) -> go.Figure:
    """A slider over IoU ``thresholds``; each step shows the boxes a fresh NMS keeps (green),
    the ones it suppresses (red, dotted) and a line from each to its suppressor.

    ``boxes`` (N, 4), ``scores`` (N,), optional ``idxs`` (N,) groups (``group_kind``: ``class``
    or ``level``) are the pre-NMS input (e.g. :func:`nms_input` of a trace's ``rcnn_nms``).
    ``image`` (or ``image_size`` ``(h, w)``) sets the canvas. Step ``s`` shows the three traces
    whose ``meta["threshold"]`` is ``thresholds[s]``; the kept one has ``meta["keep"]``.
    """
    if not thresholds:
        raise ValueError("nms_slider_figure needs at least one threshold")
    thresholds = [float(t) for t in thresholds]
    active = len(thresholds) // 2 if active is None else active
    fig = go.Figure()
    if image is not None:
        fig.add_trace(image_layer(image))
    base = {"boxes": torch.as_tensor(boxes), "scores": torch.as_tensor(scores)}
    if idxs is not None:
        base["idxs"] = torch.as_tensor(idxs)
    counts = []
    for s, threshold in enumerate(thresholds):
        record = rerun_nms(base, threshold)
        counts.append(int(record["keep"].numel()))
        fig.add_traces(_step_traces(record, threshold, group_kind, class_names, visible=s == active))
    total = int(base["scores"].shape[0])
    fig.update_layout(
        sliders=[_slider(fig, thresholds, counts, total, active, title)],
        title=_step_title(title, thresholds[active], counts[active], total), height=720,
    )
    height, width = canvas_size(image, image_size, base["boxes"])
    return fit_axes(fig, height, width)


def _step_title(title: str, threshold: float, kept: int, total: int) -> str:
    return f"{title}: IoU threshold {threshold:.2f} keeps {kept} of {total} boxes"


def _slider(fig: go.Figure, thresholds: list[float], counts: list[int], total: int, active: int, title: str) -> dict:
    """Slider steps: step ``s`` shows the image and the traces of ``thresholds[s]``."""
    steps = []
    for s, threshold in enumerate(thresholds):
        visible = [_shown_at(trace, threshold) for trace in fig.data]
        steps.append(dict(
            method="update", label=f"{threshold:.2f}",
            args=[{"visible": visible}, {"title.text": _step_title(title, threshold, counts[s], total)}],
        ))
    return dict(active=active, steps=steps, currentvalue=dict(prefix="IoU threshold: "), pad=dict(t=40))


def _shown_at(trace: Any, threshold: float) -> bool:
    meta = trace.meta or {}
    return meta.get("layer") == "image" or meta.get("threshold") == threshold


def keep_counts_figure(
    boxes: Any, scores: Any, idxs: Any = None, *, thresholds: Sequence[float] = DEFAULT_THRESHOLDS,
    title: str = "Boxes kept by NMS per IoU threshold",
) -> go.Figure:
    """How many of the input boxes a fresh NMS keeps at each threshold (a line)."""
    base = {"boxes": torch.as_tensor(boxes), "scores": torch.as_tensor(scores)}
    if idxs is not None:
        base["idxs"] = torch.as_tensor(idxs)
    counts = [int(rerun_nms(base, t)["keep"].numel()) for t in thresholds]
    fig = go.Figure(go.Scatter(x=list(thresholds), y=counts, mode="lines+markers", name="kept"))
    fig.update_layout(title=title, xaxis_title="IoU threshold", yaxis_title=f"kept of {len(base['scores'])}")
    return fig


def kept_detections(record: Mapping[str, Any], *, max_detections: int | None = None) -> dict[str, torch.Tensor]:
    """``boxes``, ``scores``, ``labels`` (the record's ``idxs``) of the kept boxes of a class-wise
    NMS record in keep order (decreasing score), at most ``max_detections`` of them."""
    keep = torch.as_tensor(record["keep"])
    if max_detections is not None:
        keep = keep[:max_detections]
    return {
        "boxes": torch.as_tensor(record["boxes"])[keep],
        "scores": torch.as_tensor(record["scores"])[keep],
        "labels": torch.as_tensor(record["idxs"])[keep],
    }


def suppression_summary(record: Mapping[str, Any]) -> dict[str, float]:
    """Numbers of one NMS record: ``boxes``, ``kept``, ``suppressed``, the median IoU of the
    suppressed boxes with their suppressors, and the most boxes one kept box suppressed."""
    by = to_numpy(record["suppressed_by"], dtype=np.int64)
    iou = to_numpy(record["suppressor_iou"])
    suppressed = by >= 0
    victims = np.bincount(by[suppressed], minlength=len(by)) if suppressed.any() else np.zeros(1, dtype=np.int64)
    return {
        "boxes": int(len(by)),
        "kept": int(len(by) - suppressed.sum()),
        "suppressed": int(suppressed.sum()),
        "median_iou": float(np.median(iou[suppressed])) if suppressed.any() else float("nan"),
        "max_suppressed_by_one": int(victims.max()),
        "iou_threshold": float(to_numpy(record["iou_threshold"])),
    }
