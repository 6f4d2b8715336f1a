"""The ensemble kind: stacking weights against closed forms, honest weights, dense == patch-wise, file round trip."""

import numpy as np
import pytest

from soc_depth_mapper.core.bundle import SocModel
from soc_depth_mapper.core.models.ensemble import EnsembleDepthModel, stacking_weights
from soc_depth_mapper.core.training import TrainingData, train

from .test_cnn import INTERVALS, _patches, _training_set

FAST = {
    "n_trees": 30,
    "epochs": 4,
    "patience": 2,
    "batch_size": 32,
    "inner_folds": 3,
    "cnn_options": {"conv_channels": [4, 6], "dense_units": [8], "finetune_epochs": 2, "n_threads": 1},
}


def test_stacking_weights_recover_a_known_mixture():
    rng = np.random.default_rng(0)
    predictions = rng.normal(10, 3, (400, 2))
    mixture = predictions @ np.array([0.3, 0.7])
    assert stacking_weights(predictions, mixture) == pytest.approx([0.3, 0.7], abs=1e-6)
    assert stacking_weights(predictions, predictions[:, 0]) == pytest.approx([1.0, 0.0], abs=1e-6)


def test_row_weights_count_rows_as_repeated():
    """Integer row weights give the weights of the data with each row repeated that many times."""
    rng = np.random.default_rng(2)
    predictions = rng.normal(10, 3, (60, 2))
    observed = predictions @ [0.5, 0.5] + rng.normal(0, 1, 60)
    counts = rng.integers(1, 4, 60)
    repeated = np.repeat(np.arange(60), counts)
    expected = stacking_weights(predictions[repeated], observed[repeated])
    assert stacking_weights(predictions, observed, counts) == pytest.approx(expected, abs=1e-6)


def _two_model_weight(first: np.ndarray, second: np.ndarray, truth: np.ndarray) -> tuple[float, float]:
    """The closed form of the two-model fit w·first + (1 - w)·second: unconstrained w, and w clipped to [0, 1]."""
    d = first - second
    w = float(d @ (truth - second) / (d @ d))
    return w, min(max(w, 0.0), 1.0)


def test_stacking_weights_stay_non_negative_and_sum_to_one():
    """Against the two-model closed form. A shrunken member (half the truth's spread) beside a flat one would
    be extrapolated beyond (w = 2) by an unconstrained fit; the constrained fit stops at w = 1."""
    rng = np.random.default_rng(1)
    truth = rng.normal(10, 3, 300)
    shrunken = 10 + 0.5 * (truth - 10) + rng.normal(0, 0.5, 300)
    flat = 10 + rng.normal(0, 0.5, 300)
    unclipped, _ = _two_model_weight(shrunken, flat, truth)
    assert unclipped > 1.5  # the unconstrained fit would give `flat` a negative weight
    assert stacking_weights(np.column_stack([shrunken, flat]), truth) == pytest.approx([1.0, 0.0], abs=1e-6)
    good = truth + rng.normal(0, 1, 300)
    noisy = truth + rng.normal(0, 2, 300)
    _, w = _two_model_weight(good, noisy, truth)
    assert 0 < w < 1
    weights = stacking_weights(np.column_stack([good, noisy]), truth)
    assert weights == pytest.approx([w, 1 - w], abs=1e-6)
    assert weights.sum() == pytest.approx(1.0)


@pytest.fixture(scope="module")
def fitted():
    stack, patches, targets = _training_set(90)
    return stack, patches, targets, EnsembleDepthModel(**FAST).fit(patches, targets, INTERVALS)


