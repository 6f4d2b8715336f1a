"""The area of applicability through QGIS Processing: train with validation on the real Edgeroi data, then predict
the DI / AOA raster, the local point density and maps masked outside the AOA."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import rasterio

DATA = Path(__file__).resolve().parents[2] / "sample_data" / "edgeroi"
COVARIATES = DATA / "covariates_250m.tif"
GSM = ["0_5", "5_15", "15_30", "30_60", "60_100", "100_200"]
BANDS = ["DEMSRT5", "TWISRT5", "PMTGEO5", "EV1MOD5", "EV2MOD5", "EV3MOD5"]


def covariate_layer():
    from qgis.core import QgsRasterLayer

    layer = QgsRasterLayer(str(COVARIATES), "cov")
    assert layer.isValid()
    return layer


def train(processing, harmonised, folder: Path, validation: int, feedback=None) -> str:
    return processing.run(
        "socdepth:train",
        {
            "INPUT": harmonised,
            "TARGET_FIELDS": [f"ORCDRC_{d}" for d in GSM],
            "COVARIATES": [covariate_layer()],
            "CATEGORICAL": "cov_PMTGEO5",
            "MODEL": 0,
            "VALIDATION": validation,
            "FOLDS": 5,
            "N_TREES": 30,
            "OUTPUT_MODEL": str(folder / "model.socmodel"),
        },
        feedback=feedback,
    )["OUTPUT_MODEL"]


@pytest.fixture(scope="module")
def validated_model(qgis_processing, harmonised, tmp_path_factory) -> str:
    """A forest trained with spatial validation; its log names the AOA threshold stored in the model file."""
    from qgis.core import QgsProcessingFeedback

    from soc_depth_mapper.core.bundle import SocModel

    class Recording(QgsProcessingFeedback):
        def __init__(self):
            super().__init__()
            self.infos: list[str] = []

        def pushInfo(self, info):  # noqa: N802 - QGIS API
            self.infos.append(info)

    feedback = Recording()
    model = train(qgis_processing, harmonised, tmp_path_factory.mktemp("aoa_model"), 2, feedback)
    reference = SocModel.load(model).card.aoa_reference
    logged = [info for info in feedback.infos if info.startswith("Area of applicability: DI threshold")]
    assert logged == [
        f"Area of applicability: DI threshold {reference['threshold']:.4g}; band weights (permutation importance): "
        + ", ".join(f"cov_{b} {w:.3g}" for b, w in zip(BANDS, reference["importance"]))
    ]
    return model


def read(path: str) -> np.ndarray:
    with rasterio.open(path) as dataset:
        values = dataset.read().astype(np.float64)
        return np.where(values == dataset.nodata, np.nan, values)


def brute_force_di(reference: dict, cells: np.ndarray) -> np.ndarray:
    """DI of (N, B) cells from the card's reference alone: dummies, scaling, weights and all distances by hand."""
    levels = dict(zip(reference["categorical"], reference["levels"]))
    columns = []
    for band in range(cells.shape[1]):
        if band in levels:
            columns += [(cells[:, band] == level).astype(float) for level in levels[band]]
        else:
            columns.append(cells[:, band])
    points = (np.array(columns).T - reference["centre"]) / reference["scale"] * reference["weights"]
    sites = np.array(reference["sites"])
    nearest = np.array([np.sqrt(((sites - point) ** 2).sum(axis=1)).min() for point in points])
    return nearest / reference["mean_distance"]


