"""Augmentations on ``Sample``s that keep the image, boxes, labels and ignore flags consistent.

Every transform here is a callable ``(Sample, generator=None) -> Sample``. Boxes stay absolute
``xyxy`` float32 pixels of the current image; a geometric transform clips them to the image and
removes the ones that became degenerate (narrower or lower than ``min_box_size`` pixels) together
with their labels and ignore flags. ``orig_size`` is left as loaded, so predictions can be mapped
back to the stored image.

Randomness: every random draw comes from ``generator``, a CPU ``torch.Generator``; ``None`` draws
from PyTorch's default generator. A dataset calls its transform without a generator, so in
DataLoader workers the draws come from the worker's default generator, which PyTorch seeds from
the loader's generator: ``make_loader(..., seed=k)`` makes the augmentations of a run
reproducible (``workbench.data.collate``). Called with a generator, the same generator state
gives the same output, whatever else has used the default generator.

The SSD augmentation (Liu et al., 2016; torchvision's ``references/detection`` recipe):

- ``PhotometricDistort``: brightness, contrast (before or after the colour changes), saturation,
  hue and a channel permutation, each applied with probability ``p``; it never moves a box;
- ``Expand`` ("zoom out"): the image placed at a random position on a canvas up to 4 times its
  size, filled with the dataset mean;
- ``MinIouRandomCrop``: a crop of 0.3-1 times each side with aspect ratio 0.5-2 whose IoU with
  at least one box reaches a minimum drawn from {0 (any patch), 0.1, 0.3, 0.5, 0.7, 0.9, no
  crop}; it keeps only the boxes whose centre lies inside the crop, clipped to it;
- ``RandomHorizontalFlip``.

Presets: ``train_transforms_rcnn`` (flip only: two-stage models resize inside the model),
``ssd_train_transform`` / ``ssd_eval_transform`` (SSD augmentation, then a fixed-size input).
Deterministic resizes (``resize_fixed``, ``resize_shortest``) run ``torchvision.transforms.v2``
through ``DetectionTransform``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import torch
from torch import Tensor
from torchvision import tv_tensors
from torchvision.ops import box_iou
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as F

from workbench.data.sample import Sample

SampleTransform = Callable[..., Sample]

# Mean RGB of ImageNet in 0..255: the fill of the SSD "expand" canvas.
IMAGENET_MEAN_255 = (124, 116, 104)

# SSD's crop choices: 0.0 is "any patch", 1.0 (or more) is "the whole image, no crop".
SSD_MIN_IOUS = (0.0, 0.1, 0.3, 0.5, 0.7, 0.9, 1.0)


def _uniform(low: float, high: float, generator: torch.Generator | None) -> float:
    """One float drawn uniformly from ``[low, high)``."""
    return low + (high - low) * float(torch.rand((), generator=generator))


def _bernoulli(p: float, generator: torch.Generator | None) -> bool:
    """``True`` with probability ``p`` (one draw, whatever ``p`` is)."""
    return bool(torch.rand((), generator=generator) < p)


def clip_and_drop_degenerate(sample: Sample, min_box_size: float = 1.0) -> Sample:
    """Clip the boxes to the image and remove those narrower or lower than ``min_box_size``
    pixels, with their labels and ignore flags."""
    if len(sample) == 0:
        return sample
    h, w = sample.size
    limits = sample.boxes.new_tensor([w, h, w, h])
    boxes = torch.minimum(sample.boxes.clamp(min=0), limits)
    wh = boxes[:, 2:] - boxes[:, :2]
    keep = (wh >= min_box_size).all(dim=1)
    return sample.replace(boxes=boxes).select(keep)


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
    removed afterwards (together with their labels and ignore flags). torchvision's random
    transforms draw from the default generator; given ``generator``, the call runs with the
    default CPU generator seeded from it and restores the default generator's state afterwards.
    """

    def __init__(self, transform: v2.Transform, min_box_size: float = 1.0) -> None:
        self.transform = transform
        self.finish = v2.Compose([v2.ClampBoundingBoxes(), sanitize(min_box_size)])

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.transform!r})"

    def _apply(self, sample: Sample) -> Sample:
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

    def __call__(self, sample: Sample, generator: torch.Generator | None = None) -> Sample:
        if generator is None:
            return self._apply(sample)
        seed = int(torch.randint(0, 2**62, (), generator=generator))
        with torch.random.fork_rng(devices=[]):
            torch.default_generator.manual_seed(seed)
            return self._apply(sample)


