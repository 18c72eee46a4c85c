"""How sampled training candidates are distributed over their IoU with the ground truth: the
negatives of a box stage, all of them and those each sampler picks, with the share of hard
negatives (IoU above a threshold: 0.05 in section 3.1 of Pang et al., CVPR 2019, where about
60% of the hard negatives lie above 0.05 but random sampling picks about 30% there)."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import plotly.graph_objects as go
from plotly.colors import qualitative


def share_above(values: np.ndarray, threshold: float) -> float:
    """Fraction of ``values`` strictly above ``threshold`` (NaN when there are none)."""
    values = np.asarray(values, dtype=float)
    return float((values > threshold).mean()) if values.size else float("nan")


def negative_iou_figure(
    ious: Mapping[str, np.ndarray],
    *,
    threshold: float = 0.05,
    max_iou: float = 0.5,
    bins: int = 25,
    title: str = "IoU with the ground truth of the negatives",
) -> go.Figure:
    """One histogram per set of negatives (share of the set per IoU bin over ``[0, max_iou]``),
    overlaid, with a dotted line at ``threshold`` and each set's share above it in its legend
    entry and in ``meta["share_above"]`` (``meta["layer"]`` is the set's name).

    ``ious``: set name -> best IoU of each negative (e.g. all candidates' negatives, the ones a
    random sampler picks, the ones an IoU-balanced sampler picks, from
    ``workbench.methods.libra.analysis.negative_ious``).
    """
    if not ious:
        raise ValueError("no sets of negatives to plot")
    fig = go.Figure()
    colors = qualitative.Set1
    edges = dict(start=0.0, end=max_iou, size=max_iou / bins)
    for k, (name, values) in enumerate(ious.items()):
        values = np.asarray(values, dtype=float)
        share = share_above(values, threshold)
        label = f"{name}: {share:.0%} above {threshold:g} (n={values.size})"
        fig.add_trace(
            go.Histogram(
                x=values, xbins=edges, histnorm="probability", name=label, opacity=0.55,
                marker_color=colors[k % len(colors)], meta={"layer": name, "share_above": share},
                hovertemplate=f"{name}<br>IoU %{{x}}<br>share %{{y:.3f}}<extra></extra>",
            )
        )
    fig.add_vline(x=threshold, line=dict(color="grey", dash="dot", width=1))
    fig.update_layout(
        title=title, barmode="overlay", bargap=0.0, height=420,
        xaxis_title="best IoU with any ground-truth box", yaxis_title="share of the set",
        legend=dict(orientation="h", y=-0.25),
    )
    fig.update_xaxes(range=[0, max_iou])
    return fig


__all__ = ["negative_iou_figure", "share_above"]
