"""The arrays behind the uncertainty figures (the figures are in :mod:`workbench.viz.uncertainty`):

- :func:`figure_inputs`: a model (a run's checkpoint, or a freshly built untrained one) and the
  first images of a dataset with their targets;
- :func:`trace_images`: the model in evaluation on those images *with* their targets and a
  recorder, so that the traces hold the BALD maps and the per-anchor difficulty as training
  would compute it (:class:`~workbench.methods.uncertainty.model.UncertaintyDetector`);
- :func:`anchor_bald`: the BALD of every anchor of one scale, recomputed from the traced ``mu``
  and ``sigma``;
- :func:`uncertainty_maps`, :func:`anchor_outcome_points`: one image's maps per scale and over
  the scales, and the centres of its TP / FP / FN anchors (main objectness at 0.5 against the
  assignment), in original-image pixels;
- :func:`match_detections`, :func:`tp_fp_uncertainty`, :func:`uncertainty_auroc`: detections
  labelled true or false positives (VOC rule: greedy by score, IoU >= 0.5 with an unmatched GT of
  the same class), the uncertainty of each group and the AUROC of the uncertainty for telling
  false positives from true ones (0.5: no better than chance; 1: every FP more uncertain).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from workbench import records as R
from workbench.losses.bald import bald
from workbench.modeling.trace import TraceRecorder
from workbench.ops import box_iou

STRIDES = (8, 16, 32)


def anchor_bald(record: Mapping[str, Tensor], stride: int) -> Tensor:
    """The BALD (eq. 2, bits) of every anchor of scale ``stride`` of one image's
    :data:`~workbench.records.UNCERTAINTY_MAP` record, ``(H_s, W_s, A)`` float32.

    The trace stores each anchor's ``mu_stride{s}`` and ``sigma_stride{s}`` (float16) and not
    their BALD, which is a function of the two: recomputed here from the float16 values, it
    equals the model's float32 BALD to float16 precision of its inputs (tested)."""
    return bald(record[f"mu_stride{stride}"].float(), record[f"sigma_stride{stride}"].float())


@dataclass
class FigureInputs:
    """A model in evaluation mode, images ``(3, H, W)`` in [0, 1], their targets (original
    pixels), the class names and, in words, where the model comes from."""

    model: nn.Module
    images: list[Tensor]
    targets: list[dict[str, Tensor]]
    class_names: list[str]
    source: str


def figure_inputs(
    run_dir: str | None = None,
    *,
    method: str = "uncertainty_rescaling",
    data: str | None = None,
    split: str | None = None,
    num_images: int = 4,
    size: int = 96,
    seed: int = 0,
    device: str = "cpu",
    which: str = "best",
) -> FigureInputs:
    """With ``run_dir``: the run's checkpoint ``which`` on its ``split`` (default the validation
    split). Without: a freshly built ``method`` (its ``tiny`` preset without pretrained weights,
    letterbox input ``size``, seeded by ``seed``) on split ``split`` (default ``val``) of
    ``data`` (default :data:`~workbench.engine.loading.PREVIEW_DATA`): its outputs mean
    nothing, but every figure can be drawn before a run exists."""
    from workbench.data.collate import collate_samples
    from workbench.engine.inference import images_to_model_input, targets_to_device
    from workbench.engine.loading import PREVIEW_DATA, open_trained_run, replace_base

    if run_dir is not None:
        run = open_trained_run(run_dir, which, split=split, device=device)
        model, dataset, dev = run.model, run.dataset, run.device
        source = f"{run.cfg.method} run {run_dir} ({run.split})"
    else:
        from workbench.data.sources import open_dataset
        from workbench.methods import build_preset, get_method

        dataset = open_dataset(data or PREVIEW_DATA, split or "val", progress=False)
        torch.manual_seed(seed)
        cfg = replace_base(build_preset(method, "tiny").model, backbone_weights=None, backbone_norm="bn", size=size)
        dev = torch.device(device)
        model = get_method(method).build_model(cfg, len(dataset.class_names)).eval().to(dev)
        source = f"freshly built {method} (untrained)"
    batch = collate_samples([dataset[i] for i in range(min(num_images, len(dataset)))])
    images = images_to_model_input(batch.images, dev)
    targets = targets_to_device(batch.targets, dev)
    return FigureInputs(model.eval(), images, targets, list(dataset.class_names), source)


def trace_images(model: nn.Module, images: Sequence[Tensor], targets: Sequence[Mapping[str, Tensor]] | None = None):
    """``(DetectorOutput, per-image records)`` of the model in evaluation mode with a recorder
    (and ``targets``: the per-anchor difficulty is traced too)."""
    recorder = TraceRecorder()
    model.eval()
    with torch.no_grad():
        out = model(list(images), None if targets is None else list(targets), recorder=recorder)
    return out, recorder.images


