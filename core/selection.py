"""Covariate selection (Han et al. 2025, §2.2): which of many candidate bands a model should use.

Five steps on the training sites, exactly as `train` sees them (the centre cell of each site's patch):

1. Relevance. Each numeric band's Pearson r with the target at every depth interval, over the sites observed
   there; the band's relevance is the mean |r| over the depths, and a band below `min_correlation` is dropped.
   Per depth rather than over all samples pooled: a site's covariates are the same at every depth, so pooled,
   the target's fall with depth would dilute every r, and a band that matters only in the subsoil would look
   useless beside the topsoil's large values.
2. Redundancy. Pearson r between the numeric bands over the sites. Bands are visited from the most relevant
   down; one whose |r| with a band already kept exceeds `max_correlation` is dropped as redundant with it. Of a
   pair correlated above the limit, the one less correlated with the target goes; in a chain (A ~ B, B ~ C,
   A not ~ C) the greedy order keeps A and C, the first of which is the most relevant.
3. Ranking by permutation importance, out of fold: the scoring model is cross-validated on the bands left,
   and each fold's model predicts its test sites again with one band's values (whole patches) shuffled among
   those sites; the band's importance is the rise in out-of-fold RMSE over all depths, the mean over
   `repeats` shuffles. Out of fold, because on the training sites it rewards what a model memorised; on
   held-out sites it measures what the band adds to prediction, for every model kind alike (the forest's own
   impurity importance favours bands with many distinct values, Strobl et al. 2007, BMC Bioinformatics 8:25).
4. Nested subsets: the first `step`, 2·`step`, … ranked bands, up to `max_covariates` (and all ranked bands
   when fewer), each cross-validated with the same model, folds and seed: RMSE per depth and overall, CCC.
5. Choice: the subset with the lowest overall RMSE, or with `parsimonious` the smallest whose RMSE is within
   one standard error of that lowest (the one-standard-error rule; Hastie et al. 2009, The Elements of
   Statistical Learning, §7.10). The standard error is that of the mean of the per-fold RMSEs.

Categorical bands hold class codes whose order means nothing, so a Pearson r of codes says nothing: they skip
steps 1 and 2 (never dropped there, their correlation is NaN) and are ranked in step 3 with the others.

The chosen subset's cross-validated RMSE is optimistic: the same folds that score it also chose it (and
ranked the bands). An honest figure needs an outer hold-out that the selection never sees (`bench.selection`).
"""

from __future__ import annotations

import dataclasses
import os
import secrets
import time
from collections.abc import Sequence
from contextlib import ExitStack
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import rasterio
from rasterio.windows import Window

from .models.base import DepthModel, check_progress, scaled_progress
from .rasters import CovariateStack
from .registry import entry
from .training import (
    CrossValidation,
    Progress,
    TrainingData,
    cross_validate,
    forward_transform,
    make_folds,
    prediction_floor,
    to_property_scale,
)

if TYPE_CHECKING:
    from distributed import Client

    from .cluster import ClusterSpec

MIN_CORRELATION = 0.05
MAX_CORRELATION = 0.8
STEP = 10
MAX_COVARIATES = 50
#: shuffles per band and fold in the permutation importance
PERMUTATION_REPEATS = 3
#: side of the tiles of the selected stack, read and written one at a time (bounded memory for any raster)
TILE = 256
#: nodata of the selected stack: the lowest float32, which no covariate holds; not NaN, which the model file
#: (JSON) cannot record
STACK_NODATA = float(np.finfo(np.float32).min)

LOW_CORRELATION = "|r| with the target below {limit:g}"
CONSTANT = "constant at the sites"
REDUNDANT = "redundant with {band} (|r| {r:.2f} > {limit:g})"
BEYOND_MAX = "ranked below the first {limit} bands (MAX_COVARIATES)"


@dataclass
class BandOutcome:
    """What the selection made of one band."""

    name: str
    categorical: bool
    #: (D,) Pearson r with the target per depth interval; NaN for a categorical band
    correlations: np.ndarray
    #: mean |r| over the depths; NaN for a categorical band
    relevance: float
    #: why the band was dropped, '' when it was ranked
    dropped: str = ""
    #: 1 for the most important band; None when dropped before ranking
    rank: int | None = None
    #: rise of the out-of-fold RMSE when the band is shuffled, in the target's units
    importance: float = float("nan")
    selected: bool = False


