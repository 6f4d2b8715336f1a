"""Training: the log transform, per-group metrics and the isolation of the outer test folds."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from soc_depth_mapper.core.models.base import DepthModel
from soc_depth_mapper.core.training import (
    CrossValidation,
    TrainingData,
    compare_on_folds,
    cross_validate,
    forward_transform,
    inverse_transform,
    out_of_fold_rows,
    prediction_floor,
    predictions_to_fitted_scale,
    to_property_scale,
    train,
)

INTERVALS = np.array([[0.0, 10.0], [10.0, 30.0], [30.0, 60.0]])


def _hand_rmse(observed: np.ndarray, predicted: np.ndarray) -> float:
    """RMSE over the pairs where both values exist, written out without numpy's reductions."""
    pairs = [(o, p) for o, p in zip(observed.ravel(), predicted.ravel()) if np.isfinite(o) and np.isfinite(p)]
    return (sum((p - o) ** 2 for o, p in pairs) / len(pairs)) ** 0.5


def _exponential_sites(n: int = 90, seed: int = 0, groups: np.ndarray | None = None) -> TrainingData:
    """SOC an exact exponential of the covariate, log1p(SOC) = 3 + 1.6 c - 0.4 depth index: 8-98 g/kg, while
    the fitted (log) scale spans 2.2-4.6, so a value tells which scale it is on. Band b is noise."""
    rng = np.random.default_rng(seed)
    covariate = rng.uniform(0, 1, n)
    targets = np.expm1(3.0 + 1.6 * covariate[:, None] - 0.4 * np.arange(len(INTERVALS)))
    targets[rng.random(targets.shape) < 0.1] = np.nan
    return TrainingData(
        site_ids=np.arange(n),
        x=rng.uniform(0, 1000, n),
        y=rng.uniform(0, 1000, n),
        patches=np.stack([covariate, rng.normal(size=n)], axis=1).reshape(n, 2, 1, 1).astype(np.float32),
        targets=targets,
        intervals=INTERVALS,
        property_name="SOC",
        band_names=["a", "b"],
        groups=groups,
    )


class _FittedScaleMean(DepthModel):
    """Test double: remembers the targets it was fitted on and predicts their per-depth mean (fitted scale)."""

    kind = "fitted_scale_mean"

    @property
    def patch_size(self) -> int:
        return 1

    def fit(self, patches, targets, intervals, categorical=(), progress=None):
        self.seen_targets_ = np.array(targets, dtype=float)
        self.mean_ = np.nanmean(self.seen_targets_, axis=0)
        return self

    def predict(self, patches):
        return np.tile(self.mean_, (len(patches), 1))

    def predict_block(self, block):
        raise NotImplementedError

    def get_state(self):
        raise NotImplementedError

    @classmethod
    def from_state(cls, config, arrays):
        raise NotImplementedError


def test_log_transform_is_log1p_forward_and_expm1_back():
    values = np.array([[0.0, 0.5, 12.0], [np.nan, 150.0, 1e-9]])
    np.testing.assert_array_equal(forward_transform(values, "log"), np.log1p(values))
    np.testing.assert_array_equal(inverse_transform(np.log1p(values), "log"), np.expm1(np.log1p(values)))
    np.testing.assert_allclose(inverse_transform(forward_transform(values, "log"), "log"), values, rtol=1e-12)
    assert forward_transform(values, "none") is values and inverse_transform(values, "none") is values
    with pytest.raises(ValueError, match="non-negative"):
        forward_transform(np.array([1.0, -0.1]), "log")


def test_cross_validation_fits_log1p_and_back_transforms_every_prediction():
    """With a model that predicts the fitted-scale mean, every out-of-fold value has a closed form."""
    data = _exponential_sites()
    folds = np.arange(len(data.site_ids)) % 3
    cv = cross_validate(data, _FittedScaleMean, folds, transform="log")
    expected = np.full(data.targets.shape, np.nan)
    for fold, model in zip(range(3), cv.fold_models):
        train_sites = folds != fold
        np.testing.assert_array_equal(model.seen_targets_, np.log1p(data.targets[train_sites]))
        expected[folds == fold] = np.expm1(np.nanmean(np.log1p(data.targets[train_sites]), axis=0))
    expected[np.isnan(data.targets)] = np.nan
    np.testing.assert_allclose(cv.predictions, expected, rtol=1e-12)
    # the metrics compare back-transformed predictions with SOC, not log values with log values
    for d, label in enumerate(data.interval_labels()):
        row = next(r for r in cv.metrics if r["depth"] == label and r["group"] == "all")
        assert row["rmse"] == pytest.approx(_hand_rmse(data.targets[:, d], expected[:, d]), rel=1e-12)
    overall = next(r for r in cv.metrics if r["depth"] == "all" and r["group"] == "all")
    assert overall["rmse"] == pytest.approx(_hand_rmse(data.targets, expected), rel=1e-12)
    assert overall["n"] == np.isfinite(data.targets).sum()


