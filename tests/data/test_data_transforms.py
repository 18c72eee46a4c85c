"""Transforms keep images, boxes, labels and ignore flags consistent; batching and loaders."""

from __future__ import annotations

import pytest
import torch

from workbench.data.collate import Batch, collate_samples, make_loader
from workbench.data.sample import Sample
from workbench.data.transforms import (
    Compose,
    MinIouRandomCrop,
    eval_transforms_ssd,
    expand,
    horizontal_flip,
    photometric_distort,
    resize_fixed,
    resize_shortest,
    train_transforms_rcnn,
    train_transforms_ssd,
)

from data_builders import assert_centre_rule


def make_sample(h: int = 60, w: int = 80, n: int = 6, seed: int = 0, image_id: int = 1) -> Sample:
    """Random boxes inside an ``h x w`` image; label ``k + 1`` for box ``k``, even labels ignored."""
    g = torch.Generator().manual_seed(seed)
    image = torch.randint(0, 256, (3, h, w), dtype=torch.uint8, generator=g)
    xy = torch.rand(n, 2, generator=g) * torch.tensor([w - 12.0, h - 12.0])
    wh = 4 + torch.rand(n, 2, generator=g) * torch.tensor([w / 2, h / 2])
    boxes = torch.cat([xy, torch.minimum(xy + wh, torch.tensor([float(w), float(h)]))], dim=1)
    labels = torch.arange(1, n + 1)
    return Sample.from_arrays(image, boxes, labels, labels % 2 == 0, image_id, f"{image_id}.png")


def coordinate_image(h: int, w: int) -> torch.Tensor:
    """An image whose channels 0 and 1 hold each pixel's x and y (so a crop reveals its offset)."""
    y, x = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    return torch.stack([x, y, torch.zeros_like(x)]).to(torch.uint8)


def assert_consistent(s: Sample) -> None:
    """Boxes inside the image, non-degenerate, labels and ignore flags still paired."""
    h, w = s.size
    assert s.boxes.dtype == torch.float32 and s.image.dtype == torch.uint8
    assert len(s.labels) == len(s.ignore) == len(s.boxes)
    if len(s):
        assert (s.boxes[:, 0] >= 0).all() and (s.boxes[:, 1] >= 0).all()
        assert (s.boxes[:, 2] <= w).all() and (s.boxes[:, 3] <= h).all()
        assert (s.boxes[:, 2] > s.boxes[:, 0]).all() and (s.boxes[:, 3] > s.boxes[:, 1]).all()
        assert torch.equal(s.ignore, s.labels % 2 == 0)


def test_flip_twice_is_identity():
    s = make_sample()
    flip = horizontal_flip(p=1.0)
    once, twice = flip(s), flip(flip(s))
    assert not torch.equal(once.image, s.image)
    assert torch.equal(twice.image, s.image)
    assert torch.allclose(twice.boxes, s.boxes)
    assert torch.equal(twice.labels, s.labels) and torch.equal(twice.ignore, s.ignore)


def test_flip_mirrors_boxes_and_pixels():
    s = make_sample(h=30, w=50)
    f = horizontal_flip(p=1.0)(s)
    assert torch.allclose(f.boxes[:, 0], 50 - s.boxes[:, 2]) and torch.allclose(f.boxes[:, 2], 50 - s.boxes[:, 0])
    assert torch.equal(f.boxes[:, [1, 3]], s.boxes[:, [1, 3]])
    assert torch.equal(f.image, s.image.flip(-1))


def test_flip_with_p_zero_changes_nothing():
    s = make_sample()
    f = horizontal_flip(p=0.0)(s)
    assert torch.equal(f.image, s.image) and torch.equal(f.boxes, s.boxes)


def test_resize_shortest_scales_boxes_like_the_image():
    s = make_sample(h=50, w=80)
    r = resize_shortest(100, max_size=1000)(s)
    assert r.size == (100, 160)
    assert torch.allclose(r.boxes, s.boxes * 2.0, atol=1e-4)
    assert r.orig_size == (50, 80)  # where the image came from, for mapping predictions back


def test_resize_shortest_respects_the_max_size():
    s = make_sample(h=50, w=200)
    r = resize_shortest(100, max_size=300)(s)
    assert r.size == (75, 300)
    sy, sx = 75 / 50, 300 / 200
    assert torch.allclose(r.boxes, s.boxes * torch.tensor([sx, sy, sx, sy]), atol=1e-4)


def test_resize_fixed_scales_each_axis():
    s = make_sample(h=60, w=80)
    r = resize_fixed(120)(s)
    assert r.size == (120, 120)
    assert torch.allclose(r.boxes, s.boxes * torch.tensor([1.5, 2.0, 1.5, 2.0]), atol=1e-4)
    assert eval_transforms_ssd((64, 96))(s).size == (64, 96)


def test_photometric_distortion_keeps_geometry():
    torch.manual_seed(0)
    s = make_sample()
    p = photometric_distort(p=1.0)(s)
    assert p.size == s.size and not torch.equal(p.image, s.image)
    assert torch.equal(p.boxes, s.boxes) and torch.equal(p.labels, s.labels)


