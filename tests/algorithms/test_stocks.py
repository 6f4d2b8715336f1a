"""socdepth:stocks through QGIS Processing on rasters and points made here: closed-form stocks, the parameters taking
effect, points and rasters agreeing number for number, and messages that say what to do."""

from __future__ import annotations

import csv

import numpy as np
import pytest
import rasterio
from rasterio.transform import from_origin

from soc_depth_mapper.core.predict import NODATA, _uncertainty_labels

X0, Y0, CELL = 700_000.0, 6_650_000.0, 100.0
LABELS = ["SOC 0-10 cm", "SOC 10-30 cm", "SOC 30-100 cm"]
ROWS, COLS = 3, 4


def write_raster(path, bands, labels) -> str:
    bands = np.asarray(bands, dtype=np.float32)
    profile = {"driver": "GTiff", "width": COLS, "height": ROWS, "count": len(labels), "dtype": "float32"}
    profile.update(crs="EPSG:28355", transform=from_origin(X0, Y0, CELL, CELL), nodata=NODATA)
    with rasterio.open(path, "w", **profile) as dataset:
        dataset.write(bands)
        for band, label in enumerate(labels, start=1):
            dataset.set_band_description(band, label)
    return str(path)


def soc_values() -> np.ndarray:
    """SOC (g/kg) falling with depth, different in every pixel."""
    rng = np.random.default_rng(11)
    return rng.uniform(5, 25, (len(LABELS), ROWS, COLS)) * np.array([1.0, 0.6, 0.3])[:, None, None]


@pytest.fixture()
def maps(tmp_path) -> dict[str, str]:
    soc = soc_values()
    bounds = np.empty((3 * len(LABELS), ROWS, COLS))
    bounds[0::3], bounds[1::3], bounds[2::3] = soc / 1.5, soc * 1.5, soc * 1.5 - soc / 1.5
    return {
        "soc": write_raster(tmp_path / "soc.tif", soc, LABELS),
        "intervals": write_raster(tmp_path / "soc_pi.tif", bounds, _uncertainty_labels(LABELS, 0.9)),
    }


def read(path) -> tuple[np.ndarray, list[str]]:
    with rasterio.open(path) as dataset:
        return dataset.read().astype(float), list(dataset.descriptions)


def test_constant_bulk_density_and_stones_give_the_closed_form(qgis_processing, tmp_path):
    """10 g/kg everywhere, 1300 kg/m³, 10 % stones: 0-30 cm 35.1 t/ha, 0-100 cm 117 t/ha."""
    soc = write_raster(tmp_path / "soc.tif", np.full((3, ROWS, COLS), 10.0), LABELS)
    result = qgis_processing.run(
        "socdepth:stocks",
        {
            "SOC": soc,
            "BULK_DENSITY_VALUE": 1300,
            "BULK_DENSITY_UNIT": 1,
            "COARSE_FRAGMENTS_VALUE": 10,
            "OUTPUT": str(tmp_path / "stocks.tif"),
        },
    )
    values, labels = read(result["OUTPUT"])
    assert labels[3:] == ["SOC stock 0-30 cm (t/ha)", "SOC stock 0-100 cm (t/ha)"]
    for band, expected in enumerate([11.7, 23.4, 81.9, 35.1, 117.0]):
        np.testing.assert_allclose(values[band], expected, rtol=1e-6)


