"""Representation transfer for the random forest: the source model's prediction as extra covariates helps where
the source knows the function, the wrapper maps block by block as it predicts site by site, and it survives the
model file."""

from __future__ import annotations

import numpy as np
import pytest

from soc_depth_mapper.core.bundle import SocModel
from soc_depth_mapper.core.models.cnn import CNNDepthModel
from soc_depth_mapper.core.models.forest import RandomForestDepthModel
from soc_depth_mapper.core.models.stacked import SourceStackedDepthModel, with_source_bands
from soc_depth_mapper.core.training import TrainingData, train
from soc_depth_mapper.core.transfer import Transfer, near_sites

INTERVALS = np.array([[0.0, 10.0], [10.0, 30.0]])
FOREST = {"n_trees": 60, "min_samples_leaf": 2, "n_jobs": 1}
GRID = {"crs_wkt": "EPSG:3857", "transform": (0, 1, 0, 0, 0, -1), "res": (1.0, 1.0), "nodata": (None,) * 6}


def _truth(covariates: np.ndarray) -> np.ndarray:
    """SOC at both depths: a non-linear function of 3 of the 6 bands, 4 g/kg less in the lower interval."""
    c = covariates
    top = 20 + 10 * np.sin(3 * c[:, 0]) + 8 * c[:, 1] * c[:, 2]
    return np.stack([top, top - 4], axis=1)


def _sites(n: int, seed: int, bias: float = 0.0, noise: float = 0.5, x0: float = 0.0) -> TrainingData:
    rng = np.random.default_rng(seed)
    covariates = rng.uniform(0, 1, (n, 6))
    return TrainingData(
        site_ids=np.arange(n) + 10_000 * seed,
        x=x0 + rng.uniform(0, 1000, n),
        y=rng.uniform(0, 1000, n),
        patches=covariates.reshape(n, 6, 1, 1).astype(np.float32),
        targets=_truth(covariates) + bias + rng.normal(0, noise, (n, 2)),
        intervals=INTERVALS,
        property_name="SOC",
        band_names=[f"b{i}" for i in range(6)],
    )


def _stacked(source: TrainingData) -> SourceStackedDepthModel:
    source_model = RandomForestDepthModel(**FOREST).fit(source.patches, source.targets, INTERVALS)
    return SourceStackedDepthModel(source_model, RandomForestDepthModel(**FOREST))


def _rmse(predicted: np.ndarray, observed: np.ndarray) -> float:
    return float(np.sqrt(np.mean((predicted - observed) ** 2)))


def test_a_source_that_knows_the_function_helps_even_when_shifted():
    """25 local sites, a library of 400 that follows the same function 8 g/kg higher: pooling would carry the
    shift, but as a covariate the library's prediction is split on and its level re-learnt locally. Scored
    against the noise-free function at 400 new sites (the oracle)."""
    local, source, new = _sites(25, seed=1), _sites(400, seed=2, bias=8.0), _sites(400, seed=3)
    truth = _truth(new.patches[:, :, 0, 0].astype(float))
    local_only = RandomForestDepthModel(**FOREST).fit(local.patches, local.targets, INTERVALS)
    stacked = _stacked(source).fit(local.patches, local.targets, INTERVALS)
    source_alone = stacked.source.predict(new.patches)
    rmse_local, rmse_stacked = _rmse(local_only.predict(new.patches), truth), _rmse(stacked.predict(new.patches), truth)
    assert rmse_stacked < 0.7 * rmse_local
    assert rmse_stacked < 0.5 * _rmse(source_alone, truth)  # the shift is not carried over
    # the local forest reads the 6 bands plus one prediction per depth
    assert stacked.local.n_bands_ == 8


def test_dense_block_prediction_equals_site_by_site_with_a_forest_or_a_network_as_source():
    local, source = _sites(30, seed=4), _sites(120, seed=5)
    rng = np.random.default_rng(6)
    cnn_patches = (source.patches + rng.normal(0, 0.05, (120, 6, 5, 5))).astype(np.float32)
    cnn = CNNDepthModel(patch_size=5, conv_channels=(4,), dense_units=(8,), epochs=5, n_threads=1)
    sources = {
        "forest": (RandomForestDepthModel(**FOREST).fit(source.patches, source.targets, INTERVALS), 1),
        "cnn": (cnn.fit(cnn_patches, source.targets, INTERVALS), 5),
    }
    for name, (source_model, p) in sources.items():
        local_patches = np.broadcast_to(local.patches, (30, 6, p, p)).astype(np.float32)
        stacked = SourceStackedDepthModel(source_model, RandomForestDepthModel(**FOREST))
        stacked.fit(local_patches, local.targets, INTERVALS)
        assert stacked.patch_size == p
        r = p // 2
        block = rng.uniform(0, 1, (6, 9 + 2 * r, 11 + 2 * r)).astype(np.float32)
        block[2, r + 3, r + 4] = np.nan  # a nodata centre cell
        dense = stacked.predict_block(block)
        windows = np.lib.stride_tricks.sliding_window_view(block, (p, p), axis=(1, 2))  # (6, 9, 11, p, p)
        per_site = stacked.predict(np.ascontiguousarray(windows.transpose(1, 2, 0, 3, 4).reshape(-1, 6, p, p)))
        expected = per_site.T.reshape(2, 9, 11)
        assert np.isnan(dense[:, 3, 4]).all(), name
        np.testing.assert_allclose(dense, expected, rtol=1e-5, atol=1e-5, err_msg=name)
        np.testing.assert_allclose(stacked.predict_block(block, [1]), expected[[1]], rtol=1e-5, atol=1e-5)
        quantiles = stacked.predict_block_quantiles(block, [0.05, 0.95])
        site_quantiles = stacked.predict_quantiles(
            np.ascontiguousarray(windows.transpose(1, 2, 0, 3, 4).reshape(-1, 6, p, p)), [0.05, 0.95]
        )
        np.testing.assert_allclose(quantiles, site_quantiles.transpose(1, 2, 0).reshape(2, 2, 9, 11), atol=1e-5)