@dataclass
class SubsetScore:
    """The cross-validation of one nested subset."""

    bands: list[str]  # in rank order
    rmse: float
    #: standard error of the mean of the per-fold RMSEs
    rmse_se: float
    ccc: float
    #: interval label -> RMSE
    depth_rmse: dict[str, float]
    metrics: list[dict[str, Any]]
    seconds: float

    @property
    def size(self) -> int:
        return len(self.bands)


@dataclass
class Selection:
    bands: list[BandOutcome]  # in the stack's band order
    subsets: list[SubsetScore]  # by increasing size
    chosen: int  # index into `subsets`
    parsimonious: bool
    scheme: str
    folds: np.ndarray  # (S,) fold of each site
    block_size: float | None
    settings: dict[str, Any] = field(default_factory=dict)

    @property
    def selected(self) -> list[int]:
        """Indices of the selected bands, in the stack's band order."""
        return [i for i, band in enumerate(self.bands) if band.selected]


def select_covariates(
    data: TrainingData,
    kind: str,
    params: dict[str, Any],
    validation: str = "spatial",
    folds: int = 10,
    block_size: float | None = None,
    transform: str = "none",
    random_state: int = 0,
    min_correlation: float = MIN_CORRELATION,
    max_correlation: float = MAX_CORRELATION,
    step: int = STEP,
    max_covariates: int = MAX_COVARIATES,
    parsimonious: bool = False,
    repeats: int = PERMUTATION_REPEATS,
    progress: Progress | None = None,
    cluster: ClusterSpec | None = None,
) -> Selection:
    """The five steps of the module docstring; the model and folds are made as `training.train` makes them.
    With `cluster`, the fold models of the ranking and of each subset are fitted as tasks on that Dask cluster
    (a subset's folds at once, one subset after the other, on one connection), with the same selection."""
    _check_settings(validation, min_correlation, max_correlation, step, max_covariates, repeats)
    cls = entry(kind).loader()

    def make_model() -> DepthModel:
        return cls(**params, random_state=random_state)

    bands = band_relevance(data)
    drop_irrelevant(bands, min_correlation)
    drop_redundant(data, bands, max_correlation)
    candidates = [i for i, band in enumerate(bands) if not band.dropped]
    if not candidates:
        raise ValueError(
            f"No band is correlated with the target above MIN_CORRELATION {min_correlation:g} (the largest mean "
            f"|r| is {np.nanmax([b.relevance for b in bands]):.3f}); lower MIN_CORRELATION or check the targets."
        )
    fold_ids, used_block = make_folds(data, validation, folds, block_size, random_state)
    sizes = subset_sizes(len(candidates), step, max_covariates)
    share = 1.0 / (len(sizes) + 1)  # the ranking, then each subset not already scored by it
    with ExitStack() as on_cluster:
        client = None
        if cluster is not None:
            from .cluster import connect

            check_progress(progress, 0.0, "Starting the cluster")
            client = on_cluster.enter_context(connect(cluster))

        def scored(indices: list[int], start: float, span: float, label: str) -> tuple[SubsetScore, CrossValidation]:
            started = time.perf_counter()
            subset = subset_data(data, indices)
            fitted = None
            if client is not None:
                fitted = fold_models_on(
                    client, kind, params, random_state, subset, fold_ids, transform,
                    scaled_progress(progress, start, 0.9 * span, f"{label}on the cluster: "),
                )  # fmt: skip
                start, span = start + 0.9 * span, 0.1 * span
            cv = cross_validate(
                subset,
                make_model,
                fold_ids,
                transform=transform,
                model_name=entry(kind).label,
                progress=scaled_progress(progress, start, span, label),
                block_size=used_block,
                scheme=validation,
                fitted=fitted,
            )
            return subset_score(subset, cv.predictions, fold_ids, cv.metrics, time.perf_counter() - started), cv

        all_candidates, cv = scored(candidates, 0.0, 0.9 * share, "ranking: ")
        importance = permutation_importance(
            subset_data(data, candidates), cv.fold_models, fold_ids, transform, repeats, random_state,
            scaled_progress(progress, share * 0.9, share * 0.1, "ranking: "),
        )  # fmt: skip
        ranked = rank_bands(bands, candidates, importance)
        for i in ranked[max_covariates:]:
            bands[i].dropped = BEYOND_MAX.format(limit=max_covariates)

        subsets = []
        for n, size in enumerate(sizes, start=1):
            indices = sorted(ranked[:size])  # the stack's order: the full set is then the ranking's data exactly
            if indices == candidates:
                score = all_candidates
            else:
                score, _ = scored(indices, n * share, share, f"subset of {size} bands: ")
            score.bands = [bands[i].name for i in ranked[:size]]
            subsets.append(score)
    chosen = choose_subset(subsets, parsimonious)
    for i in ranked[: subsets[chosen].size]:
        bands[i].selected = True
    check_progress(progress, 1.0, "selection done")
    settings = {
        "kind": kind,
        "params": params,
        "validation": validation,
        "folds": folds,
        "block_size": used_block,
        "transform": transform,
        "random_state": random_state,
        "min_correlation": min_correlation,
        "max_correlation": max_correlation,
        "step": step,
        "max_covariates": max_covariates,
        "repeats": repeats,
    }
    return Selection(bands, subsets, chosen, parsimonious, validation, fold_ids, used_block, settings)


