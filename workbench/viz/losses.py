"""Element-wise regression losses and their gradients against the regression error ``|x|``,
as in Fig. 5 of Pang et al. (CVPR 2019): balanced L1 lifts the gradient of small errors
(inliers) above smooth L1's and bounds that of large ones (outliers) by ``gamma``."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import plotly.graph_objects as go
from plotly.colors import qualitative
from plotly.subplots import make_subplots


def loss_gradient_figure(
    x: np.ndarray,
    curves: Mapping[str, tuple[np.ndarray, np.ndarray]],
    *,
    knee: float | None = 1.0,
    title: str = "Regression losses and their gradients against |x|",
) -> go.Figure:
    """Two panels over ``x`` (the error ``|x|``, ascending): the gradient (left, as in the
    paper's figure) and the loss (right) of each curve.

    ``curves``: name -> ``(loss, gradient)``, arrays of ``x``'s length (e.g. from
    ``workbench.methods.libra.analysis.loss_curves``). ``knee``: a dotted line at the ``|x|``
    where the losses turn linear (``None``: none). Each trace's ``meta["layer"]`` is its name.
    """
    x = np.asarray(x, dtype=float)
    if x.ndim != 1 or x.size == 0:
        raise ValueError("x must be a non-empty 1-D array")
    if not curves:
        raise ValueError("no curves to plot")
    fig = make_subplots(rows=1, cols=2, subplot_titles=["gradient d loss / dx", "loss"])
    colors = qualitative.Plotly
    for k, (name, (loss, grad)) in enumerate(curves.items()):
        loss, grad = np.asarray(loss, dtype=float), np.asarray(grad, dtype=float)
        if loss.shape != x.shape or grad.shape != x.shape:
            raise ValueError(f"curve {name!r}: loss and gradient must have x's shape {x.shape}")
        color = colors[k % len(colors)]
        for col, values, what in ((1, grad, "gradient"), (2, loss, "loss")):
            fig.add_trace(
                go.Scatter(
                    x=x, y=values, mode="lines", name=name, legendgroup=name, showlegend=col == 1,
                    line=dict(color=color, dash="dash" if name.lower().startswith("smooth") else "solid"),
                    meta={"layer": name},
                    hovertemplate=f"{name}<br>|x| %{{x:.3f}}<br>{what} %{{y:.4f}}<extra></extra>",
                ),
                row=1, col=col,
            )
    if knee is not None:
        for col in (1, 2):
            fig.add_vline(x=knee, line=dict(color="grey", dash="dot", width=1), row=1, col=col)
    fig.update_xaxes(title_text="|x| (regression error)")
    fig.update_layout(title=title, height=420, legend=dict(orientation="h", y=-0.2))
    return fig


__all__ = ["loss_gradient_figure"]
