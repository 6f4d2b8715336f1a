"""Accuracy of the four model families on real surveys, as the Toolbox would train them.

Two data sets, each with spatial block k-fold cross-validation over whole sites and the same folds for every
model, then a table of model × depth × (RMSE with its 95 % interval by bootstrap over sites, R², CCC, KGE, and
PICP90, the coverage of the out-of-fold 90 % prediction intervals where the model makes them), the training time,
the per-depth mean of the training folds as the baseline every model must beat, and each model's RMSE relative to
the random forest overall and per depth with a 95 % interval from a paired bootstrap over sites (the same
resampled sites for both models), e.g. "−1.0 % (−2.9 to +0.8)": a difference whose interval includes 0 is not
one the data can tell apart.

- `edgeroi`: ORCDRC (SOC, g/kg) of the bundled Edgeroi profiles harmonised to the six GlobalSoilMap depths
  (exact equal-area spline), the 250 m covariates (PMTGEO5 categorical), 10 folds.
- `ebergotzen`: clay (%) of the Ebergötzen augers at their five fixed layers 0–90 cm (`bench/data/ebergotzen`),
  the 100 m covariates (parent material and land cover categorical), 5 folds. Eight times the sites of Edgeroi,
  a third of them off the covariate grid, and a property other than SOC.
- `edgeroi_100m`, `edgeroi_ph`, `edgeroi_clay` (not run by default; `bench.forest_defaults` runs all five): the
  Edgeroi ORCDRC with the 100 m covariates of `bench/data/edgeroi` (LNUABS6 land use categorical), and pH
  (PHIHO5) and clay (CLYPPT) with the 250 m covariates, harmonised like ORCDRC.

    python -m bench.accuracy [--data edgeroi,ebergotzen] [--models random_forest,cnn,transfer_cnn,multitask_cnn]
                             [--folds N] [--seed 42] [--params '{"patch_size": 9}'] [--transform log]

`--params` overrides model settings (JSON, for every model chosen) and `--transform` fits on log(1 + value):
how the defaults were chosen, and how to try others on the same folds.
"""

from __future__ import annotations

import argparse
import csv
import json
import time
from functools import partial
from pathlib import Path

import numpy as np

from soc_depth_mapper.core.depths import STANDARD_DEPTHS, intervals_from_boundaries
from soc_depth_mapper.core.rasters import CovariateStack
from soc_depth_mapper.core.registry import CONFORMAL, entry, kinds
from soc_depth_mapper.core.sites import training_data
from soc_depth_mapper.core.spline import harmonise
from soc_depth_mapper.core.training import (
    TrainingData,
    cross_validate,
    make_folds,
    rmse_differences,
    validation_metrics,
)

REPO = Path(__file__).resolve().parents[1]
DATA = REPO / "sample_data" / "edgeroi"
EBERGOTZEN = REPO / "bench" / "data" / "ebergotzen"
CNN_PATCH = 7
#: Edgeroi covariate grids: name -> (stack, its categorical layer)
EDGEROI_GRIDS = {
    "250m": (DATA / "covariates_250m.tif", "PMTGEO5"),
    "100m": (REPO / "bench" / "data" / "edgeroi" / "covariates_100m.tif", "LNUABS6"),
}


