"""core.stocks against oracles written down independently: hand-computed stocks, GSIF's `OCSKGM` formula (kg/m²),
the cookbook's pedotransfer formulas evaluated by hand, and known distributions for the Monte Carlo."""

from __future__ import annotations

import csv
import math
import os

import numpy as np
import pytest
import rasterio
from rasterio.transform import from_origin
from scipy.stats import norm

from soc_depth_mapper.core.models.base import Cancelled
from soc_depth_mapper.core.pedotransfer import bulk_density_from_soc
from soc_depth_mapper.core.predict import NODATA, _uncertainty_labels
from soc_depth_mapper.core.stocks import (
    StockInputs,
    StockSettings,
    compute_stocks,
    interval_bounds,
    open_inputs,
    parse_ranges,
    quantiles,
    range_weights,
    stock_rasters,
    stock_t_ha,
)

CELL = 100.0  # m: a pixel is 1 ha
CRS = "EPSG:28355"
GSM = [(0, 5), (5, 15), (15, 30), (30, 60), (60, 100)]


def ocskgm(orcdrc_g_kg, bld_kg_m3, crfvol_percent, hsize_cm):
    """GSIF::OCSKGM (Hengl): ORCDRC/1000 * HSIZE/100 * BLD * (100-CRFVOL)/100, in kg/m²."""
    return orcdrc_g_kg / 1000 * hsize_cm / 100 * bld_kg_m3 * (100 - crfvol_percent) / 100


def write_raster(path, bands: np.ndarray, labels: list[str], cell: float = CELL, nodata=NODATA) -> str:
    bands = np.asarray(bands, dtype=np.float32)
    with rasterio.open(
        path,
        "w",
        driver="GTiff",
        width=bands.shape[2],
        height=bands.shape[1],
        count=bands.shape[0],
        dtype="float32",
        crs=CRS,
        transform=from_origin(700_000, 6_650_000, cell, cell),
        nodata=nodata,
    ) as dataset:
        dataset.write(bands)
        for band, label in enumerate(labels, start=1):
            dataset.set_band_description(band, label)
    return str(path)


def read(path) -> tuple[np.ndarray, list[str]]:
    with rasterio.open(path) as dataset:
        return dataset.read().astype(float), list(dataset.descriptions)


# ------------------------------------------------------------------------------------------- closed forms


def test_the_issues_example_is_35_1_t_ha():
    assert stock_t_ha(10, 1.3, 10, 30) == pytest.approx(35.1, rel=1e-12)


@pytest.mark.parametrize(
    ("soc", "bld", "crf", "hsize", "kg_m2"),
    [
        (10, 1300, 10, 30, 3.51),  # 0.01 × 0.3 × 1300 × 0.9
        (50, 1100, 0, 100, 55.0),  # 0.05 × 1.0 × 1100
        (2.5, 1550, 35, 70, 1.763125),  # 0.0025 × 0.7 × 1550 × 0.65
    ],
)
def test_matches_gsif_ocskgm_on_hand_cases(soc, bld, crf, hsize, kg_m2):
    assert ocskgm(soc, bld, crf, hsize) == pytest.approx(kg_m2)
    # 1 kg/m² = 10 t/ha; BD in kg/m³ is 1000 × g/cm³
    assert stock_t_ha(soc, bld / 1000, crf, hsize) == pytest.approx(10 * kg_m2)


def test_units_percent_and_kg_m3_give_the_same_stock(tmp_path):
    """1 % SOC = 10 g/kg and 1300 kg/m³ = 1.3 g/cm³, converted by the raster engine's factors."""
    from soc_depth_mapper.core.stocks import BD_UNITS, SOC_UNITS

    soc = write_raster(tmp_path / "soc.tif", np.full((1, 2, 2), 1.0), ["SOC % 0-30 cm"])
    bd = write_raster(tmp_path / "bd.tif", np.full((1, 2, 2), 1300.0), ["BD"])
    stack, layout, intervals, _ = open_inputs(soc, bulk_density_path=bd)
    with stack:
        stock_rasters(
            stack,
            layout,
            StockSettings(intervals, [(0, 30)]),
            str(tmp_path / "out.tif"),
            soc_factor=SOC_UNITS["%"],
            bulk_density_factor=BD_UNITS["kg/m3"],
            coarse_fragments=10.0,
        )
    values, _ = read(tmp_path / "out.tif")
    np.testing.assert_allclose(values, 35.1, rtol=1e-6)


