"""predict_rasters on a tiny 3-band stack with stand-in models whose maps can be written down independently:
a linear function of the covariates (pixel model) and a neighbourhood mean (3 x 3 patch model). Oracles are
computed from the arrays written to disk, with plain loops, never through the engine or `read_block`."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
import warnings

import numpy as np
import pytest
import rasterio
from hypothesis import given, settings
from hypothesis import strategies as st
from rasterio.transform import from_origin

from soc_depth_mapper.core import predict
from soc_depth_mapper.core.aoa import AoaReference, DissimilarityIndex
from soc_depth_mapper.core.models.base import Cancelled
from soc_depth_mapper.core.predict import NODATA, TILE, AoaRequest, iter_blocks, predict_rasters
from soc_depth_mapper.core.rasters import CovariateStack

X0, Y0, CELL = 700_000.0, 6_650_000.0, 10.0
ROWS, COLS = 40, 300  # wider than one 256-cell tile: several tiles, and an overview level
CRS = "EPSG:28355"
FILE_NODATA = -32768.0
#: cells (row, col) where band 3 is nodata in the file
NODATA_CELLS = [(0, 0), (5, 17), (20, 255), (20, 256), (39, 299)]
#: a budget small enough for dozens of blocks on this stack
TINY_MB = 0.02
LABELS = ["SOC 0-5 cm", "SOC 15-30 cm"]
DEPTHS = [0, 2]  # of the stand-ins' three depths


def covariates() -> np.ndarray:
    """(3, ROWS, COLS) float64 values; NaN at NODATA_CELLS in band 3."""
    rng = np.random.default_rng(42)
    rows, cols = np.mgrid[0:ROWS, 0:COLS]
    data = np.stack(
        [
            np.sin(rows / 7.0) * 10 + cols / 30.0 + rng.normal(0, 1, (ROWS, COLS)),
            rng.uniform(0, 5, (ROWS, COLS)),
            np.round(rng.uniform(100, 200, (ROWS, COLS))),
        ]
    )
    for row, col in NODATA_CELLS:
        data[2, row, col] = np.nan
    return data.astype(np.float32).astype(np.float64)


COEF = np.array([[1.0, 2.0, 0.01], [0.5, -1.0, 0.02], [0.25, 3.0, -0.01]])


def linear_oracle(data: np.ndarray, depth: int) -> np.ndarray:
    """LinearModel's map for one depth, from the covariates as written."""
    return sum(COEF[depth, b] * data[b] for b in range(3)) + 10.0 * depth


def patch_oracle(data: np.ndarray, depth: int) -> np.ndarray:
    """PatchMeanModel's map, cell by cell: mean of the finite band-1 values in the 3 x 3 window inside the
    raster, plus band 2 at the centre; NaN where any band is missing at the centre."""
    out = np.full((ROWS, COLS), np.nan)
    for r in range(ROWS):
        for c in range(COLS):
            if np.isnan(data[:, r, c]).any():
                continue
            window = data[0, max(r - 1, 0) : r + 2, max(c - 1, 0) : c + 2]
            out[r, c] = (depth + 1) * np.nanmean(window) + data[1, r, c]
    return out


class LinearModel:
    """Pixel model: depth d -> COEF[d] . covariates + 10 d. Interval: value - (d+1) level, value + 2 (d+1) level."""

    patch_size = 1
    prediction_floor = None

    def __init__(self, fail_at_call: int | None = None) -> None:
        self.block_shapes: list[tuple[int, ...]] = []
        self.fail_at_call = fail_at_call

    def predict_block(self, block: np.ndarray, depth_indices) -> np.ndarray:
        self.block_shapes.append(block.shape)
        if self.fail_at_call is not None and len(self.block_shapes) >= self.fail_at_call:
            raise RuntimeError("model failure")
        x = block.astype(np.float64)
        return np.stack([sum(COEF[d, b] * x[b] for b in range(3)) + 10.0 * d for d in depth_indices])

    def predict_block_interval(self, block: np.ndarray, depth_indices, level: float):
        values = self.predict_block(block, depth_indices)
        spread = np.array([d + 1.0 for d in depth_indices])[:, None, None] * level
        return values - spread, values + 2 * spread

    def bytes_per_pixel(self) -> int:
        return 64


class PatchMeanModel(LinearModel):
    """3 x 3 patch model: (d+1) * mean of band 1 over the window (NaN cells skipped) + band 2 at the centre."""

    patch_size = 3

    def predict_block(self, block: np.ndarray, depth_indices) -> np.ndarray:
        self.block_shapes.append(block.shape)
        windows = np.lib.stride_tricks.sliding_window_view(block[0].astype(np.float64), (3, 3))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN windows: their centre is NaN anyway
            mean = np.nanmean(windows, axis=(2, 3))
        centre = block[:, 1:-1, 1:-1].astype(np.float64)
        valid = np.isfinite(centre).all(axis=0)
        values = np.stack([(d + 1) * mean + centre[1] for d in depth_indices])
        return np.where(valid, values, np.nan)


