"""Score distributions: proposal (or detection) score histograms, several groups overlaid.

Groups are named 1-D arrays, e.g. the RPN scores before and after NMS (records
``rpn_proposals_pre_nms`` and ``rpn_proposals``), or the proposals of several runs.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np
import plotly.graph_objects as go

from workbench.viz.boxes import to_numpy


def pooled_scores(records_per_image: Iterable[Mapping[str, Mapping[str, Any]]], record: str, field: str = "scores") -> np.ndarray:
    """``field`` of ``record`` concatenated over images (images without the record add nothing)."""
    parts = [to_numpy(r[record][field]).reshape(-1) for r in records_per_image if record in r]
    return np.concatenate(parts) if parts else np.zeros(0)


def score_histogram_figure(
    groups: Mapping[str, Any],
    *,
    bins: int = 40,
    density: bool = False,
    log_y: bool = False,
    title: str = "Proposal scores",
    xaxis_title: str = "score",
) -> go.Figure:
    """Overlaid histograms of each group's scores, on shared bins spanning all of them.

    ``density`` normalises each group to a probability density (groups of different sizes
    compare by shape); ``log_y`` uses a log count axis.
    """
    arrays = {name: to_numpy(values).reshape(-1) for name, values in groups.items()}
    if not arrays:
        raise ValueError("no score groups to plot")
    every = np.concatenate(list(arrays.values()) + [np.zeros(0)])
    finite = every[np.isfinite(every)]
    low, high = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 1.0)
    size = (high - low) / bins if high > low else 1.0 / bins
    fig = go.Figure()
    for name, values in arrays.items():
        fig.add_trace(go.Histogram(
            x=values, name=f"{name} ({values.size})", opacity=0.6,
            xbins=dict(start=low, end=high + size * 1e-6, size=size),
            histnorm="probability density" if density else None,
            meta={"group": name, "count": int(values.size)},
        ))
    fig.update_layout(
        barmode="overlay", title=title, xaxis_title=xaxis_title,
        yaxis_title="density" if density else "count", yaxis_type="log" if log_y else None,
    )
    return fig
