"""Inference speed per image: the timer of the prediction loop and a run's recorded speed."""

from __future__ import annotations

import time

import pytest
import torch
from torch import nn

from workbench.data.sample import Sample
from workbench.engine.inference import predict_dataset
from workbench.engine.timing import (
    SECONDS_PER_IMAGE,
    InferenceSpeed,
    InferenceTimer,
    run_speed,
    speed_of,
    without_timing,
)
from workbench.structures import Detections, DetectorOutput


class Sleeper(nn.Module):
    """Sleeps ``first`` seconds on its first call and ``per_image`` seconds an image after."""

    def __init__(self, first: float, per_image: float) -> None:
        super().__init__()
        self.first, self.per_image, self.calls = first, per_image, 0

    def forward(self, images, targets=None, recorder=None):
        time.sleep(self.first if self.calls == 0 else self.per_image * len(images))
        self.calls += 1
        empty = Detections(torch.zeros(0, 4), torch.zeros(0), torch.zeros(0, dtype=torch.long))
        return DetectorOutput(raw={}, detections=[empty for _ in images])


def _dataset(n: int) -> list[Sample]:
    return [Sample.from_arrays(torch.zeros((3, 4, 4), dtype=torch.uint8), [[0, 0, 2, 2]], [1], [False], i, f"{i}.png")
            for i in range(n)]


def test_the_first_batch_is_a_warm_up_and_the_rest_is_forward_time_per_image():
    timer = InferenceTimer("cpu", batch_size=2)
    predict_dataset(Sleeper(first=0.3, per_image=0.02), _dataset(5), torch.device("cpu"), batch_size=2, timer=timer)
    assert [n for n, _ in timer.batches] == [2, 2, 1]
    record = timer.record()
    assert record["inference_images"] == 3  # the warm-up batch of 2 is left out
    assert 0.02 <= record[SECONDS_PER_IMAGE] < 0.1  # the 0.3 s warm-up would make it >= 0.07 + 0.02
    assert record["inference_device"] == "cpu" and record["inference_batch_size"] == 2
    assert record["inference_threads"] == torch.get_num_threads()


def test_a_single_batch_counts_and_no_batch_records_nothing():
    timer = InferenceTimer("cpu", batch_size=4)
    timer.add(3, 0.3)
    assert timer.seconds_per_image() == pytest.approx(0.1)
    assert InferenceTimer("cpu", batch_size=1).record() == {}


def test_a_failing_batch_is_not_timed():
    timer = InferenceTimer("cpu", batch_size=1)
    with pytest.raises(RuntimeError), timer.batch(1):
        raise RuntimeError("forward failed")
    assert timer.batches == []


def test_a_run_speed_comes_from_its_final_metrics_else_its_last_timed_evaluation():
    timed = {"AP": 0.5, SECONDS_PER_IMAGE: 0.25, "inference_device": "cpu", "inference_threads": 1,
             "inference_batch_size": 2}
    records = [{"kind": "eval", "epoch": 1, **timed}, {"kind": "eval", "epoch": 2, **timed, SECONDS_PER_IMAGE: 0.2},
               {"kind": "train", SECONDS_PER_IMAGE: 9.0}]
    assert run_speed(timed, records).seconds_per_image == 0.25
    assert run_speed({"AP": 0.5}, records) == InferenceSpeed(0.2, "cpu", 1, 2, None)  # a traced final pass
    assert run_speed({"AP": 0.5}, [{"kind": "eval", "AP": 0.4}]) is None  # a run from before timing
    assert speed_of(None) is None and speed_of({SECONDS_PER_IMAGE: None}) is None
    assert InferenceSpeed(0.2, "cpu", 1, 2).setting == "cpu, 1 thread, batch 2"
    assert InferenceSpeed(0.2, "cuda:0 (H100)", 16).setting == "cuda:0 (H100), 16 threads"
    assert without_timing(timed) == {"AP": 0.5}
