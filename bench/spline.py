"""Throughput of `core.spline.harmonise` against the `mpspline` 0.2.0 package on the same synthetic profiles,
with a check that both give the same interval means (mpspline2 method).

    python -m bench.spline [--profiles 100000] [--mpspline-profiles N]

mpspline gets the same profiles by default (all of them: a few minutes); `--mpspline-profiles` gives it a random
subset instead, for a quick run.

Times are CPU seconds of this process (the bench machine is shared, so wall time says more about the
neighbours than about the code); wall seconds are printed alongside.
"""

from __future__ import annotations

import argparse
import logging
import time

import numpy as np

from soc_depth_mapper.core.depths import STANDARD_DEPTHS
from soc_depth_mapper.core.spline import harmonise

TOLERANCE = 1e-9
#: profiles per CPU second of the mpspline2 method over mpspline's: the target of the harmonise issue
TARGET_SPEEDUP = 100.0
#: mpspline is fed chunks of this many profiles, so that its per-site tables stay small in memory
MPSPLINE_CHUNK = 10_000


def generate_profiles(n_profiles: int, seed: int = 0) -> tuple[np.ndarray, ...]:
    """Realistic horizon tables: 1-10 horizons of 5-60 cm (1 in 10 on half-cm depths), SOC (g/kg) that decays
    with depth with multiplicative noise, 5 % of profiles starting below the surface, 3 % of boundaries with a
    gap and 1 % missing values. Returns (profile ids, tops, bottoms, values), one row per horizon."""
    rng = np.random.default_rng(seed)
    horizon_counts = rng.choice(np.arange(1, 11), size=n_profiles, p=_HORIZON_COUNT_SHARES)
    profile = np.repeat(np.arange(n_profiles), horizon_counts)
    n_rows = profile.size
    thickness = rng.integers(5, 61, n_rows).astype(float)
    half_cm = rng.random(n_rows) < 0.1
    thickness[half_cm] += rng.choice([-0.5, 0.5], half_cm.sum())
    gap = np.where(rng.random(n_rows) < 0.03, rng.integers(1, 31, n_rows), 0).astype(float)
    first_row = np.concatenate([[0], np.cumsum(horizon_counts)[:-1]])
    gap[first_row] = np.where(rng.random(n_profiles) < 0.05, rng.integers(2, 21, n_profiles), 0)
    bottoms = np.cumsum(thickness + gap)
    bottoms -= np.repeat(bottoms[first_row] - thickness[first_row] - gap[first_row], horizon_counts)
    tops = bottoms - thickness
    surface = rng.lognormal(np.log(15.0), 0.5, n_profiles)
    decay_depth = rng.uniform(20.0, 80.0, n_profiles)
    middle = (tops + bottoms) / 2
    values = 1.0 + surface[profile] * np.exp(-middle / decay_depth[profile])
    values *= rng.lognormal(0.0, 0.15, n_rows)
    values[rng.random(n_rows) < 0.01] = np.nan
    return profile, tops, bottoms, values


_HORIZON_COUNT_SHARES = np.array([3, 6, 10, 14, 16, 16, 13, 10, 7, 5]) / 100


def mpspline_interval_means(
    ids: np.ndarray, tops: np.ndarray, bottoms: np.ndarray, values: np.ndarray, depths: tuple[float, ...]
) -> tuple[np.ndarray, np.ndarray, float]:
    """Runs `mpspline.spline_multiple` (its bulk entry point for a horizon table); returns the interval means
    (P, D) and RMSE (P,) in order of the sorted profile ids, and the CPU and wall seconds spent inside it."""
    import pandas as pd
    from mpspline import spline_multiple

    intervals = [(int(top), int(bottom)) for top, bottom in zip(depths[:-1], depths[1:])]
    table = pd.DataFrame({"SID": ids, "UD": tops, "LD": bottoms, "value": values})
    profiles = np.unique(ids)
    means = np.full((profiles.size, len(intervals)), np.nan)
    rmse = np.full(profiles.size, np.nan)
    cpu = wall = 0.0
    logging.getLogger("mpspline").setLevel(logging.ERROR)  # it warns once per single-horizon profile
    for first in range(0, profiles.size, MPSPLINE_CHUNK):
        chunk = profiles[first : first + MPSPLINE_CHUNK]
        result, chunk_cpu, chunk_wall = _timed(
            spline_multiple, table[table["SID"].isin(chunk)], "value", target_depths=intervals
        )
        cpu, wall = cpu + chunk_cpu, wall + chunk_wall
        for offset, profile in enumerate(chunk):
            means[first + offset] = result[str(profile)]["est_dcm"]
            rmse[first + offset] = result[str(profile)]["rmse"]
    return means, rmse, cpu, wall


