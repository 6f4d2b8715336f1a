"""Equal-area spline harmonisation: closed forms, hand-computed cases, the defining properties of the fit
(Bishop et al. 1999) and agreement with the `mpspline` 0.2.0 package."""

from __future__ import annotations

import csv
import logging
import math
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.integrate import quad

from soc_depth_mapper.core.spline import Rejection, fit_equal_area, harmonise

EDGEROI = Path(__file__).resolve().parents[2] / "sample_data" / "edgeroi"


# --- random profiles ------------------------------------------------------------------------------------


@st.composite
def profiles(draw, max_horizons: int = 7, gaps: bool = True, fractional: bool = True):
    """One valid profile as (tops, bottoms, values): sorted, non-overlapping, optional gaps and half-cm depths."""
    n = draw(st.integers(1, max_horizons))
    step = 0.5 if fractional else 1.0
    thickness = np.array(draw(st.lists(st.integers(1, 80), min_size=n, max_size=n))) * step
    gap_sizes = np.array(draw(st.lists(st.integers(0, 20) if gaps else st.just(0), min_size=n, max_size=n)))
    gap_sizes = gap_sizes * step
    bottoms = np.cumsum(thickness + gap_sizes)
    tops = bottoms - thickness
    values = np.array(draw(st.lists(st.floats(0.0, 100.0), min_size=n, max_size=n)))
    return tops, bottoms, values


def fit_one(tops, bottoms, values, lam):
    return fit_equal_area(np.atleast_2d(tops), np.atleast_2d(bottoms), np.atleast_2d(values), lam)


def roughness(spline) -> float:
    """∫ f'(x)² dx of a one-profile fit, in closed form from its coefficients (gaps: slope² x width)."""
    thickness = spline.bottoms[0] - spline.tops[0]
    b, c = spline.slope_top[0], spline.curvature[0]
    inside = np.sum(b * b * thickness + 2 * b * c * thickness**2 + 4 / 3 * c * c * thickness**3)
    gaps = spline.tops[0, 1:] - spline.bottoms[0, :-1]
    return float(inside + np.sum(spline.slope_bottom[0, :-1] ** 2 * gaps))


# --- the fit --------------------------------------------------------------------------------------------


def test_two_horizons_match_the_closed_form():
    # Z = [[1.03, -0.03], [-0.03, 1.03]] for 0-10 = 6, 10-20 = 4, lambda 0.1 (R = [40], 6 n lambda = 1.2)
    spline = fit_one([0, 10], [10, 20], [6, 4], 0.1)
    np.testing.assert_allclose(spline.means[0], [5.9433962264, 4.0566037736], rtol=0, atol=1e-10)
    result = harmonise(["p", "p"], [0, 10], [10, 20], [6, 4], depths=[0, 10, 20], lam=0.1)
    np.testing.assert_allclose(result.values[0], [5.9433962264, 4.0566037736], atol=1e-10)
    np.testing.assert_allclose(result.rmse, [0.0566037736], atol=1e-10)


@settings(max_examples=60, deadline=None)
@given(profiles())
def test_lambda_zero_returns_the_horizon_values(profile):
    tops, bottoms, values = profile
    spline = fit_one(tops, bottoms, values, 0.0)
    np.testing.assert_allclose(spline.means[0], values, rtol=1e-12, atol=1e-12)


@settings(max_examples=60, deadline=None)
@given(profiles(), st.sampled_from([0.0, 0.01, 0.1, 1.0, 10.0]))
def test_spline_is_smooth_flat_at_both_ends_and_keeps_the_smoothed_means(profile, lam):
    """A C1 quadratic spline with zero end slopes is fixed by its horizon means, so these checks pin it down."""
    tops, bottoms, values = profile
    spline = fit_one(tops, bottoms, values, lam)
    thickness = bottoms - tops
    scale = 1 + np.abs(values).max()
    end_value = spline.level[0] + spline.slope_top[0] * thickness + spline.curvature[0] * thickness**2
    end_slope = spline.slope_top[0] + 2 * spline.curvature[0] * thickness
    # value and slope continue across each boundary; a gap is crossed by a line of the boundary slope
    gap = tops[1:] - bottoms[:-1]
    np.testing.assert_allclose(end_value[:-1] + end_slope[:-1] * gap, spline.level[0, 1:], atol=1e-9 * scale)
    np.testing.assert_allclose(end_slope[:-1], spline.slope_top[0, 1:], atol=1e-9 * scale)
    assert spline.slope_top[0, 0] == 0 and abs(end_slope[-1]) <= 1e-9 * scale
    # mass preservation: the spline integrated over each horizon gives back its smoothed mean
    for j in range(len(tops)):
        mean = spline.integral(tops[j], bottoms[j])[0] / thickness[j]
        assert mean == pytest.approx(spline.means[0, j], rel=1e-9, abs=1e-9 * scale)


