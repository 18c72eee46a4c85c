"""Training end to end on a few small images: run directory, resume, signals, NaN, torchrun."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import pytest
import torch
from engine_support import small_config

from workbench.engine.checkpoint import load_checkpoint
from workbench.engine.predict import evaluate_run, predict_run
from workbench.engine.timing import DEVICE, IMAGES, SECONDS_PER_IMAGE, THREADS, without_timing
from workbench.engine.trainer import NonFiniteLossError, Trainer, train
from workbench.errors import WorkbenchError


def _records(run, kind):
    return [json.loads(l) for l in (run / "metrics.jsonl").read_text().splitlines() if json.loads(l)["kind"] == kind]


def _assert_same_weights(a, b):
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


@pytest.fixture(scope="module")
def straight_run(small_shapes, tmp_path_factory):
    run = tmp_path_factory.mktemp("straight")
    result = train(small_config(small_shapes), run, progress=False)
    return run, result


def test_run_directory_holds_config_metrics_eval_and_checkpoints(straight_run):
    run, result = straight_run
    assert result.epochs_completed == 2 and not result.interrupted
    cfg = json.loads((run / "config.json").read_text())
    assert cfg["method"] == "faster_rcnn" and cfg["batch_size"] == 2
    train_records = _records(run, "train")
    assert len(train_records) == result.global_step == 8  # 8 images, batch 2, 2 epochs
    for key in ("loss_rpn_cls", "loss_rpn_box", "loss_rcnn_cls", "loss_rcnn_box", "lr", "step_time", "peak_memory_mb"):
        assert key in train_records[0]
    evals = _records(run, "eval")
    assert [e["epoch"] for e in evals] == [1, 2]
    assert set(json.loads((run / "eval" / "epoch_2.json").read_text())) >= {
        "AP", "AP50", "AP75", "AR100", "AP60", "AP70", "AP80", "AP90"}
    assert (run / "checkpoints" / "last.pt").exists() and (run / "checkpoints" / "best.pt").exists()
    best = load_checkpoint(run / "checkpoints" / "best.pt")
    assert best["best_ap"] == max(e["AP"] for e in evals)


def test_training_again_into_a_finished_run_is_refused(straight_run, small_shapes):
    run, _ = straight_run
    with pytest.raises(WorkbenchError, match="--resume"):
        train(small_config(small_shapes), run, progress=False)


@pytest.mark.parametrize("stop_at_step", [4, 3], ids=["after-epoch-1", "mid-epoch-2"])
def test_a_stopped_and_resumed_run_equals_an_uninterrupted_one(straight_run, small_shapes, tmp_path, stop_at_step):
    run, _ = straight_run
    cfg = small_config(small_shapes)

    def stop(record):
        if record.step == stop_at_step:
            os.kill(os.getpid(), signal.SIGINT)

    first = train(cfg, tmp_path, progress=False, hooks=[stop])
    assert first.interrupted and first.global_step == stop_at_step
    assert load_checkpoint(tmp_path / "checkpoints" / "last.pt")["global_step"] == stop_at_step

    resumed = train(cfg, tmp_path, resume=True, progress=False)
    assert resumed.global_step == 8 and not resumed.interrupted
    _assert_same_weights(
        load_checkpoint(run / "checkpoints" / "last.pt")["model"],
        load_checkpoint(tmp_path / "checkpoints" / "last.pt")["model"],
    )
    assert [without_timing(r) for r in _records(tmp_path, "eval")] == [without_timing(r) for r in _records(run, "eval")]
    assert [r["loss"] for r in _records(tmp_path, "train")] == [r["loss"] for r in _records(run, "train")]


def test_a_non_finite_loss_stops_with_the_step_and_part_and_keeps_the_last_checkpoint(small_shapes, tmp_path):
    cfg = small_config(small_shapes)
    trainer = Trainer(cfg, tmp_path, progress=False)

    def poison(record):
        if record.step == 5:  # first step of epoch 2: epoch 1 is checkpointed
            with torch.no_grad():
                trainer.model.roi_heads.box_predictor.bbox_pred.weight.fill_(float("nan"))

    trainer.hooks.append(poison)
    with pytest.raises(NonFiniteLossError, match=r"step 6 \(epoch 2\): loss_rcnn_box = nan") as err:
        trainer.fit()
    assert "last good checkpoint" in str(err.value)
    good = load_checkpoint(tmp_path / "checkpoints" / "last.pt")
    assert good["global_step"] == 4 and good["epoch"] == 1
    assert all(torch.isfinite(v).all() for v in good["model"].values() if v.is_floating_point())


def test_predict_and_evaluate_a_run(straight_run, tmp_path):
    run, _ = straight_run
    out = predict_run(run, tmp_path / "pred.json", which="last", device="cpu", progress=False)
    results = json.loads(out.read_text())
    assert all(set(r) == {"image_id", "category_id", "bbox", "score"} for r in results)
    metrics = evaluate_run(run, which="last", device="cpu", progress=False)
    reported = _records(run, "eval")[-1]
    assert without_timing(metrics) == {k: reported[k] for k in without_timing(metrics)}
    # the forward time per image of the pass, its device and threads, beside the metrics
    assert metrics[SECONDS_PER_IMAGE] > 0 and metrics[DEVICE] == "cpu" and metrics[THREADS] == torch.get_num_threads()
    assert metrics[IMAGES] == 2  # 4 val images in batches of 2: the first batch is the warm-up
    assert reported[SECONDS_PER_IMAGE] > 0  # the training's evaluations record it too


def test_torchrun_two_processes_report_the_single_process_evaluation(small_shapes, tmp_path):
    run = tmp_path / "ddp"
    cmd = [
        sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-port", "29631",
        "-m", "workbench", "train", "--preset", "tiny", "--data", str(small_shapes), "--out", str(run),
        "--epochs", "1", "--batch-size", "2", "--device", "cpu",
    ]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.count("training finished") == 1  # rank 0 only
    reported = _records(run, "eval")[-1]
    single = evaluate_run(run, which="last", device="cpu", progress=False)
    for key, value in without_timing(single).items():
        assert reported[key] == pytest.approx(value, abs=1e-12), key
    cfg = json.loads((run / "config.json").read_text())
    assert cfg["batch_size"] == 2
    # 8 images, 2 per process, 2 processes: 2 steps
    assert _records(run, "train")[-1]["step"] == 2


def test_train_or_resume_stops_its_caller_on_a_signal_and_resumes_on_the_next_call(straight_run, small_shapes, tmp_path):
    from workbench.errors import RunInterrupted
    from workbench.pipelines.runs import train_or_resume

    run, _ = straight_run
    cfg = small_config(small_shapes)

    def stop(record):
        if record.step == 3:
            os.kill(os.getpid(), signal.SIGTERM)

    with pytest.raises(RunInterrupted, match=rf"{tmp_path}.*stopped at step 3.*resumes"):
        train_or_resume(cfg, tmp_path, hooks=[stop])
    assert load_checkpoint(tmp_path / "checkpoints" / "last.pt")["global_step"] == 3

    resumed = train_or_resume(cfg, tmp_path)
    assert resumed.global_step == 8 and not resumed.interrupted
    _assert_same_weights(
        load_checkpoint(run / "checkpoints" / "last.pt")["model"],
        load_checkpoint(tmp_path / "checkpoints" / "last.pt")["model"],
    )
    assert train_or_resume(cfg, tmp_path) is None  # finished: reused
