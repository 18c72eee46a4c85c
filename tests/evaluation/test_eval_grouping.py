"""Runs grouped by method and preset, metrics as mean and spread over seeds (pure functions)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import pytest

from workbench.evaluation.grouping import (
    SPEED_COLUMN,
    SUMMARY_KEYS,
    format_summary,
    group_runs,
    group_table_rows,
    mean_and_spread,
    mean_curve,
    reported_keys,
    speed_table_rows,
    summarize_group,
    value_table_rows,
)


@dataclass
class Run:
    name: str
    method: str
    preset: str
    seed: int | None
    final: dict = field(default_factory=dict)
    records: list = field(default_factory=list)


def runs():
    return [
        Run("a0", "alpha", "tiny", 0, {"AP": 0.30, "AP50": 0.60, "AR100": 0.5}),
        Run("b0", "beta", "tiny", 0, {"AP": 0.40, "AP50": 0.70, "voc07_mAP": 0.65}),
        Run("a1", "alpha", "tiny", 1, {"AP": 0.34, "AP50": 0.64, "AR100": 0.7}),
        Run("a2", "alpha", "large", 0, {"AP": 0.50}),
        Run("a3", "alpha", "tiny", 2, {"AP": 0.32, "AP50": None}),
    ]


def test_groups_by_method_and_preset_in_first_seen_order():
    groups = group_runs(runs())
    assert [g.label for g in groups] == ["alpha/tiny", "beta/tiny", "alpha/large"]
    assert groups[0].names == ["a0", "a1", "a3"] and groups[0].seeds == [0, 1, 2]
    assert groups[1].metrics == [runs()[1].final]
    assert group_runs([]) == []


def test_mean_and_sample_std_skip_missing_values():
    assert mean_and_spread([]) == (None, None, 0)
    assert mean_and_spread([None, float("nan")]) == (None, None, 0)
    assert mean_and_spread([0.5, None]) == (0.5, None, 1)
    mean, std, n = mean_and_spread([1.0, 2.0, 3.0, 6.0])
    assert (mean, n) == (3.0, 4)
    assert std == pytest.approx(math.sqrt((4 + 1 + 0 + 9) / 3))


def test_summary_of_a_group():
    alpha = group_runs(runs())[0]
    summary = summarize_group(alpha)
    assert set(summary) == set(SUMMARY_KEYS)
    assert summary["AP"].mean == pytest.approx(0.32) and summary["AP"].std == pytest.approx(0.02)
    assert summary["AP"].count == 3
    assert summary["AP50"].mean == pytest.approx(0.62) and summary["AP50"].count == 2
    assert summary["voc07_mAP"].mean is None and summary["voc07_mAP"].count == 0


def test_table_shows_only_reported_metrics_with_spread():
    groups = group_runs(runs())
    assert reported_keys(groups) == ["AP", "AP50", "voc07_mAP", "AR100"]
    rows = group_table_rows(groups)
    assert list(rows) == ["alpha/tiny", "beta/tiny", "alpha/large"]
    alpha = rows["alpha/tiny"]
    assert alpha["method"] == "alpha" and alpha["preset"] == "tiny"
    assert alpha["seeds"] == "0, 1, 2" and alpha["runs"] == 3
    assert alpha["AP"] == "0.320 ± 0.020"
    assert alpha["voc07_mAP"] is None
    assert rows["beta/tiny"]["AP"] == "0.400" and rows["beta/tiny"]["voc07_mAP"] == "0.650"
    assert list(rows["alpha/large"])[4:] == ["AP", "AP50", "voc07_mAP", "AR100"]


def test_format_summary():
    assert format_summary(summarize_group(group_runs(runs())[0])["AR100"], digits=2) == "0.60 ± 0.14"


def test_mean_curve_over_runs():
    first = [{"kind": "eval", "epoch": 1, "AP": 0.1}, {"kind": "eval", "epoch": 2, "AP": 0.3},
             {"kind": "train", "step": 5, "loss": 2.0}]
    second = [{"kind": "eval", "epoch": 2, "AP": 0.5}, {"kind": "eval", "epoch": 1, "AP": 0.3},
              {"kind": "eval", "epoch": 3, "AP": None}]
    xs, mean, std = mean_curve([first, second])
    assert xs == [1, 2]
    assert mean == pytest.approx([0.2, 0.4])
    assert std == pytest.approx([math.sqrt(0.02), math.sqrt(0.02)])
    xs, mean, std = mean_curve([first, second], kind="train", x="step", y="loss")
    assert (xs, mean, std) == ([5], [2.0], [None])


def test_table_of_other_per_run_values():
    groups = group_runs(runs())
    per_class = {"a0": {"circle": 0.2, "square": 0.4}, "a1": {"circle": 0.4}, "b0": {"square": 0.5, "star": 0.1}}
    rows = value_table_rows(groups, per_class)
    assert list(rows) == ["alpha/tiny", "beta/tiny", "alpha/large"]
    assert rows["alpha/tiny"] == {"circle": "0.300 ± 0.141", "square": "0.400", "star": None}
    assert rows["beta/tiny"] == {"circle": None, "square": "0.500", "star": "0.100"}
    assert rows["alpha/large"] == {"circle": None, "square": None, "star": None}


def test_speed_table_in_milliseconds_with_the_setting_and_n_a_for_untimed_groups():
    from workbench.engine.timing import InferenceSpeed

    cpu = "cpu, 1 thread, batch 2"
    speeds = {"a0": InferenceSpeed(0.010, "cpu", 1, 2), "a1": InferenceSpeed(0.014, "cpu", 1, 2), "a3": None,
              "b0": InferenceSpeed(0.002, "cuda:0 (H100)", 16, 8)}
    rows = speed_table_rows(group_runs(runs()), speeds)
    assert rows["alpha/tiny"] == {SPEED_COLUMN: "12.0 ± 2.8", "timed runs": "2 of 3", "measured on": cpu}
    assert rows["beta/tiny"] == {SPEED_COLUMN: "2.0", "timed runs": "1 of 1",
                                 "measured on": "cuda:0 (H100), 16 threads, batch 8"}
    # a run written before timing was recorded: no number, not a crash
    assert rows["alpha/large"] == {SPEED_COLUMN: "n/a", "timed runs": "0 of 1", "measured on": "n/a"}
