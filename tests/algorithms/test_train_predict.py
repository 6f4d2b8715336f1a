"""socdepth:sample, socdepth:train and socdepth:predict through QGIS Processing on real and synthetic data."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import rasterio

REPO = Path(__file__).resolve().parents[2]
DATA = REPO / "sample_data" / "edgeroi"
GSM = ["0_5", "5_15", "15_30", "30_60", "60_100", "100_200"]


def train_params(harmonised, covariates, tmp_path, **extra):
    return {
        "INPUT": harmonised,
        "TARGET_FIELDS": [f"ORCDRC_{d}" for d in GSM],
        "COVARIATES": [covariates],
        "CATEGORICAL": "cov_PMTGEO5",
        "MODEL": 0,
        "VALIDATION": 2,
        "FOLDS": 5,
        "N_TREES": 60,
        "OUTPUT_MODEL": str(tmp_path / "model.socmodel"),
        "OUTPUT_METRICS": "memory:",
        **extra,
    }


def test_sample_matches_raster_values_and_reports_skips(qgis_processing, harmonised, covariates, context_and_feedback):
    context, feedback = context_and_feedback
    result = qgis_processing.run(
        "socdepth:sample",
        {"INPUT": harmonised, "COVARIATES": [covariates], "OUTPUT": "memory:", "REJECTED": "memory:"},
        context=context,
        feedback=feedback,
    )
    sampled, rejected = result["OUTPUT"], result["REJECTED"]
    assert [f for f in sampled.fields().names() if f.startswith("cov_")] == [
        "cov_DEMSRT5",
        "cov_TWISRT5",
        "cov_PMTGEO5",
        "cov_EV1MOD5",
        "cov_EV2MOD5",
        "cov_EV3MOD5",
    ]
    # 325 profiles with SOC; two lie just outside the 250 m grid (sample_data/README.md)
    assert sampled.featureCount() + rejected.featureCount() == 325
    assert rejected.featureCount() == 2
    assert all("outside" in f["reason"] for f in rejected.getFeatures())
    # independent oracle: the value of the cell that contains each point, read with rasterio
    with rasterio.open(DATA / "covariates_250m.tif") as dataset:
        grid = dataset.read(1)
        for feature in list(sampled.getFeatures())[:50]:
            point = feature.geometry().asPoint()
            row, col = dataset.index(point.x(), point.y())
            assert feature["cov_DEMSRT5"] == pytest.approx(float(grid[row, col]))
    assert any("outside" in e for e in feedback.warnings)
    assert feedback.errors == []  # two sites just off the raster are a warning, not an error
    # the summary counts skips by cause (the coordinates in each message would make every one its own reason)
    assert "Skipped 2 points in all — outside the rasters: 2" in feedback.warnings


def test_train_random_forest_on_edgeroi_writes_model_metrics_predictions_report(
    qgis_processing, harmonised, covariates, tmp_path
):
    from soc_depth_mapper.core.bundle import SocModel

    result = qgis_processing.run(
        "socdepth:train",
        train_params(
            harmonised, covariates, tmp_path, OUTPUT_PREDICTIONS="memory:", OUTPUT_REPORT=str(tmp_path / "report.html")
        ),
    )
    rows = [f.attributes() for f in result["OUTPUT_METRICS"].getFeatures()]
    depths = [r[1] for r in rows]
    assert depths == ["0-5", "5-15", "15-30", "30-60", "60-100", "100-200", "all"]
    # the fields of the first release first, then confidence bounds, prediction-interval quality and the change
    # against compared models
    assert result["OUTPUT_METRICS"].fields().names() == [
        "model", "depth", "group", "n", "r", "r2", "rmse", "mae", "me", "ccc", "kge",
        "rmse_lo", "rmse_hi", "r2_lo", "r2_hi", "ccc_lo", "ccc_hi", "me_lo", "me_hi", "picp", "pi_width",
        "rmse_change_pct", "rmse_change_lo", "rmse_change_hi",
    ]  # fmt: skip
    for feature in result["OUTPUT_METRICS"].getFeatures():
        for name in ("rmse", "r2", "ccc", "me"):
            assert feature[f"{name}_lo"] <= feature[name] <= feature[f"{name}_hi"]
        assert feature["rmse_hi"] - feature["rmse_lo"] > 0.01 * feature["rmse"]
        assert 0.6 < feature["picp"] <= 1 and feature["pi_width"] > 0  # the forest's out-of-fold 90 % intervals
    overall = rows[-1]
    n, r, r2, rmse = overall[3:7]
    predictions = result["OUTPUT_PREDICTIONS"]
    assert predictions.featureCount() == n
    # recompute RMSE and R from the out-of-fold predictions: the table and the points agree
    observed = np.array([f["observed"] for f in predictions.getFeatures()])
    predicted = np.array([f["predicted"] for f in predictions.getFeatures()])
    assert rmse == pytest.approx(np.sqrt(np.mean((predicted - observed) ** 2)))
    assert r == pytest.approx(np.corrcoef(observed, predicted)[0, 1])
    assert 0.2 < r2 < 0.9  # SOC in Edgeroi is predictable but far from perfectly
    folds = {f["fold"] for f in predictions.getFeatures()}
    assert folds == {1, 2, 3, 4, 5}
    bundle = SocModel.load(str(tmp_path / "model.socmodel"))
    assert bundle.band_names[2] == "cov_PMTGEO5" and bundle.card.bands.categorical == (2,)
    assert bundle.card.grid.res == (250.0, 250.0)
    report = (tmp_path / "report.html").read_text()
    for section in (
        "Data",
        "Settings",
        "Validation",
        "Confidence intervals",
        "Observed vs predicted",
        "Residuals in space",
    ):
        assert section in report
    assert "data:image/png;base64," in report and "http" not in report.split("<body>")[1].split("Library")[0]
    assert "<th>RMSE (g/kg)</th>" in report  # the unit of the map legends
    # the covariate importance: the card's numbers under the bands' names, as the Categorical parameter takes them
    for name, value in zip(bundle.band_names, bundle.card.aoa_reference["importance"]):
        assert f"<tr><td>{name}</td><td>{value:.4g}</td></tr>" in report


def test_train_is_reproducible_with_the_same_seed(qgis_processing, harmonised, covariates, tmp_path):
    first = qgis_processing.run("socdepth:train", train_params(harmonised, covariates, tmp_path / "a", SEED=7))
    second = qgis_processing.run("socdepth:train", train_params(harmonised, covariates, tmp_path / "b", SEED=7))
    metrics = [[f.attributes() for f in r["OUTPUT_METRICS"].getFeatures()] for r in (first, second)]
    assert metrics[0] == metrics[1]
    # the model files are identical byte for byte: no timing or time stamp in them
    assert Path(first["OUTPUT_MODEL"]).read_bytes() == Path(second["OUTPUT_MODEL"]).read_bytes()


def test_training_on_a_local_cluster_writes_the_same_model_file(qgis_processing, harmonised, covariates, tmp_path):
    runs = [
        qgis_processing.run(
            "socdepth:train", train_params(harmonised, covariates, tmp_path / name, N_TREES=20, CLUSTER=cluster)
        )
        for name, cluster in (("in_qgis", ""), ("cluster", "local:2"))
    ]
    assert Path(runs[0]["OUTPUT_MODEL"]).read_bytes() == Path(runs[1]["OUTPUT_MODEL"]).read_bytes()


def test_a_wrong_cluster_is_refused_before_training(qgis_processing, harmonised, covariates, tmp_path):
    from qgis.core import QgsProcessingException

    with pytest.raises(QgsProcessingException, match="Cluster 'tcp://head' is not understood.*local:N"):
        qgis_processing.run("socdepth:train", train_params(harmonised, covariates, tmp_path, CLUSTER="tcp://head"))
    assert not (tmp_path / "model.socmodel").exists()


def test_points_in_another_crs_are_transformed(qgis_processing, harmonised, covariates, tmp_path):
    reprojected = qgis_processing.run(
        "native:reprojectlayer", {"INPUT": harmonised, "TARGET_CRS": "EPSG:4326", "OUTPUT": "memory:"}
    )["OUTPUT"]
    a = qgis_processing.run("socdepth:train", train_params(harmonised, covariates, tmp_path / "a", VALIDATION=1))
    b = qgis_processing.run("socdepth:train", train_params(reprojected, covariates, tmp_path / "b", VALIDATION=1))
    rows = [[f.attributes() for f in r["OUTPUT_METRICS"].getFeatures()] for r in (a, b)]
    assert [row[3] for row in rows[0]] == [row[3] for row in rows[1]]  # the same sites found their cells
    np.testing.assert_allclose([row[6] for row in rows[0]], [row[6] for row in rows[1]], rtol=1e-9)


def test_bad_targets_and_empty_input_give_documented_errors(qgis_processing, harmonised, covariates, tmp_path):
    from qgis.core import QgsProcessingException

    with pytest.raises(QgsProcessingException, match="does not name a depth interval"):
        qgis_processing.run(
            "socdepth:train", train_params(harmonised, covariates, tmp_path, TARGET_FIELDS=["ORCDRC_rmse"])
        )
    empty = qgis_processing.run(
        "native:extractbyexpression", {"INPUT": harmonised, "EXPRESSION": "false", "OUTPUT": "memory:"}
    )["OUTPUT"]
    with pytest.raises(QgsProcessingException, match="No site can be used"):
        qgis_processing.run("socdepth:train", train_params(empty, covariates, tmp_path))
    assert not (tmp_path / "model.socmodel").exists()


def test_string_targets_count_as_missing_and_are_reported(qgis_processing, tmp_path, covariates, context_and_feedback):
    from qgis.core import QgsVectorLayer

    rng = np.random.default_rng(0)
    lines = ["id,x,y,SOC_0_10,SOC_10_30"]
    for i in range(40):
        x, y = 741400 + 250 * rng.uniform(5, 180), 6678100 - 250 * rng.uniform(5, 120)
        lines.append(f"{i},{x:.1f},{y:.1f},{'n.d.' if i < 3 else rng.uniform(5, 20):},{rng.uniform(1, 8)}")
    path = tmp_path / "sites.csv"
    path.write_text("\n".join(lines))
    layer = QgsVectorLayer(f"file://{path}?type=csv&xField=x&yField=y&crs=EPSG:28355", "s", "delimitedtext")
    context, feedback = context_and_feedback
    result = qgis_processing.run(
        "socdepth:train",
        {
            "INPUT": layer,
            "TARGET_FIELDS": ["SOC_0_10", "SOC_10_30"],
            "COVARIATES": [covariates],
            "MODEL": 0,
            "VALIDATION": 1,
            "FOLDS": 4,
            "N_TREES": 30,
            "OUTPUT_MODEL": str(tmp_path / "m.socmodel"),
            "OUTPUT_METRICS": "memory:",
        },
        context=context,
        feedback=feedback,
    )
    rows = {f["depth"]: f["n"] for f in result["OUTPUT_METRICS"].getFeatures()}
    assert rows == {"0-10": 37, "10-30": 40, "all": 77}
    assert any("3 target values were not numbers" in e for e in feedback.warnings)


def test_cancel_writes_no_model(qgis_processing, harmonised, covariates, tmp_path, context_and_feedback):
    context, feedback = context_and_feedback
    calls = {"n": 0}
    original = feedback.setProgress

    def cancel_after_a_while(value):
        calls["n"] += 1
        if calls["n"] > 3:
            feedback.cancel()
        original(value)

    feedback.setProgress = cancel_after_a_while
    result = qgis_processing.run(
        "socdepth:train", train_params(harmonised, covariates, tmp_path), context=context, feedback=feedback
    )
    assert result == {} or "OUTPUT_MODEL" not in result or not Path(result["OUTPUT_MODEL"]).exists()
    assert not (tmp_path / "model.socmodel").exists()
    assert list(tmp_path.iterdir()) == []


@pytest.fixture(scope="module")
def rf_model(qgis_processing, harmonised, covariates, tmp_path_factory):
    folder = tmp_path_factory.mktemp("rf")
    qgis_processing.run("socdepth:train", train_params(harmonised, covariates, folder))
    return str(folder / "model.socmodel")


def test_predict_random_forest_maps_with_intervals(qgis_processing, rf_model, covariates, tmp_path):
    from soc_depth_mapper.core.bundle import SocModel

    result = qgis_processing.run(
        "socdepth:predict",
        {
            "MODEL": rf_model,
            "COVARIATES": [covariates],
            "UNCERTAINTY": 1,
            "INTERVAL": 80,
            "OUTPUT": str(tmp_path / "soc.tif"),
            "OUTPUT_UNCERTAINTY": str(tmp_path / "pi.tif"),
            "OUTPUT_FOLDER": str(tmp_path / "maps"),
        },
    )
    with rasterio.open(result["OUTPUT"]) as maps, rasterio.open(DATA / "covariates_250m.tif") as cov:
        assert maps.count == 6 and maps.dtypes[0] == "float32" and maps.nodata == -9999
        assert maps.descriptions[0] == "ORCDRC 0-5 cm" and maps.crs == cov.crs and maps.transform == cov.transform
        values = maps.read(1)
        stack = cov.read()
    # oracle: the model applied to the raster's own cells, outside Processing
    bundle = SocModel.load(rf_model)
    expected = bundle.predict_block(np.where(stack == -9999, np.nan, stack).astype(np.float32), [0])[0]
    np.testing.assert_allclose(values, expected, rtol=1e-6)
    with rasterio.open(result["OUTPUT_UNCERTAINTY"]) as intervals:
        lower, upper, width = intervals.read(1), intervals.read(2), intervals.read(3)
    assert np.all(lower <= upper) and np.allclose(width, upper - lower)
    assert sorted(p.name for p in (tmp_path / "maps").iterdir())[0].endswith(".tif")
    assert len(list((tmp_path / "maps").glob("*.tif"))) == 6


def test_predict_subset_extent_and_mismatch_errors(qgis_processing, rf_model, covariates, tmp_path):
    from qgis.core import QgsProcessingException, QgsRasterLayer

    result = qgis_processing.run(
        "socdepth:predict",
        {
            "MODEL": rf_model,
            "COVARIATES": [covariates],
            "DEPTHS": "0-5, 30-60",
            "EXTENT": "750000,760000,6650000,6660000 [EPSG:28355]",
            "OUTPUT": str(tmp_path / "soc.tif"),
        },
    )
    with rasterio.open(result["OUTPUT"]) as maps:
        assert maps.count == 2 and maps.descriptions == ("ORCDRC 0-5 cm", "ORCDRC 30-60 cm")
        assert maps.bounds.left == 749900 and maps.bounds.right == 760150  # snapped outwards to the 250 m grid
    with pytest.raises(QgsProcessingException, match="not in the model"):
        qgis_processing.run(
            "socdepth:predict",
            {"MODEL": rf_model, "COVARIATES": [covariates], "DEPTHS": "0-10", "OUTPUT": str(tmp_path / "x.tif")},
        )
    # five bands where the model needs six
    five = tmp_path / "five.tif"
    with rasterio.open(DATA / "covariates_250m.tif") as src:
        profile = src.profile | {"count": 5}
        with rasterio.open(five, "w", **profile) as dst:
            dst.write(src.read()[:5])
    with pytest.raises(QgsProcessingException, match="trained with 6 covariate bands"):
        qgis_processing.run(
            "socdepth:predict",
            {"MODEL": rf_model, "COVARIATES": [QgsRasterLayer(str(five), "cov")], "OUTPUT": str(tmp_path / "y.tif")},
        )
    assert not (tmp_path / "y.tif").exists()


def test_tampered_model_file_is_refused(qgis_processing, rf_model, covariates, tmp_path):
    from qgis.core import QgsProcessingException

    data = bytearray(Path(rf_model).read_bytes())
    data[len(data) // 2] ^= 0xFF
    tampered = tmp_path / "tampered.socmodel"
    tampered.write_bytes(bytes(data))
    with pytest.raises(QgsProcessingException):
        qgis_processing.run(
            "socdepth:predict", {"MODEL": str(tampered), "COVARIATES": [covariates], "OUTPUT": str(tmp_path / "z.tif")}
        )


def test_transfer_cnn_trains_and_predicts_with_conformal_intervals(qgis_processing, harmonised, covariates, tmp_path):
    """A tiny run: what matters here is the plumbing (patches, fold models, intervals), not accuracy."""
    trained = qgis_processing.run(
        "socdepth:train",
        train_params(harmonised, covariates, tmp_path, MODEL=2, FOLDS=3, PATCH_SIZE=7, EPOCHS=3, PATIENCE=2),
    )
    assert [f["depth"] for f in trained["OUTPUT_METRICS"].getFeatures()][-1] == "all"
    result = qgis_processing.run(
        "socdepth:predict",
        {
            "MODEL": trained["OUTPUT_MODEL"],
            "COVARIATES": [covariates],
            "UNCERTAINTY": 1,
            "DEPTHS": "0-5",
            "EXTENT": "745000,760000,6650000,6665000 [EPSG:28355]",
            "OUTPUT": str(tmp_path / "soc.tif"),
            "OUTPUT_UNCERTAINTY": str(tmp_path / "pi.tif"),
        },
    )
    with rasterio.open(result["OUTPUT"]) as maps, rasterio.open(result["OUTPUT_UNCERTAINTY"]) as pi:
        soc, lower, upper = maps.read(1, masked=True), pi.read(1, masked=True), pi.read(2, masked=True)
    assert soc.count() > 1000
    assert np.all(lower <= soc + 1e-4) and np.all(soc <= upper + 1e-4)


def test_transfer_cnn_freezes_the_convolution_block_by_default(qgis_processing):
    """The Toolbox default must name the core architecture's conv layers, whatever their count."""
    from qgis.core import QgsApplication

    from soc_depth_mapper.core.models.cnn import TransferCNNDepthModel

    train = QgsApplication.processingRegistry().algorithmById("socdepth:train")
    default = train.parameterDefinition("FREEZE_LAYERS").defaultValue()
    assert default == len(TransferCNNDepthModel().conv_channels) == TransferCNNDepthModel()._n_frozen()


