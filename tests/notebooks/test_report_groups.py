"""The report's sections per group of runs (method and preset over seeds), without training."""

from __future__ import annotations

from pathlib import Path

import pytest

from workbench.engine.timing import InferenceSpeed
from workbench.pipelines.runs import RunSummary
from workbench.report import detail_runs, group_sections, run_names, write_report


def summary(name, method, seed, ap, preset="tiny", speed=None):
    records = [{"kind": "train", "step": 10, "loss": 1.0 + seed}, {"kind": "eval", "epoch": 1, "AP": ap / 2},
               {"kind": "eval", "epoch": 2, "AP": ap}]
    final = {"AP": ap, "AP50": ap + 0.3, "AP60": ap + 0.2, "AP70": ap + 0.1, "AP80": ap, "AP90": ap / 4, "AR100": 0.5}
    return RunSummary(name=name, path=Path(name), method=method, preset=preset, records=records, final=final, seed=seed,
                      speed=speed)


def runs():
    return [summary("a/seed_0", "alpha", 0, 0.30, speed=InferenceSpeed(0.05, "cpu", 1, 2)),
            summary("a/seed_1", "alpha", 1, 0.34, speed=InferenceSpeed(0.07, "cpu", 1, 2)),
            summary("b/seed_0", "beta", 0, 0.40), summary("b/seed_1", "beta", 1, 0.44),
            summary("a2/seed_0", "alpha", 0, 0.2, preset="other")]


def test_group_sections_table_speed_ap_per_iou_and_curves(tmp_path):
    table, speed, per_iou, curves = group_sections(runs())
    assert table.title.startswith("Metrics by method and preset: mean")
    cells = table.figure.data[0].cells.values
    header = list(table.figure.data[0].header.values)
    assert list(cells[0]) == ["alpha/tiny", "beta/tiny", "alpha/other"]
    assert header[:6] == ["method/preset", "method", "preset", "seeds", "runs", "AP"]
    assert "voc07_mAP" not in header  # no run here is judged by VOC07
    assert list(cells[header.index("AP")]) == ["0.320 ± 0.028", "0.420 ± 0.028", "0.200"]
    assert speed.title.startswith("Inference speed per image by method and preset")
    speed_cells = speed.figure.data[0].cells.values
    assert list(speed.figure.data[0].header.values) == ["method/preset", "ms / image", "timed runs", "measured on"]
    assert list(speed_cells[1]) == ["60.0 ± 14.1", "n/a", "n/a"]  # runs from before timing: n/a
    assert list(speed_cells[3]) == ["cpu, 1 thread, batch 2", "n/a", "n/a"]
    bars = {t.meta["layer"]: t for t in per_iou.figure.data}
    assert list(bars) == ["alpha/tiny", "beta/tiny", "alpha/other"]
    assert list(bars["beta/tiny"].x) == ["AP50", "AP60", "AP70", "AP80", "AP90"]
    assert bars["beta/tiny"].y[0] == pytest.approx(0.72)
    means = [t for t in curves.figure.data if t.meta["layer"] == "mean" and t.meta["key"] == "AP"]
    assert [t.name for t in means] == ["alpha/tiny (2 runs)", "beta/tiny (2 runs)", "alpha/other (1 run)"]
    assert list(means[1].y) == pytest.approx([0.21, 0.42])
    page = write_report(group_sections(runs()), tmp_path / "r.html").read_text()
    assert "alpha\\u002ftiny" in page and "<h2>AP against IoU threshold" in page


def test_details_for_the_first_run_of_each_group():
    all_runs = runs()
    assert [r.name for r in detail_runs(all_runs)] == ["a/seed_0", "b/seed_0", "a2/seed_0"]
    assert detail_runs(all_runs, all_runs=True) == all_runs


def test_run_names_add_the_parent_when_folder_names_repeat(tmp_path):
    dirs = [tmp_path / "alpha" / "seed_0", tmp_path / "beta" / "seed_0"]
    assert run_names(dirs) == ["alpha/seed_0", "beta/seed_0"]
    assert run_names([tmp_path / "x", tmp_path / "y"]) == ["x", "y"]
    assert run_names(dirs, ["p", "q"]) == ["p", "q"]