def test_pedotransfer_uncertainty_and_summary(qgis_processing, maps, tmp_path, context_and_feedback):
    context, feedback = context_and_feedback
    from qgis.core import QgsApplication

    algorithm = QgsApplication.processingRegistry().createAlgorithmById("socdepth:stocks")
    parameters = {
        "SOC": maps["soc"],
        "SOC_UNCERTAINTY": maps["intervals"],
        "BULK_DENSITY_PTF": 1,  # Saini
        "BULK_DENSITY_SD": 0.1,
        "RANGES": "0-30,0-50",
        "SIMULATIONS": 300,
        "OUTPUT": str(tmp_path / "stocks.tif"),
        "OUTPUT_UNCERTAINTY": str(tmp_path / "stocks_q.tif"),
        "OUTPUT_SUMMARY": str(tmp_path / "summary.csv"),
    }
    result, ok = algorithm.run(parameters, context, feedback)
    assert ok, feedback.errors
    stocks, labels = read(result["OUTPUT"])
    soc = soc_values()
    bd = 1.62 - 0.06 * soc / 10 * 1.724
    layers = soc * bd * np.array([10, 20, 70])[:, None, None] / 10
    np.testing.assert_allclose(stocks[3], layers[0] + layers[1], rtol=1e-5)
    np.testing.assert_allclose(stocks[4], layers[0] + layers[1] + layers[2] * 20 / 70, rtol=1e-5)  # pro rata
    spread, names = read(result["OUTPUT_UNCERTAINTY"])
    assert names[:3] == ["SOC stock 0-30 cm 5% (t/ha)", "SOC stock 0-30 cm 50% (t/ha)", "SOC stock 0-30 cm 95% (t/ha)"]
    assert (spread[0] < stocks[3]).all() and (stocks[3] < spread[2]).all()
    with open(result["OUTPUT_SUMMARY"], encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    assert float(rows[0]["total_Tg"]) == pytest.approx(stocks[3].sum() * 1.0 / 1e6, rel=1e-5)  # 1 ha pixels
    assert any("fully correlated" in info for info in feedback.infos)
    assert any("Stocks computed for 12 of 12 cells" in info for info in feedback.infos)


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ({}, "Give bulk density one way"),
        ({"BULK_DENSITY_VALUE": 1.3, "BULK_DENSITY_PTF": 2}, "Give bulk density one way"),
        ({"BULK_DENSITY_VALUE": 1.3, "RANGES": "0-200"}, "covered only for 100 cm"),
    ],
)
def test_wrong_settings_say_what_to_do(qgis_processing, maps, tmp_path, extra, message):
    from qgis.core import QgsProcessingException

    with pytest.raises(QgsProcessingException, match=message):
        qgis_processing.run("socdepth:stocks", {"SOC": maps["soc"], "OUTPUT": str(tmp_path / "s.tif"), **extra})
    assert not (tmp_path / "s.tif").exists()


def test_implausible_bulk_density_is_reported(qgis_processing, maps, tmp_path, context_and_feedback):
    """1300 given as g/cm³ (the unit left at its default): every pixel is flagged and left out."""
    from qgis.core import QgsApplication

    context, feedback = context_and_feedback
    algorithm = QgsApplication.processingRegistry().createAlgorithmById("socdepth:stocks")
    parameters = {"SOC": maps["soc"], "BULK_DENSITY_VALUE": 1300, "OUTPUT": str(tmp_path / "s.tif")}
    result, ok = algorithm.run(parameters, context, feedback)
    assert ok
    assert (read(result["OUTPUT"])[0] == NODATA).all()
    assert any("36 bulk density values" in e and "kg/m³" in e for e in feedback.errors), feedback.errors
    assert any(
        "Stocks computed for 0 of 12 cells or points (0 without all inputs, 12 implausible)" in i
        for i in feedback.infos
    )


def points_layer(columns: dict[str, np.ndarray]):
    """The pixel centres as a memory point layer with an id and a field per (name, values (rows, cols))."""
    from qgis.core import QgsFeature, QgsGeometry, QgsPointXY, QgsVectorLayer

    fields = "".join(f"&field={name}:double" for name in columns)
    layer = QgsVectorLayer(f"Point?crs=EPSG:28355&field=id:integer{fields}", "points", "memory")
    features = []
    for row in range(ROWS):
        for col in range(COLS):
            feature = QgsFeature(layer.fields())
            centre = QgsPointXY(X0 + (col + 0.5) * CELL, Y0 - (row + 0.5) * CELL)
            feature.setGeometry(QgsGeometry.fromPointXY(centre))
            feature.setAttributes([row * COLS + col, *(float(v[row, col]) for v in columns.values())])
            features.append(feature)
    layer.dataProvider().addFeatures(features)
    return layer