@settings(max_examples=40, deadline=None)
@given(profiles(max_horizons=6), st.sampled_from([0.01, 0.1, 1.0]))
def test_fit_minimises_the_bishop_objective(profile, lam):
    """s̄ minimises (1/n) Σ (y - s̄)² + λ ∫ f'², f being the λ = 0 spline through s̄: the gradient is zero."""
    tops, bottoms, values = profile

    def objective(means):
        return np.mean((values - means) ** 2) + lam * roughness(fit_one(tops, bottoms, means, 0.0))

    best = fit_one(tops, bottoms, values, lam).means[0]
    step = 1e-3 * (1 + np.abs(values).max())
    for j in range(len(values)):
        shift = np.zeros_like(best)
        shift[j] = step
        # exact for a quadratic objective, so only rounding is left
        gradient = (objective(best + shift) - objective(best - shift)) / (2 * step)
        assert abs(gradient) <= 1e-7 * (1 + np.abs(values).max())


@settings(max_examples=40, deadline=None)
@given(profiles(), st.floats(0.001, 5.0), st.floats(1.5, 20.0))
def test_larger_lambda_gives_a_smoother_curve(profile, lam, factor):
    tops, bottoms, values = profile
    rougher = roughness(fit_one(tops, bottoms, values, lam))
    smoother = roughness(fit_one(tops, bottoms, values, lam * factor))
    assert smoother <= rougher * (1 + 1e-9) + 1e-12


def test_integral_agrees_with_numerical_integration_across_a_gap():
    tops, bottoms, values = np.array([0, 12.5, 40]), np.array([12.5, 25.25, 71]), np.array([20.0, 9.0, 3.0])
    spline = fit_one(tops, bottoms, values, 0.1)

    def curve(depth: float) -> float:
        return float(spline.at([depth])[0, 0])

    for upper, lower in [(0, 5), (2.5, 31.3), (20, 45), (25.25, 40), (60, 100)]:
        expected, _ = quad(curve, upper, min(lower, 71), points=[12.5, 25.25, 40], epsabs=1e-12)
        assert spline.integral(upper, lower)[0] == pytest.approx(expected, rel=1e-9)


# --- harmonise: hand-computed cases ----------------------------------------------------------------------

# 0-10 cm = 10, 10-20 cm = 0 with lambda 0: f(x) = 12.5 - 0.075 x² above 10 cm and 5 - 1.5 u + 0.075 u²
# (u = x - 10) below, which dips to -2.5 at 20 cm.
DIP = {"profile_ids": ["a", "a"], "tops": [0, 10], "bottoms": [10, 20], "values": [10.0, 0.0], "lam": 0.0}


def test_exact_means_are_analytic_integrals_of_the_pointwise_clamped_spline():
    depths = [0, 5, 15, 20]
    loose = harmonise(**DIP, depths=depths, vlow=-5)
    # 0-5: (62.5 - 3.125) / 5; 5-15: 1/10 of ∫ both pieces; 15-20: ∫_5^10 (5 - 1.5u + 0.075u²) du / 5
    upper = (12.5 * 5 - 0.025 * (1000 - 125)) + (5 * 5 - 0.75 * 25 + 0.025 * 125)
    np.testing.assert_allclose(loose.values[0], [11.875, upper / 10, -1.875], atol=1e-12)
    clamped = harmonise(**DIP, depths=depths, vlow=-1, vhigh=11)
    # 12.5 - 0.075 x² falls to 11 at x = √20; 5 - 1.5u + 0.075u² falls to -1 at u = 10 - √20; 5-15 stays within
    root = math.sqrt(20)
    top = (11 * root + 12.5 * (5 - root) - 0.025 * (125 - root**3)) / 5
    end = 10 - root
    bottom = (5 * (end - 5) - 0.75 * (end**2 - 25) + 0.025 * (end**3 - 125) - root) / 5
    np.testing.assert_allclose(clamped.values[0], [top, upper / 10, bottom], rtol=0, atol=1e-12)


