"""Image transform of a detector: normalise, resize, pad into one batch, and map boxes back.

Conventions:
- input images are float ``(3, H, W)`` tensors in ``[0, 1]``; targets hold ``boxes`` (G, 4) xyxy
  in the image's pixels;
- an image is scaled by ``min(min_size / short_side, max_size / long_side)`` with bilinear
  interpolation (output side ``floor(side * scale)``), then zero-padded at the bottom and right
  to a common size divisible by ``size_divisible``;
- ``image_sizes`` are the resized (unpadded) ``(h, w)``; ``original_sizes`` the input ``(H, W)``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from workbench.ops import scale_boxes

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass
class ImageBatch:
    """A padded batch: ``tensor`` (N, 3, H_pad, W_pad); sizes as ``(h, w)`` tuples per image."""

    tensor: Tensor
    image_sizes: list[tuple[int, int]]
    original_sizes: list[tuple[int, int]]

    def __len__(self) -> int:
        return len(self.image_sizes)

    @property
    def padded_size(self) -> tuple[int, int]:
        return int(self.tensor.shape[-2]), int(self.tensor.shape[-1])

    def size_fields(self) -> dict[str, object]:
        """The sizes every detector puts in ``DetectorOutput.raw``: ``image_sizes``,
        ``original_sizes`` and ``padded_size``."""
        return {"image_sizes": self.image_sizes, "original_sizes": self.original_sizes,
                "padded_size": self.padded_size}


def resize_scale(height: int, width: int, min_size: int, max_size: int) -> float:
    """Scale bringing the short side to ``min_size`` without the long side passing ``max_size``."""
    return min(min_size / min(height, width), max_size / max(height, width))


def resize_image(image: Tensor, scale: float) -> Tensor:
    """Bilinear resize of ``(C, H, W)`` by ``scale``; sides become ``floor(side * scale)``."""
    return F.interpolate(
        image[None], scale_factor=scale, mode="bilinear", recompute_scale_factor=True, align_corners=False
    )[0]


def pad_batch(images: Sequence[Tensor], size_divisible: int) -> Tensor:
    """Stack ``(C, h_i, w_i)`` images into ``(N, C, H, W)``, zero-padded bottom/right, with ``H`` and
    ``W`` the largest sides rounded up to a multiple of ``size_divisible``."""
    channels = max(int(im.shape[0]) for im in images)
    height = max(int(im.shape[1]) for im in images)
    width = max(int(im.shape[2]) for im in images)
    height = int(math.ceil(height / size_divisible) * size_divisible)
    width = int(math.ceil(width / size_divisible) * size_divisible)
    batch = images[0].new_zeros((len(images), channels, height, width))
    for i, im in enumerate(images):
        batch[i, : im.shape[0], : im.shape[1], : im.shape[2]].copy_(im)
    return batch


def rescale_boxes(boxes: Tensor, from_size: tuple[int, int], to_size: tuple[int, int]) -> Tensor:
    """Map xyxy ``boxes`` (N, 4) from an image of ``from_size`` (h, w) to one of ``to_size``."""
    return scale_boxes(boxes, to_size[1] / from_size[1], to_size[0] / from_size[0])


def normalize(image: Tensor, mean: Sequence[float], std: Sequence[float]) -> Tensor:
    """``(3, H, W)`` -> ``(image - mean) / std`` per channel."""
    mean_t = torch.as_tensor(mean, dtype=image.dtype, device=image.device)
    std_t = torch.as_tensor(std, dtype=image.dtype, device=image.device)
    return (image - mean_t[:, None, None]) / std_t[:, None, None]


class PerImageTransform(nn.Module):
    """What the detectors' transforms share: each image checked (a float ``(C, H, W)`` tensor),
    normalised and resized by the subclass's ``_resize`` (in image order, so that a random size
    choice draws from ``generator`` once per image), its target's boxes rescaled to the result,
    then the resized images batched by the subclass's ``_batch``."""

    def _resize(self, image: Tensor, generator: torch.Generator | None) -> Tensor:
        """One image in [0, 1] -> normalised and resized."""
        raise NotImplementedError

    def _batch(self, resized: list[Tensor], original_sizes: list[tuple[int, int]]) -> ImageBatch:
        raise NotImplementedError

    def forward(
        self,
        images: Sequence[Tensor],
        targets: Sequence[dict[str, Tensor]] | None = None,
        generator: torch.Generator | None = None,
    ) -> tuple[ImageBatch, list[dict[str, Tensor]] | None]:
        """Images -> :class:`ImageBatch`; targets -> shallow copies with resized ``boxes``."""
        if len(images) == 0:
            raise ValueError("a detector needs at least one image")
        resized: list[Tensor] = []
        new_targets: list[dict[str, Tensor]] | None = [] if targets is not None else None
        original_sizes: list[tuple[int, int]] = []
        for i, image in enumerate(images):
            if image.dim() != 3 or not image.is_floating_point():
                raise ValueError(f"image {i}: expected a float (C, H, W) tensor, got {image.dtype} {tuple(image.shape)}")
            height, width = int(image.shape[-2]), int(image.shape[-1])
            original_sizes.append((height, width))
            out = self._resize(image, generator)
            resized.append(out)
            if new_targets is not None:
                target = dict(targets[i])
                target["boxes"] = rescale_boxes(target["boxes"], (height, width), tuple(out.shape[-2:]))
                new_targets.append(target)
        return self._batch(resized, original_sizes), new_targets


class ImageTransform(PerImageTransform):
    """Normalise, resize and batch images (and resize their targets' boxes).

    ``min_size`` may be a tuple: in training one value is drawn per image (from ``generator``),
    in evaluation the last one is used.
    """

    def __init__(
        self,
        min_size: int | Sequence[int],
        max_size: int,
        mean: Sequence[float] = IMAGENET_MEAN,
        std: Sequence[float] = IMAGENET_STD,
        size_divisible: int = 32,
    ) -> None:
        super().__init__()
        self.min_size = (min_size,) if isinstance(min_size, int) else tuple(int(s) for s in min_size)
        self.max_size = int(max_size)
        self.mean = tuple(float(m) for m in mean)
        self.std = tuple(float(s) for s in std)
        self.size_divisible = int(size_divisible)

    def _pick_min_size(self, generator: torch.Generator | None) -> int:
        if not self.training or len(self.min_size) == 1:
            return self.min_size[-1]
        index = int(torch.randint(len(self.min_size), (1,), generator=generator).item())
        return self.min_size[index]

    def normalize(self, image: Tensor) -> Tensor:
        """``(3, H, W)`` in [0, 1] -> ``(image - mean) / std`` per channel."""
        return normalize(image, self.mean, self.std)

    def _resize(self, image: Tensor, generator: torch.Generator | None) -> Tensor:
        height, width = int(image.shape[-2]), int(image.shape[-1])
        scale = resize_scale(height, width, self._pick_min_size(generator), self.max_size)
        return resize_image(self.normalize(image), scale)

    def _batch(self, resized: list[Tensor], original_sizes: list[tuple[int, int]]) -> ImageBatch:
        image_sizes = [(int(im.shape[-2]), int(im.shape[-1])) for im in resized]
        return ImageBatch(pad_batch(resized, self.size_divisible), image_sizes, original_sizes)
