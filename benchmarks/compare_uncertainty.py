"""Loss rescaling by uncertainty inference against its baseline and the paper's other rows, in the
miniature regime: same data, budget and seeds; VOC07 11-point mAP and COCO AP of each row, the
uncertainty of true against false positives, and the cost of the branch.

Rows (``--rows``): the ``tiny_<row>`` presets of ``uncertainty_rescaling`` (``tiny`` for
``method``), i.e. the YOLOv3 ``tiny`` with the row's switches (``workbench.methods.uncertainty.ROWS``):
``baseline``, ``obj_focal``, ``obj_anchor``, ``method``, ``convbayes``, ``conv``; the paper's
VOC07 mAP (Darknet-53, 608, VOC 07+12) beside each.

Measured with the weights after the last epoch (runs judged by VOC07 mAP, ``metric="voc07"``):

- ``voc07_mAP``, ``AP``, ``AP50`` (the trainer's evaluation on the validation split);
- rows with the convBayes branch: on the first ``--uncertainty-images`` validation images, the
  mean BALD of true and of false positives (score >= ``--score-threshold``, VOC rule at IoU 0.5)
  and the AUROC of the BALD for telling them apart;
- ``--cost`` (``--cost-only``: nothing else): a training step (forward + backward) and inference
  of ``baseline`` and ``method``, freshly built from their presets, on one validation batch,
  interleaved, median of ``--repeats``, and inference with a recorder (for the method: its BALD
  maps and per-anchor values traced).

Finished runs are reused and interrupted ones resumed. Results go to
``OUT/<row>/seed_<s>/compare.json``; tables are printed as markdown.

    python benchmarks/compare_uncertainty.py --seeds 0 1 2 --threads 1
    python benchmarks/compare_uncertainty.py --cost-only --threads 1 --repeats 5
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from seed_table import ap_table_lines, comparison_parser, final_eval, over_seeds  # noqa: E402

METHOD = "uncertainty_rescaling"
AP_KEYS = ("voc07_mAP", "AP", "AP50")
ROW_NAMES = ("baseline", "obj_focal", "obj_anchor", "method", "convbayes", "conv")


def preset_of(row: str) -> str:
    return "tiny" if row == "method" else f"tiny_{row}"


def row_config(row: str, seed: int, args: argparse.Namespace):
    """The row's preset with this comparison's data, epochs, seed, VOC07 judging and
    ``--model-overrides``."""
    from workbench.config import apply_overrides
    from workbench.methods import build_preset
    from workbench.pipelines.params import override_model

    cfg = build_preset(METHOD, preset_of(row))
    model = override_model(cfg.model, json.loads(args.model_overrides or "{}"))
    cfg = dataclasses.replace(cfg, model=model, metric="voc07")
    return apply_overrides(cfg, data=args.data, epochs=args.epochs, seed=seed, device="cpu")


def train_or_reuse(row: str, seed: int, args: argparse.Namespace) -> Path:
    from workbench.pipelines.runs import train_or_resume

    run_dir = Path(args.out) / row / f"seed_{seed}"
    train_or_resume(row_config(row, seed, args), run_dir)
    return run_dir


def uncertainty_of_detections(run_dir: Path, num_images: int, score_threshold: float) -> dict[str, float]:
    """Mean BALD of TP and FP detections and the AUROC of the BALD (FP against TP)."""
    from workbench.methods.uncertainty.analysis import figure_inputs, tp_fp_uncertainty, uncertainty_auroc

    inputs = figure_inputs(str(run_dir), num_images=num_images, device="cpu", which="last")
    detections = []
    with torch.no_grad():
        for start in range(0, len(inputs.images), 8):
            detections += inputs.model(inputs.images[start:start + 8]).detections
    tp, fp = tp_fp_uncertainty(detections, inputs.targets, score_threshold=score_threshold)
    return {"num_tp": int(tp.size), "num_fp": int(fp.size), "mean_u_tp": float(tp.mean()) if tp.size else float("nan"),
            "mean_u_fp": float(fp.mean()) if fp.size else float("nan"), "auroc": uncertainty_auroc(tp, fp)}


def measure(row: str, seed: int, args: argparse.Namespace) -> dict:
    run_dir = train_or_reuse(row, seed, args)
    path = run_dir / "compare.json"
    if path.exists():
        return json.loads(path.read_text())
    result = {"row": row, "seed": seed, **final_eval(run_dir, AP_KEYS)}
    if row in ("method", "convbayes"):
        result["uncertainty"] = uncertainty_of_detections(run_dir, args.uncertainty_images, args.score_threshold)
    path.write_text(json.dumps(result) + "\n")
    return result


def time_models(rows: list[str], args: argparse.Namespace) -> dict[str, dict[str, float]]:
    """Median seconds of a training step and of inference of each row's model (freshly built
    from its preset, seed 0: the cost does not depend on the weights) on the same first
    ``--cost-batch`` validation images, interleaved; and of inference with a recorder."""
    from workbench.data.collate import collate_samples
    from workbench.data.sources import open_dataset
    from workbench.engine.inference import images_to_model_input, targets_to_device
    from workbench.methods import get_method
    from workbench.modeling.trace import TraceRecorder

    configs = {row: row_config(row, 0, args) for row in rows}
    first = next(iter(configs.values()))
    dataset = open_dataset(first.data.spec, first.data.val_split, progress=False)
    batch = collate_samples([dataset[i] for i in range(args.cost_batch)])
    images = images_to_model_input(batch.images, torch.device("cpu"))
    targets = targets_to_device(batch.targets, torch.device("cpu"))
    models = {}
    for row, cfg in configs.items():
        torch.manual_seed(0)
        models[row] = get_method(METHOD).build_model(cfg.model, len(dataset.class_names))
    times: dict[str, dict[str, list[float]]] = {row: {"train_step": [], "inference": [], "inference_traced": []}
                                                for row in rows}
    for k in range(args.repeats + 1):
        for row, model in models.items():
            model.train()
            start = time.perf_counter()
            out = model(images, targets, generator=torch.Generator().manual_seed(k))
            sum(out.losses.values()).backward()
            model.zero_grad(set_to_none=True)
            times[row]["train_step"].append(time.perf_counter() - start)
            model.eval()
            with torch.no_grad():
                start = time.perf_counter()
                model(images)
                times[row]["inference"].append(time.perf_counter() - start)
                start = time.perf_counter()
                model(images, recorder=TraceRecorder())
                times[row]["inference_traced"].append(time.perf_counter() - start)
    # the first pass warms up allocators and caches
    return {row: {name: statistics.median(values[1:]) for name, values in kinds.items()} for row, kinds in times.items()}


def tables(results: dict[str, list[dict]]) -> str:
    from workbench.methods.uncertainty import PAPER_MAP

    lines = ap_table_lines(results, AP_KEYS)
    lines[0] += " paper (VOC07 mAP) |"
    lines[1] += "---:|"
    for i, row in enumerate(results, start=2):
        lines[i] += f" {PAPER_MAP[row]:.2f} |"
    measured = {row: [r["uncertainty"] for r in rows if "uncertainty" in r] for row, rows in results.items()}
    measured = {row: values for row, values in measured.items() if values}
    if measured:
        lines += ["", "BALD of the detections (bits): true against false positives", "",
                  "| row | seeds | TP | FP | mean U (TP) | mean U (FP) | AUROC |", "|---|---:|---:|---:|---:|---:|---:|"]
        for row, values in measured.items():
            def cell(key: str, fmt: str = ".4f") -> str:
                numbers = [v[key] for v in values if v[key] == v[key]]
                if not numbers:
                    return "-"
                spread = f" ± {statistics.stdev(numbers):{fmt}}" if len(numbers) > 1 else ""
                return f"{statistics.mean(numbers):{fmt}}{spread}"
            lines.append(f"| {row} | {len(values)} | {cell('num_tp', '.0f')} | {cell('num_fp', '.0f')} | "
                         f"{cell('mean_u_tp')} | {cell('mean_u_fp')} | {cell('auroc', '.3f')} |")
    return "\n".join(lines)


def main() -> None:
    parser = comparison_parser(__doc__.splitlines()[0], rows=list(ROW_NAMES), default_rows=list(ROW_NAMES),
                               out="runs/compare_uncertainty")
    parser.add_argument("--model-overrides", help="JSON object of model config fields for every row")
    parser.add_argument("--uncertainty-images", type=int, default=200, help="validation images for TP / FP uncertainty")
    parser.add_argument("--score-threshold", type=float, default=0.3)
    parser.add_argument("--cost", action="store_true", help="time baseline against method (freshly built models)")
    parser.add_argument("--cost-only", action="store_true", help="only the timing: train nothing")
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--cost-batch", type=int, default=4)
    args = parser.parse_args()
    if not args.cost_only:
        results = over_seeds(args, lambda row, seed: measure(row, seed, args))
        print(tables(results))
    elif args.threads is not None:
        torch.set_num_threads(args.threads)
    if args.cost or args.cost_only:
        timed = time_models(["baseline", "method"], args)
        print("\n| row | train step (s) | inference (s) | inference traced (s) |\n|---|---:|---:|---:|")
        for row, t in timed.items():
            print(f"| {row} | {t['train_step']:.4f} | {t['inference']:.4f} | {t['inference_traced']:.4f} |")
        if set(timed) == {"baseline", "method"}:
            b, m = timed["baseline"], timed["method"]
            print(f"\nmethod / baseline: training step {m['train_step'] / b['train_step']:.3f}x, "
                  f"inference {m['inference'] / b['inference']:.3f}x, "
                  f"inference traced {m['inference_traced'] / b['inference']:.3f}x")


if __name__ == "__main__":
    main()