def test_the_weights_never_see_sites_held_out_of_the_fit(fitted):
    """Changing the targets of sites the ensemble was not given cannot change its weights: the weights of
    each outer fold are learnt inside it."""
    _stack, patches, targets, _model = fitted
    train_sites = np.arange(len(targets)) % 3 != 0
    first = EnsembleDepthModel(**FAST).fit(patches[train_sites], targets[train_sites], INTERVALS)
    altered = targets.copy()
    altered[~train_sites] = 1000.0  # held-out sites
    second = EnsembleDepthModel(**FAST).fit(patches[train_sites], altered[train_sites], INTERVALS)
    np.testing.assert_array_equal(first.weights_, second.weights_)
    assert first.weights_.shape == (len(INTERVALS), 2)
    assert np.allclose(first.weights_.sum(axis=1), 1.0) and first.weights_.min() >= 0


def test_unit_sample_weights_change_nothing(fitted):
    _stack, patches, targets, model = fitted
    weighted = EnsembleDepthModel(**FAST).fit(patches, targets, INTERVALS, sample_weight=np.ones(len(targets)))
    np.testing.assert_array_equal(weighted.weights_, model.weights_)
    np.testing.assert_array_equal(weighted.predict(patches[:20]), model.predict(patches[:20]))


def test_dense_prediction_equals_patch_wise_and_the_weighted_members(fitted):
    stack, _patches_, _targets, model = fitted
    r = model.patch_size // 2
    block = stack[:, 10 : 30 + 2 * r, 5 : 25 + 2 * r].astype(np.float32)
    dense = model.predict_block(block)
    rows, cols = np.meshgrid(np.arange(10 + r, 30 + r), np.arange(5 + r, 25 + r), indexing="ij")
    patch_wise = model.predict(_patches(stack, rows.ravel(), cols.ravel(), model.patch_size).astype(np.float32))
    np.testing.assert_allclose(dense, patch_wise.T.reshape(dense.shape), atol=1e-4)
    patches = _patches(stack, rows.ravel()[:50], cols.ravel()[:50], model.patch_size).astype(np.float32)
    forest, cnn = model.members_
    expected = model.weights_[:, 0] * forest.predict(patches) + model.weights_[:, 1] * cnn.predict(patches)
    np.testing.assert_allclose(model.predict(patches), expected, rtol=1e-12)
    only = model.predict_block(block, [2])
    np.testing.assert_allclose(only[0], dense[2], rtol=1e-6)


def test_state_round_trip_predicts_the_same(fitted):
    _stack, patches, _targets, model = fitted
    config, arrays = model.get_state()
    again = EnsembleDepthModel.from_state(config, arrays)
    np.testing.assert_array_equal(again.predict(patches), model.predict(patches))
    config["members"] = config["members"][::-1]
    with pytest.raises(ValueError, match="this version combines random_forest, transfer_cnn"):
        EnsembleDepthModel.from_state(config, arrays)


def test_cross_validated_ensemble_saves_with_conformal_intervals(fitted, tmp_path):
    _stack, patches, targets, _model = fitted
    rng = np.random.default_rng(3)
    data = TrainingData(
        site_ids=np.arange(len(targets)),
        x=rng.uniform(0, 1000, len(targets)),
        y=rng.uniform(0, 1000, len(targets)),
        patches=patches,
        targets=targets,
        intervals=INTERVALS,
        property_name="SOC",
        band_names=["a", "b", "c"],
    )
    result = train(data, "ensemble", FAST, validation="random", folds=3)
    assert [m.kind for m in result.validation.fold_models] == ["ensemble"] * 3
    grid = {"crs_wkt": "", "transform": (0, 1, 0, 0, 0, -1), "res": (1, 1), "nodata": [None] * 3}
    bundle = SocModel.from_training(result, data, grid)
    path = tmp_path / "ensemble.socmodel"
    bundle.save(str(path))
    loaded = SocModel.load(str(path))
    np.testing.assert_array_equal(loaded.predict(patches[:10]), bundle.predict(patches[:10]))
    block = np.ascontiguousarray(np.moveaxis(patches[0], 0, 0))
    lower, upper = loaded.predict_block_interval(block, range(len(INTERVALS)), 0.9)
    assert lower.shape == upper.shape == (len(INTERVALS), 1, 1)
    assert (upper >= lower).all()
