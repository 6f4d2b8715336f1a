"""Headless QGIS with Processing and this plugin's provider, once per test session."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

EDGEROI = Path(__file__).resolve().parents[2] / "sample_data" / "edgeroi"

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")


@pytest.fixture(scope="session")
def qgis_processing():
    """Returns the `processing` module, ready to run `socdepth:*` algorithms."""
    from qgis.core import QgsApplication

    app = QgsApplication([], False)
    app.initQgis()
    import processing
    from processing.core.Processing import Processing

    Processing.initialize()
    import soc_depth_mapper

    # Load the plugin as QGIS does under qgis_process: no iface.
    plugin = soc_depth_mapper.classFactory(None)
    plugin.initProcessing()
    yield processing
    plugin.unload()


@pytest.fixture(scope="session")
def harmonised(qgis_processing, tmp_path_factory) -> str:
    """The real Edgeroi ORCDRC profiles harmonised to the six GlobalSoilMap depths (a GeoPackage path)."""
    from qgis.core import QgsVectorLayer

    out = tmp_path_factory.mktemp("harmonised") / "harmonised.gpkg"
    layer = QgsVectorLayer(
        f"file://{EDGEROI / 'horizons.csv'}?type=csv&xField=x&yField=y&crs=EPSG:28355&detectTypes=yes",
        "h",
        "delimitedtext",
    )
    qgis_processing.run(
        "socdepth:harmonise",
        {
            "INPUT": layer,
            "PROFILE_FIELD": "SOURCEID",
            "TOP_FIELD": "top",
            "BOTTOM_FIELD": "bottom",
            "VALUE_FIELDS": ["ORCDRC"],
            "OUTPUT": str(out),
        },
    )
    return str(out)


@pytest.fixture(scope="session")
def covariates(qgis_processing):
    """The real Edgeroi 250 m covariate stack as a raster layer named 'cov' (bands cov_DEMSRT5 …)."""
    from qgis.core import QgsRasterLayer

    layer = QgsRasterLayer(str(EDGEROI / "covariates_250m.tif"), "cov")
    assert layer.isValid() and layer.crs().authid() == "EPSG:28355"
    return layer


@pytest.fixture()
def context_and_feedback(qgis_processing):
    """A fresh context and a feedback that records what the algorithm told the user."""
    from qgis.core import QgsProcessingContext, QgsProcessingFeedback, QgsProject

    class RecordingFeedback(QgsProcessingFeedback):
        def __init__(self):
            super().__init__()
            self.errors: list[str] = []
            self.warnings: list[str] = []
            self.infos: list[str] = []

        def reportError(self, error, fatalError=False):  # noqa: N802, N803 - QGIS API
            self.errors.append(error)

        def pushWarning(self, warning):  # noqa: N802 - QGIS API
            self.warnings.append(warning)

        def pushInfo(self, info):  # noqa: N802 - QGIS API
            self.infos.append(info)

    context = QgsProcessingContext()
    context.setProject(QgsProject.instance())
    return context, RecordingFeedback()