@pytest.fixture(scope="module")
def data() -> np.ndarray:
    return covariates()


@pytest.fixture
def stack(tmp_path_factory, data) -> CovariateStack:
    folder = tmp_path_factory.mktemp("covariates")
    path = folder / "cov.tif"
    profile = dict(driver="GTiff", width=COLS, height=ROWS, count=3, dtype="float32", crs=CRS, nodata=FILE_NODATA)
    with rasterio.open(path, "w", transform=from_origin(X0, Y0, CELL, CELL), **profile) as dst:
        dst.write(np.where(np.isnan(data), FILE_NODATA, data).astype(np.float32))
    with CovariateStack([str(path)]) as opened:
        yield opened


def read(path: str) -> np.ndarray:
    with rasterio.open(path) as src:
        values = src.read().astype(np.float64)
        return np.where(values == src.nodata, np.nan, values)


def expected_maps(data: np.ndarray, oracle) -> np.ndarray:
    return np.stack([oracle(data, d) for d in DEPTHS])


@pytest.mark.parametrize(("model_class", "oracle"), [(LinearModel, linear_oracle), (PatchMeanModel, patch_oracle)])
def test_many_blocks_give_the_map_of_one_block(tmp_path, stack, data, model_class, oracle):
    model = model_class()
    result = predict_rasters(model, stack, str(tmp_path / "soc.tif"), DEPTHS, LABELS, memory_mb=TINY_MB)
    assert len(model.block_shapes) > 20  # really block-wise
    halo = model.patch_size // 2
    inner_cells = sum((rows - 2 * halo) * (cols - 2 * halo) for _, rows, cols in model.block_shapes)
    assert inner_cells == ROWS * COLS  # every cell predicted once, each block read with its halo

    written = read(result.output)
    whole = model_class().predict_block(stack.read_block(0, 0, ROWS, COLS, halo), DEPTHS).astype(np.float32)
    np.testing.assert_array_equal(written, np.where(np.isnan(whole), np.nan, whole))
    np.testing.assert_allclose(written, expected_maps(data, oracle), rtol=1e-6, atol=1e-4)


def test_outputs_are_deterministic(tmp_path, stack):
    first = predict_rasters(PatchMeanModel(), stack, str(tmp_path / "a.tif"), DEPTHS, LABELS, memory_mb=TINY_MB)
    second = predict_rasters(PatchMeanModel(), stack, str(tmp_path / "b.tif"), DEPTHS, LABELS, memory_mb=500)
    np.testing.assert_array_equal(read(first.output), read(second.output))


def test_nodata_in_one_band_is_nodata_in_every_output(tmp_path, stack, data):
    result = predict_rasters(
        LinearModel(), stack, str(tmp_path / "soc.tif"), DEPTHS, LABELS, memory_mb=TINY_MB,
        interval=0.8, uncertainty_path=str(tmp_path / "unc.tif"), depth_folder=str(tmp_path / "depths"),
    )  # fmt: skip
    expected = np.zeros((ROWS, COLS), dtype=bool)
    expected[tuple(np.array(NODATA_CELLS).T)] = True
    for path in [result.output, result.uncertainty, *result.depth_files]:
        missing = np.isnan(read(path))
        assert (missing == expected[None]).all(), path
    assert result.n_pixels == ROWS * COLS
    assert result.n_nodata == result.n_covariate_nodata == len(NODATA_CELLS)
    assert result.n_masked == result.n_model_nodata == 0
    assert result.n_predicted == ROWS * COLS - len(NODATA_CELLS)
    truth = expected_maps(data, linear_oracle)
    assert result.value_range == pytest.approx((np.nanmin(truth), np.nanmax(truth)), rel=1e-6)


def test_extent_is_snapped_outwards_and_georeferenced(tmp_path, stack, data):
    # x from inside column 3 to inside column 270, y from inside row 30 to inside row 12 (rows count downwards)
    extent = (X0 + 3.4 * CELL, Y0 - 30.2 * CELL, X0 + 269.5 * CELL, Y0 - 12.9 * CELL)
    result = predict_rasters(LinearModel(), stack, str(tmp_path / "soc.tif"), DEPTHS, LABELS, extent=extent)
    with rasterio.open(result.output) as src:
        assert (src.width, src.height) == (270 - 3, 31 - 12)
        assert src.transform == from_origin(X0 + 3 * CELL, Y0 - 12 * CELL, CELL, CELL)
        assert src.crs.to_epsg() == 28355
    expected = expected_maps(data, linear_oracle)[:, 12:31, 3:270]
    np.testing.assert_allclose(read(result.output), expected, rtol=1e-6, atol=1e-4)
    assert result.n_pixels == 267 * 19


