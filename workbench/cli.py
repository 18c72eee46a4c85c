"""The ``workbench`` command line.

Each subcommand parses its arguments here and calls one library function; the library does the
work. Input errors (``WorkbenchError``) become one line on stderr and exit code 2.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from workbench.errors import WorkbenchError


def _cmd_data_shapes(args: argparse.Namespace) -> int:
    from workbench.data.shapes import ShapesConfig, generate_shapes

    cfg = ShapesConfig(num_train=args.train, num_val=args.val, image_size=args.size, seed=args.seed)
    root = generate_shapes(Path(args.out), cfg, progress=not args.quiet)
    print(f"wrote the shapes dataset to {root}")
    return 0


def _cmd_data_check(args: argparse.Namespace) -> int:
    from workbench.data.check import check_data

    report = check_data(args.data, image_dir=args.images, progress=not args.quiet)
    print(report.format())
    return 0


def _cmd_evaluate(args: argparse.Namespace) -> int:
    if args.run is not None:
        if args.gt is not None or args.pred is not None:
            raise WorkbenchError("evaluate takes either --run RUN_DIR or --gt GT.json --pred PRED.json, not both")
        from workbench.engine.predict import evaluate_run

        metrics = evaluate_run(Path(args.run), which=args.checkpoint, data=args.data, split=args.split,
                               device=args.device, progress=False if args.quiet else "auto", metric=args.metric)
    else:
        from workbench.evaluation.detection import evaluate_files

        if args.gt is None or args.pred is None:
            raise WorkbenchError("evaluate needs --gt GT.json and --pred PRED.json (or --run RUN_DIR)")
        metrics = evaluate_files(Path(args.gt), Path(args.pred), args.metric or "coco")
    text = json.dumps(metrics, indent=2)
    if args.out:
        out = Path(args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(text + "\n")
    print(text)
    return 0


def _train_data_spec(args: argparse.Namespace) -> str | None:
    """``--data`` as given, or, with ``--val-data`` or ``--images``, the ``splits:`` spec of the
    training and validation COCO JSON files and their image folder."""
    from workbench.data.sources import split_files_spec

    if args.val_data is None and args.images is None:
        return args.data
    if args.data is None:
        raise WorkbenchError("--val-data and --images need --data (the training COCO JSON file)")
    return split_files_spec({"train": args.data, "val": args.val_data or args.data}, args.images)


def _cmd_train(args: argparse.Namespace) -> int:
    from workbench.config import apply_overrides
    from workbench.engine.trainer import load_run_config, train
    from workbench.methods import build_preset

    out = Path(args.out)
    if args.resume and (out / "config.json").exists():
        cfg = load_run_config(out)
    else:
        if args.resume:
            raise WorkbenchError(f"{out}: nothing to resume (no config.json)")
        cfg = build_preset(args.method, args.preset)
        cfg = apply_overrides(cfg, data=_train_data_spec(args), batch_size=args.batch_size, lr=args.lr, seed=args.seed,
                              amp=args.amp, optimizer=args.optimizer, max_train_images=args.max_train_images,
                              max_val_images=args.max_val_images, trace_sampling_every=args.trace_sampling_every)
    cfg = apply_overrides(cfg, epochs=args.epochs, device=args.device)
    result = train(cfg, out, resume=args.resume)
    from workbench import distributed

    if distributed.is_main_process():
        state = "interrupted" if result.interrupted else "finished"
        best = "n/a" if result.best_ap is None else f"{result.best_ap:.4f}"
        print(f"training {state} after {result.epochs_completed} epoch(s), {result.global_step} steps; "
              f"best {result.best_metric} {best}; run directory {result.run_dir}")
    distributed.shutdown()
    return 0


def _cmd_predict(args: argparse.Namespace) -> int:
    from workbench.engine.predict import predict_run

    path = predict_run(Path(args.run), Path(args.out) if args.out else None, which=args.checkpoint,
                       data=args.data, split=args.split, device=args.device, progress=False if args.quiet else "auto",
                       trace=args.trace)
    print(f"wrote COCO results to {path}")
    if args.trace:
        print(f"wrote traces to {Path(args.run) / 'traces'}")
    return 0


def _cmd_export_fiftyone(args: argparse.Namespace) -> int:
    from workbench.export.fiftyone import export_fiftyone

    _, summary = export_fiftyone([Path(r) for r in args.run], split=args.split, name=args.name,
                                 max_proposals=args.proposals, evaluate=not args.no_eval, progress=not args.quiet,
                                 device=args.device)
    counts = ", ".join(f"{n} {k}" for k, n in summary.counts.items())
    print(f"FiftyOne dataset {summary.name!r}: {summary.num_samples} samples ({counts}); "
          f"open it with `workbench app --name {summary.name}`")
    return 0


def _cmd_app(args: argparse.Namespace) -> int:
    from workbench.export.app import resolve_dataset_name, serve_app

    name = resolve_dataset_name(args.name, args.run, args.split)
    return serve_app(name, address=args.address, port=args.port)


def _cmd_demo(args: argparse.Namespace) -> int:
    from workbench.demo import format_summary, run_demo

    result = run_demo(Path(args.out), epochs=args.epochs, fresh=args.fresh, log_output=args.log_output)
    print(format_summary(result))
    return 0


def _cmd_pipeline_run(args: argparse.Namespace) -> int:
    from workbench.pipelines import load_pipeline, parse_parameter, run_pipeline

    overrides = {name: parse_parameter(value) for name, value in args.parameter or []}
    pipeline = load_pipeline(Path(args.file), Path(args.out) if args.out else None, overrides)
    outcomes = run_pipeline(pipeline, fresh=args.fresh, log_output=args.log_output)
    ran = sum(o.status == "ran" for o in outcomes)
    print(f"pipeline {pipeline.name}: {ran} step(s) ran, {len(outcomes) - ran} skipped; outputs in {pipeline.out}")
    return 0


def _cmd_pipeline_compare(args: argparse.Namespace) -> int:
    from workbench.methods import METHODS
    from workbench.pipelines.compare import DEFAULT_SEEDS, with_baselines, write_compare_pipeline

    methods = args.method or list(METHODS)
    seeds = args.seed or list(DEFAULT_SEEDS)
    path = write_compare_pipeline(args.file, methods, seeds, name=args.name, output=args.output,
                                  concurrent=args.concurrent, data=args.data)
    runs = len(with_baselines(methods)) * len(seeds)
    print(f"wrote {path}: {runs} training run(s) ({', '.join(with_baselines(methods))}; seeds "
          f"{', '.join(map(str, seeds))}); run it with `workbench pipeline run {path}`")
    return 0


def _cmd_report(args: argparse.Namespace) -> int:
    from workbench.report import build_report

    path = build_report(args.run, Path(args.out), names=args.name, max_images=args.max_images,
                        recall_top_n=args.recall_top_n, device=args.device,
                        all_runs=args.all_runs)
    print(f"wrote the report to {path}")
    return 0


def _cmd_methods(args: argparse.Namespace) -> int:
    from workbench.methods import METHODS, describe_method

    for name in METHODS:
        info = describe_method(name)
        print(f"{name}: {info['description']}")
        print(f"  paper:    {info['paper'] or '-'}")
        print(f"  baseline: {info['baseline'] or '- (a baseline)'}")
        print(f"  presets:  {', '.join(info['presets'])}")
        records = "; ".join(f"{record} ({', '.join(f'{kind} {field}' for kind, field in views)})"
                            for record, views in info["records"].items())
        print(f"  records:  {records}")
        print(f"  figures:  {'; '.join(info['figures']) or '-'}")
    return 0


def _add_run_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--checkpoint", default="best", help="best, last, or a checkpoint file (default best)")
    p.add_argument("--data", help="dataset (default: the run's own)")
    p.add_argument("--split", default=None, help="split (default: the run's validation split)")
    p.add_argument("--device", default="auto", help="auto, cpu or cuda")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="workbench", description="Train object detectors beside their baselines and look inside them."
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)

    data = sub.add_parser("data", help="build and check datasets")
    data_sub = data.add_subparsers(dest="data_command", required=True)
    shapes = data_sub.add_parser("shapes", help="generate the built-in shapes dataset (COCO JSON + PNG)")
    shapes.add_argument("--out", required=True, help="output folder")
    shapes.add_argument("--train", type=int, default=1000, help="number of training images")
    shapes.add_argument("--val", type=int, default=200, help="number of validation images")
    shapes.add_argument("--size", type=int, default=256, help="image side in pixels")
    shapes.add_argument("--seed", type=int, default=0)
    shapes.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    shapes.set_defaults(func=_cmd_data_shapes)
    check = data_sub.add_parser("check", help="validate a dataset and print a summary")
    check.add_argument("data", help="builtin:shapes, a COCO JSON file, a COCO root or a VOC root")
    check.add_argument("--images", help="image folder of a lone COCO JSON file (found next to it otherwise)")
    check.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    check.set_defaults(func=_cmd_data_check)

    evaluate = sub.add_parser(
        "evaluate", help="COCO metrics and AP at IoU 0.5..0.9 (with --metric voc07 also VOC07 mAP) of a results "
        "file, or of a run's checkpoint")
    evaluate.add_argument("--gt", help="COCO ground-truth JSON")
    evaluate.add_argument("--pred", help="COCO results JSON (image_id, category_id, bbox xywh, score)")
    evaluate.add_argument("--run", help="a run directory: evaluate its checkpoint on its validation split")
    evaluate.add_argument("--out", help="also write the metrics JSON here")
    evaluate.add_argument("--metric", choices=["coco", "voc07"],
                          help="coco, or voc07 to add VOC07 11-point and all-point mAP (default: the run's own "
                               "metric, coco for files)")
    _add_run_options(evaluate)
    evaluate.set_defaults(func=_cmd_evaluate)

    methods = sub.add_parser("methods", help="list the methods: paper, baseline, presets, trace records")
    methods.set_defaults(func=_cmd_methods)

    trainp = sub.add_parser("train", help="train a detector into a run directory")
    trainp.add_argument("--method", default="faster_rcnn", help="faster_rcnn, ... (see `workbench methods`)")
    trainp.add_argument("--preset", default="tiny", help="a preset of the method (default tiny)")
    trainp.add_argument("--data", help="dataset (default: the preset's, builtin:shapes), or the training COCO JSON file")
    trainp.add_argument("--val-data", help="the validation COCO JSON file, when --data is the training one")
    trainp.add_argument("--images", help="image folder of the COCO JSON files given by --data / --val-data")
    trainp.add_argument("--out", required=True, help="run directory")
    trainp.add_argument("--epochs", type=int)
    trainp.add_argument("--batch-size", type=int, help="images per process")
    trainp.add_argument("--lr", type=float, help="learning rate for this batch size (no linear scaling)")
    trainp.add_argument("--optimizer", choices=["sgd", "adam", "adamw"])
    trainp.add_argument("--device", default=None, help="auto, cpu, cuda or cuda:N (default auto)")
    trainp.add_argument("--seed", type=int)
    trainp.add_argument("--amp", choices=["none", "bf16", "fp16"], help="mixed precision on CUDA")
    trainp.add_argument("--max-train-images", type=int, help="train on the first N images only")
    trainp.add_argument("--max-val-images", type=int, help="evaluate on the first N images only")
    trainp.add_argument("--resume", action="store_true", help="continue the run in --out from its last checkpoint")
    trainp.add_argument("--trace-sampling-every", type=int,
                        help="every N steps record how the box stage samples its RoIs on the first images of the "
                             "batch (RUN/train_sampling; two-stage methods)")
    trainp.set_defaults(func=_cmd_train)

    predict = sub.add_parser("predict", help="COCO results of a run's checkpoint on a dataset split")
    predict.add_argument("--run", required=True, help="run directory")
    predict.add_argument("--out", help="results JSON (default RUN/predictions/<split>.json)")
    predict.add_argument("--trace", action="store_true", help="also save per-image traces to RUN/traces/<split>")
    _add_run_options(predict)
    predict.set_defaults(func=_cmd_predict)
    export = sub.add_parser("export", help="export a run to other tools")
    export_sub = export.add_subparsers(dest="export_command", required=True)
    efo = export_sub.add_parser("fiftyone", help="runs' traces, ground truth and evaluation as one FiftyOne dataset")
    efo.add_argument("--run", required=True, action="append",
                     help="run directory (traces are predicted first if missing); repeat it for several runs in "
                          "one dataset, their fields prefixed by the run's directory name")
    efo.add_argument("--name", help="dataset name (default workbench-<run dir name(s)>-<split>); a dataset of "
                                    "several runs keeps its other runs, the given runs' fields are replaced")
    efo.add_argument("--split", help="split (default: the run's validation split)")
    efo.add_argument("--proposals", type=int, default=100, help="RPN proposals per image to export (default 100)")
    efo.add_argument("--no-eval", action="store_true", help="skip the evaluation (TP / FP / FN per box)")
    efo.add_argument("--device", default="auto", help="device when traces must be predicted first")
    efo.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    efo.set_defaults(func=_cmd_export_fiftyone)
    app = sub.add_parser("app", help="serve the FiftyOne App on an exported dataset until Ctrl-C")
    app.add_argument("--name", help="FiftyOne dataset name")
    app.add_argument("--run", help="run directory: its default export name")
    app.add_argument("--split", help="split of --run (default: the run's validation split)")
    app.add_argument("--port", type=int, default=5151, help="port (default 5151)")
    app.add_argument("--address", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    app.set_defaults(func=_cmd_app)
    demo = sub.add_parser("demo", help="run pipelines/demo.yaml: train, evaluate, trace, export, notebooks, report")
    demo.add_argument("--out", default="demo-output", help="output folder (default demo-output)")
    demo.add_argument("--epochs", type=int,
                      help="train every run of the demo for this many epochs (default: each step's own: "
                           "3 for the two-stage runs, 1 for RefineDet and the uncertainty rescaling)")
    demo.add_argument("--fresh", action="store_true",
                      help="execute every step again (finished training runs are reused; delete --out to retrain)")
    demo.add_argument("--log-output", action="store_true", help="stream the notebooks' cell output")
    demo.set_defaults(func=_cmd_demo)
    pipeline = sub.add_parser("pipeline", help="run notebooks in batch from a pipeline file (papermill)")
    pipeline_sub = pipeline.add_subparsers(dest="pipeline_command", required=True)
    prun = pipeline_sub.add_parser("run", help="run a pipeline's steps in order, resuming finished ones")
    prun.add_argument("file", help="pipeline YAML file (e.g. pipelines/demo.yaml)")
    prun.add_argument("--out", help="output folder (default: the file's `output`)")
    prun.add_argument("--fresh", action="store_true", help="ignore the record of finished steps; run all")
    prun.add_argument("--log-output", action="store_true", help="stream the notebooks' cell output")
    prun.add_argument("-p", "--parameter", nargs=2, action="append", metavar=("NAME", "VALUE"),
                      help="set a notebook parameter (a YAML value) on every step whose notebook has it")
    prun.set_defaults(func=_cmd_pipeline_run)
    pcmp = pipeline_sub.add_parser(
        "compare", help="write a comparison pipeline: chosen methods' tiny presets and their baselines over seeds, "
                        "one FiftyOne dataset, compare_runs.ipynb and a report")
    pcmp.add_argument("--file", required=True, help="pipeline YAML file to write (e.g. pipelines/my_compare.yaml)")
    pcmp.add_argument("--method", action="append", help="a method (repeat; default: every registered method); "
                                                        "its baseline is added")
    pcmp.add_argument("--seed", action="append", type=int, help="a seed (repeat; default 0, 1, 2)")
    pcmp.add_argument("--concurrent", type=int, default=2, help="training runs side by side (default 2)")
    pcmp.add_argument("--data", default="builtin:shapes", help="dataset of every run (default builtin:shapes)")
    pcmp.add_argument("--name", default="compare_methods", help="pipeline and FiftyOne dataset name")
    pcmp.add_argument("--output", default="compare-output", help="the pipeline's output folder (default compare-output)")
    pcmp.set_defaults(func=_cmd_pipeline_compare)
    report = sub.add_parser("report", help="one self-contained HTML file with the metrics and key figures of runs")
    report.add_argument("--run", action="append", required=True,
                        help="a run directory (repeat to compare; seeds of a method and preset are grouped)")
    report.add_argument("--name", action="append", help="display name of each --run, in order")
    report.add_argument("--out", default="report.html", help="HTML file to write (default report.html)")
    report.add_argument("--max-images", type=int, default=50, help="val images for proposal recall (default 50)")
    report.add_argument("--recall-top-n", type=int, default=1000, help="proposals per image for recall (default 1000)")
    report.add_argument("--device", default="cpu", help="device for the proposal analyses (default cpu)")
    report.add_argument("--all-runs", action="store_true",
                        help="per-run sections for every run (default: the first run of each method and preset)")
    report.set_defaults(func=_cmd_report)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        return int(args.func(args) or 0)
    except WorkbenchError as exc:
        print(f"workbench: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("workbench: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