def test_forest_representation_transfer_is_fold_honest_and_survives_the_model_file(tmp_path):
    """Each fold's source forest is fitted without the source sites near its test sites (counted as a brute
    force does); the final model is the stacked kind, and the file gives back the same predictions."""
    local, source = _sites(30, seed=7), _sites(150, seed=8, bias=3.0)
    result = train(
        local, "random_forest", FOREST, validation="spatial", folds=3, block_size=300.0,
        transfer=Transfer(source, strategy="representation"),
    )  # fmt: skip
    cv = result.validation
    for fold, record in zip(np.unique(cv.folds), cv.transfer_folds):
        test = cv.folds == fold
        near = near_sites(source, local.x[test], local.y[test], 300.0)
        assert record.strategy == "representation" and record.weight == 0.0
        assert (record.excluded, record.source_sites) == (int(near.sum()), int((~near).sum()))
        assert isinstance(cv.fold_models[list(np.unique(cv.folds)).index(fold)], SourceStackedDepthModel)
    assert result.settings["kind"] == "source_stacked_forest"
    assert result.settings["transfer"]["source_sites_used"] == 150
    path = str(tmp_path / "stacked.socmodel")
    SocModel.from_training(result, local, GRID).save(path)
    loaded = SocModel.load(path)
    assert loaded.card.kind == "source_stacked_forest" and loaded.supports_intervals()[0]
    new = _sites(50, seed=9)
    np.testing.assert_array_equal(loaded.model.predict(new.patches), result.model.predict(new.patches))
    block = new.patches[:48, :, 0, 0].T.reshape(6, 6, 8)
    lower, upper = loaded.predict_block_interval(block, [0, 1], 0.9)
    assert np.all(lower <= upper)


def test_the_stacked_bands_are_the_centre_cells_then_the_source_prediction():
    source = _sites(60, seed=10)
    model = RandomForestDepthModel(**FOREST).fit(source.patches, source.targets, INTERVALS)
    patches = np.broadcast_to(source.patches, (60, 6, 3, 3)).copy()
    patches[:, :, 0, 0] = -1.0  # off-centre cells are not read
    stacked = with_source_bands(model, patches)
    assert stacked.shape == (60, 8, 1, 1)
    np.testing.assert_array_equal(stacked[:, :6, 0, 0], source.patches[:, :, 0, 0])
    np.testing.assert_allclose(stacked[:, 6:, 0, 0], model.predict(source.patches), rtol=1e-6)
    with pytest.raises(ValueError):
        SourceStackedDepthModel.from_state({"source": {"kind": "svm", "config": {}}}, {})


def test_a_pretrained_forest_becomes_the_source_of_the_local_forest_fold_by_fold():
    """PRETRAINED_MODEL with the random forest: the model file's forest is used as it is (its predictions
    unchanged) in every fold and in the final model; one of another patch size or depths is refused."""
    local, library = _sites(30, seed=11), _sites(200, seed=12, bias=5.0)
    pretrained = RandomForestDepthModel(**FOREST).fit(library.patches, library.targets, INTERVALS)
    record = {"file": "library.socmodel", "sha256": "0" * 64, "card": {"kind": "random_forest"}}
    from_file = Transfer(None, strategy="representation", pretrained=pretrained, pretrained_record=record)
    result = train(local, "random_forest", FOREST, validation="random", folds=3, transfer=from_file)
    assert [(r.strategy, r.source_sites) for r in result.validation.transfer_folds] == [("representation", 0)] * 3
    assert result.settings["kind"] == "source_stacked_forest" and result.settings["transfer"]["pretrained"] == record
    new = _sites(40, seed=13)
    for model in (result.model, *result.validation.fold_models):
        np.testing.assert_array_equal(model.source.predict(new.patches), pretrained.predict(new.patches))
    # a model that reads more cells than the local sites were sampled with is refused before any fit
    cnn = CNNDepthModel(patch_size=5, conv_channels=(4,), dense_units=(8,), epochs=2, n_threads=1)
    cnn_patches = np.broadcast_to(library.patches, (200, 6, 5, 5)).astype(np.float32)
    wide_source = SourceStackedDepthModel(cnn.fit(cnn_patches, library.targets, INTERVALS), pretrained)
    wide = Transfer(None, strategy="representation", pretrained=wide_source)
    with pytest.raises(ValueError, match="reads 5 x 5 cells but the local sites were sampled with 1"):
        train(local, "random_forest", FOREST, validation="none", transfer=wide)
