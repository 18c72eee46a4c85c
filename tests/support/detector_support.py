"""Small detectors and batches that the model tests share, so that each test file states only
what it changes.

``tests/support`` is on the test path (``pythonpath`` in pyproject.toml); a test module imports
what it uses by name. ``one_thread`` is an autouse fixture: importing it into a test module turns
it on for that module only (``one_thread_per_test``: for each test of a conftest's folder).
"""

from __future__ import annotations

import contextlib
import json
from pathlib import Path
from typing import NamedTuple

import pytest
import torch
from torchvision.ops import batched_nms

from workbench.modeling import FasterRCNNConfig
from workbench.modeling.transform import rescale_boxes
from workbench.ops import clip_boxes


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """One intra-op thread for the whole module (set before the module's fixtures run): on a
    shared 2-core machine oversubscribed threads are many times slower, and comparisons of two
    runs need the same thread count."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(autouse=True)
def one_thread_per_test():
    """One intra-op thread for each test (for small tensors and models, extra threads only
    contend on shared cores); a conftest that imports it turns it on for its folder."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


# a ResNet-18-FPN Faster R-CNN on images of about 100 pixels: a forward pass takes a fraction of a second
SMALL_FASTER_RCNN = dict(
    backbone="resnet18_fpn", num_classes=3, min_size=96, max_size=128, fpn_channels=32,
    box_representation_size=64, rpn_pre_nms_top_n_train=300, rpn_post_nms_top_n_train=150,
    rpn_pre_nms_top_n_test=300, rpn_post_nms_top_n_test=100, box_batch_size_per_image=64,
)


def small_faster_rcnn(**changes) -> FasterRCNNConfig:
    """``SMALL_FASTER_RCNN`` with ``changes``."""
    return FasterRCNNConfig(**{**SMALL_FASTER_RCNN, **changes})


def two_image_batch():
    """Two images of different sizes (seeded noise), the first with two objects, the second one."""
    g = torch.Generator().manual_seed(3)
    images = [torch.rand(3, 96, 120, generator=g), torch.rand(3, 110, 90, generator=g)]
    targets = [
        {"boxes": torch.tensor([[30.0, 20.0, 90.0, 70.0], [5.0, 60.0, 40.0, 95.0]]), "labels": torch.tensor([1, 3])},
        {"boxes": torch.tensor([[10.0, 50.0, 60.0, 100.0]]), "labels": torch.tensor([2])},
    ]
    return images, targets


PAINT = (torch.tensor([1.0, 0.1, 0.1]), torch.tensor([0.1, 0.1, 1.0]))  # red, then blue


def painted_batch(sizes, boxes, labels, seed: int = 0):
    """Images of the given (height, width) from seeded noise, each with its first box painted a
    plain colour (red, then blue) so that a few training steps can learn it; targets from
    ``boxes`` and ``labels`` (one list per image)."""
    g = torch.Generator().manual_seed(seed)
    images = [torch.rand(3, h, w, generator=g) for h, w in sizes]
    targets = []
    for image, colour, image_boxes, image_labels in zip(images, PAINT, boxes, labels):
        x1, y1, x2, y2 = (int(v) for v in image_boxes[0])
        image[:, y1:y2, x1:x2] = colour[:, None, None]
        targets.append({"boxes": torch.tensor(image_boxes), "labels": torch.tensor(image_labels)})
    return images, targets


def torchvision_dense_parts(tv_model, images, targets):
    """What torchvision's single-stage detectors (``RetinaNet``, ``SSD``) compute their loss
    from, without gradients: (targets in network pixels, head outputs, anchors per image)."""
    with torch.no_grad():
        batch, net_targets = tv_model.transform(images, [dict(t) for t in targets])
        features = list(tv_model.backbone(batch.tensors).values())
        head = tv_model.head(features)
        anchors = tv_model.anchor_generator(batch, features)
    return net_targets, head, anchors


def preset_training_step(method: str, model_cfg, lr: float):
    """One SGD step (at ``lr``) of ``method``'s model for 3 classes built from ``model_cfg``
    (seed 0) in training mode, on two small seeded images: -> (model, output, total loss)."""
    from workbench.methods import get_method

    torch.manual_seed(0)
    model = get_method(method).build_model(model_cfg, 3).train()
    g = torch.Generator().manual_seed(0)
    images = [torch.rand(3, 96, 128, generator=g), torch.rand(3, 120, 100, generator=g)]
    targets = [
        {"boxes": torch.tensor([[10.0, 10.0, 60.0, 70.0]]), "labels": torch.tensor([1])},
        {"boxes": torch.tensor([[30.0, 20.0, 90.0, 100.0], [5.0, 5.0, 30.0, 40.0]]), "labels": torch.tensor([2, 3])},
    ]
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=lr)
    out = model(images, targets)
    loss = out.total_loss()
    loss.backward()
    optimizer.step()
    return model, out, loss


class HandDetections(NamedTuple):
    """One image's detections recomputed by ``detections_by_hand``."""

    refined: torch.Tensor  # every RoI's box decoded and clipped, in network-input pixels
    boxes: torch.Tensor  # the detections' boxes, in original-image pixels
    scores: torch.Tensor
    labels: torch.Tensor  # 1-based: 0 is the background
    roi: torch.Tensor  # each detection's RoI: its row among the RoIs of all images


