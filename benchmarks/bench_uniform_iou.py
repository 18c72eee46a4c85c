"""The IoU-uniform sample generator vectorised over GT boxes and intervals, against a loop over
the GT boxes (the structure of the authors' code, zl1994/IoU-Uniform-R-CNN: a Python loop over
the GT boxes and intervals, each drawing its candidates at once).

Both draw ``num_candidates`` (500) candidates per (GT, interval) for the four default intervals
and keep 16 per interval, on random GT boxes of a 1000 x 600 image (the paper's VOC input), and
are timed alternately in one process. Prints a markdown table: median wall-clock times and their
ratio (loop / vectorised) at 5, 20 and 50 GT boxes; the loop as the authors' (IoU of every
candidate with every GT) and with the vectorised op's prefilter (IoU with every GT only for the
candidates inside their interval), which separates the gain of the prefilter from that of the
vectorisation.

    python benchmarks/bench_uniform_iou.py --threads 1 --repeats 5
"""

from __future__ import annotations

import argparse

import torch
from timing import interleaved, median_wall

from workbench.ops import box_iou, clip_boxes, uniform_iou_samples
from workbench.ops.uniform_iou import DEFAULT_INTERVALS, jitter_settings


def loop_over_gt(gt, image_size, intervals=DEFAULT_INTERVALS, per_interval=16, num_candidates=500, generator=None,
                 prefilter=False):
    """The same samples' distribution, one (GT, interval) at a time; ``prefilter``: the IoU with
    every GT only for the candidates inside the interval for their own GT (as the vectorised op)."""
    offsets, scales = jitter_settings(intervals)
    boxes, gt_index, ious, interval_index = [], [], [], []
    last = len(intervals) - 1
    for g in range(gt.shape[0]):
        wh = gt[g, 2:] - gt[g, :2]
        centre = (gt[g, :2] + gt[g, 2:]) / 2
        for k, ((lo, hi), s, (slo, shi)) in enumerate(zip(intervals, offsets, scales)):
            u = torch.rand((num_candidates, 4), generator=generator)
            new_centre = centre + (2 * u[:, :2] - 1) * s * wh
            half = (slo + u[:, 2:] * (shi - slo)) * wh / 2
            cand = clip_boxes(torch.cat((new_centre - half, new_centre + half), dim=1), image_size)
            if prefilter:
                own = box_iou(gt[g:g + 1], cand)[0].nan_to_num(0.0)
                near = torch.where((own >= lo) & ((own <= hi) if k == last else (own < hi)))[0]
                iou = box_iou(gt, cand[near]).nan_to_num(0.0)
                picked = near[torch.where(iou[g] >= iou.max(dim=0).values)[0][:per_interval]]
            else:
                iou = box_iou(gt, cand).nan_to_num(0.0)
                own = iou[g]
                inside = (own >= lo) & ((own <= hi) if k == last else (own < hi)) & (own >= iou.max(dim=0).values)
                picked = torch.where(inside)[0][:per_interval]
            boxes.append(cand[picked])
            ious.append(own[picked])
            gt_index.append(torch.full((picked.numel(),), g))
            interval_index.append(torch.full((picked.numel(),), k))
    return torch.cat(boxes), torch.cat(gt_index), torch.cat(ious), torch.cat(interval_index)


def random_gt(num: int, image_size: tuple[int, int], seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    height, width = image_size
    wh = torch.rand(num, 2, generator=g) * torch.tensor([width * 0.3, height * 0.3]) + 16
    xy = torch.rand(num, 2, generator=g) * (torch.tensor([width, height]) - wh)
    return torch.cat((xy, xy + wh), dim=1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--gt", type=int, nargs="+", default=[5, 20, 50])
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    image_size = (600, 1000)
    print(f"threads {args.threads}, repeats {args.repeats}, 4 intervals x 500 candidates, 16 kept per interval\n")
    print("| GT boxes | vectorised (ms) | loop over GT (ms) | loop, prefiltered (ms) | loop / vectorised "
          "| prefiltered loop / vectorised |")
    print("|---:|---:|---:|---:|---:|---:|")
    for num in args.gt:
        gt = random_gt(num, image_size, num)
        fns = {
            "vectorised": lambda: uniform_iou_samples(gt, image_size, generator=torch.Generator().manual_seed(0)),
            "loop": lambda: loop_over_gt(gt, image_size, generator=torch.Generator().manual_seed(0)),
            "prefiltered": lambda: loop_over_gt(gt, image_size, generator=torch.Generator().manual_seed(0),
                                                prefilter=True),
        }
        times = interleaved(fns, args.repeats, rotate=True)
        vec, loop, pre = (median_wall(times[k]) for k in ("vectorised", "loop", "prefiltered"))
        print(f"| {num} | {vec * 1e3:.1f} | {loop * 1e3:.1f} | {pre * 1e3:.1f} | {loop / vec:.2f} | {pre / vec:.2f} |")


if __name__ == "__main__":
    main()
