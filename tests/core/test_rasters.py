"""CovariateStack on tiny GeoTIFFs whose values are a known function of band, row and column, so that every
sampled value can be written down without reading the file back (value = 10000*band + 100*row + col)."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
import rasterio
from rasterio.transform import from_origin

from soc_depth_mapper.core.rasters import CovariateStack, RasterMismatchError

X0, Y0, CELL = 1000.0, 5000.0, 10.0  # upper-left corner and pixel size of the reference grid
ROWS, COLS = 12, 15
EDGEROI = Path(__file__).resolve().parents[2] / "sample_data" / "edgeroi"


def known(band: int, row, col):
    """The value written at (band, row, col); band is 1-based."""
    return 10000.0 * band + 100.0 * np.asarray(row) + np.asarray(col)


def write(path: Path, data: np.ndarray, transform=None, crs="EPSG:28355", nodata=None, descriptions=()):
    data = np.asarray(data)
    if data.ndim == 2:
        data = data[None]
    profile = dict(
        driver="GTiff",
        count=data.shape[0],
        height=data.shape[1],
        width=data.shape[2],
        dtype=data.dtype,
        crs=crs,
        transform=transform or from_origin(X0, Y0, CELL, CELL),
        nodata=nodata,
    )
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(data)
        for i, text in enumerate(descriptions, start=1):
            if text:
                dst.set_band_description(i, text)
    return str(path)


def grid(bands: int = 1, rows: int = ROWS, cols: int = COLS, dtype="float32") -> np.ndarray:
    b, r, c = np.meshgrid(np.arange(1, bands + 1), np.arange(rows), np.arange(cols), indexing="ij")
    return known(b, r, c).astype(dtype)


def centre(row, col):
    return X0 + (np.asarray(col) + 0.5) * CELL, Y0 - (np.asarray(row) + 0.5) * CELL


@pytest.fixture
def two_band(tmp_path):
    return write(tmp_path / "cov.tif", grid(2), descriptions=("elev", ""))


def test_centre_values_exact_anywhere_inside_the_cell(two_band):
    rows = np.array([0, 3, 11, 7, 0])
    cols = np.array([0, 4, 14, 9, 14])
    # points at the centre, near the upper-left corner and just inside the lower-right corner of each cell
    x, y = centre(rows, cols)
    with CovariateStack([two_band]) as stack:
        for dx, dy in [(0, 0), (-4.99, 4.99), (4.99, -4.99)]:
            sample = stack.sample(x + dx, y + dy)
            assert sample.patches.shape == (5, 2, 1, 1)
            assert sample.patches.dtype == np.float32
            np.testing.assert_array_equal(sample.patches[:, 0, 0, 0], known(1, rows, cols))
            np.testing.assert_array_equal(sample.patches[:, 1, 0, 0], known(2, rows, cols))
            assert sample.status.tolist() == [0] * 5
            assert sample.reasons == [""] * 5


def test_point_on_a_cell_boundary_belongs_to_the_cell_right_and_below(two_band):
    with CovariateStack([two_band]) as stack:
        # x = X0 + 3 cells exactly is the left edge of column 3; y = Y0 - 2 cells is the top edge of row 2
        sample = stack.sample(np.array([X0 + 3 * CELL, X0]), np.array([Y0 - 2 * CELL, Y0]))
    assert sample.patches[:, 0, 0, 0].tolist() == [known(1, 2, 3), known(1, 0, 0)]


def test_patch_interior_and_at_the_corner(two_band):
    x, y = centre(np.array([5, 0]), np.array([7, 0]))
    with CovariateStack([two_band]) as stack:
        sample = stack.sample(x, y, patch_size=3)
    assert sample.patches.shape == (2, 2, 3, 3)
    expected_interior = np.array([[10406, 10407, 10408], [10506, 10507, 10508], [10606, 10607, 10608]])
    np.testing.assert_array_equal(sample.patches[0, 0], expected_interior)
    np.testing.assert_array_equal(sample.patches[0, 1], expected_interior + 10000)
    nan = np.nan
    expected_corner = np.array([[nan, nan, nan], [nan, 20000, 20001], [nan, 20100, 20101]])
    np.testing.assert_array_equal(sample.patches[1, 1], expected_corner)
    assert sample.status.tolist() == [0, 0]  # off-raster neighbours do not make a point invalid


def test_nodata_centre_and_off_centre(tmp_path):
    data = grid(2)
    data[1, 4, 4] = -9999  # band 2 centre of point 0
    data[0, 8, 9] = -9999  # band 1 neighbour of point 1
    data[0, 2, 2] = np.nan  # NaN in the file counts as missing too
    path = write(tmp_path / "soil.tif", data, nodata=-9999, descriptions=("a", "b"))
    x, y = centre(np.array([4, 7, 2]), np.array([4, 8, 2]))
    with CovariateStack([path]) as stack:
        sample = stack.sample(x, y, patch_size=3)
    assert sample.status.tolist() == [2, 0, 2]
    assert sample.reasons[0] == "nodata in band(s) soil_b"
    assert sample.reasons[1] == ""
    assert sample.reasons[2] == "nodata in band(s) soil_a"
    assert np.isnan(sample.patches[0, 1, 1, 1])
    assert sample.patches[0, 0, 1, 1] == known(1, 4, 4)
    assert np.isnan(sample.patches[1, 0, 2, 2])  # the neighbour below right of (7, 8)
    assert np.isnan(sample.patches).sum() == 3


def test_float32_nodata_is_compared_in_the_files_type(tmp_path):
    # ithir-style nodata -3.4e38 is not the same number in float32 and float64
    data = grid(1)
    data[0, 1, 1] = np.float32(-3.4e38)
    path = write(tmp_path / "ithir.tif", data, nodata=-3.4e38)
    with CovariateStack([path]) as stack:
        sample = stack.sample(*centre(np.array([1, 1]), np.array([1, 2])))
    assert sample.status.tolist() == [2, 0]


def test_points_outside_the_raster(two_band):
    xmax, ymin = X0 + COLS * CELL, Y0 - ROWS * CELL
    x = np.array([X0 - 0.01, xmax, X0 + 5, X0 + 5, np.nan, xmax - 0.01])
    y = np.array([Y0 - 5, Y0 - 5, Y0 + 0.01, ymin, Y0 - 5, ymin + 0.01])
    with CovariateStack([two_band]) as stack:
        sample = stack.sample(x, y, patch_size=3)
    assert sample.status.tolist() == [1, 1, 1, 1, 1, 0]
    assert np.isnan(sample.patches[:5]).all()
    assert "outside the rasters" in sample.reasons[0]
    assert "same CRS" in sample.reasons[0]
    assert sample.reasons[4] == "the point has no coordinates"
    assert sample.patches[5, 0, 1, 1] == known(1, ROWS - 1, COLS - 1)


@pytest.mark.parametrize("size", [0, 2, 4, -1, 1.5])
def test_patch_size_must_be_odd_and_positive(two_band, size):
    with CovariateStack([two_band]) as stack, pytest.raises(ValueError, match="odd whole number"):
        stack.sample(np.array([X0 + 5]), np.array([Y0 - 5]), patch_size=size)


def test_many_points_match_direct_indexing_with_few_reads(tmp_path, monkeypatch):
    """Second implementation: index the whole array (padded with NaN) directly."""
    rows, cols = 300, 520
    data = np.random.default_rng(0).normal(size=(2, rows, cols)).astype("float32")
    path = write(tmp_path / "big.tif", data)
    rng = np.random.default_rng(1)
    x = X0 + rng.uniform(0, cols * CELL, 3000)
    y = Y0 - rng.uniform(0, rows * CELL, 3000)
    stack = CovariateStack([path])
    reads = []
    original = stack._read_inside
    monkeypatch.setattr(stack, "_read_inside", lambda *args: reads.append(args) or original(*args))
    sample = stack.sample(x, y, patch_size=5)
    stack.close()
    padded = np.pad(data, ((0, 0), (2, 2), (2, 2)), constant_values=np.nan)
    r = np.floor((Y0 - y) / CELL).astype(int)
    c = np.floor((x - X0) / CELL).astype(int)
    for i in range(0, 3000, 97):
        np.testing.assert_array_equal(sample.patches[i], padded[:, r[i] : r[i] + 5, c[i] : c[i] + 5])
    # 300 x 520 cells are 2 x 3 tiles of 256: one read per tile, not one per point
    assert len(reads) == 6


def test_band_names_multiband_descriptions_and_collisions(tmp_path):
    dem = write(tmp_path / "dem.tif", grid(1))
    clim = write(tmp_path / "clim.tif", grid(3), descriptions=("rain", "", "temp"))
    (tmp_path / "other").mkdir()
    dem_again = write(tmp_path / "other" / "dem.tif", grid(1))
    with CovariateStack([dem, clim, dem_again]) as stack:
        assert stack.layer_names == ["dem", "clim", "dem_2"]
        assert stack.band_names == ["dem_1", "clim_rain", "clim_2", "clim_temp", "dem_2_1"]
        assert stack.nodata == [None] * 5
        assert stack.count == 5
        assert (stack.width, stack.height, stack.res) == (COLS, ROWS, (CELL, CELL))
        assert stack.transform == from_origin(X0, Y0, CELL, CELL)
        assert "28355" in stack.crs_wkt or "MGA zone 55" in stack.crs_wkt
        sample = stack.sample(*centre(np.array([2]), np.array([3])))
        np.testing.assert_array_equal(
            sample.patches[0, :, 0, 0], [known(1, 2, 3), *known(np.array([1, 2, 3]), 2, 3), known(1, 2, 3)]
        )
    # band names that collide across layers: layer 'a_b' band 1 vs layer 'a' band 'b_1'
    a_b = write(tmp_path / "a_b.tif", grid(1))
    a = write(tmp_path / "a.tif", grid(1), descriptions=("b_1",))
    with CovariateStack([a_b, a], layer_names=["a_b", "a"]) as stack:
        assert stack.band_names == ["a_b_1", "a_b_1_2"]


def test_layer_names_must_match_the_rasters(two_band):
    with pytest.raises(ValueError, match="2 layer names were given for 1 rasters"):
        CovariateStack([two_band], layer_names=["a", "b"])
    with pytest.raises(ValueError, match="at least one raster"):
        CovariateStack([])


def test_missing_file_is_named(tmp_path):
    with pytest.raises(ValueError, match="Cannot open raster .*nothere.tif"):
        CovariateStack([str(tmp_path / "nothere.tif")])


def test_mismatched_crs_names_layer_and_both_systems(tmp_path, two_band):
    other = write(tmp_path / "TWI.tif", grid(1), crs="EPSG:32755")
    with pytest.raises(RasterMismatchError) as error:
        CovariateStack([two_band, other], layer_names=["DEM", "TWI"])
    message = str(error.value)
    assert "layer 'TWI' is in 'WGS 84 / UTM zone 55S' (EPSG:32755)" in message
    assert "'DEM' is in 'GDA94 / MGA zone 55' (EPSG:28355)" in message
    assert "Resample onto the first raster's grid" in message


def test_mismatched_pixel_size(tmp_path, two_band):
    other = write(tmp_path / "TWI.tif", grid(1), transform=from_origin(X0, Y0, 20, 20))
    with pytest.raises(RasterMismatchError, match="layer 'TWI' has pixel size 20 x 20 m but 'cov' has 10 x 10 m"):
        CovariateStack([two_band, other])


def test_mismatched_size_and_origin(tmp_path, two_band):
    smaller = write(tmp_path / "small.tif", grid(1, rows=ROWS - 1))
    with pytest.raises(RasterMismatchError, match=r"'small' has 15 x 11 cells .* 'cov' has 15 x 12"):
        CovariateStack([two_band, smaller])
    shifted = write(tmp_path / "shifted.tif", grid(1), transform=from_origin(X0 + 5, Y0, CELL, CELL))
    with pytest.raises(RasterMismatchError, match=r"'shifted' has its upper-left corner at \(1005, 5000\)"):
        CovariateStack([two_band, shifted])
    # float noise far below a pixel is not a mismatch
    noisy = write(tmp_path / "noisy.tif", grid(1), transform=from_origin(X0 + 1e-9, Y0, CELL, CELL))
    CovariateStack([two_band, noisy]).close()


def test_resample_coarser_and_finer_onto_first_grid_with_nearest(tmp_path, two_band):
    # coarser: 20 m cells, grid shifted by 3 m so that no reference cell centre lies on a coarse cell edge;
    # class codes (uint8, nodata 0) must come through as exact codes
    coarse_rows, coarse_cols = 5, 9
    codes = (np.arange(coarse_rows * coarse_cols).reshape(coarse_rows, coarse_cols) % 7 + 1).astype("uint8")
    codes[1, 2] = 0
    coarse = write(tmp_path / "geo.tif", codes, transform=from_origin(X0 + 3, Y0 - 3, 20, 20), nodata=0)
    # finer: 5 m cells shifted by 1 m, float values known(1, row, col) of its own grid
    fine = write(tmp_path / "fine.tif", grid(1, rows=2 * ROWS, cols=2 * COLS), transform=from_origin(X0 + 1, Y0, 5, 5))
    with CovariateStack([two_band, coarse, fine], resample=True) as stack:
        block = stack.read_block(0, 0, ROWS, COLS)
        assert stack.nodata == [None, None, 0, None]
    rows, cols = np.meshgrid(np.arange(ROWS), np.arange(COLS), indexing="ij")
    x, y = centre(rows, cols)
    # the coarse cell that holds each reference cell centre, NaN beyond its extent or on its nodata cell
    cr, cc = np.floor((Y0 - 3 - y) / 20).astype(int), np.floor((x - X0 - 3) / 20).astype(int)
    inside = (cr >= 0) & (cr < coarse_rows) & (cc >= 0) & (cc < coarse_cols)
    expected = np.full((ROWS, COLS), np.nan)
    expected[inside] = codes[cr[inside], cc[inside]]
    expected[expected == 0] = np.nan
    np.testing.assert_array_equal(block[2], expected)
    assert np.isnan(block[2]).any() and (~np.isnan(block[2])).sum() > 100
    fr, fc = np.floor((Y0 - y) / 5).astype(int), np.floor((x - X0 - 1) / 5).astype(int)
    expected_fine = np.where(fc < 2 * COLS, known(1, fr, np.minimum(fc, 2 * COLS - 1)), np.nan)
    np.testing.assert_array_equal(block[3], expected_fine)
    np.testing.assert_array_equal(block[:2], grid(2))


def test_resample_reprojects_another_crs(tmp_path, two_band):
    # same cells labelled WGS 84 / UTM 55S: about a metre from GDA94 / MGA 55 here, far below 10 m cells
    x0, y0 = 750000.0, 6650000.0
    first = write(tmp_path / "mga.tif", grid(1), transform=from_origin(x0, y0, CELL, CELL))
    second = write(tmp_path / "utm.tif", grid(1), transform=from_origin(x0, y0, CELL, CELL), crs="EPSG:32755")
    with CovariateStack([first, second], resample=True) as stack:
        block = stack.read_block(1, 1, ROWS - 2, COLS - 2)
    np.testing.assert_array_equal(block[1], block[0])


def test_read_block_with_halo_at_the_edges(two_band):
    with CovariateStack([two_band]) as stack:
        corner = stack.read_block(0, 0, 3, 4, halo=2)
        far_corner = stack.read_block(ROWS - 2, COLS - 1, 2, 1, halo=1)
        outside = stack.read_block(ROWS + 5, 0, 2, 2, halo=1)
        inner = stack.read_block(2, 3, 4, 5)
        with pytest.raises(ValueError, match="halo"):
            stack.read_block(0, 0, 2, 2, halo=-1)
    assert corner.shape == (2, 7, 8)
    assert np.isnan(corner[:, :2, :]).all() and np.isnan(corner[:, :, :2]).all()
    rows, cols = np.meshgrid(np.arange(5), np.arange(6), indexing="ij")
    np.testing.assert_array_equal(corner[1, 2:, 2:], known(2, rows, cols))
    assert far_corner.shape == (2, 4, 3)
    expected = np.full((4, 3), np.nan)
    expected[:3, :2] = known(1, np.arange(ROWS - 3, ROWS)[:, None], np.arange(COLS - 2, COLS)[None, :])
    np.testing.assert_array_equal(far_corner[0], expected)
    assert outside.shape == (2, 4, 4) and np.isnan(outside).all()
    np.testing.assert_array_equal(inner, grid(2)[:, 2:6, 3:8])


def test_close_releases_files(two_band):
    stack = CovariateStack([two_band])
    files = list(stack._files)
    with stack:
        pass
    assert all(f.closed for f in files)


def test_real_edgeroi_values_match_r_sp_over():
    """The OpenGeoHub book printed these covariates at profile 199_CAN_CP193_1 with R's sp::over."""
    with open(EDGEROI / "sites.csv", newline="") as handle:
        site = next(row for row in csv.DictReader(handle) if row["SOURCEID"] == "199_CAN_CP193_1")
    with CovariateStack([str(EDGEROI / "covariates_250m.tif")], layer_names=["cov"]) as stack:
        sample = stack.sample(np.array([float(site["x"])]), np.array([float(site["y"])]))
        assert stack.band_names == [
            f"cov_{n}" for n in ("DEMSRT5", "TWISRT5", "PMTGEO5", "EV1MOD5", "EV2MOD5", "EV3MOD5")
        ]
    values = dict(zip(stack.band_names, sample.patches[0, :, 0, 0].astype(float)))
    assert sample.status[0] == 0
    assert round(values["cov_DEMSRT5"]) == 198
    assert round(values["cov_TWISRT5"], 1) == 19.5
    assert [round(values[f"cov_EV{i}MOD5"], 2) for i in (1, 2, 3)] == [1.14, 1.62, -5.74]