def test_expand_moves_boxes_with_their_pixels():
    torch.manual_seed(1)
    s = make_sample(h=40, w=50)
    e = expand(max_ratio=3.0, p=1.0)(s)
    h, w = e.size
    assert h > 40 and w > 50
    shift = e.boxes[:, :2] - s.boxes[:, :2]
    assert torch.allclose(shift, shift[0].expand_as(shift))  # one translation for all boxes
    dx, dy = int(shift[0, 0]), int(shift[0, 1])
    assert torch.equal(e.image[:, dy : dy + 40, dx : dx + 50], s.image)
    assert torch.equal(e.labels, s.labels)


def test_min_iou_crop_keeps_only_boxes_whose_centre_is_inside():
    crop = MinIouRandomCrop(min_ious=(0.0,))
    kept = dropped = 0
    for seed in range(12):
        torch.manual_seed(seed)
        s = make_sample(h=120, w=160, n=12, seed=seed)
        s = s.replace(image=coordinate_image(120, 160))
        c = crop(s)
        inside, outside = assert_centre_rule(s, c, int(c.image[0, 0, 0]), int(c.image[1, 0, 0]))
        assert_consistent(c)
        kept, dropped = kept + inside, dropped + outside
    assert kept > 0 and dropped > 0  # the test saw both cases


def test_min_iou_crop_leaves_images_without_boxes_alone():
    s = make_sample(n=0)
    assert MinIouRandomCrop()(s) is s


def test_ssd_training_pipeline_keeps_everything_consistent():
    t = train_transforms_ssd(96)
    for seed in range(15):
        torch.manual_seed(seed)
        s = make_sample(n=8, seed=seed)
        out = t(s)
        assert out.size == (96, 96)
        assert_consistent(out)
        assert set(out.labels.tolist()) <= set(s.labels.tolist())
    assert t(make_sample(n=0)).size == (96, 96)


def test_transforms_are_reproducible_with_the_torch_seed():
    t = train_transforms_ssd(64)
    s = make_sample(n=8)
    torch.manual_seed(5)
    a = [t(s) for _ in range(3)]
    torch.manual_seed(5)
    b = [t(s) for _ in range(3)]
    for x, y in zip(a, b):
        assert torch.equal(x.image, y.image) and torch.equal(x.boxes, y.boxes)
    assert any(not torch.equal(a[0].boxes, z.boxes) for z in a[1:])


def test_rcnn_preset_only_flips():
    t = train_transforms_rcnn(flip_p=1.0)
    s = make_sample(h=33, w=47)
    out = t(s)
    assert out.size == (33, 47) and torch.equal(out.image, s.image.flip(-1))


def test_compose_applies_in_order():
    s = make_sample(h=20, w=40)
    out = Compose([resize_fixed((40, 80)), horizontal_flip(p=1.0)])(s)
    assert torch.allclose(out.boxes[:, 0], 80 - 2 * s.boxes[:, 2], atol=1e-4)


# ----------------------------------------------------------------------------- batching


class _ListDataset(torch.utils.data.Dataset):
    def __init__(self, n: int, transform=None):
        self.n, self.transform = n, transform

    def __len__(self):
        return self.n

    def __getitem__(self, i):
        s = make_sample(h=20 + i, w=30, n=i % 3, seed=i, image_id=100 + i)
        return self.transform(s) if self.transform else s


def test_collate_keeps_variable_sizes_and_targets():
    samples = [_ListDataset(4)[i] for i in range(4)]
    b = collate_samples(samples)
    assert isinstance(b, Batch) and len(b) == 4
    assert [img.shape[1] for img in b.images] == [20, 21, 22, 23]
    assert b.image_ids == [100, 101, 102, 103] and b.file_names[2] == "102.png"
    assert b.orig_sizes[3] == (23, 30)
    assert [t["boxes"].shape[0] for t in b.targets] == [0, 1, 2, 0]
    assert set(b.targets[1]) == {"boxes", "labels", "ignore"}
    assert b.to("cpu").targets[2]["labels"].tolist() == [1, 2]


def test_loader_order_follows_the_seed():
    def order(seed):
        return [i for b in make_loader(_ListDataset(12), 4, shuffle=True, seed=seed) for i in b.image_ids]

    assert order(3) == order(3)
    assert order(3) != order(4)
    assert sorted(order(3)) == list(range(100, 112))
    unshuffled = [i for b in make_loader(_ListDataset(5), 2, shuffle=False) for i in b.image_ids]
    assert unshuffled == [100, 101, 102, 103, 104]


def test_loader_workers_augment_reproducibly():
    ds = _ListDataset(6, transform=train_transforms_ssd(48))

    def boxes(seed):
        loader = make_loader(ds, 3, shuffle=False, num_workers=1, seed=seed)
        return [t["boxes"] for b in loader for t in b.targets]

    a, b, c = boxes(7), boxes(7), boxes(8)
    assert all(torch.equal(x, y) for x, y in zip(a, b))
    assert not all(x.shape == y.shape and torch.equal(x, y) for x, y in zip(a, c))  # the seed drives them


def test_sampler_replaces_shuffle():
    sampler = list(reversed(range(4)))
    ids = [i for b in make_loader(_ListDataset(4), 2, shuffle=True, sampler=sampler) for i in b.image_ids]
    assert ids == [103, 102, 101, 100]


def test_sample_rejects_misaligned_fields():
    s = make_sample()
    with pytest.raises(ValueError, match="disagree"):
        s.replace(labels=s.labels[:-1])
    assert len(s.select(s.labels > 4)) == 2