def uncertainty_maps(record: Mapping[str, Tensor], strides: Sequence[int] = STRIDES) -> dict[str, Tensor]:
    """Title -> map of one :data:`~workbench.records.UNCERTAINTY_MAP` record: each scale and
    the maximum over the scales."""
    maps = {f"stride {s}": record[f"bald_stride{s}"] for s in strides if f"bald_stride{s}" in record}
    maps["maximum over the scales"] = record["bald"]
    return maps


def anchor_outcome_points(record: Mapping[str, Tensor], strides: Sequence[int] = STRIDES) -> dict[str, np.ndarray]:
    """``"TP"``, ``"FP"``, ``"FN"`` -> ``(K, 2)`` the centres (original pixels) of the anchors
    whose main objectness at 0.5 is right about a positive (TP), scores a negative as an object
    (FP) or misses a positive (FN), from a record traced with targets."""
    if f"label_stride{strides[0]}" not in record:
        raise ValueError("the record holds no assignment: trace the images with their targets")
    scale = np.asarray(record[R.MAP_CELL_SIZE].tolist(), dtype=float) / 8.0  # original pixels per input pixel (y, x)
    points: dict[str, list[np.ndarray]] = {"TP": [], "FP": [], "FN": []}
    for s in strides:
        label = record[f"label_stride{s}"]
        predicted = record[f"predicted_stride{s}"]
        outcomes = {"TP": (label > 0) & predicted, "FP": (label == 0) & predicted, "FN": (label > 0) & ~predicted}
        for name, mask in outcomes.items():
            y, x, _ = torch.where(mask)
            centres = np.stack([(x.numpy() + 0.5) * s * scale[1], (y.numpy() + 0.5) * s * scale[0]], axis=1)
            points[name].append(centres.reshape(-1, 2))
    return {name: np.concatenate(parts) for name, parts in points.items()}


def match_detections(
    boxes: Tensor, scores: Tensor, labels: Tensor, gt_boxes: Tensor, gt_labels: Tensor, iou_threshold: float = 0.5,
) -> Tensor:
    """``(N,)`` bool: which detections are true positives (VOC rule, one image): in decreasing
    score, a detection is a TP when its best-IoU GT of the same class reaches ``iou_threshold``
    and is not taken yet."""
    tp = torch.zeros(len(scores), dtype=torch.bool)
    if len(scores) == 0 or len(gt_boxes) == 0:
        return tp
    iou = box_iou(boxes.float().cpu(), gt_boxes.float().cpu())
    iou = torch.where(labels.cpu()[:, None] == gt_labels.cpu()[None], iou, torch.full_like(iou, -1.0))
    taken = torch.zeros(len(gt_boxes), dtype=torch.bool)
    for i in torch.argsort(scores.cpu(), descending=True).tolist():
        best, j = iou[i].max(dim=0)
        if float(best) >= iou_threshold and not bool(taken[j]):
            taken[j] = True
            tp[i] = True
    return tp


def tp_fp_uncertainty(
    detections: Sequence[Any], targets: Sequence[Mapping[str, Tensor]], *, score_threshold: float = 0.3,
    field: str = "uncertainty", iou_threshold: float = 0.5,
) -> tuple[np.ndarray, np.ndarray]:
    """The ``field`` of the true and of the false positives among detections (``Detections``
    or records with ``boxes``, ``scores``, ``labels`` and ``field``) scoring at least
    ``score_threshold``, over images with ``targets`` (``boxes``, ``labels``)."""
    tp_values, fp_values = [], []
    for det, target in zip(detections, targets):
        get = (lambda k: getattr(det, k)) if hasattr(det, "boxes") else det.__getitem__
        values = det.extras[field] if hasattr(det, "extras") else det[field]
        keep = get("scores") >= score_threshold
        tp = match_detections(get("boxes")[keep], get("scores")[keep], get("labels")[keep], target["boxes"],
                              target["labels"], iou_threshold)
        kept = values[keep].cpu()
        tp_values.append(kept[tp].numpy())
        fp_values.append(kept[~tp].numpy())
    return np.concatenate(tp_values or [np.zeros(0)]), np.concatenate(fp_values or [np.zeros(0)])


def uncertainty_auroc(tp_values: Any, fp_values: Any) -> float:
    """The AUROC of the value for telling false positives from true ones: the chance that a
    random FP has a higher value than a random TP (ties count half); NaN without both."""
    tp = np.asarray(tp_values, dtype=float).reshape(-1)
    fp = np.asarray(fp_values, dtype=float).reshape(-1)
    if tp.size == 0 or fp.size == 0:
        return float("nan")
    greater = (fp[:, None] > tp[None]).sum()
    ties = (fp[:, None] == tp[None]).sum()
    return float((greater + 0.5 * ties) / (tp.size * fp.size))


__all__ = [
    "FigureInputs",
    "STRIDES",
    "anchor_outcome_points",
    "figure_inputs",
    "match_detections",
    "tp_fp_uncertainty",
    "trace_images",
    "uncertainty_auroc",
    "uncertainty_maps",
]
