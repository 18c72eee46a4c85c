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


def test_sigma_map_of_one_level_by_hand():
    maps = uncertainty_maps([_one_level()], [2], (8, 8), [(8, 8)], [(8, 8)])[0]
    assert set(maps) == {"sigma_x", "sigma_y", "sigma_w", "sigma_h", "sigma_mean", "log_objectness", "level",
                         R.MAP_CELL_SIZE}
    assert maps["sigma_mean"].shape == (4, 4)  # one value per 2 x 2 px cell
    assert maps[R.MAP_CELL_SIZE].tolist() == [2.0, 2.0]
    s00 = np.exp(0.5 * np.array([-1.0, -2.0, -3.0, -4.0]))
    expected_x = np.ones((4, 4))
    expected_x[0, 0] = s00[0]  # location (0, 0) owns only the top-left cell [0, 2) x [0, 2)
    np.testing.assert_allclose(maps["sigma_x"].numpy(), expected_x, rtol=1e-6)
    expected_h = np.ones((4, 4))
    expected_h[0, 0] = s00[3]
    expected_h[1:, 1:] = math.e**2  # location (1, 1), centre (4, 4), owns [2, 8) x [2, 8)
    np.testing.assert_allclose(maps["sigma_h"].numpy(), expected_h, rtol=1e-6)
    np.testing.assert_allclose(maps["sigma_mean"].numpy()[0, 0], s00.mean(), rtol=1e-6)
    np.testing.assert_allclose(maps["sigma_mean"].numpy()[3, 3], (3 + math.e**2) / 4, rtol=1e-6)
    assert float(maps["log_objectness"][0, 0]) == 5.0 and float(maps["log_objectness"][2, 2]) == -2.0
    assert maps["level"].dtype == torch.int64 and int(maps["level"].max()) == 0


def test_the_level_with_the_smaller_sigma_product_wins():
    fine = torch.zeros(1, 4, 2, 2)  # stride 4, one anchor, sigma 1 everywhere (log obj 0)
    fine[0, :, 1, 1] = -2.0  # location (1, 1): sigma e^-1, log obj 4
    coarse = torch.full((1, 4, 1, 1), -1.0)  # stride 8, one location centred at 0: log obj 2
    maps = uncertainty_maps([fine, coarse], [1, 1], (8, 8), [(8, 8)], [(8, 8)])[0]
    level = maps["level"].numpy()
    expected = np.ones((4, 4), dtype=np.int64)
    expected[1:, 1:] = 0  # the fine location (1, 1) beats the coarse one where it paints
    np.testing.assert_array_equal(level, expected)
    np.testing.assert_allclose(maps["sigma_mean"].numpy()[0, 0], math.exp(-0.5), rtol=1e-6)
    np.testing.assert_allclose(maps["sigma_mean"].numpy()[3, 3], math.exp(-1.0), rtol=1e-6)


def test_maps_are_cropped_to_the_image_and_know_their_cell_in_original_pixels():
    # the image fills the top-left 4 x 6 of the padded 8 x 8 input; the original is 8 x 12
    maps = uncertainty_maps([_one_level()], [2], (8, 8), [(4, 6)], [(8, 12)])[0]
    assert maps["sigma_mean"].shape == (2, 3)
    assert maps[R.MAP_CELL_SIZE].tolist() == [4.0, 4.0]
    pixels = record_map_pixels(maps, "sigma_x", (8, 12))
    assert pixels.shape == (8, 12)
    assert pixels[0, 0] == pytest.approx(math.exp(-0.5)) and pixels[3, 3] == pytest.approx(math.exp(-0.5))
    assert pixels[4, 4] == pytest.approx(1.0) and pixels[7, 11] == pytest.approx(1.0)


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
    assert [v.value for v in RECORD_VIEWS if v.kind == "heatmap"] == ["sigma_mean", "sigma_x", "sigma_y", "sigma_w", "sigma_h"]
    assert [v.app for v in RECORD_VIEWS if v.kind == "heatmap"] == [True, False, False, False, False]
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
