"""Covariate selection against forward feature selection, and how optimistic the chosen subset's RMSE is.

On the bundled Edgeroi survey (ORCDRC at the six GlobalSoilMap depths, the six 250 m covariates, PMTGEO5
categorical) with `--noise` extra bands of pure noise per site (seeded), which a selection should drop:

- `select_covariates` (`core.selection`: correlation filters, permutation ranking, nested subsets);
- forward feature selection as CAST's `ffs` does it (Meyer et al. 2018, Environ. Model. Softw. 101:1-9): every
  pair of bands cross-validated, the best pair kept, then the band whose addition lowers the RMSE most added
  until no addition lowers it;
- all bands, no selection.

All three use the random forest and the same spatial folds. Each is timed and scored by its own cross-validation
on all sites (the figure a user sees), then by an outer hold-out: the sites are split into `--outer` spatial
folds; on each, the method selects on the other sites (with its inner folds), a forest on its choice is fitted
there and predicts the held-out sites. The outer RMSE over all held-out sites is the honest figure. Its excess
over the mean inner RMSE of the chosen subsets (the gap) has two parts: that of the outer split itself (fewer
training sites, other blocks), which the all-bands row measures, and the optimism of selecting and scoring on the
same folds, the rest.

    python -m bench.selection [--noise 3] [--trees 40] [--folds 5] [--outer 3] [--seed 42]
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import time
from collections.abc import Callable

import numpy as np

from soc_depth_mapper.core.registry import entry
from soc_depth_mapper.core.selection import select_covariates, subset_data
from soc_depth_mapper.core.training import TrainingData, cross_validate, make_folds

from .accuracy import edgeroi_training_data

KIND = "random_forest"
#: (band indices chosen, cross-validated RMSE of the choice) from TrainingData and folds
Method = Callable[[TrainingData, np.ndarray], tuple[list[int], float]]


def with_noise_bands(data: TrainingData, count: int, seed: int) -> TrainingData:
    """The data with `count` bands of standard normal noise per site appended (named noise_1 …)."""
    rng = np.random.default_rng(seed)
    noise = rng.normal(size=(len(data.site_ids), count, *data.patches.shape[2:])).astype(np.float32)
    return dataclasses.replace(
        data,
        patches=np.concatenate([data.patches, noise], axis=1),
        band_names=[*data.band_names, *(f"noise_{i + 1}" for i in range(count))],
    )


def sites_of(data: TrainingData, keep: np.ndarray) -> TrainingData:
    """The data of the sites where `keep` is true."""
    return dataclasses.replace(
        data,
        site_ids=data.site_ids[keep],
        x=data.x[keep],
        y=data.y[keep],
        patches=data.patches[keep],
        targets=data.targets[keep],
        groups=None if data.groups is None else data.groups[keep],
    )


def cv_rmse(data: TrainingData, bands: list[int], folds: np.ndarray, params: dict, seed: int) -> float:
    cls = entry(KIND).loader()
    cv = cross_validate(subset_data(data, sorted(bands)), lambda: cls(**params, random_state=seed), folds)
    return next(row["rmse"] for row in cv.metrics if row["depth"] == "all" and row["group"] == "all")


def forward_selection(data: TrainingData, folds: np.ndarray, params: dict, seed: int) -> tuple[list[int], float]:
    """CAST's ffs: the best pair, then the best addition while it lowers the cross-validated RMSE."""
    n_bands = data.patches.shape[1]
    scores = {
        pair: cv_rmse(data, list(pair), folds, params, seed) for pair in itertools.combinations(range(n_bands), 2)
    }
    chosen, best = min(scores.items(), key=lambda item: item[1])
    chosen = list(chosen)
    while len(chosen) < n_bands:
        trials = {
            band: cv_rmse(data, [*chosen, band], folds, params, seed) for band in range(n_bands) if band not in chosen
        }
        band, rmse = min(trials.items(), key=lambda item: item[1])
        if rmse >= best:
            break
        chosen.append(band)
        best = rmse
    return sorted(chosen), best