def test_a_read_only_metrics_table_fails_the_run_naming_it(
    qgis_processing, harmonised, covariates, tmp_path, small_file_system
):
    from qgis.core import QgsProcessingException

    folder = small_file_system("64k", read_only=True)
    parameters = train_params(
        harmonised, covariates, tmp_path, VALIDATION=1, FOLDS=3, N_TREES=10, OUTPUT_METRICS=str(folder / "m.csv")
    )
    # refused before any training, so no model file is left behind either
    with pytest.raises(QgsProcessingException) as error:
        qgis_processing.run("socdepth:train", parameters)
    assert str(error.value) == (
        f"'Validation metrics' (OUTPUT_METRICS): the folder {folder} cannot be written to. Choose a folder where "
        "you may save files."
    )
    assert list(folder.iterdir()) == [] and not (tmp_path / "model.socmodel").exists()


def test_a_read_only_sampled_layer_fails_the_run_naming_it(qgis_processing, harmonised, covariates, small_file_system):
    from qgis.core import QgsProcessingException

    folder = small_file_system("64k", read_only=True)
    with pytest.raises(QgsProcessingException, match=rf"^'Sampled points' \(OUTPUT\): the folder {folder} cannot "):
        qgis_processing.run(
            "socdepth:sample", {"INPUT": harmonised, "COVARIATES": [covariates], "OUTPUT": str(folder / "s.csv")}
        )
    assert list(folder.iterdir()) == []


