import pytest
import torch
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.image_list import ImageList

from workbench.ops import anchors_for_images, feature_strides, fpn_cell_anchors, grid_anchors, ssd_anchors

FPN_SIZES = ((32,), (64,), (128,), (256,), (512,))
FPN_RATIOS = ((0.5, 1.0, 2.0),) * 5


def test_fpn_cell_anchors_equal_torchvision():
    reference = AnchorGenerator(FPN_SIZES, FPN_RATIOS)
    ours = fpn_cell_anchors(FPN_SIZES, FPN_RATIOS, dtype=torch.float32, device="cpu")
    assert len(ours) == 5
    for cells, expected in zip(ours, reference.cell_anchors):
        assert torch.equal(cells, expected)
    # several sizes per level (the single-feature-map Faster R-CNN setting), ratio-major order
    sizes, ratios = ((32, 64, 128, 256, 512),), ((0.5, 1.0, 2.0),)
    multi = fpn_cell_anchors(sizes, ratios)
    assert torch.equal(multi[0], AnchorGenerator(sizes, ratios).cell_anchors[0])
    assert multi[0].shape == (15, 4)


def test_grid_anchors_equal_torchvision_and_order():
    reference = AnchorGenerator(FPN_SIZES[:2], FPN_RATIOS[:2])
    cells = fpn_cell_anchors(FPN_SIZES[:2], FPN_RATIOS[:2])
    sizes, strides = [(5, 7), (3, 4)], [(8, 8), (16, 16)]
    expected = reference.grid_anchors(sizes, [[torch.tensor(s) for s in st] for st in strides])
    ours = grid_anchors(sizes, strides, cells)
    for a, b in zip(ours, expected):
        assert torch.equal(a, b)
    # order (y, x, a): row y, column x, cell anchor a sits at (y * w + x) * A + a
    level = ours[0].reshape(5, 7, 3, 4)
    assert torch.equal(level[2, 4, 1], cells[0][1] + torch.tensor([32.0, 16.0, 32.0, 16.0]))
    assert torch.equal(grid_anchors([(5, 7)], [8], cells[:1])[0], ours[0])  # an int stride


@pytest.mark.parametrize("padded,num_images", [((800, 1216), 2), ((320, 448), 1)])
def test_anchors_for_images_equal_torchvision_faster_rcnn_defaults(padded, num_images):
    height, width = padded
    # FPN levels of a ResNet backbone: strides 4 .. 32, then a max-pooled level
    feature_sizes = [(height // s, width // s) for s in (4, 8, 16, 32)]
    feature_sizes.append(((feature_sizes[-1][0] + 1) // 2, (feature_sizes[-1][1] + 1) // 2))
    images = ImageList(torch.zeros(num_images, 3, height, width), [(height - 10, width - 30)] * num_images)
    features = [torch.zeros(num_images, 1, h, w) for h, w in feature_sizes]
    expected = AnchorGenerator(FPN_SIZES, FPN_RATIOS)(images, features)
    cells = fpn_cell_anchors(FPN_SIZES, FPN_RATIOS)
    ours = anchors_for_images((height, width), feature_sizes, cells, num_images)
    assert len(ours) == num_images
    for a, b in zip(ours, expected):
        assert torch.equal(a, b)
    assert ours[0].shape[0] == 3 * sum(h * w for h, w in feature_sizes)


def test_feature_strides_use_integer_division():
    assert feature_strides((800, 1216), [(200, 304), (13, 19)]) == [(4, 4), (61, 64)]


@pytest.mark.parametrize("size,expected", [(320, 6375), (512, 16320)])
def test_refinedet_anchor_counts(size, expected):
    strides = [8, 16, 32, 64]
    feature_sizes = [(size // s, size // s) for s in strides]
    anchors = ssd_anchors(feature_sizes, strides, (size, size), [4 * s for s in strides], (0.5, 1.0, 2.0))
    assert anchors.shape == (expected, 4)


def test_ssd_anchor_geometry():
    strides = [8, 16]
    anchors = ssd_anchors([(4, 5), (2, 3)], strides, (32, 40), [32.0, 64.0], [(0.5, 1.0, 2.0), (1.0,)])
    assert anchors.shape == (4 * 5 * 3 + 2 * 3 * 1, 4)
    first = anchors[: 4 * 5 * 3].reshape(4, 5, 3, 4)
    centres = (first[..., :2] + first[..., 2:]) / 2
    # centre of location (y, x) is ((x + 0.5) * stride, (y + 0.5) * stride)
    assert torch.allclose(centres[2, 3, 0], torch.tensor([3.5 * 8, 2.5 * 8]))
    wh = first[0, 0, :, 2:] - first[0, 0, :, :2]
    # ratio = w / h; area = size ** 2 for every ratio
    torch.testing.assert_close(wh[:, 0] / wh[:, 1], torch.tensor([0.5, 1.0, 2.0]))
    torch.testing.assert_close(wh.prod(dim=1), torch.full((3,), 32.0**2))
    second = anchors[4 * 5 * 3 :]
    torch.testing.assert_close(second[0], torch.tensor([8.0 - 32, 8.0 - 32, 8.0 + 32, 8.0 + 32]))
    clipped = ssd_anchors([(4, 5), (2, 3)], strides, (32, 40), [32.0, 64.0], (1.0,), clip=True)
    assert float(clipped.min()) == 0.0 and float(clipped[:, 2].max()) == 40.0 and float(clipped[:, 3].max()) == 32.0


def test_ssd_anchors_reject_mismatched_levels():
    with pytest.raises(ValueError):
        ssd_anchors([(4, 4)], [8, 16], (32, 32), [32.0], (1.0,))
    with pytest.raises(ValueError):
        ssd_anchors([(4, 4), (2, 2)], [8, 16], (32, 32), [32.0, 64.0], [(1.0,)])
