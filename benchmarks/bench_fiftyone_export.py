"""Time the FiftyOne export of a split of synthetic traces (default 2,000 images).

Each image has 3 ground-truth boxes (every tenth image one crowd box), ``--predictions``
detections (default 100), a final NMS over ``predictions + 150`` boxes (``predictions + 50``
kept, 100 suppressed, some of them by kept boxes beyond the top-k cut), 300 RPN proposals with KL-RPN-like sigmas (the export keeps the first 100) and a
128 x 128 uncertainty map. The traces are written in the trace format and loaded back, then
``export_traces`` builds the dataset (samples, metadata, four box fields, heatmap PNGs) with
its evaluation (pycocotools' matching written per label and per sample, registered as
FiftyOne's COCO evaluation ``eval`` with its mAP sweep), timed as ``export``; the same export
without evaluation is timed as ``build``. ``--fiftyone-eval-images N`` also times FiftyOne's
own ``evaluate_detections`` on the first N samples, the way the export evaluated before. Each step
is timed in wall seconds, in this process's CPU seconds and in the private ``mongod``'s CPU
seconds (what the step costs whatever else the machine runs). A
private ``mongod`` is started for the run unless ``--uri`` names a database.

    python benchmarks/bench_fiftyone_export.py --repeats 3
    python benchmarks/bench_fiftyone_export.py --fiftyone-eval-images 100 --repeats 1
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from workbench.inspection import ImageTrace, load_traces, save_traces

SIDE = 128
CLASSES = ["circle", "square", "triangle", "star", "cross", "ring"]


def write_coco(root: Path, num_images: int, rng: np.random.Generator) -> Path:
    """``num_images`` small PNGs and a COCO file with 3 boxes per image."""
    (root / "images").mkdir(parents=True)
    images, annotations = [], []
    for i in range(num_images):
        name = f"{i:06d}.png"
        pixels = rng.integers(0, 255, (SIDE, SIDE, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(root / "images" / name)
        images.append({"id": i + 1, "file_name": name, "width": SIDE, "height": SIDE})
        for k in range(3):
            x, y = rng.uniform(0, SIDE / 2, 2)
            w, h = rng.uniform(8, SIDE / 2, 2)
            annotations.append({"id": 3 * i + k + 1, "image_id": i + 1, "category_id": int(rng.integers(1, 7)),
                                "bbox": [float(x), float(y), float(w), float(h)], "area": float(w * h),
                                "iscrowd": int(k == 0 and i % 10 == 0)})
    categories = [{"id": i + 1, "name": n} for i, n in enumerate(CLASSES)]
    ann = root / "annotations.json"
    ann.write_text(json.dumps({"images": images, "annotations": annotations, "categories": categories}))
    return ann


def random_boxes(n: int, g: torch.Generator) -> torch.Tensor:
    xy = torch.rand(n, 2, generator=g) * SIDE * 0.7
    wh = 4 + torch.rand(n, 2, generator=g) * SIDE * 0.3
    return torch.cat([xy, xy + wh], dim=1)


def _views():
    """The two-stage views plus a heatmap of the synthetic per-pixel map (what a method declares)."""
    from workbench.methods import TWO_STAGE_VIEWS, RecordView

    heatmap = RecordView("uncertainty_map", "heatmap", field="uncertainty", value="log_objectness",
                         label="synthetic map", shown=True)
    return (*TWO_STAGE_VIEWS, heatmap)


VIEWS = _views()


def synthetic_trace(image_id: int, file_name: str, g: torch.Generator, predictions: int = 100) -> ImageTrace:
    kept, suppressed = predictions + 50, 100
    scores = torch.sort(torch.rand(kept + suppressed, generator=g), descending=True).values
    order = torch.randperm(kept + suppressed, generator=g)
    keep = torch.sort(order[:kept]).values  # kept boxes in decreasing score order
    suppressed_by = torch.full((kept + suppressed,), -1, dtype=torch.int64)
    victims = order[kept:]
    suppressed_by[victims] = keep[torch.randint(0, kept, (suppressed,), generator=g)]
    labels = torch.randint(1, 7, (kept + suppressed,), generator=g)
    labels[victims] = labels[suppressed_by[victims]]
    iou = torch.full((kept + suppressed,), float("nan"))
    iou[victims] = 0.5 + 0.5 * torch.rand(suppressed, generator=g)
    boxes = random_boxes(kept + suppressed, g)
    nms = {"boxes": boxes, "scores": scores, "idxs": labels, "keep": keep, "suppressed_by": suppressed_by,
           "suppressor_iou": iou, "iou_threshold": torch.tensor(0.5, dtype=torch.float64)}
    top = keep[:predictions]
    detections = {"boxes": boxes[top], "scores": scores[top], "labels": labels[top]}
    proposals = {"boxes": random_boxes(300, g), "scores": torch.sort(torch.rand(300, generator=g), descending=True).values,
                 "sigma": torch.rand(300, 4, generator=g)}
    maps = {"log_objectness": torch.randn(SIDE, SIDE, generator=g)}
    records = {"rcnn_nms": nms, "detections": detections, "rpn_proposals": proposals, "uncertainty_map": maps}
    return ImageTrace(image_id, file_name, (SIDE, SIDE), records)


def cpu_seconds(pid: int | None = None) -> float:
    """CPU seconds (user + system) of this process, or of process ``pid`` (from /proc)."""
    if pid is None:
        return time.process_time()
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def run(root: Path, num_images: int, repeats: int, predictions: int, fiftyone_eval: int | None,
        mongod_pid: int | None = None) -> list[dict[str, float]]:
    from workbench.data.sources import open_dataset
    from workbench.export.database import import_fiftyone
    from workbench.export.fiftyone import evaluate_dataset, export_traces

    import_fiftyone()  # not timed: about 5 s once per process

    rng = np.random.default_rng(0)
    g = torch.Generator().manual_seed(0)
    ann = write_coco(root / "data", num_images, rng)
    data = open_dataset(str(ann), "val", image_dir=root / "data" / "images")
    traces = (synthetic_trace(i + 1, f"{i:06d}.png", g, predictions) for i in range(num_images))
    save_traces(traces, root / "run" / "traces" / "val", method="synthetic", split="val")
    rows = []
    for _ in range(repeats):
        row = {}
        for step, evaluate in (("build", False), ("export", True)):
            start, cpu = time.perf_counter(), cpu_seconds()
            db_cpu = cpu_seconds(mongod_pid) if mongod_pid else 0.0
            loaded = load_traces(root / "run", "val")
            dataset, summary = export_traces(loaded, data, "bench-export", views=VIEWS,
                                             maps_dir=root / "run" / "maps", evaluate=evaluate)
            row[step], row[f"{step} (CPU)"] = time.perf_counter() - start, cpu_seconds() - cpu
            row[f"{step} (mongod CPU)"] = cpu_seconds(mongod_pid) - db_cpu if mongod_pid else float("nan")
        for kind in ("", " (CPU)", " (mongod CPU)"):
            row[f"evaluation{kind}"] = row[f"export{kind}"] - row[f"build{kind}"]
        row.update(summary.counts, tp=sum(dataset.values("eval_tp")), fp=sum(dataset.values("eval_fp")),
                   fn=sum(dataset.values("eval_fn")))
        if fiftyone_eval:
            start, cpu = time.perf_counter(), cpu_seconds()
            db_cpu = cpu_seconds(mongod_pid) if mongod_pid else 0.0
            evaluate_dataset(dataset.limit(fiftyone_eval), data.class_names, eval_key="fiftyone")
            row["fiftyone_evaluate"] = time.perf_counter() - start
            row["fiftyone_evaluate (CPU)"] = cpu_seconds() - cpu
            row["fiftyone_evaluate (mongod CPU)"] = cpu_seconds(mongod_pid) - db_cpu if mongod_pid else float("nan")
        rows.append(row)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=2000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--predictions", type=int, default=100, help="detections per image")
    parser.add_argument("--fiftyone-eval-images", type=int,
                        help="also time FiftyOne's evaluate_detections on the first N samples")
    parser.add_argument("--uri", help="a MongoDB URI to use instead of a private mongod")
    args = parser.parse_args()
    os.environ.update(FIFTYONE_DO_NOT_TRACK="true", FIFTYONE_DATABASE_VALIDATION="false",
                      FIFTYONE_SHOW_PROGRESS_BARS="false")
    with tempfile.TemporaryDirectory(prefix="wb-bench-export-") as tmp:
        mongod = None
        if args.uri is None:
            from workbench.export.database import start_private_mongod

            mongod = start_private_mongod(Path(tmp) / "db")
        os.environ["FIFTYONE_DATABASE_URI"] = args.uri or mongod.uri
        try:
            rows = run(Path(tmp), args.images, args.repeats, args.predictions, args.fiftyone_eval_images,
                       None if mongod is None else mongod.process.pid)
        finally:
            if mongod is not None:
                from fiftyone.core.odm import database

                database._disconnect()
                mongod.stop()
    counts = {k: rows[0][k] for k in ("ground_truth", "predictions", "proposals", "suppressed", "tp", "fp", "fn")}
    print(f"\n{args.images} samples; boxes written and evaluation counts: {counts}; median of {len(rows)} runs\n")
    print("| step | median (s) | runs (s) |")
    print("|---|---:|---|")
    steps = ["build", "export", "evaluation"] + (["fiftyone_evaluate"] if args.fiftyone_eval_images else [])
    steps = [s for step in steps for s in (step, f"{step} (CPU)", f"{step} (mongod CPU)")]
    for step in steps:
        values = [r[step] for r in rows]
        print(f"| {step} | {statistics.median(values):.1f} | {', '.join(f'{v:.1f}' for v in values)} |")
    if args.fiftyone_eval_images:
        per_sample = statistics.median(r["fiftyone_evaluate"] for r in rows) / args.fiftyone_eval_images
        cpu_per_sample = statistics.median(r["fiftyone_evaluate (CPU)"] for r in rows) / args.fiftyone_eval_images
        print(f"\nFiftyOne's evaluate_detections: {cpu_per_sample:.2f} CPU s a sample "
              f"({cpu_per_sample * args.images / 60:.0f} CPU min for {args.images} samples)")
        print(f"\nFiftyOne's evaluate_detections: {per_sample:.2f} s a sample "
              f"({per_sample * args.images / 60:.0f} min for {args.images} samples)")


if __name__ == "__main__":
    main()
