"""Equal-area quadratic splines (Bishop et al. 1999, Geoderma 91:27-45) that turn soil horizons of any depth
into values over fixed depth intervals, fitted to all profiles at once.

Within each horizon the spline is a quadratic; its mean over the horizon is the smoothed value s̄, which is
pulled towards the measured value y by minimising

    (1/n) Σ (y_i - s̄_i)² + λ ∫ f'(x)² dx

over the profile. λ = 0 returns every horizon value exactly; a larger λ gives a smoother (flatter) curve that
fits the horizons less closely. The spline has zero slope at the top of the first and the bottom of the last
horizon, and crosses a gap between two horizons as a straight line, so the curve and its slope are continuous.

Speed: profiles are grouped by horizon count and each group is solved as one batch. The linear system of the
fit, s̄ = (I + 6nλ QᵀR⁻¹Q)⁻¹ y, is rewritten as the tridiagonal system (R + 6nλ QQᵀ) u = Q y with
s̄ = y - 6nλ Qᵀu and boundary slopes b = 6u, which a vectorised Thomas sweep solves for all profiles together.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np

from .depths import STANDARD_DEPTHS, parse_depth_list

METHODS: tuple[str, ...] = ("exact", "mpspline2")

#: the `Rejection.kind` of a horizon whose value is NaN (a caller that read the value from text may know why)
VALUE_MISSING = "value is missing"

#: profiles x 1-cm slices evaluated at a time by the mpspline2 method, to bound memory
_SLICES_PER_CHUNK = 1_000_000


@dataclass(frozen=True)
class Rejection:
    """A horizon that was dropped, or a profile that was not harmonised, and why."""

    profile_id: object
    reason: str
    horizon_index: int | None  # row index into the input arrays; None when the whole profile is rejected
    kind: str = ""  # the cause alone, e.g. "value is missing", for counting records per cause
    rows: tuple[int, ...] = ()  # the rows a whole-profile reason is about: the upper and lower overlapping horizon


@dataclass
class HarmonisedProfiles:
    """Interval means of one property for every input profile (rejected profiles give a row of NaN)."""

    profile_ids: np.ndarray  # (P,) in order of first appearance in the input
    values: np.ndarray  # (P, D) interval means, NaN where an interval is not covered
    rmse: np.ndarray  # (P,) RMSE of the smoothed horizon means against the measured values, NaN if rejected
    rejections: list[Rejection]


@dataclass(frozen=True)
class EqualAreaSplines:
    """Fitted splines of G profiles that have the same number n of horizons (row g = profile g).

    On horizon j the spline is ``level + slope_top * x + curvature * x**2`` with ``x = depth - tops[j]``; in
    the gap below horizon j it is the straight line of slope ``slope_bottom[j]`` that reaches ``level[j+1]``
    at ``tops[j+1]``.
    """

    tops: np.ndarray  # (G, n) cm, increasing, horizons do not overlap
    bottoms: np.ndarray  # (G, n) cm
    means: np.ndarray  # (G, n) smoothed horizon means s̄
    level: np.ndarray  # (G, n) spline value at the top of each horizon
    slope_top: np.ndarray  # (G, n) slope at the top of each horizon (0 at the surface of the profile)
    slope_bottom: np.ndarray  # (G, n) slope at the bottom of each horizon (0 at the base of the profile)
    curvature: np.ndarray  # (G, n) quadratic coefficient of each horizon

    def at(self, depths: np.ndarray) -> np.ndarray:
        """(K,) depths -> (G, K) spline values. A depth belongs to horizon j when top_j <= depth < bottom_j
        and to a gap when it lies between two horizons; above the first top and from the last bottom down the
        value is NaN (nothing is extrapolated). This is mpspline2's convention for its 1-cm slices."""
        depth = np.asarray(depths, dtype=np.float64)[None, :]
        n_profiles, n = self.tops.shape
        above = np.zeros((n_profiles, depth.shape[1]), dtype=np.intp)
        for j in range(n):
            above += self.tops[:, j : j + 1] <= depth
        horizon = above - 1  # the deepest horizon whose top is at or above the depth; -1 above the profile
        flat = np.maximum(horizon, 0) + (n * np.arange(n_profiles))[:, None]

        def pick(field: np.ndarray, index: np.ndarray = flat) -> np.ndarray:
            return field.ravel()[index]

        bottom = pick(self.bottoms)
        x = depth - pick(self.tops)
        quadratic = pick(self.level) + (pick(self.slope_top) + pick(self.curvature) * x) * x
        inside = (horizon >= 0) & (depth < bottom)
        result = np.where(inside, quadratic, np.nan)
        in_gap = ~inside & (horizon >= 0) & (horizon < n - 1)
        if in_gap.any():
            below = np.where(in_gap, flat + 1, flat)
            slope = pick(self.slope_bottom)
            start = pick(self.level, below) - slope * (pick(self.tops, below) - bottom)
            result = np.where(in_gap, start + slope * (depth - bottom), result)
        return result

    def slice_sums(self, upper: float, lower: float) -> tuple[np.ndarray, np.ndarray]:
        """Sum and number of the (unclamped) values `at` whole-cm depths d with upper <= d < lower, per profile
        (G,), in closed form: the sums of x and x² over consecutive integers replace evaluating every slice."""
        total = np.zeros(self.tops.shape[0])
        count = np.zeros(self.tops.shape[0])
        n = self.tops.shape[1]
        for j in range(n):
            top = self.tops[:, j]
            c, s1, s2 = _power_sums(np.ceil(top), np.ceil(self.bottoms[:, j]), upper, lower, top)
            total += self.level[:, j] * c + self.slope_top[:, j] * s1 + self.curvature[:, j] * s2
            count += c
            if j < n - 1:
                bottom, gap_end = self.bottoms[:, j], self.tops[:, j + 1]
                c, s1, _ = _power_sums(np.ceil(bottom), np.ceil(gap_end), upper, lower, bottom)
                slope = self.slope_bottom[:, j]
                total += (self.level[:, j + 1] - slope * (gap_end - bottom)) * c + slope * s1
                count += c
        return total, count

    def value_range(self) -> tuple[np.ndarray, np.ndarray]:
        """Lowest and highest value of each spline (G,) between the first top and the last bottom. The lines
        across gaps join the ends of the quadratics, so the ends and vertices of the quadratics suffice."""
        thickness = self.bottoms - self.tops
        end = self.level + (self.slope_top + self.curvature * thickness) * thickness
        curved = self.curvature != 0
        vertex = np.where(curved, -self.slope_top / np.where(curved, 2 * self.curvature, 1.0), 0.0)
        vertex_value = np.where(
            (vertex > 0) & (vertex < thickness), self.level + (self.slope_top + self.curvature * vertex) * vertex, end
        )
        low = np.minimum(np.minimum(self.level, end), vertex_value).min(axis=1)
        high = np.maximum(np.maximum(self.level, end), vertex_value).max(axis=1)
        return low, high

    def integral(self, upper: np.ndarray | float, lower: np.ndarray | float) -> np.ndarray:
        """∫ spline over [upper, lower] ∩ [first top, last bottom] for each profile (G,), analytically.
        `upper`/`lower` are scalars or (G,) arrays of depths in cm with upper <= lower."""
        total = np.zeros(self.tops.shape[0])
        for c0, c1, c2, u, v in self._pieces(upper, lower):
            total += _quadratic_integral(c0, c1, c2, u, v)
        return total

    def clamped_integral(
        self, upper: np.ndarray | float, lower: np.ndarray | float, vlow: float, vhigh: float
    ) -> np.ndarray:
        """∫ clip(spline, vlow, vhigh) over [upper, lower] ∩ [first top, last bottom] (G,), analytically: each
        piece is split where it crosses a limit, and between those points it lies wholly below, within or above
        the limits. This is the limit of mpspline2's clamped 1-cm slices as the slices get thinner."""
        total = np.zeros(self.tops.shape[0])
        for c0, c1, c2, u, v in self._pieces(upper, lower):
            cuts = [u, v, *_crossings(c0 - vlow, c1, c2), *_crossings(c0 - vhigh, c1, c2)]
            points = np.sort(np.stack([np.clip(np.where(np.isnan(c), u, c), u, v) for c in cuts], axis=1), axis=1)
            for a, b in zip(points[:, :-1].T, points[:, 1:].T):
                middle = (a + b) / 2
                value = c0 + (c1 + c2 * middle) * middle
                total += np.where(
                    value < vlow,
                    vlow * (b - a),
                    np.where(value > vhigh, vhigh * (b - a), _quadratic_integral(c0, c1, c2, a, b)),
                )
        return total

    def _pieces(self, upper: np.ndarray | float, lower: np.ndarray | float):
        """Per piece of the curve (the quadratic on each horizon, the line across each gap below it), its
        coefficients c0 + c1 x + c2 x² in x = depth - piece top and the part [u, v] of [upper, lower] on it
        (all (G,); zero width where the piece lies outside or a gap is absent)."""
        upper = np.broadcast_to(np.asarray(upper, dtype=np.float64), self.tops.shape[:1])
        lower = np.broadcast_to(np.asarray(lower, dtype=np.float64), self.tops.shape[:1])
        n = self.tops.shape[1]
        for j in range(n):
            top, bottom = self.tops[:, j], self.bottoms[:, j]
            u = np.clip(upper, top, bottom) - top
            v = np.clip(lower, top, bottom) - top
            yield self.level[:, j], self.slope_top[:, j], self.curvature[:, j], u, v
            if j < n - 1:
                gap_end = self.tops[:, j + 1]
                u = np.clip(upper, bottom, gap_end) - bottom
                v = np.clip(lower, bottom, gap_end) - bottom
                slope = self.slope_bottom[:, j]
                start = self.level[:, j + 1] - slope * (gap_end - bottom)
                yield start, slope, np.zeros_like(slope), u, v