def scaled_mpspline_means(ids, tops, bottoms, values, depths, lam, vlow, vhigh, scale):
    """mpspline's 1-cm slices on the profile stretched `scale` times, i.e. slices 1/scale cm thick on the
    original one: stretching depths by k and λ by k leaves the fitted curve's shape unchanged (the roughness
    ∫ f'² shrinks by 1/k), so as `scale` grows the means approach the exact integrals of the clamped curve."""
    return mpspline_means(
        ids,
        np.round(np.asarray(tops) * scale),
        np.round(np.asarray(bottoms) * scale),
        values,
        [d * scale for d in depths],
        lam * scale,
        vlow=vlow,
        vhigh=vhigh,
    )[0]


def test_exact_method_is_the_thin_slice_limit_of_mpspline2_where_the_spline_crosses_a_limit():
    # 30-60 cm: the spline rises from about 3 to above 100 and crosses VHIGH = 14 inside the interval, where
    # a clamped mean would be 14.0; mpspline2's 1-cm slices give 7.96
    profile = (["p"] * 4, [0, 20, 30, 50], [20, 30, 50, 70], [6.0, 4.0, 3.0, 100.0])
    depths = (0, 5, 15, 30, 60, 100, 200)
    exact = harmonise(*profile, depths, vhigh=14).values[0]
    assert exact[3] == pytest.approx(8.19102, abs=1e-5) and exact[4] == 14
    assert harmonise(*profile, depths, vhigh=14, method="mpspline2").values[0, 3] == pytest.approx(7.961712, abs=1e-6)
    for scale in (1, 10, 100, 1000):  # the slices' error shrinks as their thickness, towards the exact means
        thin = scaled_mpspline_means(*profile, depths, 0.1, 0.0, 14.0, scale)[0]
        np.testing.assert_allclose(thin[:5], exact[:5], rtol=0, atol=0.25 / scale)


@pytest.mark.parametrize(("vlow", "vhigh"), [(0.0, 20.0), (2.0, 1000.0)])
def test_exact_method_matches_thin_mpspline_slices_on_clamped_random_profiles(vlow, vhigh):
    ids, tops, bottoms, values = random_horizon_table(60, seed=27)
    tops, bottoms = np.round(tops, 2), np.round(bottoms, 2)  # depths the stretched copy holds exactly
    depths = (0, 5, 15, 30, 60, 100, 200)
    ours = harmonise(ids, tops, bottoms, values, depths, lam=2.0, vlow=vlow, vhigh=vhigh)
    thin = scaled_mpspline_means(ids, tops, bottoms, values, depths, 2.0, vlow, vhigh, scale=1000)
    np.testing.assert_array_equal(np.isfinite(ours.values), np.isfinite(thin))
    np.testing.assert_allclose(ours.values, thin, rtol=0, atol=1e-3)


def test_mpspline2_method_clamps_each_cm_before_averaging():
    # slices 15..19 cm: u = 5..9 gives -0.625, -1.3, -1.825, -2.2, -2.425
    loose = harmonise(**DIP, depths=[15, 20], vlow=-5, method="mpspline2")
    assert loose.values[0, 0] == pytest.approx((-0.625 - 1.3 - 1.825 - 2.2 - 2.425) / 5, abs=1e-12)
    clamped = harmonise(**DIP, depths=[15, 20], vlow=-1, method="mpspline2")
    assert clamped.values[0, 0] == pytest.approx((-0.625 - 4) / 5, abs=1e-12)
    at_zero = harmonise(**DIP, depths=[15, 20], method="mpspline2")
    assert at_zero.values[0, 0] == 0


