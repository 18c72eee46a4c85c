"""benchmarks/demo_estimate.py: the arithmetic of the demo's estimated training time."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"


@pytest.fixture(scope="module")
def estimate():
    patch = pytest.MonkeyPatch()
    patch.syspath_prepend(str(BENCHMARKS))  # the script imports its neighbour `timing`
    spec = importlib.util.spec_from_file_location("demo_estimate", BENCHMARKS / "demo_estimate.py")
    module = importlib.util.module_from_spec(spec)
    patch.setitem(sys.modules, spec.name, module)  # where its dataclass looks itself up
    spec.loader.exec_module(module)
    yield module
    patch.undo()


def test_the_reference_run_is_estimated_at_its_own_time(estimate):
    ref = estimate.Reference()
    assert ref.seconds_per_image() == pytest.approx((559.0 - 750 * 0.64) / 800)
    assert estimate.run_seconds(ref, 250, 3, 1.0, 1.0) == pytest.approx(559.0)


def test_a_shorter_cheaper_run_costs_its_steps_and_two_passes(estimate):
    ref = estimate.Reference()
    passes = 2 * 200 * 2.0 * ref.seconds_per_image()
    assert estimate.run_seconds(ref, 250, 1, 0.5, 2.0) == pytest.approx(250 * 0.64 * 0.5 + passes)


def test_runs_sharing_cores_fairly(estimate):
    finish = estimate.shared_finish_time
    assert finish([100.0, 120.0], cores=2) == pytest.approx(120.0)  # a core each
    assert finish([100.0, 100.0, 100.0, 100.0], cores=2) == pytest.approx(200.0)  # half a core each
    # 4 at half a core until 40 is done (80 s), 3 at 2/3 until 60 (30 s), then a core each
    assert finish([40.0, 60.0, 100.0, 110.0], cores=2) == pytest.approx(80.0 + 30.0 + 40.0 + 10.0)
    assert finish([50.0, 10.0], cores=1) == pytest.approx(60.0)
