"""Batch mode: rows of `harmonise` and `predict` run as QGIS's batch dialog runs them, each equal to its single run.

The batch dialog (processing/gui/BatchAlgorithmDialog.py, QGIS 3.22) keeps ONE algorithm instance for all rows,
gives each row a fresh context and a step of a multi-step feedback, and loads each row's layers (running their
post-processors) before the next row starts. `run_as_batch` repeats exactly those calls without the widgets, so a
state carried from one row to the next in the algorithm object, or a styler shared between rows, shows up here.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import rasterio

REPO = Path(__file__).resolve().parents[2]
DATA = REPO / "sample_data" / "edgeroi"
GSM = ["0_5", "5_15", "15_30", "30_60", "60_100", "100_200"]
HORIZONS_URI = "file://{}?type=csv&xField=x&yField=y&crs=EPSG:28355&detectTypes=yes"


def run_as_batch(algorithm_id: str, rows: list[dict]) -> list[dict]:
    """Runs the rows the way BatchAlgorithmDialog.runAlgorithm does; fails on the first row that fails."""
    from processing.gui.Postprocessing import handleAlgorithmResults
    from processing.tools import dataobjects
    from qgis.core import QgsApplication, QgsProcessingFeedback, QgsProcessingMultiStepFeedback

    algorithm = QgsApplication.processingRegistry().createAlgorithmById(algorithm_id)
    feedback = QgsProcessingFeedback()
    multi_feedback = QgsProcessingMultiStepFeedback(len(rows), feedback)
    results = []
    for step, row in enumerate(rows):
        multi_feedback.setCurrentStep(step)
        parameters = algorithm.preprocessParameters(row)
        context = dataobjects.createContext(feedback)  # the dialog's fresh context per row
        result, ok = algorithm.run(parameters, context, multi_feedback)
        assert ok, f"batch row {step + 1} failed"
        assert handleAlgorithmResults(algorithm, context, multi_feedback, False, parameters)
        results.append(result)
    return results


def loaded(path: Path):
    """An output the batch dialog loads into the project ('Load layers on completion' ticked)."""
    from qgis.core import QgsProcessingOutputLayerDefinition, QgsProject

    return QgsProcessingOutputLayerDefinition(str(path), QgsProject.instance())


def features(path) -> list[tuple[dict, str]]:
    """(attributes by field name, geometry as WKT) of every feature, in file order."""
    from qgis.core import QgsVectorLayer

    layer = QgsVectorLayer(str(path), "out", "ogr")
    assert layer.isValid(), path
    names = layer.fields().names()
    return [(dict(zip(names, f.attributes())), f.geometry().asWkt(3)) for f in layer.getFeatures()]


def split_horizons(tmp_path: Path) -> tuple[Path, Path]:
    """The Edgeroi horizons as two CSVs: the first 60 profiles and the next 60."""
    lines = (DATA / "horizons.csv").read_text(encoding="utf-8").splitlines()
    header, rows = lines[0], lines[1:]
    profiles = list(dict.fromkeys(row.split(",")[0] for row in rows))
    paths = []
    for name, chosen in (("north.csv", set(profiles[:60])), ("south.csv", set(profiles[60:120]))):
        path = tmp_path / name
        path.write_text("\n".join([header, *(r for r in rows if r.split(",")[0] in chosen)]) + "\n", encoding="utf-8")
        paths.append(path)
    return paths[0], paths[1]


def test_harmonise_batch_rows_equal_their_single_runs(qgis_processing, tmp_path):
    from qgis.core import QgsVectorLayer

    north, south = split_horizons(tmp_path)
    table = tmp_path / "table.csv"  # no geometry; the values of tests/e2e/test_harmonise_cli.py
    table.write_text("pid,top,bottom,soc\nA,0,10,6\nA,10,20,4\nB,0,30,12\nC,0,10,5\nC,5,20,3\n")
    common = {"PROFILE_FIELD": "SOURCEID", "TOP_FIELD": "top", "BOTTOM_FIELD": "bottom"}
    rows = [
        {"INPUT": HORIZONS_URI.format(north), **common, "VALUE_FIELDS": ["ORCDRC"]},
        {**common, "INPUT": HORIZONS_URI.format(south), "VALUE_FIELDS": ["ORCDRC", "CLYPPT"], "DEPTHS": "0,30,100"},
        {
            "INPUT": str(table),
            "PROFILE_FIELD": "pid",
            "TOP_FIELD": "top",
            "BOTTOM_FIELD": "bottom",
            "VALUE_FIELDS": ["soc"],
            "DEPTHS": "0,10,20,30",
        },
    ]

    def layer(value):  # the dialog hands over layers, as its layer widgets do
        provider = "delimitedtext" if value.startswith("file://") else "ogr"
        return QgsVectorLayer(value, Path(value.split("?")[0]).stem, provider)

    batch_rows = [
        {**row, "INPUT": layer(row["INPUT"]), "OUTPUT": loaded(tmp_path / f"batch_{i}.gpkg")}
        for i, row in enumerate(rows)
    ]
    batch_rows[2]["REJECTED"] = loaded(tmp_path / "batch_rejected.gpkg")
    run_as_batch("socdepth:harmonise", batch_rows)

    for i, row in enumerate(rows):
        single = qgis_processing.run(
            "socdepth:harmonise", {**row, "INPUT": layer(row["INPUT"]), "OUTPUT": str(tmp_path / f"single_{i}.gpkg")}
        )
        assert features(tmp_path / f"batch_{i}.gpkg") == features(single["OUTPUT"]), f"row {i + 1}"

    north_fields = QgsVectorLayer(str(tmp_path / "batch_0.gpkg")).fields().names()
    south_fields = QgsVectorLayer(str(tmp_path / "batch_1.gpkg")).fields().names()
    assert [f"ORCDRC_{d}" for d in GSM] == [f for f in north_fields if f.startswith("ORCDRC_") and f[-1].isdigit()]
    assert {"ORCDRC_0_30", "ORCDRC_30_100", "CLYPPT_0_30", "CLYPPT_30_100"} <= set(south_fields)
    assert not set(north_fields) & {"ORCDRC_0_30", "CLYPPT_0_30"}  # row 2's settings did not leak backwards
    by_profile = {attributes["pid"]: attributes for attributes, _ in features(tmp_path / "batch_2.gpkg")}
    assert by_profile["A"]["soc_0_10"] == pytest.approx(5.9433962264, abs=1e-9)  # hand-checked spline mean, 0-10 cm
    assert set(by_profile) == {"A", "B"}  # C overlaps and is rejected
    assert len(features(tmp_path / "batch_rejected.gpkg")) >= 1
    assert len(features(tmp_path / "batch_0.gpkg")) + len(features(tmp_path / "batch_1.gpkg")) <= 120


@pytest.fixture(scope="module")
def models(qgis_processing, harmonised, tmp_path_factory):
    """Two small random forests on Edgeroi: all six depths, and the top two only."""
    from qgis.core import QgsRasterLayer

    folder = tmp_path_factory.mktemp("batch_models")
    covariates = QgsRasterLayer(str(DATA / "covariates_250m.tif"), "cov")
    paths = {}
    for name, depths in (("six", GSM), ("top", GSM[:2])):
        paths[name] = qgis_processing.run(
            "socdepth:train",
            {
                "INPUT": harmonised,
                "TARGET_FIELDS": [f"ORCDRC_{d}" for d in depths],
                "COVARIATES": [covariates],
                "MODEL": 0,
                "VALIDATION": 0,
                "N_TREES": 20,
                "OUTPUT_MODEL": str(folder / f"{name}.socmodel"),
            },
        )["OUTPUT_MODEL"]
    return paths


PREDICT_ROWS = [
    {"MODEL": "six", "UNCERTAINTY": 1, "INTERVAL": 80},
    {"MODEL": "top", "EXTENT": "750000,760000,6650000,6660000 [EPSG:28355]"},
    {"MODEL": "six", "DEPTHS": "30-60, 100-200"},
]
DEPTH_FOLDERS = {0: "maps_six", 2: "maps_deep"}  # rows that also write (and load) one map per depth


@pytest.fixture(scope="module")
def predict_batch(qgis_processing, models, tmp_path_factory):
    """The three rows run as one batch, loading their layers into the (emptied) project; yields the folder."""
    from qgis.core import QgsProject

    folder = tmp_path_factory.mktemp("predict_batch")
    covariates = [str(DATA / "covariates_250m.tif")]
    batch_rows = []
    for i, row in enumerate(PREDICT_ROWS):
        batch_row = {**row, "MODEL": models[row["MODEL"]], "COVARIATES": covariates}
        batch_row["OUTPUT"] = loaded(folder / f"batch_{i}.tif")
        if row.get("UNCERTAINTY"):
            batch_row["OUTPUT_UNCERTAINTY"] = loaded(folder / f"batch_pi_{i}.tif")
        if i in DEPTH_FOLDERS:
            batch_row["OUTPUT_FOLDER"] = str(folder / DEPTH_FOLDERS[i])
        batch_rows.append(batch_row)
    project = QgsProject.instance()
    project.removeAllMapLayers()
    project.layerTreeRoot().removeAllChildren()
    run_as_batch("socdepth:predict", batch_rows)
    yield folder
    project.removeAllMapLayers()
    project.layerTreeRoot().removeAllChildren()


def test_predict_batch_rows_equal_their_single_runs(qgis_processing, models, predict_batch, tmp_path):
    for i, row in enumerate(PREDICT_ROWS):
        single_row = {**row, "MODEL": models[row["MODEL"]], "COVARIATES": [str(DATA / "covariates_250m.tif")]}
        single_row["OUTPUT"] = str(tmp_path / f"single_{i}.tif")
        if row.get("UNCERTAINTY"):
            single_row["OUTPUT_UNCERTAINTY"] = str(tmp_path / f"single_pi_{i}.tif")
        qgis_processing.run("socdepth:predict", single_row)
        for prefix in ["", "pi_"] if row.get("UNCERTAINTY") else [""]:
            with (
                rasterio.open(predict_batch / f"batch_{prefix}{i}.tif") as batch,
                rasterio.open(tmp_path / f"single_{prefix}{i}.tif") as single,
            ):
                assert batch.descriptions == single.descriptions and batch.transform == single.transform
                np.testing.assert_array_equal(batch.read(), single.read(), err_msg=f"row {i + 1} {prefix}")

    with rasterio.open(predict_batch / "batch_0.tif") as six, rasterio.open(predict_batch / "batch_1.tif") as top:
        assert six.count == 6 and top.count == 2 and top.width < six.width
    with rasterio.open(predict_batch / "batch_2.tif") as deep:
        assert deep.descriptions == ("ORCDRC 30-60 cm", "ORCDRC 100-200 cm")


def test_predict_batch_loads_every_row_and_its_depth_maps(predict_batch):
    from qgis.core import QgsProject

    sources = {layer.source() for layer in QgsProject.instance().mapLayers().values()}
    expected = {str(predict_batch / f"batch_{i}.tif") for i in range(len(PREDICT_ROWS))}
    expected |= {str(p) for folder in DEPTH_FOLDERS.values() for p in (predict_batch / folder).glob("*.tif")}
    assert len(expected) == 3 + 6 + 2 and expected <= sources


def test_predict_batch_styles_each_rows_depth_maps_with_that_rows_range(predict_batch):
    from qgis.core import QgsProject, QgsSingleBandPseudoColorRenderer

    from soc_depth_mapper.algorithms.styling import GROUP, shared_value_range

    group = QgsProject.instance().layerTreeRoot().findGroup(GROUP)
    assert group is not None, f"no '{GROUP}' group in the project"
    layers = [node.layer() for node in group.findLayers()]
    depth_maps = [layer for layer in layers if Path(layer.source()).parent.name in DEPTH_FOLDERS.values()]
    assert len(depth_maps) == 6 + 2
    assert len(layers) == len(depth_maps) + 4  # and the rows' multi-band maps: with intervals, alone, alone
    ranges = {}
    for folder in DEPTH_FOLDERS.values():
        ranges[folder] = shared_value_range(sorted(str(p) for p in (predict_batch / folder).glob("*.tif")))
    assert ranges["maps_six"] != pytest.approx(ranges["maps_deep"])  # so a range shared across rows would show
    for layer in depth_maps:
        low, high = ranges[Path(layer.source()).parent.name]
        assert isinstance(layer.renderer(), QgsSingleBandPseudoColorRenderer), layer.name()
        assert (layer.renderer().classificationMin(), layer.renderer().classificationMax()) == pytest.approx(
            (low, high)
        )
