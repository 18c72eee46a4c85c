"""YOLOv3's training augmentation, as the uncertainty-rescaling slides list it ("HSV random
distortion, random cropping and flipping"), with darknet's ranges (``yolov3.cfg``: ``hue=.1``,
``saturation=1.5``, ``exposure=1.5``, ``jitter=.3``). The model letterboxes afterwards.

Transforms are callables ``(Sample, generator=None) -> Sample`` like those of
:mod:`workbench.data.transforms`; every draw comes from ``generator``.
"""

from __future__ import annotations

import math

import torch
from torchvision.transforms.v2 import functional as F

from workbench.data.sample import Sample
from workbench.data.transforms import (
    Compose,
    CropWindow,
    RandomHorizontalFlip,
    centres_inside,
    clip_and_drop_degenerate,
)


def _uniform(low: float, high: float, generator: torch.Generator | None) -> float:
    return low + (high - low) * float(torch.rand((), generator=generator))


def random_scale(limit: float, generator: torch.Generator | None) -> float:
    """darknet's ``rand_scale(s)``: a factor in ``[1/s, s]``, log-uniform."""
    return math.exp(_uniform(-math.log(limit), math.log(limit), generator))


class HSVDistort:
    """Shift the hue by a fraction of the colour wheel uniform in ``[-hue, hue]`` and scale the
    saturation and the value ("exposure") by factors in ``[1/s, s]`` (darknet's
    ``random_distort_image``). Scaling the value of every pixel equals scaling R, G and B
    together, clamped to the top of the image's range: ``adjust_brightness`` keeps the dtype
    (255 for the uint8 images of :class:`~workbench.data.sample.Sample`, 1 for float ones), so
    the loader's ``/ 255`` still sees a 0..255 image. Boxes never change."""

    def __init__(self, hue: float = 0.1, saturation: float = 1.5, exposure: float = 1.5) -> None:
        self.hue, self.saturation, self.exposure = hue, saturation, exposure

    def __repr__(self) -> str:
        return f"{type(self).__name__}(hue={self.hue}, saturation={self.saturation}, exposure={self.exposure})"

    def __call__(self, sample: Sample, generator: torch.Generator | None = None) -> Sample:
        hue = _uniform(-self.hue, self.hue, generator)
        saturation = random_scale(self.saturation, generator)
        exposure = random_scale(self.exposure, generator)
        image = F.adjust_hue(sample.image, hue)
        image = F.adjust_saturation(image, saturation)
        image = F.adjust_brightness(image, exposure)
        return sample.replace(image=image.contiguous())


class JitterCrop:
    """darknet's jitter crop (inside the image): cut each side by a fraction of its length
    uniform in ``[0, jitter]``; keep the boxes whose centre lies inside, clipped to the crop.
    Images without boxes are cropped too."""

    def __init__(self, jitter: float = 0.3, min_box_size: float = 1.0) -> None:
        if not 0.0 <= jitter < 0.5:
            raise ValueError(f"jitter must be in [0, 0.5), got {jitter}")
        self.jitter, self.min_box_size = jitter, min_box_size

    def __repr__(self) -> str:
        return f"{type(self).__name__}(jitter={self.jitter})"

    def window(self, height: int, width: int, generator: torch.Generator | None = None) -> CropWindow:
        cuts = torch.rand(4, generator=generator) * self.jitter
        left, right = int(cuts[0] * width), int(cuts[1] * width)
        top, bottom = int(cuts[2] * height), int(cuts[3] * height)
        return CropWindow(left, top, max(1, width - left - right), max(1, height - top - bottom), 0.0)

    def __call__(self, sample: Sample, generator: torch.Generator | None = None) -> Sample:
        h, w = sample.size
        window = self.window(h, w, generator)
        kept = sample.select(centres_inside(sample.boxes, window))
        x0, y0 = window.left, window.top
        image = sample.image[:, y0:y0 + window.height, x0:x0 + window.width]
        boxes = kept.boxes - kept.boxes.new_tensor([x0, y0, x0, y0])
        return clip_and_drop_degenerate(kept.replace(image=image.contiguous(), boxes=boxes), self.min_box_size)


def yolo_train_transform(
    hue: float = 0.1, saturation: float = 1.5, exposure: float = 1.5, jitter: float = 0.3, flip_p: float = 0.5,
) -> Compose:
    """HSV distortion, jitter crop, horizontal flip (``jitter=0`` / ``flip_p=0`` switch parts off)."""
    return Compose([HSVDistort(hue, saturation, exposure), JitterCrop(jitter), RandomHorizontalFlip(flip_p)])


__all__ = ["HSVDistort", "JitterCrop", "random_scale", "yolo_train_transform"]