def test_pedotransfer_functions_on_hand_values():
    """SOC 10 g/kg = 1 % -> OM 1.724 %, worked by hand from the cookbook's formulas."""
    soc = np.array([10.0])
    assert bulk_density_from_soc("saini1996", soc)[0] == pytest.approx(1.62 - 0.10344)
    assert bulk_density_from_soc("honeysett1989", soc)[0] == pytest.approx(1 / 0.6598544)
    assert bulk_density_from_soc("drew1973", soc)[0] == pytest.approx(1 / 0.6890364)
    assert bulk_density_from_soc("grigal1989", soc)[0] == pytest.approx(0.669 + 0.941 * math.exp(-0.10344))
    assert bulk_density_from_soc("adams1973", soc)[0] == pytest.approx(100 / (1.724 / 0.244 + 98.276 / 2.65))


def test_ranges_sum_whole_intervals_and_prorate_partial_ones():
    weights = range_weights(GSM, parse_ranges("0-30, 0-100 cm, 10-50"))
    np.testing.assert_allclose(weights[0], [1, 1, 1, 0, 0])
    np.testing.assert_allclose(weights[1], [1, 1, 1, 1, 1])
    np.testing.assert_allclose(weights[2], [0, 0.5, 1, 20 / 30, 0])


@pytest.mark.parametrize(
    ("text", "message"),
    [("0-200", "covered only for 100 cm"), ("30-0", "top-bottom"), ("", "at least one"), ("0-x", "top-bottom")],
)
def test_bad_ranges_say_what_to_do(text, message):
    with pytest.raises(ValueError, match=message):
        range_weights(GSM, parse_ranges(text))


def test_overlapping_intervals_are_refused():
    with pytest.raises(ValueError, match="0-30 and 15-60 cm overlap"):
        range_weights([(0, 30), (15, 60)], [(0, 30)])


@pytest.mark.parametrize(
    ("labels", "message"),
    [
        (["SOC 0-5 cm lower 10%", "SOC 0-5 cm upper 95%"], "central"),
        (
            ["SOC 0-5 cm lower 5%", "SOC 0-5 cm upper 95%", "SOC 5-15 cm lower 5%"],
            "lacks a lower or upper limit for 5-15",
        ),
        (["SOC 0-5 cm", "SOC 5-15 cm"], "prediction interval output"),
    ],
)
def test_interval_outputs_that_do_not_fit_are_refused(labels, message):
    with pytest.raises(ValueError, match=message):
        interval_bounds(labels)


def test_constant_rasters_give_closed_form_stocks_per_interval_and_range(tmp_path):
    """10 g/kg at 0-10 and 10-30 cm, 1.3 g/cm³, 10 % stones: 11.7 + 23.4 = 35.1 t/ha; 0-20 pro rata 23.4."""
    soc = write_raster(tmp_path / "soc.tif", np.full((2, 3, 4), 10.0), ["SOC 0-10 cm", "SOC 10-30 cm"])
    cf = write_raster(tmp_path / "cf.tif", np.full((1, 3, 4), 10.0), ["stones"])
    stack, layout, intervals, level = open_inputs(soc, coarse_fragments_path=cf)
    assert intervals == [(0, 10), (10, 30)] and level is None
    with stack:
        result = stock_rasters(
            stack,
            layout,
            StockSettings(intervals, [(0, 30), (0, 20)]),
            str(tmp_path / "stocks.tif"),
            bulk_density=1.3,
        )
    values, labels = read(result.output)
    assert labels == [
        "SOC stock 0-10 cm (t/ha)",
        "SOC stock 10-30 cm (t/ha)",
        "SOC stock 0-30 cm (t/ha)",
        "SOC stock 0-20 cm (t/ha)",
    ]
    for band, expected in enumerate([11.7, 23.4, 35.1, 23.4]):
        np.testing.assert_allclose(values[band], expected, rtol=1e-6)
    assert result.flags.pixels_implausible == 0


