"""RefineDet against SSD in the miniature regime: same data, budget and seeds; VOC07 11-point mAP
and COCO AP, the ablation of RefineDet's three components, and the anchor statistics.

Rows (``--rows``; each the ``tiny`` preset of its method with this comparison's data, epochs,
seed and metric ``voc07`` (which reports the COCO metrics too), plus the row's switches):

- ``ssd`` / ``refinedet``: the paper's claim (Table 1: 80.0 against SSD300's 77.2 on VOC07);
- ``refinedet_no_refine`` (the ODM on the original anchors), ``refinedet_no_filter`` (no
  negative anchor filtering), ``refinedet_no_tcb`` (the ODM on the ARM's source maps): one
  component off each (the paper's Table 3 removes them one by one).

The ``ssd`` row is the same network as the ``refinedet`` row without the three components
(:func:`workbench.methods.ssd.tiny_model`): the same MobileNetV2-FPN (ImageNet weights) at
strides 8..64, the same anchors, matcher, hard negative mining, box coding, candidate rule and
NMS, the same optimizer, schedule, batch, image size and augmentation; its head is RefineDet's
object detection module on the original anchors. So ``ssd`` against ``refinedet`` measures
what RefineDet adds, and ``ssd`` against ``refinedet_no_refine`` what the ARM's loss, the
filtering and the transfer connections add without refined anchors.

Measured after the last epoch: voc07_mAP, AP, AP50 (the trainer's evaluation on the validation
split); RefineDet rows also the anchor statistics of ``workbench.methods.refinedet.analysis``
on the validation traces (mean IoU of the ARM's matched anchors with their GT before and after
refinement, the share they improve, the share of the anchors filtered).

Finished runs are reused and interrupted ones resumed. Tables are printed as markdown.

    python benchmarks/compare_refinedet.py --seeds 0 1 2 --rows ssd refinedet --threads 2
    python benchmarks/compare_refinedet.py --seeds 0 --rows refinedet refinedet_no_refine refinedet_no_filter refinedet_no_tcb
"""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from seed_table import ap_table_lines, comparison_parser, final_eval, over_seeds  # noqa: E402

KEYS = ("voc07_mAP", "AP", "AP50")
STAT_KEYS = ("mean_iou_before", "mean_iou_after", "share_improved", "share_filtered")
#: row -> (method, model config fields changed from the method's tiny preset)
ROWS: dict[str, tuple[str, dict]] = {
    "ssd": ("ssd", {}),
    "refinedet": ("refinedet", {}),
    "refinedet_no_refine": ("refinedet", {"refine_anchors": False}),
    "refinedet_no_filter": ("refinedet", {"negative_filtering": False}),
    "refinedet_no_tcb": ("refinedet", {"transfer_connection": False}),
}


def row_config(row: str, seed: int, args):
    from workbench.config import apply_overrides
    from workbench.methods import build_preset

    method, changes = ROWS[row]
    cfg = build_preset(method, "tiny")
    cfg = dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, **changes), metric="voc07")
    return apply_overrides(cfg, data=args.data, epochs=args.epochs, seed=seed, device="cpu")


def measure(row: str, seed: int, args) -> dict:
    from workbench.pipelines.runs import train_or_resume

    run_dir = Path(args.out) / row / f"seed_{seed}"
    train_or_resume(row_config(row, seed, args), run_dir)
    result = {"row": row, "seed": seed, **final_eval(run_dir, KEYS)}
    if ROWS[row][0] == "refinedet":
        from workbench.data.sources import open_dataset
        from workbench.engine.predict import predict_run
        from workbench.inspection import load_traces
        from workbench.inspection.traces import trace_dir
        from workbench.methods.refinedet.analysis import anchor_statistics, gt_boxes_by_image

        cfg = row_config(row, seed, args)
        if not (trace_dir(run_dir, cfg.data.val_split) / "manifest.json").is_file():
            predict_run(run_dir, which="last", device="cpu", progress=False, trace=True)
        traces = load_traces(run_dir, cfg.data.val_split)
        stats = anchor_statistics(traces, gt_boxes_by_image(open_dataset(traces.meta["data"], traces.split)))
        result.update({k: getattr(stats, k) for k in STAT_KEYS})
    return result


def main() -> None:
    parser = comparison_parser(__doc__.splitlines()[0], rows=list(ROWS), default_rows=["ssd", "refinedet"],
                               out="runs/compare_refinedet")
    args = parser.parse_args()
    results = over_seeds(args, lambda row, seed: measure(row, seed, args))
    print("\n".join(ap_table_lines(results, KEYS)))
    stats = {row: evals for row, evals in results.items() if ROWS[row][0] == "refinedet"}
    if stats:
        print()
        print("\n".join(ap_table_lines(stats, STAT_KEYS)))


if __name__ == "__main__":
    main()
