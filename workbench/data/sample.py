"""The ``Sample`` every dataset returns and every transform maps to another ``Sample``.

Shapes: ``image`` (3, H, W) uint8; ``boxes`` (N, 4) float32 absolute ``xyxy`` pixels of
``image``; ``labels`` (N,) int64 in ``1..C`` (0 is background and never appears here);
``ignore`` (N,) bool: COCO ``iscrowd`` or VOC ``difficult`` boxes, kept so that training can
skip them and evaluation can ignore matches to them.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch
from torch import Tensor


@dataclass
class Sample:
    """One image and its ground truth.

    ``orig_size`` is ``(height, width)`` of the image as stored on disk, before any transform;
    ``image.shape[-2:]`` is its current size.
    """

    image: Tensor
    boxes: Tensor
    labels: Tensor
    ignore: Tensor
    image_id: int
    orig_size: tuple[int, int]
    file_name: str

    def __post_init__(self) -> None:
        n = self.boxes.shape[0]
        if self.image.dim() != 3 or self.image.shape[0] != 3:
            raise ValueError(f"image must be (3, H, W), got {tuple(self.image.shape)}")
        if self.boxes.shape != (n, 4) or self.labels.shape != (n,) or self.ignore.shape != (n,):
            raise ValueError(
                f"boxes (N, 4), labels (N,) and ignore (N,) disagree: {tuple(self.boxes.shape)}, "
                f"{tuple(self.labels.shape)}, {tuple(self.ignore.shape)}"
            )

    @property
    def size(self) -> tuple[int, int]:
        """Current ``(height, width)`` of ``image``."""
        return int(self.image.shape[-2]), int(self.image.shape[-1])

    def __len__(self) -> int:
        """Number of boxes."""
        return int(self.boxes.shape[0])

    def replace(self, **changes) -> "Sample":
        """A copy with some fields replaced (checked again)."""
        return dataclasses.replace(self, **changes)

    def select(self, keep: Tensor) -> "Sample":
        """Keep the boxes selected by a bool mask or index tensor, with their labels and flags."""
        return self.replace(boxes=self.boxes[keep], labels=self.labels[keep], ignore=self.ignore[keep])

    @classmethod
    def from_arrays(cls, image: Tensor, boxes, labels, ignore, image_id: int, file_name: str) -> "Sample":
        """Build a sample from array-likes, with the dtypes of the module doc."""
        boxes = torch.as_tensor(boxes, dtype=torch.float32).reshape(-1, 4)
        labels = torch.as_tensor(labels, dtype=torch.int64).reshape(-1)
        ignore = torch.as_tensor(ignore, dtype=torch.bool).reshape(-1)
        h, w = int(image.shape[-2]), int(image.shape[-1])
        return cls(image, boxes, labels, ignore, int(image_id), (h, w), str(file_name))