def test_implausible_inputs_are_counted_and_left_out():
    settings = StockSettings([(0, 30)], [(0, 30)])
    inputs = StockInputs(
        soc=np.array([[10.0, 10.0, 700.0, 10.0, np.nan]]),
        bulk_density=np.array([[1.3, 1300.0, 1.3, 1.3, 1.3]]),  # a kg/m³ value among g/cm³
        coarse_fragments=np.array([[10.0, 10.0, 10.0, 120.0, 10.0]]),
    )
    stocks = compute_stocks(settings, inputs, simulate=False)
    np.testing.assert_allclose(stocks.values[:, 0], 35.1)
    assert np.isnan(stocks.values[:, 1:]).all()
    flags = stocks.flags
    assert (flags.bulk_density, flags.soc, flags.coarse_fragments) == (1, 1, 1)
    assert (flags.pixels_implausible, flags.pixels_nodata) == (3, 1)
    text = " ".join(flags.messages())
    assert "check the unit (g/cm³ or kg/m³)" in text and "3 cells" in text


# ------------------------------------------------------------------------------------------- Monte Carlo


def test_zero_width_intervals_give_the_deterministic_stock_as_median():
    soc = np.array([[12.0, 3.0], [8.0, 0.0]])
    settings = StockSettings([(0, 30), (30, 100)], [(0, 30), (0, 100)], level=0.9, bulk_density_ptf="saini1996")
    inputs = StockInputs(soc, None, np.zeros((2, 1)), soc_lower=soc, soc_upper=soc)
    stocks = compute_stocks(settings, inputs, simulate=True)
    q = quantiles(stocks.draws)
    np.testing.assert_allclose(q[1], stocks.values[2], rtol=1e-12)  # 0-30 median
    np.testing.assert_allclose(q[4], stocks.values[3], rtol=1e-12)  # 0-100 median
    np.testing.assert_allclose(q[0], q[2], rtol=1e-12)


def test_the_90_percent_range_covers_90_percent_of_true_stocks():
    """Three depths with known log-normal SOC (independent), BD 1.2 ± 0.1 g/cm³ (normal), CF 5 ± 2 %: the
    Monte Carlo's 5-95 % range of 0-100 cm must hold about 90 % of stocks drawn from those distributions."""
    intervals = [(0, 30), (30, 60), (60, 100)]
    mu, sigma = np.log([20.0, 10.0, 5.0]), np.array([0.3, 0.5, 0.7])
    z = norm.ppf(0.95)
    settings = StockSettings(
        intervals, [(0, 100)], bulk_density_sd=0.1, coarse_fragments_sd=2.0, level=0.9, simulations=4000, seed=7
    )
    median = np.exp(mu)[:, None]
    inputs = StockInputs(
        soc=median,
        bulk_density=np.full((3, 1), 1.2),
        coarse_fragments=np.full((3, 1), 5.0),
        soc_lower=np.exp(mu - z * sigma)[:, None],
        soc_upper=np.exp(mu + z * sigma)[:, None],
    )
    low, _, high = quantiles(compute_stocks(settings, inputs, simulate=True).draws)[:, 0]
    rng = np.random.default_rng(2024)
    n = 200_000
    soc = np.exp(mu + sigma * rng.standard_normal((n, 3)))
    bd = np.maximum(1.2 + 0.1 * rng.standard_normal((n, 3)), 0)
    cf = np.clip(5 + 2 * rng.standard_normal((n, 3)), 0, 100)
    true = (soc * bd * (1 - cf / 100) * np.array([30, 30, 40]) / 10).sum(axis=1)
    assert np.mean((true >= low) & (true <= high)) == pytest.approx(0.90, abs=0.015)
    # summing the depths' own 5 % quantiles would give a wider, wrong range
    per_depth_low = np.quantile(soc * bd * (1 - cf / 100) * np.array([30, 30, 40]) / 10, 0.05, axis=0).sum()
    assert per_depth_low < 0.9 * low


def test_pedotransfer_bulk_density_follows_each_soc_draw():
    """One depth, BD from Saini's function of SOC: the stock is g(SOC) = SOC × BD(SOC) × t / 10, increasing in
    SOC here, so its quantiles are g of SOC's quantiles; drawing BD apart from SOC would not give that."""
    lower, upper = 8.0, 18.0
    settings = StockSettings([(0, 30)], [(0, 30)], bulk_density_ptf="saini1996", level=0.9, simulations=20_000)
    inputs = StockInputs(np.array([[12.0]]), None, np.zeros((1, 1)), np.array([[lower]]), np.array([[upper]]))
    low, mid, high = quantiles(compute_stocks(settings, inputs, simulate=True).draws)[:, 0]

    def g(soc):
        return soc * (1.62 - 0.06 * soc / 10 * 1.724) * 30 / 10

    assert low == pytest.approx(g(lower), rel=0.01)
    assert mid == pytest.approx(g(math.sqrt(lower * upper)), rel=0.01)
    assert high == pytest.approx(g(upper), rel=0.01)


