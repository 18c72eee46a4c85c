"""Bytes per image of a written trace at COCO input size, per method, and the peak memory of a
FiftyOne export of thousands of traced images.

Trace size. Every registered method's ``tiny`` preset is built with random weights (no
download), 80 classes and COCO's input size: the two-stage detectors and RetinaNet resize the
short side to 800 and the long side to at most 1333 (``min_size=800, max_size=1333``), the
fixed-size single-stage detectors (SSD, RefineDet, YOLOv3) take the largest square input among
their presets (512, 512, 608). ``--images`` random 800 x 1333 images are predicted one at a time
with a ``TraceRecorder`` and written with ``TraceWriter`` one image per shard, so that no tensor
is shared between images inside a shard. The table gives, per method:

- ``shard``: the mean bytes of one image's shard (everything the image alone costs; the
  members are compressed, :func:`workbench.inspection.traces.write_npz`);
- ``arrays``: the mean bytes of the same shard's arrays before compression, about what the
  shard would cost if nothing in it compressed: random weights give smoother maps and more
  uniform scores than a trained model's, which compress better, so ``shard`` is a lower and
  ``arrays`` about an upper figure for a trained model;
- ``anchors``: the bytes of the ``shared-*.npy`` files (the anchors and their levels in
  network-input pixels), written once per network-input size for the whole directory;
- ``per image``: ``shard + anchors * S / 5000``, the cost per image of a 5,000-image COCO val
  trace, where ``S`` is the number of network-input sizes the images can have:
  :func:`padded_sizes` for the resizing detectors (35 for 800 / 1333 with sizes divisible by 32,
  one image per batch), 1 for the fixed-size ones;
- the largest records of the shard.

Detections: the weights are random. The class weights of the R-CNN box predictors
(``cls_score``) are spread (:func:`spread_class_weights`) so that the final NMS has candidates
to rank and suppress and images return 100 detections, as a trained model's do; the single-stage detectors keep their initialisation (their detection
counts are given). Sizes grow with the number of proposals, candidates and detections recorded,
not with the weights.

Trained weights. ``--run METHOD=RUN_DIR`` (repeatable) measures the same table on a trained
run's last checkpoint (:func:`workbench.engine.loading.open_trained_run`; the run is only read),
twice: on the first ``--images`` images of the run's own validation split at the run's own
network input, and on the same images resized to 800 x 1333 with the network at COCO's input
size as above (the checkpoint's weights load at any input size). Trained heads give the
detections, candidates and maps a trained model has, which random weights only imitate.
Without ``--methods`` the random-weight table is then skipped.

Export memory. ``--export-images`` (default 5,000) synthetic traces of
``bench_fiftyone_export.py`` (128 x 128 images, 100 detections, an NMS ledger over 250 boxes,
300 proposals, a 128 x 128 map) are written in the trace format; a child process loads them
(:func:`workbench.inspection.load_traces`) and exports them with evaluation into a private
``mongod``. It reports the child's resident set size after its imports and its high-water mark
(``resource.getrusage(RUSAGE_SELF).ru_maxrss``) after the export.

    python benchmarks/bench_trace_size.py --threads 1
    python benchmarks/bench_trace_size.py --methods kl_rpn faster_rcnn --images 2 --export-images 0
    python benchmarks/bench_trace_size.py --export-images 0 --run kl_rpn=runs/demo/runs/kl_rpn
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import resource
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import torch

from workbench.inspection.collect import complete_records
from workbench.inspection.traces import ImageTrace, TraceWriter
from workbench.methods import METHODS, build_preset, get_method
from workbench.modeling import TraceRecorder

COCO_MIN_SIZE, COCO_MAX_SIZE = 800, 1333
COCO_IMAGE = (800, 1333)
TRACED_IMAGES = 5000
NUM_CLASSES = 80


def padded_sizes(min_size: int, max_size: int, divisible: int) -> int:
    """How many network-input sizes ``(H, W)`` an image resized to short side ``min_size`` (long
    side at most ``max_size``) and padded to multiples of ``divisible`` can have, one image per
    batch: the short side pads to ``ceil(min_size / d) * d``; the long side takes every multiple
    of ``d`` from there to ``ceil(max_size / d) * d``; both orientations, the square counted once."""
    short = math.ceil(min_size / divisible) * divisible
    longs = range(short, math.ceil(max_size / divisible) * divisible + 1, divisible)
    return 2 * len(longs) - 1


def square_size(method: str) -> int:
    """The largest square input among the presets of a fixed-size method."""
    sizes = [getattr(build_preset(method, p).model, "size", None) for p in get_method(method).presets]
    sizes += [getattr(getattr(build_preset(method, p).model, "base", None), "size", None)
              for p in get_method(method).presets]
    return max(s for s in sizes if s is not None)


def coco_config(config: Any, square: int) -> Any:
    """``config`` (a model config dataclass, nested ``base`` configs included) without pretrained
    weights and at COCO's input size (``min_size`` / ``max_size``, or ``size = square``)."""
    changes: dict[str, Any] = {}
    for f in dataclasses.fields(config):
        value = getattr(config, f.name)
        if f.name == "backbone_weights":
            changes[f.name] = None
        elif f.name == "min_size":
            changes[f.name] = COCO_MIN_SIZE
        elif f.name == "max_size":
            changes[f.name] = COCO_MAX_SIZE
        elif f.name == "size":
            changes[f.name] = square
        elif dataclasses.is_dataclass(value):
            changes[f.name] = coco_config(value, square)
    return dataclasses.replace(config, **changes)


