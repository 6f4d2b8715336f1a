"""A model kind added through the core registry alone is offered, trained and written by socdepth:train."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import rasterio

DATA = Path(__file__).resolve().parents[2] / "sample_data" / "edgeroi"
GSM = ["0_5", "5_15", "15_30", "30_60", "60_100", "100_200"]


def site_means(harmonised: str) -> np.ndarray:
    """Oracle: the mean of each depth's field over the sites on the covariate grid, read with QGIS and rasterio."""
    from qgis.core import QgsVectorLayer

    layer = QgsVectorLayer(harmonised, "h", "ogr")
    rows = []
    with rasterio.open(DATA / "covariates_250m.tif") as dataset:
        values = dataset.read(masked=True)
        for feature in layer.getFeatures():
            point = feature.geometry().asPoint()
            row, col = dataset.index(point.x(), point.y())
            inside = 0 <= row < dataset.height and 0 <= col < dataset.width
            if inside and not values[:, row, col].mask.any():
                values_of = [feature[f"ORCDRC_{d}"] for d in GSM]  # a missing depth is a NULL QVariant
                rows.append([float(v) if isinstance(v, (int, float)) else np.nan for v in values_of])
    return np.nanmean(np.array(rows, dtype=float), axis=0)


def test_a_registered_kind_is_a_model_option_and_trains_with_its_own_setting(
    qgis_processing, toy_kind, harmonised, tmp_path
):
    from qgis.core import QgsApplication, QgsRasterLayer

    from soc_depth_mapper.core.bundle import SocModel
    from soc_depth_mapper.core.registry import entry

    train = QgsApplication.processingRegistry().createAlgorithmById("socdepth:train")
    options = train.parameterDefinition("MODEL").options()
    assert options[:2] == ["Random forest", "CNN (depth as input)"] and len(options) == 6
    assert options[5] == entry(toy_kind).option
    assert train.parameterDefinition("TOY_OFFSET").defaultValue() == 0.0

    covariates = QgsRasterLayer(str(DATA / "covariates_250m.tif"), "cov")
    qgis_processing.run(
        "socdepth:train",
        {
            "INPUT": harmonised,
            "TARGET_FIELDS": [f"ORCDRC_{d}" for d in GSM],
            "COVARIATES": [covariates],
            "MODEL": 5,
            "TOY_OFFSET": 2.5,
            "VALIDATION": 1,
            "FOLDS": 3,
            "OUTPUT_MODEL": str(tmp_path / "toy.socmodel"),
        },
    )
    bundle = SocModel.load(str(tmp_path / "toy.socmodel"))
    assert bundle.kind == toy_kind
    block = np.ones((6, 1, 1), dtype=np.float32)
    np.testing.assert_allclose(bundle.predict_block(block, range(6))[:, 0, 0], site_means(harmonised) + 2.5, rtol=1e-5)


def test_without_the_registration_the_train_dialog_has_the_five_built_in_kinds(qgis_processing):
    from qgis.core import QgsApplication

    train = QgsApplication.processingRegistry().createAlgorithmById("socdepth:train")
    assert len(train.parameterDefinition("MODEL").options()) == 5
    assert train.parameterDefinition("TOY_OFFSET") is None
    with pytest.raises(ValueError, match="Unknown model kind 'toy_mean'"):
        from soc_depth_mapper.core.registry import entry

        entry("toy_mean")
