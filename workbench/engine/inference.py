"""Inference over a dataset, split across ranks, and its COCO evaluation."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn
from tqdm.auto import tqdm

from workbench import distributed
from workbench.engine.sampler import shard_indices
from workbench.structures import Detections


@dataclass
class ImagePrediction:
    image_id: int
    detections: Detections


def images_to_model_input(images: Sequence[torch.Tensor], device: torch.device) -> list[torch.Tensor]:
    """uint8 ``(3, H, W)`` images -> float ``[0, 1]`` on ``device`` (the detectors normalise)."""
    return [img.to(device, non_blocking=True).float().div_(255.0) for img in images]


def targets_to_device(targets: Sequence[dict], device: torch.device) -> list[dict]:
    return [{k: v.to(device, non_blocking=True) for k, v in t.items()} for t in targets]


def unwrap(model: nn.Module) -> nn.Module:
    return model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model


@torch.no_grad()
def predict_dataset(
    model: nn.Module,
    dataset,
    device: torch.device,
    *,
    batch_size: int = 2,
    indices: Sequence[int] | None = None,
    progress: bool = False,
    gather: bool = True,
) -> list[ImagePrediction]:
    """Detections for ``dataset[i]`` (all items, or ``indices``), in original-image coordinates.

    Under torchrun each rank predicts its share and, with ``gather``, every rank receives all
    predictions sorted by image id.
    """
    from workbench.data.collate import collate_samples

    if indices is None:
        indices = range(len(dataset))
    mine = [indices[i] for i in shard_indices(len(indices), distributed.rank(), distributed.world_size())]
    net = unwrap(model)
    was_training = net.training
    net.eval()
    out: list[ImagePrediction] = []
    bar = tqdm(total=len(mine), desc="predict", unit="img", disable=not progress or not distributed.is_main_process())
    try:
        for start in range(0, len(mine), batch_size):
            batch = collate_samples([dataset[i] for i in mine[start : start + batch_size]])
            result = net(images_to_model_input(batch.images, device))
            for image_id, det in zip(batch.image_ids, result.detections):
                out.append(ImagePrediction(int(image_id), det.to("cpu")))
            bar.update(len(batch.image_ids))
    finally:
        bar.close()
        net.train(was_training)
    if gather and distributed.is_distributed():
        out = [p for part in distributed.all_gather_objects(out) for p in part]
    return sorted(out, key=lambda p: p.image_id)


def predictions_to_coco_results(predictions: Sequence[ImagePrediction], label_to_category_id) -> list[dict]:
    from workbench.evaluation.results import detections_to_coco_results

    return detections_to_coco_results(
        [p.image_id for p in predictions], [p.detections for p in predictions], label_to_category_id
    )


def evaluate_predictions(dataset, predictions: Sequence[ImagePrediction], *, indices=None) -> dict[str, float]:
    """COCO metrics of ``predictions`` against the dataset's ground truth (restricted to the
    predicted images when ``indices`` selected a subset)."""
    from workbench.evaluation.coco import coco_metrics
    from workbench.evaluation.coco_files import coco_gt_from_dict

    gt = dataset.to_coco_dict()
    predicted = {p.image_id for p in predictions}
    if indices is not None:
        gt = dict(gt)
        gt["images"] = [im for im in gt["images"] if im["id"] in predicted]
        gt["annotations"] = [a for a in gt["annotations"] if a["image_id"] in predicted]
    coco_gt = coco_gt_from_dict(gt, source=getattr(dataset, "source", "dataset"))
    return coco_metrics(coco_gt, predictions_to_coco_results(predictions, dataset.label_to_category_id))