@settings(max_examples=40, deadline=None)
@given(
    st.lists(profiles(), min_size=1, max_size=5),
    st.sampled_from(["exact", "mpspline2"]),
    st.floats(0.0, 40.0),
    st.floats(0.0, 80.0),
)
def test_values_are_clamped_and_valid_profiles_give_no_nan(batch, method, vlow, width):
    ids, tops, bottoms, values = _stack(batch)
    depths = [0, 5, 15, 30]
    result = harmonise(ids, tops, bottoms, values, depths=depths, vlow=vlow, vhigh=vlow + width, method=method)
    assert result.rejections == []
    finite = np.isfinite(result.values)
    assert np.all((result.values[finite] >= vlow) & (result.values[finite] <= vlow + width))
    assert np.all(np.isfinite(result.rmse))
    # an interval is NaN only when no part of it lies between the first top and the last bottom
    first_top = np.array([p[0][0] for p in batch])[:, None]
    last_bottom = np.array([p[1][-1] for p in batch])[:, None]
    upper, lower = np.array(depths[:-1])[None, :], np.array(depths[1:])[None, :]
    if method == "exact":
        covered = (np.minimum(lower, last_bottom) - np.maximum(upper, first_top)) > 0
    else:  # whole-cm slices d with first top <= d < last bottom
        covered = (np.minimum(lower, np.ceil(last_bottom)) - np.maximum(upper, np.ceil(first_top))) > 0
    np.testing.assert_array_equal(finite, covered)


