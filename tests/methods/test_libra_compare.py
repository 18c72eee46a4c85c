"""benchmarks/compare_libra.py: every row is the tiny preset of its method with only its
switches changed, and the tables read the results."""

from __future__ import annotations

import argparse
import dataclasses
import importlib.util
from pathlib import Path

import pytest

from workbench.methods import build_preset

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "compare_libra.py"


@pytest.fixture(scope="module")
def compare():
    spec = importlib.util.spec_from_file_location("compare_libra", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def args(**values):
    defaults = dict(data="builtin:shapes", epochs=None, model_overrides=None)
    defaults.update(values)
    return argparse.Namespace(**defaults)


def test_every_row_changes_only_its_switches(compare):
    for row, (method, changes) in compare.ROWS.items():
        cfg = compare.row_config(row, 1, args())
        preset = build_preset(method, "tiny")
        assert cfg.seed == 1 and cfg.method == method
        assert cfg.model == dataclasses.replace(preset.model, **changes), row
        assert (cfg.optimizer, cfg.schedule, cfg.batch_size) == (preset.optimizer, preset.schedule, preset.batch_size)
    loss_only = compare.row_config("libra_rcnn_loss_a0.3_g1", 0, args()).model
    assert (loss_only.alpha, loss_only.gamma, loss_only.balanced_l1) == (0.3, 1.0, True)
    assert not (loss_only.iou_balanced_sampling or loss_only.balanced_pyramid)
    assert compare.row_config("libra_rcnn_pos_balance", 0, args()).model.num_bins == 1


def test_overrides_reach_the_base_config(compare):
    cfg = compare.row_config("libra_retinanet", 0, args(model_overrides='{"min_size": 96, "balanced_l1": false}',
                                                        epochs=2))
    assert cfg.model.base.min_size == 96 and not cfg.model.balanced_l1 and cfg.schedule.epochs == 2


def test_tables(compare):
    results = {
        "faster_rcnn": [{"AP": 0.2, "AP50": 0.4, "hard_negatives": {"all negatives": 0.5, "random sampling": 0.25}},
                        {"AP": 0.4, "AP50": 0.5, "hard_negatives": {"all negatives": 0.7, "random sampling": 0.35}}],
        "retinanet": [{"AP": 0.1}],
    }
    text = compare.ap_table(results)
    assert "| faster_rcnn | 2 | 0.3000 ± 0.1414 | 0.4500 ± 0.0707 | - |" in text
    assert "| retinanet | 1 | 0.1000 | - |" in text
    assert "| faster_rcnn | 60.0% | 30.0% |" in text


def test_the_hard_negative_table_marks_a_set_a_row_lacks(compare):
    results = {
        "faster_rcnn": [{"AP": 0.2, "hard_negatives": {"all negatives": 0.5, "random sampling": 0.25}}],
        "libra_rcnn": [{"AP": 0.3, "hard_negatives": {"all negatives": 0.6, "random sampling": 0.3,
                                                      "IoU-balanced sampling": 0.55}}],
    }
    text = compare.ap_table(results)
    assert "| row | all negatives | random sampling | IoU-balanced sampling |" in text
    assert "| faster_rcnn | 50.0% | 25.0% | - |" in text and "| libra_rcnn | 60.0% | 30.0% | 55.0% |" in text


def test_the_option_reaches_new_runs_only_when_given(compare):
    assert compare.row_config("libra_rcnn", 0, args()).trace_sampling_every == 0
    assert compare.row_config("libra_rcnn", 0, args(trace_sampling_every=50)).trace_sampling_every == 50
