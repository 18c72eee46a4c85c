"""The static HTML report of tiny runs: one self-contained file with every section."""

from __future__ import annotations

import re

import pytest
from plotly.offline import get_plotlyjs_version

from workbench.cli import main
from workbench.methods import get_method
from workbench.pipelines.runs import ensure_traces
from workbench.report import SPEED_TITLE

pytestmark = pytest.mark.slow


def test_report_holds_metrics_figures_and_plotlyjs(trained, baseline_run, tmp_path, capsys):
    kl_run, _ = trained
    ensure_traces(kl_run, device="cpu")
    out = tmp_path / "report.html"
    code = main(["report", "--run", str(baseline_run), "--run", str(kl_run), "--name", "baseline", "--name", "kl",
                 "--out", str(out), "--max-images", "4"])
    assert code == 0 and str(out) in capsys.readouterr().out

    page = out.read_text()
    assert f"plotly.js v{get_plotlyjs_version()}" in page
    assert not re.search(r"<script[^>]+src=[\"']https?://", page)
    headings = re.findall(r"<h2>(.*?)</h2>", page)
    expected = [
        "Final COCO metrics (validation)",
        "Training loss and AP per epoch",
        "Metrics by method and preset: mean ± sample standard deviation over seeds (validation)",
        SPEED_TITLE,
        "AP against IoU threshold by method and preset (mean, bars: spread over seeds)",
        "Training loss and AP by method and preset, mean over seeds",
        "AP per class by method and preset: mean ± sample standard deviation over seeds (validation)",
        "baseline: training curves",
        "baseline: precision-recall",
        "kl: training curves",
        "kl: precision-recall per class (IoU 0.50, validation)",
        "Proposal recall (top 1000 per image, first 4 validation images at most)",
        "Offsets to ground truth of the highest / lowest objectness proposals (KL-RPN paper, Fig. 3)",
        "baseline: inside the detector",
    ]
    assert headings[: len(expected)] == expected
    kl_trace_sections = headings[len(expected):]
    # one section per heatmap the method declares as shown, titled by what it shows
    maps = [v for v in get_method("kl_rpn").record_views if v.kind == "heatmap" and v.shown]
    # then the figures the method declares of a run (one image each here)
    declared = get_method("kl_rpn").run_figures
    assert declared
    assert [h.rsplit(", ", 1)[0] for h in kl_trace_sections] == [
        "kl: scores of the proposals before and after NMS (4 images)",
        "kl: detections (score &gt;= 0.3) and suppressed boxes",
        "kl: final NMS at other IoU thresholds (top 100 candidates)",
        *[f"kl: {v.title}" for v in maps],
        *[f"kl: {f.title}" for f in declared],
    ]
    assert "no traces; run `workbench predict --trace`" in page
    assert page.count('class="plotly-graph-div"') == 15 + len(maps) + len(declared)  # 15: with the speed table