class Compose:
    """Apply transforms in order, passing each the same ``generator`` (when one is given)."""

    def __init__(self, transforms: Sequence[SampleTransform]) -> None:
        self.transforms = list(transforms)

    def __repr__(self) -> str:
        inner = ", ".join(repr(t) for t in self.transforms)
        return f"Compose([{inner}])"

    def __call__(self, sample: Sample, generator: torch.Generator | None = None) -> Sample:
        for t in self.transforms:
            sample = t(sample) if generator is None else t(sample, generator=generator)
        return sample


# ----------------------------------------------------------------------------- SSD augmentation


class PhotometricDistort:
    """SSD's photometric distortion, as torchvision's ``RandomPhotometricDistort``: brightness
    factor in ``brightness``, contrast in ``contrast`` (applied before or after the saturation and
    hue changes, with equal chance), saturation in ``saturation``, hue shift in ``hue`` (a fraction
    of the colour wheel) and a random channel order, each applied with probability ``p``.
    Boxes, labels and the image size never change."""

    def __init__(
        self,
        p: float = 0.5,
        brightness: tuple[float, float] = (0.875, 1.125),
        contrast: tuple[float, float] = (0.5, 1.5),
        saturation: tuple[float, float] = (0.5, 1.5),
        hue: tuple[float, float] = (-0.05, 0.05),
    ) -> None:
        self.p, self.brightness, self.contrast, self.saturation, self.hue = p, brightness, contrast, saturation, hue

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(p={self.p}, brightness={self.brightness}, contrast={self.contrast}, "
                f"saturation={self.saturation}, hue={self.hue})")

    def __call__(self, sample: Sample, generator: torch.Generator | None = None) -> Sample:
        factors = {}
        for name, (low, high) in [("brightness", self.brightness), ("contrast", self.contrast),
                                  ("saturation", self.saturation), ("hue", self.hue)]:
            factors[name] = _uniform(low, high, generator) if _bernoulli(self.p, generator) else None
        contrast_before = _bernoulli(0.5, generator)
        permutation = torch.randperm(3, generator=generator) if _bernoulli(self.p, generator) else None

        image = sample.image
        if factors["brightness"] is not None:
            image = F.adjust_brightness(image, factors["brightness"])
        if factors["contrast"] is not None and contrast_before:
            image = F.adjust_contrast(image, factors["contrast"])
        if factors["saturation"] is not None:
            image = F.adjust_saturation(image, factors["saturation"])
        if factors["hue"] is not None:
            image = F.adjust_hue(image, factors["hue"])
        if factors["contrast"] is not None and not contrast_before:
            image = F.adjust_contrast(image, factors["contrast"])
        if permutation is not None:
            image = image[permutation]
        return sample.replace(image=image.contiguous())


class Expand:
    """SSD's "expand" (torchvision's ``RandomZoomOut``): with probability ``p``, place the image at
    a random position on a canvas ``r`` times its height and width, ``r`` uniform in
    ``[1, max_ratio]``, filled with ``fill`` (per channel, in the image's value range: the
    dataset mean, so the network sees the mean where there is no image). Boxes move with it."""

    def __init__(self, max_ratio: float = 4.0, p: float = 0.5, fill: Sequence[float] = IMAGENET_MEAN_255) -> None:
        if max_ratio < 1.0:
            raise ValueError(f"max_ratio must be at least 1, got {max_ratio}")
        if len(fill) != 3:
            raise ValueError(f"fill needs one value per channel, got {fill!r}")
        self.max_ratio, self.p, self.fill = float(max_ratio), p, tuple(fill)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(max_ratio={self.max_ratio}, p={self.p}, fill={self.fill})"

    def __call__(self, sample: Sample, generator: torch.Generator | None = None) -> Sample:
        if not _bernoulli(self.p, generator):
            return sample
        h, w = sample.size
        ratio = _uniform(1.0, self.max_ratio, generator)
        canvas_h, canvas_w = int(h * ratio), int(w * ratio)
        r = torch.rand(2, generator=generator)
        left, top = int((canvas_w - w) * float(r[0])), int((canvas_h - h) * float(r[1]))
        image = sample.image
        fill = torch.tensor(self.fill, dtype=torch.float64)
        if not image.dtype.is_floating_point:
            fill = fill.round()
        canvas = fill.to(image.dtype).view(3, 1, 1).expand(3, canvas_h, canvas_w).clone()
        canvas[:, top : top + h, left : left + w] = image
        shift = sample.boxes.new_tensor([left, top, left, top])
        return sample.replace(image=canvas, boxes=sample.boxes + shift)


