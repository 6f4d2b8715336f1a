"""Validation metrics against values worked out by hand from the formulas, closed forms and scipy."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
from scipy import stats

from soc_depth_mapper.core.metrics import METRIC_NAMES, metrics_table, regression_metrics


def test_hand_computed_case():
    # obs mean 2.5, pred mean 3.25; errors 1, 0, 1, 1; SST 5, SSE 3; sum of cross products 5.5,
    # sum of squared pred deviations 6.75 (population moments: var_o 1.25, var_p 1.6875, cov 1.375)
    m = regression_metrics([1, 2, 3, 4], [2, 2, 4, 5])
    r = 5.5 / math.sqrt(5 * 6.75)
    assert m["n"] == 4
    assert m["me"] == pytest.approx(0.75)
    assert m["mae"] == pytest.approx(0.75)
    assert m["rmse"] == pytest.approx(math.sqrt(0.75))
    assert m["r2"] == pytest.approx(0.4)
    assert m["r"] == pytest.approx(r)
    assert m["ccc"] == pytest.approx(11 / 14)  # 2 * 1.375 / (1.25 + 1.6875 + 0.75**2)
    assert m["kge"] == pytest.approx(1 - math.sqrt((r - 1) ** 2 + (math.sqrt(1.35) - 1) ** 2 + 0.3**2))
    assert tuple(m) == METRIC_NAMES


def test_perfect_prediction():
    obs = np.array([3.1, 0.4, 12.0, 7.7, 5.0])
    m = regression_metrics(obs, obs.copy())
    assert m["r"] == pytest.approx(1) and m["r2"] == 1 and m["ccc"] == pytest.approx(1)
    assert m["kge"] == pytest.approx(1)
    assert m["rmse"] == m["mae"] == m["me"] == 0


def test_constant_bias():
    obs = np.array([2.0, 4.0, 6.0, 8.0])  # mean 5, population variance 5
    m = regression_metrics(obs, obs - 1.5)
    assert m["me"] == pytest.approx(-1.5)
    assert m["rmse"] == pytest.approx(1.5) and m["mae"] == pytest.approx(1.5)
    assert m["r"] == pytest.approx(1)
    assert m["r2"] == pytest.approx(1 - 4 * 1.5**2 / 20)
    assert m["ccc"] == pytest.approx(2 * 5 / (5 + 5 + 1.5**2))
    assert m["kge"] == pytest.approx(1 - 1.5 / 5)  # r = alpha = 1, beta = 3.5 / 5


@pytest.mark.parametrize("a", [0.5, 0.9, 1.3, 2.0])
def test_scaled_predictions_closed_form(a):
    obs = np.array([1.0, 4.0, 2.0, 9.0, 5.0, 3.0])
    mean, var = obs.mean(), obs.var()
    m = regression_metrics(obs, a * obs)
    assert m["kge"] == pytest.approx(1 - math.sqrt(2) * abs(a - 1))  # r = 1, alpha = beta = a
    assert m["ccc"] == pytest.approx(2 * a * var / (var * (1 + a**2) + ((1 - a) * mean) ** 2))
    assert m["r2"] == pytest.approx(1 - (a - 1) ** 2 * np.sum(obs**2) / np.sum((obs - mean) ** 2))
    assert m["me"] == pytest.approx((a - 1) * mean)


def test_pearson_r_and_errors_agree_with_scipy_and_numpy():
    rng = np.random.default_rng(42)
    obs = rng.gamma(2.0, 3.0, 200)
    pred = 0.7 * obs + rng.normal(0, 2, 200) + 1
    m = regression_metrics(obs, pred)
    assert m["r"] == pytest.approx(stats.pearsonr(obs, pred)[0], rel=1e-12)
    assert m["r2"] == pytest.approx(1 - np.sum((pred - obs) ** 2) / (obs.var() * obs.size), rel=1e-12)
    assert m["rmse"] == pytest.approx(np.sqrt(np.mean((pred - obs) ** 2)), rel=1e-12)
    assert m["mae"] == pytest.approx(np.mean(np.abs(pred - obs)), rel=1e-12)
    # Lin's CCC through the sample-covariance form, rescaled to population moments
    cov = np.cov(obs, pred, ddof=0)
    assert m["ccc"] == pytest.approx(2 * cov[0, 1] / (cov[0, 0] + cov[1, 1] + (obs.mean() - pred.mean()) ** 2))


def test_worse_than_the_mean_gives_negative_r2():
    m = regression_metrics([1, 2, 3], [3, 2, 1])  # SSE 8, SST 2
    assert m["r2"] == pytest.approx(-3)
    assert m["r"] == pytest.approx(-1)


def test_nan_pairs_are_ignored():
    obs = [1, 2, np.nan, 3, 4, 10]
    pred = [2, 2, 5, 4, 5, np.nan]
    assert regression_metrics(obs, pred) == pytest.approx(regression_metrics([1, 2, 3, 4], [2, 2, 4, 5]))
    assert regression_metrics(obs, pred)["n"] == 4


def test_undefined_metrics_are_nan_without_warnings():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        empty = regression_metrics([np.nan], [1.0])
        single = regression_metrics([2.0], [3.5])
        flat_obs = regression_metrics([0.1, 0.1, 0.1], [1.0, 2.0, 3.0])
        flat_pred = regression_metrics([1.0, 2.0, 3.0], [2.0, 2.0, 2.0])
        zero_mean = regression_metrics([-1.0, 1.0], [-2.0, 2.0])
    assert empty["n"] == 0 and all(math.isnan(empty[k]) for k in METRIC_NAMES[1:])
    assert single["n"] == 1 and single["rmse"] == 1.5 and single["me"] == 1.5 and single["mae"] == 1.5
    assert all(math.isnan(single[k]) for k in ("r", "r2", "ccc", "kge"))
    assert math.isnan(flat_obs["r"]) and math.isnan(flat_obs["r2"]) and math.isnan(flat_obs["kge"])
    assert flat_obs["ccc"] == 0  # no covariance, but agreement is defined
    assert math.isnan(flat_pred["r"]) and math.isnan(flat_pred["kge"])
    assert flat_pred["r2"] == pytest.approx(0)  # predicting the mean everywhere
    assert zero_mean["r"] == pytest.approx(1) and math.isnan(zero_mean["kge"])  # beta = mean_p / 0


def test_mismatched_lengths_are_rejected():
    with pytest.raises(ValueError, match="3 observed values but 2 predictions"):
        regression_metrics([1, 2, 3], [1, 2])


def test_metrics_table_rows_depths_and_groups():
    obs = [1, 2, 3, 4, 10, 20, 30, 5]
    pred = [2, 2, 4, 5, 11, 18, 33, 5]
    depth = ["0-5", "0-5", "0-5", "0-5", "5-15", "5-15", "5-15", "0-5"]
    land = ["crop", "crop", "grass", "grass", "crop", "grass", "crop", "grass"]
    table = metrics_table(obs, pred, depth, groups=land, model_name="rf")
    keys = [(row["group"], row["depth"]) for row in table]
    assert keys == [
        ("all", "0-5"), ("all", "5-15"), ("all", "all"),
        ("crop", "0-5"), ("crop", "5-15"), ("crop", "all"),
        ("grass", "0-5"), ("grass", "5-15"), ("grass", "all"),
    ]  # fmt: skip
    assert all(row["model"] == "rf" for row in table)
    assert [row["n"] for row in table] == [5, 3, 8, 2, 2, 4, 3, 1, 4]
    by_key = dict(zip(keys, table))
    # 0-5 cm over all groups: errors 1, 0, 1, 1, 0 -> ME 0.6, RMSE sqrt(3/5)
    assert by_key["all", "0-5"]["me"] == pytest.approx(0.6)
    assert by_key["all", "0-5"]["rmse"] == pytest.approx(math.sqrt(0.6))
    # grass over all depths: pairs (3,4), (4,5), (20,18), (5,5): errors 1, 1, -2, 0
    assert by_key["grass", "all"]["mae"] == pytest.approx(1.0)
    assert by_key["grass", "all"]["me"] == pytest.approx(0.0)
    assert math.isnan(by_key["grass", "5-15"]["r"])  # a single pair
    assert set(METRIC_NAMES) <= set(table[0])


def test_metrics_table_without_groups_and_bad_lengths():
    table = metrics_table([1, 2, 3], [1, 2, 4], ["b", "a", "b"])
    assert [(row["group"], row["depth"], row["n"]) for row in table] == [
        ("all", "b", 2),
        ("all", "a", 1),
        ("all", "all", 3),
    ]
    with pytest.raises(ValueError, match="3 observed, 3 predicted, 2 depth labels"):
        metrics_table([1, 2, 3], [1, 2, 4], ["a", "b"])


def test_every_group_lists_depths_in_the_overall_order():
    table = metrics_table([1, 2, 3, 4], [1, 2, 3, 5], ["0-5", "5-15", "0-5", "30-60"], groups=[1, 2, 2, 2])
    keys = [(row["group"], row["depth"]) for row in table]
    assert keys == [
        ("all", "0-5"), ("all", "5-15"), ("all", "30-60"), ("all", "all"),
        ("1", "0-5"), ("1", "all"),
        ("2", "0-5"), ("2", "5-15"), ("2", "30-60"), ("2", "all"),
    ]  # fmt: skip
