"""Figures of region proposals: their offsets to the ground truth by objectness (KL-RPN paper Fig. 3).

Pure builders: NumPy arrays (or anything ``np.asarray`` accepts) in, ``plotly.graph_objects.Figure``
out; nothing is read from disk or a model here.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

COORDINATES = ("x", "y", "w", "h")
HIGH_COLOR = "#d62728"  # red, as the paper's Fig. 3
LOW_COLOR = "#1f77b4"  # blue


def _check_offsets(name: str, values: np.ndarray) -> np.ndarray:
    values = np.asarray(values, dtype=float)
    if values.size == 0:
        return np.zeros((0, 4))
    if values.ndim != 2 or values.shape[1] != 4:
        raise ValueError(f"{name}: offsets must be (K, 4), got {values.shape}")
    return values


def objectness_offsets_figure(
    offsets: Mapping[str, tuple[np.ndarray, np.ndarray]],
    *,
    bins: int = 40,
    max_offset: float | None = None,
    title: str = "L1 offset to the matched GT: highest vs lowest objectness proposals",
) -> go.Figure:
    """One row per detector, one column per coordinate (x, y, w, h): histograms (probability
    density) of the offsets of the highest- (red) and lowest-objectness (blue) proposals.

    ``offsets``: detector name -> ``(high (K, 4), low (K', 4))`` absolute offsets, e.g. from
    :func:`workbench.evaluation.proposals.objectness_offsets`. ``max_offset`` clips the x axes
    (default: the 99th percentile of all values).
    """
    checked = {name: (_check_offsets(name, h), _check_offsets(name, l)) for name, (h, l) in offsets.items()}
    if not checked:
        raise ValueError("no detectors to plot")
    everything = np.concatenate([np.concatenate(pair) for pair in checked.values()])
    if max_offset is None:
        max_offset = float(np.percentile(everything, 99)) if everything.size else 1.0
    max_offset = max(max_offset, 1e-6)
    fig = make_subplots(
        rows=len(checked), cols=4, shared_xaxes=False,
        subplot_titles=[f"{name}: {c}" for name in checked for c in COORDINATES],
        vertical_spacing=0.12 if len(checked) > 1 else 0.0,
    )
    edges = dict(start=0.0, end=max_offset, size=max_offset / bins)
    for row, (name, (high, low)) in enumerate(checked.items(), start=1):
        for col in range(4):
            for label, values, color in (("high objectness", high, HIGH_COLOR), ("low objectness", low, LOW_COLOR)):
                fig.add_trace(
                    go.Histogram(
                        x=values[:, col], xbins=edges, histnorm="probability density", name=label,
                        marker_color=color, opacity=0.55, legendgroup=label,
                        showlegend=row == 1 and col == 0,
                        hovertemplate=f"{name} {label}<br>|d{COORDINATES[col]}| %{{x}}<br>density %{{y:.3f}}<extra></extra>",
                    ),
                    row=row, col=col + 1,
                )
    fig.update_layout(barmode="overlay", title=title, height=280 * len(checked) + 80, bargap=0.0)
    fig.update_xaxes(range=[0, max_offset])
    return fig
