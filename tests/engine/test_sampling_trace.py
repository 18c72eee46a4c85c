"""Training-time records of the box stage's sampling: the sampler wrapper changes nothing it
returns or draws, records only while armed, and the hook finds the stage of any two-stage model
and refuses a model without one."""

from __future__ import annotations

import dataclasses
from types import SimpleNamespace

import pytest
import torch

from workbench import records as R
from workbench.config import TrainConfig
from workbench.engine.sampling_trace import (
    RecordingSampler,
    SamplingTrace,
    random_counterpart,
    training_box_stage,
)
from workbench.errors import ConfigError
from workbench.inspection.sampling import ALL_NEGATIVES, RANDOM_SAMPLER, STAGE_SAMPLER, sampled_negative_ious
from workbench.inspection.traces import ImageTrace
from workbench.modeling.assignment import AllCandidates, Assignment, RandomSampler


def assignment(seed: int = 0, size: int = 300) -> Assignment:
    g = torch.Generator().manual_seed(seed)
    max_iou = torch.rand(size, generator=g) * 0.9
    labels = torch.where(max_iou >= 0.5, torch.randint(1, 4, (size,), generator=g), torch.zeros(size, dtype=torch.int64))
    labels[:3] = -1
    return Assignment(labels, torch.randint(0, 5, (size,), generator=g), max_iou)


def test_the_wrapper_returns_what_the_sampler_returns_and_draws_nothing_from_training():
    inner = RandomSampler(64, 0.25)
    recorder = RecordingSampler(inner, seed=3)
    a = assignment()
    recorder.arm(step=7, images=1)
    g_wrapped, g_plain = torch.Generator().manual_seed(5), torch.Generator().manual_seed(5)
    pos, neg = recorder(a, g_wrapped)
    expected_pos, expected_neg = inner(a, g_plain)
    assert torch.equal(pos, expected_pos) and torch.equal(neg, expected_neg)
    # the comparison's random draw used its own stream: the training generator is where the plain one is
    assert torch.equal(g_wrapped.get_state(), g_plain.get_state())
    (record,) = recorder.take()
    assert int(record[R.STEP]) == 7 and torch.equal(record[R.SAMPLED], pos | neg)
    assert record[R.LABELS].dtype == torch.int16 and torch.equal(record[R.LABELS].long(), a.labels)
    assert int(record[R.RANDOM_SAMPLED].sum()) == 64
    assert not torch.equal(record[R.RANDOM_SAMPLED], record[R.SAMPLED])  # another draw


def test_only_armed_calls_are_recorded_and_take_disarms():
    recorder = RecordingSampler(RandomSampler(32, 0.25))
    recorder(assignment(0))
    assert recorder.take() == []
    recorder.arm(step=1, images=2)
    for seed in range(3):
        recorder(assignment(seed))
    assert len(recorder.take()) == 2
    recorder(assignment(4))
    assert recorder.take() == []


def test_a_sampler_without_a_size_has_no_random_comparison():
    assert random_counterpart(AllCandidates()) is None
    assert random_counterpart(RandomSampler(512, 0.25)) == RandomSampler(512, 0.25)
    recorder = RecordingSampler(AllCandidates())
    recorder.arm(step=1, images=1)
    recorder(assignment())
    (record,) = recorder.take()
    assert R.RANDOM_SAMPLED not in record


def test_negative_ious_come_from_the_records():
    a = assignment(1)
    recorder = RecordingSampler(RandomSampler(64, 0.25))
    recorder.arm(step=1, images=1)
    _, neg = recorder(a)
    (record,) = recorder.take()
    trace = ImageTrace(0, "x.png", (10, 10), {R.BOX_SAMPLING: record})
    ious = sampled_negative_ious([trace])
    assert torch.equal(torch.from_numpy(ious[ALL_NEGATIVES]), a.max_iou[a.labels == 0])
    assert torch.equal(torch.from_numpy(ious[STAGE_SAMPLER]), a.max_iou[neg])
    assert ious[RANDOM_SAMPLER].size == int((record[R.RANDOM_SAMPLED] & (a.labels == 0)).sum())
    assert all(v.size == 0 for v in sampled_negative_ious([trace], min_step=2).values())


