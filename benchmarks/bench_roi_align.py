"""RoIAlign's input gradient on the CPU: torchvision's kernel (``torchvision::_roi_align_backward``)
against the sparse product of :mod:`workbench.ops.roi_align` (``W^T @ dY``).

The inputs are those of the ``tiny`` regime: 4 images of 256 px, a 128-channel FPN with strides
8 to 64 (32 x 32, 16 x 16, 8 x 8, 4 x 4), 7 x 7 bins, sampling ratio 2. The boxes are random,
log-uniform from 8 to 256 px a side, over and slightly past the images. Two rows per RoI count:

- ``pooler``: the multi-scale pooler (torchvision's ``MultiScaleRoIAlign`` against
  :class:`workbench.modeling.SparseGradMultiScaleRoIAlign`), every box on its FPN level;
- ``32x32``: every box on the stride-8 level, one op call (the largest map, the worst case).

Only the backward is timed (``torch.autograd.grad`` of the pooled output; the forward, the same
torchvision op in both, is built before each timing), the two alternately, their order flipped
every repeat. The table gives the median wall-clock times, their ratio and the largest absolute
difference of the two gradients.

    python benchmarks/bench_roi_align.py --threads 1 --repeats 7
"""

from __future__ import annotations

import argparse
from collections import OrderedDict

import torch
from timing import timed
from torchvision.ops import MultiScaleRoIAlign
from torchvision.ops import roi_align as tv_roi_align

from workbench.modeling import SparseGradMultiScaleRoIAlign
from workbench.ops import roi_align

IMAGE_SIZE = 256
BATCH = 4
CHANNELS = 128
STRIDES = (8, 16, 32, 64)
NAMES = [str(i) for i in range(len(STRIDES))]


def tiny_features(seed: int) -> OrderedDict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return OrderedDict(
        (name, torch.randn(BATCH, CHANNELS, IMAGE_SIZE // s, IMAGE_SIZE // s, generator=g).requires_grad_(True))
        for name, s in zip(NAMES, STRIDES)
    )


def random_boxes(num: int, seed: int) -> list[torch.Tensor]:
    """``num`` boxes split over the images, sides log-uniform in [8, 256] px."""
    g = torch.Generator().manual_seed(seed)
    per_image = [num // BATCH + (i < num % BATCH) for i in range(BATCH)]
    boxes = []
    for count in per_image:
        wh = torch.exp(torch.empty(count, 2).uniform_(0.0, 1.0, generator=g) * torch.log(torch.tensor(32.0))) * 8
        xy = torch.rand(count, 2, generator=g) * (IMAGE_SIZE + 16) - wh / 2
        boxes.append(torch.cat([xy, xy + wh], dim=1))
    return boxes


def backward_of(pool, inputs: list[torch.Tensor], seed: int):
    """A call that runs the forward (untimed) and returns ``(timed backward, gradients)``."""
    def run():
        out = pool()
        upstream = torch.randn(out.shape, generator=torch.Generator().manual_seed(seed))
        grads: list[tuple[torch.Tensor, ...]] = []
        elapsed = timed(lambda: grads.append(torch.autograd.grad(out, inputs, upstream)))
        return elapsed, grads[0]
    return run


def compare(runs: dict[str, object], repeats: int) -> tuple[dict[str, float], float]:
    """Median backward seconds of each run (alternating order) and the largest gradient difference."""
    names = list(runs)
    for name in names:
        runs[name]()  # warm-up
    times: dict[str, list[float]] = {name: [] for name in names}
    grads: dict[str, tuple[torch.Tensor, ...]] = {}
    for r in range(repeats):
        for name in names if r % 2 == 0 else names[::-1]:
            (wall, _), grads[name] = runs[name]()
            times[name].append(wall)
    first, second = (grads[name] for name in names)
    diff = max(float((a - b).abs().max()) for a, b in zip(first, second))
    return {name: sorted(t)[len(t) // 2] for name, t in times.items()}, diff


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--rois", type=int, nargs="+", default=[250, 1000, 4000])
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    feats = tiny_features(0)
    levels = list(feats.values())
    image_sizes = [(IMAGE_SIZE, IMAGE_SIZE)] * BATCH
    print(f"threads {args.threads}, repeats {args.repeats} (median), {BATCH} x {CHANNELS} channels, "
          f"levels {', '.join(f'{IMAGE_SIZE // s}x{IMAGE_SIZE // s}' for s in STRIDES)}, 7x7 bins, ratio 2\n")
    print("| RoIs | input | torchvision backward (ms) | sparse backward (ms) | torchvision / sparse "
          "| max abs grad difference |")
    print("|---:|---|---:|---:|---:|---:|")
    for num in args.rois:
        boxes = random_boxes(num, num)
        poolers = {"torchvision": MultiScaleRoIAlign(NAMES, 7, 2), "sparse": SparseGradMultiScaleRoIAlign(NAMES, 7, 2)}
        cases = {
            "pooler": ({name: backward_of(lambda p=p: p(feats, boxes, image_sizes), levels, num)
                        for name, p in poolers.items()}),
            "32x32": ({name: backward_of(lambda op=op: op(levels[0], boxes, 7, 1 / STRIDES[0], 2), levels[:1], num)
                       for name, op in (("torchvision", tv_roi_align), ("sparse", roi_align))}),
        }
        for label, runs in cases.items():
            medians, diff = compare(runs, args.repeats)
            tv, sparse = medians["torchvision"], medians["sparse"]
            print(f"| {num} | {label} | {tv * 1e3:.0f} | {sparse * 1e3:.0f} | {tv / sparse:.1f} | {diff:.1e} |")


if __name__ == "__main__":
    main()