def input_sizes(config: Any) -> int:
    """``S`` of the module docstring for a model config."""
    base = getattr(config, "base", config)
    if hasattr(base, "min_size"):
        return padded_sizes(base.min_size, base.max_size, base.size_divisible)
    return 1


def spread_class_weights(model: torch.nn.Module) -> None:
    """Random class weights (std 0.05) and biases (std 1) for every R-CNN box classifier (a
    linear ``cls_score``). The features of an untrained backbone are nearly constant, so the
    biases do the spreading: with 81 logits of std 1, a proposal has a few classes above the
    0.05 score threshold (about 600 candidates for 300 proposals, 100 detections an image)."""
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, module in model.named_modules():
            if name.endswith("cls_score") and isinstance(module, torch.nn.Linear):
                module.weight.copy_(torch.randn(module.weight.shape, generator=g) * 0.05)
                module.bias.copy_(torch.randn(module.bias.shape, generator=g))


def trace_method(method: str, num_images: int, out_dir: Path) -> dict[str, Any]:
    """Predict ``num_images`` random COCO-size images with ``method``'s tiny model (random
    weights) and write the traces one image per shard; the sizes of what was written."""
    torch.manual_seed(0)
    m = get_method(method)
    cfg = build_preset(method, "tiny")
    square = square_size(method) if not is_resizing(cfg.model) else 0
    model_cfg = coco_config(cfg.model, square)
    model = m.build_model(model_cfg, NUM_CLASSES).eval()
    spread_class_weights(model)
    g = torch.Generator().manual_seed(1)
    images = [torch.rand(3, *COCO_IMAGE, generator=g) for _ in range(num_images)]
    return {"method": method, "network": network_input(square), **write_traces(model, images, method, out_dir),
            "sizes": input_sizes(model_cfg)}


def is_resizing(model_cfg: Any) -> bool:
    """Whether the detector resizes its input by short and long side (``min_size`` /
    ``max_size``: the two-stage detectors and RetinaNet) rather than to a fixed square."""
    return hasattr(getattr(model_cfg, "base", model_cfg), "min_size")


def network_input(square: int) -> str:
    """The network-input column: COCO's short / long side, or the fixed square."""
    return f"{COCO_MIN_SIZE} / {COCO_MAX_SIZE}" if square == 0 else f"{square} x {square}"