def fold_models_on(
    client: Client,
    kind: str,
    params: dict[str, Any],
    random_state: int,
    data: TrainingData,
    folds: np.ndarray,
    transform: str,
    progress: Progress | None,
) -> list[DepthModel]:
    """The model of each fold (in `np.unique(folds)` order) fitted on its training sites, one task each on the
    cluster of `client`: the models `cross_validate` would fit."""
    from .cluster import FitInput, fit_on

    targets = forward_transform(data.targets, transform)
    fits = [FitInput.of(data, targets, folds != fold) for fold in np.unique(folds)]
    return fit_on(client, kind, params, random_state, fits, progress)


def _check_settings(
    validation: str, min_correlation: float, max_correlation: float, step: int, max_covariates: int, repeats: int
) -> None:
    if validation == "none":
        raise ValueError("Selection scores subsets by cross-validation; choose random or spatial validation.")
    if not 0 <= min_correlation < 1:
        raise ValueError(f"MIN_CORRELATION {min_correlation:g} must lie in [0, 1); 0.05 is usual, 0 keeps every band.")
    if not 0 < max_correlation <= 1:
        raise ValueError(f"MAX_CORRELATION {max_correlation:g} must lie in (0, 1]; 0.8 is usual, 1 keeps every band.")
    if step < 1 or max_covariates < 1 or repeats < 1:
        raise ValueError(
            f"STEP ({step}), MAX_COVARIATES ({max_covariates}) and the permutation repeats ({repeats}) must be at "
            "least 1."
        )


def centre_cells(patches: np.ndarray) -> np.ndarray:
    """(S, B, p, p) -> (S, B): each site's own cell, the values the correlations are computed on."""
    r = patches.shape[-1] // 2
    return np.asarray(patches[:, :, r, r], dtype=float)


def pearson(a: np.ndarray, b: np.ndarray) -> float:
    """Pearson r over the pairs where both are finite; NaN with fewer than 3 pairs or a constant side."""
    keep = np.isfinite(a) & np.isfinite(b)
    if keep.sum() < 3:
        return float("nan")
    a, b = a[keep] - a[keep].mean(), b[keep] - b[keep].mean()
    denominator = np.sqrt(np.sum(a * a) * np.sum(b * b))
    return float(np.sum(a * b) / denominator) if denominator > 0 else float("nan")


def band_relevance(data: TrainingData) -> list[BandOutcome]:
    """Step 1's figures: r per depth and mean |r| for every numeric band; NaN for the categorical ones."""
    values = centre_cells(data.patches)
    outcomes = []
    for b, name in enumerate(data.band_names):
        categorical = b in data.categorical
        if categorical:
            r = np.full(data.targets.shape[1], np.nan)
        else:
            r = np.array([pearson(values[:, b], data.targets[:, d]) for d in range(data.targets.shape[1])])
        relevance = float("nan") if categorical or np.isnan(r).all() else float(np.nanmean(np.abs(r)))
        outcomes.append(BandOutcome(name, categorical, r, relevance))
    for outcome in outcomes:  # a band without any defined r (constant) has no relevance at all
        if not outcome.categorical and np.isnan(outcome.relevance):
            outcome.relevance = 0.0
    return outcomes