def fit_equal_area(tops: np.ndarray, bottoms: np.ndarray, values: np.ndarray, lam: float) -> EqualAreaSplines:
    """Fits G profiles of n horizons each, given as (G, n) arrays sorted by depth without overlaps.

    λ (`lam`) >= 0 sets the smoothness: 0 reproduces the horizon values, larger values flatten the curve."""
    tops = np.asarray(tops, dtype=np.float64)
    bottoms = np.asarray(bottoms, dtype=np.float64)
    values = np.asarray(values, dtype=np.float64)
    n_profiles, n = values.shape
    thickness = bottoms - tops
    weight = 6.0 * n * lam
    boundary_slopes = np.zeros((n_profiles, n - 1))
    means = values.copy()
    if n > 1:
        gaps = tops[:, 1:] - bottoms[:, :-1]
        diagonal = 2.0 * (thickness[:, :-1] + thickness[:, 1:]) + 6.0 * gaps + 2.0 * weight
        off_diagonal = thickness[:, 1:-1] - weight
        u = _solve_symmetric_tridiagonal(diagonal, off_diagonal, np.diff(values, axis=1))
        means[:, :-1] += weight * u
        means[:, 1:] -= weight * u
        boundary_slopes = 6.0 * u
    zero = np.zeros((n_profiles, 1))
    slope_top = np.concatenate([zero, boundary_slopes], axis=1)
    slope_bottom = np.concatenate([boundary_slopes, zero], axis=1)
    curvature = (slope_bottom - slope_top) / (2.0 * thickness)
    level = means - slope_top * thickness / 2.0 - curvature * thickness**2 / 3.0
    return EqualAreaSplines(tops, bottoms, means, level, slope_top, slope_bottom, curvature)


