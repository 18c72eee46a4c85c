"""Tables of numbers as figures (they land in the HTML report beside the plots)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import plotly.graph_objects as go


def format_value(value: object, digits: int = 4) -> str:
    """Floats rounded to ``digits``; ``None`` (an undefined metric) as ``n/a``."""
    if value is None:
        return "n/a"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def metrics_table_figure(
    rows: Mapping[str, Mapping[str, object]],
    columns: Sequence[str] | None = None,
    *,
    title: str = "Metrics",
    row_header: str = "run",
) -> go.Figure:
    """One row per entry of ``rows`` (name -> metric name -> value), one column per metric
    (``columns``, default: every metric name in first-seen order); missing values show ``n/a``."""
    if columns is None:
        columns = list(dict.fromkeys(name for metrics in rows.values() for name in metrics))
    cells = [list(rows)] + [[format_value(metrics.get(c)) for metrics in rows.values()] for c in columns]
    fig = go.Figure(go.Table(
        header=dict(values=[row_header, *columns], align="left", fill_color="#e8e8e8"),
        cells=dict(values=cells, align="left"),
    ))
    fig.update_layout(title=title, height=120 + 30 * max(1, len(rows)), margin=dict(l=10, r=10, t=50, b=10))
    return fig
