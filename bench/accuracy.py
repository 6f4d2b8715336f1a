"""Accuracy of the four model families on the real Edgeroi data, as the Toolbox would train them.

Edgeroi horizons (bundled sample data) harmonised to the six GlobalSoilMap depths (exact equal-area spline),
the 250 m covariates (PMTGEO5 categorical), spatial block 10-fold cross-validation over whole sites with the same
folds for every model, then a table of model × depth × (RMSE, R², CCC, KGE) and the training time.

    python -m bench.accuracy [--models random_forest,cnn,transfer_cnn,multitask_cnn] [--folds 10] [--seed 42]
                             [--params '{"patch_size": 9}'] [--transform log]

`--params` overrides model settings (JSON, for every model chosen) and `--transform` fits on log(1 + SOC):
how the defaults were chosen, and how to try others on the same folds.
"""

from __future__ import annotations

import argparse
import csv
import json
import time
from pathlib import Path

import numpy as np

from soc_depth_mapper.core.depths import STANDARD_DEPTHS, intervals_from_boundaries
from soc_depth_mapper.core.rasters import CovariateStack
from soc_depth_mapper.core.registry import entry, kinds
from soc_depth_mapper.core.sites import training_data
from soc_depth_mapper.core.spline import harmonise
from soc_depth_mapper.core.training import TrainingData, cross_validate, make_folds

DATA = Path(__file__).resolve().parents[1] / "sample_data" / "edgeroi"
CNN_PATCH = 7


def edgeroi_training_data(patch_size: int) -> TrainingData:
    """Harmonised ORCDRC at the six depths with covariate patches, for every profile on the 250 m grid."""
    with (DATA / "horizons.csv").open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    ids = np.array([r["SOURCEID"] for r in rows], dtype=object)
    numbers = np.array([[float(r[k]) if r[k] else np.nan for k in ("top", "bottom", "ORCDRC", "x", "y")] for r in rows])
    result = harmonise(ids, numbers[:, 0], numbers[:, 1], numbers[:, 2], depths=STANDARD_DEPTHS)
    first_row = {profile: i for i, profile in reversed(list(enumerate(ids)))}
    rows_of = np.array([first_row[p] for p in result.profile_ids])
    x, y = numbers[rows_of, 3], numbers[rows_of, 4]
    with CovariateStack([str(DATA / "covariates_250m.tif")], layer_names=["cov"]) as stack:
        sample = stack.sample(x, y, patch_size)
        band_names = stack.band_names
    data, _ = training_data(
        sample,
        result.profile_ids,
        x,
        y,
        result.values,
        np.array(intervals_from_boundaries(STANDARD_DEPTHS)),
        "ORCDRC",
        band_names,
        categorical=(band_names.index("cov_PMTGEO5"),),
    )
    return data


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default=",".join(kinds()))
    parser.add_argument("--folds", type=int, default=10)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument(
        "--params", type=json.loads, default={}, help="model settings as JSON, e.g. '{\"dropout\": 0.3}'"
    )
    parser.add_argument("--transform", choices=("none", "log"), default="none")
    args = parser.parse_args(argv)

    data = edgeroi_training_data(args.params.get("patch_size", CNN_PATCH))
    folds, block = make_folds(data, "spatial", args.folds, None, args.seed)
    print(
        f"Edgeroi ORCDRC (g/kg): {len(data.site_ids)} sites, observations per depth "
        f"{np.sum(~np.isnan(data.targets), axis=0).tolist()}; spatial {args.folds}-fold CV, blocks of {block:.0f} m, "
        f"seed {args.seed}; "
        + (
            f"settings {args.params}, transform {args.transform}."
            if args.params or args.transform != "none"
            else "model defaults as shipped."
        ),
        flush=True,
    )
    header = f"{'model':<16}{'depth':>9}{'n':>6}{'RMSE':>8}{'R2':>8}{'CCC':>8}{'KGE':>8}"
    results = {}
    for kind in args.models.split(","):
        cls = entry(kind).loader()
        started = time.perf_counter()
        cv = cross_validate(
            data,
            lambda cls=cls: cls(random_state=args.seed, **args.params),
            folds,
            transform=args.transform,
            model_name=entry(kind).label,
            scheme="spatial",
        )
        results[kind] = (cv, time.perf_counter() - started)
        print(f"  {entry(kind).label}: {results[kind][1]:.0f} s", flush=True)

    print("\n" + header)
    for kind, (cv, seconds) in results.items():
        label = entry(kind).label
        for row in cv.metrics:
            print(
                f"{label:<16}{row['depth']:>9}{row['n']:>6}{row['rmse']:>8.3f}{row['r2']:>8.3f}"
                f"{row['ccc']:>8.3f}{row['kge']:>8.3f}"
            )
        print(f"{label:<16}{'time':>9}{'':>6}{seconds:>8.0f} s for {args.folds} folds")
    if "random_forest" in results:
        reference = next(r["rmse"] for r in results["random_forest"][0].metrics if r["depth"] == "all")
        print("\nOverall RMSE relative to the random forest (negative = better):")
        for kind, (cv, _) in results.items():
            rmse = next(r["rmse"] for r in cv.metrics if r["depth"] == "all")
            print(f"  {entry(kind).label:<16}{100 * (rmse / reference - 1):+6.1f} %")


if __name__ == "__main__":
    main()
