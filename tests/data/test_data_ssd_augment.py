"""The SSD augmentation with an explicit generator: photometric distortion, expand, min-IoU crop
and flip keep boxes inside the image, paired with their labels and ignore flags, and obey the
crop's rules (centre inside, minimum IoU, scale and aspect limits)."""

from __future__ import annotations

import pytest
import torch
from torchvision.ops import box_iou
from torchvision.transforms import v2

from workbench.data.sample import Sample
from workbench.data.transforms import (
    IMAGENET_MEAN_255,
    CropWindow,
    DetectionTransform,
    Expand,
    MinIouRandomCrop,
    PhotometricDistort,
    RandomHorizontalFlip,
    centres_inside,
    clip_and_drop_degenerate,
    ssd_eval_transform,
    ssd_train_transform,
)

from data_builders import assert_centre_rule


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def make_sample(h: int = 90, w: int = 120, n: int = 8, seed: int = 0, big: bool = False) -> Sample:
    """Random boxes in an ``h x w`` image (labels ``1..n``, even labels ignored); ``big`` adds a
    box covering most of the image, so that every minimum IoU can be met. The image holds each
    pixel's x and y in channels 0 and 1, so a crop or an expand reveals where it put the image."""
    g = gen(seed)
    xy = torch.rand(n, 2, generator=g) * torch.tensor([w - 10.0, h - 10.0])
    wh = 3 + torch.rand(n, 2, generator=g) * torch.tensor([w / 2, h / 2])
    boxes = torch.cat([xy, torch.minimum(xy + wh, torch.tensor([float(w), float(h)]))], dim=1)
    if big:
        boxes = torch.cat([boxes, torch.tensor([[2.0, 3.0, w - 2.0, h - 1.0]])])
    labels = torch.arange(1, len(boxes) + 1)
    y, x = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    image = torch.stack([x, y, torch.full_like(x, 7)]).to(torch.uint8)
    return Sample.from_arrays(image, boxes, labels, labels % 2 == 0, 1, "1.png")


def assert_consistent(s: Sample) -> None:
    h, w = s.size
    assert s.boxes.dtype == torch.float32 and s.image.dtype == torch.uint8
    assert len(s.labels) == len(s.ignore) == len(s.boxes)
    assert torch.equal(s.ignore, s.labels % 2 == 0)  # flags travel with their boxes
    if len(s):
        assert (s.boxes[:, :2] >= 0).all()
        assert (s.boxes[:, 2] <= w).all() and (s.boxes[:, 3] <= h).all()
        assert (s.boxes[:, 2:] - s.boxes[:, :2] >= 1.0).all()


def crop_offset(c: Sample) -> tuple[int, int]:
    """Where a crop of a coordinate image starts in the original."""
    return int(c.image[0, 0, 0]), int(c.image[1, 0, 0])


def test_training_pipeline_keeps_boxes_inside_and_paired():
    t = ssd_train_transform(96)
    seen_boxes = 0
    for seed in range(25):
        s = make_sample(seed=seed)
        out = t(s, generator=gen(seed))
        assert out.size == (96, 96)
        assert_consistent(out)
        assert set(out.labels.tolist()) <= set(s.labels.tolist())
        seen_boxes += len(out)
    assert seen_boxes > 0


def test_without_a_resize_the_output_size_varies_and_boxes_stay_inside():
    t = ssd_train_transform(None)
    sizes = set()
    for seed in range(25):
        out = t(make_sample(seed=seed), generator=gen(100 + seed))
        assert_consistent(out)
        sizes.add(out.size)
    assert len(sizes) > 5  # expand and crop changed the size


def test_crop_keeps_only_boxes_whose_centre_is_inside():
    crop = MinIouRandomCrop(min_ious=(0.0,))
    kept = dropped = 0
    for seed in range(20):
        s = make_sample(h=120, w=160, n=12, seed=seed)
        c = crop(s, generator=gen(seed))
        assert c.size != (120, 160)
        inside, outside = assert_centre_rule(s, c, *crop_offset(c))
        assert_consistent(c)
        kept, dropped = kept + inside, dropped + outside
    assert kept > 0 and dropped > 0  # both cases were seen


