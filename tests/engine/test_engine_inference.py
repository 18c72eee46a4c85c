"""The one prediction loop: batching, evaluation mode, recorders, and what it gives back."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from workbench.data.sample import Sample
from workbench.engine.inference import iter_model_outputs, predict_dataset
from workbench.engine.trainer import SimpleTrainer
from workbench.errors import ConfigError
from workbench.structures import Detections, DetectorOutput


class Probe(nn.Module):
    """Returns one box per image whose score is the image's mean pixel; remembers its calls."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[dict] = []
        self.scale = nn.Parameter(torch.ones(()))

    def forward(self, images, targets=None, recorder=None):
        self.calls.append({"n": len(images), "training": self.training, "grad": torch.is_grad_enabled(),
                           "recorder": recorder, "dtype": images[0].dtype, "max": max(float(i.max()) for i in images)})
        if recorder is not None:
            recorder.append(len(images))
        dets = [Detections(torch.tensor([[0.0, 0.0, 2.0, 2.0]]), (img.mean() * self.scale).reshape(1),
                           torch.tensor([1])) for img in images]
        return DetectorOutput(raw={"n": len(images)}, detections=dets)


def _dataset(n: int) -> list[Sample]:
    return [Sample.from_arrays(torch.full((3, 4, 4), 10 * (i + 1), dtype=torch.uint8), [[0, 0, 2, 2]], [1], [False],
                               100 + i, f"{i}.png") for i in range(n)]


def test_batches_in_order_in_eval_mode_without_grad_then_the_mode_is_restored():
    model = Probe().train()
    outputs = list(iter_model_outputs(model, _dataset(5), "cpu", indices=[4, 0, 2], batch_size=2,
                                      recorder_factory=list))
    assert [o.batch.image_ids for o in outputs] == [[104, 100], [102]]
    assert [c["n"] for c in model.calls] == [2, 1]
    assert not any(c["training"] or c["grad"] for c in model.calls)
    assert all(c["dtype"] == torch.float32 and c["max"] <= 1.0 for c in model.calls)  # uint8 -> [0, 1]
    assert [o.recorder for o in outputs] == [[2], [1]]  # a fresh recorder per batch, filled by the model
    assert model.training


def test_predict_dataset_gives_cpu_detections_sorted_by_image_id():
    model = Probe().eval()
    preds = predict_dataset(model, _dataset(3), torch.device("cpu"), indices=[2, 1], batch_size=1)
    assert [p.image_id for p in preds] == [101, 102]
    assert [float(p.detections.scores) for p in preds] == pytest.approx([20 / 255, 30 / 255])
    assert all(c["recorder"] is None for c in model.calls) and not model.training


def test_amp_on_the_cpu_is_refused_with_a_config_error():
    model = Probe()
    batch = type("B", (), {"images": [torch.zeros(3, 2, 2, dtype=torch.uint8)], "targets": [{}]})()
    trainer = SimpleTrainer(model, [batch], torch.optim.SGD(model.parameters(), lr=0.1), epochs=1, amp="bf16")
    with pytest.raises(ConfigError, match="needs a CUDA device"):
        trainer.train()