def test_the_hook_refuses_a_model_without_a_box_stage(tmp_path):
    with pytest.raises(ConfigError, match="two-stage model"):
        training_box_stage(torch.nn.Linear(2, 2))
    hook = SamplingTrace(tmp_path / "s", every=1, images=1, method="m")
    hook.trainer = SimpleNamespace(model=torch.nn.Linear(2, 2), global_step=0)
    with pytest.raises(ConfigError, match="trace_sampling_every"):
        hook.before_train()


def test_recording_is_off_by_default():
    assert TrainConfig.__dataclass_fields__["trace_sampling_every"].default == 0


def test_the_train_command_takes_the_option():
    from workbench.cli import build_parser

    args = build_parser().parse_args(["train", "--out", "x", "--trace-sampling-every", "100"])
    assert args.trace_sampling_every == 100
    assert build_parser().parse_args(["train", "--out", "x"]).trace_sampling_every is None


def test_the_override_sets_the_option_and_refuses_a_negative_period():
    from workbench.config import apply_overrides
    from workbench.methods import build_preset

    cfg = build_preset("faster_rcnn", "tiny")
    assert apply_overrides(cfg, trace_sampling_every=5).trace_sampling_every == 5
    assert apply_overrides(cfg).trace_sampling_every == 0
    with pytest.raises(ConfigError, match="trace_sampling_every must be >= 0"):
        apply_overrides(cfg, trace_sampling_every=-1)


@dataclasses.dataclass(frozen=True)
class Stage:
    """What the hook reads of a box stage."""

    sampler: object
    in_training: bool = True
    name: str = "rcnn"


def run_steps(hook, trainer, steps):
    """Steps of a fake trainer whose model samples each image of a two-image batch."""
    for _ in range(steps):
        trainer.batch = SimpleNamespace(image_ids=[10 + trainer.global_step, 20], file_names=["a.png", "b.png"],
                                        orig_sizes=[(8, 8), (8, 8)])
        hook.before_step()
        for image in range(2):
            trainer.model.roi_heads.stages[1].sampler(assignment(trainer.global_step * 2 + image))
        trainer.global_step += 1
        hook.after_step()


def test_the_hook_records_every_nth_step_writes_and_restores_the_sampler(tmp_path):
    from workbench.inspection.sampling import load_sampling_traces, recorded_steps

    inner = RandomSampler(32, 0.25)
    model = SimpleNamespace(roi_heads=SimpleNamespace(stages=(Stage(None, in_training=False, name="refine"),
                                                              Stage(inner))))
    trainer = SimpleNamespace(model=model, global_step=0)
    hook = SamplingTrace(tmp_path / "train_sampling", every=2, images=1, method="m", seed=1)
    hook.trainer = trainer
    hook.before_train()
    assert isinstance(model.roi_heads.stages[1].sampler, RecordingSampler) and model.roi_heads.stages[0].sampler is None
    run_steps(hook, trainer, 5)
    hook.after_epoch()
    traces = load_sampling_traces(tmp_path)
    assert recorded_steps(traces) == [1, 3, 5] and len(traces) == 3  # one image per recorded step
    assert traces.image_ids == [10, 12, 14] and traces.meta["stage"] == "rcnn"
    assert traces.meta["sampler"] == repr(inner) and traces.meta["every"] == 2
    hook.after_train()
    assert model.roi_heads.stages[1].sampler is inner

    # a run resumed after step 3 keeps the records of steps 1 and 3 and records on
    resumed = SamplingTrace(tmp_path / "train_sampling", every=2, images=1, method="m", seed=1)
    trainer.global_step = 3
    resumed.trainer = trainer
    resumed.before_train()
    run_steps(resumed, trainer, 4)
    resumed.after_train()
    assert recorded_steps(load_sampling_traces(tmp_path)) == [1, 3, 5, 7]
