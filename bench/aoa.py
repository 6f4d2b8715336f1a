"""Area of applicability: DI throughput of `core.aoa.DissimilarityIndex` for a 13-band stack and 4,000 sites.

    python -m bench.aoa [--sites 4000] [--pixels 200000] [--repeats 3]

Target (issue 11): at least 1 Mpx/s on the machine's 2 cores. Two stacks of 13 bands:

- Edgeroi: the 250 m covariates (5 continuous bands and the geology classes, as dummies) and 7 bands derived from
  them as a terrain analysis would (3 x 3 means of the continuous bands, the elevation's slope, the wetness's
  3 x 3 spread); real covariates are correlated, which a k-d tree exploits.
- Uniform: 13 independent uniform bands, the worst case for a k-d tree (no structure at all).

Sites are random cells of the stack with random folds. Every band weighs 1 (the most dimensions a k-d tree can
get), and for Edgeroi also weights falling by 0.7 from band to band, as a forest's permutation importances often
do (a few bands carry the model). Pixels are the stack's cells, repeated to `--pixels` (a query costs the same
whether or not it repeats). Also the training reference (importance aside: mean distance, training DI, threshold)
is timed.

The machine's cores are shared, so wall-clock speed varies two- to threefold from run to run: the fastest of
`--repeats` runs counts, and the CPU seconds per million pixels (all threads of the process) are printed beside
it, which depend much less on what else runs and are the fairer figure for comparing two versions of the search.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import rasterio
from scipy.ndimage import generic_filter, uniform_filter

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "sample_data" / "edgeroi" / "covariates_250m.tif"
TARGET_MPX_PER_S = 1.0
GEOLOGY = 2  # PMTGEO5, the class band of the Edgeroi stack


def edgeroi_stack() -> tuple[np.ndarray, tuple[int, ...]]:
    """(cells, 13) values of the valid cells of the Edgeroi stack and its derived bands; the categorical band."""
    with rasterio.open(SAMPLE) as source:
        data = source.read().astype(np.float64)
        valid = (data != source.nodata).all(axis=0)
    continuous = [b for b in range(len(data)) if b != GEOLOGY]
    filled = np.where(valid, data, np.nanmean(np.where(valid, data, np.nan), axis=(1, 2))[:, None, None])
    derived = [uniform_filter(filled[b], 3) for b in continuous]
    rows, cols = np.gradient(filled[0], 250.0)
    derived.append(np.hypot(rows, cols))
    derived.append(generic_filter(filled[1], np.std, size=3))
    bands = np.concatenate([data, np.stack(derived)])
    return bands[:, valid].T, (GEOLOGY,)


def time_di(
    name: str, cells: np.ndarray, categorical: tuple[int, ...], weights: np.ndarray, args: argparse.Namespace
) -> float:
    from soc_depth_mapper.core.aoa import AoaReference, DissimilarityIndex

    rng = np.random.default_rng(0)
    sites = cells[rng.choice(len(cells), args.sites, replace=len(cells) < args.sites)]
    start = time.perf_counter()
    reference = AoaReference.of_training(sites, categorical, weights, rng.integers(0, 10, len(sites)))
    reference_seconds = time.perf_counter() - start
    index = DissimilarityIndex(reference)
    pixels = np.resize(cells, (args.pixels, cells.shape[1]))
    seconds, cpu_seconds = [], []
    for _ in range(args.repeats):
        start, cpu_start = time.perf_counter(), time.process_time()
        di = index.di(pixels)
        seconds.append(time.perf_counter() - start)
        cpu_seconds.append(time.process_time() - cpu_start)
    speed = args.pixels / min(seconds) / 1e6
    cpu_per_mpx = min(cpu_seconds) / args.pixels * 1e6
    inside = float((di <= reference.threshold).mean())
    print(
        f"{name:<10}{cells.shape[1]:>6}{len(reference.centre):>8}{args.sites:>7,}{reference_seconds:>12.2f}"
        f"{speed:>10.2f}{cpu_per_mpx:>12.2f}{100 * inside:>10.1f}"
    )
    return speed


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sites", type=int, default=4000)
    parser.add_argument("--pixels", type=int, default=200_000)
    parser.add_argument("--repeats", type=int, default=3, help="runs of the DI; the fastest counts")
    args = parser.parse_args(argv)
    print(
        f"{'stack':<10}{'bands':>6}{'columns':>8}{'sites':>7}{'reference s':>12}{'Mpx/s':>10}{'CPU s/Mpx':>12}"
        f"{'inside %':>10}"
    )
    cells, categorical = edgeroi_stack()
    ones = np.ones(cells.shape[1])
    edgeroi = time_di("Edgeroi", cells, categorical, ones, args)
    time_di("weighted", cells, categorical, 0.7 ** np.arange(cells.shape[1]), args)
    time_di("uniform", np.random.default_rng(1).uniform(size=(100_000, 13)), (), ones, args)
    verdict = "meets" if edgeroi >= TARGET_MPX_PER_S else "misses"
    print(f"Edgeroi DI, every band weighing 1: {edgeroi:.2f} Mpx/s, {verdict} the target of {TARGET_MPX_PER_S:g} Mpx/s")


if __name__ == "__main__":
    main()
