"""`qgis_process.bin run socdepth:stocks` on a SOC map and its prediction intervals named as predict names them."""

from __future__ import annotations

import csv

import numpy as np
import pytest
import rasterio
from rasterio.transform import from_origin

from soc_depth_mapper.core.predict import NODATA, _uncertainty_labels

LABELS = ["ORCDRC 0-5 cm", "ORCDRC 5-15 cm", "ORCDRC 15-30 cm", "ORCDRC 30-60 cm", "ORCDRC 60-100 cm"]
THICKNESS = np.array([5, 10, 15, 30, 40])[:, None, None]


def write(path, bands, labels) -> None:
    profile = {"driver": "GTiff", "width": 6, "height": 4, "count": len(labels), "dtype": "float32", "nodata": NODATA}
    profile.update(crs="EPSG:28355", transform=from_origin(750_000, 6_650_000, 250, 250))
    with rasterio.open(path, "w", **profile) as dataset:
        dataset.write(np.asarray(bands, dtype=np.float32))
        for band, label in enumerate(labels, start=1):
            dataset.set_band_description(band, label)


def test_stocks_from_the_command_line(qgis_process, tmp_path):
    soc = np.random.default_rng(3).uniform(2, 20, (5, 4, 6)) * np.linspace(1, 0.3, 5)[:, None, None]
    bounds = np.empty((15, 4, 6))
    bounds[0::3], bounds[1::3], bounds[2::3] = soc * 0.6, soc * 1.6, soc
    write(tmp_path / "soc.tif", soc, LABELS)
    write(tmp_path / "pi.tif", bounds, _uncertainty_labels(LABELS, 0.9))
    outputs = {name: tmp_path / name for name in ("stocks.tif", "q.tif", "summary.csv")}
    result = qgis_process(
        "run",
        "socdepth:stocks",
        "--",
        f"SOC={tmp_path / 'soc.tif'}",
        f"SOC_UNCERTAINTY={tmp_path / 'pi.tif'}",
        "BULK_DENSITY_PTF=2",
        "COARSE_FRAGMENTS_VALUE=10",
        "SIMULATIONS=100",
        f"OUTPUT={outputs['stocks.tif']}",
        f"OUTPUT_UNCERTAINTY={outputs['q.tif']}",
        f"OUTPUT_SUMMARY={outputs['summary.csv']}",
    )
    assert result["results"]["OUTPUT_SUMMARY"] == str(outputs["summary.csv"])
    with rasterio.open(outputs["stocks.tif"]) as dataset:
        stocks = dataset.read().astype(float)
        assert dataset.descriptions[-2:] == ("SOC stock 0-30 cm (t/ha)", "SOC stock 0-100 cm (t/ha)")
    bd = 1 / (0.564 + 0.0556 * soc / 10 * 1.724)  # Honeysett & Ratkowsky (1989)
    layers = soc * bd * 0.9 * THICKNESS / 10  # 10 % stones: the parameter took effect
    np.testing.assert_allclose(stocks[5], layers[:3].sum(axis=0), rtol=1e-5)
    np.testing.assert_allclose(stocks[6], layers.sum(axis=0), rtol=1e-5)
    with rasterio.open(outputs["q.tif"]) as dataset:
        assert dataset.count == 6
        low, high = dataset.read(1), dataset.read(3)
    assert (low < stocks[5]).all() and (stocks[5] < high).all()
    with open(outputs["summary.csv"], encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    hectares = 250 * 250 / 1e4
    assert float(rows[1]["total_Tg"]) == pytest.approx(stocks[6].sum() * hectares / 1e6, rel=1e-5)