@dataclass(frozen=True)
class CropWindow:
    """A crop ``[left, left + width) x [top, top + height)`` and the minimum IoU it was drawn for."""

    left: int
    top: int
    width: int
    height: int
    min_iou: float

    def box(self) -> Tensor:
        """The window as one ``xyxy`` float box (1, 4)."""
        return torch.tensor([[self.left, self.top, self.left + self.width, self.top + self.height]], dtype=torch.float32)


def centres_inside(boxes: Tensor, window: CropWindow) -> Tensor:
    """(N,) bool: which boxes have their centre strictly inside ``window``."""
    cx = 0.5 * (boxes[:, 0] + boxes[:, 2])
    cy = 0.5 * (boxes[:, 1] + boxes[:, 3])
    return (
        (window.left < cx) & (cx < window.left + window.width)
        & (window.top < cy) & (cy < window.top + window.height)
    )


class MinIouRandomCrop:
    """SSD's random crop (torchvision's ``RandomIoUCrop``).

    Draw a minimum IoU from ``min_ious``; 1.0 (or more) means "no crop". Then up to ``trials``
    times: a window of ``[min_scale, max_scale]`` times each side, aspect ratio (width / height)
    in ``[min_aspect, max_aspect]``, at a random position; it is taken when the centre of at
    least one box lies inside it and the best IoU of those boxes with the window reaches the
    minimum. When no trial succeeds a new minimum is drawn (at most ``max_rounds`` times; then the
    image is left whole). The crop keeps the boxes whose centre lies inside, clipped to it.
    Images without boxes are left as they are (no box to satisfy a constraint).
    """

    def __init__(
        self,
        min_scale: float = 0.3,
        min_ious: Sequence[float] = SSD_MIN_IOUS,
        trials: int = 40,
        min_box_size: float = 1.0,
        max_scale: float = 1.0,
        min_aspect: float = 0.5,
        max_aspect: float = 2.0,
        max_rounds: int = 50,
    ) -> None:
        if not min_ious:
            raise ValueError("min_ious is empty")
        if not 0.0 < min_scale <= max_scale <= 1.0:
            raise ValueError(f"need 0 < min_scale <= max_scale <= 1, got {min_scale}, {max_scale}")
        self.min_ious = tuple(float(v) for v in min_ious)
        self.min_scale, self.max_scale = min_scale, max_scale
        self.min_aspect, self.max_aspect = min_aspect, max_aspect
        self.trials, self.max_rounds, self.min_box_size = trials, max_rounds, min_box_size

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(min_ious={self.min_ious}, scale=({self.min_scale}, {self.max_scale}), "
                f"aspect=({self.min_aspect}, {self.max_aspect}), trials={self.trials})")

    def sample_window(self, boxes: Tensor, height: int, width: int,
                      generator: torch.Generator | None = None) -> CropWindow | None:
        """A crop window for ``boxes`` (N, 4) in an image of ``height x width``, or ``None`` for
        "no crop"."""
        if boxes.shape[0] == 0:
            return None
        for _ in range(self.max_rounds):
            index = int(torch.randint(0, len(self.min_ious), (), generator=generator))
            min_iou = self.min_ious[index]
            if min_iou >= 1.0:
                return None
            for _ in range(self.trials):
                scale = self.min_scale + (self.max_scale - self.min_scale) * torch.rand(2, generator=generator)
                new_w, new_h = int(width * float(scale[0])), int(height * float(scale[1]))
                if new_w == 0 or new_h == 0 or not self.min_aspect <= new_w / new_h <= self.max_aspect:
                    continue
                r = torch.rand(2, generator=generator)
                left, top = int((width - new_w) * float(r[0])), int((height - new_h) * float(r[1]))
                window = CropWindow(left, top, new_w, new_h, min_iou)
                inside = centres_inside(boxes, window)
                if not inside.any():
                    continue
                if float(box_iou(boxes[inside].float(), window.box()).max()) < min_iou:
                    continue
                return window
        return None

    def crop(self, sample: Sample, window: CropWindow) -> Sample:
        """``sample`` cut to ``window``: the boxes whose centre lies inside, shifted and clipped."""
        inside = centres_inside(sample.boxes, window)
        kept = sample.select(inside)
        x0, y0 = window.left, window.top
        image = sample.image[:, y0 : y0 + window.height, x0 : x0 + window.width]
        boxes = kept.boxes - kept.boxes.new_tensor([x0, y0, x0, y0])
        return clip_and_drop_degenerate(kept.replace(image=image.contiguous(), boxes=boxes), self.min_box_size)

    def __call__(self, sample: Sample, generator: torch.Generator | None = None) -> Sample:
        h, w = sample.size
        window = self.sample_window(sample.boxes, h, w, generator)
        return sample if window is None else self.crop(sample, window)


