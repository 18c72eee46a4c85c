"""KL-RPN's uncertainty map by hand: the sigma of the offsets of the most certain anchor,
painted over the cell centred on each anchor centre, on a grid of half the smallest stride."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from workbench import records as R
from workbench.inspection.maps import map_to_pixels, record_map_pixels
from workbench.methods import RecordView, TWO_STAGE_VIEWS, get_method
from workbench.methods.kl_rpn.uncertainty import (
    RECORD_VIEWS,
    SIGMA_MAP_VIEW,
    location_sigma,
    nearest_centre,
    uncertainty_maps,
)


def _one_level() -> torch.Tensor:
    """Stride 4 on an 8 x 8 input: 2 x 2 locations (centres 0 and 4), 2 anchors each."""
    log_var = torch.zeros(1, 8, 2, 2)
    log_var[0, 0:4, 0, 0] = torch.tensor([-1.0, -2.0, -3.0, -4.0])  # anchor 0 at (0, 0): log obj 5
    log_var[0, 4:8, 0, 0] = 1.0  # anchor 1 at (0, 0): log obj -2, not chosen
    log_var[0, 0:4, 1, 1] = 2.0  # anchor 0 at (1, 1): log obj -4
    log_var[0, 4:8, 1, 1] = torch.tensor([0.0, 0.0, 0.0, 4.0])  # anchor 1 at (1, 1): -2, chosen
    return log_var


def test_each_location_takes_the_anchor_with_the_smallest_sigma_product():
    log_obj, sigma = location_sigma(_one_level(), 2)
    assert log_obj.shape == (1, 2, 2) and sigma.shape == (1, 4, 2, 2)
    assert float(log_obj[0, 0, 0]) == 5.0 and float(log_obj[0, 1, 1]) == -2.0
    np.testing.assert_allclose(sigma[0, :, 0, 0].numpy(), np.exp(0.5 * np.array([-1.0, -2.0, -3.0, -4.0])), rtol=1e-6)
    np.testing.assert_allclose(sigma[0, :, 1, 1].numpy(), [1.0, 1.0, 1.0, math.e**2], rtol=1e-6)
    np.testing.assert_allclose(sigma[0, :, 0, 1].numpy(), 1.0)


def test_cells_take_the_nearest_anchor_centre_not_the_block_to_its_right():
    # cells of 2 px: centres 1, 3, 5, 7; anchor centres at 0 and 4 (stride 4)
    assert nearest_centre(4, 2.0, 4, 2).tolist() == [0, 1, 1, 1]
    # the cell [2, 4) lies in [4 - 2, 4 + 2): anchor 1's, where the old map painted anchor 0
    assert nearest_centre(8, 1.0, 4, 2).tolist() == [0, 0, 1, 1, 1, 1, 1, 1]


STORED = {"sigma_mean_level0", "priority_level0", "level_strides", "network_size", "network_scale"}


def test_sigma_map_of_one_level_by_hand():
    maps = uncertainty_maps([_one_level()], [2], (8, 8), [(8, 8)], [(8, 8)])[0]
    assert set(maps.keys()) == STORED  # what a trace stores: one value per anchor location
    assert maps["sigma_mean_level0"].shape == (2, 2) and maps["sigma_mean_level0"].dtype == torch.float16
    # shown on cells of half the stride
    assert maps["sigma_mean"].shape == (4, 4) and maps[R.MAP_CELL_SIZE].tolist() == [2.0, 2.0]
    s00 = np.exp(0.5 * np.array([-1.0, -2.0, -3.0, -4.0]))
    expected = np.ones((4, 4))
    expected[0, 0] = s00.mean()  # location (0, 0) owns only the top-left cell [0, 2) x [0, 2)
    expected[1:, 1:] = (3 + math.e**2) / 4  # location (1, 1), centre (4, 4), owns [2, 8) x [2, 8)
    np.testing.assert_allclose(maps["sigma_mean"].numpy(), expected, rtol=1e-3)
    assert float(maps["priority"][0, 0]) == 5.0 and float(maps["priority"][2, 2]) == -2.0
    assert maps["level"].dtype == torch.int64 and int(maps["level"].max()) == 0


def test_the_level_with_the_smaller_sigma_product_wins():
    fine = torch.zeros(1, 4, 2, 2)  # stride 4, one anchor, sigma 1 everywhere (log obj 0)
    fine[0, :, 1, 1] = -2.0  # location (1, 1): sigma e^-1, log obj 4
    coarse = torch.full((1, 4, 1, 1), -1.0)  # stride 8, one location centred at 0: log obj 2
    maps = uncertainty_maps([fine, coarse], [1, 1], (8, 8), [(8, 8)], [(8, 8)])[0]
    assert maps["sigma_mean_level1"].shape == (1, 1)
    level = maps["level"].numpy()
    expected = np.ones((4, 4), dtype=np.int64)
    expected[1:, 1:] = 0  # the fine location (1, 1) beats the coarse one where it paints
    np.testing.assert_array_equal(level, expected)
    np.testing.assert_allclose(maps["sigma_mean"].numpy()[0, 0], math.exp(-0.5), rtol=1e-3)
    np.testing.assert_allclose(maps["sigma_mean"].numpy()[3, 3], math.exp(-1.0), rtol=1e-3)


def test_maps_are_cropped_to_the_image_and_know_their_cell_in_original_pixels():
    # the image fills the top-left 4 x 6 of the padded 8 x 8 input; the original is 8 x 12
    maps = uncertainty_maps([_one_level()], [2], (8, 8), [(4, 6)], [(8, 12)])[0]
    assert maps["sigma_mean"].shape == (2, 3)
    assert maps[R.MAP_CELL_SIZE].tolist() == [4.0, 4.0]
    pixels = record_map_pixels(maps, "sigma_mean", (8, 12))
    assert pixels.shape == (8, 12)
    s00 = float(np.exp(0.5 * np.array([-1.0, -2.0, -3.0, -4.0])).mean())
    assert pixels[0, 0] == pytest.approx(s00, rel=1e-3) and pixels[3, 3] == pytest.approx(s00, rel=1e-3)
    centre = (3 + math.e**2) / 4
    assert pixels[4, 4] == pytest.approx(centre, rel=1e-3) and pixels[7, 11] == pytest.approx(centre, rel=1e-3)


def _pixel_map(log_var_per_level, anchors, strides, size, original):
    """The image-size map of the full-resolution record, computed per pixel in float32: the
    pixel centre in network pixels, on each level the anchor location nearest to it, the level
    of largest log objectness (ties: the finer); its mean sigma, and the margin by which the
    level won (``inf`` where one level covers the pixel alone)."""
    h, w = size
    oh, ow = original
    ys = (np.arange(oh) + 0.5) * h / oh
    xs = (np.arange(ow) + 0.5) * w / ow
    best = np.full((oh, ow), -np.inf)
    second = np.full((oh, ow), -np.inf)
    value = np.zeros((oh, ow))
    for log_var, a, (sy, sx) in zip(log_var_per_level, anchors, strides):
        log_obj, sigma = location_sigma(log_var, a)
        log_obj, mean = log_obj[0].numpy(), sigma[0].mean(dim=0).numpy()
        r = np.clip(np.floor(ys / sy + 0.5).astype(int), 0, log_obj.shape[0] - 1)
        c = np.clip(np.floor(xs / sx + 0.5).astype(int), 0, log_obj.shape[1] - 1)
        obj, val = log_obj[r][:, c], mean[r][:, c]
        better = obj > best
        second = np.where(better, best, np.maximum(second, obj))
        value = np.where(better, val, value)
        best = np.where(better, obj, best)
    return value, best - second


def test_stored_maps_are_per_level_float16_and_show_as_the_full_resolution_map():
    g = torch.Generator().manual_seed(0)
    strides, anchors = [(4, 4), (8, 8), (16, 16)], [3, 3, 3]
    log_var = [torch.randn(1, 12, 32 // s, 48 // s, generator=g) for s, _ in strides]
    size, original = (30, 44), (45, 66)
    maps = uncertainty_maps(log_var, anchors, (32, 48), [size], [original])[0]
    # one value per anchor location of each level, the locations past the image's dropped
    for level, (s, _) in enumerate(strides):
        rows, cols = maps[f"sigma_mean_level{level}"].shape
        assert (rows, cols) == (min(32 // s, int(30 / s + 0.75) + 1), min(48 // s, int(44 / s + 0.75) + 1))
        assert maps[f"sigma_mean_level{level}"].dtype == maps[f"priority_level{level}"].dtype == torch.float16
    expected, margin = _pixel_map(log_var, anchors, strides, size, original)
    shown = record_map_pixels(maps, "sigma_mean", original)
    assert shown.shape == original
    # where the winning level won by more than float16's rounding of the log objectness, the
    # shown map is the full-resolution one to float16 precision
    clear = margin > 0.02
    assert clear.mean() > 0.9
    np.testing.assert_allclose(shown[clear], expected[clear], rtol=2e-3)


def test_map_to_pixels_takes_the_cell_of_each_pixel_centre():
    values = np.arange(6, dtype=float).reshape(2, 3)
    out = map_to_pixels(values, (2.5, 1.5), (5, 4))  # rows: centres .5 .. 4.5; cols .5 .. 3.5
    np.testing.assert_array_equal(out, [[0, 1, 1, 2], [0, 1, 1, 2], [3, 4, 4, 5], [3, 4, 4, 5], [3, 4, 4, 5]])
    assert map_to_pixels(values, None, (2, 3)) is not None
    with pytest.raises(ValueError):
        map_to_pixels(values, None, (4, 4))


def test_the_views_say_what_the_map_shows():
    assert SIGMA_MAP_VIEW.kind == "heatmap" and SIGMA_MAP_VIEW.value == "sigma_mean"
    assert "sigma" in SIGMA_MAP_VIEW.field and "sigma" in SIGMA_MAP_VIEW.title and "anchor centres" in SIGMA_MAP_VIEW.title
    assert [v.value for v in RECORD_VIEWS if v.kind == "heatmap"] == ["sigma_mean"]
    assert [v.app for v in RECORD_VIEWS if v.kind == "heatmap"] == [True]
    assert {(v.record, v.field) for v in RECORD_VIEWS if v.kind == "attribute"} == {
        (R.PROPOSALS, "sigma"), (R.DETECTIONS, "sigma")}


def test_record_views_validate_and_default_to_the_two_stage_ones():
    with pytest.raises(ValueError, match="unknown view kind"):
        RecordView(R.DETECTIONS, "scatter", field="x", label="x")
    with pytest.raises(ValueError, match="map field"):
        RecordView(R.UNCERTAINTY_MAP, "heatmap", field="u", label="u")
    baseline = get_method("faster_rcnn")
    assert baseline.record_views == TWO_STAGE_VIEWS
    assert baseline.records == (R.DETECTIONS, R.PROPOSALS, R.FINAL_NMS)


def test_kl_rpn_declares_its_sigma_views():
    views = get_method("kl_rpn").record_views
    assert set(TWO_STAGE_VIEWS) <= set(views) and set(RECORD_VIEWS) <= set(views)


def test_a_saved_trace_stores_the_levels_and_shows_the_composed_map(tmp_path):
    from workbench.inspection import ImageTrace, load_traces, save_traces
    from workbench.inspection.maps import LevelMaps

    maps = uncertainty_maps([_one_level()], [2], (8, 8), [(4, 6)], [(8, 12)])[0]
    save_traces([ImageTrace(1, "1.png", (8, 12), {R.UNCERTAINTY_MAP: dict(maps)})], tmp_path / "val",
                method="kl_rpn", split="val")
    back = load_traces(tmp_path / "val")[0][R.UNCERTAINTY_MAP]
    assert isinstance(back, LevelMaps) and set(back.keys()) == STORED
    assert torch.equal(back["sigma_mean"], maps["sigma_mean"]) and back[R.MAP_CELL_SIZE].tolist() == [4.0, 4.0]
    assert "sigma_mean" in back and back.get("level") is not None and "sigma_x" not in back
