"""Time prediction with and without a trace on the same model and images.

Three ways to predict the same batches, in the same process, alternating (the order rotates
every repeat); the table gives wall-clock medians and their ratios to plain prediction:

- ``plain``: ``model(images)`` in evaluation mode under ``torch.no_grad()``;
- ``trace``: ``model(images, recorder=TraceRecorder())`` plus the per-image records on the CPU
  (``workbench.inspection.collect.complete_records``), i.e. what ``workbench predict --trace``
  holds before writing;
- ``trace+save``: the same, written as a trace directory (``TraceWriter``, npz shards).

The last column gives the same two ratios for the medians of process CPU time, which other jobs
on a shared machine disturb less.

Models: the ``tiny`` presets (ResNet-18-FPN at 256 px, 6 classes) of ``faster_rcnn`` and
``kl_rpn`` (which adds per-proposal sigmas and uncertainty maps), and the ``r50`` baseline
(ResNet-50-FPN, 90 classes) at ``--size``. Weights are random; the class weights are spread so
the final NMS has boxes to rank and suppress (every image returns 100 detections), as a trained
model's would.

    python benchmarks/bench_trace.py --threads 1
    python benchmarks/bench_trace.py --device cuda
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import torch
from timing import interleaved, median_cpu, median_wall

from workbench.inspection.collect import complete_records
from workbench.inspection.traces import ImageTrace, TraceWriter
from workbench.modeling import FasterRCNNConfig, TraceRecorder


def build(config: str, size: int) -> tuple[torch.nn.Module, int]:
    """(model in eval mode, image size) of a benchmark configuration."""
    if config == "r50":
        from workbench.methods.faster_rcnn import build_model

        return build_model(FasterRCNNConfig(min_size=size, max_size=size), 90), size
    method, _ = config.split("-")
    if method == "kl_rpn":
        from workbench.methods.kl_rpn import tiny
        from workbench.methods.kl_rpn.model import build_model
    else:
        from workbench.methods.faster_rcnn import build_model, tiny
    cfg = tiny()
    return build_model(cfg.model, 6), cfg.model.base.min_size if method == "kl_rpn" else cfg.model.min_size


def spread_class_weights(model: torch.nn.Module) -> None:
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        weight = model.roi_heads.box_predictor.cls_score.weight
        weight.copy_(torch.randn(weight.shape, generator=g) * 0.05)


def make_batches(num_images: int, batch_size: int, size: int, device: torch.device) -> list[list[torch.Tensor]]:
    g = torch.Generator().manual_seed(1)
    images = [torch.rand(3, size, size, generator=g).to(device) for _ in range(num_images)]
    return [images[i : i + batch_size] for i in range(0, num_images, batch_size)]


def plain(model, batches) -> None:
    for images in batches:
        model(images)


def traced(model, batches, writer: TraceWriter | None = None) -> None:
    for images in batches:
        recorder = TraceRecorder()
        out = model(images, recorder=recorder)
        for i, det in enumerate(out.detections):
            records = complete_records(recorder.images[i], det)
            if writer is not None:
                h, w = images[i].shape[-2:]
                writer.add(ImageTrace(i, f"{i}.png", (int(h), int(w)), records))


def traced_and_saved(model, batches, out_dir: Path) -> None:
    with TraceWriter(out_dir, method="bench", split="val") as writer:
        traced(model, batches, writer)


def bench(config: str, args, device: torch.device, tmp: Path) -> dict[str, object]:
    torch.manual_seed(0)
    model, size = build(config, args.size)
    model = model.to(device).eval()
    spread_class_weights(model)
    batches = make_batches(args.images, args.batch_size, size, device)
    with torch.no_grad():
        detections = [len(d) for d in model(batches[0]).detections]
        times = interleaved(
            {
                "plain": lambda: plain(model, batches),
                "trace": lambda: traced(model, batches),
                "trace+save": lambda: traced_and_saved(model, batches, tmp / config),
            },
            args.repeats, device=device, rotate=True,
        )
    medians = {name: median_wall(t) for name, t in times.items()}
    medians.update({f"{name}/cpu": median_cpu(t) for name, t in times.items()})
    return {"config": config, "size": size, "detections": detections, **medians}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--configs", nargs="+", default=["faster_rcnn-tiny", "kl_rpn-tiny", "r50"],
                        choices=["faster_rcnn-tiny", "kl_rpn-tiny", "r50"])
    parser.add_argument("--images", type=int, default=4, help="images per repeat")
    parser.add_argument("--batch-size", type=int, default=2)
    parser.add_argument("--size", type=int, default=512, help="image side of the r50 configuration")
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    args = parser.parse_args()
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    with tempfile.TemporaryDirectory() as tmp:
        rows = [bench(config, args, device, Path(tmp)) for config in args.configs]

    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU, {torch.get_num_threads()} threads"
    print(f"\n{args.images} images per repeat in batches of {args.batch_size}, median of {args.repeats}; {name}; "
          f"torch {torch.__version__}\n")
    print("| model | image side | detections | plain (s) | trace (s) | trace / plain | trace+save (s) "
          "| trace+save / plain | CPU-time ratios |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for row in rows:
        cpu = f"{row['trace/cpu'] / row['plain/cpu']:.3f}, {row['trace+save/cpu'] / row['plain/cpu']:.3f}"
        print(f"| {row['config']} | {row['size']} | {row['detections']} | {row['plain']:.3f} | {row['trace']:.3f} "
              f"| {row['trace'] / row['plain']:.3f} | {row['trace+save']:.3f} | {row['trace+save'] / row['plain']:.3f} "
              f"| {cpu} |")


if __name__ == "__main__":
    main()
