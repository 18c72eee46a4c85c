"""Writing figures to files: self-contained HTML (renders offline) and PNG (kaleido)."""

from __future__ import annotations

from pathlib import Path

import plotly.graph_objects as go


def save_html(fig: go.Figure, path: Path | str) -> Path:
    """Write ``fig`` as one HTML page with plotly.js inside it (no network needed to view it)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.write_html(path, include_plotlyjs=True, full_html=True)
    return path


def save_png(fig: go.Figure, path: Path | str, *, width: int = 900, height: int = 600, scale: float = 1.0) -> Path:
    """Write ``fig`` as a PNG through kaleido (it drives a local Chromium)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.write_image(path, format="png", width=width, height=height, scale=scale)
    return path
