"""notebooks/refinedet.ipynb: committed clean and thin, and on a one-epoch RefineDet run shows
the refined anchors, the detections' anchors, the filtered-share panels, the image with the
declared layers and the IoU histogram before and after refinement."""

from __future__ import annotations

import pytest
from notebook_runs import TINY_DATA, assert_clean_and_thin, errors, execute, figures, layers, title

SMALL = {
    "backbone_weights": None, "backbone_norm": "bn", "fpn_channels": 32, "tcb_channels": 16, "size": 96,
    "topk_candidates": 100, "detections_per_img": 30,
}


def test_committed_clean_and_thin():
    assert_clean_and_thin("refinedet")


@pytest.fixture(scope="module")
def refinedet_run(notebook_env, tmp_path_factory):
    import torch

    from workbench.engine.trainer import train
    from workbench.pipelines.params import train_config

    torch.set_num_threads(1)
    run_dir = tmp_path_factory.mktemp("refinedet") / "run"
    cfg = train_config("refinedet", "tiny", data=TINY_DATA, epochs=1, batch_size=2, device="cpu", seed=3,
                       model_overrides=SMALL)
    train(cfg, run_dir, progress=False)
    return run_dir


def test_the_notebook_shows_the_refinement_figures(refinedet_run, tmp_path):
    nb = execute("refinedet", tmp_path, run_dir=str(refinedet_run), num_images=1, num_anchors=10, max_images=4,
                 device="cpu")
    assert not errors(nb)
    shown = figures(nb)
    (refinement,) = [f for f in shown if title(f).startswith("the 10 most object-like anchors")]
    assert {"anchors", "refined anchors"} <= set(layers(refinement))
    (sources,) = [f for f in shown if title(f).startswith("detections (solid)")]
    assert {"anchors", "refined anchors", "detections"} <= set(layers(sources))
    (share,) = [f for f in shown if title(f).startswith("share of the anchors filtered")]
    assert sum(trace["type"] == "heatmap" for trace in share["data"]) == 5
    (image,) = [f for f in shown if title(f).startswith("detections, the most object-like")]
    assert "detections" in layers(image)
    (histogram,) = [f for f in shown if title(f).startswith("IoU with the matched ground truth")]
    assert [t["meta"]["layer"] for t in histogram["data"]] == ["before refinement", "after refinement"]