@settings(max_examples=40, deadline=None)
@given(st.lists(profiles(), min_size=1, max_size=5), st.randoms(use_true_random=False))
def test_row_order_does_not_matter(batch, random):
    ids, tops, bottoms, values = _stack(batch)
    order = list(range(len(ids)))
    random.shuffle(order)
    for method in ("exact", "mpspline2"):
        straight = harmonise(ids, tops, bottoms, values, method=method)
        shuffled = harmonise(ids[order], tops[order], bottoms[order], values[order], method=method)
        rank = {pid: i for i, pid in enumerate(shuffled.profile_ids)}
        back = [rank[pid] for pid in straight.profile_ids]
        np.testing.assert_allclose(shuffled.values[back], straight.values, rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(shuffled.rmse[back], straight.rmse, rtol=1e-12, atol=1e-12)


def test_exact_method_reproduces_smoothed_means_over_the_horizons():
    tops, bottoms, values = [0, 8, 21, 45], [8, 21, 45, 90], [14.0, 9.5, 4.0, 1.2]
    result = harmonise(["p"] * 4, tops, bottoms, values, depths=[0, 8, 21, 45, 90], lam=0.3, vhigh=1e9)
    np.testing.assert_allclose(result.values[0], fit_one(tops, bottoms, values, 0.3).means[0], rtol=1e-12)


def test_fractional_depths():
    # exact: 2.5-7.5 cm of the DIP profile is ∫ (12.5 - 0.075 x²) / 5 = 12.5 - 0.075 (421.875 - 15.625) / 15
    result = harmonise(**DIP, depths=[2.5, 7.5])
    assert result.values[0, 0] == pytest.approx(10.46875, abs=1e-12)
    # a horizon 0.5-10.5 cm covers half of 0-1 cm in the exact method; in mpspline2 the slice 0-1 cm counts as
    # covered only if 0 cm is, and 10-11 cm is covered because 10 cm lies in the horizon
    single = {"profile_ids": [1], "tops": [0.5], "bottoms": [10.5], "values": [3.0]}
    exact = harmonise(**single, depths=[0, 1, 10, 11, 12])
    np.testing.assert_array_equal(exact.values[0], [3, 3, 3, np.nan])
    slices = harmonise(**single, depths=[0, 1, 10, 11, 12], method="mpspline2")
    np.testing.assert_array_equal(slices.values[0], [np.nan, 3, 3, np.nan])
    with pytest.raises(ValueError, match="whole cm"):
        harmonise(**single, depths=[0, 2.5, 10], method="mpspline2")


@pytest.mark.parametrize("method", ["exact", "mpspline2"])
def test_gaps_count_as_covered_and_are_bridged_by_a_line(method):
    # constant data: the spline is flat, so the gap (10-20 cm) carries the same value
    flat = harmonise([7, 7], [0, 20], [10, 30], [4.0, 4.0], depths=[0, 10, 20, 30, 40], method=method)
    np.testing.assert_allclose(flat.values[0], [4, 4, 4, np.nan])
    # λ = 0: boundary slope b = 6 (2 - 8) / R with R = 2 (10 + 10) + 6 · 10 = 100, so b = -0.36; the upper
    # quadratic 8.6 - 0.018 x² ends at 6.8 cm with that slope, the line reaches 6.8 - 3.6 = 3.2 at 20 cm, where
    # the lower quadratic 3.2 - 0.36 u + 0.018 u² starts: the gap mean is (6.8 + 3.2) / 2
    sloped = harmonise([7, 7], [0, 20], [10, 30], [8.0, 2.0], depths=[0, 10, 20, 30], lam=0.0)
    np.testing.assert_allclose(sloped.values[0], [8.0, 5.0, 2.0], atol=1e-12)
    spline = fit_one([0, 20], [10, 30], [8.0, 2.0], 0.0)
    np.testing.assert_allclose(spline.at([0, 10, 15, 20, 29]), [[8.6, 6.8, 5.0, 3.2, 3.2 - 3.24 + 1.458]], atol=1e-12)


@pytest.mark.parametrize("method", ["exact", "mpspline2"])
def test_single_horizon_fills_the_intervals_it_covers(method):
    result = harmonise(["x"], [5], [40], [12.5], method=method)
    np.testing.assert_array_equal(result.values[0], [np.nan, 12.5, 12.5, 12.5, np.nan, np.nan])
    assert result.rmse[0] == 0
    clamped = harmonise(["x"], [5], [40], [12.5], vhigh=10, method=method)
    assert np.nanmax(clamped.values) == 10


# --- harmonise: rejections and inputs --------------------------------------------------------------------


def test_each_rejection_rule_is_reported_with_its_row_and_reason():
    rows = [
        ("good", 0, 10, 5.0),
        ("good", 10, 25, np.nan),  # 1 missing value
        ("good", 25, 40, 3.0),
        ("good", -5, 0, 30.0),  # 3 negative depth
        ("good", 40, 40, 2.0),  # 4 zero thickness
        ("good", 60, 50, 1.0),  # 5 top below bottom
        ("good", np.nan, 70, 1.0),  # 6 missing depth
        ("overlap", 0, 20, 4.0),
        ("overlap", 15, 30, 3.0),
        ("empty", 0, 10, None),  # 9 missing value, so nothing is left of the profile
    ]
    ids, tops, bottoms, values = (list(column) for column in zip(*rows))
    result = harmonise(ids, tops, bottoms, values)

    by_row = {r.horizon_index: r for r in result.rejections if r.horizon_index is not None}
    assert sorted(by_row) == [1, 3, 4, 5, 6, 9]
    assert all(by_row[i].profile_id == "good" for i in (1, 3, 4, 5, 6)) and by_row[9].profile_id == "empty"
    assert "value is missing" in by_row[1].reason
    assert by_row[3].reason.startswith("horizon -5-0 cm: negative depth")
    assert "zero thickness" in by_row[4].reason
    assert by_row[5].reason.startswith("horizon 60-50 cm: top is not above bottom")
    assert "depth is missing" in by_row[6].reason
    whole = [r for r in result.rejections if r.horizon_index is None]
    assert [r.profile_id for r in whole] == ["overlap", "empty"]
    assert "overlap" in whole[0].reason and "0-20 cm" in whole[0].reason and "15-30 cm" in whole[0].reason
    assert "no usable horizons" in whole[1].reason

    assert list(result.profile_ids) == ["good", "overlap", "empty"]
    assert np.isnan(result.values[1:]).all() and np.isnan(result.rmse[1:]).all()
    # what is left of "good" (0-10 = 5, 25-40 = 3) harmonises as if given alone
    alone = harmonise(["good", "good"], [0, 25], [10, 40], [5.0, 3.0])
    np.testing.assert_array_equal(result.values[0], alone.values[0])
    assert result.rmse[0] == alone.rmse[0]


def test_touching_horizons_do_not_overlap_and_ids_keep_their_type_and_order():
    result = harmonise([3, "b", 3, "b"], [10, 0, 0, 10], [20, 10, 10, 20], [1.0, 2.0, 3.0, 4.0])
    assert result.rejections == []
    assert list(result.profile_ids) == [3, "b"]
    numeric = harmonise(np.array([9, 2, 9]), [0, 0, 5], [5, 5, 10], [1.0, 2.0, 3.0])
    np.testing.assert_array_equal(numeric.profile_ids, [9, 2])


def test_empty_input_gives_empty_result():
    result = harmonise([], [], [], [])
    assert result.values.shape == (0, 6) and result.rmse.shape == (0,) and result.rejections == []


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ({"method": "cubic"}, "Unknown spline method"),
        ({"lam": -1}, "lambda must be 0 or more"),
        ({"vlow": 10, "vhigh": 1}, "swap them"),
        ({"depths": [0, 30, 10]}, "must increase"),
    ],
)
def test_bad_settings_are_explained(arguments, message):
    with pytest.raises(ValueError, match=message):
        harmonise([1], [0], [10], [1.0], **arguments)


