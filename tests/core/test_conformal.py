"""Conformal intervals over the fold models: the finite-sample quantile, and out-of-fold bounds whose quantile
never uses the fold's own sites."""

import math

import numpy as np
import pytest

from soc_depth_mapper.core.conformal import conformal_quantile, out_of_fold_bounds
from soc_depth_mapper.core.training import TrainingData, train

INTERVALS = np.array([[0.0, 10.0], [10.0, 30.0]])


def test_conformal_quantile_is_the_finite_sample_rank():
    scores = np.arange(1.0, 20.0)  # 19 sorted scores
    assert conformal_quantile(scores, 0.9) == 18.0  # ceil(20 * 0.9) = 18th smallest
    assert conformal_quantile(scores, 0.99) == 19.0  # capped at the largest
    assert math.isnan(conformal_quantile(np.array([]), 0.9))


def test_each_folds_bounds_take_the_quantile_of_the_other_folds_scores():
    """A site-by-site loop written out: quantile of the other folds' observed scores, times the site's spread
    plus the depth's floor, either side of its prediction; NaN where the site has no score."""
    rng = np.random.default_rng(0)
    scores, spread = rng.exponential(size=(30, 2)), rng.uniform(0.5, 2.0, (30, 2))
    scores[[3, 17], 1] = np.nan
    oof, folds, floors = rng.normal(size=(30, 2)), np.repeat([0, 1, 2], 10), [0.1, 0.2]
    bounds = out_of_fold_bounds(scores, spread, floors, oof, folds, 0.8)
    for s in range(30):
        for d in range(2):
            if np.isnan(scores[s, d]):
                assert np.isnan(bounds[:, s, d]).all()
                continue
            others = sorted(v for t, v in enumerate(scores[:, d]) if folds[t] != folds[s] and not np.isnan(v))
            q = others[min(len(others), math.ceil((len(others) + 1) * 0.8)) - 1]
            half = q * (spread[s, d] + floors[d])
            assert bounds[:, s, d] == pytest.approx([oof[s, d] - half, oof[s, d] + half])


def test_out_of_fold_coverage_is_the_level_for_exchangeable_scores():
    """With exchangeable scores the coverage is at least the level and less than level + 1/(n + 1), up to the
    binomial spread of 2,000 sites (3 sigma)."""
    rng = np.random.default_rng(1)
    errors = rng.normal(size=(2000, 1))
    scores, spread, oof = np.abs(errors), np.ones((2000, 1)), np.zeros((2000, 1))
    bounds = out_of_fold_bounds(scores, spread, [0.0], oof, rng.integers(0, 5, 2000), 0.9)
    coverage = np.mean((bounds[0] <= errors) & (errors <= bounds[1]))
    sigma = math.sqrt(0.9 * 0.1 / 2000)
    assert 0.9 - 3 * sigma <= coverage <= 0.9 + 1 / 1601 + 3 * sigma


def test_a_cnns_validation_reports_the_coverage_of_its_conformal_intervals():
    """The CNN's metrics carry picp and pi_width as the forest's do, from its out-of-fold conformal bounds."""
    rng = np.random.default_rng(2)
    n = 80
    covariate = rng.uniform(0, 1, n)
    targets = 10 + 20 * covariate[:, None] - 4 * np.arange(2) + rng.normal(0, 1.5, (n, 2))
    data = TrainingData(
        site_ids=np.arange(n), x=rng.uniform(0, 1000, n), y=rng.uniform(0, 1000, n),
        patches=np.repeat(covariate[:, None, None, None], 7, axis=2).repeat(7, axis=3).astype(np.float32),
        targets=targets, intervals=INTERVALS, property_name="SOC", band_names=["c"],
    )  # fmt: skip
    cnn = {"patch_size": 7, "epochs": 4, "batch_size": 16}
    result = train(data, "cnn", cnn, validation="random", folds=4, random_state=0)
    for row in result.validation.metrics:
        assert 0.5 <= row["picp"] <= 1.0 and row["pi_width"] > 0, row["depth"]
    bounds = result.validation.bounds
    assert np.all(bounds[0] <= result.validation.predictions) and np.all(result.validation.predictions <= bounds[1])
