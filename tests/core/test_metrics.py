"""Validation metrics against values worked out by hand from the formulas, closed forms and scipy; bootstrap
intervals against the delta method's normal-theory widths and coverage."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
from scipy import stats

from soc_depth_mapper.core import metrics
from soc_depth_mapper.core.metrics import (
    CI_METRICS,
    CI_NAMES,
    METRIC_NAMES,
    RmseDifference,
    bootstrap_intervals,
    interval_quality,
    metrics_table,
    paired_rmse_difference,
    regression_metrics,
)

Z95 = stats.norm.ppf(0.975)


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


def _normal_errors(rng: np.random.Generator, n_sites: int, n_depths: int, sigma: float, per_site: bool = False):
    """Observed values, predictions with N(0, sigma²) errors (shared by a site's depths with `per_site`) and the
    site id of each pair."""
    observed = rng.gamma(2.0, 5.0, (n_sites, n_depths))
    error = rng.normal(0, sigma, (n_sites, 1) if per_site else (n_sites, n_depths))
    sites = np.repeat(np.arange(n_sites), n_depths)
    return observed.ravel(), (observed + error).ravel(), sites


def test_rmse_interval_covers_the_truth_at_the_nominal_rate_with_the_delta_method_width():
    # e ~ N(0, sigma²), N independent pairs: Var(MSE) = 2 sigma^4 / N, so by the delta method
    # sd(RMSE) = sigma / sqrt(2 N) and sd(ME) = sigma / sqrt(N)
    rng = np.random.default_rng(3)
    sigma, n_sites, n_depths, draws = 2.0, 150, 2, 300
    n = n_sites * n_depths
    covered, widths, me_covered, me_widths = 0, [], 0, []
    for draw in range(draws):
        observed, predicted, sites = _normal_errors(rng, n_sites, n_depths, sigma)
        (bounds,) = bootstrap_intervals(observed, predicted, sites, seed=draw)
        covered += bounds["rmse_lo"] <= sigma <= bounds["rmse_hi"]
        widths.append(bounds["rmse_hi"] - bounds["rmse_lo"])
        me_covered += bounds["me_lo"] <= 0 <= bounds["me_hi"]
        me_widths.append(bounds["me_hi"] - bounds["me_lo"])
    # 95 % of 300 draws: 285 ± 3.8 (binomial sd); percentile intervals run slightly short at this n
    assert 0.90 <= covered / draws <= 0.99
    assert 0.90 <= me_covered / draws <= 0.99
    assert np.mean(widths) == pytest.approx(2 * Z95 * sigma / math.sqrt(2 * n), rel=0.08)
    assert np.mean(me_widths) == pytest.approx(2 * Z95 * sigma / math.sqrt(n), rel=0.08)


def test_resampling_is_by_site_so_errors_shared_down_a_profile_widen_the_interval():
    # every site's six depths share one error: 200 independent errors, not 1,200
    rng = np.random.default_rng(5)
    sigma, n_sites, n_depths = 1.5, 200, 6
    observed, predicted, sites = _normal_errors(rng, n_sites, n_depths, sigma, per_site=True)
    (by_site,) = bootstrap_intervals(observed, predicted, sites)
    (by_sample,) = bootstrap_intervals(observed, predicted, np.arange(observed.size))  # each pair its own site
    site_width = by_site["rmse_hi"] - by_site["rmse_lo"]
    sample_width = by_sample["rmse_hi"] - by_sample["rmse_lo"]
    assert site_width == pytest.approx(2 * Z95 * sigma / math.sqrt(2 * n_sites), rel=0.2)
    assert site_width / sample_width == pytest.approx(math.sqrt(n_depths), rel=0.2)


def test_one_site_with_every_depth_has_no_sampling_variation_to_show():
    # a resample of one site is that site again: the interval collapses onto the estimate, whatever the
    # number of samples; a bootstrap over samples would give it a width
    observed = np.array([30.0, 22.0, 15.0, 9.0, 6.0, 4.0])
    predicted = np.array([27.0, 24.0, 13.0, 10.0, 4.5, 4.4])
    (bounds,) = bootstrap_intervals(observed, predicted, ["A"] * 6)
    estimate = regression_metrics(observed, predicted)
    for name in CI_METRICS:
        assert bounds[f"{name}_lo"] == pytest.approx(estimate[name], rel=1e-9)
        assert bounds[f"{name}_hi"] == pytest.approx(estimate[name], rel=1e-9)
    (by_sample,) = bootstrap_intervals(observed, predicted, range(6))
    assert by_sample["rmse_hi"] - by_sample["rmse_lo"] > 0.5


def test_bootstrap_is_seeded_and_keeps_undefined_metrics_nan():
    rng = np.random.default_rng(8)
    observed, predicted, sites = _normal_errors(rng, 40, 3, 1.0)
    assert bootstrap_intervals(observed, predicted, sites, seed=1) == bootstrap_intervals(
        observed, predicted, sites, seed=1
    )
    assert bootstrap_intervals(observed, predicted, sites, seed=1) != bootstrap_intervals(
        observed, predicted, sites, seed=2
    )
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        (flat,) = bootstrap_intervals([2.0, 2.0, 2.0], [1.0, 2.5, 3.0], ["a", "b", "c"])  # constant observations
        (empty,) = bootstrap_intervals([np.nan], [1.0], ["a"])
    assert math.isnan(flat["r2_lo"]) and math.isnan(flat["r2_hi"]) and flat["rmse_lo"] > 0
    assert all(math.isnan(empty[name]) for name in CI_NAMES)


def test_metrics_table_bounds_enclose_each_row_and_follow_its_pairs():
    rng = np.random.default_rng(11)
    observed, predicted, sites = _normal_errors(rng, 120, 3, 2.0)
    labels = np.tile(["0-5", "5-15", "15-30"], 120)
    groups = np.where(sites % 2 == 0, "crop", "grass")
    table = metrics_table(observed, predicted, labels, groups=groups, sites=sites)
    assert len(table) == 12
    for row in table:
        for name in CI_METRICS:
            assert row[f"{name}_lo"] <= row[name] <= row[f"{name}_hi"]
        assert math.isnan(row["picp"]) and math.isnan(row["pi_width"])  # no prediction intervals given
    overall, crop = table[3], table[7]
    assert (overall["depth"], crop["depth"], crop["group"]) == ("all", "all", "crop")
    # half the sites: an interval about sqrt(2) times as wide
    ratio = (crop["rmse_hi"] - crop["rmse_lo"]) / (overall["rmse_hi"] - overall["rmse_lo"])
    assert ratio == pytest.approx(math.sqrt(2), rel=0.25)
    without_sites = metrics_table(observed, predicted, labels)
    assert all(math.isnan(row[name]) for row in without_sites for name in CI_NAMES)
    with pytest.raises(ValueError, match="359 site ids"):
        metrics_table(observed, predicted, labels, sites=sites[:-1])


def test_paired_difference_is_zero_for_identical_predictions_and_antisymmetric():
    rng = np.random.default_rng(13)
    observed, predicted, sites = _normal_errors(rng, 100, 4, 2.0)
    other = observed + rng.normal(0, 2.1, observed.size)
    assert paired_rmse_difference(observed, predicted, predicted.copy(), sites) == RmseDifference(0.0, 0.0, 0.0)
    forward = paired_rmse_difference(observed, predicted, other, sites)
    backward = paired_rmse_difference(observed, other, predicted, sites)
    # swapping the models gives the reciprocal ratio with its bounds swapped
    assert (1 + forward.percent / 100) * (1 + backward.percent / 100) == pytest.approx(1, rel=1e-12)
    assert (1 + forward.lo / 100) * (1 + backward.hi / 100) == pytest.approx(1, rel=1e-12)
    assert (1 + forward.hi / 100) * (1 + backward.lo / 100) == pytest.approx(1, rel=1e-12)
    rmse = [regression_metrics(observed, p)["rmse"] for p in (predicted, other)]
    assert forward.percent == pytest.approx(100 * (rmse[0] / rmse[1] - 1), rel=1e-9)
    assert forward.lo < forward.percent < forward.hi


def test_paired_difference_detects_a_small_real_improvement_that_separate_intervals_cannot():
    # the worse model's errors are the better one's plus independent noise of 5 % of their variance: an RMSE
    # 2.5 % worse, inside the better model's own RMSE interval (±4.5 %), outside the paired interval
    rng = np.random.default_rng(17)
    observed, better, sites = _normal_errors(rng, 300, 3, 2.0)
    worse = better + rng.normal(0, 0.45, observed.size)
    difference = paired_rmse_difference(observed, better, worse, sites)
    assert difference.hi < 0
    own = bootstrap_intervals(observed, better, sites)[0]
    reference = regression_metrics(observed, worse)["rmse"]
    assert own["rmse_lo"] < reference < own["rmse_hi"]  # unpaired, the two models overlap
    assert str(RmseDifference(-1.04, -2.93, 0.8)) == "−1.0 % (−2.9 to +0.8)"


def test_interval_quality_counts_observations_inside_their_bounds():
    observed = [1.0, 2.0, 3.0, 4.0, np.nan]
    lower = [0.5, 2.0, 3.5, 1.0, 0.0]
    upper = [1.5, 2.5, 4.0, 3.0, 1.0]
    quality = interval_quality(observed, lower, upper)
    assert quality["picp"] == pytest.approx(0.5)  # 1 inside, 2 on the lower bound; 3 below, 4 above
    assert quality["pi_width"] == pytest.approx((1.0 + 0.5 + 0.5 + 2.0) / 4)
    table = metrics_table(observed, [1, 2, 3, 4, 5], ["a", "a", "b", "b", "b"], lower=lower, upper=upper)
    assert [(row["depth"], row["picp"]) for row in table] == [("a", 1.0), ("b", 0.0), ("all", 0.5)]
    with pytest.raises(ValueError, match="both the lower and the upper"):
        metrics_table(observed, [1, 2, 3, 4, 5], ["a"] * 5, lower=lower)


def test_resamples_drawn_in_chunks_are_the_same_resamples(monkeypatch):
    # a survey of many sites is resampled a few resamples at a time, to bound memory: same seed, same result
    rng = np.random.default_rng(19)
    observed, predicted, sites = _normal_errors(rng, 50, 3, 1.0)
    whole = bootstrap_intervals(observed, predicted, sites, seed=4)[0]
    difference = paired_rmse_difference(observed, predicted, observed + 1.1 * (predicted - observed), sites)
    monkeypatch.setattr(metrics, "_CHUNK_CELLS", 50 * 7)  # chunks of 7 resamples, the last one of 6
    assert bootstrap_intervals(observed, predicted, sites, seed=4)[0] == pytest.approx(whole, rel=1e-12)
    chunked = paired_rmse_difference(observed, predicted, observed + 1.1 * (predicted - observed), sites)
    assert (chunked.lo, chunked.hi) == pytest.approx((difference.lo, difference.hi), rel=1e-12)
