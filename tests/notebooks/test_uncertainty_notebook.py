"""notebooks/uncertainty.ipynb: committed clean and thin, and, without a run, shows the uncertainty
maps, the difficulty maps, the detections coloured by uncertainty and the TP / FP distribution of
a freshly built model."""

from __future__ import annotations

from notebook_runs import assert_clean_and_thin, errors, execute, figures, layers, title


def test_committed_clean_and_thin():
    assert_clean_and_thin("uncertainty", kernel="python3")


def test_without_a_run_shows_the_four_figures(notebook_env, tmp_path):
    nb = execute("uncertainty", tmp_path, num_images=2, score_threshold=0.0)
    assert not errors(nb)
    shown = figures(nb)
    maps = [f for f in shown if title(f).startswith("uncertainty map")]
    assert len(maps) == 2
    assert [t["name"] for t in maps[0]["data"] if t["type"] == "heatmap"] == [
        "stride 8", "stride 16", "stride 32", "maximum over the scales"]
    difficulty = [f for f in shown if title(f).startswith("difficulty map")]
    assert len(difficulty) == 2
    assert {"anchors_tp", "anchors_fp", "anchors_fn"} <= set(layers(difficulty[0]))
    detections = [f for f in shown if title(f).startswith("detections coloured by uncertainty")]
    assert len(detections) == 2 and "detections" in layers(detections[0])
    (distribution,) = [f for f in shown if title(f).startswith("uncertainty of true and false positives")]
    assert [t["type"] for t in distribution["data"]] == ["histogram", "histogram"]
