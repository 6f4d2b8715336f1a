"""socdepth:predict through QGIS Processing: cancel and failure leave nothing behind, covariate mismatches say what
differs, the mask, and the per-depth maps loaded in one group per run."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import rasterio
from affine import Affine

REPO = Path(__file__).resolve().parents[2]
DATA = REPO / "sample_data" / "edgeroi"
COVARIATES = DATA / "covariates_250m.tif"
GSM = ["0_5", "5_15", "15_30", "30_60", "60_100", "100_200"]
NODATA = -9999.0


@pytest.fixture(scope="module")
def model(qgis_processing, harmonised, tmp_path_factory) -> str:
    """A small random forest for the six GlobalSoilMap depths, trained on the real Edgeroi profiles."""
    folder = tmp_path_factory.mktemp("predict_model")
    return qgis_processing.run(
        "socdepth:train",
        {
            "INPUT": harmonised,
            "TARGET_FIELDS": [f"ORCDRC_{d}" for d in GSM],
            "COVARIATES": [covariate_layer(COVARIATES)],
            "MODEL": 0,
            "VALIDATION": 0,
            "N_TREES": 20,
            "OUTPUT_MODEL": str(folder / "model.socmodel"),
        },
    )["OUTPUT_MODEL"]


def covariate_layer(path: Path):
    """The raster as a layer named 'cov', as in training, so band names differ only where the file differs."""
    from qgis.core import QgsRasterLayer

    layer = QgsRasterLayer(str(path), "cov")
    assert layer.isValid(), path
    return layer


def test_cancel_stops_the_run_and_leaves_nothing_behind(qgis_processing, model, tmp_path):
    from qgis.core import QgsProcessingException, QgsProcessingFeedback

    class CancelAfterFirstProgress(QgsProcessingFeedback):
        def __init__(self):
            super().__init__()
            self.updates = 0

        def setProgress(self, progress):  # noqa: N802 - QGIS API
            self.updates += 1
            super().setProgress(progress)

        def isCanceled(self):  # noqa: N802 - QGIS API
            return self.updates > 0

    feedback = CancelAfterFirstProgress()
    outputs = {
        "OUTPUT": tmp_path / "soc.tif",
        "OUTPUT_UNCERTAINTY": tmp_path / "pi.tif",
        "OUTPUT_FOLDER": tmp_path / "maps",
    }
    with pytest.raises(QgsProcessingException, match="Prediction cancelled; no output was written"):
        qgis_processing.run(
            "socdepth:predict",
            {
                "MODEL": model,
                "COVARIATES": [covariate_layer(COVARIATES)],
                "UNCERTAINTY": 1,
                **{name: str(path) for name, path in outputs.items()},
            },
            feedback=feedback,
        )
    assert feedback.updates >= 1  # it was cancelled while predicting, not before
    for path in outputs.values():
        assert not path.exists(), path
    assert list(tmp_path.iterdir()) == []  # no temporary files either


def test_a_model_file_is_recognised_by_its_content_not_its_name(qgis_processing, harmonised, tmp_path):
    trained = qgis_processing.run(
        "socdepth:train",
        {
            "INPUT": harmonised,
            "TARGET_FIELDS": ["ORCDRC_0_5"],
            "COVARIATES": [covariate_layer(COVARIATES)],
            "MODEL": 0,
            "VALIDATION": 0,
            "N_TREES": 10,
            "OUTPUT_MODEL": str(tmp_path / "rf.model"),
        },
    )
    assert trained["OUTPUT_MODEL"] == str(tmp_path / "rf.model") and (tmp_path / "rf.model").is_file()
    shutil.copy(tmp_path / "rf.model", tmp_path / "rf")
    for name in ("rf.model", "rf"):
        result = qgis_processing.run(
            "socdepth:predict",
            {
                "MODEL": str(tmp_path / name),
                "COVARIATES": [covariate_layer(COVARIATES)],
                "EXTENT": "745000,750000,6650000,6655000 [EPSG:28355]",
                "OUTPUT": str(tmp_path / f"{name}.tif"),
            },
        )
        with rasterio.open(result["OUTPUT"]) as maps:
            assert maps.count == 1 and maps.read(1, masked=True).count() > 0


def test_a_full_disk_fails_the_run_and_keeps_the_earlier_map(qgis_processing, model, tmp_path, small_file_system):
    from qgis.core import QgsProcessingException

    earlier = tmp_path / "earlier.tif"
    qgis_processing.run(
        "socdepth:predict", {"MODEL": model, "COVARIATES": [covariate_layer(COVARIATES)], "OUTPUT": str(earlier)}
    )
    folder = small_file_system(
        "1m", prepare=lambda folder: shutil.copy(earlier, folder / "soc.tif"), leave_free=earlier.stat().st_size // 2
    )
    with pytest.raises(
        QgsProcessingException,
        match=r"'soc.tif' could not be written to '.*mount0' \(.*\): the disk "
        "may be full, or the folder not writable. Nothing was replaced",
    ):
        qgis_processing.run(
            "socdepth:predict",
            {"MODEL": model, "COVARIATES": [covariate_layer(COVARIATES)], "OUTPUT": str(folder / "soc.tif")},
        )
    assert sorted(p.name for p in folder.iterdir()) == ["filler", "soc.tif"]
    assert (folder / "soc.tif").read_bytes() == earlier.read_bytes()


def test_a_mask_that_covers_no_cell_fails_the_run_saying_why(qgis_processing, model, tmp_path):
    from qgis.core import QgsFeature, QgsGeometry, QgsProcessingException, QgsRectangle, QgsVectorLayer

    with rasterio.open(COVARIATES) as dataset:
        left, top, n_cells = dataset.bounds.left, dataset.bounds.top, dataset.width * dataset.height
    mask = QgsVectorLayer("Polygon?crs=EPSG:28355", "mask", "memory")
    feature = QgsFeature()
    feature.setGeometry(QgsGeometry.fromRect(QgsRectangle(left - 5000, top + 1000, left - 1000, top + 5000)))
    assert mask.dataProvider().addFeatures([feature])[0]
    with pytest.raises(QgsProcessingException) as error:
        qgis_processing.run(
            "socdepth:predict",
            {
                "MODEL": model,
                "COVARIATES": [covariate_layer(COVARIATES)],
                "MASK": mask,
                "OUTPUT": str(tmp_path / "soc.tif"),
                "OUTPUT_FOLDER": str(tmp_path / "maps"),
            },
        )
    assert str(error.value) == (
        f"Nothing was predicted, so no file was written: of the {n_cells:,} cells in the extent, {n_cells:,} lie "
        "outside the mask, 0 have nodata in a covariate and 0 got no value from the model. Check that the extent "
        "and the mask cover cells where every covariate holds data."
    )
    assert list(tmp_path.iterdir()) == []


def test_maps_on_a_local_cluster_equal_those_made_in_qgis(qgis_processing, model, tmp_path):
    maps = []
    for cluster in ("", "local:2"):
        out = tmp_path / (cluster.replace(":", "_") or "in_qgis")
        out.mkdir()
        result = qgis_processing.run(
            "socdepth:predict",
            {
                "MODEL": model,
                "COVARIATES": [covariate_layer(COVARIATES)],
                "MEMORY_MB": 64,
                "CLUSTER": cluster,
                "OUTPUT": str(out / "soc.tif"),
            },
        )
        with rasterio.open(result["OUTPUT"]) as dataset:
            maps.append(dataset.read())
        assert [p.name for p in out.iterdir()] == ["soc.tif"]
    assert (maps[0] != NODATA).sum() > 10_000
    np.testing.assert_array_equal(maps[0], maps[1])


def test_a_wrong_cluster_is_refused_before_any_work(qgis_processing, model, tmp_path):
    from qgis.core import QgsProcessingException

    with pytest.raises(QgsProcessingException, match="Cluster 'local:0'.*whole number >= 1"):
        qgis_processing.run(
            "socdepth:predict",
            {
                "MODEL": model,
                "COVARIATES": [covariate_layer(COVARIATES)],
                "CLUSTER": "local:0",
                "OUTPUT": str(tmp_path / "soc.tif"),
            },
        )
    assert list(tmp_path.iterdir()) == []


def test_failed_run_creates_no_depth_folder(qgis_processing, model, tmp_path):
    from qgis.core import QgsProcessingException

    with pytest.raises(QgsProcessingException, match="does not overlap the covariates"):
        qgis_processing.run(
            "socdepth:predict",
            {
                "MODEL": model,
                "COVARIATES": [covariate_layer(COVARIATES)],
                "EXTENT": "800000,810000,6600000,6610000 [EPSG:28355]",
                "OUTPUT": str(tmp_path / "soc.tif"),
                "OUTPUT_FOLDER": str(tmp_path / "maps"),
            },
        )
    assert list(tmp_path.iterdir()) == []


def swap_first_two_band_names(path: Path) -> None:
    with rasterio.open(path, "r+") as dataset:
        first, second = dataset.descriptions[:2]
        dataset.set_band_description(1, second)
        dataset.set_band_description(2, first)


def rename_third_band(path: Path) -> None:
    with rasterio.open(path, "r+") as dataset:
        dataset.set_band_description(3, "GEOLOGY")


def assign_utm_crs(path: Path) -> None:
    with rasterio.open(path, "r+") as dataset:
        dataset.crs = rasterio.crs.CRS.from_epsg(32755)


def resample_to_500_m(path: Path) -> None:
    with rasterio.open(COVARIATES) as source:
        profile = source.profile | {
            "height": source.height // 2,
            "width": source.width // 2,
            "transform": source.transform * Affine.scale(2),
        }
        data = source.read(out_shape=(source.count, profile["height"], profile["width"]))
        descriptions = source.descriptions
    with rasterio.open(path, "w", **profile) as target:
        target.write(data)
        target.descriptions = descriptions


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (
            swap_first_two_band_names,
            "band 1: model 'cov_DEMSRT5', given 'cov_TWISRT5'; band 2: model 'cov_TWISRT5', given 'cov_DEMSRT5'). "
            "Give the same rasters in the same order: cov_DEMSRT5, cov_TWISRT5, cov_PMTGEO5,",
        ),
        (rename_third_band, "(band 3: model 'cov_PMTGEO5', given 'cov_GEOLOGY')"),
        (
            assign_utm_crs,
            "The covariates are in EPSG:32755 - WGS 84 / UTM zone 55S but the model was trained on "
            "EPSG:28355 - GDA94 / MGA zone 55. Reproject the rasters.",
        ),
        (
            resample_to_500_m,
            "The covariates have pixels of 500.0 x 500.0 but the model was trained on 250.0 x 250.0. "
            "A CNN reads patches of cells, so the pixel size must match: resample the rasters.",
        ),
    ],
    ids=["band-order", "band-name", "crs", "pixel-size"],
)
def test_covariate_mismatch_says_what_differs(qgis_processing, model, tmp_path, change, message):
    from qgis.core import QgsProcessingException

    changed = tmp_path / "changed.tif"
    shutil.copy(COVARIATES, changed)
    change(changed)
    with pytest.raises(QgsProcessingException, match=re.escape(message)):
        qgis_processing.run(
            "socdepth:predict",
            {"MODEL": model, "COVARIATES": [covariate_layer(changed)], "OUTPUT": str(tmp_path / "soc.tif")},
        )
    assert not (tmp_path / "soc.tif").exists()


def test_mask_in_another_crs_blanks_every_band_outside(qgis_processing, model, tmp_path, context_and_feedback):
    from qgis.core import (
        QgsCoordinateReferenceSystem,
        QgsCoordinateTransform,
        QgsFeature,
        QgsGeometry,
        QgsPointXY,
        QgsProject,
        QgsVectorLayer,
    )

    with rasterio.open(COVARIATES) as dataset:
        left, top, (height, width) = dataset.bounds.left, dataset.bounds.top, dataset.shape
    # an L on cell edges (so no cell centre is near an edge), in the rasters' CRS
    x0, x1, x2 = (left + 250 * col for col in (20, 60, 120))
    y3, y1, y0 = (top - 250 * row for row in (20, 80, 100))
    corners = [(x0, y0), (x2, y0), (x2, y1), (x1, y1), (x1, y3), (x0, y3)]
    polygon = QgsGeometry.fromPolygonXY([[QgsPointXY(x, y) for x, y in corners]])
    polygon.transform(
        QgsCoordinateTransform(
            QgsCoordinateReferenceSystem("EPSG:28355"), QgsCoordinateReferenceSystem("EPSG:4326"), QgsProject.instance()
        )
    )
    mask = QgsVectorLayer("Polygon?crs=EPSG:4326", "mask", "memory")
    feature = QgsFeature()
    feature.setGeometry(polygon)
    assert mask.dataProvider().addFeatures([feature])[0]

    common = {"MODEL": model, "COVARIATES": [covariate_layer(COVARIATES)]}
    whole = qgis_processing.run("socdepth:predict", {**common, "OUTPUT": str(tmp_path / "whole.tif")})["OUTPUT"]
    context, feedback = context_and_feedback
    masked = qgis_processing.run(
        "socdepth:predict",
        {**common, "MASK": mask, "OUTPUT": str(tmp_path / "masked.tif")},
        context=context,
        feedback=feedback,
    )["OUTPUT"]
    with rasterio.open(whole) as a, rasterio.open(masked) as b:
        assert b.count == 6 and b.transform == a.transform
        unmasked_values, masked_values = a.read(), b.read()

    x = left + 250 * (np.arange(width) + 0.5)
    y = top - 250 * (np.arange(height)[:, None] + 0.5)
    inside = ((x0 < x) & (x < x2) & (y0 < y) & (y < y1)) | ((x0 < x) & (x < x1) & (y0 < y) & (y < y3))
    assert np.all(masked_values[:, ~inside] == NODATA)
    # one word, cells, and one number format, thousands separated, as core's progress messages ("24,320 cells")
    predicted = int((masked_values[0] != NODATA).sum())
    total = width * height
    assert f"Predicted {predicted:,} of {total:,} cells ({total - predicted:,} nodata or masked)." in feedback.infos
    assert total == 24320  # so the separator shows: 'of 24,320 cells'
    assert (
        f"Not predicted: {(~inside).sum():,} cells outside the mask, 0 with nodata in a covariate, 0 without a value "
        "from the model."
    ) in feedback.infos
    np.testing.assert_array_equal(masked_values[:, inside], unmasked_values[:, inside])
    # both halves hold predictions in the unmasked map, so neither assertion holds trivially
    assert (unmasked_values[:, inside] != NODATA).all(axis=0).sum() > 1000
    assert (unmasked_values[:, ~inside] != NODATA).all(axis=0).sum() > 1000


@pytest.fixture()
def empty_project():
    from qgis.core import QgsProject

    project = QgsProject.instance()
    project.removeAllMapLayers()
    project.layerTreeRoot().removeAllChildren()
    yield project
    project.removeAllMapLayers()
    project.layerTreeRoot().removeAllChildren()


def test_depth_maps_of_each_run_get_a_group_with_one_value_range(
    qgis_processing, model, tmp_path, empty_project, monkeypatch
):
    from qgis.core import QgsSingleBandPseudoColorRenderer

    from soc_depth_mapper.algorithms.styling import GROUP, shared_value_range

    # outside the system's temporary folder, as a user's folder is, where QGIS names loaded outputs after their
    # file unless told otherwise (it reads TMPDIR on each call)
    system_temp = tmp_path / "system_temp"
    system_temp.mkdir()
    monkeypatch.setenv("TMPDIR", str(system_temp))
    runs = [("first", ""), ("second", "60-100, 100-200")]  # two folders both called 'maps'
    for name, depths in runs:
        qgis_processing.runAndLoadResults(
            "socdepth:predict",
            {
                "MODEL": model,
                "COVARIATES": [str(COVARIATES)],
                "DEPTHS": depths,
                "OUTPUT": str(tmp_path / f"{name}.tif"),
                "OUTPUT_FOLDER": str(tmp_path / name / "maps"),
            },
        )
    assert sorted(p.name for p in (tmp_path / "second" / "maps").iterdir()) == [
        "ORCDRC_100_200cm.tif",
        "ORCDRC_60_100cm.tif",
    ]

    parent = empty_project.layerTreeRoot().findGroup(GROUP)
    assert parent is not None
    groups = {child.name(): child for child in parent.children()}
    assert list(groups) == ["maps (2)", "maps"]  # the newest run on top, numbered as its folder name was taken
    expected = {
        "maps": (
            "first",
            [f"ORCDRC {d.replace('_', '–')} cm" for d in GSM],
        ),
        "maps (2)": ("second", ["ORCDRC 60–100 cm", "ORCDRC 100–200 cm"]),
    }
    ranges = {}
    for group_name, (run, names) in expected.items():
        layers = [node.layer() for node in groups[group_name].findLayers()]
        # the multi-band map (named after its file, as QGIS names outputs here) below its per-depth maps, hidden
        assert [layer.name() for layer in layers] == [*names, run]
        assert not groups[group_name].findLayer(layers.pop().id()).itemVisibilityChecked()
        folder = tmp_path / run / "maps"
        assert {Path(layer.source()).parent for layer in layers} == {folder}
        ranges[group_name] = shared_value_range(sorted(str(p) for p in folder.glob("*.tif")))
        for layer in layers:
            renderer = layer.renderer()
            assert isinstance(renderer, QgsSingleBandPseudoColorRenderer), layer.name()
            assert (renderer.classificationMin(), renderer.classificationMax()) == pytest.approx(ranges[group_name])
    assert ranges["maps"] != pytest.approx(ranges["maps (2)"])  # one shared group would have mixed two ranges