def test_bad_columns_are_explained():
    with pytest.raises(ValueError, match="one entry per horizon"):
        harmonise([1, 1], [0, 10], [10], [1.0, 2.0])
    with pytest.raises(ValueError, match="must be numbers"):
        harmonise([1], [0], [10], ["high"])


def test_rejection_is_a_plain_record():
    assert Rejection("p", "why", 3) == Rejection("p", "why", 3)


# --- agreement with mpspline 0.2.0 -----------------------------------------------------------------------


def mpspline_means(ids, tops, bottoms, values, depths, lam, vlow=0.0, vhigh=1000.0):
    """Interval means and RMSE from `mpspline.spline_one`, profile by profile, in order of first appearance."""
    pd = pytest.importorskip("pandas")
    algorithm = pytest.importorskip("mpspline.algorithm")
    logging.getLogger("mpspline").setLevel(logging.ERROR)
    intervals = [(int(a), int(b)) for a, b in zip(depths[:-1], depths[1:])]
    table = pd.DataFrame({"SID": ids, "UD": tops, "LD": bottoms, "v": values})
    means, rmse = [], []
    for _, site in table.groupby("SID", sort=False):
        result = algorithm.spline_one(
            site.reset_index(drop=True), "v", lam=lam, target_depths=intervals, vlow=vlow, vhigh=vhigh
        )
        means.append(result["est_dcm"])
        rmse.append(result["rmse"])
    return np.array(means), np.array(rmse)


def random_horizon_table(n_profiles: int, seed: int):
    """Messy profiles: 2-8 horizons, whole, half-cm and 0.01-cm depths, gaps, starts below 0 cm, rows shuffled,
    values from near 0 (so that the spline dips below vlow = 0) to about 60."""
    rng = np.random.default_rng(seed)
    rows = []
    for profile in range(n_profiles):
        n = rng.integers(2, 9)
        resolution = rng.choice([1.0, 0.5, 0.01])
        thickness = np.round(rng.uniform(2, 60, n) / resolution) * resolution
        gaps = np.where(rng.random(n) < 0.15, np.round(rng.uniform(1, 25, n) / resolution) * resolution, 0)
        gaps[0] = 0 if rng.random() < 0.8 else rng.integers(1, 30)
        bottoms = np.cumsum(thickness + gaps)
        values = rng.uniform(0, 1.5, n) if rng.random() < 0.2 else rng.lognormal(2, 0.8, n)
        rows += [(f"p{profile}", b - t, b, v) for t, b, v in zip(thickness, bottoms, values)]
    order = rng.permutation(len(rows))
    return tuple(np.array(column)[order] for column in zip(*rows))


@pytest.mark.parametrize(("lam", "vhigh"), [(0.1, 1000.0), (0.0, 1000.0), (2.0, 20.0)])
def test_mpspline2_method_equals_mpspline_on_random_profiles(lam, vhigh):
    ids, tops, bottoms, values = random_horizon_table(120, seed=int(lam * 10) + 7)
    depths = (0, 5, 15, 30, 60, 100, 200)
    ours = harmonise(ids, tops, bottoms, values, depths, lam=lam, vhigh=vhigh, method="mpspline2")
    expected, expected_rmse = mpspline_means(ids, tops, bottoms, values, depths, lam, vhigh=vhigh)
    np.testing.assert_allclose(ours.values, expected, rtol=0, atol=1e-9)
    np.testing.assert_allclose(ours.rmse, expected_rmse, rtol=0, atol=1e-9)
    assert np.isnan(ours.values).any()  # profiles that end above 200 cm or start below the surface