class RandomHorizontalFlip:
    """Mirror the image and its boxes left-right with probability ``p``."""

    def __init__(self, p: float = 0.5) -> None:
        self.p = p

    def __repr__(self) -> str:
        return f"{type(self).__name__}(p={self.p})"

    def __call__(self, sample: Sample, generator: torch.Generator | None = None) -> Sample:
        if not _bernoulli(self.p, generator):
            return sample
        w = sample.size[1]
        boxes = sample.boxes.clone()
        boxes[:, 0], boxes[:, 2] = w - sample.boxes[:, 2], w - sample.boxes[:, 0]
        return sample.replace(image=sample.image.flip(-1), boxes=boxes)


def horizontal_flip(p: float = 0.5) -> RandomHorizontalFlip:
    """Mirror the image and its boxes left-right with probability ``p``."""
    return RandomHorizontalFlip(p)


def photometric_distort(p: float = 0.5) -> PhotometricDistort:
    """SSD's photometric distortion with torchvision's ranges, each part applied with probability ``p``."""
    return PhotometricDistort(p)


def expand(max_ratio: float = 4.0, p: float = 0.5, fill: Sequence[float] = IMAGENET_MEAN_255) -> Expand:
    """SSD's "expand": the image on a canvas up to ``max_ratio`` times larger, filled with
    ``fill``, with probability ``p``."""
    return Expand(max_ratio, p, fill)


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


def ssd_train_transform(
    size: int | tuple[int, int] | None = 300,
    *,
    mean_fill: Sequence[float] = IMAGENET_MEAN_255,
    photometric_p: float = 0.5,
    expand_max_ratio: float = 4.0,
    expand_p: float = 0.5,
    min_ious: Sequence[float] = SSD_MIN_IOUS,
    crop_scale: tuple[float, float] = (0.3, 1.0),
    crop_aspect: tuple[float, float] = (0.5, 2.0),
    crop_trials: int = 40,
    flip_p: float = 0.5,
    min_box_size: float = 1.0,
) -> Compose:
    """The SSD training augmentation: photometric distortion, expand onto a ``mean_fill`` canvas,
    min-IoU crop, a resize to ``size`` (``(height, width)`` or a side; ``None`` leaves the size to
    the model) and a horizontal flip.

    ``mean_fill`` is the dataset mean in the image's 0..255 range (ImageNet's by default).
    Setting ``photometric_p``, ``expand_p`` or ``flip_p`` to 0, or ``min_ious`` to ``(1.0,)``,
    switches that part off, for ablations.
    """
    parts: list[SampleTransform] = [
        PhotometricDistort(photometric_p),
        Expand(expand_max_ratio, expand_p, mean_fill),
        MinIouRandomCrop(
            min_scale=crop_scale[0], max_scale=crop_scale[1], min_aspect=crop_aspect[0], max_aspect=crop_aspect[1],
            min_ious=min_ious, trials=crop_trials, min_box_size=min_box_size,
        ),
    ]
    if size is not None:
        parts.append(resize_fixed(size))
    parts.append(RandomHorizontalFlip(flip_p))
    return Compose(parts)


def ssd_eval_transform(size: int | tuple[int, int] = 300) -> DetectionTransform:
    """SSD / RefineDet evaluation: a fixed resize only."""
    return resize_fixed(size)


def train_transforms_ssd(
    size: int | tuple[int, int] = 320,
    flip_p: float = 0.5,
    expand_max_ratio: float = 4.0,
    expand_p: float = 0.5,
    photometric_p: float = 0.5,
) -> Compose:
    """``ssd_train_transform`` with its earlier positional arguments (default size 320)."""
    return ssd_train_transform(
        size, flip_p=flip_p, expand_max_ratio=expand_max_ratio, expand_p=expand_p, photometric_p=photometric_p
    )


def eval_transforms_ssd(size: int | tuple[int, int] = 320) -> DetectionTransform:
    """``ssd_eval_transform`` with the default size 320."""
    return ssd_eval_transform(size)
