"""notebooks/libra.ipynb: committed clean and thin, and, without a run, shows the loss figure,
the sampling figure and the pyramid figure of a freshly built model."""

from __future__ import annotations

import re

from notebook_runs import TINY_DATA, TINY_MODEL, assert_clean_and_thin, errors, execute, figures, layers, title


def test_committed_clean_and_thin():
    assert_clean_and_thin("libra")


def test_without_a_run_shows_the_three_figures(notebook_env, tmp_path):
    nb = execute("libra", tmp_path, num_images=2, loss_settings=[[0.5, 1.5]], beta=1.0)
    assert not errors(nb)
    shown = figures(nb)
    (loss,) = [f for f in shown if title(f).startswith("balanced L1 and smooth L1")]
    assert layers(loss) == ["smooth L1 (beta 1)"] * 2 + ["balanced L1 (alpha 0.5, gamma 1.5)"] * 2
    (sampling,) = [f for f in shown if title(f).startswith("IoU of the box stage's negatives")]
    assert layers(sampling) == ["all negatives", "random sampling", "IoU-balanced sampling"]
    assert all("above 0.05" in trace["name"] for trace in sampling["data"])
    (levels,) = [f for f in shown if title(f).startswith("mean |activation| per level")]
    assert layers(levels) == ["before", "after"] and len(levels["data"][0]["x"]) == 4


def test_a_run_that_recorded_its_sampling_shows_the_records(notebook_env, tmp_path):
    import torch

    from workbench.engine.trainer import train
    from workbench.pipelines.params import train_config

    torch.set_num_threads(1)
    run_dir = tmp_path / "run"
    model = {**TINY_MODEL, "backbone_weights": None, "backbone_norm": "bn"}
    cfg = train_config("libra_rcnn", "tiny", data=TINY_DATA, epochs=1, batch_size=2, device="cpu", seed=0,
                       max_train_images=4, max_val_images=1, trace_sampling_every=1, model_overrides=model)
    train(cfg, run_dir, progress=False)
    nb = execute("libra", tmp_path, run_dir=str(run_dir), num_images=1, sampling_from_step=2)
    assert not errors(nb)
    (sampling,) = [f for f in figures(nb) if title(f).startswith("IoU of the box stage's negatives")]
    assert title(sampling).startswith("IoU of the box stage's negatives while training (steps >= 2)")
    assert layers(sampling) == ["all negatives", "random sampling", "IoU-balanced sampling"]
    # the records of step 2 only: two images of 32 sampled RoIs each, of which the negatives
    counts = [int(re.search(r"\(n=(\d+)\)", trace["name"]).group(1)) for trace in sampling["data"]]
    assert counts[0] > counts[1] == counts[2] and 0 < counts[1] <= 64