def edgeroi_orcdrc():
    """SOURCEID, top, bottom, ORCDRC of the 359 Edgeroi profiles (bundled sample data; GSIF R package, GPL)."""
    with (EDGEROI / "horizons.csv").open(newline="") as handle:
        rows = [(r["SOURCEID"], r["top"], r["bottom"], r["ORCDRC"]) for r in csv.DictReader(handle)]
    ids = np.array([r[0] for r in rows])
    numbers = np.array([[float(x) if x else np.nan for x in r[1:]] for r in rows])
    return ids, numbers[:, 0], numbers[:, 1], numbers[:, 2]


def test_mpspline2_method_equals_mpspline_on_edgeroi():
    ids, tops, bottoms, carbon = edgeroi_orcdrc()
    depths = (0, 5, 15, 30, 60, 100, 200)
    ours = harmonise(ids, tops, bottoms, carbon, depths, method="mpspline2")
    expected, expected_rmse = mpspline_means(ids, tops, bottoms, carbon, depths, 0.1)
    # mpspline 0.2.0 gives NaN for a profile with fewer than two measured horizons (we give the single value)
    measured = np.array([np.isfinite(carbon[ids == pid]).sum() for pid in ours.profile_ids])
    splined = measured >= 2
    assert splined.sum() > 300
    np.testing.assert_allclose(ours.values[splined], expected[splined], rtol=0, atol=1e-9)
    np.testing.assert_allclose(ours.rmse[splined], expected_rmse[splined], rtol=0, atol=1e-9)
    assert np.isnan(expected[~splined]).all()
    assert len([r for r in ours.rejections if r.horizon_index is None]) == (measured == 0).sum()


# --- helpers ---------------------------------------------------------------------------------------------


def _stack(batch):
    ids = np.concatenate([np.full(len(p[0]), i) for i, p in enumerate(batch)])
    tops, bottoms, values = (np.concatenate([p[k] for p in batch]) for k in range(3))
    return ids, tops, bottoms, values


def test_every_core_rejection_names_its_cause_apart_from_the_details():
    nan = math.nan
    horizons = [  # profile, top, bottom, value
        ("depth", nan, 10, 1),
        ("negative", -5, 10, 1),
        ("zero", 10, 10, 1),
        ("swapped", 20, 10, 1),
        ("value", 0, 10, nan),
        ("value", 10, 20, 2),
        ("overlap", 0, 10.5, 1),
        ("overlap", 5, 20, 1),
    ]
    result = harmonise(*zip(*horizons))
    kinds = {str(r.profile_id): r.kind for r in result.rejections if r.horizon_index is not None}
    assert kinds == {
        "depth": "a depth is missing",
        "negative": "negative depth",
        "zero": "zero thickness (top equals bottom)",
        "swapped": "top is not above bottom",
        "value": "value is missing",
    }
    whole = {str(r.profile_id): r.kind for r in result.rejections if r.horizon_index is None}
    assert whole == {
        "depth": "no usable horizons",
        "negative": "no usable horizons",
        "zero": "no usable horizons",
        "swapped": "no usable horizons",
        "overlap": "horizons overlap",
    }
    # the full reason still says where and what to do
    details = [r for r in result.rejections if r.horizon_index is not None]
    assert all(r.reason.startswith("horizon ") and r.kind in r.reason for r in details)


def test_an_overlap_names_both_rows_by_the_callers_names():
    result = harmonise(["p", "p", "q"], [0, 5, 0], [10, 20, 10], [1.0, 2.0, 3.0], row_names=["f7", "f8", "f9"])
    (rejection,) = result.rejections
    assert rejection.horizon_index is None and rejection.rows == (0, 1) and rejection.kind == "horizons overlap"
    assert rejection.reason.startswith("horizon 0-10 cm (f7) and horizon 5-20 cm (f8) overlap")
    with pytest.raises(ValueError, match="one row name per horizon"):
        harmonise(["p"], [0], [10], [1.0], row_names=[])
