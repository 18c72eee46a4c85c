"""notebooks/libra.ipynb: committed clean and thin, and, without a run, shows the loss figure,
the sampling figure and the pyramid figure of a freshly built model."""

from __future__ import annotations

from notebook_runs import assert_clean_and_thin, errors, execute, figures, layers, title


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