def edgeroi_training_data(patch_size: int, property_name: str = "ORCDRC", grid: str = "250m") -> TrainingData:
    """A property of the Edgeroi horizons (ORCDRC, PHIHO5 pH, CLYPPT clay, ...) harmonised to the six depths
    with covariate patches, for every profile on the 250 m grid (PMTGEO5 categorical) or the 100 m grid
    (`bench/data/edgeroi`, LNUABS6 categorical) that has the property."""
    with (DATA / "horizons.csv").open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    ids = np.array([r["SOURCEID"] for r in rows], dtype=object)
    fields = ("top", "bottom", property_name, "x", "y")
    numbers = np.array([[float(r[k]) if r[k] else np.nan for k in fields] for r in rows])
    result = harmonise(ids, numbers[:, 0], numbers[:, 1], numbers[:, 2], depths=STANDARD_DEPTHS)
    first_row = {profile: i for i, profile in reversed(list(enumerate(ids)))}
    rows_of = np.array([first_row[p] for p in result.profile_ids])
    x, y = numbers[rows_of, 3], numbers[rows_of, 4]
    intervals = np.array(intervals_from_boundaries(STANDARD_DEPTHS))
    raster, categorical = EDGEROI_GRIDS[grid]
    return _sampled(
        raster, [categorical], patch_size, result.profile_ids, x, y, result.values, intervals, property_name
    )


def ebergotzen_training_data(patch_size: int) -> TrainingData:
    """Clay (%) at the five fixed auger layers (0–10 … 70–90 cm), for every auger on the 100 m grid."""
    with (EBERGOTZEN / "horizons.csv").open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    intervals = np.array(sorted({(float(r["top"]), float(r["bottom"])) for r in rows}))
    site_ids = np.array(sorted({r["ID"] for r in rows}), dtype=object)
    site_of = {site: i for i, site in enumerate(site_ids)}
    depth_of = {tuple(interval): d for d, interval in enumerate(intervals.tolist())}
    targets = np.full((len(site_ids), len(intervals)), np.nan)
    x, y = np.zeros(len(site_ids)), np.zeros(len(site_ids))
    for r in rows:
        i = site_of[r["ID"]]
        x[i], y[i] = float(r["X"]), float(r["Y"])
        targets[i, depth_of[(float(r["top"]), float(r["bottom"]))]] = float(r["CLYMHT"]) if r["CLYMHT"] else np.nan
    raster = EBERGOTZEN / "covariates_100m.tif"
    return _sampled(raster, ["PRMGEO6", "LNCCOR6"], patch_size, site_ids, x, y, targets, intervals, "CLYMHT")


def _sampled(
    raster: Path,
    categorical: list[str],
    patch_size: int,
    site_ids: np.ndarray,
    x: np.ndarray,
    y: np.ndarray,
    targets: np.ndarray,
    intervals: np.ndarray,
    property_name: str,
) -> TrainingData:
    """The sites on the covariate stack `raster` (layer name "cov") with their patches, as train builds them."""
    with CovariateStack([str(raster)], layer_names=["cov"]) as stack:
        sample = stack.sample(x, y, patch_size)
        band_names = stack.band_names
    codes = tuple(band_names.index(f"cov_{name}") for name in categorical)
    data, _ = training_data(sample, site_ids, x, y, targets, intervals, property_name, band_names, categorical=codes)
    return data


#: data set -> (how to load it, its title, its unit, default number of folds)
DATASETS = {
    "edgeroi": (edgeroi_training_data, "Edgeroi ORCDRC", "g/kg", 10),
    "ebergotzen": (ebergotzen_training_data, "Ebergötzen clay", "%", 5),
    "edgeroi_100m": (partial(edgeroi_training_data, grid="100m"), "Edgeroi ORCDRC, 100 m covariates", "g/kg", 10),
    "edgeroi_ph": (partial(edgeroi_training_data, property_name="PHIHO5"), "Edgeroi pH", "pH", 10),
    "edgeroi_clay": (partial(edgeroi_training_data, property_name="CLYPPT"), "Edgeroi clay", "%", 10),
}
#: the data sets this benchmark runs by default (all four model families on each)
DEFAULT_DATASETS = ("edgeroi", "ebergotzen")


