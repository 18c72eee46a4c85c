"""Each notebook runs end to end under papermill on a tiny run and displays its figures."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torchvision
from notebook_runs import errors, execute, figures, layers, outputs, title, widget_views

from workbench.inspection import load_traces
from workbench.methods import get_method
from workbench.pipelines.runs import ensure_traces
from workbench.viz.nms import nms_input

pytestmark = pytest.mark.slow


def test_train_notebook_trains_evaluates_and_plots(trained):
    run_dir, nb = trained
    assert not errors(nb)
    config = json.loads((run_dir / "config.json").read_text())
    assert config["method"] == "kl_rpn" and config["schedule"]["epochs"] == 1
    assert config["model"]["base"]["min_size"] == 96 and config["model"]["base"]["fpn_channels"] == 32
    assert (run_dir / "checkpoints" / "best.pt").exists()
    assert set(json.loads((run_dir / "eval" / "best_val.json").read_text())) >= {"AP", "AP50", "AR100"}
    assert (run_dir / "predictions" / "val.json").is_file()
    assert not (run_dir / "traces").exists()

    shown = figures(nb)
    curves = [f for f in shown if title(f).endswith("training")]
    keys = {t["meta"]["key"] for t in curves[0]["data"]}
    assert {"loss", "lr", "AP", "AP50"} <= keys and any(k.startswith("loss_rpn") for k in keys)
    tables = [f for f in shown if f["data"][0]["type"] == "table"]
    assert {"AP", "AP50", "AP95"} <= set(tables[0]["data"][0]["header"]["values"])
    pr = [f for f in shown if title(f).startswith("Precision-recall")]
    assert pr and pr[0]["data"] and all("category_id" in t["meta"] for t in pr[0]["data"])


def test_inspect_proposals_predicts_traces_and_shows_layers(trained, tmp_path):
    run_dir, _ = trained
    had_traces = (run_dir / "traces" / "val" / "manifest.json").is_file()
    nb = execute("inspect_proposals", tmp_path, run_dir=str(run_dir), num_images=2, device="cpu")
    assert not errors(nb)
    assert not had_traces, "the train notebook ran with trace=False"
    assert (run_dir / "traces" / "val" / "manifest.json").is_file(), "the notebook predicted with traces first"

    shown = figures(nb)
    images = [f for f in shown if title(f).startswith("proposals:")]
    assert len(images) == 2
    for figure in images:
        assert {"image", "gt", "proposals"} <= set(layers(figure))
    histogram = next(f for f in shown if "RPN proposal scores" in title(f))
    assert [t["meta"]["group"] for t in histogram["data"]] == ["before NMS", "after NMS"]
    # one panel figure per image when the method declares maps, one heatmap per declared map
    declared = [v for v in get_method("kl_rpn").record_views if v.kind == "heatmap"]
    maps = [f for f in shown if title(f).startswith("maps:")]
    assert len(maps) == (2 if declared else 0)
    assert all(sum(t["type"] == "heatmap" for t in f["data"]) == len(declared) for f in maps)
    assert widget_views(nb), "the explorer widget was not displayed"
    # the record keeps the explorer's first view as a plain figure, and no widget state (the
    # FigureWidget's would carry plotly.js, about 5 MB): its size follows what it shows
    (static,) = [f for f in shown if "the explorer's first view (static" in title(f)]
    assert {"image", "gt", "proposals"} <= set(layers(static))
    assert "widgets" not in nb.metadata
    size = (tmp_path / "inspect_proposals.ipynb").stat().st_size
    assert size < 1.5 * sum(len(json.dumps(f)) for f in shown) + 100_000
    assert size < 1_500_000


def test_nms_decisions_slider_steps_match_torchvision(trained, tmp_path):
    run_dir, _ = trained
    thresholds = [0.3, 0.6]
    nb = execute("nms_decisions", tmp_path, run_dir=str(run_dir), num_images=1, stage="rpn",
                 thresholds=thresholds, min_score=None, top_k=80, device="cpu")
    assert not errors(nb)

    shown = figures(nb)
    slider_figure = next(f for f in shown if f["layout"].get("sliders"))
    steps = slider_figure["layout"]["sliders"][0]["steps"]
    assert [s["label"] for s in steps] == ["0.30", "0.60"]
    chosen = nms_input(load_traces(run_dir, "val")[0]["rpn_nms"], top_k=80)
    assert len(chosen["scores"]) > 10
    for step, threshold in zip(steps, thresholds):
        visible = step["args"][0]["visible"]
        kept = [t for t, v in zip(slider_figure["data"], visible) if v and t["meta"]["layer"] == "kept"]
        expected = torchvision.ops.batched_nms(chosen["boxes"], chosen["scores"], chosen["idxs"], threshold)
        assert kept[0]["meta"]["keep"] == expected.tolist()
    overlays = [f for f in shown if title(f).startswith("detections and suppressed")]
    assert overlays and "suppressed" in layers(overlays[0])


def test_compare_runs_tables_curves_recall_and_fig3(trained, baseline_run, tmp_path):
    run_dir, _ = trained
    ensure_traces(run_dir, device="cpu")  # the method's declared figures read them
    nb = execute("compare_runs", tmp_path, run_dirs=[str(baseline_run), str(run_dir)], names=["baseline", "kl-rpn"],
                 max_images=4, device="cpu")
    assert not errors(nb)

    shown = figures(nb)
    tables = [f["data"][0] for f in shown if f["data"][0]["type"] == "table"]
    groups, speed, per_class, metrics, recall = tables
    assert speed["header"]["values"] == ["method/preset", "ms / image", "timed runs", "measured on"]
    assert all(float(v.split(" ")[0]) > 0 for v in speed["cells"]["values"][1])  # both runs timed while training
    # each run's timing as its last evaluation recorded it (the threads are the machine's unless limited)
    last_eval = [max((Path(r) / "eval").glob("epoch_*.json"), key=lambda f: int(f.stem.split("_")[1]))
                 for r in (baseline_run, run_dir)]
    recorded = [json.loads(f.read_text()) for f in last_eval]
    threads = [int(r["inference_threads"]) for r in recorded]
    assert speed["cells"]["values"][3] == [f"cpu, {t} thread{'' if t == 1 else 's'}, batch 2" for t in threads]
    assert not any(h.startswith("inference_") for h in metrics["header"]["values"])
    assert per_class["cells"]["values"][0] == ["faster_rcnn/tiny", "kl_rpn/tiny"]
    assert len(per_class["header"]["values"]) > 1
    assert groups["cells"]["values"][0] == ["faster_rcnn/tiny", "kl_rpn/tiny"]
    assert groups["header"]["values"][:6] == ["method/preset", "method", "preset", "seeds", "runs", "AP"]
    assert metrics["cells"]["values"][0] == ["baseline", "kl-rpn"]
    assert metrics["cells"]["values"][1] == ["faster_rcnn", "kl_rpn"]
    assert recall["header"]["values"][1:4] == ["AR@100", "AR@300", "AR@1000"]
    assert all(0.0 <= float(v) <= 1.0 for column in recall["cells"]["values"][1:] for v in column)
    per_iou = next(f for f in shown if title(f).startswith("AP against IoU threshold"))
    assert [t["meta"]["layer"] for t in per_iou["data"]] == ["faster_rcnn/tiny", "kl_rpn/tiny"]
    assert any(title(f).startswith("Training loss and AP, mean over seeds") for f in shown)
    curves = next(f for f in shown if title(f) == "Runs")
    assert {t["meta"]["run"] for t in curves["data"]} == {"baseline", "kl-rpn"}
    fig3 = next(f for f in shown if "objectness" in title(f))
    assert sum(t["type"] == "histogram" for t in fig3["data"]) == 2 * 4 * 2
    # the figures the method of each run declares, after the generic ones: one image each
    (declared,) = get_method("kl_rpn").run_figures
    printed = "".join(o.get("text", "") for o in outputs(nb) if o.get("output_type") == "stream")
    assert f"kl-rpn: {declared.title}" in printed and "baseline:" not in printed
    assert shown[-1] is next(f for f in shown if title(f).startswith("offset sigma at the anchor centres"))


def test_kl_rpn_notebook_shows_sigma_maps_proposals_and_fig3(trained, tmp_path):
    run_dir, _ = trained
    nb = execute("kl_rpn_uncertainty", tmp_path, run_dir=str(run_dir), num_images=1, max_images=4, device="cpu")
    assert not errors(nb)
    shown = figures(nb)
    (panels,) = [f for f in shown if title(f).startswith("offset sigma at the anchor centres")]
    heatmaps = [t for t in panels["data"] if t["type"] == "heatmap"]
    assert len(heatmaps) == 1  # the mean sigma, on anchor cells (the sigma of each coordinate is per box)
    assert all(t["dx"] > 1 for t in heatmaps)
    annotations = [a["text"].replace("<br>", " ") for a in panels["layout"]["annotations"]]
    assert annotations[0].startswith("mean sigma of the box offsets") and all("sigma" in a for a in annotations)
    (overlay,) = [f for f in shown if title(f).startswith("proposals (hover: sigma)")]
    assert {"map", "proposals", "gt"} <= set(layers(overlay))
    proposals = next(t for t in overlay["data"] if (t.get("meta") or {}).get("layer") == "proposals")
    assert "<br>sigma " in proposals["hovertext"][0]
    fig3 = next(f for f in shown if "objectness" in title(f))
    assert sum(t["type"] == "histogram" for t in fig3["data"]) == 4 * 2
