"""Several runs in one FiftyOne dataset (``workbench export fiftyone --run A --run B``), in a private
database (see ``conftest``): the samples and ground truth once, each run's declared fields under
its name, each evaluated under its own key; runs of another split or dataset refused;
re-exporting one run leaves the other's fields alone; the saved views."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from conftest import _cli

from workbench.errors import WorkbenchError
from workbench.export.fiftyone import GT_FIELD, evaluate_dataset, export_runs, run_names
from workbench.methods import get_method

NAME = "wb-two-runs"


def _declared(method: str) -> list[str]:
    return [v.field for v in get_method(method).record_views if v.app and v.kind in ("boxes", "suppressed")]


@pytest.fixture(scope="module")
def two_runs(fiftyone_db, kl_run, frcnn_run):
    """(dataset, summary, {run name: (run dir, method)}) of both runs exported together (the
    Faster R-CNN run has no traces yet: the export predicts them)."""
    dataset, summary = export_runs([kl_run, frcnn_run], name=NAME)
    kl, frcnn = run_names([kl_run, frcnn_run])
    return dataset, summary, {kl: (kl_run, "kl_rpn"), frcnn: (frcnn_run, "faster_rcnn")}


def test_one_dataset_holds_the_samples_once_and_each_runs_fields_under_its_name(two_runs):
    dataset, summary, runs = two_runs
    assert len(dataset) == summary.num_samples == 4
    schema = dataset.get_field_schema()
    assert GT_FIELD in schema and "predictions" not in schema
    for name, (_, method) in runs.items():
        for field in _declared(method):
            assert f"{name}_{field}" in schema, f"{name}_{field} missing"
            assert f"{name}_{field}" in summary.counts
    kl = next(n for n, (_, m) in runs.items() if m == "kl_rpn")
    assert f"{kl}_offset_sigma" in schema  # its declared heatmap
    assert f"{kl}_proposals.detections.sigma" in dataset.get_field_schema(flat=True)
    assert set(dataset.info["runs"]) == set(runs)
    assert dataset.info["split"] == "val"


def test_each_run_is_evaluated_under_its_own_key_as_fiftyone_would(two_runs):
    dataset, _, runs = two_runs
    assert set(dataset.list_evaluations()) == {f"{n}_eval" for n in runs}
    for name in runs:
        key, field = f"{name}_eval", f"{name}_predictions"
        assert dataset.get_evaluation_info(key).config.pred_field == field
        evaluate_dataset(dataset, dataset.default_classes, pred_field=field, eval_key="ref")
        for path in (field, GT_FIELD):
            ours = dataset.values([f"{path}.detections.{key}", f"{path}.detections.{key}_id"])
            theirs = dataset.values([f"{path}.detections.ref", f"{path}.detections.ref_id"])
            assert ours == theirs
        for suffix in ("tp", "fp", "fn"):
            assert dataset.values(f"{key}_{suffix}") == dataset.values(f"ref_{suffix}")
        dataset.delete_evaluation("ref")


def _copy_run(run, to):
    shutil.copytree(run, to, ignore=shutil.ignore_patterns("fiftyone"))
    return to


def _edit_json(path, change) -> None:
    content = json.loads(path.read_text())
    change(content)
    path.write_text(json.dumps(content))


def test_runs_of_another_dataset_are_refused(fiftyone_db, kl_run, frcnn_run, tmp_path):
    other = _copy_run(kl_run, tmp_path / "other_run")
    _edit_json(other / "traces" / "val" / "manifest.json",
               lambda m: m.setdefault("meta", {}).update(data=str(tmp_path / "another_dataset")))
    with pytest.raises(WorkbenchError, match="one split of one dataset") as error:
        export_runs([kl_run, other], name="wb-refused")
    assert "other_run" in str(error.value) and "another_dataset" in str(error.value)


def test_runs_of_another_split_are_refused(fiftyone_db, kl_run, tmp_path):
    """A run whose validation split is ``train`` (its traces of that split) beside one on ``val``."""
    other = _copy_run(kl_run, tmp_path / "train_run")
    (other / "traces" / "val").rename(other / "traces" / "train")
    _edit_json(other / "traces" / "train" / "manifest.json", lambda m: m.update(split="train"))
    _edit_json(other / "config.json", lambda c: c["data"].update(val_split="train"))
    with pytest.raises(WorkbenchError, match="one split of one dataset") as error:
        export_runs([kl_run, other], name="wb-refused")
    assert "'train'" in str(error.value) and "'val'" in str(error.value)


def test_reexporting_one_run_replaces_only_its_fields(two_runs, kl_run):
    dataset, _, runs = two_runs
    kl = next(n for n, (_, m) in runs.items() if m == "kl_rpn")
    frcnn = next(n for n in runs if n != kl)
    kept_ids = dataset.values(f"{frcnn}_predictions.detections.id")
    kept_gt = dataset.values(f"{GT_FIELD}.detections.{frcnn}_eval")
    gt_ids = dataset.values(f"{GT_FIELD}.detections.id")
    old_kl = dataset.values(f"{kl}_predictions.detections.id")
    out = _cli("export", "fiftyone", "--run", str(kl_run), "--name", NAME, "-q")
    assert NAME in out
    dataset.reload()
    assert dataset.values(f"{frcnn}_predictions.detections.id") == kept_ids
    assert dataset.values(f"{GT_FIELD}.detections.{frcnn}_eval") == kept_gt
    assert dataset.values(f"{GT_FIELD}.detections.id") == gt_ids
    new_kl = dataset.values(f"{kl}_predictions.detections.id")
    assert not {i for s in old_kl for i in s or []} & {i for s in new_kl for i in s or []}
    assert set(dataset.list_evaluations()) == {f"{kl}_eval", f"{frcnn}_eval"}
    assert set(dataset.info["runs"]) == set(runs)


def test_saved_views_answer_the_usual_questions(two_runs):
    from fiftyone import ViewField as F

    dataset, _, runs = two_runs
    kl = next(n for n, (_, m) in runs.items() if m == "kl_rpn")
    frcnn = next(n for n in runs if n != kl)
    slug = {n: n.replace("_", "-") for n in runs}
    names = set(dataset.list_saved_views())
    assert {f"{slug[kl]}-fp-{slug[frcnn]}-right", f"{slug[frcnn]}-fp-{slug[kl]}-right", "missed-by-all",
            f"{slug[kl]}-uncertain"} <= names
    assert f"{slug[frcnn]}-uncertain" not in names  # it declares no uncertainty

    missed = dataset.load_saved_view("missed-by-all")
    expected = dataset.filter_labels(GT_FIELD, (F(f"{kl}_eval") == "fn") & (F(f"{frcnn}_eval") == "fn"))
    assert missed.count(f"{GT_FIELD}.detections") == expected.count(f"{GT_FIELD}.detections") > 0
    for sample in missed:
        assert all(getattr(g, f"{kl}_eval") == getattr(g, f"{frcnn}_eval") == "fn" for g in sample[GT_FIELD].detections)

    for a, b in ((kl, frcnn), (frcnn, kl)):
        view = dataset.load_saved_view(f"{slug[a]}-fp-{slug[b]}-right")
        for sample in view:
            assert all(getattr(p, f"{a}_eval") == "fp" for p in sample[f"{a}_predictions"].detections)
            assert all(getattr(p, f"{b}_eval") == "tp" for p in sample[f"{b}_predictions"].detections)
            assert all(getattr(g, f"{a}_eval") == "fn" and getattr(g, f"{b}_eval") == "tp"
                       for g in sample[GT_FIELD].detections)

    uncertain = dataset.load_saved_view(f"{slug[kl]}-uncertain")
    values = [v for v in dataset.values(f"{kl}_predictions.detections.sigma_mean", unwind=True) if v is not None]
    shown = uncertain.values(f"{kl}_predictions.detections.sigma_mean", unwind=True)
    assert shown and min(shown) >= np.quantile(values, 0.9)
    assert len(shown) == sum(v >= np.quantile(values, 0.9) for v in values)


def test_the_command_line_takes_several_runs(two_runs, kl_run, frcnn_run):
    import fiftyone as fo

    _, _, runs = two_runs
    out = _cli("export", "fiftyone", "--run", str(kl_run), "--run", str(frcnn_run), "--name", "wb-two-runs-cli",
               "--no-eval", "-q")
    assert "'wb-two-runs-cli': 4 samples" in out
    for name in runs:
        assert f"{name}_predictions" in out
    dataset = fo.load_dataset("wb-two-runs-cli")
    assert dataset.list_evaluations() == [] and set(dataset.info["runs"]) == set(runs)
    assert "missed-by-all" not in dataset.list_saved_views()  # nothing evaluated
