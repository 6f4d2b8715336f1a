"""Training with honest validation: k-fold cross-validation over whole sites, then a final fit on all sites.

A site's depths always fall in the same fold, so no site is on both sides of a split. Spatial folds hold whole
square blocks of sites, which keeps near neighbours out of each other's test folds.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import TYPE_CHECKING, Any

import numpy as np

from .conformal import out_of_fold_bounds, site_scores
from .depths import interval_labels
from .folds import default_block_size, random_folds, spatial_block_folds
from .metrics import RmseDifference, metrics_table, paired_rmse_difference
from .models.base import DepthModel, check_progress, scaled_progress
from .registry import CONFORMAL, entry
from .transfer import (
    FitRecipe,
    FoldTransfer,
    Transfer,
    check_transfer,
    fit_with_source,
    near_sites,
    source_summary,
    subset,
)

if TYPE_CHECKING:
    from .cluster import ClusterSpec

TRANSFORMS = ("none", "log")
VALIDATIONS = ("none", "random", "spatial")
#: central probability of the out-of-fold prediction intervals whose coverage the metrics report: the level
#: 'Predict SOC maps' proposes
INTERVAL_LEVEL = 0.9

Progress = Callable[[float, str], bool]


def forward_transform(values: np.ndarray, transform: str) -> np.ndarray:
    """The scale the model is fitted on: log(1 + SOC) tames the long right tail of SOC."""
    if transform == "log":
        if np.nanmin(values) < 0:
            raise ValueError("The log transform needs non-negative targets; choose no transform.")
        return np.log1p(values)
    return values


def inverse_transform(values: np.ndarray, transform: str) -> np.ndarray:
    return np.expm1(values) if transform == "log" else values


def prediction_floor(targets: np.ndarray) -> float | None:
    """0 when every observed value is >= 0, as for SOC: a prediction below 0 is physically impossible (a CNN's
    output is unbounded), so predictions are raised to 0. None for a property that takes negative values."""
    return 0.0 if np.nanmin(targets) >= 0 else None


def to_property_scale(values: np.ndarray, transform: str, floor: float | None) -> np.ndarray:
    """Model output -> the property's values: back-transformed, then raised to the floor where one applies."""
    values = inverse_transform(values, transform)
    return values if floor is None else np.maximum(values, floor)  # NaN (nodata) stays NaN


def predictions_to_fitted_scale(values: np.ndarray, transform: str) -> np.ndarray:
    """Undoes `inverse_transform` on predictions. Unlike targets, back-transformed predictions may be negative
    (a model may predict below log 1 = 0 near 0 g/kg), but expm1 keeps them above -1, where log1p is defined."""
    return np.log1p(values) if transform == "log" else values


@dataclass
class TrainingData:
    """Sites with covariate patches and a target per depth interval (NaN where a site lacks that depth)."""

    site_ids: np.ndarray  # (S,)
    x: np.ndarray  # (S,) in the rasters' CRS
    y: np.ndarray  # (S,)
    patches: np.ndarray  # (S, B, p, p) float32
    targets: np.ndarray  # (S, D)
    intervals: np.ndarray  # (D, 2)
    property_name: str
    band_names: list[str]
    categorical: tuple[int, ...] = ()
    groups: np.ndarray | None = None  # (S,)

    def interval_labels(self) -> list[str]:
        return interval_labels(self.intervals)


@dataclass
class CrossValidation:
    folds: np.ndarray  # (S,) fold of each site
    predictions: np.ndarray  # (S, D) out-of-fold predictions on the target's own scale
    fold_models: list[DepthModel]
    metrics: list[dict[str, Any]]
    block_size: float | None
    seconds: float
    scheme: str
    #: (2, S, D) out-of-fold lower and upper INTERVAL_LEVEL bounds, for models that predict quantiles
    bounds: np.ndarray | None = None
    #: with transfer: the same folds without the source, to measure the gain, and what each fold borrowed
    local_only: CrossValidation | None = None
    transfer_folds: list[FoldTransfer] = field(default_factory=list)