def write_traces(model: torch.nn.Module, images: list[torch.Tensor], method: str, out_dir: Path) -> dict[str, Any]:
    """Predict ``images`` one at a time with a ``TraceRecorder``, write the traces one image per
    shard under ``out_dir`` and measure them: the detections per image, the mean stored and
    uncompressed bytes of a shard, the bytes of the shared anchor files and the stored bytes of
    each record of the first shard."""
    detections = []
    with TraceWriter(out_dir, method=method, split="val", shard_size=1) as writer, torch.no_grad():
        for i, image in enumerate(images):
            recorder = TraceRecorder()
            out = model([image], recorder=recorder)
            records = complete_records(recorder.images[0], out.detections[0])
            detections.append(len(out.detections[0]))
            writer.add(ImageTrace(i, f"{i}.png", tuple(image.shape[-2:]), records))
    shards = sorted(out_dir.glob("shard-*.npz"))
    return {"detections": detections,
            "shard": sum(p.stat().st_size for p in shards) / len(shards),
            "arrays": sum(uncompressed_bytes(p) for p in shards) / len(shards),
            "shared": sum(p.stat().st_size for p in out_dir.glob("shared-*.npy")),
            "records": stored_record_bytes(shards[0])}


def per_image_bytes(row: dict[str, Any]) -> float:
    """``shard + anchors * S / 5000`` of the module docstring."""
    return row["shard"] + row["shared"] * row["sizes"] / TRACED_IMAGES


def parse_run(text: str) -> tuple[str, Path]:
    """``METHOD=RUN_DIR`` of ``--run``; the method must be registered and the run must have a
    last checkpoint."""
    method, sep, run_dir = text.partition("=")
    if not sep or method not in METHODS:
        raise argparse.ArgumentTypeError(f"expected METHOD=RUN_DIR with METHOD one of {sorted(METHODS)}: {text!r}")
    if not (Path(run_dir) / "checkpoints" / "last.pt").is_file():
        raise argparse.ArgumentTypeError(f"{run_dir}: no checkpoints/last.pt")
    return method, Path(run_dir)


def validation_images(run: Any, num_images: int) -> list[torch.Tensor]:
    """The first ``num_images`` images of a trained run's validation split as the model takes them
    (float, values in [0, 1]; :func:`workbench.engine.inference.images_to_model_input`)."""
    from workbench.engine.inference import images_to_model_input

    return images_to_model_input([run.dataset[i].image for i in range(min(num_images, len(run.dataset)))],
                                 torch.device("cpu"))


def coco_resized(image: torch.Tensor) -> torch.Tensor:
    """``image`` resized (bilinear) to COCO's input size, 800 x 1333: a trained model's outputs on
    real content at the image size COCO gives, whatever the aspect of the run's own images."""
    return torch.nn.functional.interpolate(image[None], size=COCO_IMAGE, mode="bilinear", align_corners=False)[0]


def trace_run(method: str, run_dir: Path, num_images: int, out_dir: Path) -> list[dict[str, Any]]:
    """A trained run's last checkpoint traced twice: on its own validation images as it was
    trained (network input from its config), and on the same images resized to 800 x 1333 with
    the network at COCO's input size (:func:`coco_config`; the fixed-size detectors at the
    largest square of their presets, as for random weights). The weights do not depend on the
    input size (convolutions; anchors are recomputed per feature-map size), so the checkpoint
    loads into both."""
    from workbench.engine.loading import open_trained_run

    run = open_trained_run(run_dir, "last", device="cpu")
    if run.cfg.method != method:
        raise SystemExit(f"{run_dir} is a {run.cfg.method} run, not {method}")
    images = validation_images(run, num_images)
    height, width = images[0].shape[-2:]
    rows = [{"method": method, "images": f"val, {height} x {width}", "network": own_input(run.cfg.model),
             **write_traces(run.model, images, method, out_dir / "own"), "sizes": input_sizes(run.cfg.model)}]
    square = square_size(method) if not is_resizing(run.cfg.model) else 0
    coco_cfg = coco_config(run.cfg.model, square)
    model = get_method(method).build_model(coco_cfg, len(run.state["categories"]))
    model.load_state_dict(run.state["model"])
    rows.append({"method": method, "images": f"val resized to {COCO_IMAGE[0]} x {COCO_IMAGE[1]}",
                 "network": network_input(square),
                 **write_traces(model.eval(), [coco_resized(im) for im in images], method, out_dir / "coco"),
                 "sizes": input_sizes(coco_cfg)})
    return rows