def test_random_forest_with_log_transform_predicts_and_scores_in_soc_units():
    data = _exponential_sites()
    params = {"n_trees": 40, "max_features": 1.0, "min_samples_leaf": 2, "n_jobs": 1}
    result = train(data, "random_forest", params, validation="random", folds=3, transform="log")
    cv = result.validation
    log_low, log_high = np.nanmin(np.log1p(data.targets)), np.nanmax(np.log1p(data.targets))
    for fold, model in enumerate(cv.fold_models):
        test = cv.folds == fold
        fitted = model.predict(data.patches[test])
        # a forest predicts averages of its training targets: inside the log1p range means it fit log1p(SOC)
        assert log_low <= fitted.min() and fitted.max() <= log_high
        observed = ~np.isnan(data.targets[test])
        np.testing.assert_array_equal(cv.predictions[test][observed], np.expm1(fitted)[observed])
    final = result.model.predict(data.patches)
    assert log_low <= final.min() and final.max() <= log_high
    for d, label in enumerate(data.interval_labels()):
        row = next(r for r in cv.metrics if r["depth"] == label and r["group"] == "all")
        assert row["rmse"] == pytest.approx(_hand_rmse(data.targets[:, d], cv.predictions[:, d]), rel=1e-12)
        # SOC-unit errors: far below the spread of the data at that depth, as a log-scale mix-up could not be
        assert row["rmse"] < 0.15 * np.nanstd(data.targets[:, d])


def test_metrics_per_group_match_a_hand_count_and_rmse():
    groups = np.array(["crop", "forest", "pasture"], dtype=object)[np.arange(90) % 3]
    data = _exponential_sites(groups=groups)
    cv = train(data, "random_forest", {"n_trees": 30, "n_jobs": 1}, validation="random", folds=3).validation
    labels = data.interval_labels()
    rows = {(r["group"], r["depth"]): r for r in cv.metrics}
    assert [r["group"] for r in cv.metrics if r["depth"] == "all"] == ["all", "crop", "forest", "pasture"]
    for group in ("crop", "forest", "pasture"):
        for depth in [*range(len(labels)), "all"]:
            observed, predicted = [], []
            for site in range(len(data.site_ids)):
                for d in range(len(labels)):
                    if data.groups[site] == group and depth in (d, "all") and not np.isnan(data.targets[site, d]):
                        observed.append(data.targets[site, d])
                        predicted.append(cv.predictions[site, d])
            row = rows[(group, "all" if depth == "all" else labels[depth])]
            assert row["n"] == len(observed)
            assert row["rmse"] == pytest.approx(_hand_rmse(np.array(observed), np.array(predicted)), rel=1e-12)
    # the groups partition the pairs
    assert sum(rows[(g, "all")]["n"] for g in ("crop", "forest", "pasture")) == rows[("all", "all")]["n"]


def _patch_sites(n: int = 60, seed: int = 3) -> TrainingData:
    rng = np.random.default_rng(seed)
    patches = rng.normal(size=(n, 2, 7, 7)).astype(np.float32)
    signal = patches[:, 0, 2:5, 2:5].mean(axis=(1, 2))
    targets = 10 + 3 * signal[:, None] * np.array([1.0, 0.6, 0.3]) + rng.normal(0, 0.2, (n, 3))
    return TrainingData(
        site_ids=np.arange(n),
        x=rng.uniform(0, 1000, n),
        y=rng.uniform(0, 1000, n),
        patches=patches,
        targets=targets,
        intervals=INTERVALS,
        property_name="SOC",
        band_names=["a", "b"],
    )


def _best_validation_rmse(history: dict) -> float:
    best = history["best_epoch"]
    return history["initial_val_rmse"] if best == 0 else history["val_rmse"][best - 1]