def drop_irrelevant(bands: list[BandOutcome], min_correlation: float) -> None:
    """Step 1: marks as dropped each numeric band whose relevance is below `min_correlation`."""
    for band in bands:
        if not band.categorical and band.relevance < min_correlation:
            constant = np.isnan(band.correlations).all()
            band.dropped = CONSTANT if constant else LOW_CORRELATION.format(limit=min_correlation)


def drop_redundant(data: TrainingData, bands: list[BandOutcome], max_correlation: float) -> None:
    """Step 2: marks as dropped each numeric band too correlated with a more relevant band that is kept."""
    values = centre_cells(data.patches)
    kept: list[int] = []
    numeric = [i for i, band in enumerate(bands) if not band.categorical and not band.dropped]
    for i in sorted(numeric, key=lambda i: (-bands[i].relevance, i)):
        for k in kept:
            r = pearson(values[:, i], values[:, k])
            if abs(r) > max_correlation:
                bands[i].dropped = REDUNDANT.format(band=bands[k].name, r=abs(r), limit=max_correlation)
                break
        else:
            kept.append(i)


def rank_bands(bands: list[BandOutcome], candidates: list[int], importance: np.ndarray) -> list[int]:
    """Step 3: the candidates (band indices) by decreasing importance, which is recorded with the rank; ties go
    to the more relevant band (numeric before categorical), then to the earlier one."""
    order = sorted(
        range(len(candidates)),
        key=lambda j: (-importance[j], -np.nan_to_num(bands[candidates[j]].relevance, nan=-1.0), candidates[j]),
    )
    for rank, j in enumerate(order, start=1):
        bands[candidates[j]].rank = rank
        bands[candidates[j]].importance = float(importance[j])
    return [candidates[j] for j in order]


def subset_sizes(n_ranked: int, step: int, max_covariates: int) -> list[int]:
    """1·step, 2·step, … up to min(n_ranked, max_covariates), which ends the list when it is no multiple."""
    largest = min(n_ranked, max_covariates)
    sizes = list(range(step, largest + 1, step))
    if not sizes or sizes[-1] != largest:
        sizes.append(largest)
    return sizes


def subset_data(data: TrainingData, indices: Sequence[int]) -> TrainingData:
    """The training data with only the bands `indices` (in that order); categorical flags follow their bands."""
    indices = list(indices)
    return dataclasses.replace(
        data,
        patches=data.patches[:, indices],
        band_names=[data.band_names[i] for i in indices],
        categorical=tuple(j for j, i in enumerate(indices) if i in data.categorical),
    )


def _rmse(observed: np.ndarray, predicted: np.ndarray) -> float:
    keep = np.isfinite(observed) & np.isfinite(predicted)
    return float(np.sqrt(np.mean((predicted[keep] - observed[keep]) ** 2)))


def subset_score(
    data: TrainingData, predictions: np.ndarray, folds: np.ndarray, metrics: list[dict[str, Any]], seconds: float
) -> SubsetScore:
    """Overall and per-depth RMSE, CCC and the standard error of the RMSE over the folds."""
    overall = {row["depth"]: row for row in metrics if row["group"] == "all"}
    per_fold = [_rmse(data.targets[folds == f], predictions[folds == f]) for f in np.unique(folds)]
    return SubsetScore(
        bands=list(data.band_names),
        rmse=float(overall["all"]["rmse"]),
        rmse_se=float(np.std(per_fold, ddof=1) / np.sqrt(len(per_fold))),
        ccc=float(overall["all"]["ccc"]),
        depth_rmse={label: float(overall[label]["rmse"]) for label in data.interval_labels() if label in overall},
        metrics=metrics,
        seconds=seconds,
    )