def _timed(function, *args, **kwargs):
    """(result, CPU seconds, wall seconds) of one call."""
    cpu, wall = time.process_time(), time.perf_counter()
    result = function(*args, **kwargs)
    return result, time.process_time() - cpu, time.perf_counter() - wall


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profiles", type=int, default=100_000)
    parser.add_argument(
        "--mpspline-profiles",
        type=int,
        default=None,
        help="profiles given to mpspline, a random subset of the same profiles (default: all of them; it runs "
        "< 1,000 profiles/s, so 100,000 take minutes)",
    )
    args = parser.parse_args(argv)
    ids, tops, bottoms, values = generate_profiles(args.profiles)
    depths = STANDARD_DEPTHS

    ours, ours_cpu, ours_wall = _timed(harmonise, ids, tops, bottoms, values, depths, method="mpspline2")
    exact, exact_cpu, exact_wall = _timed(harmonise, ids, tops, bottoms, values, depths, method="exact")

    rng = np.random.default_rng(1)
    n_reference = min(args.mpspline_profiles or args.profiles, args.profiles)
    subset = np.sort(rng.choice(args.profiles, n_reference, replace=False))
    rows = np.isin(ids, subset)
    reference, reference_rmse, reference_cpu, reference_wall = mpspline_interval_means(
        ids[rows], tops[rows], bottoms[rows], values[rows], depths
    )
    # mpspline 0.2.0 returns NaN for a profile with a single usable horizon; ours gives it the horizon's value
    # over the intervals it covers, so those profiles are left out of the comparison.
    usable_counts = np.bincount(ids[np.isfinite(values)], minlength=args.profiles)
    compared = usable_counts[subset] >= 2
    ours_subset = ours.values[subset][compared]
    reference_subset = reference[compared]
    same_gaps = np.array_equal(np.isnan(ours_subset), np.isnan(reference_subset))
    difference = np.nanmax(np.abs(ours_subset - reference_subset))
    rmse_difference = np.nanmax(np.abs(ours.rmse[subset][compared] - reference_rmse[compared]))

    print(f"{args.profiles:,} profiles, {tops.size:,} horizons, depths {depths}")
    print(f"{'implementation':<34}{'profiles':>10}{'CPU s':>9}{'wall s':>9}{'profiles/CPU s':>16}")
    for name, count, cpu, wall in (
        ("socdepth harmonise, mpspline2", args.profiles, ours_cpu, ours_wall),
        ("socdepth harmonise, exact", args.profiles, exact_cpu, exact_wall),
        ("mpspline 0.2.0 spline_multiple", n_reference, reference_cpu, reference_wall),
    ):
        print(f"{name:<34}{count:>10,}{cpu:>9.2f}{wall:>9.2f}{count / cpu:>16,.0f}")
    if n_reference < args.profiles:
        print(
            f"mpspline ran on a random subset of {n_reference:,} of the profiles ({rows.sum():,} horizons): "
            "all of them would take minutes"
        )
    speedup = (args.profiles / ours_cpu) / (n_reference / reference_cpu)
    wall_speedup = (args.profiles / ours_wall) / (n_reference / reference_wall)
    print(f"speed-up, mpspline2 method over mpspline: {speedup:,.0f}x (CPU), {wall_speedup:,.0f}x (wall)")
    print(f"{'PASS' if speedup >= TARGET_SPEEDUP else 'FAIL'}: target >= {TARGET_SPEEDUP:g}x (CPU)")
    print(
        f"compared on {compared.sum():,} profiles with >= 2 usable horizons ({(~compared).sum():,} single-horizon "
        f"profiles left out): max |difference| = {difference:.2e} (interval means), {rmse_difference:.2e} (RMSE), "
        f"same NaN pattern: {same_gaps}"
    )
    print(f"{'PASS' if same_gaps and difference <= TOLERANCE else 'FAIL'}: outputs agree to {TOLERANCE:g}")
    finite = np.isfinite(ours.values) & np.isfinite(exact.values)
    print(
        f"exact vs mpspline2 method: mean |difference| {np.mean(np.abs(ours.values - exact.values)[finite]):.3f} "
        f"g/kg over {finite.sum():,} interval means"
    )


if __name__ == "__main__":
    main()
