"""socdepth:train with transfer from a larger data set: the real Edgeroi survey split into a small local set and
the rest as the source library."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import rasterio

DATA = Path(__file__).resolve().parents[2] / "sample_data" / "edgeroi"
GSM = ["0_5", "5_15", "15_30", "30_60", "60_100", "100_200"]
#: one site in LOCAL_EVERY is local, the others are the library
LOCAL_EVERY = 8


@pytest.fixture(scope="module")
def split(qgis_processing, harmonised):
    """(local, source) memory layers: every LOCAL_EVERY-th harmonised profile is local, the rest the source."""

    def extract(expression: str):
        return qgis_processing.run(
            "native:extractbyexpression", {"INPUT": harmonised, "EXPRESSION": expression, "OUTPUT": "memory:"}
        )["OUTPUT"]

    return extract(f'"fid" % {LOCAL_EVERY} = 0'), extract(f'"fid" % {LOCAL_EVERY} <> 0')


def _without_last_band(folder: Path) -> Path:
    """The Edgeroi covariates without their last band, as a new GeoTIFF in `folder`."""
    fewer = folder / "five_bands.tif"
    with rasterio.open(DATA / "covariates_250m.tif") as dataset:
        profile = {**dataset.profile, "count": dataset.count - 1}
        with rasterio.open(fewer, "w", **profile) as out:
            out.write(dataset.read(list(range(1, dataset.count))))
            out.descriptions = dataset.descriptions[:-1]
    return fewer


def _params(local, covariates, tmp_path, **extra) -> dict:
    return {
        "INPUT": local,
        "TARGET_FIELDS": [f"ORCDRC_{d}" for d in GSM],
        "COVARIATES": [covariates],
        "CATEGORICAL": "cov_PMTGEO5",
        "MODEL": 0,
        "VALIDATION": 1,
        "FOLDS": 3,
        "N_TREES": 30,
        "OUTPUT_MODEL": str(tmp_path / "model.socmodel"),
        "OUTPUT_METRICS": "memory:",
        **extra,
    }


def test_train_with_instance_transfer_reports_both_models_on_the_local_sites(
    qgis_processing, split, covariates, tmp_path, context_and_feedback
):
    from soc_depth_mapper.core.bundle import SocModel
    from soc_depth_mapper.core.transfer import WEIGHT_GRID

    local, source = split
    context, feedback = context_and_feedback
    result = qgis_processing.run(
        "socdepth:train",
        _params(local, covariates, tmp_path, TRANSFER=1, SOURCE_INPUT=source, OUTPUT_REPORT=str(tmp_path / "r.html")),
        context=context,
        feedback=feedback,
    )
    rows = [f.attributes() for f in result["OUTPUT_METRICS"].getFeatures()]
    overall = {row[0]: row for row in rows if row[1] == "all"}
    assert set(overall) == {"Random forest (with transfer)", "Random forest (local only)"}
    n_local_values = sum(isinstance(f[f"ORCDRC_{d}"], float) for f in local.getFeatures() for d in GSM)
    # only local sites are scored, by both models (the one local site off the raster aside)
    assert overall["Random forest (with transfer)"][3] == overall["Random forest (local only)"][3]
    assert overall["Random forest (local only)"][3] <= n_local_values
    assert overall["Random forest (local only)"][3] >= n_local_values - len(GSM)
    card = SocModel.load(result["OUTPUT_MODEL"]).card
    record = card.transferred_from
    assert record["strategy"] == "instances" and record["weight"] in WEIGHT_GRID
    assert source.featureCount() - 2 <= record["source"]["sites"] <= source.featureCount()
    assert card.n_sites <= local.featureCount()
    gain_lines = [line for line in feedback.infos if "RMSE local only" in line]
    assert len(gain_lines) == len(GSM) + 1
    local_rmse = overall["Random forest (local only)"][6]
    assert f"RMSE local only {local_rmse:.3f}" in gain_lines[-1]
    assert sum(line.startswith("Fold ") and "source weight" in line for line in feedback.infos) == 3
    report = (tmp_path / "r.html").read_text()
    assert "Gain from transfer" in report and "RMSE with transfer" in report


def test_transfer_on_a_local_cluster_writes_the_same_model_file(qgis_processing, split, covariates, tmp_path):
    local, source = split
    runs = [
        qgis_processing.run(
            "socdepth:train",
            _params(local, covariates, tmp_path / name, TRANSFER=1, SOURCE_INPUT=source, CLUSTER=cluster),
        )
        for name, cluster in (("in_qgis", ""), ("cluster", "local:2"))
    ]
    assert Path(runs[0]["OUTPUT_MODEL"]).read_bytes() == Path(runs[1]["OUTPUT_MODEL"]).read_bytes()


def test_transfer_inputs_that_cannot_work_are_refused_before_training(qgis_processing, split, covariates, tmp_path):
    from qgis.core import QgsProcessingException

    from soc_depth_mapper.core import registry

    local, source = split
    ensemble = {"MODEL": registry.kinds().index("ensemble"), "TRANSFER": 3, "SOURCE_INPUT": source}
    with pytest.raises(QgsProcessingException, match="the ensemble is neither: choose a CNN or the random forest"):
        qgis_processing.run("socdepth:train", _params(local, covariates, tmp_path, **ensemble))
    with pytest.raises(QgsProcessingException, match="needs a 'Source data set'"):
        qgis_processing.run("socdepth:train", _params(local, covariates, tmp_path, TRANSFER=1))
    renamed = qgis_processing.run(
        "native:renametablefield",
        {"INPUT": source, "FIELD": "ORCDRC_0_5", "NEW_NAME": "SOC_0_5", "OUTPUT": "memory:"},
    )["OUTPUT"]
    with pytest.raises(QgsProcessingException, match="lacks the target fields ORCDRC_0_5"):
        qgis_processing.run("socdepth:train", _params(local, covariates, tmp_path, TRANSFER=1, SOURCE_INPUT=renamed))
    # source covariates without the last band: the message of 'Predict SOC maps'
    fewer = _without_last_band(tmp_path)
    with pytest.raises(QgsProcessingException, match="Source covariates: The model was trained with 6 covariate bands"):
        qgis_processing.run(
            "socdepth:train",
            _params(local, covariates, tmp_path, TRANSFER=1, SOURCE_INPUT=source, SOURCE_COVARIATES=[str(fewer)]),
        )
    assert not (tmp_path / "model.socmodel").exists()


@pytest.mark.parametrize("strategy", [2, 3])
def test_forest_representation_transfer_trains_and_maps_with_the_source_forest_inside(
    qgis_processing, split, covariates, tmp_path, context_and_feedback, strategy
):
    """TRANSFER 2 and 3 with the random forest: the model file carries the source forest, and 'Predict SOC maps'
    gives at each site's pixel what the model predicts from that pixel's covariates."""
    from soc_depth_mapper.core.bundle import SocModel
    from soc_depth_mapper.core.models.stacked import SourceStackedDepthModel

    local, source = split
    context, feedback = context_and_feedback
    params = _params(local, covariates, tmp_path, TRANSFER=strategy, SOURCE_INPUT=source, SOURCE_WEIGHT=0.3)
    result = qgis_processing.run("socdepth:train", params, context=context, feedback=feedback)
    bundle = SocModel.load(result["OUTPUT_MODEL"])
    assert isinstance(bundle.model, SourceStackedDepthModel) and bundle.card.kind == "source_stacked_forest"
    record = bundle.card.transferred_from
    assert record["strategy"] == ("representation", "both")[strategy - 2]
    assert record["weight"] == (0.0, 0.3)[strategy - 2]
    assert sum(line.startswith("Fold ") and "source model fitted on" in line for line in feedback.infos) == 3
    rows = [f.attributes() for f in result["OUTPUT_METRICS"].getFeatures() if f.attributes()[1] == "all"]
    assert {row[0] for row in rows} == {"Random forest (with transfer)", "Random forest (local only)"}
    maps = qgis_processing.run(
        "socdepth:predict",
        {
            "MODEL": result["OUTPUT_MODEL"],
            "COVARIATES": [covariates],
            "DEPTHS": "0-5",
            "OUTPUT": str(tmp_path / "m.tif"),
        },
    )
    with rasterio.open(maps["OUTPUT"]) as mapped, rasterio.open(DATA / "covariates_250m.tif") as stack:
        assert mapped.transform == stack.transform
        window = rasterio.windows.Window(40, 40, 3, 2)
        values = stack.read(window=window).astype(np.float32)
        expected = bundle.predict(values.reshape(values.shape[0], -1).T[:, :, None, None])[:, 0]
        np.testing.assert_allclose(mapped.read(1, window=window).ravel(), expected, rtol=1e-5)


def test_the_help_names_the_grid_and_selection_size_the_core_uses(qgis_processing):
    from qgis.core import QgsApplication

    from soc_depth_mapper.core.transfer import NEAREST_PER_SITE, RS_KEEP_SHARE, SELECTIONS, WEIGHT_GRID

    train = QgsApplication.processingRegistry().algorithmById("socdepth:train")
    weight_help = train.parameterDefinition("SOURCE_WEIGHT").help()
    assert ", ".join(f"{w:g}" for w in WEIGHT_GRID[:-1]) + f" and {WEIGHT_GRID[-1]:g}" in weight_help
    selection = train.parameterDefinition("SOURCE_SELECTION")
    assert f"its {NEAREST_PER_SITE} nearest source sites" in selection.help()
    assert RS_KEEP_SHARE == 0.5 and "until half the source is left" in selection.help()
    assert len(selection.options()) == len(SELECTIONS)
    assert train.parameterDefinition("TRANSFER").defaultValue() == 0


def test_without_transfer_a_given_source_is_ignored_with_a_warning(
    qgis_processing, split, covariates, tmp_path, context_and_feedback
):
    local, source = split
    context, feedback = context_and_feedback
    with_source = qgis_processing.run(
        "socdepth:train",
        _params(local, covariates, tmp_path / "a", SOURCE_INPUT=source),
        context=context,
        feedback=feedback,
    )
    plain = qgis_processing.run("socdepth:train", _params(local, covariates, tmp_path / "b"))
    assert any("'Transfer' is None" in warning for warning in feedback.warnings)
    assert Path(with_source["OUTPUT_MODEL"]).read_bytes() == Path(plain["OUTPUT_MODEL"]).read_bytes()
    assert np.array_equal(
        [f.attributes() for f in with_source["OUTPUT_METRICS"].getFeatures()],
        [f.attributes() for f in plain["OUTPUT_METRICS"].getFeatures()],
    )


def test_representation_transfer_fine_tunes_a_cnn_pre_trained_on_the_source(
    qgis_processing, split, covariates, tmp_path, context_and_feedback
):
    from soc_depth_mapper.core.bundle import SocModel

    local, source = split
    context, feedback = context_and_feedback
    result = qgis_processing.run(
        "socdepth:train",
        _params(local, covariates, tmp_path, MODEL=1, EPOCHS=3, TRANSFER=2, SOURCE_INPUT=source, FREEZE_LAYERS=1),
        context=context,
        feedback=feedback,
    )
    record = SocModel.load(result["OUTPUT_MODEL"]).card.transferred_from
    assert record["strategy"] == "representation" and record["freeze_layers"] == 1
    assert record["source_sites_used"] == record["source"]["sites"]
    assert sum("source model fitted on" in line for line in feedback.infos) == 3  # one line per fold
    models = {f["model"] for f in result["OUTPUT_METRICS"].getFeatures()}
    assert models == {"CNN (with transfer)", "CNN (local only)"}


def test_a_pretrained_model_file_is_fine_tuned_on_the_local_sites(
    qgis_processing, split, covariates, tmp_path, context_and_feedback
):
    import hashlib

    from qgis.core import QgsProcessingException

    from soc_depth_mapper.core.bundle import SocModel

    local, source = split
    library = qgis_processing.run(
        "socdepth:train",
        _params(source, covariates, tmp_path / "library", MODEL=1, EPOCHS=3, VALIDATION=0),
    )["OUTPUT_MODEL"]
    context, feedback = context_and_feedback
    result = qgis_processing.run(
        "socdepth:train",
        _params(local, covariates, tmp_path / "local", TRANSFER=2, PRETRAINED_MODEL=library, FREEZE_LAYERS=2),
        context=context,
        feedback=feedback,
    )
    card = SocModel.load(result["OUTPUT_MODEL"]).card
    assert card.kind == "cnn"  # the pre-trained model's kind, not MODEL 0
    record = card.transferred_from["pretrained"]
    assert record["sha256"] == hashlib.sha256(Path(library).read_bytes()).hexdigest()
    assert record["card"]["n_sites"] == SocModel.load(library).card.n_sites
    assert sum("the pre-trained model fine-tuned" in line for line in feedback.infos) == 3
    with pytest.raises(QgsProcessingException, match="choose 'Representation'"):
        qgis_processing.run(
            "socdepth:train", _params(local, covariates, tmp_path, TRANSFER=1, PRETRAINED_MODEL=library)
        )
    with pytest.raises(QgsProcessingException, match="not both"):
        qgis_processing.run(
            "socdepth:train",
            _params(local, covariates, tmp_path, TRANSFER=2, PRETRAINED_MODEL=library, SOURCE_INPUT=source),
        )
    with pytest.raises(QgsProcessingException, match="target transform 'none', this run asks for 'log'"):
        qgis_processing.run(
            "socdepth:train", _params(local, covariates, tmp_path, TRANSFER=2, PRETRAINED_MODEL=library, TRANSFORM=1)
        )
    forest = qgis_processing.run("socdepth:train", _params(source, covariates, tmp_path / "rf", VALIDATION=0))
    with pytest.raises(QgsProcessingException, match="has no network to fine-tune; give a CNN model file, or choose"):
        qgis_processing.run(
            "socdepth:train",
            _params(local, covariates, tmp_path, MODEL=1, TRANSFER=2, PRETRAINED_MODEL=forest["OUTPUT_MODEL"]),
        )
    # with the random forest as Model, a forest model file's prediction becomes covariates of the local forest
    stacked = qgis_processing.run(
        "socdepth:train",
        _params(local, covariates, tmp_path / "stacked", TRANSFER=2, PRETRAINED_MODEL=forest["OUTPUT_MODEL"]),
        context=context,
        feedback=feedback,
    )
    assert sum("the local forest stacked on the pre-trained model" in line for line in feedback.infos) == 3
    bundle = SocModel.load(stacked["OUTPUT_MODEL"])
    assert bundle.card.kind == "source_stacked_forest"
    assert (
        bundle.card.transferred_from["pretrained"]["sha256"]
        == hashlib.sha256(Path(forest["OUTPUT_MODEL"]).read_bytes()).hexdigest()
    )
    patches = np.random.default_rng(0).uniform(0, 1, (5, 6, 1, 1)).astype(np.float32)
    pretrained = SocModel.load(forest["OUTPUT_MODEL"]).model
    np.testing.assert_array_equal(bundle.model.source.predict(patches), pretrained.predict(patches))
    with pytest.raises(QgsProcessingException, match="Pre-trained model: The model was trained with 6 covariate bands"):
        qgis_processing.run(
            "socdepth:train",
            _params(
                local, covariates, tmp_path, TRANSFER=2, PRETRAINED_MODEL=library, CATEGORICAL="",
                COVARIATES=[str(_without_last_band(tmp_path))],
            ),
        )  # fmt: skip
    assert not (tmp_path / "model.socmodel").exists()
