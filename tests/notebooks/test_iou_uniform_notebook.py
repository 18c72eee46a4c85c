"""notebooks/iou_uniform.ipynb: committed clean and thin, and, without runs, shows the IoU
figures of a freshly built model and baseline."""

from __future__ import annotations

from notebook_runs import assert_clean_and_thin, errors, execute, figures, layers, title


def test_committed_clean_and_thin():
    assert_clean_and_thin("iou_uniform", kernel="python3")


def test_without_runs_shows_the_four_figures(notebook_env, tmp_path):
    nb = execute("iou_uniform", tmp_path, num_images=2)
    assert not errors(nb)
    shown = figures(nb)
    (histogram,) = [f for f in shown if title(f).startswith("IoU of the boxes")]
    assert layers(histogram) == ["RPN proposals", "generated samples", "refined RoIs", "refined RoIs, baseline"]
    (gain,) = [f for f in shown if title(f).startswith("Localisation gain")]
    assert layers(gain) == ["freshly built iou_uniform (untrained)", "freshly built faster_rcnn (untrained)"]
    (correlation,) = [f for f in shown if title(f).startswith("Predicted against true IoU")]
    assert {"first prediction (proposal features)", "after re-pooling the refined box"} <= set(layers(correlation))
    (recall,) = [f for f in shown if title(f).startswith("Recall against the matching IoU")]
    assert layers(recall) == ["NMS by class x IoU", "NMS by class score",
                              "baseline (freshly built faster_rcnn (untrained))"]
    (coloured,) = [f for f in shown if title(f).startswith("Detections coloured by their predicted IoU")]
    (detections,) = [t for t in coloured["data"] if (t.get("meta") or {}).get("layer") == "detections"]
    assert detections["meta"]["color_by"] == "iou_pred" and detections["marker"]["showscale"] is True
    assert "predicted" in detections["marker"]["colorbar"]["title"]["text"]
    assert not [f for f in shown if title(f).startswith("AP per IoU")]
