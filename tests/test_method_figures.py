"""The figures a method declares of a run (``Method.run_figures``): the declaration, and a report
over a trained tiny RefineDet run showing them without naming the method."""

from __future__ import annotations

import re

import plotly.graph_objects as go
import pytest

from detector_support import trained_small_run

from workbench.methods import FIGURE_NEEDS, METHODS, RunFigure, describe_method, get_method

DATA = "builtin:shapes?train=4&val=2&size=96"
#: RefineDet's ``tiny`` shrunk to 96-pixel images with random weights.
SMALL_REFINEDET = {
    "backbone_weights": None, "backbone_norm": "bn", "fpn_channels": 32, "tcb_channels": 16, "size": 96,
    "topk_candidates": 100, "detections_per_img": 30,
}


def test_every_declared_figure_names_what_it_reads_and_what_it_shows():
    declared = {name: get_method(name).run_figures for name in METHODS}
    assert all(f.title and callable(f.build) and f.needs in FIGURE_NEEDS for figs in declared.values() for f in figs)
    # the methods of the papers declare their own figures; their baselines none
    for name in ("kl_rpn", "iou_uniform", "libra_rcnn", "refinedet", "uncertainty_rescaling"):
        assert declared[name], name
    assert declared["faster_rcnn"] == () and declared["yolov3"] == ()
    assert describe_method("refinedet")["figures"] == [f.title for f in declared["refinedet"]]
    with pytest.raises(ValueError, match="unknown need"):
        RunFigure("x", lambda run_dir, **_: [], needs="weights")


def test_an_extension_keeps_its_baselines_figures_and_adds_its_own():
    base = get_method("faster_rcnn")
    extra = RunFigure("extra", lambda run_dir, **_: [], needs="config")
    marked = base.extended("marked", "d", base.model_config_type, base.build_model, lambda p, m: m, presets=("tiny",),
                           run_figures=(extra,))
    assert marked.run_figures == (extra,)
    again = marked.extended("again", "d", base.model_config_type, base.build_model, lambda p, m: m, presets=("tiny",))
    assert again.run_figures == (extra,)


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    with trained_small_run(tmp_path_factory, "refinedet", data=DATA, epochs=1, batch_size=2, max_train_images=4,
                           max_val_images=2, model_overrides=SMALL_REFINEDET) as out:
        yield out


def _headings(page: str) -> list[str]:
    return re.findall(r"<h2>(.*?)</h2>", page)


@pytest.mark.slow
def test_the_report_shows_the_figures_the_method_declares(run_dir, tmp_path):
    from workbench.engine.predict import predict_run
    from workbench.report import build_report, method_figure_sections

    declared = get_method("refinedet").run_figures
    # without traces: a note per trace figure, the report does not predict
    without = method_figure_sections(_load(run_dir), max_images=2)
    assert [s.title for s in without] == [f"seed_0: {f.title}" for f in declared]
    assert all(s.figure is None and "workbench predict --trace" in s.note for s in without)

    predict_run(run_dir, device="cpu", progress=False, trace=True)
    sections = method_figure_sections(_load(run_dir), max_images=2, figure_images=1)
    assert [s.title for s in sections] == [f"seed_0: {f.title}" for f in declared]
    refinement, shift = sections
    assert isinstance(refinement.figure, go.Figure)
    assert refinement.figure.layout.title.text.startswith("the 30 most object-like anchors before (dashed) and after")
    assert "(2 images)" in shift.figure.layout.title.text

    page = build_report([run_dir], tmp_path / "report.html", names=["refinedet-run"], max_images=2).read_text()
    headings = _headings(page)
    for figure in declared:
        assert f"refinedet-run: {figure.title}" in headings
    assert "the 30 most object-like anchors before (dashed) and after" in page


def _load(run_dir):
    from workbench.pipelines.runs import load_run

    return load_run(run_dir, "seed_0")


#: Small runs of the other methods that declare figures: (method, preset, model overrides).
SMALL_TWO_STAGE = {
    "backbone_weights": None, "backbone_norm": "bn", "fpn_channels": 32, "min_size": 96, "max_size": 96,
    "box_representation_size": 64, "rpn_pre_nms_top_n_train": 200, "rpn_post_nms_top_n_train": 100,
    "rpn_pre_nms_top_n_test": 200, "rpn_post_nms_top_n_test": 100, "box_batch_size_per_image": 32,
}
SMALL_YOLO = {
    "backbone_weights": None, "backbone_norm": "bn", "neck_channels": (16, 32, 64), "size": 96,
    "topk_candidates": 100, "detections_per_img": 30, "score_thresh": 0.0,
}
OTHER_RUNS = [("iou_uniform", "tiny", SMALL_TWO_STAGE), ("libra_rcnn", "tiny", SMALL_TWO_STAGE),
              ("uncertainty_rescaling", "tiny", SMALL_YOLO), ("kl_rpn", "tiny", SMALL_TWO_STAGE)]


@pytest.fixture(scope="module", params=OTHER_RUNS, ids=[m for m, _, _ in OTHER_RUNS])
def other_run(request, tmp_path_factory):
    from workbench.engine.predict import predict_run

    method, preset, overrides = request.param
    with trained_small_run(tmp_path_factory, method, preset, data=DATA, epochs=1, batch_size=2, max_train_images=4,
                           max_val_images=2, model_overrides=overrides) as out:
        predict_run(out, device="cpu", progress=False, trace=True)
        yield method, out


@pytest.mark.slow
def test_every_declared_figure_builds_from_a_trained_run(other_run):
    method, run_dir = other_run
    for figure in get_method(method).run_figures:
        built = figure.build(run_dir, max_images=2, device="cpu")
        assert built and all(isinstance(f, go.Figure) and f.data for f in built), (method, figure.title)
        assert len(built) == (2 if figure.per_image else 1), (method, figure.title)
