"""The prediction loop, and the COCO / VOC evaluation of its detections.

:func:`iter_model_outputs` is the one loop that runs a detector over a dataset in evaluation
mode: evaluation (:func:`predict_dataset`), tracing
(:func:`workbench.inspection.collect.iter_traced_predictions`), the FiftyOne export (through
tracing) and the proposal analyses (:mod:`workbench.evaluation.proposals`) all call it. It
batches the dataset items, feeds ``[0, 1]`` float images to the model under ``no_grad``, and
yields each batch with the model's ``DetectorOutput`` (and the recorder the model filled, when
one was asked for). The model's train / eval mode is restored afterwards.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from workbench import distributed
from workbench.engine.progress import counted_progress
from workbench.engine.sampler import shard_indices
from workbench.engine.timing import InferenceTimer
from workbench.structures import Detections


@dataclass
class ImagePrediction:
    image_id: int
    detections: Detections


@dataclass
class BatchOutput:
    """One batch of the prediction loop: the collated ``batch`` (image ids, file names, original
    sizes), the model's ``output`` and the ``recorder`` passed to the model (``None`` without)."""

    batch: Any
    output: Any
    recorder: Any = None


def images_to_model_input(images: Sequence[torch.Tensor], device: torch.device) -> list[torch.Tensor]:
    """uint8 ``(3, H, W)`` images -> float ``[0, 1]`` on ``device`` (the detectors normalise)."""
    return [img.to(device, non_blocking=True).float().div_(255.0) for img in images]


def targets_to_device(targets: Sequence[dict], device: torch.device) -> list[dict]:
    return [{k: v.to(device, non_blocking=True) for k, v in t.items()} for t in targets]


def unwrap(model: nn.Module) -> nn.Module:
    return model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model


@torch.no_grad()
def iter_model_outputs(
    model: nn.Module,
    dataset,
    device: torch.device | str,
    *,
    indices: Sequence[int] | None = None,
    batch_size: int = 2,
    progress: bool | str = False,
    desc: str = "predict",
    recorder_factory: Callable[[], Any] | None = None,
    timer: InferenceTimer | None = None,
) -> Iterator[BatchOutput]:
    """Run ``model`` (unwrapped from DDP, in evaluation mode) over ``dataset[i]`` for ``i`` in
    ``indices`` (default all), ``batch_size`` items at a time, in that order.

    With ``recorder_factory`` each batch gets a fresh recorder, passed as
    ``model(images, recorder=...)``. ``progress``: ``True`` / ``"bar"`` a tqdm bar of images,
    ``"lines"`` plain progress lines with an ETA (:mod:`workbench.engine.progress`), ``"auto"``
    one or the other as stderr is a terminal or not, ``False`` nothing. ``timer``
    (:class:`workbench.engine.timing.InferenceTimer`) times each batch's forward pass.
    """
    from workbench.data.collate import collate_samples

    device = torch.device(device)
    indices = list(range(len(dataset))) if indices is None else list(indices)
    net = unwrap(model)
    was_training = net.training
    net.eval()
    bar = counted_progress(progress, len(indices), desc)
    try:
        for start in range(0, len(indices), batch_size):
            batch = collate_samples([dataset[i] for i in indices[start : start + batch_size]])
            images = images_to_model_input(batch.images, device)
            recorder = None if recorder_factory is None else recorder_factory()
            with contextlib.nullcontext() if timer is None else timer.batch(len(images)):
                output = net(images) if recorder is None else net(images, recorder=recorder)
            yield BatchOutput(batch, output, recorder)
            bar.update(len(batch.image_ids))
    finally:
        bar.close()
        net.train(was_training)


def predict_dataset(
    model: nn.Module,
    dataset,
    device: torch.device,
    *,
    batch_size: int = 2,
    indices: Sequence[int] | None = None,
    progress: bool | str = False,
    gather: bool = True,
    timer: InferenceTimer | None = None,
) -> list[ImagePrediction]:
    """Detections for ``dataset[i]`` (all items, or ``indices``), in original-image coordinates.

    Under torchrun each rank predicts its share and, with ``gather``, every rank receives all
    predictions sorted by image id. ``timer`` times this process's forward passes.
    """
    if indices is None:
        indices = range(len(dataset))
    mine = [indices[i] for i in shard_indices(len(indices), distributed.rank(), distributed.world_size())]
    out: list[ImagePrediction] = []
    for item in iter_model_outputs(model, dataset, device, indices=mine, batch_size=batch_size,
                                   progress=progress if distributed.is_main_process() else False, timer=timer):
        for image_id, det in zip(item.batch.image_ids, item.output.detections):
            out.append(ImagePrediction(int(image_id), det.to("cpu")))
    if gather and distributed.is_distributed():
        out = [p for part in distributed.all_gather_objects(out) for p in part]
    return sorted(out, key=lambda p: p.image_id)


def predictions_to_coco_results(predictions: Sequence[ImagePrediction], label_to_category_id) -> list[dict]:
    from workbench.evaluation.results import detections_to_coco_results

    return detections_to_coco_results(
        [p.image_id for p in predictions], [p.detections for p in predictions], label_to_category_id
    )


def dataset_coco_gt(dataset, image_ids: Sequence[int] | None = None):
    """The dataset's ground truth as a pycocotools ``COCO``, restricted to ``image_ids``."""
    from workbench.evaluation.coco_files import coco_gt_from_dict

    gt = dataset.to_coco_dict()
    if image_ids is not None:
        keep = {int(i) for i in image_ids}
        gt = {**gt, "images": [im for im in gt["images"] if im["id"] in keep],
              "annotations": [a for a in gt["annotations"] if a["image_id"] in keep]}
    return coco_gt_from_dict(gt, source=getattr(dataset, "source", "dataset"))


def evaluate_predictions(
    dataset, predictions: Sequence[ImagePrediction], *, indices=None, metric: str = "coco"
) -> dict[str, Any]:
    """The metrics ``metric`` reports (:mod:`workbench.evaluation.detection`: the COCO numbers,
    AP at IoU 0.5 .. 0.9 and, for ``voc07``, VOC mAP) of ``predictions`` against the dataset's
    ground truth (restricted to the predicted images when ``indices`` selected a subset)."""
    from workbench.evaluation.detection import evaluate_detections

    coco_gt = dataset_coco_gt(dataset, None if indices is None else [p.image_id for p in predictions])
    results = predictions_to_coco_results(predictions, dataset.label_to_category_id)
    _, metrics = evaluate_detections(coco_gt, results, metric, source=getattr(dataset, "source", "predictions"))
    return metrics


__all__ = [
    "BatchOutput", "ImagePrediction", "dataset_coco_gt", "evaluate_predictions", "images_to_model_input",
    "iter_model_outputs", "predict_dataset", "predictions_to_coco_results", "targets_to_device", "unwrap",
]
