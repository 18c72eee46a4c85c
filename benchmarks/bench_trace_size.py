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

Export memory. ``--export-images`` (default 5,000) synthetic traces of
``bench_fiftyone_export.py`` (128 x 128 images, 100 detections, an NMS ledger over 250 boxes,
300 proposals, a 128 x 128 map) are written in the trace format; a child process loads them
(:func:`workbench.inspection.load_traces`) and exports them with evaluation into a private
``mongod``. It reports the child's resident set size after its imports and its high-water mark
(``resource.getrusage(RUSAGE_SELF).ru_maxrss``) after the export.

    python benchmarks/bench_trace_size.py --threads 1
    python benchmarks/bench_trace_size.py --methods kl_rpn faster_rcnn --images 2 --export-images 0
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
    """Predict ``num_images`` random COCO-size images with ``method``'s tiny model and write the
    traces one image per shard; the sizes of what was written."""
    torch.manual_seed(0)
    m = get_method(method)
    cfg = build_preset(method, "tiny")
    square = square_size(method) if not hasattr(getattr(cfg.model, "base", cfg.model), "min_size") else 0
    model_cfg = coco_config(cfg.model, square)
    model = m.build_model(model_cfg, NUM_CLASSES).eval()
    spread_class_weights(model)
    g = torch.Generator().manual_seed(1)
    detections, record_bytes = [], {}
    with TraceWriter(out_dir, method=method, split="val", shard_size=1) as writer, torch.no_grad():
        for i in range(num_images):
            image = torch.rand(3, *COCO_IMAGE, generator=g)
            recorder = TraceRecorder()
            out = model([image], recorder=recorder)
            records = complete_records(recorder.images[0], out.detections[0])
            detections.append(len(out.detections[0]))
            writer.add(ImageTrace(i, f"{i}.png", COCO_IMAGE, records))
    shards = sorted(out_dir.glob("shard-*.npz"))
    shared = sum(p.stat().st_size for p in out_dir.glob("shared-*.npy"))
    shard = sum(p.stat().st_size for p in shards) / len(shards)
    arrays = sum(uncompressed_bytes(p) for p in shards) / len(shards)
    record_bytes = stored_record_bytes(shards[0])
    sizes = input_sizes(model_cfg)
    network = f"{COCO_MIN_SIZE}/{COCO_MAX_SIZE}" if square == 0 else f"{square} x {square}"
    return {"method": method, "network": network, "detections": detections, "shard": shard, "arrays": arrays,
            "shared": shared, "sizes": sizes, "per_image": shard + shared * sizes / TRACED_IMAGES, "records": record_bytes}


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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--methods", nargs="+", default=sorted(METHODS), choices=sorted(METHODS))
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
    with tempfile.TemporaryDirectory(prefix="wb-bench-trace-size-") as tmp:
        rows = [trace_method(method, args.images, Path(tmp) / method) for method in args.methods]
        memory = export_memory(args.export_images, Path(tmp) / "export") if args.export_images else None

    print(f"\n{args.images} random {COCO_IMAGE[0]} x {COCO_IMAGE[1]} images per method, tiny presets, "
          f"{NUM_CLASSES} classes, random weights; CPU, {torch.get_num_threads()} threads; torch {torch.__version__}\n")
    print("| method | network input | detections | shard (KB) | arrays uncompressed (KB) | anchors, once per input size (KB) | S "
          f"| per image at {TRACED_IMAGES:,} images (KB) | largest records (KB) |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---|")
    for row in rows:
        largest = sorted(row["records"].items(), key=lambda kv: -kv[1])[:3]
        records = ", ".join(f"{name} {size / 1e3:.0f}" for name, size in largest)
        print(f"| {row['method']} | {row['network']} | {', '.join(map(str, row['detections']))} "
              f"| {row['shard'] / 1e3:.0f} | {row['arrays'] / 1e3:.0f} | {row['shared'] / 1e3:.0f} | {row['sizes']} "
              f"| {row['per_image'] / 1e3:.0f} | {records} |")
    if memory is not None:
        print(f"\nFiftyOne export with evaluation of {memory['samples']:,} synthetic traced images "
              f"({memory['trace_mib']:.0f} MiB of traces): RSS after imports {memory['rss_after_imports_mib']:.0f} MiB, "
              f"peak RSS {memory['peak_rss_mib']:.0f} MiB")


if __name__ == "__main__":
    main()
