import pytest
import torch
import torchvision
from torchvision.models.detection.transform import resize_boxes

from workbench import ops


def random_boxes(n, seed, size=500.0, degenerate=0):
    g = torch.Generator().manual_seed(seed)
    xy = torch.rand(n, 2, generator=g) * size
    wh = torch.rand(n, 2, generator=g) * size / 4
    boxes = torch.cat([xy, xy + wh], dim=1)
    boxes[:degenerate, 2:] = boxes[:degenerate, :2]  # zero-area boxes
    return boxes


@pytest.mark.parametrize("seed", range(3))
def test_format_round_trips(seed):
    boxes = random_boxes(50, seed).reshape(5, 10, 4)  # leading batch dims are allowed
    torch.testing.assert_close(ops.box_xywh_to_xyxy(ops.box_xyxy_to_xywh(boxes)), boxes)
    torch.testing.assert_close(ops.box_cxcywh_to_xyxy(ops.box_xyxy_to_cxcywh(boxes)), boxes)
    assert ops.box_xyxy_to_xywh(boxes).shape == boxes.shape


def test_format_values():
    box = torch.tensor([[10.0, 20.0, 30.0, 60.0]])
    assert ops.box_xyxy_to_xywh(box).tolist() == [[10.0, 20.0, 20.0, 40.0]]
    assert ops.box_xyxy_to_cxcywh(box).tolist() == [[20.0, 40.0, 20.0, 40.0]]
    assert ops.box_cxcywh_to_xyxy(torch.tensor([[20.0, 40.0, 20.0, 40.0]])).tolist() == box.tolist()


@pytest.mark.parametrize("seed", range(4))
def test_box_iou_equals_torchvision_bitwise(seed):
    a = random_boxes(40, seed, degenerate=3)
    b = random_boxes(30, seed + 100, degenerate=2)
    ours = ops.box_iou(a, b)
    theirs = torchvision.ops.box_iou(a, b)
    assert ours.shape == (40, 30)
    assert torch.equal(ours.nan_to_num(-1), theirs.nan_to_num(-1))
    assert torch.equal(ops.box_area(a), torchvision.ops.box_area(a))


def test_box_iou_invariants():
    a = random_boxes(30, 7)
    iou = ops.box_iou(a, a)
    torch.testing.assert_close(iou, iou.T)
    torch.testing.assert_close(iou.diagonal(), torch.ones(30))
    assert bool((iou >= 0).all() and (iou <= 1).all())
    # translation and uniform scaling leave IoU unchanged
    moved = ops.box_iou(a * 2 + 7, a * 2 + 7)
    torch.testing.assert_close(moved, iou, rtol=1e-5, atol=1e-6)


def test_box_iou_empty():
    assert ops.box_iou(torch.zeros(0, 4), random_boxes(3, 0)).shape == (0, 3)
    assert ops.box_iou(random_boxes(3, 0), torch.zeros(0, 4)).shape == (3, 0)


def test_pairwise_iou_is_the_diagonal():
    a, b = random_boxes(25, 1), random_boxes(25, 2)
    b[:5] = a[:5] + 3  # make some overlap
    assert torch.equal(ops.pairwise_iou(a, b), ops.box_iou(a, b).diagonal())
    with pytest.raises(ValueError):
        ops.pairwise_iou(a, b[:3])


def test_clip_boxes_matches_torchvision_and_stays_inside():
    boxes = random_boxes(60, 3, size=700.0) - 100
    clipped = ops.clip_boxes(boxes, (400, 500))
    assert torch.equal(clipped, torchvision.ops.clip_boxes_to_image(boxes, (400, 500)))
    assert bool((clipped[:, 0::2] >= 0).all() and (clipped[:, 0::2] <= 500).all())
    assert bool((clipped[:, 1::2] >= 0).all() and (clipped[:, 1::2] <= 400).all())


def test_nondegenerate_and_size_at_least():
    boxes = torch.tensor(
        [[0.0, 0.0, 5.0, 5.0], [0.0, 0.0, 0.0, 5.0], [0.0, 0.0, 5.0, 1.0], [3.0, 3.0, 2.0, 5.0]]
    )
    assert ops.nondegenerate(boxes).tolist() == [True, False, True, False]
    assert ops.nondegenerate(boxes, min_size=1.0).tolist() == [True, False, False, False]
    assert ops.size_at_least(boxes, 1.0).tolist() == [True, False, True, False]
    many = random_boxes(80, 4, degenerate=10)
    expected = torchvision.ops.remove_small_boxes(many, 20.0)
    assert torch.equal(torch.where(ops.size_at_least(many, 20.0))[0], expected)


def test_scale_boxes_matches_torchvision_resize_and_inverts():
    boxes = random_boxes(50, 5)
    resized, original = (800, 1067), (480, 640)
    ours = ops.scale_boxes(boxes, original[1] / resized[1], original[0] / resized[0])
    assert torch.equal(ours, resize_boxes(boxes, resized, original))
    back = ops.scale_boxes(ours, resized[1] / original[1], resized[0] / original[0])
    torch.testing.assert_close(back, boxes)
