"""Helpers shared by the export tests: listening sockets, processes, headless Chromium, checks
of exported samples, and a synthetic split with detections built to hit every evaluation case."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from workbench.data.sources import open_dataset
from workbench.inspection import ImageTrace

REPO = Path(__file__).resolve().parents[2]
TEST_OUTPUT = REPO / "test-output"
CHROMIUM_FLAGS = (
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--window-size=1400,900", "--virtual-time-budget=15000",
)

#: The single-stage methods, each run from its ``tiny`` preset shrunk to seconds on one core:
#: 96 px inputs, narrow layers, 30 detections per image (the evaluation's cost grows with them).
#: RetinaNet's focal-loss prior starts every score near 0.01, under the preset's 0.05 threshold,
#: so after two steps from scratch it keeps every candidate instead (SSD's softmax needs no help).
DENSE_OVERRIDES = {
    "ssd": {
        "backbone_weights": None, "trainable_backbone_layers": 6, "backbone_norm": "bn", "fpn_channels": 32,
        "size": 96, "topk_candidates": 100, "detections_per_img": 30,
    },
    "retinanet": {
        "backbone_weights": None, "backbone_norm": "bn", "fpn_channels": 32, "min_size": 96, "max_size": 96,
        "head_num_convs": 1, "topk_candidates": 100, "score_thresh": 0.0, "detections_per_img": 30,
    },
}
DENSE_METHODS = tuple(DENSE_OVERRIDES)


def listening_addresses(port: int) -> set[str]:
    """IPv4 addresses with a socket listening on ``port`` (from /proc/net/tcp)."""
    found = set()
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        columns = line.split()
        address, port_hex = columns[1].split(":")
        if columns[3] == "0A" and int(port_hex, 16) == port:
            found.add(socket.inet_ntoa(bytes.fromhex(address)[::-1]))
    return found


def stop_process(process: subprocess.Popen, sig: int = signal.SIGTERM, timeout: float = 20.0) -> None:
    """Signal one process by its PID and wait; kill it if it does not exit in time."""
    if process.poll() is None:
        os.kill(process.pid, sig)
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            os.kill(process.pid, signal.SIGKILL)
            process.wait()


def chromium_path() -> str:
    """The Chromium executable; fails the test (never skips) when it is missing."""
    path = shutil.which("chromium") or ("/usr/bin/chromium" if Path("/usr/bin/chromium").exists() else None)
    if path is None:
        pytest.fail("chromium not found: install it with `apt-get install -y chromium` (.ci/run does)")
    return path


@dataclass
class PageCapture:
    dom: str
    screenshot: Path
    stderr: str

    @property
    def tiles(self) -> int:
        """Grid tiles of the FiftyOne App."""
        return self.dom.count('data-cy="looker"')

    @property
    def drawn_tiles(self) -> int:
        """Tiles whose canvas has been created (the grid has finished loading)."""
        return len(re.findall(r"<canvas", self.dom))


def capture_page(url: str, screenshot: Path, timeout: float = 120) -> PageCapture:
    """The DOM and a screenshot of ``url`` from one headless Chromium run with a fresh profile."""
    screenshot.unlink(missing_ok=True)
    with tempfile.TemporaryDirectory(prefix="wb-chromium-") as profile:
        cmd = [chromium_path(), *CHROMIUM_FLAGS, f"--user-data-dir={profile}", "--dump-dom",
               f"--screenshot={screenshot}", url]
        result = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    return PageCapture(result.stdout, screenshot, result.stderr)


def samples_by_image(dataset, data) -> dict[int, object]:
    """Image id -> sample of the FiftyOne ``dataset`` exported from ``data`` (filepaths identify
    the images)."""
    ids = {str(data.image_path(i).resolve()): data.image_ids[i] for i in range(len(data))}
    return {ids[s.filepath]: s for s in dataset}


def assert_suppressed_link_to_predictions(sample, expected: int, threshold: float) -> int:
    """The sample holds ``expected`` suppressed boxes, each naming a prediction of the sample of
    its label and at least its confidence, at an IoU above the NMS ``threshold``; -> how many."""
    predictions = {p.id: p for p in sample.predictions.detections}
    suppressed = sample.suppressed.detections
    assert len(suppressed) == expected
    for box in suppressed:
        suppressor = predictions[box.suppressed_by]
        assert suppressor.label == box.label and suppressor.confidence >= box.confidence
        assert threshold < box.suppressor_iou <= 1.0
    return len(suppressed)


def assert_evaluation_marks(sample, record) -> None:
    """The sample's predictions are marked true or false positives, and its counts add up: TP +
    FP its predictions, TP + FN the non-ignored ground truth of its ``record``."""
    preds = sample.predictions.detections
    assert {p.eval for p in preds} <= {"tp", "fp"}
    assert sample.eval_tp + sample.eval_fp == len(preds)
    assert sample.eval_tp + sample.eval_fn == int((~record.ignore.astype(bool)).sum())


#: The synthetic split of the evaluation and attribute tests: images, their side, the classes.
SYNTHETIC_IMAGES = 40
SYNTHETIC_SIDE = 64
SYNTHETIC_CLASSES = ("a", "b", "c")




def synthetic_split(root: Path, seed: int = 0, ties: bool = True, num_images: int = SYNTHETIC_IMAGES):
    """A COCO split of ``num_images`` blank images of ``SYNTHETIC_SIDE`` pixels (0-6 boxes of the
    classes ``SYNTHETIC_CLASSES``, some crowd) and their traces: per image 0-40 detections around
    the boxes (jittered, duplicated, relabelled) and at random; ``ties``: scores rounded to one
    decimal, so that many are equal. Returns ``(dataset, traces)``."""
    rng = np.random.default_rng(seed)
    (root / "images").mkdir(parents=True)
    images, annotations, traces = [], [], []
    for i in range(num_images):
        name = f"{i:03d}.png"
        Image.fromarray(np.zeros((SYNTHETIC_SIDE, SYNTHETIC_SIDE, 3), dtype=np.uint8)).save(root / "images" / name)
        images.append({"id": i + 1, "file_name": name, "width": SYNTHETIC_SIDE, "height": SYNTHETIC_SIDE})
        n_gt = int(rng.integers(0, 7)) if i else 0
        gt = []
        for k in range(n_gt):
            x, y = rng.uniform(0, SYNTHETIC_SIDE / 2, 2)
            w, h = rng.uniform(6, SYNTHETIC_SIDE / 2, 2)
            crowd = int(k == 0 and i % 4 == 0)
            label = int(rng.integers(1, 4))
            gt.append((x, y, x + w, y + h, label))
            annotations.append({"id": len(annotations) + 1, "image_id": i + 1, "category_id": label,
                                "bbox": [float(x), float(y), float(w), float(h)], "area": float(w * h), "iscrowd": crowd})
        boxes, labels = [], []
        if i != 1:
            for x0, y0, x1, y1, label in gt:
                for _ in range(int(rng.integers(0, 4))):
                    jitter = rng.normal(0, 3, 4)
                    boxes.append([x0, y0, x1, y1] + jitter)
                    labels.append(label if rng.random() < 0.8 else int(rng.integers(1, 4)))
            for _ in range(int(rng.integers(0, 12))):
                x, y = rng.uniform(0, SYNTHETIC_SIDE * 0.7, 2)
                w, h = rng.uniform(4, SYNTHETIC_SIDE * 0.3, 2)
                boxes.append([x, y, x + w, y + h])
                labels.append(int(rng.integers(1, 4)))
        scores = rng.random(len(boxes))
        scores = np.round(scores, 1) if ties else scores
        order = np.argsort(-scores, kind="stable")
        detections = {
            "boxes": torch.tensor(np.asarray(boxes, dtype=np.float64).reshape(-1, 4)[order], dtype=torch.float32),
            "scores": torch.tensor(scores[order], dtype=torch.float32),
            "labels": torch.tensor(np.asarray(labels, dtype=np.int64)[order]),
        }
        traces.append(ImageTrace(i + 1, name, (SYNTHETIC_SIDE, SYNTHETIC_SIDE), {"detections": detections}))
    categories = [{"id": k + 1, "name": n} for k, n in enumerate(SYNTHETIC_CLASSES)]
    ann = root / "annotations.json"
    ann.write_text(json.dumps({"images": images, "annotations": annotations, "categories": categories}))
    return open_dataset(str(ann), "val", image_dir=root / "images"), traces