def own_input(model_cfg: Any) -> str:
    """The network-input column of a run at its own input size."""
    base = getattr(model_cfg, "base", model_cfg)
    if is_resizing(model_cfg):
        return f"{base.min_size} / {base.max_size}"
    return f"{base.size} x {base.size}"


def uncompressed_bytes(shard: Path) -> int:
    """The bytes of a shard's arrays uncompressed (their ``.npy`` members' sizes)."""
    import zipfile

    with zipfile.ZipFile(shard) as archive:
        return sum(info.file_size for info in archive.infolist())


def stored_record_bytes(shard: Path) -> dict[str, int]:
    """Bytes of each record's arrays in one single-image shard as stored (the compressed size of
    their ``.npy`` members; an array shared by two records counted in the first)."""
    import zipfile

    import numpy as np

    with np.load(shard, allow_pickle=False) as npz:
        index = json.loads(str(npz["__index__"]))
    with zipfile.ZipFile(shard) as archive:
        sizes = {info.filename.removesuffix(".npy"): info.compress_size for info in archive.infolist()}
    out: dict[str, int] = {}
    seen: set[str] = set()
    for name, fields in index["images"][0].items():
        keys = [k for k in fields.values() if k in sizes and k not in seen]
        seen.update(keys)
        out[name] = sum(sizes[k] for k in keys)
    return out


def export_child(root: Path) -> None:
    """In a child process: load the traces under ``root``, export them with evaluation, print the
    resident set size after the imports and the high-water mark after the export (JSON)."""
    from bench_fiftyone_export import VIEWS

    from workbench.data.sources import open_dataset
    from workbench.export.database import import_fiftyone
    from workbench.export.fiftyone import export_traces
    from workbench.inspection import load_traces

    import_fiftyone()
    data = open_dataset(str(root / "data" / "annotations.json"), "val", image_dir=root / "data" / "images")
    before = resource_rss_mib()
    traces = load_traces(root / "run", "val")
    _, summary = export_traces(traces, data, "bench-trace-size", views=VIEWS, maps_dir=root / "run" / "maps",
                               evaluate=True)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"rss_after_imports_mib": before, "peak_rss_mib": peak, "samples": len(traces),
                      "predictions": summary.counts.get("predictions")}))