def test_predict_writes_the_area_of_applicability_and_masks_the_maps(
    qgis_processing, validated_model, tmp_path, context_and_feedback
):
    from soc_depth_mapper.core.bundle import SocModel

    context, feedback = context_and_feedback
    params = {"MODEL": validated_model, "COVARIATES": [covariate_layer()], "DEPTHS": "0-5, 30-60"}
    plain = qgis_processing.run("socdepth:predict", {**params, "OUTPUT": str(tmp_path / "plain.tif")})
    result = qgis_processing.run(
        "socdepth:predict",
        {
            **params,
            "MASK_OUTSIDE_AOA": True,
            "OUTPUT": str(tmp_path / "masked.tif"),
            "OUTPUT_AOA": str(tmp_path / "aoa.tif"),
            "OUTPUT_LPD": str(tmp_path / "lpd.tif"),
        },
        context=context,
        feedback=feedback,
    )
    di, inside = read(result["OUTPUT_AOA"])
    with rasterio.open(result["OUTPUT_AOA"]) as dataset:
        threshold = float(dataset.tags()["AOA_THRESHOLD"])
    reference = SocModel.load(validated_model).card.aoa_reference
    assert threshold == reference["threshold"]
    maps, masked = read(plain["OUTPUT"]), read(result["OUTPUT"])
    predicted = np.isfinite(maps).all(axis=0)
    np.testing.assert_array_equal(np.isfinite(di), predicted)  # a DI wherever there is a map, nowhere else
    assert (di[predicted] >= 0).all()
    np.testing.assert_array_equal(inside[predicted], di[predicted] <= np.float32(threshold))
    assert 0.5 < inside[predicted].mean() < 1  # the sites cover most of Edgeroi, not all of it
    with rasterio.open(COVARIATES) as dataset:
        covariates = dataset.read().astype(np.float64)
    np.testing.assert_allclose(di[predicted], brute_force_di(reference, covariates[:, predicted].T), rtol=1e-5)
    # inside the AOA the maps are the unmasked ones; outside they are nodata
    np.testing.assert_array_equal(masked[:, inside == 1], maps[:, inside == 1])
    assert np.isnan(masked[:, inside == 0]).all()
    lpd = read(result["OUTPUT_LPD"])[0]
    assert (lpd[inside == 0] == 0).all() and (lpd[inside == 1] >= 0).all() and lpd[inside == 1].max() > 1
    n_inside, n_cells = int((inside == 1).sum()), int(predicted.sum())
    assert any(
        f"Area of applicability: {n_inside} of {n_cells} predicted pixels ({100 * n_inside / n_cells:.1f} %)" in info
        for info in feedback.infos
    )
    assert any("outside the area of applicability" in w and "set to nodata" in w for w in feedback.warnings)


def test_the_training_sites_cells_have_di_zero(qgis_processing, validated_model, tmp_path):
    """Oracle: the raster cells that hold a training site are that site's covariates exactly."""
    from soc_depth_mapper.core.bundle import SocModel

    result = qgis_processing.run(
        "socdepth:predict",
        {
            "MODEL": validated_model,
            "COVARIATES": [covariate_layer()],
            "OUTPUT": str(tmp_path / "soc.tif"),
            "OUTPUT_AOA": str(tmp_path / "aoa.tif"),
        },
    )
    di = read(result["OUTPUT_AOA"])[0]
    reference = SocModel.load(validated_model).card.aoa_reference
    with rasterio.open(COVARIATES) as dataset:
        covariates = dataset.read().astype(np.float64)
    cells = brute_force_di(reference, covariates.reshape(len(covariates), -1).T).reshape(di.shape) == 0
    assert cells.sum() > 100  # Edgeroi's sites: most in cells of their own
    assert (di[cells] == 0).all()


def test_a_model_without_validation_refuses_the_aoa_and_writes_nothing(qgis_processing, harmonised, tmp_path):
    from qgis.core import QgsProcessingException

    model = train(qgis_processing, harmonised, tmp_path, validation=0)
    with pytest.raises(QgsProcessingException, match="holds no area of applicability.*Mask maps outside"):
        qgis_processing.run(
            "socdepth:predict",
            {
                "MODEL": model,
                "COVARIATES": [covariate_layer()],
                "OUTPUT": str(tmp_path / "soc.tif"),
                "OUTPUT_AOA": str(tmp_path / "aoa.tif"),
            },
        )
    assert sorted(path.name for path in tmp_path.iterdir()) == ["model.socmodel"]


def test_a_loaded_aoa_layer_is_coloured_around_the_threshold(qgis_processing, validated_model, tmp_path):
    from qgis.core import QgsProject, QgsSingleBandPseudoColorRenderer

    project = QgsProject.instance()
    project.removeAllMapLayers()
    try:
        qgis_processing.runAndLoadResults(
            "socdepth:predict",
            {
                "MODEL": validated_model,
                "COVARIATES": [str(COVARIATES)],
                "OUTPUT": str(tmp_path / "soc.tif"),
                "OUTPUT_AOA": str(tmp_path / "aoa.tif"),
            },
        )
        with rasterio.open(tmp_path / "aoa.tif") as dataset:
            threshold = float(dataset.tags()["AOA_THRESHOLD"])
        (layer,) = [layer for layer in project.mapLayers().values() if layer.source() == str(tmp_path / "aoa.tif")]
        renderer = layer.renderer()
        assert isinstance(renderer, QgsSingleBandPseudoColorRenderer) and renderer.band() == 1
        assert (renderer.classificationMin(), renderer.classificationMax()) == pytest.approx((0.0, 2 * threshold))
    finally:
        project.removeAllMapLayers()
