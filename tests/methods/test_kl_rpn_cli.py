"""KL-RPN through the command line: train the tiny preset on a few built-in images, predict,
then read the run back for the proposal analysis and the uncertainty maps."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch

from workbench.config import train_config_from_dict
from workbench.methods import build_preset

DATA = "builtin:shapes?train=8&val=4&size=96"


def _cli(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "workbench", *args], env=env, capture_output=True, text=True, timeout=600
    )


@pytest.fixture(scope="module")
def cli_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("kl_rpn_cli")
    env = {**os.environ, "WORKBENCH_CACHE": str(root / "cache"), "OMP_NUM_THREADS": "1"}
    run = root / "run"
    train = _cli(
        ["train", "--method", "kl_rpn", "--preset", "tiny", "--data", DATA, "--out", str(run),
         "--epochs", "1", "--batch-size", "4", "--max-train-images", "4", "--max-val-images", "2",
         "--device", "cpu", "--seed", "3"],
        env,
    )
    assert train.returncode == 0, train.stderr[-3000:]
    predict = _cli(["predict", "--run", str(run), "--device", "cpu", "-q"], env)
    assert predict.returncode == 0, predict.stderr[-3000:]
    return run, env, train, predict


def test_training_writes_a_kl_rpn_run(cli_run):
    run, _, train, _ = cli_run
    assert "training finished after 1 epoch(s), 1 steps" in train.stdout
    cfg = json.loads((run / "config.json").read_text())
    assert cfg["method"] == "kl_rpn" and cfg["optimizer"]["name"] == "adamw"
    assert cfg["model"]["rcnn_loss_weight"] == 10.0 and cfg["model"]["base"]["backbone"] == "mobilenet_v2_fpn"
    # the nested config reads back into the same typed config
    assert train_config_from_dict(cfg).model == build_preset("kl_rpn", "tiny").model
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    train_records = [r for r in records if r["kind"] == "train"]
    assert "loss_rpn_kl" in train_records[0] and "loss_rpn_cls" not in train_records[0]
    assert any(r["kind"] == "eval" and "AP" in r for r in records)


def test_predict_writes_coco_results(cli_run):
    run, _, _, predict = cli_run
    assert "wrote COCO results" in predict.stdout
    results = json.loads((run / "predictions" / "val.json").read_text())
    assert isinstance(results, list)
    assert all({"image_id", "category_id", "bbox", "score"} <= set(r) for r in results)


def test_a_trained_run_gives_uncertainty_maps_and_proposal_offsets(cli_run, monkeypatch):
    run, env, _, _ = cli_run
    monkeypatch.setenv("WORKBENCH_CACHE", env["WORKBENCH_CACHE"])
    from workbench.data.sources import open_dataset
    from workbench.engine.trainer import load_trained_model
    from workbench.methods.kl_rpn.analysis import run_objectness_offsets

    model, cfg, _ = load_trained_model(run, "last", "cpu")
    sample = open_dataset(cfg.data.spec, "val")[0]
    with torch.no_grad():
        out = model([sample.image.float() / 255.0])
    maps = out.raw["uncertainty_maps"][0]
    from workbench.inspection.maps import record_map_pixels

    assert record_map_pixels(maps, "sigma_mean", (96, 96)).shape == sample.image.shape[-2:] == (96, 96)
    assert bool(torch.isfinite(maps["sigma_mean"]).all()) and bool((maps["sigma_mean"] > 0).all())
    offsets = run_objectness_offsets(run, max_images=2)
    assert offsets.num_images == 2
    assert offsets.high.shape[1] == 4 and offsets.high.shape == offsets.low.shape