def resource_rss_mib() -> float:
    """The current resident set size (``/proc/self/statm``) in MiB."""
    pages = int(Path("/proc/self/statm").read_text().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE") / 2**20


def export_memory(num_images: int, tmp: Path) -> dict[str, Any]:
    """Write ``num_images`` synthetic traces and measure a child process exporting them."""
    import numpy as np
    from bench_fiftyone_export import synthetic_trace, write_coco

    from workbench.export.database import start_private_mongod
    from workbench.inspection import save_traces

    write_coco(tmp / "data", num_images, np.random.default_rng(0))
    g = torch.Generator().manual_seed(0)
    traces = (synthetic_trace(i + 1, f"{i:06d}.png", g) for i in range(num_images))
    save_traces(traces, tmp / "run" / "traces" / "val", method="synthetic", split="val")
    trace_bytes = sum(p.stat().st_size for p in (tmp / "run" / "traces" / "val").iterdir())
    mongod = start_private_mongod(tmp / "db")
    env = {**os.environ, "FIFTYONE_DATABASE_URI": mongod.uri, "FIFTYONE_DO_NOT_TRACK": "true",
           "FIFTYONE_DATABASE_VALIDATION": "false", "FIFTYONE_SHOW_PROGRESS_BARS": "false"}
    try:
        result = subprocess.run([sys.executable, __file__, "--export-child", str(tmp)], env=env, check=True,
                                capture_output=True, text=True)
    finally:
        mongod.stop()
    return {**json.loads(result.stdout.strip().splitlines()[-1]), "trace_mib": trace_bytes / 2**20}


def print_table(rows: list[dict[str, Any]], images: bool) -> None:
    """The Markdown table of ``rows``; ``images``: with the column saying which images were traced."""
    first = "| method | images " if images else "| method "
    print(first + "| network input | detections | shard (KB) | arrays uncompressed (KB) "
          f"| anchors, once per input size (KB) | S | per image at {TRACED_IMAGES:,} images (KB) | largest records (KB) |")
    print("|---" * (2 + images) + "|---:" * 6 + "|---|")
    for row in rows:
        largest = sorted(row["records"].items(), key=lambda kv: -kv[1])[:3]
        records = ", ".join(f"{name} {size / 1e3:.0f}" for name, size in largest)
        first = f"| {row['method']} | {row['images']} " if images else f"| {row['method']} "
        print(first + f"| {row['network']} | {', '.join(map(str, row['detections']))} "
              f"| {row['shard'] / 1e3:.0f} | {row['arrays'] / 1e3:.0f} | {row['shared'] / 1e3:.0f} | {row['sizes']} "
              f"| {per_image_bytes(row) / 1e3:.0f} | {records} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--methods", nargs="*", default=None, choices=sorted(METHODS),
                        help="methods traced with random weights (default: every method, none with --run)")
    parser.add_argument("--run", type=parse_run, action="append", default=[], metavar="METHOD=RUN_DIR",
                        help="also trace a trained run's last checkpoint (repeatable; the run is only read)")
    parser.add_argument("--images", type=int, default=2, help="images traced per method")
    parser.add_argument("--export-images", type=int, default=TRACED_IMAGES,
                        help="synthetic traced images exported for the memory figure (0: skip)")
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    parser.add_argument("--export-child", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.export_child is not None:
        export_child(args.export_child)
        return
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    methods = args.methods if args.methods is not None else ([] if args.run else sorted(METHODS))
    with tempfile.TemporaryDirectory(prefix="wb-bench-trace-size-") as tmp:
        rows = [trace_method(method, args.images, Path(tmp) / method) for method in methods]
        trained = [row for i, (method, run_dir) in enumerate(args.run)
                   for row in trace_run(method, run_dir, args.images, Path(tmp) / f"run-{i}")]
        memory = export_memory(args.export_images, Path(tmp) / "export") if args.export_images else None

    setting = f"CPU, {torch.get_num_threads()} threads; torch {torch.__version__}"
    if rows:
        print(f"\n{args.images} random {COCO_IMAGE[0]} x {COCO_IMAGE[1]} images per method, tiny presets, "
              f"{NUM_CLASSES} classes, random weights; {setting}\n")
        print_table(rows, images=False)
    if trained:
        print(f"\nTrained runs, last checkpoint: {', '.join(str(d) for _, d in args.run)}; "
              f"{args.images} validation images per run; {setting}\n")
        print_table(trained, images=True)
    if memory is not None:
        print(f"\nFiftyOne export with evaluation of {memory['samples']:,} synthetic traced images "
              f"({memory['trace_mib']:.0f} MiB of traces): RSS after imports {memory['rss_after_imports_mib']:.0f} MiB, "
              f"peak RSS {memory['peak_rss_mib']:.0f} MiB")


if __name__ == "__main__":
    main()