@pytest.mark.parametrize("kind", ["cnn", "transfer_cnn", "multitask_cnn"])
@pytest.mark.parametrize("scheme", ["random", "spatial"])
def test_early_stopping_sites_are_training_sites_never_the_outer_test_fold(kind, scheme):
    data = _patch_sites()
    params = {"conv_channels": (2, 3), "dense_units": (4,), "epochs": 3, "n_threads": 1}
    if kind == "transfer_cnn":
        params["finetune_epochs"] = 2
    cv = train(data, kind, params, validation=scheme, folds=3, random_state=5).validation
    for fold, model in zip(np.unique(cv.folds), cv.fold_models):
        test = cv.folds == fold
        training_sites = np.flatnonzero(~test)
        mask = model.validation_sites_
        assert mask.shape == training_sites.shape  # one flag per site the fold model was given
        inner = training_sites[mask]
        assert 0 < len(inner) < len(training_sites)
        assert not np.isin(inner, np.flatnonzero(test)).any()
        # the mask names the sites early stopping scored: their RMSE is the recorded best validation RMSE
        predicted = model.predict(data.patches[inner])
        if kind == "transfer_cnn":
            for d, (top, bottom) in enumerate(INTERVALS):
                history = model.history_[f"fine-tuning {top:g}-{bottom:g} cm"]
                rmse = _hand_rmse(data.targets[inner, d], predicted[:, d])
                assert rmse == pytest.approx(_best_validation_rmse(history), rel=1e-4)
        else:
            rmse = _hand_rmse(data.targets[inner], predicted)
            assert rmse == pytest.approx(_best_validation_rmse(model.history_["training"]), rel=1e-4)


def test_back_transformed_predictions_below_zero_return_to_the_fitted_scale():
    """A model on the log scale may predict below 0 (SOC below 0 g/kg after expm1): such predictions must map
    back exactly, where targets below 0 are an error."""
    fitted = np.array([-0.5, -0.01, 0.0, 2.3])
    predicted = inverse_transform(fitted, "log")
    assert predicted[0] < 0
    np.testing.assert_allclose(predictions_to_fitted_scale(predicted, "log"), fitted, rtol=1e-12, atol=1e-15)
    np.testing.assert_array_equal(predictions_to_fitted_scale(predicted, "none"), predicted)
    with pytest.raises(ValueError, match="non-negative targets"):
        forward_transform(predicted, "log")


class _Undershoot(_FittedScaleMean):
    """Test double: the fitted-scale mean minus 100, below 0 g/kg everywhere, as an unbounded CNN can be."""

    def predict(self, patches):
        return super().predict(patches) - 100.0


def test_out_of_fold_predictions_below_zero_are_raised_to_zero_for_a_non_negative_property():
    data = _exponential_sites()
    folds = np.arange(len(data.site_ids)) % 3
    cv = cross_validate(data, _Undershoot, folds)
    observed = ~np.isnan(data.targets)
    assert prediction_floor(data.targets) == 0.0
    np.testing.assert_array_equal(cv.predictions[observed], 0.0)
    # a property with negative values (e.g. a temperature or a z-score) keeps its predictions
    shifted = dataclasses.replace(data, targets=data.targets - 50.0)
    assert prediction_floor(shifted.targets) is None
    expected = np.nanmean(shifted.targets[folds != 0], axis=0) - 100.0
    expected[np.isnan(shifted.targets[0])] = np.nan  # unobserved depths get no prediction
    np.testing.assert_allclose(cross_validate(shifted, _Undershoot, folds).predictions[0], expected, rtol=1e-12)


def test_to_property_scale_back_transforms_then_floors_and_keeps_nodata():
    values = np.array([-2.0, -0.5, 0.0, 1.0, np.nan])
    np.testing.assert_array_equal(to_property_scale(values, "none", 0.0), [0.0, 0.0, 0.0, 1.0, np.nan])
    np.testing.assert_array_equal(to_property_scale(values, "none", None), values)
    np.testing.assert_allclose(to_property_scale(values, "log", 0.0), [0.0, 0.0, 0.0, np.expm1(1.0), np.nan])


def test_out_of_fold_rows_list_each_observed_site_and_depth_once_with_folds_from_one():
    data = TrainingData(
        site_ids=np.array([7, 9]),
        x=np.zeros(2),
        y=np.zeros(2),
        patches=np.zeros((2, 1, 1, 1), np.float32),
        targets=np.array([[1.0, np.nan], [3.0, 4.0]]),
        intervals=np.array([[0.0, 5.0], [5.0, 15.0]]),
        property_name="SOC",
        band_names=["b"],
    )
    cv = CrossValidation(
        folds=np.array([1, 0]),
        predictions=np.array([[1.5, 2.5], [2.0, 5.0]]),
        fold_models=[],
        metrics=[],
        block_size=None,
        seconds=0.0,
        scheme="random",
    )
    assert out_of_fold_rows(data, cv) == [
        (0, [7, "0-5", 0.0, 5.0, 1.0, 1.5, 2]),
        (1, [9, "0-5", 0.0, 5.0, 3.0, 2.0, 1]),
        (1, [9, "5-15", 5.0, 15.0, 4.0, 5.0, 1]),
    ]


def _noisy_sites(n: int, seed: int = 0) -> TrainingData:
    """A linear signal in band a with N(0, 2²) noise per site and depth: a 90 % interval must be ±3.3 wide."""
    data = _exponential_sites(n, seed)
    rng = np.random.default_rng(seed + 1)
    covariate = data.patches[:, 0, 0, 0].astype(float)
    targets = 20 + 10 * covariate[:, None] - 3 * np.arange(len(INTERVALS)) + rng.normal(0, 2, (n, len(INTERVALS)))
    return dataclasses.replace(data, targets=np.where(np.isnan(data.targets), np.nan, targets))


