"""The forward every workbench detector shares, and how it starts and ends.

A detector's ``forward(images, targets=None, *, generator=None, recorder=None)`` keeps the
contract of torchvision's detection models: float ``(3, H, W)`` images in ``[0, 1]``, targets with
``boxes`` (G, 4) xyxy in original pixels, ``labels`` (G,) int64 and an optional ``ignore`` (G,)
bool; it returns a :class:`~workbench.structures.DetectorOutput` (losses whenever targets are
given, detections in original pixels in evaluation mode). :class:`Detector` holds that contract
once: it checks and transforms the inputs (:func:`start_batch`), runs the subclass's
:meth:`Detector.detect` on the network-input batch, and in evaluation mode lets a subclass add
what only evaluation computes (:meth:`Detector.evaluation_extras`), so Faster R-CNN, the dense
detectors, RefineDet and the methods built on them differ only in what they detect.
"""

from __future__ import annotations

from typing import Callable, Mapping, Sequence, Union

import torch
from torch import Tensor, nn

from workbench import records as R
from workbench.modeling.trace import TraceRecorder
from workbench.modeling.transform import ImageBatch, rescale_boxes
from workbench.structures import Detections, DetectorOutput

#: What a backbone returns: feature maps by name (FPN levels) or in order (SSD-style levels).
Features = Union[Mapping[str, Tensor], Sequence[Tensor]]

class Detector(nn.Module):
    """Base of the assembled detectors: one ``forward`` over :meth:`detect`.

    Every detector has a ``transform`` (images and targets -> :class:`ImageBatch` and targets in
    network-input pixels) and a ``backbone`` (padded batch (N, 3, H, W) -> feature maps); a
    subclass implements :meth:`detect` on the backbone's features, and one that adds
    evaluation-only outputs (uncertainty maps, per-detection fields) overrides
    :meth:`evaluation_extras`.
    """

    def __init__(self, transform: Callable, backbone: nn.Module) -> None:
        super().__init__()
        self.transform = transform
        self.backbone = backbone

    def forward(
        self,
        images: Sequence[Tensor],
        targets: Sequence[Mapping[str, Tensor]] | None = None,
        *,
        generator: torch.Generator | None = None,
        recorder: TraceRecorder | None = None,
    ) -> DetectorOutput:
        """Images (list of (3, H_i, W_i) in [0, 1]) and optional targets -> :class:`DetectorOutput`.

        ``generator`` drives the samplers (and a random ``min_size`` choice); ``recorder``, when
        given, collects the per-image trace without changing any output.
        """
        batch, net_targets = start_batch(self.transform, images, targets, self.training, generator, recorder)
        out = self.detect(batch, self.backbone(batch.tensor), net_targets, generator, recorder)
        if self.training:
            return out
        return self.evaluation_extras(out, images, targets, recorder)

    def detect(self, batch: ImageBatch, features: Features, net_targets: list[dict[str, Tensor]] | None,
               generator: torch.Generator | None, recorder: TraceRecorder | None) -> DetectorOutput:
        """The network-input ``batch``, the backbone's ``features`` of it and ``net_targets``
        (None without targets) -> the output, with detections already in original pixels
        (:func:`detections_to_original`)."""
        raise NotImplementedError(f"{type(self).__name__} must implement detect()")

    def evaluation_extras(self, out: DetectorOutput, images: Sequence[Tensor],
                          targets: Sequence[Mapping[str, Tensor]] | None,
                          recorder: TraceRecorder | None) -> DetectorOutput:
        """In evaluation mode, ``out`` with what only evaluation adds; by default ``out`` itself.
        ``images`` and ``targets`` are the caller's (original pixels)."""
        return out


def start_batch(
    transform: Callable,
    images: Sequence[Tensor],
    targets: Sequence[Mapping[str, Tensor]] | None,
    training: bool,
    generator: torch.Generator | None,
    recorder: TraceRecorder | None,
) -> tuple[ImageBatch, list[dict[str, Tensor]] | None]:
    """How a detector's forward starts: the targets checked (required in ``training``), the
    images and targets transformed to network input, and the recorder (when given) started
    for the batch."""
    if targets is not None:
        check_targets(targets, len(images))
    elif training:
        raise ValueError("a detector in training mode needs targets")
    batch, net_targets = transform(images, targets, generator)
    if recorder is not None:
        recorder.start(len(batch))
    return batch, net_targets


def detections_to_original(
    detections: Sequence[Detections], batch: ImageBatch, recorder: TraceRecorder | None
) -> list[Detections]:
    """How a detector's forward ends: each image's detections in its original pixels; with a
    recorder, the trace's boxes rescaled the same way and the detections recorded."""
    out = [
        to_original(det, size, original)
        for det, size, original in zip(detections, batch.image_sizes, batch.original_sizes)
    ]
    if recorder is not None:
        for i, (size, original) in enumerate(zip(batch.image_sizes, batch.original_sizes)):
            recorder.rescale_boxes(i, original[1] / size[1], original[0] / size[0])
        for i, det in enumerate(out):
            recorder.put(i, R.DETECTIONS, boxes=det.boxes, scores=det.scores, labels=det.labels)
    return out


def to_original(det: Detections, size: tuple[int, int], original: tuple[int, int]) -> Detections:
    """Detections in network-input pixels of ``size`` -> in pixels of the ``original`` image."""
    return Detections(rescale_boxes(det.boxes, size, original), det.scores, det.labels, dict(det.extras))


def check_targets(targets: Sequence[Mapping[str, Tensor]], num_images: int) -> None:
    """Raise ``ValueError`` naming the image when targets do not fit the documented format."""
    if len(targets) != num_images:
        raise ValueError(f"{num_images} images but {len(targets)} targets")
    for i, target in enumerate(targets):
        boxes, labels = target.get("boxes"), target.get("labels")
        if boxes is None or labels is None:
            raise ValueError(f"target {i}: needs 'boxes' and 'labels'")
        if boxes.dim() != 2 or boxes.shape[-1] != 4 or not boxes.is_floating_point():
            raise ValueError(f"target {i}: boxes must be float (G, 4), got {boxes.dtype} {tuple(boxes.shape)}")
        if labels.dtype != torch.int64 or labels.shape != boxes.shape[:1]:
            raise ValueError(f"target {i}: labels must be int64 (G,), got {labels.dtype} {tuple(labels.shape)}")
        ignore = target.get("ignore")
        if ignore is not None and ignore.shape != labels.shape:
            raise ValueError(f"target {i}: ignore must be (G,), got {tuple(ignore.shape)}")