def test_extent_on_cell_boundaries_is_kept_and_an_outside_extent_clipped(tmp_path, stack):
    on_grid = (X0 + 10 * CELL, Y0 - 20 * CELL, X0 + 20 * CELL, Y0 - 10 * CELL + 1e-9)
    result = predict_rasters(LinearModel(), stack, str(tmp_path / "a.tif"), DEPTHS, LABELS, extent=on_grid)
    with rasterio.open(result.output) as src:
        assert (src.width, src.height) == (10, 10)
    beyond = (X0 - 1000, Y0 - 5 * CELL, X0 + 2 * CELL, Y0 + 1000)
    result = predict_rasters(LinearModel(), stack, str(tmp_path / "b.tif"), DEPTHS, LABELS, extent=beyond)
    with rasterio.open(result.output) as src:
        assert (src.width, src.height) == (2, 5)
        assert src.transform == from_origin(X0, Y0, CELL, CELL)


def test_extent_outside_the_covariates_is_refused(tmp_path, stack):
    with pytest.raises(ValueError, match="does not overlap the covariates"):
        predict_rasters(LinearModel(), stack, str(tmp_path / "soc.tif"), DEPTHS, LABELS, extent=(0, 0, 10, 10))
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize(("model_class", "oracle"), [(LinearModel, linear_oracle), (PatchMeanModel, patch_oracle)])
def test_mask_keeps_cells_whose_centre_is_inside(tmp_path, stack, data, model_class, oracle):
    # a triangle with its right angle at the upper-left corner and legs of 30.5 cells: cell (r, c) has its
    # centre inside when (c + 0.5) + (r + 0.5) < 30.5 (no centre lies on the hypotenuse)
    triangle = {
        "type": "Polygon",
        "coordinates": [[(X0, Y0), (X0 + 30.5 * CELL, Y0), (X0, Y0 - 30.5 * CELL), (X0, Y0)]],
    }
    result = predict_rasters(
        model_class(), stack, str(tmp_path / "soc.tif"), DEPTHS, LABELS, mask_geometries=[triangle],
        memory_mb=TINY_MB,
    )  # fmt: skip
    rows, cols = np.mgrid[0:ROWS, 0:COLS]
    inside = (rows + 0.5) + (cols + 0.5) < 30.5
    expected = np.where(inside, expected_maps(data, oracle), np.nan)  # cells inside keep their unmasked value
    np.testing.assert_allclose(read(result.output), expected, rtol=1e-6, atol=1e-4)
    assert result.n_predicted == int(np.isfinite(expected[0]).sum())
    nodata_inside = sum(inside[cell] for cell in NODATA_CELLS)
    assert (result.n_masked, result.n_covariate_nodata, result.n_model_nodata) == ((~inside).sum(), nodata_inside, 0)
    assert nodata_inside == 2  # (0, 0) and (5, 17)


def test_file_format(tmp_path, stack):
    result = predict_rasters(
        LinearModel(), stack, str(tmp_path / "soc.tif"), DEPTHS, LABELS, interval=0.9,
        uncertainty_path=str(tmp_path / "unc.tif"), depth_folder=str(tmp_path / "maps"),
        depth_file_names=["soc_0_5.tif", "soc_15_30"],
    )  # fmt: skip
    assert result.depth_files == [str(tmp_path / "maps" / "soc_0_5.tif"), str(tmp_path / "maps" / "soc_15_30.tif")]
    expected_descriptions = {
        result.output: tuple(LABELS),
        result.uncertainty: (
            "SOC 0-5 cm lower 5%",
            "SOC 0-5 cm upper 95%",
            "SOC 0-5 cm 90% interval width",
            "SOC 15-30 cm lower 5%",
            "SOC 15-30 cm upper 95%",
            "SOC 15-30 cm 90% interval width",
        ),  # fmt: skip
        result.depth_files[0]: (LABELS[0],),
        result.depth_files[1]: (LABELS[1],),
    }
    for path, descriptions in expected_descriptions.items():
        with rasterio.open(path) as src:
            assert src.descriptions == descriptions
            assert src.dtypes == ("float32",) * src.count
            assert src.nodatavals == (NODATA,) * src.count
            assert src.block_shapes == [(TILE, TILE)] * src.count
            structure = src.tags(ns="IMAGE_STRUCTURE")
            assert (structure["COMPRESSION"], structure["PREDICTOR"]) == ("DEFLATE", "3")
            assert src.overviews(1) == [2]  # 300 columns: one level brings it within a tile
            assert src.tags(ns="rio_overview")["resampling"] == "average"
            assert src.crs.to_epsg() == 28355
    main = read(result.output)
    for band, path in enumerate(result.depth_files):
        np.testing.assert_array_equal(read(path)[0], main[band])
    assert sorted(os.listdir(tmp_path)) == ["maps", "soc.tif", "unc.tif"]
    assert sorted(os.listdir(tmp_path / "maps")) == ["soc_0_5.tif", "soc_15_30.tif"]


