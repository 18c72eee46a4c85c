"""Training-time records of how a two-stage detector's box stage samples its RoIs.

Why: Libra R-CNN's hard-negative statistic (Pang et al., CVPR 2019, section 3.1: about 60% of
the hard negatives lie above IoU 0.05, random sampling picks about 30% there) is a property of
the candidates the box stage sees *while it trains*. Re-running two samplers on a finished
model's proposals shows only the end of training, on proposals the sampler never saw; these
records are what the configured sampler was given and what it picked, step by step.

With ``TrainConfig.trace_sampling_every = N > 0`` the trainer registers :class:`SamplingTrace`.
At steps 1, N + 1, 2N + 1, ... (1-based) it records, for the first
``TrainConfig.trace_sampling_images`` images of the batch (of the main process), the
:data:`workbench.records.BOX_SAMPLING` record of the first box stage that trains (the stage that
samples the RPN's proposals; ``model.roi_heads.stages``): every candidate's best IoU with the
GT, its assigned label, whether the stage's sampler picked it, and what a uniform random sampler
of the same size and positive fraction (:class:`~workbench.modeling.assignment.RandomSampler`)
picks from the same assignment, for the comparison. Any two-stage method qualifies, whatever its
sampler; a model without such a stage is refused.

Decisions:

- The stage's sampler is wrapped (:class:`RecordingSampler`), nothing in the model changes: the
  wrapper returns exactly what the sampler returns, and the random comparison draws from its
  own CPU generator seeded with the run's seed and the step, so recording changes neither the
  sampled RoIs nor the training's random stream.
- The records go to ``RUN/train_sampling/`` as a trace directory
  (:mod:`workbench.inspection.traces`, one entry per recorded image and step; an image recorded
  at several steps appears once per step), beside and not inside ``RUN/traces/`` so the
  prediction traces' splits stay what they were. The directory is rewritten after every epoch
  and at the end of training; a resumed run keeps the records of the steps it had done.
- Cost: off by default (nothing installed). A recorded step copies ``A`` IoUs and labels of a
  few images to the CPU and draws one random sample per image (``A`` ~ 2,000 proposals: tens of
  kilobytes per image).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from workbench import distributed
from workbench import records as R
from workbench.engine.hooks import HookBase
from workbench.errors import ConfigError
from workbench.modeling.assignment import Assignment, RandomSampler, Sampler

#: Where a run keeps its sampling records.
SAMPLING_DIR = "train_sampling"


def sampling_trace_dir(run_dir: Path | str) -> Path:
    """``RUN/train_sampling``: the trace directory of a run's sampling records."""
    return Path(run_dir) / SAMPLING_DIR


def training_box_stage(model: nn.Module) -> tuple[Any, int]:
    """The RoI heads of a two-stage ``model`` and the position of its first box stage that
    trains (``in_training``, on the RPN's proposals or a generator's boxes). Raises
    ``ConfigError`` for a model without one (a single-stage detector samples no RoIs)."""
    heads = getattr(model, "roi_heads", None)
    stages = getattr(heads, "stages", None) or ()
    for index, stage in enumerate(stages):
        if stage.in_training:
            return heads, index
    raise ConfigError(f"recording the box stage's sampling needs a two-stage model with a box stage that trains; "
                      f"{type(model).__name__} has none (set trace_sampling_every to 0)")


def random_counterpart(sampler: Sampler) -> RandomSampler | None:
    """The uniform random sampler drawing as many RoIs with the same positive fraction as
    ``sampler`` (``None`` when the sampler has no ``num_samples`` / ``positive_fraction``)."""
    size, fraction = getattr(sampler, "num_samples", None), getattr(sampler, "positive_fraction", None)
    return None if size is None or fraction is None else RandomSampler(int(size), float(fraction))


def sampling_record(
    assignment: Assignment,
    sampled: Tensor,
    random_sampled: Tensor | None,
    step: int,
) -> dict[str, Tensor]:
    """The :data:`~workbench.records.BOX_SAMPLING` record of one image (CPU tensors): the
    candidates' ``max_iou`` (float32), ``labels`` (int16: classes fit), the ``sampled`` and
    ``random_sampled`` masks and the ``step``."""
    record = {
        R.MAX_IOU: assignment.max_iou.detach().to("cpu", torch.float32),
        R.LABELS: assignment.labels.detach().to("cpu", torch.int16),
        R.SAMPLED: sampled.detach().to("cpu", torch.bool),
        R.STEP: torch.tensor(int(step), dtype=torch.int64),
    }
    if random_sampled is not None:
        record[R.RANDOM_SAMPLED] = random_sampled.detach().to("cpu", torch.bool)
    return record