def test_forest_cross_validation_gives_out_of_fold_intervals_their_coverage_and_confidence_bounds():
    data = _noisy_sites(240)
    params = {"n_trees": 60, "min_samples_leaf": 5, "n_jobs": 1}
    cv = train(data, "random_forest", params, validation="random", folds=4).validation
    for fold, model in enumerate(cv.fold_models):  # each site's bounds come from the model that never saw it
        test = cv.folds == fold
        quantiles = model.predict_quantiles(data.patches[test], [0.05, 0.95])
        np.testing.assert_allclose(cv.bounds[:, test], np.moveaxis(quantiles, -1, 0), rtol=1e-12)
    for d, label in enumerate(data.interval_labels()):
        row = next(r for r in cv.metrics if r["depth"] == label)
        observed = ~np.isnan(data.targets[:, d])
        inside = (cv.bounds[0, :, d] <= data.targets[:, d]) & (data.targets[:, d] <= cv.bounds[1, :, d])
        assert row["picp"] == pytest.approx(inside[observed].mean())
        assert 0.8 <= row["picp"] <= 0.98
        assert row["pi_width"] == pytest.approx(2 * 1.645 * 2, rel=0.3)
    for row in cv.metrics:
        for name in ("rmse", "r2", "ccc", "me"):
            assert row[f"{name}_lo"] < row[name] < row[f"{name}_hi"]


def test_a_model_without_quantiles_has_no_interval_quality_but_confidence_bounds():
    data = _noisy_sites(60)
    cv = cross_validate(data, _FittedScaleMean, np.arange(60) % 3)
    assert cv.bounds is None
    overall = cv.metrics[-1]
    assert np.isnan(overall["picp"]) and np.isnan(overall["pi_width"])
    assert overall["rmse_lo"] < overall["rmse"] < overall["rmse_hi"]


def test_compared_models_are_validated_on_the_trained_models_folds_and_paired_site_by_site():
    """The comparison is the other model's own cross-validation on the same folds (a second, independent run
    reproduces it), and the overall change is the ratio of the two RMSEs written out by hand."""
    from soc_depth_mapper.core.models.forest import RandomForestDepthModel

    data = _exponential_sites(120, seed=3)
    forest = {"n_trees": 30, "min_samples_leaf": 3, "n_jobs": 1}
    coarse = {"n_trees": 30, "min_samples_leaf": 25, "n_jobs": 1}
    result = train(data, "random_forest", forest, validation="spatial", folds=4, random_state=5)
    (comparison,) = compare_on_folds(data, result, {"random_forest": coarse})
    again = cross_validate(
        data, lambda: RandomForestDepthModel(**coarse, random_state=5), result.validation.folds,
        block_size=result.validation.block_size, scheme="spatial",
    )  # fmt: skip
    np.testing.assert_array_equal(comparison.validation.predictions, again.predictions)
    np.testing.assert_array_equal(comparison.validation.folds, result.validation.folds)
    overall, *per_depth = comparison.differences
    mine, theirs = _hand_rmse(data.targets, result.validation.predictions), _hand_rmse(data.targets, again.predictions)
    assert overall.percent == pytest.approx(100 * (mine / theirs - 1))
    assert overall.lo < overall.percent < overall.hi
    assert overall.percent < 0  # leaves of 3 sites follow the exponential closer than leaves of 25
    for d, change in enumerate(per_depth):
        depth_ratio = _hand_rmse(data.targets[:, d], result.validation.predictions[:, d]) / _hand_rmse(
            data.targets[:, d], again.predictions[:, d]
        )
        assert change.percent == pytest.approx(100 * (depth_ratio - 1))


def test_a_model_compared_with_its_own_settings_differs_by_exactly_nothing():
    data = _exponential_sites(60, seed=4)
    forest = {"n_trees": 10, "n_jobs": 1}
    result = train(data, "random_forest", forest, validation="random", folds=3, random_state=1)
    (comparison,) = compare_on_folds(data, result, {"random_forest": forest})
    assert [(c.percent, c.lo, c.hi) for c in comparison.differences] == [(0.0, 0.0, 0.0)] * (1 + len(INTERVALS))


def test_comparing_without_validation_is_refused():
    data = _exponential_sites(30)
    result = train(data, "random_forest", {"n_trees": 5, "n_jobs": 1}, validation="none")
    with pytest.raises(ValueError, match="^Comparing models needs validation"):
        compare_on_folds(data, result, {"random_forest": {"n_trees": 5}})
