"""Figures export to HTML pages that carry plotly.js inside them (they render offline) and to PNG."""

from __future__ import annotations

import re

from plotly.offline import get_plotlyjs_version
from viz_records import make_gt, make_image, make_records

from workbench.viz.export import save_html
from workbench.viz.images import trace_image_figure


def test_save_html_is_self_contained(tmp_path):
    fig = trace_image_figure(make_records(0), image=make_image(0), gt=make_gt(0))
    path = save_html(fig, tmp_path / "sub" / "figure.html")
    html = path.read_text()
    assert html.lstrip().lower().startswith("<html")
    assert f"plotly.js v{get_plotlyjs_version()}" in html, "the plotly.js bundle is inside the page"
    assert len(html) > 3_000_000
    assert not re.search(r"<script[^>]+src=[\"']https?://", html), "no script from a CDN"
    assert "data:image/png;base64," in html


def test_save_png_writes_an_image_of_the_requested_size(tmp_path):
    from PIL import Image

    from workbench.viz.export import save_png

    fig = trace_image_figure(make_records(0), image=make_image(0), gt=make_gt(0))
    path = save_png(fig, tmp_path / "sub" / "figure.png", width=320, height=240, scale=2)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with Image.open(path) as png:
        assert png.size == (640, 480)
        # the figure was drawn, not left blank: the PNG has many distinct colours
        assert len(png.convert("RGB").getcolors(maxcolors=1 << 20)) > 50