def test_an_output_that_is_an_input_is_refused_and_the_input_kept(qgis_processing, harmonised, covariates, tmp_path):
    from qgis.core import QgsProcessingException

    points = tmp_path / "points.gpkg"
    shutil.copy(harmonised, points)
    before = points.read_bytes()
    with pytest.raises(QgsProcessingException) as error:
        parameters = {"INPUT": str(points), "COVARIATES": [covariates], "OUTPUT": str(points)}
        qgis_processing.run("socdepth:sample", parameters)
    assert str(error.value) == (
        f"'Sampled points' (OUTPUT) is {points}, which is also an input of this run; the input would be "
        "overwritten. Choose another file name."
    )
    parameters = train_params(str(points), covariates, tmp_path, VALIDATION=1, FOLDS=3, OUTPUT_PREDICTIONS=str(points))
    with pytest.raises(QgsProcessingException, match=r"^'Out-of-fold predictions' \(OUTPUT_PREDICTIONS\) is "):
        qgis_processing.run("socdepth:train", parameters)
    assert points.read_bytes() == before and not (tmp_path / "model.socmodel").exists()


def test_a_table_in_a_missing_folder_is_refused_before_training(qgis_processing, harmonised, covariates, tmp_path):
    from qgis.core import QgsProcessingException

    missing = tmp_path / "no such folder"
    parameters = train_params(harmonised, covariates, tmp_path, OUTPUT_METRICS=str(missing / "metrics.gpkg"))
    with pytest.raises(QgsProcessingException) as error:
        qgis_processing.run("socdepth:train", parameters)
    assert str(error.value) == (
        f"'Validation metrics' (OUTPUT_METRICS): the folder {missing} does not exist. Create it or choose another "
        "folder."
    )
    assert not (tmp_path / "model.socmodel").exists()


