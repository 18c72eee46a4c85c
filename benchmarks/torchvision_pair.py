"""What the benchmarks that time a workbench detector against torchvision's (same weights, same
inputs) share: a seeded batch, one training step, the two timings (inference and a training
step, measured alternately) and the table of their medians."""

from __future__ import annotations

import argparse
from typing import Callable

import torch
from timing import interleaved, median_cpu, median_wall


def random_batch(num_images: int, size: int, device: torch.device, max_label: int):
    """Images of ``size`` by ``size`` (every second one 64 pixels narrower) from seeded noise,
    each with four random boxes and labels from 1 to ``max_label``."""
    g = torch.Generator().manual_seed(1)
    images, targets = [], []
    for i in range(num_images):
        height, width = size, size - 64 * (i % 2)
        images.append(torch.rand(3, height, width, generator=g).to(device))
        xy = torch.rand(4, 2, generator=g) * torch.tensor([width * 0.6, height * 0.6])
        wh = 32 + torch.rand(4, 2, generator=g) * torch.tensor([width * 0.35, height * 0.35])
        boxes = torch.cat([xy, xy + wh], dim=1)
        labels = torch.randint(1, max_label + 1, (4,), generator=g)
        targets.append({"boxes": boxes.to(device), "labels": labels.to(device)})
    return images, targets


def train_step(model: torch.nn.Module, optimizer: torch.optim.Optimizer, images, targets, workbench: bool) -> None:
    """Forward with targets, backward of the summed losses, one optimizer step."""
    optimizer.zero_grad(set_to_none=True)
    if workbench:
        loss = model(images, targets).total_loss()
    else:
        loss = sum(model(images, targets).values())
    loss.backward()
    optimizer.step()


def summarise(name: str, measure: str, times: dict[str, list[tuple[float, float]]]) -> dict[str, object]:
    tv, wb = times["torchvision"], times["workbench"]
    return {
        "name": name,
        "measure": measure,
        "tv_wall": median_wall(tv),
        "wb_wall": median_wall(wb),
        "tv_cpu": median_cpu(tv),
        "wb_cpu": median_cpu(wb),
    }


def time_pair(name: str, tv: torch.nn.Module, wb: torch.nn.Module, images, targets, args,
              device: torch.device) -> list[dict[str, object]]:
    """Inference (``tv`` and ``wb`` come in evaluation mode) and a training step with SGD at
    ``args.lr``: one row each, ``args.repeats`` alternate measurements after ``args.warmup``."""
    rows = []
    with torch.no_grad():
        times = interleaved(
            {"torchvision": lambda: tv(images), "workbench": lambda: wb(images)},
            args.repeats, warmup=args.warmup, device=device,
        )
    rows.append(summarise(name, "inference", times))

    tv.train()
    wb.train()
    tv_opt = torch.optim.SGD([p for p in tv.parameters() if p.requires_grad], lr=args.lr, momentum=0.9)
    wb_opt = torch.optim.SGD([p for p in wb.parameters() if p.requires_grad], lr=args.lr, momentum=0.9)
    times = interleaved(
        {
            "torchvision": lambda: train_step(tv, tv_opt, images, targets, workbench=False),
            "workbench": lambda: train_step(wb, wb_opt, images, targets, workbench=True),
        },
        args.repeats, warmup=args.warmup, device=device,
    )
    rows.append(summarise(name, "train step", times))
    return rows


def time_models(names: list[str], build: Callable[[str], torch.nn.Module], load: Callable[[str, torch.nn.Module], torch.nn.Module],
                args, device: torch.device, max_label: int) -> list[dict[str, object]]:
    """:func:`time_pair` for each name: ``build(name)`` makes the torchvision model (after
    ``torch.manual_seed(0)``), ``load(name, tv_model)`` the workbench one with its weights; both
    run on a fresh :func:`random_batch`."""
    rows = []
    for name in names:
        images, targets = random_batch(args.images, args.size, device, max_label)
        torch.manual_seed(0)
        tv = build(name).to(device).eval()
        wb = load(name, tv).eval()
        rows.extend(time_pair(name, tv, wb, images, targets, args, device))
    return rows


def print_report(batch: str, first_column: str, rows: list[dict[str, object]], args, device: torch.device) -> None:
    """A line on the batch (``batch`` describes its images), the classes, the repeats, the device
    and torch; then the table: wall-clock medians and their ratio (workbench / torchvision), on
    CPU also the ratio of the CPU-time medians."""
    where = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU, {torch.get_num_threads()} threads"
    print(f"\n{batch}, {args.num_classes} classes, median of {args.repeats}; {where}; torch {torch.__version__}\n")
    cpu = device.type == "cpu"
    header = f"| {first_column} | measure | torchvision (s) | workbench (s) | workbench / torchvision |"
    rule = "|---|---|---:|---:|---:|"
    if cpu:
        header += " CPU-time ratio |"
        rule += "---:|"
    print(header)
    print(rule)
    for row in rows:
        line = (
            f"| {row['name']} | {row['measure']} | {row['tv_wall']:.3f} | {row['wb_wall']:.3f} "
            f"| {row['wb_wall'] / row['tv_wall']:.3f} |"
        )
        if cpu:
            line += f" {row['wb_cpu'] / row['tv_cpu']:.3f} |"
        print(line)


def parse_args(description: str, option: str, choices: list[str], *, size: int, size_help: str, repeats: int):
    """The command line both benchmarks take (``option``: which models to time, all of
    ``choices`` by default), with the intra-op threads set; -> (arguments, device)."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--device", default="cpu")
    parser.add_argument(option, nargs="+", default=choices, choices=choices)
    parser.add_argument("--images", type=int, default=2, help="images per batch")
    parser.add_argument("--size", type=int, default=size, help=size_help)
    parser.add_argument("--num-classes", type=int, default=90, help="foreground classes")
    parser.add_argument("--repeats", type=int, default=repeats)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--lr", type=float, default=1e-5)
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    args = parser.parse_args()
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    return args, torch.device(args.device)
