"""Estimated wall time of the demo's training group (``pipelines/demo.yaml``) from short runs.

The demo's training runs form one pipeline group: they start together, one torch thread each,
on the machine's cores. Only the ``faster_rcnn`` run of that group has been timed on the quiet
machine (docs/benchmarks.md, "The demo": 559 s for 750 steps at 0.64 s a step, with 3
evaluations and the trace pass over the 200 validation images). This script measures, in one
process at one thread, the CPU time of a training step (data included) and of inference per
image of every run's method and preset, the methods interleaved step by step so that a busy
machine disturbs their ratios little, and scales that reference by them:

    run seconds = steps per epoch x epochs x 0.64 s x (step ratio to faster_rcnn)
                  + (epochs + 1) passes x 200 images x (reference s per image) x (inference ratio)

(a pass per epoch's evaluation and the train notebook's pass with traces). Runs that share the
cores fairly (every run gets ``cores / running`` of a core, at most one) finish at
:func:`shared_finish_time`.

    .venv/bin/python benchmarks/demo_estimate.py --steps 30

Prints a markdown table for docs/benchmarks.md. Not a measurement of the demo: the exports and
notebooks are outside it, and the reference's quiet-machine speed is assumed for every run.
"""

from __future__ import annotations

import argparse
import itertools
from dataclasses import dataclass
from pathlib import Path

import torch
from timing import interleaved, median_cpu

from workbench.data.collate import collate_samples
from workbench.engine.inference import images_to_model_input, targets_to_device
from workbench.engine.trainer import _load_data as load_data
from workbench.engine.trainer import build_optimizer, seed_everything
from workbench.methods import get_method
from workbench.pipelines import load_pipeline
from workbench.pipelines.params import train_config

PIPELINE = Path(__file__).resolve().parents[1] / "pipelines" / "demo.yaml"
CPU = torch.device("cpu")


@dataclass(frozen=True)
class Reference:
    """The timed ``faster_rcnn`` ``tiny`` run of the demo on the quiet machine, one thread beside
    ``kl_rpn`` (docs/benchmarks.md, "The demo")."""

    method: str = "faster_rcnn"
    seconds: float = 559.0
    steps: int = 750
    seconds_per_step: float = 0.64
    passes: int = 4  # 3 per-epoch evaluations and the pass with traces
    images: int = 200

    def seconds_per_image(self) -> float:
        """What the run spent outside its training steps, per image of its passes."""
        return (self.seconds - self.steps * self.seconds_per_step) / (self.passes * self.images)


def run_seconds(ref: Reference, steps: int, epochs: int, step_ratio: float, image_ratio: float) -> float:
    """Estimated seconds of a run of ``epochs`` x ``steps`` at one thread beside other runs (see
    the module docstring)."""
    training = steps * epochs * ref.seconds_per_step * step_ratio
    passes = (epochs + 1) * ref.images * ref.seconds_per_image() * image_ratio
    return training + passes


def shared_finish_time(work: list[float], cores: int) -> float:
    """When the last of ``work`` (seconds on a core of their own) ends if all start together and
    share ``cores`` fairly: each running job advances at ``min(1, cores / running)``, so the
    shortest ends first and the others speed up."""
    elapsed, done = 0.0, 0.0
    remaining = sorted(work)
    for index, amount in enumerate(remaining):
        rate = min(1.0, cores / (len(remaining) - index))
        elapsed += (amount - done) / rate
        done = amount
    return elapsed


def training_step(cfg):
    """One training step of ``cfg``'s model on its own data (batch, transforms, optimizer)."""
    seed_everything(cfg.seed)
    train_set, _ = load_data(cfg)
    model = get_method(cfg.method).build_model(cfg.model, len(train_set.categories)).train()
    optimizer = build_optimizer(model, cfg, cfg.effective_lr())
    batches = iter(torch.utils.data.DataLoader(train_set, batch_size=cfg.batch_size, shuffle=True,
                                               collate_fn=collate_samples, generator=torch.Generator().manual_seed(0)))

    def step() -> None:
        batch = next(batches)
        losses = model(images_to_model_input(batch.images, CPU), targets_to_device(batch.targets, CPU)).losses
        optimizer.zero_grad(set_to_none=True)
        sum(losses.values()).backward()
        optimizer.step()

    return step, len(train_set) // cfg.batch_size, model


def inference(model, cfg, batch_size: int = 4):
    """Inference of ``model`` on successive batches of ``cfg``'s validation images."""
    from workbench.data.sources import open_dataset

    method = get_method(cfg.method)
    val = open_dataset(cfg.data.spec, cfg.data.val_split, transforms=method.evaluation_transforms(cfg))
    batches = [collate_samples([val[i] for i in range(b * batch_size, (b + 1) * batch_size)]) for b in range(4)]
    calls = itertools.count()

    def run() -> None:
        model.eval()
        with torch.no_grad():
            model(images_to_model_input(batches[next(calls) % len(batches)].images, CPU))
        model.train()

    return run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=30, help="timed training steps of each run")
    parser.add_argument("--inference-repeats", type=int, default=8)
    parser.add_argument("--cores", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(1)
    ref = Reference()

    group = [s for s in load_pipeline(PIPELINE, "demo-output").steps if s.group == "train"]
    configs = {s.name: train_config(s.parameters["method"], s.parameters["preset"], data=s.parameters.get("data"),
                                    epochs=s.parameters.get("epochs"), device="cpu") for s in group}
    steps, per_epoch, infer = {}, {}, {}
    for name, cfg in configs.items():
        steps[name], per_epoch[name], model = training_step(cfg)
        infer[name] = inference(model, cfg)
    step_times = interleaved(steps, args.steps, warmup=3, rotate=True)
    infer_times = interleaved(infer, args.inference_repeats, warmup=1, rotate=True)
    (reference,) = [n for n, cfg in configs.items() if cfg.method == ref.method]
    print("| run | epochs | steps | CPU s a step | ratio | CPU s an image | ratio | estimated s |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    seconds = {}
    for name, cfg in configs.items():
        step_ratio = median_cpu(step_times[name]) / median_cpu(step_times[reference])
        image_ratio = median_cpu(infer_times[name]) / median_cpu(infer_times[reference])
        epochs = cfg.schedule.epochs
        seconds[name] = run_seconds(ref, per_epoch[name], epochs, step_ratio, image_ratio)
        print(f"| {name} | {epochs} | {per_epoch[name] * epochs} | {median_cpu(step_times[name]):.3f} | "
              f"{step_ratio:.2f} | {median_cpu(infer_times[name]) / 4:.3f} | {image_ratio:.2f} | {seconds[name]:.0f} |")
    wall = shared_finish_time(list(seconds.values()), args.cores)
    print(f"\ntraining group on {args.cores} cores, one thread a run: {wall:.0f} s "
          f"(the runs' sum: {sum(seconds.values()):.0f} core-seconds)")


if __name__ == "__main__":
    main()