class RecordingSampler(Sampler):
    """A box stage's sampler that records, while armed (:meth:`arm`), one
    :func:`sampling_record` per call (one call per image, in batch order). It returns exactly
    what the wrapped sampler returns."""

    def __init__(self, inner: Sampler, seed: int = 0) -> None:
        self.inner = inner
        self.random = random_counterpart(inner)
        self.seed = int(seed)
        self.records: list[dict[str, Tensor]] = []
        self._pending = 0
        self._step = 0

    def arm(self, step: int, images: int) -> None:
        """Record the next ``images`` calls as step ``step``."""
        self._step, self._pending = int(step), int(images)

    def take(self) -> list[dict[str, Tensor]]:
        """The records since the last :meth:`take`; disarms."""
        taken, self.records, self._pending = self.records, [], 0
        return taken

    def sample(self, assignment: Assignment, generator: torch.Generator | None,
               losses: Tensor | None) -> tuple[Tensor, Tensor]:
        pos, neg = self.inner(assignment, generator, losses)
        if self._pending > 0:
            self._pending -= 1
            self.records.append(sampling_record(assignment, pos | neg, self._random_pick(assignment), self._step))
        return pos, neg

    def _random_pick(self, assignment: Assignment) -> Tensor | None:
        if self.random is None:
            return None
        on_cpu = Assignment(assignment.labels.cpu(), assignment.matched_gt.cpu(), assignment.max_iou.cpu())
        # One stream per (seed, step, image of the step): reproducible and apart from training's.
        stream = torch.Generator().manual_seed(self.seed * 1_000_003 + self._step * 1_009 + len(self.records))
        pos, neg = self.random(on_cpu, stream)
        return pos | neg

    def __repr__(self) -> str:
        return f"RecordingSampler({self.inner!r})"


class SamplingTrace(HookBase):
    """Records the box stage's sampling every ``every`` steps on the first ``images`` images of
    the batch and writes the records to ``out_dir`` (see the module docstring).

    Reads the trainer's ``model``, ``global_step`` and ``batch`` (``image_ids``, ``file_names``,
    ``orig_sizes``). ``method`` and ``meta`` go into the trace manifest."""

    def __init__(
        self,
        out_dir: Path | str,
        *,
        every: int,
        images: int,
        method: str,
        split: str = "train",
        seed: int = 0,
        meta: Mapping[str, Any] | None = None,
    ) -> None:
        if every < 1 or images < 1:
            raise ConfigError(f"sampling records need every >= 1 and images >= 1, got {every} and {images}")
        self.out_dir = Path(out_dir)
        self.every, self.images = int(every), int(images)
        self.method, self.split, self.seed = method, split, int(seed)
        self.meta = dict(meta or {})
        self.traces: list[Any] = []
        self.recorder: RecordingSampler | None = None
        self._heads: Any = None
        self._index = 0

    # -- installing the recorder -------------------------------------------------------------
    def before_train(self) -> None:
        from workbench.engine.inference import unwrap

        self._heads, self._index = training_box_stage(unwrap(self.trainer.model))
        stage = self._heads.stages[self._index]
        self.recorder = RecordingSampler(stage.sampler, self.seed)
        self._set_sampler(self.recorder)
        self.meta.update(stage=stage.name, sampler=repr(stage.sampler), random=repr(self.recorder.random),
                         every=self.every, images=self.images)
        self.traces = self._earlier_records(self.trainer.global_step)

    def _set_sampler(self, sampler: Sampler) -> None:
        stages = list(self._heads.stages)
        stages[self._index] = dataclasses.replace(stages[self._index], sampler=sampler)
        self._heads.stages = tuple(stages)

    def _earlier_records(self, done_steps: int) -> list[Any]:
        """The records of steps up to ``done_steps`` already on disk (a resumed run)."""
        if done_steps == 0 or not (self.out_dir / "manifest.json").is_file():
            return []
        from workbench.inspection.traces import load_traces

        return [trace for trace in load_traces(self.out_dir)
                if int(trace[R.BOX_SAMPLING][R.STEP]) <= done_steps]

    # -- recording ---------------------------------------------------------------------------
    def before_step(self) -> None:
        step = self.trainer.global_step
        if step % self.every == 0 and distributed.is_main_process():
            self.recorder.arm(step + 1, self.images)

    def after_step(self) -> None:
        from workbench.inspection.traces import ImageTrace

        batch = self.trainer.batch
        for i, record in enumerate(self.recorder.take()):
            self.traces.append(ImageTrace(int(batch.image_ids[i]), str(batch.file_names[i]),
                                          tuple(batch.orig_sizes[i]), {R.BOX_SAMPLING: record}))

    def after_epoch(self) -> None:
        self.write()

    def after_train(self) -> None:
        if self.recorder is None:
            return
        self.write()
        self._set_sampler(self.recorder.inner)

    def write(self) -> Path | None:
        """Rewrite ``out_dir`` with every record so far (main process; nothing to write: no-op)."""
        if not self.traces or not distributed.is_main_process():
            return None
        from workbench.inspection.traces import save_traces

        return save_traces(self.traces, self.out_dir, method=self.method, split=self.split, meta=self.meta)


__all__ = [
    "RecordingSampler",
    "SAMPLING_DIR",
    "SamplingTrace",
    "random_counterpart",
    "sampling_record",
    "sampling_trace_dir",
    "training_box_stage",
]
