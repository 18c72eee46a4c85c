"""The sparse-backward multi-scale RoIAlign against torchvision's ``MultiScaleRoIAlign`` on a
4-level FPN, and the config switch that chooses between them."""

from __future__ import annotations

from collections import OrderedDict

import pytest
import torch
from torchvision.ops import MultiScaleRoIAlign

from workbench.errors import ConfigError
from workbench.modeling import FasterRCNNConfig, SparseGradMultiScaleRoIAlign, build_box_pooler

NAMES = ["0", "1", "2", "3"]


def _pyramid(image_size: int, channels: int, seed: int) -> OrderedDict[str, torch.Tensor]:
    """Strides 4, 8, 16, 32 plus a ``pool`` level that the poolers must skip."""
    g = torch.Generator().manual_seed(seed)
    levels = OrderedDict(
        (name, torch.randn(2, channels, image_size // 2 ** (i + 2), image_size // 2 ** (i + 2), generator=g))
        for i, name in enumerate(NAMES)
    )
    levels["pool"] = torch.randn(2, channels, image_size // 64, image_size // 64, generator=g)
    return OrderedDict((k, v.requires_grad_(True)) for k, v in levels.items())


def _boxes(image_size: int, seed: int) -> list[torch.Tensor]:
    """Small to image-sized boxes (every FPN level gets some), a few reaching past the image."""
    g = torch.Generator().manual_seed(seed)
    boxes = []
    for count in (60, 45):
        side = torch.exp(torch.rand(count, 1, generator=g) * 6.3)  # 1 .. 545 pixels
        size = side * torch.exp(torch.rand(count, 2, generator=g) - 0.5) + 2.0  # aspect ratios 1/e .. e
        xy = torch.rand(count, 2, generator=g) * image_size - 10.0
        boxes.append(torch.cat([xy, xy + size], dim=1))
    return boxes


def _pool_and_grad(pooler, feats, boxes, image_sizes):
    """The pooled boxes and the gradients of the levels the pooler reads."""
    out = pooler(feats, boxes, image_sizes)
    upstream = torch.randn(out.shape, generator=torch.Generator().manual_seed(9))
    grads = torch.autograd.grad(out, [feats[n] for n in pooler.featmap_names], upstream)
    return out, grads


def test_output_and_gradients_equal_torchvision_on_a_4_level_fpn():
    image_size, image_sizes = 512, [(512, 512), (480, 400)]
    feats, boxes = _pyramid(image_size, 8, seed=1), _boxes(image_size, seed=2)
    expected, expected_grads = _pool_and_grad(MultiScaleRoIAlign(NAMES, 7, 2), feats, boxes, image_sizes)
    pooler = SparseGradMultiScaleRoIAlign(NAMES, 7, 2)
    out, grads = _pool_and_grad(pooler, feats, boxes, image_sizes)
    assert pooler.scales == [0.25, 0.125, 0.0625, 0.03125]
    assert torch.equal(out, expected)
    for grad, expected_grad in zip(grads, expected_grads):
        assert expected_grad.abs().max() > 0.1  # every level pooled some box
        torch.testing.assert_close(grad, expected_grad, rtol=1e-4, atol=1e-5)


def test_single_level_equals_torchvision():
    feats, boxes = _pyramid(128, 4, seed=3), _boxes(128, seed=4)
    expected, (expected_grad,) = _pool_and_grad(MultiScaleRoIAlign(["0"], (5, 3), 2), feats, boxes,
                                                [(128, 128)] * 2)
    out, (grad,) = _pool_and_grad(SparseGradMultiScaleRoIAlign(["0"], (5, 3), 2), feats, boxes, [(128, 128)] * 2)
    assert torch.equal(out, expected)
    torch.testing.assert_close(grad, expected_grad, rtol=1e-4, atol=1e-5)


def test_config_chooses_the_pooler():
    assert FasterRCNNConfig().roi_align_backward == "sparse"
    assert type(build_box_pooler(FasterRCNNConfig(), NAMES)) is SparseGradMultiScaleRoIAlign
    reference = build_box_pooler(FasterRCNNConfig(roi_align_backward="torchvision"), NAMES)
    assert type(reference) is MultiScaleRoIAlign
    with pytest.raises(ConfigError, match="roi_align_backward"):
        build_box_pooler(FasterRCNNConfig(roi_align_backward="cuda"), NAMES)