def test_infinite_values_are_nodata_counted_by_band(tmp_path):
    """A raster without a nodata value may hold ±inf instead: it must never reach a model or a field."""
    data = grid(3)
    data[1, 2, 3] = np.inf
    data[0, 5, 6] = -np.inf
    data[2, 5, 6] = np.inf
    data[2, 0, 0] = np.inf  # outside the blocks read below
    with CovariateStack([write(tmp_path / "cov.tif", data, descriptions=("a", "b", "c"))], ["r"]) as stack:
        sample = stack.sample(*centre(np.array([2, 5, 7]), np.array([3, 6, 7])))
        assert list(sample.status) == [2, 2, 0]
        assert sample.reasons == ["an infinite value in band(s) r_b", "an infinite value in band(s) r_a, r_c", ""]
        np.testing.assert_array_equal(sample.infinite, [[False, True, False], [True, False, True], [False] * 3])
        assert np.isnan(sample.patches[:2]).any(axis=(2, 3)).sum() == 3 and np.isfinite(sample.patches[2]).all()
        assert list(stack.infinite_cells) == [0, 0, 0]  # sampling is counted by point, in `infinite`
        block = stack.read_block(2, 3, 4, 4, halo=1)  # rows 2-5, cols 3-6, read with a halo
        assert np.isnan(block[1, 1, 1]) and np.isnan(block[0, 4, 4]) and np.isnan(block[2, 4, 4])
        assert np.isfinite(block[:, 1:-1, 1:-1]).sum() == 3 * 16 - 3
        assert list(stack.infinite_cells) == [1, 1, 1]
        stack.read_block(3, 3, 2, 2, halo=1)  # (2, 3) lies in the halo only: not counted again
        assert list(stack.infinite_cells) == [1, 1, 1]
        stack.read_block(0, 0, 1, 1)
        assert list(stack.infinite_cells) == [1, 1, 2]


def test_nodata_and_infinite_values_at_one_point_are_both_named(tmp_path):
    data = grid(2)
    data[0, 4, 4] = -1.0
    data[1, 4, 4] = -np.inf
    with CovariateStack([write(tmp_path / "cov.tif", data, nodata=-1.0)], ["r"]) as stack:
        sample = stack.sample(*centre(np.array([4]), np.array([4])))
    assert sample.reasons == ["nodata in band(s) r_1; an infinite value in band(s) r_2"]
