"""Time ``torchvision.ops.nms`` against ``workbench.ops.nms_with_ledger`` on the same boxes.

Boxes look like region-proposal output: 80% are jittered copies of a few hundred object boxes
(scores that fall with the jitter, plus noise), 20% are uniform over an 800 x 1216 image with
low scores. Both functions run on the same input in the same process, alternating, and the
median of the repeats is reported. Prints a markdown table.

    .venv/bin/python benchmarks/nms.py [--repeats 7] [--sizes 1000 10000 50000] [--threads N]

torchvision's CPU NMS is single-threaded; the ledger's tensor operations use torch's intra-op
threads (``--threads``, default torch's own setting). On a machine whose cores are busy with
other processes, several intra-op threads wait on each other: compare with ``--threads 1``.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time

import torch
import torchvision

from workbench.ops import nms_with_ledger

IMAGE_HEIGHT, IMAGE_WIDTH = 800, 1216


def proposal_like_boxes(num: int, seed: int = 0, num_objects: int = 300, uniform_fraction: float = 0.2):
    """``num`` boxes (num, 4) xyxy and scores (num,), clustered around ``num_objects`` objects."""
    g = torch.Generator().manual_seed(seed)
    num_uniform = int(num * uniform_fraction)
    num_clustered = num - num_uniform

    centre = torch.rand(num_objects, 2, generator=g) * torch.tensor([IMAGE_WIDTH, IMAGE_HEIGHT])
    size = torch.exp(torch.empty(num_objects).uniform_(3.0, 6.0, generator=g))  # 20 .. 400 px
    ratio = torch.exp(torch.empty(num_objects).uniform_(-0.7, 0.7, generator=g))
    object_wh = torch.stack((size * ratio.sqrt(), size / ratio.sqrt()), dim=1)

    owner = torch.randint(num_objects, (num_clustered,), generator=g)
    jitter = torch.randn(num_clustered, 4, generator=g) * 0.12
    cxcy = centre[owner] + jitter[:, :2] * object_wh[owner]
    wh = object_wh[owner] * jitter[:, 2:].exp()
    clustered = torch.cat((cxcy - wh / 2, cxcy + wh / 2), dim=1)
    quality = torch.exp(-(jitter**2).sum(dim=1) * 20)
    clustered_scores = 0.5 * quality + 0.5 * torch.rand(num_clustered, generator=g)

    cxcy = torch.rand(num_uniform, 2, generator=g) * torch.tensor([IMAGE_WIDTH, IMAGE_HEIGHT])
    side = torch.exp(torch.empty(num_uniform, 1).uniform_(2.5, 6.0, generator=g))
    uniform = torch.cat((cxcy - side / 2, cxcy + side / 2), dim=1)
    uniform_scores = torch.rand(num_uniform, generator=g) * 0.6

    boxes = torch.cat((clustered, uniform))
    scores = torch.cat((clustered_scores, uniform_scores))
    boxes[:, 0::2] = boxes[:, 0::2].clamp(0, IMAGE_WIDTH)
    boxes[:, 1::2] = boxes[:, 1::2].clamp(0, IMAGE_HEIGHT)
    order = torch.randperm(num, generator=g)
    return boxes[order].contiguous(), scores[order].contiguous()


def median_seconds(functions, repeats: int) -> list[float]:
    """Run each function once to warm up, then ``repeats`` rounds alternating them."""
    for function in functions:
        function()
    times: list[list[float]] = [[] for _ in functions]
    for _ in range(repeats):
        for function, bucket in zip(functions, times):
            start = time.perf_counter()
            function()
            bucket.append(time.perf_counter() - start)
    return [statistics.median(bucket) for bucket in times]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 10000, 50000])
    parser.add_argument("--thresholds", type=float, nargs="+", default=[0.7, 0.5])
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    args = parser.parse_args()
    if args.threads is not None:
        torch.set_num_threads(args.threads)

    print(
        f"torch {torch.__version__}, torchvision {torchvision.__version__}, {platform.machine()}, "
        f"{os.cpu_count()} CPU cores, {torch.get_num_threads()} torch threads, median of {args.repeats}"
    )
    print()
    print("| boxes | IoU thr | kept | suppressed | `torchvision.ops.nms` (ms) | `nms_with_ledger` (ms) | ratio |")
    print("|---:|---:|---:|---:|---:|---:|---:|")
    for num in args.sizes:
        boxes, scores = proposal_like_boxes(num)
        for threshold in args.thresholds:
            ledger = nms_with_ledger(boxes, scores, threshold)
            if not torch.equal(ledger.keep, torchvision.ops.nms(boxes, scores, threshold)):
                raise AssertionError("nms_with_ledger kept different boxes than torchvision")
            plain, with_ledger = median_seconds(
                [
                    lambda: torchvision.ops.nms(boxes, scores, threshold),
                    lambda: nms_with_ledger(boxes, scores, threshold),
                ],
                args.repeats,
            )
            kept = ledger.keep.numel()
            print(
                f"| {num:,} | {threshold} | {kept:,} | {num - kept:,} | {plain * 1e3:.1f} | "
                f"{with_ledger * 1e3:.1f} | {with_ledger / plain:.2f}x |"
            )


if __name__ == "__main__":
    main()
