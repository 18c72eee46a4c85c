"""A two-step Libra R-CNN run with the box stage's sampling recorded at every step: the records
are in the run directory, say what the IoU-balanced sampler was given and picked, and the
hard-negative figure is built from them."""

from __future__ import annotations

import numpy as np
import pytest
from detector_support import SMALL_TWO_STAGE_96, shapes_96, small_run_fixture, trained_small_run

from workbench import records as R
from workbench.inspection.sampling import load_sampling_traces, recorded_steps
from workbench.methods.libra.analysis import ALL, IOU_BALANCED, RANDOM, recorded_negative_ious
from workbench.viz.sampling import negative_iou_figure, share_above

DATA = shapes_96(train=4, val=2)
PER_IMAGE = SMALL_TWO_STAGE_96["box_batch_size_per_image"]


run_dir = small_run_fixture("libra_rcnn", data=DATA, epochs=1, batch_size=2, trace_sampling_every=1, max_val_images=1,
                            model_overrides=SMALL_TWO_STAGE_96)


def test_every_step_records_the_first_images_of_its_batch(run_dir):
    traces = load_sampling_traces(run_dir)
    assert traces is not None and traces.method == "libra_rcnn"
    assert recorded_steps(traces) == [1, 2] and len(traces) == 4  # two steps, two images each
    assert traces.meta["sampler"].startswith("IoUBalancedSampler(") and traces.meta["stage"] == "rcnn"
    for trace in traces:
        record = trace[R.BOX_SAMPLING]
        count = record[R.MAX_IOU].shape[0]
        assert count > 100  # the proposals, then the GT boxes the stage appends
        assert all(record[f].shape == (count,) for f in (R.LABELS, R.SAMPLED, R.RANDOM_SAMPLED))
        assert int(record[R.SAMPLED].sum()) == int(record[R.RANDOM_SAMPLED].sum()) == PER_IMAGE
        # the appended GT boxes overlap their GT fully and are positives
        assert float(record[R.MAX_IOU].max()) == pytest.approx(1.0)


def test_the_hard_negative_figure_comes_from_the_records(run_dir):
    ious = recorded_negative_ious(run_dir)
    assert list(ious) == [ALL, RANDOM, IOU_BALANCED]
    assert ious[ALL].size > ious[RANDOM].size > 0 and ious[IOU_BALANCED].size == ious[RANDOM].size
    assert ious[ALL].max() < 0.5  # negatives only (the matcher's background threshold)
    fig = negative_iou_figure(ious, threshold=0.05)
    shares = {t.meta["layer"]: t.meta["share_above"] for t in fig.data}
    assert set(shares) == {ALL, RANDOM, IOU_BALANCED}
    for name, values in ious.items():
        assert shares[name] == pytest.approx(share_above(values, 0.05))
        assert 0.0 <= shares[name] <= 1.0 and np.isfinite(shares[name])
    # IoU-balanced sampling spreads its negatives over the IoU range: more of them are hard
    assert shares[IOU_BALANCED] > shares[RANDOM]


def test_a_run_without_the_option_has_no_records(tmp_path):
    assert load_sampling_traces(tmp_path) is None and recorded_negative_ious(tmp_path) is None


def test_the_comparison_reads_the_records_of_the_second_half(run_dir):
    import importlib.util
    from pathlib import Path

    script = Path(__file__).resolve().parents[2] / "benchmarks" / "compare_libra.py"
    spec = importlib.util.spec_from_file_location("compare_libra", script)
    compare = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(compare)
    shares = compare.recorded_hard_negative_shares(run_dir)
    late = recorded_negative_ious(run_dir, min_step=2)
    assert shares == {name: pytest.approx(share_above(values, 0.05)) for name, values in late.items()}


def test_a_random_sampling_baseline_records_its_own_picks_as_the_random_set(tmp_path_factory):
    with trained_small_run(tmp_path_factory, "faster_rcnn", data=DATA, epochs=1, batch_size=2, trace_sampling_every=2,
                           max_val_images=1, model_overrides=SMALL_TWO_STAGE_96) as out:
        traces = load_sampling_traces(out)
        assert recorded_steps(traces) == [1] and traces.meta["sampler"].startswith("RandomSampler(")
        ious = recorded_negative_ious(out)
    assert list(ious) == [ALL, RANDOM]
    picked = np.concatenate([t[R.BOX_SAMPLING][R.MAX_IOU][(t[R.BOX_SAMPLING][R.LABELS] == 0)
                                                          & t[R.BOX_SAMPLING][R.SAMPLED]].numpy() for t in traces])
    np.testing.assert_array_equal(ious[RANDOM], picked)
