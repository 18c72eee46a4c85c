"""Time the workbench Faster R-CNN against torchvision's with the same settings and inputs.

For each backbone (ResNet-50-FPN, ResNet-18-FPN) a torchvision ``FasterRCNN`` is built with
frozen batch norm and three trainable backbone stages (torchvision's settings for a pretrained
backbone), its weights are loaded into the workbench model with
``load_torchvision_faster_rcnn``, and both are timed on the same batch:

- inference: ``model(images)`` in evaluation mode under ``torch.no_grad()``;
- training step: forward with targets, backward of the summed losses, one SGD step.

The two models are measured alternately (the order flips every repeat) and the table reports
wall-clock medians and their ratio (workbench / torchvision); on CPU also the ratio of the
medians of process CPU time, which other jobs on a shared machine disturb less. The predictor's class weights are spread so
that the post-processing has detections to rank and suppress, as a trained model would.

    python benchmarks/bench_faster_rcnn.py                 # CPU
    python benchmarks/bench_faster_rcnn.py --device cuda   # GPU
"""

from __future__ import annotations

import argparse

import torch
from torchvision.models.detection import FasterRCNN as TorchvisionFasterRCNN
from torchvision.models.detection.backbone_utils import resnet_fpn_backbone
from torchvision.ops.misc import FrozenBatchNorm2d
from timing import interleaved, median_cpu, median_wall

from workbench.modeling import load_torchvision_faster_rcnn

BACKBONES = {"resnet50_fpn": "resnet50", "resnet18_fpn": "resnet18"}


def torchvision_model(backbone: str, size: int, num_classes: int) -> torch.nn.Module:
    body = resnet_fpn_backbone(
        backbone_name=BACKBONES[backbone], weights=None, norm_layer=FrozenBatchNorm2d, trainable_layers=3
    )
    model = TorchvisionFasterRCNN(body, num_classes=num_classes + 1, min_size=size, max_size=size)
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        weight = model.roi_heads.box_predictor.cls_score.weight
        weight.copy_(torch.randn(weight.shape, generator=g) * 0.05)
    return model


def batch(num_images: int, size: int, device: torch.device):
    g = torch.Generator().manual_seed(1)
    images, targets = [], []
    for i in range(num_images):
        height, width = size, size - 64 * (i % 2)
        images.append(torch.rand(3, height, width, generator=g).to(device))
        xy = torch.rand(4, 2, generator=g) * torch.tensor([width * 0.6, height * 0.6])
        wh = 32 + torch.rand(4, 2, generator=g) * torch.tensor([width * 0.35, height * 0.35])
        boxes = torch.cat([xy, xy + wh], dim=1)
        labels = torch.randint(1, 10, (4,), generator=g)
        targets.append({"boxes": boxes.to(device), "labels": labels.to(device)})
    return images, targets


def summarise(backbone: str, measure: str, times: dict[str, list[tuple[float, float]]]) -> dict[str, object]:
    tv, wb = times["torchvision"], times["workbench"]
    return {
        "backbone": backbone,
        "measure": measure,
        "tv_wall": median_wall(tv),
        "wb_wall": median_wall(wb),
        "tv_cpu": median_cpu(tv),
        "wb_cpu": median_cpu(wb),
    }


def train_step(model: torch.nn.Module, optimizer: torch.optim.Optimizer, images, targets, workbench: bool) -> None:
    optimizer.zero_grad(set_to_none=True)
    if workbench:
        loss = model(images, targets).total_loss()
    else:
        loss = sum(model(images, targets).values())
    loss.backward()
    optimizer.step()


def bench_backbone(backbone: str, args, device: torch.device) -> list[dict[str, object]]:
    images, targets = batch(args.images, args.size, device)
    rows = []

    torch.manual_seed(0)
    tv = torchvision_model(backbone, args.size, args.num_classes).to(device).eval()
    wb = load_torchvision_faster_rcnn(tv).eval()
    with torch.no_grad():
        times = interleaved(
            {"torchvision": lambda: tv(images), "workbench": lambda: wb(images)},
            args.repeats, warmup=args.warmup, device=device,
        )
    rows.append(summarise(backbone, "inference", times))

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
    rows.append(summarise(backbone, "train step", times))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--backbones", nargs="+", default=list(BACKBONES), choices=list(BACKBONES))
    parser.add_argument("--images", type=int, default=2, help="images per batch")
    parser.add_argument("--size", type=int, default=512, help="min_size = max_size of the transform")
    parser.add_argument("--num-classes", type=int, default=90, help="foreground classes")
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--lr", type=float, default=1e-5)
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    args = parser.parse_args()
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)

    rows = []
    for backbone in args.backbones:
        rows.extend(bench_backbone(backbone, args, device))

    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU, {torch.get_num_threads()} threads"
    print(f"\n{args.images} images, {args.size} px, {args.num_classes} classes, median of {args.repeats}; {name}; "
          f"torch {torch.__version__}\n")
    cpu = device.type == "cpu"
    header = "| backbone | measure | torchvision (s) | workbench (s) | workbench / torchvision |"
    rule = "|---|---|---:|---:|---:|"
    if cpu:
        header += " CPU-time ratio |"
        rule += "---:|"
    print(header)
    print(rule)
    for row in rows:
        line = (
            f"| {row['backbone']} | {row['measure']} | {row['tv_wall']:.3f} | {row['wb_wall']:.3f} "
            f"| {row['wb_wall'] / row['tv_wall']:.3f} |"
        )
        if cpu:
            line += f" {row['wb_cpu'] / row['tv_cpu']:.3f} |"
        print(line)


if __name__ == "__main__":
    main()
