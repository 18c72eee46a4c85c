"""Localisation quality of boxes against the ground truth, and predicted IoUs: the figures of the
IoU-uniform R-CNN paper (``papers/iou-uniform-rcnn.md``), built from arrays.

- :func:`iou_histogram_figure`: the IoU distribution of sets of boxes, e.g. the RPN's RoIs
  against the generated training samples (Fig. 1 (a), Fig. 6);
- :func:`localisation_gain` / :func:`localisation_gain_figure`: the mean IoU gained by
  regression per input-IoU interval (output IoU minus input IoU, Fig. 3);
- :func:`iou_correlation_figure`: predicted against true IoU of detections, one panel per
  prediction (before and after re-pooling), with their Pearson correlation (Fig. 8);
- :func:`recall_at_ious` / :func:`recall_curve_figure`: the share of GT boxes found by a
  detection of their class at IoU >= t, for t from 0.5 to 1 (Fig. 7);
- :func:`ap_per_iou_figure`: AP at IoU 0.5 / 0.6 / 0.7 / 0.8 / 0.9 per run, as the mean and
  spread over seeds (Table 1's columns).

Arrays are NumPy or tensors; boxes are absolute ``xyxy``. Each trace names what it shows in
``meta["layer"]`` (a set, a run or a prediction) and carries its numbers in ``meta``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import plotly.graph_objects as go
import torch
from plotly.colors import qualitative
from plotly.subplots import make_subplots

from workbench.ops import box_iou

#: The paper's IoU intervals of Fig. 3 (input IoU of the regressed boxes).
GAIN_EDGES = (0.5, 0.6, 0.7, 0.8, 0.9, 1.0)
#: Table 1's AP columns.
AP_KEYS = ("AP50", "AP60", "AP70", "AP80", "AP90")


def _array(values: Any) -> np.ndarray:
    if isinstance(values, torch.Tensor):
        values = values.detach().cpu().numpy()
    return np.asarray(values, dtype=float)


def _tensor(boxes: Any) -> torch.Tensor:
    if isinstance(boxes, torch.Tensor):
        return boxes.detach().cpu().double().reshape(-1, 4)
    return torch.as_tensor(np.asarray(boxes, dtype=float)).reshape(-1, 4)


def best_iou(boxes: Any, gt_boxes: Any) -> np.ndarray:
    """Best IoU of each box (N, 4) with any GT box (G, 4) -> (N,) (0 without GT)."""
    boxes, gt = _tensor(boxes), _tensor(gt_boxes)
    if gt.shape[0] == 0 or boxes.shape[0] == 0:
        return np.zeros(boxes.shape[0])
    return box_iou(gt, boxes).nan_to_num(0.0).max(dim=0).values.numpy()


def _colors(k: int) -> str:
    return qualitative.Set1[k % len(qualitative.Set1)]


def iou_histogram_figure(
    ious: Mapping[str, Any],
    *,
    low: float = 0.5,
    bins: int = 10,
    title: str = "IoU of the training boxes with their ground truth",
) -> go.Figure:
    """One histogram per set of boxes (share of the set per IoU bin over ``[low, 1]``), side by
    side; each legend entry gives the set's size there and ``meta["count"]`` (``meta["layer"]``:
    the set's name). IoUs below ``low`` are left out (e.g. the RPN's negatives)."""
    if not ious:
        raise ValueError("no sets of boxes to plot")
    fig = go.Figure()
    width = (1.0 - low) / bins
    for k, (name, values) in enumerate(ious.items()):
        values = _array(values)
        values = values[values >= low]
        fig.add_trace(go.Histogram(
            x=values, xbins=dict(start=low, end=1.0 + 1e-9, size=width), histnorm="probability",
            name=f"{name} (n={values.size})", marker_color=_colors(k), meta={"layer": name, "count": int(values.size)},
            hovertemplate=f"{name}<br>IoU %{{x}}<br>share %{{y:.3f}}<extra></extra>",
        ))
    fig.update_layout(title=title, barmode="group", height=420, xaxis_title="IoU with the matched ground truth",
                      yaxis_title="share of the set", legend=dict(orientation="h", y=-0.25))
    fig.update_xaxes(range=[low, 1.0])
    return fig


def localisation_gain(input_iou: Any, output_iou: Any, edges: Sequence[float] = GAIN_EDGES) -> dict[str, np.ndarray]:
    """Mean ``output_iou - input_iou`` (N,) of the boxes whose input IoU lies in each interval
    ``[edges[i], edges[i + 1])`` (the last closed): ``{"edges", "gain", "count"}``; ``gain`` is
    NaN for an empty interval."""
    before, after = _array(input_iou), _array(output_iou)
    if before.shape != after.shape:
        raise ValueError(f"input and output IoUs differ in shape: {before.shape} and {after.shape}")
    edges_arr = np.asarray(edges, dtype=float)
    n = len(edges_arr) - 1
    gain, count = np.full(n, np.nan), np.zeros(n, dtype=int)
    for i in range(n):
        upper = before <= edges_arr[i + 1] if i == n - 1 else before < edges_arr[i + 1]
        inside = (before >= edges_arr[i]) & upper
        count[i] = int(inside.sum())
        if count[i]:
            gain[i] = float((after[inside] - before[inside]).mean())
    return {"edges": edges_arr, "gain": gain, "count": count}


def localisation_gain_figure(
    gains: Mapping[str, Mapping[str, np.ndarray]],
    *,
    title: str = "Localisation gain of the regression per input IoU",
) -> go.Figure:
    """Grouped bars: for each run (or regressor), the mean IoU gained per input-IoU interval
    (:func:`localisation_gain`); hover text gives the number of boxes."""
    if not gains:
        raise ValueError("no localisation gains to plot")
    fig = go.Figure()
    for k, (name, gain) in enumerate(gains.items()):
        edges = np.asarray(gain["edges"], dtype=float)
        labels = [f"{a:.1f}-{b:.1f}" for a, b in zip(edges[:-1], edges[1:])]
        fig.add_trace(go.Bar(
            x=labels, y=np.asarray(gain["gain"]), name=name, marker_color=_colors(k),
            customdata=np.asarray(gain["count"]), meta={"layer": name},
            hovertemplate=f"{name}<br>input IoU %{{x}}<br>gain %{{y:.3f}}<br>%{{customdata}} boxes<extra></extra>",
        ))
    fig.add_hline(y=0.0, line=dict(color="grey", width=1))
    fig.update_layout(title=title, barmode="group", height=420, xaxis_title="input IoU",
                      yaxis_title="mean output IoU - input IoU", legend=dict(orientation="h", y=-0.25))
    return fig


def pearson(x: Any, y: Any) -> float:
    """Pearson correlation of two (N,) arrays (NaN for fewer than 2 values or no spread)."""
    x, y = _array(x), _array(y)
    if x.size < 2 or x.std() == 0 or y.std() == 0:
        return float("nan")
    return float(np.corrcoef(x, y)[0, 1])


def iou_correlation_figure(
    true_iou: Any,
    predicted: Mapping[str, Any],
    *,
    low: float = 0.5,
    title: str = "Predicted against true IoU of the detections",
) -> go.Figure:
    """One panel per prediction (e.g. ``{"first pass": ..., "re-pooled": ...}``): each
    detection whose true IoU (N,) is above ``low`` as a point (true, predicted), the diagonal,
    and the Pearson correlation in the panel title and ``meta["pearson"]``."""
    if not predicted:
        raise ValueError("no predicted IoUs to plot")
    truth = _array(true_iou)
    keep = truth > low
    correlations = {name: pearson(truth[keep], _array(values)[keep]) for name, values in predicted.items()}
    fig = make_subplots(rows=1, cols=len(predicted), shared_yaxes=True,
                        subplot_titles=[f"{name}: r = {r:.3f}" for name, r in correlations.items()])
    for k, (name, values) in enumerate(predicted.items()):
        values = _array(values)
        if values.shape != truth.shape:
            raise ValueError(f"{name}: {values.shape[0]} predictions for {truth.shape[0]} detections")
        fig.add_trace(go.Scattergl(
            x=truth[keep], y=values[keep], mode="markers", name=name, marker=dict(size=4, color=_colors(k), opacity=0.5),
            meta={"layer": name, "pearson": correlations[name], "count": int(keep.sum())},
            hovertemplate="true %{x:.3f}<br>predicted %{y:.3f}<extra></extra>",
        ), row=1, col=k + 1)
        fig.add_trace(go.Scatter(x=[low, 1.0], y=[low, 1.0], mode="lines", showlegend=False,
                                 line=dict(color="grey", dash="dot", width=1), meta={"layer": "diagonal"}),
                      row=1, col=k + 1)
        fig.update_xaxes(title_text="IoU with the matched ground truth", range=[low, 1.0], row=1, col=k + 1)
    fig.update_yaxes(title_text="predicted IoU", row=1, col=1)
    fig.update_layout(title=title, height=450, showlegend=False)
    return fig


def recall_at_ious(
    detections: Sequence[tuple[Any, Any]],
    ground_truth: Sequence[tuple[Any, Any]],
    thresholds: Sequence[float] | None = None,
) -> dict[str, np.ndarray]:
    """Share of the GT boxes that a detection of their class overlaps at IoU >= t, for each
    threshold (default 0.5, 0.55, ..., 1.0): ``{"thresholds", "recall", "num_gt"}``.

    ``detections`` and ``ground_truth``: per image, ``(boxes (N, 4), labels (N,))``. Every
    detection counts (no one-to-one matching): the curve shows how well the boxes kept by NMS
    cover the objects at each localisation quality (paper Fig. 7).
    """
    if len(detections) != len(ground_truth):
        raise ValueError(f"{len(detections)} images of detections but {len(ground_truth)} of ground truth")
    t = np.round(np.arange(0.5, 1.0001, 0.05), 2) if thresholds is None else np.asarray(thresholds, dtype=float)
    best = []
    for (boxes, labels), (gt_boxes, gt_labels) in zip(detections, ground_truth):
        boxes, gt_boxes = _tensor(boxes), _tensor(gt_boxes)
        labels, gt_labels = _array(labels).reshape(-1), _array(gt_labels).reshape(-1)
        if gt_boxes.shape[0] == 0:
            continue
        if boxes.shape[0] == 0:
            best.append(np.zeros(gt_boxes.shape[0]))
            continue
        iou = box_iou(gt_boxes, boxes).nan_to_num(0.0).numpy()
        iou[gt_labels[:, None] != labels[None, :]] = 0.0
        best.append(iou.max(axis=1))
    best_arr = np.concatenate(best) if best else np.zeros(0)
    recall = np.array([(best_arr >= x - 1e-9).mean() if best_arr.size else np.nan for x in t])
    return {"thresholds": t, "recall": recall, "num_gt": np.array(best_arr.size)}


def recall_curve_figure(
    curves: Mapping[str, Mapping[str, np.ndarray]],
    *,
    title: str = "Recall against the matching IoU",
) -> go.Figure:
    """One line per set of detections (e.g. NMS by class score and by class x IoU) from
    :func:`recall_at_ious`."""
    if not curves:
        raise ValueError("no recall curves to plot")
    fig = go.Figure()
    for k, (name, curve) in enumerate(curves.items()):
        fig.add_trace(go.Scatter(
            x=np.asarray(curve["thresholds"]), y=np.asarray(curve["recall"]), mode="lines+markers", name=name,
            line=dict(color=_colors(k)), meta={"layer": name},
            hovertemplate=f"{name}<br>IoU >= %{{x:.2f}}<br>recall %{{y:.3f}}<extra></extra>",
        ))
    fig.update_layout(title=title, height=420, xaxis_title="matching IoU", yaxis_title="recall",
                      legend=dict(orientation="h", y=-0.25))
    fig.update_xaxes(range=[0.5, 1.0])
    fig.update_yaxes(range=[0.0, 1.0])
    return fig


def ap_per_iou_figure(
    runs: Mapping[str, Sequence[Mapping[str, float]]],
    *,
    keys: Sequence[str] = AP_KEYS,
    title: str = "AP per IoU threshold",
) -> go.Figure:
    """Grouped bars: for each run, the mean over its seeds' metrics of each AP key, with the
    spread (sample standard deviation, none for one seed) as error bars; ``meta["mean"]`` and
    ``meta["std"]`` hold the numbers. Metrics missing a key are left out of that key."""
    if not runs:
        raise ValueError("no runs to plot")
    fig = go.Figure()
    for k, (name, seeds) in enumerate(runs.items()):
        means, stds = [], []
        for key in keys:
            values = np.array([m[key] for m in seeds if m.get(key) is not None], dtype=float)
            means.append(float(values.mean()) if values.size else np.nan)
            stds.append(float(values.std(ddof=1)) if values.size > 1 else 0.0)
        fig.add_trace(go.Bar(
            x=list(keys), y=means, name=f"{name} ({len(seeds)} seed{'s' if len(seeds) != 1 else ''})",
            error_y=dict(type="data", array=stds, visible=len(seeds) > 1), marker_color=_colors(k),
            meta={"layer": name, "mean": means, "std": stds},
        ))
    fig.update_layout(title=title, barmode="group", height=420, yaxis_title="AP",
                      legend=dict(orientation="h", y=-0.25))
    return fig


__all__ = [
    "AP_KEYS",
    "GAIN_EDGES",
    "ap_per_iou_figure",
    "best_iou",
    "iou_correlation_figure",
    "iou_histogram_figure",
    "localisation_gain",
    "localisation_gain_figure",
    "pearson",
    "recall_at_ious",
    "recall_curve_figure",
]