def _solve_symmetric_tridiagonal(diagonal: np.ndarray, off_diagonal: np.ndarray, rhs: np.ndarray) -> np.ndarray:
    """Thomas algorithm on (G, m) systems at once; no pivoting needed as the matrices are diagonally
    dominant (R + 6nλQQᵀ is)."""
    m = diagonal.shape[1]
    pivot = diagonal.copy()
    forward = rhs.copy()
    for i in range(1, m):
        factor = off_diagonal[:, i - 1] / pivot[:, i - 1]
        pivot[:, i] -= factor * off_diagonal[:, i - 1]
        forward[:, i] -= factor * forward[:, i - 1]
    solution = np.empty_like(forward)
    solution[:, m - 1] = forward[:, m - 1] / pivot[:, m - 1]
    for i in range(m - 2, -1, -1):
        solution[:, i] = (forward[:, i] - off_diagonal[:, i] * solution[:, i + 1]) / pivot[:, i]
    return solution


def harmonise(
    profile_ids: Iterable[object],
    tops: Iterable[float],
    bottoms: Iterable[float],
    values: Iterable[float],
    depths: Sequence[float] = STANDARD_DEPTHS,
    lam: float = 0.1,
    vlow: float = 0.0,
    vhigh: float = 1000.0,
    method: str = "exact",
    row_names: Sequence[str] | None = None,
) -> HarmonisedProfiles:
    """Fits an equal-area spline to each profile and returns its means over the intervals between `depths`.

    One row per horizon in the inputs; rows of a profile may come in any order. Horizons with a missing value
    or depth, a negative depth or top >= bottom are dropped, and a profile with overlapping horizons is skipped;
    each case is listed in `rejections`. λ (`lam`) >= 0 sets the smoothness: 0 reproduces the horizon values,
    larger values give a smoother curve. The spline is clamped to [vlow, vhigh] point by point before it is
    averaged, as in mpspline2, so where it crosses a limit the interval means no longer preserve the horizon mass.

    Coverage: an interval is averaged over the part that lies between the top of the first and the bottom of
    the last horizon (gaps between horizons count as covered: the spline crosses them as a straight line, as
    in mpspline2); an interval entirely above or below the profile is NaN. A single horizon gives its value to
    every interval it covers.

    `method`:
    - "exact": the clamped spline is integrated analytically over the covered part of each interval (any
      depths): the limit of mpspline2's 1-cm averaging for ever thinner slices.
    - "mpspline2": the spline is evaluated at each whole cm d and taken as the value of the slice [d, d+1),
      slices are clamped, then averaged per interval, as R mpspline2 0.1.x and the `mpspline` 0.2.0 package
      do (depths must be whole cm). A slice counts as covered when d itself is, so a profile starting at
      0.5 cm leaves the slice 0-1 cm empty and one ending at 100.5 cm fills the slice 100-101 cm.
      Outputs equal `mpspline` 0.2.0's `spline_one` except where that package differs from the rules above:
      it returns NaN for a profile with one measured horizon, and fills a missing top of the first row (0) or
      bottom of the last row (its top + 10 cm) where we drop the horizon.

    `rmse` is what mpspline2 reports: the root mean square of y - s̄ over the horizons (0 for one horizon).

    `row_names` name the rows in messages the way the caller's user knows them (e.g. "feature 17"); by default
    "row i", the index into the inputs.
    """
    if method not in METHODS:
        raise ValueError(f"Unknown spline method '{method}'; choose one of {', '.join(METHODS)}.")
    boundaries = np.asarray(parse_depth_list(depths), dtype=np.float64)
    if method == "mpspline2" and not np.all(boundaries == np.round(boundaries)):
        raise ValueError(
            f"The mpspline2 method averages 1-cm slices, so depth boundaries must be whole cm (got "
            f"{', '.join(f'{d:g}' for d in boundaries)}); round them or use the 'exact' method."
        )
    if not (np.isfinite(lam) and lam >= 0):
        raise ValueError(f"The smoothing parameter lambda must be 0 or more (got {lam}); 0.1 is usual.")
    if not vlow <= vhigh:
        raise ValueError(f"The lower limit {vlow:g} is above the upper limit {vhigh:g}; swap them.")

    ids = _as_id_array(profile_ids)
    tops_cm = _as_float_array(tops, "top depths")
    bottoms_cm = _as_float_array(bottoms, "bottom depths")
    measured = _as_float_array(values, "values")
    if not len(ids) == len(tops_cm) == len(bottoms_cm) == len(measured):
        raise ValueError(
            f"Profile ids, tops, bottoms and values must have one entry per horizon; got {len(ids)}, "
            f"{len(tops_cm)}, {len(bottoms_cm)} and {len(measured)}."
        )

    if row_names is not None and len(row_names) != len(ids):
        raise ValueError(f"Give one row name per horizon; got {len(row_names)} for {len(ids)} horizons.")
    codes, first_rows = _number_profiles(ids)
    n_profiles = first_rows.size
    rejections, usable = _screen_horizons(ids, tops_cm, bottoms_cm, measured)

    rows = np.flatnonzero(usable)
    rows = rows[np.lexsort((bottoms_cm[rows], tops_cm[rows], codes[rows]))]
    profile_of_row = codes[rows]
    clash_upper, clash_lower = _first_overlaps(n_profiles, rows, profile_of_row, tops_cm, bottoms_cm)
    overlapping = clash_upper >= 0
    keep = ~overlapping[profile_of_row]
    rows, profile_of_row = rows[keep], profile_of_row[keep]
    horizon_counts = np.bincount(profile_of_row, minlength=n_profiles)
    for profile in np.flatnonzero(overlapping | (horizon_counts == 0)):
        if overlapping[profile]:
            upper, lower = int(clash_upper[profile]), int(clash_lower[profile])
            kind = "horizons overlap"
            reason = (
                f"{_describe(tops_cm[upper], bottoms_cm[upper])} ({_row_name(row_names, upper)}) and "
                f"{_describe(tops_cm[lower], bottoms_cm[lower])} ({_row_name(row_names, lower)}) overlap, so the "
                "profile is not harmonised; correct the depths so that each horizon starts at or below the bottom "
                "of the one above"
            )
            rows_named = (upper, lower)
        else:
            kind = "no usable horizons"
            reason = f"{kind}: every horizon of this profile was dropped (see the messages above)"
            rows_named = ()
        rejections.append(Rejection(ids[first_rows[profile]], reason, None, kind, rows_named))

    interval_values = np.full((n_profiles, boundaries.size - 1), np.nan)
    rmse = np.full(n_profiles, np.nan)
    first_of_profile = np.zeros(n_profiles + 1, dtype=np.intp)
    np.cumsum(horizon_counts, out=first_of_profile[1:])
    for n in np.unique(horizon_counts[horizon_counts > 0]):
        profiles = np.flatnonzero(horizon_counts == n)
        group_rows = rows[first_of_profile[profiles][:, None] + np.arange(n)]
        y = measured[group_rows]
        splines = fit_equal_area(tops_cm[group_rows], bottoms_cm[group_rows], y, lam)
        rmse[profiles] = np.sqrt(np.mean((y - splines.means) ** 2, axis=1))
        if method == "exact":
            interval_values[profiles] = _interval_means_exact(splines, boundaries, vlow, vhigh)
        else:
            interval_values[profiles] = _interval_means_1cm(splines, boundaries, vlow, vhigh)

    return HarmonisedProfiles(ids[first_rows], interval_values, rmse, rejections)