def test_infinite_covariate_values_are_nodata_everywhere_and_named(
    qgis_processing, harmonised, tmp_path, context_and_feedback
):
    """A covariate raster without a nodata value holding ±inf at three sites and at one other cell."""
    from qgis.core import QgsRasterLayer, QgsVectorLayer

    sites = [f.geometry().asPoint() for f in QgsVectorLayer(harmonised, "h", "ogr").getFeatures()][:3]
    infinite = tmp_path / "cov.tif"
    with rasterio.open(DATA / "covariates_250m.tif") as source:
        profile, values, descriptions = source.profile | {"nodata": None}, source.read(), source.descriptions
        cells = [source.index(point.x(), point.y()) for point in sites]
    for row, col in cells:
        values[3, row, col] = np.inf
    values[0, 0, 0] = -np.inf
    with rasterio.open(infinite, "w", **profile) as target:
        target.write(values)
        target.descriptions = descriptions
    covariates = QgsRasterLayer(str(infinite), "cov")
    context, feedback = context_and_feedback

    sampled = qgis_processing.run(
        "socdepth:sample",
        {"INPUT": harmonised, "COVARIATES": [covariates], "OUTPUT": "memory:", "REJECTED": "memory:"},
        context=context,
        feedback=feedback,
    )
    band = "cov_EV1MOD5"
    assert all(np.isfinite(f[band]) for f in sampled["OUTPUT"].getFeatures())
    reasons = [f["reason"] for f in sampled["REJECTED"].getFeatures()]
    assert reasons.count(f"an infinite value in band(s) {band}") == 3
    warning = (
        "Covariate band {} holds ±infinite values at {:,} {}; they were treated as nodata. Give the raster a nodata "
        "value, or correct those cells."
    )
    assert warning.format(band, 3, "points") in feedback.warnings

    feedback.warnings.clear()
    trained = qgis_processing.run(
        "socdepth:train",
        train_params(harmonised, covariates, tmp_path, VALIDATION=0, N_TREES=10),
        context=context,
        feedback=feedback,
    )
    assert warning.format(band, 3, "sites") in feedback.warnings

    feedback.warnings.clear()  # the same points as a source: their infinite values are named as the local ones
    qgis_processing.run(
        "socdepth:train",
        train_params(harmonised, covariates, tmp_path / "transfer", VALIDATION=0, N_TREES=10, TRANSFER=1,
                     SOURCE_INPUT=harmonised, SOURCE_WEIGHT=1.0),
        context=context,
        feedback=feedback,
    )  # fmt: skip
    assert warning.format(band, 3, "source sites") in feedback.warnings

    feedback.warnings.clear()
    qgis_processing.run(
        "socdepth:predict",
        {"MODEL": trained["OUTPUT_MODEL"], "COVARIATES": [covariates], "OUTPUT": str(tmp_path / "soc.tif")},
        context=context,
        feedback=feedback,
    )
    for name, count in (("cov_DEMSRT5", 1), (band, 3)):
        assert warning.format(name, count, "cells of the map") in feedback.warnings
    with rasterio.open(tmp_path / "soc.tif") as maps:
        predicted = maps.read(1, masked=True)
    assert all(predicted.mask[row, col] for row, col in [(0, 0), *cells]) and predicted.count() == predicted.size - 4


