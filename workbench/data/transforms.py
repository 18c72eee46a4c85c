"""Augmentations on ``Sample``s that keep the image, boxes, labels and ignore flags consistent.

Every transform here is a callable ``Sample -> Sample``. The geometric and photometric work is
done by ``torchvision.transforms.v2`` on ``tv_tensors.Image`` and ``tv_tensors.BoundingBoxes``
(``xyxy``); ``DetectionTransform`` converts a ``Sample`` to those and back and removes boxes
that became degenerate (``SanitizeBoundingBoxes``), removing their labels and ignore flags with
them. ``orig_size`` is left as loaded, so predictions can be mapped back to the stored image.

Randomness: the transforms draw from PyTorch's global random generator, as torchvision's do.
``torch.manual_seed(k)`` makes a sequence of calls reproducible in one process; in DataLoader
workers PyTorch seeds each worker from the loader's generator, so ``make_loader(..., seed=k)``
makes the augmentations of a run reproducible (``workbench.data.collate``).

Presets: ``train_transforms_rcnn`` (flip only: two-stage models resize inside the model),
``train_transforms_ssd`` / ``eval_transforms_ssd`` (SSD-style augmentation, fixed-size input).
"""

from __future__ import annotations

from typing import Callable, Sequence

import torch
from torch import Tensor
from torchvision import tv_tensors
from torchvision.transforms import v2

from workbench.data.sample import Sample

SampleTransform = Callable[[Sample], Sample]

# Mean RGB of ImageNet in 0..255: the fill of the SSD "expand" canvas.
IMAGENET_MEAN_255 = (124, 116, 104)


def _labels_and_ignore(inputs) -> tuple[Tensor, Tensor]:
    """Tell ``SanitizeBoundingBoxes`` which tensors to filter with the boxes."""
    target = inputs[1]
    return target["labels"], target["ignore"]


def sanitize(min_size: float = 1.0) -> v2.Transform:
    """Drop boxes narrower or lower than ``min_size`` pixels, with their labels and ignore flags."""
    return v2.SanitizeBoundingBoxes(min_size=min_size, labels_getter=_labels_and_ignore)


class DetectionTransform:
    """Run a ``torchvision.transforms.v2`` transform on a ``Sample``.

    The v2 transform receives ``(tv_tensors.Image (3, H, W), {"boxes": BoundingBoxes (N, 4)
    xyxy, "labels": (N,), "ignore": (N,)})``. Boxes are clamped to the image and degenerate ones
    removed afterwards (together with their labels and ignore flags).
    """

    def __init__(self, transform: v2.Transform, min_box_size: float = 1.0) -> None:
        self.transform = transform
        self.finish = v2.Compose([v2.ClampBoundingBoxes(), sanitize(min_box_size)])

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.transform!r})"

    def __call__(self, sample: Sample) -> Sample:
        image = tv_tensors.Image(sample.image)
        boxes = tv_tensors.BoundingBoxes(sample.boxes, format="XYXY", canvas_size=sample.size)
        target = {"boxes": boxes, "labels": sample.labels, "ignore": sample.ignore}
        image, target = self.finish(*self.transform(image, target))
        return sample.replace(
            image=image.as_subclass(Tensor),
            boxes=target["boxes"].as_subclass(Tensor).to(torch.float32),
            labels=target["labels"],
            ignore=target["ignore"],
        )


class Compose:
    """Apply ``Sample -> Sample`` transforms in order."""

    def __init__(self, transforms: Sequence[SampleTransform]) -> None:
        self.transforms = list(transforms)

    def __repr__(self) -> str:
        inner = ", ".join(repr(t) for t in self.transforms)
        return f"Compose([{inner}])"

    def __call__(self, sample: Sample) -> Sample:
        for t in self.transforms:
            sample = t(sample)
        return sample


class MinIouRandomCrop(DetectionTransform):
    """SSD's random crop: a crop with at least a sampled IoU with some box, keeping only boxes
    whose centre lies inside the crop (clipped to it). Images without boxes are left as they are.

    ``min_ious`` are the sampled thresholds; 1.0 (or more) means "no crop".
    """

    def __init__(
        self,
        min_scale: float = 0.3,
        min_ious: Sequence[float] = (0.0, 0.1, 0.3, 0.5, 0.7, 0.9, 1.0),
        trials: int = 40,
        min_box_size: float = 1.0,
    ) -> None:
        crop = v2.RandomIoUCrop(min_scale=min_scale, sampler_options=list(min_ious), trials=trials)
        super().__init__(crop, min_box_size)

    def __call__(self, sample: Sample) -> Sample:
        if len(sample) == 0:
            return sample
        return super().__call__(sample)


def horizontal_flip(p: float = 0.5) -> DetectionTransform:
    """Mirror the image and its boxes left-right with probability ``p``."""
    return DetectionTransform(v2.RandomHorizontalFlip(p=p))


def photometric_distort(p: float = 0.5) -> DetectionTransform:
    """SSD's photometric distortion: brightness, contrast, saturation, hue and channel order,
    each applied with probability ``p``."""
    return DetectionTransform(v2.RandomPhotometricDistort(p=p))


def expand(max_ratio: float = 4.0, p: float = 0.5, fill: Sequence[int] = IMAGENET_MEAN_255) -> DetectionTransform:
    """SSD's "expand" (zoom out): place the image on a canvas up to ``max_ratio`` times larger,
    filled with ``fill``, with probability ``p``."""
    return DetectionTransform(v2.RandomZoomOut(fill=list(fill), side_range=(1.0, max_ratio), p=p))


def resize_shortest(min_size: int, max_size: int | None = None) -> DetectionTransform:
    """Resize so the shorter side is ``min_size`` unless the longer side would exceed
    ``max_size``; then the longer side is ``max_size``. Boxes scale with the image."""
    return DetectionTransform(v2.Resize(size=min_size, max_size=max_size, antialias=True))


def resize_fixed(size: int | tuple[int, int]) -> DetectionTransform:
    """Resize to exactly ``size`` (``(height, width)`` or a side), as SSD and RefineDet take input."""
    hw = (size, size) if isinstance(size, int) else tuple(size)
    return DetectionTransform(v2.Resize(size=hw, antialias=True))


def train_transforms_rcnn(flip_p: float = 0.5) -> SampleTransform:
    """Two-stage training: horizontal flip only (the model resizes its input)."""
    return horizontal_flip(flip_p)


def train_transforms_ssd(
    size: int | tuple[int, int] = 320,
    flip_p: float = 0.5,
    expand_max_ratio: float = 4.0,
    expand_p: float = 0.5,
    photometric_p: float = 0.5,
) -> SampleTransform:
    """SSD / RefineDet training: photometric distortion, expand, min-IoU crop, fixed resize, flip."""
    return Compose(
        [
            photometric_distort(photometric_p),
            expand(expand_max_ratio, expand_p),
            MinIouRandomCrop(),
            resize_fixed(size),
            horizontal_flip(flip_p),
        ]
    )


def eval_transforms_ssd(size: int | tuple[int, int] = 320) -> SampleTransform:
    """SSD / RefineDet evaluation: fixed resize only."""
    return resize_fixed(size)
