"""benchmarks/bench_trace_size.py on a trained run: ``--run METHOD=RUN_DIR`` traces the run's
last checkpoint on its own validation images at its own input, then at COCO's input size, and
the per-image figure adds the anchor files amortised over the input sizes."""

from __future__ import annotations

import argparse

import pytest
from benchmark_scripts import load_benchmark
from detector_support import SMALL_TWO_STAGE_96, shapes_96, small_run_fixture

run_dir = small_run_fixture("faster_rcnn", data=shapes_96(train=4, val=2), epochs=1, batch_size=2,
                            model_overrides=SMALL_TWO_STAGE_96)


@pytest.fixture(scope="module")
def bench():
    return load_benchmark("bench_trace_size")


def test_run_arguments_name_a_registered_method_and_a_run_with_a_checkpoint(bench, run_dir, tmp_path):
    assert bench.parse_run(f"faster_rcnn={run_dir}") == ("faster_rcnn", run_dir)
    with pytest.raises(argparse.ArgumentTypeError, match="METHOD=RUN_DIR"):
        bench.parse_run(f"no_such_method={run_dir}")
    with pytest.raises(argparse.ArgumentTypeError, match="METHOD=RUN_DIR"):
        bench.parse_run(str(run_dir))
    with pytest.raises(argparse.ArgumentTypeError, match="no checkpoints/last.pt"):
        bench.parse_run(f"faster_rcnn={tmp_path}")


def test_a_trained_run_is_traced_at_its_own_input_and_at_coco_size(bench, run_dir, tmp_path):
    own, coco = bench.trace_run("faster_rcnn", run_dir, 1, tmp_path)
    assert (own["images"], own["network"], own["sizes"]) == ("val, 96 x 96", "96 / 96", 1)
    assert (coco["images"], coco["network"], coco["sizes"]) == ("val resized to 800 x 1333", "800 / 1333", 35)
    for row, folder in ((own, "own"), (coco, "coco")):
        shards = list((tmp_path / folder).glob("shard-*.npz"))
        assert len(shards) == 1 and row["shard"] == shards[0].stat().st_size
        assert row["arrays"] > row["shard"] > 0
        assert "rpn_proposals" in row["records"] and sum(row["records"].values()) <= row["shard"]
        assert bench.per_image_bytes(row) == row["shard"] + row["shared"] * row["sizes"] / bench.TRACED_IMAGES
    # The anchors of an 800 x 1333 input outnumber those of a 96 x 96 one about 116-fold.
    assert coco["shared"] > 50 * own["shared"]
    with pytest.raises(SystemExit, match="is a faster_rcnn run, not kl_rpn"):
        bench.trace_run("kl_rpn", run_dir, 1, tmp_path / "wrong")
