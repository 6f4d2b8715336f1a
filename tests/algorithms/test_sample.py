"""socdepth:sample (and socdepth:train's up-front checks) fail before writing anything, on the Edgeroi raster."""

from __future__ import annotations

from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
COVARIATES = REPO / "sample_data" / "edgeroi" / "covariates_250m.tif"
#: one site inside the raster (EPSG:28355, x 741400-788900, y 6646100-6678100) and one far outside it
INSIDE, OUTSIDE = (760000.0, 6660000.0), (100000.0, 100000.0)


def points_layer(coordinates: list[tuple[float, float]], fields: str = ""):
    """Memory points in the raster's CRS, with fields such as 'ORCDRC_0_5:double' all set to 10."""
    from qgis.core import QgsFeature, QgsGeometry, QgsPointXY, QgsVectorLayer

    layer = QgsVectorLayer(f"Point?crs=EPSG:28355{fields}", "sites", "memory")
    assert layer.isValid()
    features = []
    for x, y in coordinates:
        feature = QgsFeature(layer.fields())
        feature.setGeometry(QgsGeometry.fromPointXY(QgsPointXY(x, y)))
        feature.setAttributes([10.0] * layer.fields().count())
        features.append(feature)
    layer.dataProvider().addFeatures(features)
    return layer


def test_points_all_off_the_raster_fail_without_leaving_an_output_file(qgis_processing, covariates, tmp_path):
    from qgis.core import QgsProcessingException

    output, rejected = tmp_path / "sampled.gpkg", tmp_path / "skipped.gpkg"
    with pytest.raises(QgsProcessingException, match=r"None of the 2 points could be sampled \(.*outside"):
        qgis_processing.run(
            "socdepth:sample",
            {
                "INPUT": points_layer([OUTSIDE, (OUTSIDE[0] + 500, OUTSIDE[1])]),
                "COVARIATES": [covariates],
                "OUTPUT": str(output),
                "REJECTED": str(rejected),
            },
        )
    assert not output.exists()
    assert not rejected.exists()


def test_points_partly_off_the_raster_are_sampled_and_the_rest_listed(qgis_processing, covariates, tmp_path):
    from qgis.core import QgsVectorLayer

    output, rejected = tmp_path / "sampled.gpkg", tmp_path / "skipped.gpkg"
    qgis_processing.run(
        "socdepth:sample",
        {
            "INPUT": points_layer([OUTSIDE, INSIDE]),
            "COVARIATES": [covariates],
            "OUTPUT": str(output),
            "REJECTED": str(rejected),
        },
    )
    sampled = QgsVectorLayer(str(output), "sampled", "ogr")
    (feature,) = sampled.getFeatures()
    assert feature.geometry().asPoint().x() == INSIDE[0]
    assert len([name for name in sampled.fields().names() if name.startswith("cov_")]) == 6
    (skip,) = QgsVectorLayer(str(rejected), "skipped", "ogr").getFeatures()
    assert "outside" in skip["reason"]


@pytest.mark.parametrize("report", [True, False])
def test_train_checks_for_matplotlib_before_training_when_a_report_is_asked_for(
    qgis_processing, covariates, tmp_path, monkeypatch, report
):
    """socdepth:train lives in test_train_predict.py; this check needs only a site on the raster."""
    from qgis.core import QgsProcessingException

    from soc_depth_mapper.core import dependencies, training

    monkeypatch.setattr(dependencies, "missing_modules", lambda modules: [m for m in modules if m == "matplotlib"])
    started = []

    def fake_train(*args, **kwargs):
        started.append(True)
        raise ValueError("training started")

    monkeypatch.setattr(training, "train", fake_train)
    model = tmp_path / "model.socmodel"
    parameters = {
        "INPUT": points_layer([INSIDE], "&field=ORCDRC_0_5:double&field=ORCDRC_5_15:double"),
        "TARGET_FIELDS": ["ORCDRC_0_5", "ORCDRC_5_15"],
        "COVARIATES": [covariates],
        "VALIDATION": 0,
        "OUTPUT_MODEL": str(model),
        "OUTPUT_METRICS": "memory:",
    }
    if report:
        parameters["OUTPUT_REPORT"] = str(tmp_path / "report.html")
    with pytest.raises(QgsProcessingException) as raised:
        qgis_processing.run("socdepth:train", parameters)
    if report:
        message = str(raised.value)
        assert "Missing Python package(s): matplotlib." in message
        assert "sudo apt install python3-matplotlib" in message
        assert "python3 -m pip install matplotlib" in message
        assert "leave 'Report' empty" in message
        assert started == []
        assert not (tmp_path / "report.html").exists()
    else:  # without a report matplotlib is not needed: training starts
        assert str(raised.value) == "training started"
        assert started == [True]
    assert not model.exists()