@dataclass
class TrainingResult:
    model: DepthModel
    transform: str
    validation: CrossValidation | None
    seconds: float
    settings: dict[str, Any] = field(default_factory=dict)
    #: other kinds cross-validated on the same folds (`compare_on_folds`)
    comparisons: list[Comparison] = field(default_factory=list)


def make_folds(
    data: TrainingData, scheme: str, k: int, block_size: float | None, random_state: int
) -> tuple[np.ndarray, float | None]:
    """Fold id per site; for spatial folds also the block size used (chosen from the data when not given)."""
    n_sites = len(data.site_ids)
    if k < 2:
        raise ValueError("Cross-validation needs at least 2 folds.")
    if k > n_sites:
        raise ValueError(f"{k} folds need at least {k} sites; there are {n_sites}. Use fewer folds.")
    if scheme == "random":
        return random_folds(n_sites, k, random_state), None
    if scheme == "spatial":
        size = block_size if block_size and block_size > 0 else default_block_size(data.x, data.y, k)
        return spatial_block_folds(data.x, data.y, k, size, random_state), float(size)
    raise ValueError(f"Unknown validation scheme '{scheme}'.")


def cross_validate(
    data: TrainingData,
    make_model: Callable[[], DepthModel],
    folds: np.ndarray,
    transform: str = "none",
    model_name: str = "",
    progress: Progress | None = None,
    block_size: float | None = None,
    scheme: str = "random",
    fitted: Sequence[DepthModel] | None = None,
    fit_fold: Callable[[np.ndarray, np.ndarray, Progress | None], DepthModel] | None = None,
    conformal: bool = False,
) -> CrossValidation:
    """Out-of-fold predictions for every site, each from a model that never saw that site.

    `fitted`: the fold models, already fitted elsewhere (on a cluster) in the order of the fold ids. Otherwise
    `fit_fold(train, test, progress)` fits a fold's model from its site masks (default: `make_model` on the
    training sites), e.g. to add borrowed sites of another data set. `conformal`: the model's intervals are
    conformal over the fold models (its kind's `intervals`); their out-of-fold coverage is measured too."""
    started = time.perf_counter()
    fold_ids = np.unique(folds)
    predictions = np.full(data.targets.shape, np.nan)
    bounds = np.full((2, *data.targets.shape), np.nan)
    quantiles = [(1 - INTERVAL_LEVEL) / 2, (1 + INTERVAL_LEVEL) / 2]
    fold_models = []
    fitted_targets = forward_transform(data.targets, transform)
    floor = prediction_floor(data.targets)
    for i, fold in enumerate(fold_ids):
        test = folds == fold
        train = ~test
        label = f"fold {i + 1}/{len(fold_ids)}: "
        check_progress(progress, i / len(fold_ids), f"{label}training")
        fold_progress = scaled_progress(progress, i / len(fold_ids), 1 / len(fold_ids), label)
        if fitted is not None:
            model = fitted[i]
        elif fit_fold is not None:
            model = fit_fold(train, test, fold_progress)
        else:
            model = make_model().fit(
                data.patches[train],
                fitted_targets[train],
                data.intervals,
                categorical=data.categorical,
                progress=fold_progress,
            )
        predictions[test] = to_property_scale(model.predict(data.patches[test]), transform, floor)
        if hasattr(model, "predict_quantiles"):  # quantiles are monotone in the transform: bounds map to bounds
            fold_bounds = np.moveaxis(model.predict_quantiles(data.patches[test], quantiles), -1, 0)
            bounds[:, test] = to_property_scale(fold_bounds, transform, floor)
        fold_models.append(model)
    predictions[np.isnan(data.targets)] = np.nan
    if conformal:
        fitted_oof = predictions_to_fitted_scale(predictions, transform)
        scores, spread, floors = site_scores(fold_models, data.patches, fitted_targets, fitted_oof)
        fitted_bounds = out_of_fold_bounds(scores, spread, floors, fitted_oof, folds, INTERVAL_LEVEL)
        bounds = to_property_scale(fitted_bounds, transform, floor)
    bounds = bounds if np.isfinite(bounds).any() else None
    metrics = validation_metrics(data, predictions, model_name, bounds)
    return CrossValidation(
        folds=folds,
        predictions=predictions,
        fold_models=fold_models,
        metrics=metrics,
        block_size=block_size,
        seconds=time.perf_counter() - started,
        scheme=scheme,
        bounds=bounds,
    )