def test_a_lower_limit_of_zero_centres_on_the_prediction():
    settings = StockSettings([(0, 30)], [(0, 30)], level=0.9, simulations=20_000)
    inputs = StockInputs(
        np.array([[10.0]]), np.full((1, 1), 1.0), np.zeros((1, 1)), np.zeros((1, 1)), np.full((1, 1), 20.0)
    )
    low, mid, high = quantiles(compute_stocks(settings, inputs, simulate=True).draws)[:, 0]
    assert mid == pytest.approx(stock_t_ha(10, 1.0, 0, 30), rel=0.01)
    assert high == pytest.approx(stock_t_ha(20, 1.0, 0, 30), rel=0.02)
    assert 0 < low < mid


def test_same_seed_same_draws_another_seed_other_draws():
    def p95(seed):
        settings = StockSettings([(0, 30)], [(0, 30)], level=0.9, seed=seed)
        inputs = StockInputs(
            np.array([[10.0]]), np.full((1, 1), 1.3), np.zeros((1, 1)), np.full((1, 1), 5.0), np.full((1, 1), 20.0)
        )
        return quantiles(compute_stocks(settings, inputs, simulate=True).draws)[2, 0]

    assert p95(3) == p95(3) != p95(4)


# --------------------------------------------------------------------------------------- rasters and summary


def predict_like_inputs(folder, soc: np.ndarray, width: np.ndarray, intervals):
    """A SOC map and its 90 % interval output named exactly as 'Predict SOC maps' names them."""
    labels = [f"SOC {t:g}-{b:g} cm" for t, b in intervals]
    soc_path = write_raster(folder / "soc.tif", soc, labels)
    bounds = np.empty((3 * len(intervals), *soc.shape[1:]))
    bounds[0::3], bounds[1::3], bounds[2::3] = soc / width, soc * width, soc * width - soc / width
    return soc_path, write_raster(folder / "soc_pi.tif", bounds, _uncertainty_labels(labels, 0.9))


def test_predicts_interval_output_is_read_with_its_level():
    labels = ["SOC 0-5 cm", "SOC 5-15 cm"]
    bounds, level = interval_bounds(_uncertainty_labels(labels, 0.8))
    assert level == pytest.approx(0.8)
    assert bounds == {(0.0, 5.0): (0, 1), (5.0, 15.0): (3, 4)}


def run_summary(folder, soc, width, memory_mb=64.0, progress=None):
    intervals = [(0, 30), (30, 100)]
    soc_path, pi_path = predict_like_inputs(folder, soc, width, intervals)
    stack, layout, intervals, level = open_inputs(soc_path, pi_path)
    settings = StockSettings(intervals, [(0, 30), (0, 100)], bulk_density_ptf="honeysett1989", level=level)
    with stack:
        return stock_rasters(
            stack,
            layout,
            settings,
            str(folder / "stocks.tif"),
            uncertainty_path=str(folder / "stocks_q.tif"),
            summary_path=str(folder / "summary.csv"),
            memory_mb=memory_mb,
            progress=progress,
        )


