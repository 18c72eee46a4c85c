"""Is a trained run's stride-32 feature map alive, and does its neck's batch norm still fit it?

For each run directory (its last checkpoint, its validation split), on the first ``--images``
validation images:

- the backbone body's deepest output (stride 32): how many channels vary over the images and
  positions (variance above 1e-6), and the shares of outputs at 0 and at 6 (a ReLU6's bounds);
- for every trainable batch norm of the model, the median over channels of the batch variance
  of its input on these images divided by its running variance (1 where the running
  statistics fit the evaluation images; far from 1 where evaluation normalises with statistics
  the images do not have);
- COCO AP and AP50 on these images twice: with the running statistics (evaluation as usual)
  and with each batch's own statistics in the batch norms (running statistics left unchanged).

This is how the YOLOv3 ``tiny`` collapse was found (docs/benchmarks.md, "Why YOLOv3 `tiny`
learned slowly"): MobileNetV2's block 18 saturated in training and the YOLOv3 neck's batch norm
then divided rounding noise by ``sqrt(eps)`` in evaluation.

    python benchmarks/stride32_check.py runs/unc3/baseline/seed_0 --images 48
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
from torch import nn


def stride32_liveness(features: torch.Tensor) -> dict[str, float]:
    """Channels of ``features`` (N, C, H, W) that vary over images and positions, and the
    shares of values at 0 and at 6."""
    variance = features.var(dim=(0, 2, 3))
    return {
        "channels": int(features.shape[1]),
        "alive": int((variance > 1e-6).sum()),
        "share_at_0": float((features <= 0).float().mean()),
        "share_at_6": float((features >= 6.0 - 1e-3).float().mean()),
    }


def batch_norm_fit(model: nn.Module, images: list[torch.Tensor]) -> dict[str, float]:
    """Per trainable batch norm: median over channels of the input's batch variance on
    ``images`` over the running variance."""
    inputs: dict[str, torch.Tensor] = {}
    norms = {name: m for name, m in model.named_modules() if isinstance(m, nn.BatchNorm2d)}
    hooks = [m.register_forward_hook(lambda mod, args, out, name=name: inputs.__setitem__(name, args[0]))
             for name, m in norms.items()]
    try:
        with torch.no_grad():
            model.eval()(images)
    finally:
        for hook in hooks:
            hook.remove()
    return {name: float((inputs[name].var(dim=(0, 2, 3)) / norms[name].running_var).median())
            for name in norms if name in inputs}


def evaluate(model: nn.Module, dataset, indices: list[int], *, batch_statistics: bool, batch_size: int = 4) -> dict:
    """AP and AP50 of ``model`` on ``dataset[indices]``; with ``batch_statistics`` the batch
    norms normalise each batch by its own statistics (their running ones unchanged)."""
    from workbench.data.collate import collate_samples
    from workbench.engine.inference import ImagePrediction, evaluate_predictions, images_to_model_input

    model.eval()
    norms = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    saved = [m.momentum for m in norms]
    if batch_statistics:
        for m in norms:
            m.train()
            m.momentum = 0.0
    predictions = []
    try:
        with torch.no_grad():
            for start in range(0, len(indices), batch_size):
                chunk = indices[start:start + batch_size]
                batch = collate_samples([dataset[i] for i in chunk])
                output = model(images_to_model_input(batch.images, torch.device("cpu")))
                predictions += [ImagePrediction(int(i), d) for i, d in zip(batch.image_ids, output.detections)]
    finally:
        for m, momentum in zip(norms, saved):
            m.eval()
            m.momentum = momentum
    metrics = evaluate_predictions(dataset, predictions, indices=indices, metric="coco")
    return {"AP": metrics["AP"], "AP50": metrics["AP50"]}


def check(run_dir: Path, num_images: int) -> None:
    from workbench.data.collate import collate_samples
    from workbench.engine.inference import images_to_model_input
    from workbench.engine.loading import open_trained_run

    run = open_trained_run(run_dir, "last", device="cpu")
    model = run.model.eval()
    indices = list(range(min(num_images, len(run.dataset))))
    batch = collate_samples([run.dataset[i] for i in indices])
    images = images_to_model_input(batch.images, torch.device("cpu"))
    with torch.no_grad():
        normalised = model.transform(images)
        tensor = (normalised[0] if isinstance(normalised, tuple) else normalised).tensor
        deepest = list(model.backbone.body(tensor).values())[-1]
    live = stride32_liveness(deepest)
    print(f"\n{run_dir} ({run.cfg.method}, {len(indices)} images)")
    print(f"  stride-32 map: {live['alive']} of {live['channels']} channels vary; "
          f"{live['share_at_0']:.1%} of outputs at 0, {live['share_at_6']:.1%} at 6")
    fit = batch_norm_fit(model, images)
    if fit:
        worst = sorted(fit.items(), key=lambda kv: abs(torch.tensor(kv[1]).log().item()), reverse=True)[:3]
        print(f"  trainable batch norms: {len(fit)}; batch / running variance (median), the three furthest "
              "from 1: " + ", ".join(f"{name} {ratio:.3g}" for name, ratio in worst))
    else:
        print("  no trainable batch norm")
    for batch_statistics in (False, True):
        m = evaluate(model, run.dataset, indices, batch_statistics=batch_statistics)
        label = "batch statistics" if batch_statistics else "running statistics"
        print(f"  {label:18s} AP {m['AP']:.4f}  AP50 {m['AP50']:.4f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", type=Path)
    parser.add_argument("--images", type=int, default=48)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    for run_dir in args.runs:
        check(run_dir, args.images)


if __name__ == "__main__":
    main()