def permutation_importance(
    data: TrainingData,
    fold_models: Sequence[DepthModel],
    folds: np.ndarray,
    transform: str,
    repeats: int,
    random_state: int,
    progress: Progress | None = None,
) -> np.ndarray:
    """(B,) rise of the out-of-fold RMSE (all depths, the target's units) when each band is shuffled among the
    test sites of every fold, the mean over `repeats` shuffles; `fold_models` in `np.unique(folds)` order."""
    rng = np.random.default_rng(random_state)
    floor = prediction_floor(data.targets)
    n_bands = data.patches.shape[1]
    observed = ~np.isnan(data.targets)
    squared = np.zeros((n_bands, repeats))
    baseline = 0.0
    fold_ids = np.unique(folds)
    for i, (fold, model) in enumerate(zip(fold_ids, fold_models)):
        check_progress(progress, i / len(fold_ids), f"permutation importance, fold {i + 1}/{len(fold_ids)}")
        test = np.flatnonzero(folds == fold)
        patches, targets, seen = data.patches[test], data.targets[test], observed[test]
        predicted = to_property_scale(model.predict(patches), transform, floor)
        baseline += np.sum((predicted[seen] - targets[seen]) ** 2)
        for b in range(n_bands):  # the repeats in one call: a forest's or network's call costs more than its rows
            shuffled = np.concatenate([patches] * repeats)
            shuffled[:, b] = np.concatenate([patches[rng.permutation(len(test)), b] for _ in range(repeats)])
            predicted = to_property_scale(model.predict(shuffled), transform, floor).reshape(repeats, *targets.shape)
            squared[b] += np.sum(np.where(seen, predicted - np.nan_to_num(targets), 0.0) ** 2, axis=(1, 2))
    n = observed.sum()
    return np.mean(np.sqrt(squared / n), axis=1) - np.sqrt(baseline / n)


def choose_subset(subsets: Sequence[SubsetScore], parsimonious: bool) -> int:
    """The lowest RMSE (the smaller subset of equals); with `parsimonious` the smallest subset within one
    standard error of it."""
    best = min(range(len(subsets)), key=lambda i: (subsets[i].rmse, subsets[i].size))
    if not parsimonious:
        return best
    limit = subsets[best].rmse + subsets[best].rmse_se
    return min((i for i, s in enumerate(subsets) if s.rmse <= limit), key=lambda i: subsets[i].size)


def write_selected_bands(
    stack: CovariateStack, bands: Sequence[int], path: str, progress: Progress | None = None
) -> None:
    """Writes bands `bands` of the stack to a float32 GeoTIFF (nodata `STACK_NODATA`) on the stack's grid, each band
    described by its name in the stack, so that a CovariateStack over the file names its bands
    `{layer}_{original band name}`. Written tile by tile under a temporary name in the destination folder and
    moved into place only when complete: a failed or cancelled run leaves no file and an earlier one unchanged.
    """
    folder, name = os.path.split(os.path.abspath(path))
    temporary = os.path.join(folder, f".{name}.{secrets.token_hex(6)}.partial.tif")
    profile = {
        "driver": "GTiff",
        "width": stack.width,
        "height": stack.height,
        "count": len(bands),
        "dtype": "float32",
        "crs": stack.crs_wkt or None,
        "transform": stack.transform,
        "nodata": STACK_NODATA,
        "tiled": True,
        "blockxsize": TILE,
        "blockysize": TILE,
        "compress": "deflate",
        "predictor": 3,
        "bigtiff": "IF_SAFER",
    }
    tiles = [(row, col) for row in range(0, stack.height, TILE) for col in range(0, stack.width, TILE)]
    try:
        with rasterio.open(temporary, "w", **profile) as dataset:
            for band, index in enumerate(bands, start=1):
                dataset.set_band_description(band, stack.band_names[index])
            for n, (row, col) in enumerate(tiles):
                check_progress(progress, n / len(tiles), f"writing the selected bands: tile {n + 1}/{len(tiles)}")
                height, width = min(TILE, stack.height - row), min(TILE, stack.width - col)
                block = stack.read_block(row, col, height, width)[list(bands)]
                block[np.isnan(block)] = STACK_NODATA
                dataset.write(block, window=Window(col, row, width, height))
        os.replace(temporary, path)
    except BaseException:
        if os.path.exists(temporary):
            os.remove(temporary)
        raise