@pytest.mark.parametrize("min_iou", [0.1, 0.3, 0.5, 0.7, 0.9])
def test_the_kept_crop_meets_its_minimum_iou(min_iou):
    crop = MinIouRandomCrop(min_ious=(min_iou,))
    cropped = 0
    for seed in range(12):
        s = make_sample(seed=seed, big=True)
        window = crop.sample_window(s.boxes, *s.size, generator=gen(seed))
        c = crop(s, generator=gen(seed))
        if window is None:
            assert c is s
            continue
        cropped += 1
        assert window.min_iou == min_iou
        assert crop_offset(c) == (window.left, window.top) and c.size == (window.height, window.width)
        inside = centres_inside(s.boxes, window)
        assert float(box_iou(s.boxes[inside], window.box()).max()) >= min_iou
        # the crop's scale and aspect limits
        assert 0.3 * 120 - 1 <= window.width <= 120 and 0.3 * 90 - 1 <= window.height <= 90
        assert 0.5 <= window.width / window.height <= 2.0
    assert cropped >= 8


def test_no_crop_choice_and_empty_ground_truth_leave_the_image_whole():
    s = make_sample()
    assert MinIouRandomCrop(min_ious=(1.0,))(s, generator=gen(0)) is s
    empty = make_sample(n=0)
    assert MinIouRandomCrop()(empty, generator=gen(0)) is empty


def test_an_unreachable_minimum_gives_up_instead_of_looping():
    s = make_sample(n=1, seed=3)  # one small box: an IoU of 0.99 with a 0.3-1 crop is impossible
    s = s.replace(boxes=torch.tensor([[10.0, 10.0, 14.0, 14.0]]))
    crop = MinIouRandomCrop(min_ious=(0.99,), trials=5, max_rounds=3)
    assert crop(s, generator=gen(0)) is s


def test_crop_removes_degenerate_boxes_with_their_labels_and_flags():
    image = torch.zeros(3, 50, 50, dtype=torch.uint8)
    boxes = torch.tensor([[9.4, 5.0, 10.9, 20.0], [12.0, 12.0, 30.0, 30.0], [20.0, 20.0, 50.0, 40.0]])
    s = Sample.from_arrays(image, boxes, [1, 2, 3], [True, False, True], 1, "a.png")
    # the first box's centre (10.15) is inside a window starting at x = 10, but only 0.9 px of it is
    c = MinIouRandomCrop().crop(s, CropWindow(left=10, top=0, width=30, height=40, min_iou=0.0))
    assert c.labels.tolist() == [2, 3] and c.ignore.tolist() == [False, True]
    assert torch.allclose(c.boxes, torch.tensor([[2.0, 12.0, 20.0, 30.0], [10.0, 20.0, 30.0, 40.0]]))
    d = clip_and_drop_degenerate(s.replace(boxes=torch.tensor([[0.0, 0, 0.5, 9], [-3.0, -3, 49, 60], [5.0, 5, 5, 6]])))
    assert d.labels.tolist() == [2] and torch.equal(d.boxes, torch.tensor([[0.0, 0, 49, 50]]))


def test_photometric_distortion_never_moves_boxes():
    distort = PhotometricDistort(p=1.0)
    for seed in range(10):
        s = make_sample(seed=seed)
        s = s.replace(image=torch.randint(0, 256, s.image.shape, dtype=torch.uint8, generator=gen(seed)))
        out = distort(s, generator=gen(seed))
        assert out.size == s.size and not torch.equal(out.image, s.image)
        assert torch.equal(out.boxes, s.boxes) and torch.equal(out.labels, s.labels) and torch.equal(out.ignore, s.ignore)
    s = make_sample()
    assert PhotometricDistort(p=0.0)(s, generator=gen(0)).image is s.image