def depth_mean_baseline(data: TrainingData, folds: np.ndarray) -> np.ndarray:
    """Out-of-fold predictions of the per-depth mean of the training folds: what a model without covariates
    scores. A model that does worse at some depth has learnt nothing there, or something false."""
    predictions = np.full(data.targets.shape, np.nan)
    for fold in np.unique(folds):
        test = folds == fold
        predictions[test] = np.nanmean(data.targets[~test], axis=0)
    predictions[np.isnan(data.targets)] = np.nan
    return predictions


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=",".join(DEFAULT_DATASETS), help=f"of {', '.join(DATASETS)}")
    parser.add_argument("--models", default=",".join(kinds()))
    parser.add_argument("--folds", type=int, default=0, help="folds (default: 10 for Edgeroi, 5 for Ebergötzen)")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument(
        "--params", type=json.loads, default={}, help="model settings as JSON, e.g. '{\"dropout\": 0.3}'"
    )
    parser.add_argument("--transform", choices=("none", "log"), default="none")
    args = parser.parse_args(argv)
    for name in args.data.split(","):
        run_dataset(name, args)


def run_dataset(name: str, args: argparse.Namespace) -> None:
    load, title, unit, default_folds = DATASETS[name]
    n_folds = args.folds or default_folds
    data = load(args.params.get("patch_size", CNN_PATCH))
    folds, block = make_folds(data, "spatial", n_folds, None, args.seed)
    print(
        f"\n{title} ({unit}): {len(data.site_ids)} sites, observations per depth "
        f"{np.sum(~np.isnan(data.targets), axis=0).tolist()}; spatial {n_folds}-fold CV, blocks of {block:.0f} m, "
        f"seed {args.seed}; "
        + (
            f"settings {args.params}, transform {args.transform}."
            if args.params or args.transform != "none"
            else "model defaults as shipped."
        ),
        flush=True,
    )
    header = f"{'model':<16}{'depth':>9}{'n':>6}{'RMSE':>8}{'(95 % CI)':>16}{'R2':>8}{'CCC':>8}{'KGE':>8}{'PICP90':>8}"
    baseline_predictions = depth_mean_baseline(data, folds)
    baseline = validation_metrics(data, baseline_predictions, "Depth mean")
    results = {}
    predictions = {"Depth mean": baseline_predictions}
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
            conformal=entry(kind).intervals == CONFORMAL,
        )
        results[entry(kind).label] = (cv.metrics, time.perf_counter() - started)
        predictions[entry(kind).label] = cv.predictions
        print(f"  {entry(kind).label}: {results[entry(kind).label][1]:.0f} s", flush=True)

    print("\n" + header)
    for label, (metrics, seconds) in [*results.items(), ("Depth mean", (baseline, None))]:
        for row in metrics:
            print(
                f"{label:<16}{row['depth']:>9}{row['n']:>6}{row['rmse']:>8.3f}"
                f"{row['rmse_lo']:>9.3f}–{row['rmse_hi']:<6.3f}{row['r2']:>8.3f}"
                f"{row['ccc']:>8.3f}{row['kge']:>8.3f}{row['picp']:>8.3f}"
            )
        if seconds is not None:
            print(f"{label:<16}{'time':>9}{'':>6}{seconds:>8.0f} s for {n_folds} folds")
    forest = entry("random_forest").label
    if forest in results:
        print(
            f"\n{title}: RMSE relative to the random forest (negative = better), 95 % paired bootstrap interval "
            "over sites; overall, then per depth:"
        )
        labels = data.interval_labels()
        for label in [*results, "Depth mean"]:
            if label == forest:
                continue
            overall, *per_depth = rmse_differences(data, predictions[label], predictions[forest], args.seed)
            print(f"  {label:<16}{overall!s:>26};  " + ";  ".join(f"{d} {v}" for d, v in zip(labels, per_depth)))
    worse = [
        f"{label} at {row['depth']} cm"
        for label, (metrics, _) in results.items()
        for row, mean_row in zip(metrics, baseline)
        if row["depth"] != "all" and row["rmse"] > mean_row["rmse"]
    ]
    print(f"{title}: worse than the depth mean: {', '.join(worse) if worse else 'none'}")


if __name__ == "__main__":
    main()