def detections_by_hand(out, stage: dict, coder, scores: torch.Tensor) -> list[HandDetections]:
    """Detections recomputed from a two-stage model's raw outputs, one per image: ``stage``'s box
    regression decoded by ``coder`` onto its RoIs and clipped, the foreground ``scores`` (RoIs of
    all images x classes, background first) above 0.05, per-class NMS at 0.5 (torchvision), the
    top 100, boxes rescaled to the original image."""
    start, expected = 0, []
    for i, rois in enumerate(stage["rois"]):
        rows = slice(start, start + rois.shape[0])
        start = rows.stop
        size = out.raw["image_sizes"][i]
        refined = clip_boxes(coder.decode(stage["box_regression"][rows], rois), size)
        s = scores[rows, 1:]
        roi, label = torch.where(s > 0.05)
        keep = batched_nms(refined[roi], s[roi, label], label, 0.5)[:100]
        boxes = rescale_boxes(refined[roi[keep]], size, out.raw["original_sizes"][i])
        expected.append(HandDetections(refined, boxes, s[roi, label][keep], label[keep] + 1, roi[keep] + rows.start))
    return expected


def three_box_batch():
    """Two images of different sizes (seeded noise, 96 x 128 and 120 x 100), one object in the
    first and two in the second, labels 1 to 3."""
    g = torch.Generator().manual_seed(0)
    images = [torch.rand(3, 96, 128, generator=g), torch.rand(3, 120, 100, generator=g)]
    targets = [
        {"boxes": torch.tensor([[10.0, 10.0, 60.0, 70.0]]), "labels": torch.tensor([1])},
        {"boxes": torch.tensor([[30.0, 20.0, 90.0, 100.0], [5.0, 5.0, 30.0, 40.0]]), "labels": torch.tensor([2, 3])},
    ]
    return images, targets


def shapes_96(train: int, val: int) -> str:
    """The built-in shapes dataset with ``train`` / ``val`` images of 96 pixels: small enough
    for a one-epoch run on the CPU."""
    return f"builtin:shapes?train={train}&val={val}&size=96"


#: Model overrides that shrink a Faster R-CNN preset (and a method built on it) to 96-pixel
#: images: random weights with trainable batch norm, narrow FPN and box head, few proposals.
SMALL_TWO_STAGE_96 = {
    "backbone_weights": None, "backbone_norm": "bn", "fpn_channels": 32, "min_size": 96, "max_size": 96,
    "box_representation_size": 64, "rpn_pre_nms_top_n_train": 200, "rpn_post_nms_top_n_train": 100,
    "rpn_pre_nms_top_n_test": 200, "rpn_post_nms_top_n_test": 100, "box_batch_size_per_image": 32,
}


#: Model overrides that shrink RefineDet's ``tiny`` to 96-pixel images.
SMALL_REFINEDET_96 = {
    "backbone_weights": None, "backbone_norm": "bn", "fpn_channels": 32, "tcb_channels": 16, "size": 96,
    "topk_candidates": 100, "detections_per_img": 30,
}

#: Model overrides that shrink YOLOv3's ``tiny`` (and the uncertainty method's presets) to
#: 96-pixel images. Every (anchor, class) pair of an untrained model scores about 0.01 x 0.5, so
#: ``score_thresh`` 0 keeps them all.
SMALL_YOLOV3_96 = {
    "backbone_weights": None, "backbone_norm": "bn", "neck_channels": (16, 32, 64), "size": 96,
    "topk_candidates": 100, "detections_per_img": 30, "score_thresh": 0.0,
}


def metrics_records(run_dir: Path) -> list[dict]:
    """The records of a run's ``metrics.jsonl`` (training steps and evaluations), in order."""
    return [json.loads(line) for line in (Path(run_dir) / "metrics.jsonl").read_text().splitlines()]


@contextlib.contextmanager
def trained_small_run(tmp_path_factory, method: str, preset: str = "tiny", **config):
    """A run of ``method``'s ``preset`` trained on the CPU with one torch thread and a private
    dataset cache (``train_config`` takes ``config``: data, epochs, model overrides...; the seed
    is 0 unless given); yields its directory, then restores the thread count and the
    environment. For module fixtures."""
    from workbench.engine.trainer import train
    from workbench.pipelines.params import train_config

    patch = pytest.MonkeyPatch()
    patch.setenv("WORKBENCH_CACHE", str(tmp_path_factory.mktemp("cache")))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        out = tmp_path_factory.mktemp("runs") / f"{method}_{preset}"
        train(train_config(method, preset, **{"device": "cpu", "seed": 0, **config}), out, progress=False)
        yield out
    finally:
        torch.set_num_threads(threads)
        patch.undo()


def small_run_fixture(method: str, preset: str = "tiny", **config):
    """A module-scoped fixture yielding the directory of :func:`trained_small_run` of
    ``method``'s ``preset`` with ``config``; assign it to the fixture's name in a test module
    (``run_dir = small_run_fixture("refinedet", data=..., epochs=1)``)."""

    @pytest.fixture(scope="module")
    def run_dir(tmp_path_factory):
        with trained_small_run(tmp_path_factory, method, preset, **config) as out:
            yield out

    return run_dir


@contextlib.contextmanager
def traced_small_run(tmp_path_factory, method: str, preset: str = "tiny", **config):
    """:func:`trained_small_run`, then its predictions on the validation split with traces
    (``workbench predict --trace``)."""
    from workbench.engine.predict import predict_run

    with trained_small_run(tmp_path_factory, method, preset, **config) as out:
        predict_run(out, device="cpu", progress=False, trace=True)
        yield out
