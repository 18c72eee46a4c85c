"""Every method's training augmentation keeps the dataset's image form: ``Sample.image`` is a
uint8 (3, H, W) tensor in 0..255 and the loader divides it by 255, so a transform that returns
a float image (in 0..1) hands the network an almost black image without any error. YOLOv3's HSV
distortion did so once (its exposure clamped to 1), and the ``tiny`` preset learned nothing."""

from __future__ import annotations

import pytest
import torch

from workbench.data.sample import Sample
from workbench.methods import METHODS, get_method

from detector_support import one_thread  # noqa: F401 (autouse)

PRESETS = [(name, preset) for name in sorted(METHODS) for preset in sorted(get_method(name).presets)]


def _sample() -> Sample:
    """A noisy 120 x 160 uint8 image with two boxes."""
    g = torch.Generator().manual_seed(0)
    image = torch.randint(0, 256, (3, 120, 160), generator=g, dtype=torch.uint8)
    return Sample(image=image, boxes=torch.tensor([[10.0, 20.0, 70.0, 80.0], [90.0, 30.0, 150.0, 110.0]]),
                  labels=torch.tensor([1, 2]), ignore=torch.tensor([False, False]), image_id=0,
                  orig_size=(120, 160), file_name="x.png")


@pytest.mark.parametrize(("method", "preset"), PRESETS, ids=[f"{m}-{p}" for m, p in PRESETS])
def test_training_samples_stay_uint8_with_the_image_contrast(method, preset):
    transform = get_method(method).training_transforms(get_method(method).presets[preset]())
    sample = _sample()
    for seed in range(3):
        out = transform(sample, generator=torch.Generator().manual_seed(seed))
        assert out.image.dtype == torch.uint8, f"{method}/{preset}: {out.image.dtype}"
        assert out.image.float().std() > 0.25 * sample.image.float().std()