def test_expand_fills_with_the_mean_and_moves_boxes_with_their_pixels():
    s = make_sample(h=40, w=50)
    fill = (10, 200, 30)
    for seed in range(6):
        e = Expand(max_ratio=4.0, p=1.0, fill=fill)(s, generator=gen(seed))
        h, w = e.size
        assert 40 <= h <= 160 and 50 <= w <= 200 and h * w > 40 * 50
        dx, dy = round(float(e.boxes[0, 0] - s.boxes[0, 0])), round(float(e.boxes[0, 1] - s.boxes[0, 1]))
        assert torch.equal(e.boxes, s.boxes + torch.tensor([dx, dy, dx, dy], dtype=torch.float32))
        assert torch.equal(e.image[:, dy : dy + 40, dx : dx + 50], s.image)
        outside = torch.ones(h, w, dtype=torch.bool)
        outside[dy : dy + 40, dx : dx + 50] = False
        assert torch.equal(e.image[:, outside], torch.tensor(fill, dtype=torch.uint8)[:, None].expand(3, int(outside.sum())))
        assert torch.equal(e.labels, s.labels)


def test_the_pipeline_fills_the_canvas_with_the_given_mean():
    s = make_sample(h=30, w=30, n=0)
    # a mean given as floats (255 x a model's image_mean) is rounded onto the uint8 canvas
    t = ssd_train_transform(None, mean_fill=(1.4, 2.2, 2.7), photometric_p=0.0, expand_p=1.0, flip_p=0.0)
    out = t(s, generator=gen(4))
    assert out.size != (30, 30)
    assert (out.image.flatten(1) == torch.tensor([[1], [2], [3]], dtype=torch.uint8)).all(0).any()
    assert ssd_train_transform(300).transforms[1].fill == IMAGENET_MEAN_255


def test_flip_with_a_generator():
    s = make_sample(h=30, w=50)
    f = RandomHorizontalFlip(p=1.0)(s, generator=gen(0))
    assert torch.allclose(f.boxes[:, 0], 50 - s.boxes[:, 2]) and torch.allclose(f.boxes[:, 2], 50 - s.boxes[:, 0])
    assert torch.equal(f.image, s.image.flip(-1))
    flips = [RandomHorizontalFlip(0.5)(s, generator=gen(k)).image[0, 0, 0] == 49 for k in range(40)]
    assert 5 < sum(flips) < 35


def test_same_generator_seed_same_output_whatever_the_global_seed():
    t = ssd_train_transform(64)
    s = make_sample(n=8)
    g = gen(11)
    torch.manual_seed(1)
    a = [t(s, generator=g) for _ in range(6)]
    g = gen(11)
    torch.manual_seed(2)
    b = [t(s, generator=g) for _ in range(6)]
    for x, y in zip(a, b):
        assert torch.equal(x.image, y.image) and torch.equal(x.boxes, y.boxes) and torch.equal(x.labels, y.labels)
    assert any(not torch.equal(a[0].image, z.image) for z in a[1:])  # the draws advance
    c = t(s, generator=gen(12))
    assert not (torch.equal(c.image, a[0].image) and torch.equal(c.boxes, a[0].boxes))


def test_without_a_generator_the_global_seed_decides():
    t = ssd_train_transform(64)
    s = make_sample(n=8)
    torch.manual_seed(5)
    a = t(s)
    torch.manual_seed(5)
    b = t(s)
    assert torch.equal(a.image, b.image) and torch.equal(a.boxes, b.boxes)


def test_a_wrapped_torchvision_transform_follows_the_generator_and_leaves_the_global_state():
    t = DetectionTransform(v2.RandomPhotometricDistort(p=1.0))
    s = make_sample()
    state = torch.get_rng_state()
    a, b = t(s, generator=gen(3)), t(s, generator=gen(3))
    assert torch.equal(torch.get_rng_state(), state)
    assert torch.equal(a.image, b.image) and not torch.equal(a.image, s.image)


def test_empty_ground_truth_goes_through_the_pipeline():
    t = ssd_train_transform(80)
    for seed in range(10):
        out = t(make_sample(n=0), generator=gen(seed))
        assert out.size == (80, 80) and len(out) == 0
        assert out.boxes.shape == (0, 4) and out.labels.shape == (0,) and out.ignore.shape == (0,)
    assert ssd_eval_transform(80)(make_sample(n=0)).size == (80, 80)