def out_of_fold_rows(data: TrainingData, cv: CrossValidation) -> list[tuple[int, list[Any]]]:
    """(site index, [site, depth label, top, bottom, observed, predicted, fold from 1]) per observed site and
    depth, site by site: the out-of-fold predictions as a table."""
    labels = data.interval_labels()
    rows = []
    for s, site in enumerate(data.site_ids):
        for d, (top, bottom) in enumerate(data.intervals):
            if not np.isnan(data.targets[s, d]):
                observed, predicted, fold = float(data.targets[s, d]), float(cv.predictions[s, d]), int(cv.folds[s])
                rows.append((s, [int(site), labels[d], float(top), float(bottom), observed, predicted, fold + 1]))
    return rows


def validation_metrics(
    data: TrainingData, predictions: np.ndarray, model_name: str, bounds: np.ndarray | None = None
) -> list[dict[str, Any]]:
    """Metrics per depth and over all depths (and per group) from site × depth predictions, with confidence
    intervals from a bootstrap over the sites, and the coverage and width of (2, S, D) interval `bounds`."""
    depth_index, site_index = np.nonzero(~np.isnan(data.targets.T))  # depth-major: depths in interval order
    labels = np.array(data.interval_labels(), dtype=object)[depth_index]
    groups = None if data.groups is None else np.asarray(data.groups, dtype=object)[site_index]
    return metrics_table(
        data.targets[site_index, depth_index],
        predictions[site_index, depth_index],
        list(labels),
        groups=None if groups is None else list(groups),
        model_name=model_name,
        sites=list(data.site_ids[site_index]),
        lower=None if bounds is None else bounds[0, site_index, depth_index],
        upper=None if bounds is None else bounds[1, site_index, depth_index],
    )


def rmse_differences(
    data: TrainingData, predictions: np.ndarray, reference: np.ndarray, seed: int = 0
) -> list[RmseDifference]:
    """RMSE of `predictions` relative to `reference` (both (S, D) out-of-fold, on the same folds) over all depths,
    then per depth, each with its paired bootstrap interval over the sites."""
    sites = np.repeat(np.arange(len(data.site_ids)), data.targets.shape[1]).reshape(data.targets.shape)
    columns = [slice(None), *range(data.targets.shape[1])]
    return [
        paired_rmse_difference(data.targets[:, c], predictions[:, c], reference[:, c], sites[:, c].ravel(), seed=seed)
        for c in columns
    ]


@dataclass
class Comparison:
    """Another model kind cross-validated on the trained model's folds: its validation, and the trained model's
    RMSE relative to it, over all depths then per depth (negative: the trained model is better)."""

    kind: str
    validation: CrossValidation
    differences: list[RmseDifference]


def compare_on_folds(
    data: TrainingData,
    result: TrainingResult,
    others: dict[str, dict[str, Any]],
    progress: Progress | None = None,
) -> list[Comparison]:
    """Cross-validates each kind of `others` (kind -> its settings) on the folds of `result`'s validation, with
    its transform and seed, so that every difference is paired site by site: the site-to-site variation both
    models share cancels, and '1 % better' comes with an interval that says whether it is more than chance."""
    cv = result.validation
    if cv is None:
        raise ValueError("Comparing models needs validation: choose random or spatial k-fold validation.")
    transform, seed = result.settings["transform"], result.settings["random_state"]
    comparisons = []
    for i, (kind, params) in enumerate(others.items()):
        cls, label = entry(kind).loader(), entry(kind).label
        other = cross_validate(
            data, partial(cls, **params, random_state=seed), cv.folds, transform, label,
            scaled_progress(progress, i / len(others), 1 / len(others), f"comparing with {label}: "),
            cv.block_size, cv.scheme, conformal=entry(kind).intervals == CONFORMAL,
        )  # fmt: skip
        comparisons.append(Comparison(kind, other, rmse_differences(data, cv.predictions, other.predictions, seed)))
    return comparisons


