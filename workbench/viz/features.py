"""Feature-pyramid statistics: the mean absolute activation of every level before and after a
neck that mixes the levels (e.g. a balanced feature pyramid, which adds the same integrated
features to every level and so evens out their magnitudes)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import plotly.graph_objects as go


def level_magnitude_figure(
    levels: Sequence[str],
    before: np.ndarray,
    after: np.ndarray,
    *,
    labels: tuple[str, str] = ("before the neck", "after the neck"),
    title: str = "Mean |activation| per pyramid level",
) -> go.Figure:
    """Grouped bars, one pair per level: ``before`` and ``after`` ``(L,)`` (e.g. from
    ``workbench.methods.libra.analysis.level_magnitudes``), named by ``labels``; each bar
    trace's ``meta["layer"]`` is ``"before"`` / ``"after"``."""
    levels = [str(level) for level in levels]
    before, after = np.asarray(before, dtype=float), np.asarray(after, dtype=float)
    if before.shape != (len(levels),) or after.shape != (len(levels),):
        raise ValueError(f"before and after must have one value per level ({len(levels)})")
    fig = go.Figure()
    for key, label, values in (("before", labels[0], before), ("after", labels[1], after)):
        fig.add_trace(go.Bar(x=levels, y=values, name=label, meta={"layer": key},
                             hovertemplate=f"{label}<br>level %{{x}}<br>mean |a| %{{y:.4f}}<extra></extra>"))
    fig.update_layout(title=title, barmode="group", height=380, xaxis_title="level",
                      yaxis_title="mean absolute activation")
    return fig


__all__ = ["level_magnitude_figure"]