def test_overviews_average_the_cells(tmp_path, stack):
    result = predict_rasters(LinearModel(), stack, str(tmp_path / "soc.tif"), DEPTHS, LABELS)
    with rasterio.open(result.output) as src:
        full = src.read(1)
        overview = src.read(1, out_shape=(ROWS // 2, COLS // 2))
    quad = full[2:4, 10:12]  # a 2 x 2 group without nodata
    assert overview[1, 5] == pytest.approx(quad.mean(), rel=1e-5)


def test_uncertainty_bands(tmp_path, stack, data):
    level = 0.9
    result = predict_rasters(
        LinearModel(), stack, str(tmp_path / "soc.tif"), DEPTHS, LABELS, memory_mb=TINY_MB, interval=level,
        uncertainty_path=str(tmp_path / "unc.tif"),
    )  # fmt: skip
    bands = read(result.uncertainty)
    assert bands.shape == (3 * len(DEPTHS), ROWS, COLS)
    truth = expected_maps(data, linear_oracle)
    for j, depth in enumerate(DEPTHS):
        lower, upper, width = bands[3 * j], bands[3 * j + 1], bands[3 * j + 2]
        spread = (depth + 1) * level
        np.testing.assert_allclose(lower, truth[j] - spread, rtol=1e-6, atol=1e-4)
        np.testing.assert_allclose(upper, truth[j] + 2 * spread, rtol=1e-6, atol=1e-4)
        finite = np.isfinite(lower)
        assert (lower[finite] <= upper[finite]).all()
        np.testing.assert_allclose(width, upper - lower, rtol=1e-6)
        np.testing.assert_allclose(width[finite], 3 * spread, rtol=1e-5)


def test_cancel_midway_leaves_no_file_and_keeps_an_earlier_map(tmp_path, stack):
    earlier = tmp_path / "soc.tif"
    earlier.write_bytes(b"an earlier map")
    calls = []

    def progress(fraction: float, message: str) -> bool:
        calls.append(fraction)
        return len(calls) < 3

    model = LinearModel()
    with pytest.raises(Cancelled):
        predict_rasters(
            model, stack, str(earlier), DEPTHS, LABELS, memory_mb=TINY_MB, interval=0.9,
            uncertainty_path=str(tmp_path / "unc.tif"), depth_folder=str(tmp_path / "maps"), progress=progress,
        )  # fmt: skip
    assert sorted(os.listdir(tmp_path)) == ["soc.tif"]
    assert earlier.read_bytes() == b"an earlier map"
    assert 0 < calls[-1] < 0.5
    # stopped at once: three blocks, each asked for its mean and its interval
    assert len(model.block_shapes) == 3 * 2


def test_model_error_leaves_no_file(tmp_path, stack):
    with pytest.raises(RuntimeError, match="model failure"):
        predict_rasters(
            LinearModel(fail_at_call=5), stack, str(tmp_path / "soc.tif"), DEPTHS, LABELS, memory_mb=TINY_MB,
            depth_folder=str(tmp_path / "maps"),
        )  # fmt: skip
    assert os.listdir(tmp_path) == []


def test_progress_reaches_one_and_increases(tmp_path, stack):
    fractions = []
    predict_rasters(
        LinearModel(), stack, str(tmp_path / "soc.tif"), DEPTHS, LABELS, memory_mb=TINY_MB,
        progress=lambda fraction, message: fractions.append(fraction) or True,
    )  # fmt: skip
    assert fractions == sorted(fractions)
    assert fractions[-1] == 1.0
    assert len(fractions) > 20


def test_out_of_range_count(tmp_path, stack, data):
    # band 1 range cut to its middle, band 2 only its lower limit cut, band 3 not checked (NaN)
    ranges = np.array([[-5.0, 8.0], [0.5, np.inf], [np.nan, np.nan]])
    result = predict_rasters(
        LinearModel(), stack, str(tmp_path / "soc.tif"), DEPTHS, LABELS, memory_mb=TINY_MB,
        training_ranges=ranges,
    )  # fmt: skip
    expected = 0
    for r in range(ROWS):
        for c in range(COLS):
            if np.isnan(data[:, r, c]).any():
                continue
            b1, b2 = data[0, r, c], data[1, r, c]
            expected += bool(b1 < -5 or b1 > 8 or b2 < 0.5)
    assert 0 < expected < result.n_predicted
    assert result.n_out_of_range == expected


def test_maps_below_the_floor_are_raised_to_it_and_counted_by_the_run(tmp_path, stack, data):
    """The run raises map values below the predictor's floor to it and counts the cells with such a value at some
    depth, the same on many blocks as on one; interval bounds stay the predictor's own."""
    # the oracle on the covariates as the file holds them (float32), so no cell sits on the other side of the floor
    raw = expected_maps(data.astype(np.float32).astype(np.float64), linear_oracle)
    floor = float(np.nanmedian(raw[0]))  # about half the cells fall below it at the top depth

    class Floored(LinearModel):
        prediction_floor = floor

    below = (raw < floor).any(axis=0)  # NaN (nodata) cells compare False
    assert 0 < below.sum() < np.isfinite(raw[0]).sum()
    for memory_mb in (TINY_MB, 500):
        folder = tmp_path / str(memory_mb)
        folder.mkdir()
        result = predict_rasters(
            Floored(), stack, str(folder / "soc.tif"), DEPTHS, LABELS, memory_mb=memory_mb, interval=0.9,
            uncertainty_path=str(folder / "unc.tif"),
        )  # fmt: skip
        assert result.n_floored == below.sum()
        np.testing.assert_array_equal(read(result.output), np.maximum(raw, floor).astype(np.float32))
        lower = read(result.uncertainty)[0::3]
        spread = np.array([d + 1.0 for d in DEPTHS])[:, None, None] * 0.9
        np.testing.assert_allclose(lower, raw - spread, rtol=1e-6, atol=1e-4)
    unfloored = predict_rasters(LinearModel(), stack, str(tmp_path / "plain.tif"), DEPTHS, LABELS)
    assert unfloored.n_floored == 0


def test_bad_arguments_name_the_fix(tmp_path, stack):
    out = str(tmp_path / "soc.tif")
    with pytest.raises(ValueError, match="one label per depth"):
        predict_rasters(LinearModel(), stack, out, DEPTHS, ["SOC 0-5 cm"])
    with pytest.raises(ValueError, match="give both or neither"):
        predict_rasters(LinearModel(), stack, out, DEPTHS, LABELS, interval=0.9)
    with pytest.raises(ValueError, match="between 0 and 1"):
        predict_rasters(LinearModel(), stack, out, DEPTHS, LABELS, interval=90, uncertainty_path=out + "u")
    with pytest.raises(ValueError, match="one \\(minimum, maximum\\) pair per band"):
        predict_rasters(LinearModel(), stack, out, DEPTHS, LABELS, training_ranges=np.zeros((2, 2)))
    with pytest.raises(ValueError, match="same file"):
        predict_rasters(LinearModel(), stack, out, DEPTHS, LABELS, interval=0.9, uncertainty_path=out)
    with pytest.raises(ValueError, match="does not exist"):
        predict_rasters(LinearModel(), stack, str(tmp_path / "missing" / "soc.tif"), DEPTHS, LABELS)
    assert os.listdir(tmp_path) == []


def test_wrong_shape_from_the_model_is_reported(tmp_path, stack):
    class Broken(LinearModel):
        def predict_block(self, block, depth_indices):
            return super().predict_block(block, depth_indices)[:1]

    with pytest.raises(ValueError, match="returned shape"):
        predict_rasters(Broken(), stack, str(tmp_path / "soc.tif"), DEPTHS, LABELS)
    assert os.listdir(tmp_path) == []


def test_larger_budget_means_fewer_blocks(tmp_path, stack):
    counts = []
    for memory_mb in (0.01, 0.1, 1024):
        model = LinearModel()
        predict_rasters(model, stack, str(tmp_path / f"soc{memory_mb}.tif"), DEPTHS, LABELS, memory_mb=memory_mb)
        counts.append(len(model.block_shapes))
    assert counts[0] > counts[1] > counts[2]


def test_blocks_depend_on_size_model_and_budget_never_on_timing(tmp_path, stack, monkeypatch):
    monkeypatch.setattr(predict, "STEP_CELLS", 12 * COLS)

    class Timed(LinearModel):
        """A model `seconds_per_cell` slow, as a loaded machine would make it."""

        def __init__(self, seconds_per_cell: float) -> None:
            super().__init__()
            self.seconds_per_cell = seconds_per_cell

        def predict_block(self, block, depth_indices):
            time.sleep(self.seconds_per_cell * block.shape[1] * block.shape[2])
            return super().predict_block(block, depth_indices)

    runs = []
    for seconds_per_cell in (0.0, 2e-5):
        model = Timed(seconds_per_cell)
        result = predict_rasters(model, stack, str(tmp_path / f"soc{seconds_per_cell}.tif"), DEPTHS, LABELS)
        runs.append((model.block_shapes, read(result.output)))
    assert runs[0][0] == runs[1][0]
    np.testing.assert_array_equal(runs[0][1], runs[1][1])
    # the default budget holds the whole 40 x 300 output in one block, predicted in steps of 12 rows
    assert runs[0][0] == [(3, 12, COLS)] * 3 + [(3, 4, COLS)]


def test_a_patch_model_predicts_each_block_at_once(tmp_path, stack, monkeypatch):
    model = PatchMeanModel()
    monkeypatch.setattr(predict, "STEP_CELLS", 10 * COLS)
    predict_rasters(model, stack, str(tmp_path / "soc.tif"), DEPTHS, LABELS)
    assert model.block_shapes == [(3, ROWS + 2, COLS + 2)]  # one block, one call, read with its halo


def test_cancel_is_answered_between_steps_of_a_block(tmp_path, stack, monkeypatch):
    monkeypatch.setattr(predict, "STEP_CELLS", 10 * COLS)
    calls = []

    def progress(fraction: float, message: str) -> bool:
        calls.append(fraction)
        return len(calls) < 2

    model = LinearModel()
    with pytest.raises(Cancelled):
        predict_rasters(model, stack, str(tmp_path / "soc.tif"), DEPTHS, LABELS, progress=progress)
    assert len(model.block_shapes) == 2  # two steps of the only block, then stopped
    assert os.listdir(tmp_path) == []


def test_block_layout_follows_the_budget():
    assert predict.block_layout(40, 300, 10**9) == [predict.Block(0, 0, 40, 300)]
    assert predict.block_layout(40, 300, 40 * TILE) == [predict.Block(0, 0, 40, 256), predict.Block(0, 256, 40, 44)]
    assert predict.block_layout(40, 300, 20 * TILE)[:2] == [predict.Block(0, 0, 20, 256), predict.Block(20, 0, 20, 256)]


@settings(max_examples=60, deadline=None)
@given(st.integers(1, 600), st.integers(1, 600), st.lists(st.integers(1, 300_000), min_size=1, max_size=8))
def test_blocks_cover_each_cell_once_and_finish_tiles_in_turn(height, width, sizes):
    asked = []

    def cells_for_next() -> int:  # the sizes cycle, as a budget and changing speed would give
        asked.append(sizes[len(asked) % len(sizes)])
        return asked[-1]

    covered = np.zeros((height, width), dtype=np.int8)
    remaining = _tile_cells(height, width).copy()
    for block in iter_blocks(height, width, cells_for_next):
        assert block.height * block.width <= asked[-1]  # the size asked for just before this block
        covered[block.row : block.row + block.height, block.col : block.col + block.width] += 1
        for r in range(block.row // TILE, (block.row + block.height - 1) // TILE + 1):
            for c in range(block.col // TILE, (block.col + block.width - 1) // TILE + 1):
                rows = min(block.row + block.height, (r + 1) * TILE) - max(block.row, r * TILE)
                cols = min(block.col + block.width, (c + 1) * TILE) - max(block.col, c * TILE)
                remaining[r, c] -= rows * cols
        started = (remaining > 0) & (remaining < _tile_cells(height, width))
        assert started.sum() <= 1  # at most one tile is half written at any time
    assert (covered == 1).all()


def _tile_cells(height: int, width: int) -> np.ndarray:
    rows = np.minimum(TILE, height - np.arange(0, height, TILE))
    cols = np.minimum(TILE, width - np.arange(0, width, TILE))
    return rows[:, None] * cols[None, :]


@pytest.mark.parametrize(
    "extent",
    [
        pytest.param(None, id="with overviews, which read the map back"),
        pytest.param((X0, Y0 - ROWS * CELL, X0 + 200 * CELL, Y0), id="one tile, no overviews"),
    ],
)
@pytest.mark.parametrize("leave_free", [4096, 40_000, 100_000])
def test_a_full_disk_fails_the_run_and_keeps_the_earlier_map(stack, small_file_system, extent, leave_free):
    """GDAL only logs a failed write; the engine must notice, remove its files and leave the old map."""

    def earlier_map(folder):
        (folder / "soc.tif").write_bytes(b"an earlier map")

    folder = small_file_system("256k", prepare=earlier_map, leave_free=leave_free)
    with pytest.raises(predict.IncompleteOutputError) as error:
        predict_rasters(
            LinearModel(), stack, str(folder / "soc.tif"), DEPTHS, LABELS, extent=extent,
            depth_folder=str(folder / "maps"),
        )  # fmt: skip
    message = str(error.value)
    written = rf"'soc(_SOC_0-5_cm|_SOC_15-30_cm)?\.tif' could not be written to '{folder}(/maps)?' \("
    assert re.match(written, message), message
    assert message.endswith(
        "): the disk may be full, or the folder not writable. Nothing was replaced: an earlier file of that name "
        "is unchanged. Free some space or choose another folder."
    )
    assert sorted(os.listdir(folder)) == ["filler", "soc.tif"]
    assert (folder / "soc.tif").read_bytes() == b"an earlier map"


def test_a_truncated_or_tile_less_file_is_found_incomplete(tmp_path, stack):
    result = predict_rasters(LinearModel(), stack, str(tmp_path / "soc.tif"), DEPTHS, LABELS)
    assert predict._incomplete(result.output) is None
    whole = (tmp_path / "soc.tif").read_bytes()
    (tmp_path / "cut.tif").write_bytes(whole[: len(whole) // 2])
    assert predict._incomplete(str(tmp_path / "cut.tif")).startswith("it cannot be read back: ")
    # a tile libtiff never recorded, as when its write failed: a sparse file leaves it out on purpose
    profile = dict(driver="GTiff", width=2 * TILE, height=TILE, count=1, dtype="float32", tiled=True, crs=CRS)
    profile["transform"] = from_origin(X0, Y0, CELL, CELL)
    with rasterio.open(tmp_path / "sparse.tif", "w", sparse_ok=True, **profile) as dataset:
        dataset.write(np.ones((1, TILE, TILE), np.float32), window=((0, TILE), (0, TILE)))
    assert predict._incomplete(str(tmp_path / "sparse.tif")) == "tile 1,0 of band 1 of the map is missing"


def test_a_read_only_folder_fails_the_run_before_predicting(stack, small_file_system):
    folder = small_file_system(
        "256k", prepare=lambda folder: (folder / "soc.tif").write_bytes(b"an earlier map"), read_only=True
    )
    model = LinearModel()
    with pytest.raises(
        predict.IncompleteOutputError,
        match=r"^'soc.tif' could not be written to '.*mount0' "
        r"\(Attempt to create new tiff file '.*' failed: Read-only file system\): the disk may be full",
    ):
        predict_rasters(model, stack, str(folder / "soc.tif"), DEPTHS, LABELS)
    assert model.block_shapes == []
    assert os.listdir(folder) == ["soc.tif"] and (folder / "soc.tif").read_bytes() == b"an earlier map"


#: a mask polygon north-west of the covariates
OUTSIDE_TRIANGLE = {
    "type": "Polygon",
    "coordinates": [[(X0 - 50, Y0 + 50), (X0 - 10, Y0 + 50), (X0 - 10, Y0 + 10), (X0 - 50, Y0 + 50)]],
}


class NoValueModel(LinearModel):
    """A model that predicts nothing (NaN everywhere), as one fed values it cannot use might."""

    def predict_block(self, block: np.ndarray, depth_indices) -> np.ndarray:
        return np.full_like(super().predict_block(block, depth_indices), np.nan)


@pytest.mark.parametrize(
    ("model", "arguments", "counts"),
    [
        pytest.param(
            LinearModel(),
            {"mask_geometries": [OUTSIDE_TRIANGLE]},
            "of the 12,000 cells in the extent, 12,000 lie outside the mask, 0 have nodata in a covariate and 0 got",
            id="mask outside the covariates",
        ),
        pytest.param(
            LinearModel(),
            {"extent": (X0 + 255 * CELL, Y0 - 21 * CELL, X0 + 257 * CELL, Y0 - 20 * CELL)},
            "of the 2 cells in the extent, 0 lie outside the mask, 2 have nodata in a covariate and 0 got",
            id="extent on nodata cells",
        ),
        pytest.param(
            NoValueModel(),
            {},
            "of the 12,000 cells in the extent, 0 lie outside the mask, 5 have nodata in a covariate and 11,995 got",
            id="model gives no value",
        ),
    ],
)
def test_nothing_predicted_is_an_error_that_counts_why_and_writes_nothing(tmp_path, stack, model, arguments, counts):
    earlier = tmp_path / "soc.tif"
    earlier.write_bytes(b"an earlier map")
    with pytest.raises(predict.NothingPredictedError) as error:
        predict_rasters(model, stack, str(earlier), DEPTHS, LABELS, depth_folder=str(tmp_path / "maps"), **arguments)
    assert str(error.value) == (
        f"Nothing was predicted, so no file was written: {counts} no value from the model. Check that the extent "
        "and the mask cover cells where every covariate holds data."
    )
    assert os.listdir(tmp_path) == ["soc.tif"] and earlier.read_bytes() == b"an earlier map"


#: a run in a child process: a slow pixel model on the covariates in argv[1], mapped to argv[2]
SLOW_RUN = """
import sys
import time

import numpy as np

from soc_depth_mapper.core.predict import predict_rasters
from soc_depth_mapper.core.rasters import CovariateStack


class SlowModel:
    patch_size = 1
    prediction_floor = None

    def predict_block(self, block, depth_indices):
        print("block", flush=True)
        time.sleep(0.1)
        return np.stack([block[0].astype(np.float64) for _ in depth_indices])

    def bytes_per_pixel(self):
        return 64


with CovariateStack([sys.argv[1]]) as stack:
    predict_rasters(SlowModel(), stack, sys.argv[2], [0], ["SOC 0-5 cm"], memory_mb=0.02)
print("finished", flush=True)
"""


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_a_signal_during_a_run_removes_its_files_and_then_ends_the_process(tmp_path, data, signum):
    covariate_file = tmp_path / "cov.tif"
    profile = dict(driver="GTiff", width=COLS, height=ROWS, count=3, dtype="float32", crs=CRS, nodata=FILE_NODATA)
    with rasterio.open(covariate_file, "w", transform=from_origin(X0, Y0, CELL, CELL), **profile) as dst:
        dst.write(np.where(np.isnan(data), FILE_NODATA, data).astype(np.float32))
    folder = tmp_path / "maps"
    folder.mkdir()
    (folder / "soc.tif").write_bytes(b"an earlier map")
    child = subprocess.Popen(
        [sys.executable, "-c", SLOW_RUN, str(covariate_file), str(folder / "soc.tif")],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert child.stdout.readline() == "block\n" and child.stdout.readline() == "block\n"
        partial = [name for name in os.listdir(folder) if name.endswith(".partial.tif")]
        assert len(partial) == 1  # the run is writing
        child.send_signal(signum)
        child.wait(timeout=60)
    finally:
        child.kill()
    assert child.returncode == -signum  # the signal ended the process, as it would have without the plugin
    assert "finished" not in child.stdout.read()
    assert os.listdir(folder) == ["soc.tif"] and (folder / "soc.tif").read_bytes() == b"an earlier map"


@pytest.fixture(scope="module")
def dissimilarity(data):
    """A DI from 60 valid cells of the stack as training sites, band 2 weighed most."""
    valid = np.flatnonzero(np.isfinite(data).all(axis=0).ravel())
    cells = np.random.default_rng(1).choice(valid, 60, replace=False)
    sites = data.reshape(3, -1)[:, cells].T
    return DissimilarityIndex(AoaReference.of_training(sites, (), np.array([0.5, 2.0, 0.1]), np.arange(60) % 5))


@pytest.mark.parametrize("mask_maps", [False, True])
def test_area_of_applicability_rasters(tmp_path, stack, data, dissimilarity, mask_maps):
    """Oracle: the DI of every valid cell in one call, against the maps written block by block with a halo."""
    request = AoaRequest(dissimilarity, str(tmp_path / "aoa.tif"), str(tmp_path / "lpd.tif"), mask_maps)
    result = predict_rasters(
        PatchMeanModel(), stack, str(tmp_path / "soc.tif"), DEPTHS, LABELS, memory_mb=TINY_MB, aoa=request
    )
    valid = np.isfinite(data).all(axis=0)
    di = np.full((ROWS, COLS), np.nan)
    di[valid] = dissimilarity.di(data[:, valid].T).astype(np.float32)
    inside = valid & (di <= np.float32(dissimilarity.threshold))
    aoa = read(result.aoa)
    np.testing.assert_array_equal(aoa[0], di)
    np.testing.assert_array_equal(aoa[1], np.where(valid, inside, np.nan))
    lpd = np.full((ROWS, COLS), np.nan)
    lpd[valid] = dissimilarity.lpd(data[:, valid].T)
    np.testing.assert_array_equal(read(result.lpd)[0], lpd)
    assert 0 < inside.sum() < valid.sum()  # the test straddles the threshold
    assert (result.n_aoa_cells, result.n_inside_aoa) == (valid.sum(), inside.sum())
    maps = expected_maps(data, patch_oracle)
    if mask_maps:
        maps[:, ~inside] = np.nan
    np.testing.assert_allclose(read(result.output), maps, rtol=1e-6, atol=1e-4)
    assert result.n_aoa_masked == (valid.sum() - inside.sum() if mask_maps else 0)
    assert result.n_predicted == (inside.sum() if mask_maps else valid.sum())
    with rasterio.open(result.aoa) as written:
        assert float(written.tags()["AOA_THRESHOLD"]) == dissimilarity.threshold
        assert written.descriptions == tuple(predict.AOA_LABELS)


def test_a_failed_run_leaves_no_area_of_applicability(tmp_path, stack, dissimilarity):
    request = AoaRequest(dissimilarity, str(tmp_path / "aoa.tif"), str(tmp_path / "lpd.tif"))
    with pytest.raises(RuntimeError, match="model failure"):
        predict_rasters(
            LinearModel(fail_at_call=5), stack, str(tmp_path / "soc.tif"), DEPTHS, LABELS, memory_mb=TINY_MB,
            aoa=request,
        )  # fmt: skip
    assert os.listdir(tmp_path) == []


def test_masking_everything_outside_the_aoa_is_an_error_that_says_so(tmp_path, stack):
    far = np.random.default_rng(2).normal(1000.0, 1.0, (30, 3))  # training sites nowhere near the stack's values
    far_away = DissimilarityIndex(AoaReference.of_training(far, (), np.ones(3), np.arange(30) % 3))
    request = AoaRequest(far_away, str(tmp_path / "aoa.tif"), mask_maps=True)
    n_valid = ROWS * COLS - len(NODATA_CELLS)
    with pytest.raises(predict.NothingPredictedError, match=f"{n_valid:,} lie outside the area of applicability"):
        predict_rasters(LinearModel(), stack, str(tmp_path / "soc.tif"), DEPTHS, LABELS, aoa=request)
    assert os.listdir(tmp_path) == []