def train(
    data: TrainingData,
    kind: str,
    params: dict[str, Any],
    validation: str = "spatial",
    folds: int = 10,
    block_size: float | None = None,
    transform: str = "none",
    random_state: int = 0,
    progress: Progress | None = None,
    cluster: ClusterSpec | None = None,
    transfer: Transfer | None = None,
) -> TrainingResult:
    """Cross-validates (unless `validation` is 'none'), then fits the final model on all sites. With `cluster`,
    the fold models and the final model are fitted as tasks on that Dask cluster, with the same result; with
    `transfer` on the local sites plus the borrowed source sites (see `train_with_transfer`)."""
    if transfer is not None:
        return train_with_transfer(
            data, kind, params, transfer, validation, folds, block_size, transform, random_state, progress, cluster
        )
    if transform not in TRANSFORMS:
        raise ValueError(f"Unknown transform '{transform}'; expected one of {', '.join(TRANSFORMS)}.")
    started = time.perf_counter()
    model_kind = entry(kind)
    cls = model_kind.loader()

    def make_model() -> DepthModel:
        return cls(**params, random_state=random_state)

    result_cv = None
    final_share = 1.0
    fold_ids = None
    if validation != "none":
        fold_ids, used_block = make_folds(data, validation, folds, block_size, random_state)
        final_share = 1.0 / (len(np.unique(fold_ids)) + 1)
    fitted = None
    if cluster is not None:
        from .cluster import fit_models

        rows = [] if fold_ids is None else [fold_ids != fold for fold in np.unique(fold_ids)]
        fitted = fit_models(
            cluster, kind, params, random_state, data, forward_transform(data.targets, transform), [*rows, None],
            scaled_progress(progress, 0.0, 0.95, "on the cluster: "),
        )  # fmt: skip
    if fold_ids is not None:
        result_cv = cross_validate(
            data,
            make_model,
            fold_ids,
            transform=transform,
            model_name=model_kind.label,
            progress=scaled_progress(progress, 0.0, 1.0 - final_share, "validation "),
            block_size=used_block,
            scheme=validation,
            fitted=None if fitted is None else fitted[:-1],
            conformal=model_kind.intervals == CONFORMAL,
        )
    model = (
        fitted[-1]
        if fitted is not None
        else make_model().fit(
            data.patches,
            forward_transform(data.targets, transform),
            data.intervals,
            categorical=data.categorical,
            progress=scaled_progress(progress, 1.0 - final_share, final_share, "final model: "),
        )
    )
    settings = {
        "kind": kind,
        "params": params,
        "validation": validation,
        "folds": folds if validation != "none" else None,
        "block_size": None if result_cv is None else result_cv.block_size,
        "transform": transform,
        "random_state": random_state,
    }
    return TrainingResult(model, transform, result_cv, time.perf_counter() - started, settings)