def _interval_means_exact(
    splines: EqualAreaSplines, boundaries: np.ndarray, vlow: float, vhigh: float
) -> np.ndarray:
    """Mean of the spline clamped pointwise to [vlow, vhigh] over the covered part of each interval. Clamping
    changes nothing for a spline that stays within the limits; only the others are split at the crossings."""
    profile_top, profile_bottom = splines.tops[:, 0], splines.bottoms[:, -1]
    low, high = splines.value_range()
    within = (low >= vlow) & (high <= vhigh)
    means = np.full((profile_top.size, boundaries.size - 1), np.nan)
    for i, (upper, lower) in enumerate(zip(boundaries[:-1], boundaries[1:])):
        covered_upper = np.maximum(upper, profile_top)
        covered_lower = np.minimum(lower, profile_bottom)
        covered = covered_lower > covered_upper
        if covered.any():
            width = np.where(covered, covered_lower - covered_upper, 1.0)
            end = np.maximum(covered_lower, covered_upper)
            integral = splines.integral(covered_upper, end)
            clamped = np.flatnonzero(~within & covered)
            if clamped.size:
                integral[clamped] = _subset(splines, clamped).clamped_integral(
                    covered_upper[clamped], end[clamped], vlow, vhigh
                )
            # a mean of clamped values can stray from the limits by rounding
            means[covered, i] = np.clip(integral[covered] / width[covered], vlow, vhigh)
    return means