def test_summary_total_is_the_sum_of_pixel_stocks_times_pixel_area(tmp_path):
    rng = np.random.default_rng(5)
    soc = rng.uniform(2, 30, (2, 7, 9))
    soc[:, 3, 4] = np.nan
    result = run_summary(tmp_path, soc, np.full(soc.shape, 1.5))
    values, _ = read(result.output)
    ranges = np.where(values[2:] == NODATA, np.nan, values[2:])
    with open(result.summary, encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    assert [row["range"] for row in rows] == ["0-30 cm", "0-100 cm"]
    for r, row in enumerate(rows):
        assert float(row["total_Tg"]) == pytest.approx(np.nansum(ranges[r]) * 1.0 / 1e6, rel=1e-6)  # 1 ha pixels
        assert float(row["mean_t_ha"]) == pytest.approx(np.nanmean(ranges[r]), rel=1e-6)
        assert int(row["pixels"]) == 62 and float(row["area_ha"]) == pytest.approx(62)
        assert float(row["total_p5_Tg"]) < float(row["total_Tg"]) < float(row["total_p95_Tg"])
        assert "fully correlated" in row["uncertainty"]
    assert result.rows[0]["range"] == "0-30 cm"


def random_map(seed: int, rows: int, cols: int) -> tuple[np.ndarray, np.ndarray]:
    """SOC (g/kg) at two depths and the factor from it to the upper limit (the lower is SOC / factor)."""
    rng = np.random.default_rng(seed)
    return rng.uniform(2, 30, (2, rows, cols)), rng.uniform(1.2, 2.0, (2, rows, cols))


def subfolders(parent, *names: str) -> list:
    for name in names:
        (parent / name).mkdir()
    return [parent / name for name in names]


def test_summary_range_does_not_shrink_with_the_number_of_pixels(tmp_path):
    """The same map tiled 4 × 4: the total grows 16-fold, the mean's 5-95 % stays where it was."""
    soc, width = random_map(6, 5, 5)
    small, large = subfolders(tmp_path, "small", "large")
    few = run_summary(small, soc, width).rows
    many = run_summary(large, np.tile(soc, (1, 4, 4)), np.tile(width, (1, 4, 4))).rows
    for a, b in zip(few, many):
        assert b["total_Tg"] == pytest.approx(16 * a["total_Tg"], rel=1e-9)
        assert b["mean_p5_t_ha"] == pytest.approx(a["mean_p5_t_ha"], rel=1e-9)
        assert b["mean_p95_t_ha"] == pytest.approx(a["mean_p95_t_ha"], rel=1e-9)
        assert b["mean_p95_t_ha"] - b["mean_p5_t_ha"] > 0.2 * b["mean_t_ha"]


def test_block_by_block_under_a_tiny_budget_gives_the_same_maps(tmp_path):
    """300 columns: more than one 256-cell tile; 0.05 MB holds a few dozen cells per block."""
    soc, width = random_map(8, 6, 300)
    one, many = subfolders(tmp_path, "one", "many")
    calls = []
    whole = run_summary(one, soc, width, memory_mb=256)
    blocks = run_summary(many, soc, width, memory_mb=0.05, progress=lambda f, m: calls.append(f) or True)
    assert len(calls) > 20
    for name in ("stocks.tif", "stocks_q.tif"):
        np.testing.assert_allclose(read(many / name)[0], read(one / name)[0], rtol=1e-6)
    assert blocks.rows[1]["total_p95_Tg"] == pytest.approx(whole.rows[1]["total_p95_Tg"], rel=1e-9)


def test_cancel_and_failure_leave_nothing_behind(tmp_path):
    soc = np.full((2, 4, 300), 10.0)
    with pytest.raises(Cancelled):
        run_summary(tmp_path, soc, np.full(soc.shape, 1.5), memory_mb=0.05, progress=lambda f, m: f < 0.3)
    assert sorted(os.listdir(tmp_path)) == ["soc.tif", "soc_pi.tif"]


def test_inputs_on_another_grid_are_refused_with_what_to_do(tmp_path):
    soc = write_raster(tmp_path / "soc.tif", np.full((1, 3, 3), 10.0), ["SOC 0-30 cm"])
    bd = write_raster(tmp_path / "bd.tif", np.full((1, 3, 3), 1.3), ["BD"], cell=50.0)
    with pytest.raises(ValueError, match="pixel size 50 x 50 m.*warp them onto the SOC map's grid"):
        open_inputs(soc, bulk_density_path=bd)


def test_a_soc_band_without_an_interval_is_refused(tmp_path):
    soc = write_raster(tmp_path / "soc.tif", np.full((1, 3, 3), 10.0), ["carbon"])
    with pytest.raises(ValueError, match="names no depth interval"):
        open_inputs(soc)


def test_memory_stays_within_the_budget_on_a_raster_far_larger_than_it(tmp_path):
    """200 × 300 cells × 200 simulations would take ~ 1.3 GB of draws at once; the blocks' arrays (what numpy
    allocates, traced) must stay within the 75 % of the 8 MB budget left after GDAL's cache."""
    import tracemalloc

    soc, width = random_map(9, 200, 300)
    soc_path, pi_path = predict_like_inputs(tmp_path, soc, width, [(0, 30), (30, 100)])
    stack, layout, intervals, level = open_inputs(soc_path, pi_path)
    settings = StockSettings(intervals, [(0, 30), (0, 100)], bulk_density_ptf="saini1996", level=level)
    del soc, width
    tracemalloc.start()
    try:
        with stack:
            stock_rasters(
                stack, layout, settings, str(tmp_path / "s.tif"), uncertainty_path=str(tmp_path / "q.tif"), memory_mb=8
            )
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert 1 << 20 < peak < 0.75 * 8 * (1 << 20)