def train_with_transfer(
    data: TrainingData,
    kind: str,
    params: dict[str, Any],
    transfer: Transfer,
    validation: str = "spatial",
    folds: int = 10,
    block_size: float | None = None,
    transform: str = "none",
    random_state: int = 0,
    progress: Progress | None = None,
    cluster: ClusterSpec | None = None,
) -> TrainingResult:
    """`train` with source sites borrowed (`core.transfer`). The folds hold local sites only; each fold is run
    twice, local-only and with the source, so that the gain is measured on the local data
    (`CrossValidation.local_only`). With `cluster`, every fit (local-only folds, folds with the source, final)
    is one task on that Dask cluster, each seeded as here, so the result is the same."""
    if transform not in TRANSFORMS:
        raise ValueError(f"Unknown transform '{transform}'; expected one of {', '.join(TRANSFORMS)}.")
    started = time.perf_counter()
    model_kind = entry(kind)
    cls = model_kind.loader()
    check_transfer(data, transfer, cls)
    floor = prediction_floor(data.targets)

    def make_model() -> DepthModel:
        return cls(**params, random_state=random_state)

    recipe = FitRecipe(
        make_model,
        fitted_targets=lambda values: forward_transform(values, transform),
        to_property=lambda values: to_property_scale(values, transform, floor),
        random_state=random_state,
    )

    fold_ids, used_block = None, None
    if validation != "none":
        fold_ids, used_block = make_folds(data, validation, folds, block_size, random_state)
    radius = used_block or 0.0

    def source_fit(train_sites: np.ndarray, test_sites: np.ndarray) -> Callable[..., tuple[DepthModel, FoldTransfer]]:
        """`fit_with_source` on a fold's training sites, without the source sites near its test sites."""
        available = None
        if transfer.source is not None:
            available = ~near_sites(transfer.source, data.x[test_sites], data.y[test_sites], radius)
        return partial(fit_with_source, subset(data, train_sites), transfer, recipe, radius, available=available)

    final_fit = partial(fit_with_source, data, transfer, recipe)
    trains = [] if fold_ids is None else [fold_ids != fold for fold in np.unique(fold_ids)]
    remote = None  # with a cluster: the local-only fold models, then (model, record) of each fold and the final fit
    if cluster is not None:
        from .cluster import FitInput, connect, fit_call, run_on

        targets = recipe.fitted_targets(data.targets)
        calls = [fit_call(kind, params, random_state, FitInput.of(data, targets, t)) for t in trains]
        calls += [source_fit(t, ~t) for t in trains] + [final_fit]
        with connect(cluster) as client:
            remote = run_on(client, calls, scaled_progress(progress, 0.0, 0.95, "on the cluster: "))
        progress = scaled_progress(progress, 0.95, 0.05)

    result_cv = None
    if fold_ids is not None:
        fold_records: list[FoldTransfer] = []

        def fit_fold(train_sites: np.ndarray, test_sites: np.ndarray, fold_progress: Progress | None) -> DepthModel:
            if remote is None:
                model, record = source_fit(train_sites, test_sites)(progress=fold_progress)
            else:
                model, record = remote[len(trains) + len(fold_records)]
            fold_records.append(record)
            return model

        settings = {"block_size": used_block, "scheme": validation, "conformal": model_kind.intervals == CONFORMAL}
        local_only = cross_validate(
            data, make_model, fold_ids, transform, f"{model_kind.label} (local only)",
            scaled_progress(progress, 0.0, 0.2, "local-only validation "), **settings,
            fitted=None if remote is None else remote[: len(trains)],
        )  # fmt: skip
        result_cv = cross_validate(
            data, make_model, fold_ids, transform, f"{model_kind.label} (with transfer)",
            scaled_progress(progress, 0.2, 0.6, "transfer validation "), fit_fold=fit_fold, **settings,
        )  # fmt: skip
        result_cv.local_only, result_cv.transfer_folds = local_only, fold_records
    final_start = 0.0 if result_cv is None else 0.8
    model, final_record = (
        final_fit(progress=scaled_progress(progress, final_start, 1.0 - final_start, "final model: "))
        if remote is None
        else remote[-1]
    )
    settings = {
        "kind": model.kind,  # representation transfer makes a random forest a source-stacked one
        "params": params,
        "validation": validation,
        "folds": folds if validation != "none" else None,
        "block_size": None if result_cv is None else result_cv.block_size,
        "transform": transform,
        "random_state": random_state,
        "transfer": {
            "strategy": transfer.strategy,
            "selection": transfer.selection,
            "weight_requested": transfer.weight,
            "freeze_layers": transfer.freeze_layers,
            "weight": final_record.weight,
            "inner_rmse": final_record.to_dict()["inner_rmse"],
            "source_sites_used": final_record.source_sites,
            "source": None if transfer.source is None else source_summary(transfer.source),
            "pretrained": transfer.pretrained_record,
            "folds": [] if result_cv is None else [record.to_dict() for record in result_cv.transfer_folds],
            "local_only_metrics": [] if result_cv is None else result_cv.local_only.metrics,
        },
    }
    return TrainingResult(model, transform, result_cv, time.perf_counter() - started, settings)