def methods(params: dict, args: argparse.Namespace) -> dict[str, Method]:
    def selection(data: TrainingData, folds: np.ndarray) -> tuple[list[int], float]:
        # the folds are made inside from the same scheme, k and seed: check they are the ones given
        result = select_covariates(data, KIND, params, "spatial", args.folds, random_state=args.seed, step=1)
        assert np.array_equal(result.folds, folds)
        return result.selected, result.subsets[result.chosen].rmse

    def all_bands(data: TrainingData, folds: np.ndarray) -> tuple[list[int], float]:
        bands = list(range(data.patches.shape[1]))
        return bands, cv_rmse(data, bands, folds, params, args.seed)

    return {
        "select_covariates": selection,
        "forward selection (ffs)": lambda data, folds: forward_selection(data, folds, params, args.seed),
        "all bands": all_bands,
    }


def outer_rmse(data: TrainingData, method: Method, params: dict, args: argparse.Namespace) -> tuple[float, float]:
    """(mean inner RMSE of the chosen subsets, RMSE of the held-out predictions over all outer folds)."""
    outer, _ = make_folds(data, "spatial", args.outer, None, args.seed + 1)
    predictions = np.full(data.targets.shape, np.nan)
    inner_scores = []
    cls = entry(KIND).loader()
    for fold in np.unique(outer):
        inner = sites_of(data, outer != fold)
        inner_folds, _ = make_folds(inner, "spatial", args.folds, None, args.seed)
        bands, inner_rmse = method(inner, inner_folds)
        inner_scores.append(inner_rmse)
        chosen = subset_data(inner, bands)
        model = cls(**params, random_state=args.seed).fit(
            chosen.patches, chosen.targets, chosen.intervals, categorical=chosen.categorical
        )
        predictions[outer == fold] = model.predict(subset_data(sites_of(data, outer == fold), bands).patches)
    seen = ~np.isnan(data.targets)
    return float(np.mean(inner_scores)), float(np.sqrt(np.mean((predictions[seen] - data.targets[seen]) ** 2)))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--noise", type=int, default=3, help="bands of pure noise added to the six covariates")
    parser.add_argument("--trees", type=int, default=40)
    parser.add_argument("--folds", type=int, default=5, help="cross-validation folds of every selection")
    parser.add_argument("--outer", type=int, default=3, help="outer hold-out folds")
    parser.add_argument("--seed", type=int, default=42)
    args = parser.parse_args(argv)
    params = {"n_trees": args.trees}
    data = with_noise_bands(edgeroi_training_data(1), args.noise, args.seed)
    folds, block = make_folds(data, "spatial", args.folds, None, args.seed)
    print(
        f"Edgeroi ORCDRC, {len(data.site_ids)} sites, {len(data.band_names)} bands ({args.noise} of noise), random "
        f"forest {args.trees} trees, spatial {args.folds}-fold (blocks of {block:.0f} m), outer hold-out "
        f"{args.outer} spatial folds; RMSE in g/kg over all depths"
    )
    rows = []
    for name, method in methods(params, args).items():
        started = time.perf_counter()
        bands, rmse = method(data, folds)
        seconds = time.perf_counter() - started
        rows.append((name, bands, rmse, seconds, *outer_rmse(data, method, params, args)))
    *_, all_inner, all_outer = rows[-1]  # all bands: the gap without any selection
    print("| method | bands chosen | noise kept | CV RMSE | time (s) | inner CV RMSE | outer RMSE | gap | optimism |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for name, bands, rmse, seconds, inner, outer in rows:
        noise = sum(data.band_names[b].startswith("noise_") for b in bands)
        names = ", ".join(data.band_names[b].removeprefix("cov_") for b in bands)
        gap, optimism = outer / inner - 1, (outer / inner) / (all_outer / all_inner) - 1
        print(
            f"| {name} | {len(bands)}: {names} | {noise} | {rmse:.3f} | {seconds:.1f} | {inner:.3f} | {outer:.3f} | "
            f"{100 * gap:+.1f} % | {100 * optimism:+.1f} % |"
        )
    print(
        "gap: outer RMSE over the mean inner CV RMSE of the chosen subsets. All bands select nothing: their gap is "
        "that of the outer split itself (fewer training sites, a different split); optimism: a method's gap beyond it."
    )


if __name__ == "__main__":
    main()