def _interval_means_1cm(splines: EqualAreaSplines, boundaries: np.ndarray, vlow: float, vhigh: float) -> np.ndarray:
    """mpspline2's averaging: spline values at whole cm, clamped, averaged over the covered slices of each
    interval. Clamping changes nothing for a spline that stays within [vlow, vhigh], so those profiles are
    summed in closed form; only the others are evaluated slice by slice."""
    n_profiles = splines.tops.shape[0]
    means = np.empty((n_profiles, boundaries.size - 1))
    low, high = splines.value_range()
    within = (low >= vlow) & (high <= vhigh)
    with np.errstate(invalid="ignore", divide="ignore"):
        for i, (upper, lower) in enumerate(zip(boundaries[:-1], boundaries[1:])):
            total, count = splines.slice_sums(upper, lower)
            means[:, i] = np.where(count > 0, total / count, np.nan)
        clamped = np.flatnonzero(~within)
        slice_tops = np.arange(boundaries[0], boundaries[-1])
        starts = (boundaries[:-1] - boundaries[0]).astype(np.intp)
        chunk = max(1, _SLICES_PER_CHUNK // slice_tops.size)
        for first in range(0, clamped.size, chunk):
            part = clamped[first : first + chunk]
            slice_values = np.clip(_subset(splines, part).at(slice_tops), vlow, vhigh)
            covered = ~np.isnan(slice_values)
            totals = np.add.reduceat(np.where(covered, slice_values, 0.0), starts, axis=1)
            counts = np.add.reduceat(covered, starts, axis=1, dtype=np.intp)
            means[part] = np.where(counts > 0, totals / counts, np.nan)
    return np.clip(means, vlow, vhigh)  # a mean of clamped slices can stray from the limits by rounding


def _quadratic_integral(
    c0: np.ndarray, c1: np.ndarray, c2: np.ndarray, u: np.ndarray, v: np.ndarray
) -> np.ndarray:
    """∫_u^v c0 + c1 x + c2 x² dx."""
    return c0 * (v - u) + c1 * (v * v - u * u) / 2 + c2 * (v * v * v - u * u * u) / 3


def _crossings(c0: np.ndarray, c1: np.ndarray, c2: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The real roots of c0 + c1 x + c2 x² (NaN where there are fewer than two), by the formula that does not
    lose digits to cancellation."""
    with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
        root = np.sqrt(c1 * c1 - 4 * c2 * c0)  # NaN where the roots are complex
        q = -(c1 + np.where(c1 < 0, -root, root)) / 2
        quadratic = c2 != 0
        first = np.where(quadratic, q / np.where(quadratic, c2, 1.0), np.where(c1 != 0, -c0 / c1, np.nan))
        second = np.where(quadratic & (q != 0), c0 / q, np.nan)
    return first, second


def _power_sums(
    first: np.ndarray, end: np.ndarray, upper: float, lower: float, origin: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For the whole numbers k in [first, end) ∩ [upper, lower): their count and the sums of x and x² with
    x = k - origin."""
    start = np.maximum(first, upper)
    count = np.maximum(np.minimum(end, lower) - start, 0.0)
    x0 = start - origin
    steps = count * (count - 1) / 2  # sum of 0..count-1
    sum_x = count * x0 + steps
    sum_x2 = count * x0 * x0 + 2 * x0 * steps + steps * (2 * count - 1) / 3
    return count, sum_x, sum_x2


def _subset(splines: EqualAreaSplines, profiles: np.ndarray) -> EqualAreaSplines:
    return EqualAreaSplines(
        *(
            field[profiles]
            for field in (
                splines.tops,
                splines.bottoms,
                splines.means,
                splines.level,
                splines.slope_top,
                splines.slope_bottom,
                splines.curvature,
            )
        )
    )


def _as_id_array(profile_ids: Iterable[object]) -> np.ndarray:
    """Keeps numpy arrays as they are; other sequences become object arrays so that ids keep their type
    (np.asarray would turn [1, 'a'] into strings)."""
    if isinstance(profile_ids, np.ndarray):
        if profile_ids.ndim != 1:
            raise ValueError("Profile ids must be a flat list with one id per horizon.")
        return profile_ids
    items = list(profile_ids)
    return np.fromiter(items, dtype=object, count=len(items))


def _as_float_array(column: Iterable[float], what: str) -> np.ndarray:
    try:
        array = np.asarray(column if isinstance(column, np.ndarray) else list(column), dtype=np.float64)
    except (TypeError, ValueError):
        raise ValueError(
            f"The {what} must be numbers (empty or NULL for missing); check the field holds numbers, not text."
        ) from None
    if array.ndim != 1:
        raise ValueError(f"The {what} must be a flat list with one number per horizon.")
    return array


def _number_profiles(ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Numbers profiles 0..P-1 in order of first appearance: (code of each row, first row of each profile)."""
    if ids.dtype.kind in "biufUSmM":
        _, first_rows, inverse = np.unique(ids, return_index=True, return_inverse=True)
        order = np.argsort(first_rows, kind="stable")
        rank = np.empty_like(order)
        rank[order] = np.arange(order.size)
        return rank[inverse.ravel()], first_rows[order]
    lookup: dict[object, int] = {}
    codes = np.fromiter((lookup.setdefault(pid, len(lookup)) for pid in ids), dtype=np.intp, count=ids.size)
    first_rows = np.unique(codes, return_index=True)[1]
    return codes, first_rows


def _row_name(row_names: Sequence[str] | None, row: int) -> str:
    return f"row {row}" if row_names is None else row_names[row]


def _describe(top: float, bottom: float) -> str:
    def depth(d: float) -> str:
        return "?" if np.isnan(d) else f"{d:g}"

    return f"horizon {depth(top)}-{depth(bottom)} cm"


def _screen_horizons(
    ids: np.ndarray, tops: np.ndarray, bottoms: np.ndarray, values: np.ndarray
) -> tuple[list[Rejection], np.ndarray]:
    """Flags rows that cannot enter a spline; returns their rejections and the mask of usable rows."""
    checks = (  # (rows that fail, the cause, what to do)
        (
            ~(np.isfinite(tops) & np.isfinite(bottoms)),
            "a depth is missing",
            "fill in the top and bottom depth in cm",
        ),
        (
            (tops < 0) | (bottoms < 0),
            "negative depth",
            "depths are measured downwards from 0 cm at the soil surface (organic layers above it are left out)",
        ),
        (tops == bottoms, "zero thickness (top equals bottom)", "correct the depths or delete the row"),
        (tops > bottoms, "top is not above bottom", "the top and bottom depths may be swapped"),
        (~np.isfinite(values), VALUE_MISSING, "the horizon is left out"),
    )
    usable = np.ones(ids.size, dtype=bool)
    rejections = []
    for failed, kind, remedy in checks:
        newly_failed = np.flatnonzero(failed & usable)
        usable[newly_failed] = False
        rejections.extend(
            Rejection(ids[row], f"{_describe(tops[row], bottoms[row])}: {kind}; {remedy}", int(row), kind)
            for row in newly_failed
        )
    return rejections, usable


def _first_overlaps(
    n_profiles: int, rows: np.ndarray, profile_of_row: np.ndarray, tops: np.ndarray, bottoms: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """For each profile, the rows of the first pair of horizons where the lower one starts above the bottom of
    the upper one, or -1 when none overlap; `rows` must be sorted by profile, then top."""
    clash = np.flatnonzero((profile_of_row[1:] == profile_of_row[:-1]) & (bottoms[rows[:-1]] > tops[rows[1:]]))
    upper = np.full(n_profiles, -1)
    lower = np.full(n_profiles, -1)
    profiles, first = np.unique(profile_of_row[clash], return_index=True)
    upper[profiles] = rows[clash[first]]
    lower[profiles] = rows[clash[first] + 1]
    return upper, lower
