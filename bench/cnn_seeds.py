"""Ensembles of networks of different seeds: does averaging m CNNs help on small data (issue 15 §1)?

    python -m bench.cnn_seeds [--data edgeroi] [--models cnn,transfer_cnn] [--seeds 5]

Every network is cross-validated on the same spatial folds (the folds of seed 0), with seeds 0 … seeds−1 for the
networks. On fixed folds the out-of-fold prediction of an ensemble of m networks is exactly the mean of the m
networks' out-of-fold predictions, so ensembles of 1, 3 and 5 cost no further training. Each row gives the RMSE
with its 95 % bootstrap interval over sites, and the paired change against one network and against the random
forest on the same folds.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from bench.accuracy import CNN_PATCH, DATASETS
from soc_depth_mapper.core.registry import entry
from soc_depth_mapper.core.training import cross_validate, make_folds, rmse_differences, validation_metrics

ENSEMBLE_SIZES = (1, 3, 5)


def out_of_fold(data, kind: str, folds: np.ndarray, seed: int) -> np.ndarray:
    cls = entry(kind).loader()
    return cross_validate(data, lambda: cls(random_state=seed), folds, scheme="spatial").predictions


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="edgeroi", choices=sorted(DATASETS))
    parser.add_argument("--models", default="cnn,transfer_cnn")
    parser.add_argument("--seeds", type=int, default=max(ENSEMBLE_SIZES))
    args = parser.parse_args(argv)
    load, title, unit, n_folds = DATASETS[args.data]
    data = load(CNN_PATCH)
    folds, _block = make_folds(data, "spatial", n_folds, None, 0)
    started = time.perf_counter()
    forest = out_of_fold(data, "random_forest", folds, 0)
    seconds = time.perf_counter() - started
    print(f"{title} ({unit}), {len(data.site_ids)} sites, spatial {n_folds}-fold; forest {seconds:.0f} s", flush=True)
    print("| model | networks | RMSE (95 % CI) | vs one network | vs random forest |")
    print("| --- | --- | --- | --- | --- |")
    for kind in args.models.split(","):
        runs = []
        for seed in range(args.seeds):
            started = time.perf_counter()
            runs.append(out_of_fold(data, kind, folds, seed))
            print(f"  {entry(kind).label} seed {seed}: {time.perf_counter() - started:.0f} s", flush=True)
        alone = [next(r["rmse"] for r in validation_metrics(data, run, kind) if r["depth"] == "all") for run in runs]
        print(f"  one network alone, per seed: RMSE {min(alone):.3f}–{max(alone):.3f}", flush=True)
        for size in (m for m in ENSEMBLE_SIZES if m <= args.seeds):
            mean = np.mean(runs[:size], axis=0)
            overall = next(r for r in validation_metrics(data, mean, kind) if r["depth"] == "all")
            single = rmse_differences(data, mean, runs[0])[0]
            against_forest = rmse_differences(data, mean, forest)[0]
            print(
                f"| {entry(kind).label} | {size} | {overall['rmse']:.3f} ({overall['rmse_lo']:.3f}–"
                f"{overall['rmse_hi']:.3f}) | {single} | {against_forest} |",
                flush=True,
            )


if __name__ == "__main__":
    main()
