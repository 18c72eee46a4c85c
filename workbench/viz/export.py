"""Writing figures to files: self-contained HTML (renders offline) and PNG (kaleido), each
written atomically (:mod:`workbench.atomic`), so a figure in a run directory is whole or absent."""

from __future__ import annotations

from pathlib import Path

import plotly.graph_objects as go

from workbench.atomic import write_bytes_atomic, write_text_atomic


def save_html(fig: go.Figure, path: Path | str) -> Path:
    """Write ``fig`` as one HTML page with plotly.js inside it (no network needed to view it)."""
    return write_text_atomic(path, fig.to_html(include_plotlyjs=True, full_html=True))


def save_png(fig: go.Figure, path: Path | str, *, width: int = 900, height: int = 600, scale: float = 1.0) -> Path:
    """Write ``fig`` as a PNG through kaleido (it drives a local Chromium)."""
    return write_bytes_atomic(path, fig.to_image(format="png", width=width, height=height, scale=scale))
