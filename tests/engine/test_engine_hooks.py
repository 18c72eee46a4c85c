"""The trainer of (model, loader, optimizer, hooks) on a toy problem, and the progress a person
sees when the output is not a terminal."""

from __future__ import annotations

import io
import re
from types import SimpleNamespace

import pytest
import torch
from engine_support import small_config
from torch import nn

from workbench.engine.hooks import HookBase, LRSchedule, Progress
from workbench.engine.progress import ProgressLines, format_duration
from workbench.engine.trainer import SimpleTrainer, train
from workbench.structures import DetectorOutput


class ToyDetector(nn.Module):
    """One weight fitted to the mean of the targets' box coordinates (a squared loss)."""

    def __init__(self) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.zeros(()))

    def forward(self, images, targets=None):
        goal = torch.stack([t["boxes"].mean() for t in targets]).mean()
        return DetectorOutput(losses={"loss_toy": (self.w - goal) ** 2})


def _batches(n: int) -> list:
    return [
        SimpleNamespace(images=[torch.zeros(3, 2, 2, dtype=torch.uint8)],
                        targets=[{"boxes": torch.full((1, 4), 2.0), "labels": torch.ones(1, dtype=torch.int64)}])
        for _ in range(n)
    ]


class Recorder(HookBase):
    def __init__(self, log: list, name: str) -> None:
        self.log, self.name = log, name

    def __getattribute__(self, attr):
        if attr in ("before_train", "after_train", "before_epoch", "after_epoch", "before_step", "after_step"):
            return lambda: self.log.append((self.name, attr, self.trainer.epoch, self.trainer.global_step))
        return object.__getattribute__(self, attr)


def _toy_trainer(hooks, epochs=2, steps=3, lr=0.1):
    model = ToyDetector()
    return SimpleTrainer(model, _batches(steps), torch.optim.SGD(model.parameters(), lr=lr), epochs=epochs, hooks=hooks)


def test_hooks_are_called_in_order_around_steps_and_epochs():
    log: list = []
    trainer = _toy_trainer([Recorder(log, "a"), Recorder(log, "b")], epochs=2, steps=2)
    trainer.train()
    calls = [(name, what) for name, what, _, _ in log]
    per_step = [("a", "before_step"), ("b", "before_step"), ("a", "after_step"), ("b", "after_step")]
    epoch = [("a", "before_epoch"), ("b", "before_epoch"), *per_step, *per_step, ("a", "after_epoch"), ("b", "after_epoch")]
    assert calls == [("a", "before_train"), ("b", "before_train"), *epoch, *epoch, ("a", "after_train"), ("b", "after_train")]
    # after_epoch sees the finished epoch counted; after_step sees the step counted
    assert [(e, s) for n, what, e, s in log if n == "a" and what == "after_epoch"] == [(1, 2), (2, 4)]
    assert trainer.global_step == 4 and trainer.step_values["loss"] >= 0
    assert float(trainer.model.w.detach()) == pytest.approx(2.0 * (1 - (1 - 0.2) ** 4))  # SGD on (w - 2)^2, lr 0.1


def test_lr_schedule_hook_sets_the_lr_of_each_step_and_a_stop_request_ends_cleanly():
    lrs = []

    class Watch(HookBase):
        def after_step(self):
            lrs.append(self.trainer.step_values["lr"])
            if self.trainer.global_step == 5:
                self.trainer.request_stop()

    trainer = _toy_trainer([LRSchedule(0.5, lambda step, per_epoch: 1.0 / (1 + step)), Watch()], epochs=3, steps=3)
    trainer.train()
    assert lrs == pytest.approx([0.5 / (1 + s) for s in range(5)])
    assert trainer.stop_requested and not trainer.failed
    assert (trainer.epoch, trainer.batch_in_epoch, trainer.global_step) == (1, 2, 5)


def test_after_train_runs_after_an_exception_and_says_it_failed():
    seen = {}

    class Boom(HookBase):
        def after_step(self):
            raise RuntimeError("boom")

    class Last(HookBase):
        def after_train(self):
            seen["failed"] = self.trainer.failed

    with pytest.raises(RuntimeError, match="boom"):
        _toy_trainer([Boom(), Last()]).train()
    assert seen == {"failed": True}


def test_format_duration():
    assert [format_duration(s) for s in (4.4, 65, 3 * 3600 + 125, float("nan"))] == ["4s", "1m05s", "3h02m", "?"]


LINE = re.compile(
    r"^epoch (\d+)/2 step (\d+)/(\d+) loss (\d+\.\d{4}) lr \S+ (\d+\.\d\d) s/step ETA (\d+s|\d+m\d\ds|\d+h\d\dm)$"
)


def test_a_training_that_is_not_on_a_terminal_logs_progress_lines_with_an_eta(small_shapes, tmp_path, capsys):
    cfg = small_config(small_shapes, epochs=2, log_every_steps=2)
    train(cfg, tmp_path / "run")  # progress=None: stderr is not a terminal under pytest's capture
    err = capsys.readouterr().err.splitlines()
    lines = [m for m in map(LINE.match, err) if m]
    # 4 steps an epoch, a line every 2 steps: steps 2 and 4 of each epoch
    assert [(int(m[1]), int(m[2]), int(m[3])) for m in lines] == [(1, 2, 4), (1, 4, 4), (2, 2, 4), (2, 4, 4)]
    assert all(float(m[4]) > 0 and float(m[5]) > 0 for m in lines)
    ends = [line for line in err if re.match(r"^epoch \d/2 done: step \d/8, \d+\.\d\d s/step, ETA \S+$", line)]
    assert len(ends) == 2
    evals = [line for line in err if re.match(r"^epoch \d/2 evaluation: AP \d\.\d{4} AP50 \d\.\d{4} AP75", line)]
    assert len(evals) == 2


def test_eta_is_the_remaining_steps_at_the_mean_pace_plus_the_remaining_epoch_ends():
    hook = Progress("lines")
    hook.trainer = SimpleNamespace(epochs=3, steps_per_epoch=10, epoch=1, batch_in_epoch=4)
    hook._step_seconds, hook._steps_timed = 21.0, 14  # 1.5 s a step
    assert hook.eta_seconds() == pytest.approx(16 * 1.5)
    hook._epoch_end_seconds = [4.0, 6.0]  # evaluation and checkpoints: 5 s an epoch end
    assert hook.eta_seconds() == pytest.approx(16 * 1.5 + 2 * 5.0)
    with pytest.raises(ValueError, match="progress mode"):
        Progress("loud")


def test_prediction_progress_lines_every_tenth_and_at_the_end():
    stream = io.StringIO()
    progress = ProgressLines(20, "predict", stream=stream)
    for _ in range(10):
        progress.update(2)
    progress.close()
    progress.close()  # once only
    lines = stream.getvalue().splitlines()
    counts = [int(re.match(r"^predict (\d+)/20 img, \d+\.\d\d s/img, ETA (\d+s|\d+m\d\ds)$", line)[1]) for line in lines]
    assert counts == [2, 4, 6, 8, 10, 12, 14, 16, 18, 20]
    assert lines[-1].endswith("ETA 0s")