def test_compare_validates_a_cnn_on_the_same_folds_and_gives_the_paired_change(
    qgis_processing, harmonised, covariates, tmp_path, context_and_feedback
):
    """The CNN's rows join the metrics table with the forest's RMSE relative to the CNN's; on the same pairs the
    point estimate is the ratio of the two RMSEs of the table, and its interval holds it."""
    context, feedback = context_and_feedback
    result = qgis_processing.run(
        "socdepth:train",
        train_params(harmonised, covariates, tmp_path, FOLDS=3, COMPARE=[1], EPOCHS=3,
                     OUTPUT_REPORT=str(tmp_path / "report.html")),
        context=context, feedback=feedback,
    )  # fmt: skip
    rows = {(f["model"], f["depth"]): f for f in result["OUTPUT_METRICS"].getFeatures()}
    assert {model for model, _depth in rows} == {"Random forest", "CNN"}
    for depth in [*(f"{a}-{b}" for a, b in zip((0, 5, 15, 30, 60, 100), (5, 15, 30, 60, 100, 200))), "all"]:
        forest, cnn = rows["Random forest", depth], rows["CNN", depth]
        assert forest["rmse_change_pct"] is None or forest["rmse_change_pct"].isNull()  # the trained model's own
        assert forest["n"] == cnn["n"]  # the same site-depth pairs
        assert cnn["rmse_change_pct"] == pytest.approx(100 * (forest["rmse"] / cnn["rmse"] - 1))
        assert cnn["rmse_change_lo"] < cnn["rmse_change_pct"] < cnn["rmse_change_hi"]
    overall = [info for info in feedback.infos if info.startswith("On the same folds: Random forest RMSE")]
    assert len(overall) == 1 and "Random forest against CNN: " in overall[0]
    report = (tmp_path / "report.html").read_text()
    assert "Compared with other models on the same folds" in report and "Random forest against CNN" in report


def test_compare_without_validation_is_refused_before_any_work(qgis_processing, harmonised, covariates, tmp_path):
    from qgis.core import QgsProcessingException

    with pytest.raises(QgsProcessingException, match="^Comparing models needs validation"):
        qgis_processing.run("socdepth:train", train_params(harmonised, covariates, tmp_path, VALIDATION=0, COMPARE=[1]))
    assert not (tmp_path / "model.socmodel").exists()