def point_table(path: str) -> np.ndarray:
    """The stock fields of the output points as (fields, rows, cols), in the raster outputs' band order."""
    from qgis.core import QgsVectorLayer

    names = ["SOCS_0_10", "SOCS_10_30", "SOCS_30_100", "SOCSUM_0_30", "SOCSUM_0_100"]
    names += [f"SOCSUM_{r}_P{q}" for r in ("0_30", "0_100") for q in (5, 50, 95)]
    table = np.full((len(names), ROWS, COLS), np.nan)
    for feature in QgsVectorLayer(path, "stocks").getFeatures():
        row, col = divmod(feature["id"], COLS)
        table[:, row, col] = [feature[name] for name in names]
    return table


FIELD_DEPTHS = ("0_10", "10_30", "30_100")


@pytest.mark.parametrize("from_fields", [False, True], ids=["constants", "fields"])
def test_points_and_rasters_give_the_same_numbers(qgis_processing, tmp_path, from_fields):
    """The pixel centres as points with ORCDRC_0_10 … fields: the same stocks and, with the same seed, the same
    Monte Carlo quantiles (draws are shared by all pixels, so they do not depend on the layout). Bulk density
    and coarse fragments by constants and a pedotransfer function, or by BLD_* and CRFVOL_* fields and rasters."""
    soc = soc_values()
    columns = {f"ORCDRC_{d}": soc[i] for i, d in enumerate(FIELD_DEPTHS)}
    common = {"BULK_DENSITY_SD": 0.15, "COARSE_FRAGMENTS_SD": 3, "SEED": 5}
    for_rasters = {"SOC": write_raster(tmp_path / "soc.tif", soc, LABELS)}
    for_points = {}
    if from_fields:
        rng = np.random.default_rng(12)
        bd, cf = rng.uniform(1.0, 1.6, soc.shape), rng.uniform(0, 30, soc.shape)
        columns |= {f"BLD_{d}": bd[i] for i, d in enumerate(FIELD_DEPTHS)}
        columns |= {f"CRFVOL_{d}": cf[i] for i, d in enumerate(FIELD_DEPTHS)}
        for_points = {"SOC_PROPERTY": "ORCDRC", "BULK_DENSITY_PROPERTY": "BLD", "COARSE_FRAGMENTS_PROPERTY": "CRFVOL"}
        for_rasters["BULK_DENSITY"] = write_raster(tmp_path / "bd.tif", bd, [f"BD {t}" for t in LABELS])
        for_rasters["COARSE_FRAGMENTS"] = write_raster(tmp_path / "cf.tif", cf, [f"CF {t}" for t in LABELS])
    else:
        common |= {"BULK_DENSITY_PTF": 2, "COARSE_FRAGMENTS_VALUE": 8}
    rasters = qgis_processing.run(
        "socdepth:stocks",
        {**common, **for_rasters, "OUTPUT": str(tmp_path / "s.tif"), "OUTPUT_UNCERTAINTY": str(tmp_path / "q.tif")},
    )
    points = qgis_processing.run(
        "socdepth:stocks",
        {**common, **for_points, "SOC": points_layer(columns), "OUTPUT_POINTS": str(tmp_path / "points.gpkg")},
    )
    table = point_table(points["OUTPUT_POINTS"])
    stocks, spread = read(rasters["OUTPUT"])[0], read(rasters["OUTPUT_UNCERTAINTY"])[0]
    np.testing.assert_allclose(table[:5], stocks, rtol=1e-6)
    np.testing.assert_allclose(table[5:], spread, rtol=1e-6)
    assert (spread[0] < spread[2]).all()  # the standard deviations took effect
    if from_fields:  # the fields took effect: the stock of 0-10 cm is that of the fields' BD and CF
        np.testing.assert_allclose(stocks[0], soc[0] * bd[0] * (1 - cf[0] / 100), rtol=1e-5)


def test_points_with_several_properties_need_the_soc_one(qgis_processing, tmp_path):
    from qgis.core import QgsProcessingException

    soc = soc_values()
    columns = {f"{p}_{d}": soc[i] for p in ("ORCDRC", "BLD") for i, d in enumerate(FIELD_DEPTHS)}
    with pytest.raises(QgsProcessingException, match="Give the SOC property.*BLD, ORCDRC"):
        qgis_processing.run(
            "socdepth:stocks",
            {"SOC": points_layer(columns), "BULK_DENSITY_VALUE": 1.3, "OUTPUT_POINTS": str(tmp_path / "p.gpkg")},
        )
