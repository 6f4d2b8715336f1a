"""Transfer from a larger data set (the source, e.g. a national survey) to a small local one.

Two strategies of Shen et al. 2022 (deep transfer learning of soil spectral libraries for local SOC models, where
instance transfer did best). Instances: source sites join the local training data with a weight relative to a
local site. Borrowing can also hurt: a library from another region can follow another relation between
covariates and SOC. So the weight is by default chosen by an inner cross-validation on the local training sites
only, from a grid that starts at 0 (no borrowing): a library that does not predict the local sites well backs
off, one that fits is borrowed fully. Representation: a CNN pre-trained on the source sites (or a pre-trained
model from elsewhere) is fine-tuned on the local sites with its first layers frozen (`CNNDepthModel.fine_tuned`);
a random forest gets the prediction of a forest fitted on the source sites as extra covariates
(`models.stacked.SourceStackedDepthModel`). Both: representation transfer, with the source sites also joining
the local ones at a weight chosen as for instances.

Source samples only ever train: validation folds hold local sites alone, and source sites within the exclusion
radius (the spatial block size; 0, i.e. the same location, for random folds) of a fold's test sites are left out
of that fold's training (and pre-training), so that a profile present in both data sets cannot leak the answer.

Which source sites are borrowed (`SELECTIONS`): 'all'; 'nearest', for each local training site its
`NEAREST_PER_SITE` nearest source sites in covariate space (the library's most similar environments, which need
not follow the same relation to SOC); 'rs-local', the source sites whose models predict the local training sites
best (`rs_local_sites`). Each is then weighted as above, so a selection that does not help is weighted down too.
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
from scipy.spatial import cKDTree

from .depths import interval_labels
from .folds import random_folds
from .models.base import DepthModel, check_progress, scaled_progress

if TYPE_CHECKING:  # training imports this module; the types only
    from .training import Progress, TrainingData

#: TRANSFER options of 'Train SOC model', in their order there
STRATEGIES = ("none", "instances", "representation", "both")
#: SOURCE_SELECTION options, in their order there
SELECTIONS = ("all", "nearest", "rs-local")
#: source weights the automatic choice tries: from none and almost none to a source site counting as a local one
WEIGHT_GRID = (0.0, 0.01, 0.1, 0.3, 1.0)
#: folds of the inner cross-validation over the local training sites that chooses the weight
INNER_FOLDS = 5
#: a weight above 0 is chosen only when its inner RMSE is at least this share below local-only's: an inner
#: cross-validation over a few dozen sites is noisy, and on the Edgeroi halves (bench.transfer) the draws where
#: borrowing seemed to help by less than this were the ones where it hurt at the held-out sites
MIN_GAIN = 0.02
#: trees of the random forests fitted while choosing the weight: enough to rank weights, far cheaper than 500
INNER_TREES = 100
#: 'nearest' selection keeps, for every local training site, this many nearest source sites in covariate space
NEAREST_PER_SITE = 10
#: 'rs-local' selection: random subsets drawn per round, the share of the remaining source sites each holds (at
#: least RS_MIN_SUBSET sites), the share of them dropped per round, and the share of the source finally kept
RS_SUBSETS = 50
RS_SUBSET_SHARE = 0.1
RS_MIN_SUBSET = 10
RS_DROP_SHARE = 0.2
RS_KEEP_SHARE = 0.5
#: share of a fit's progress bar for the final pooled fit when the weight is chosen first (the choice fits
#: INNER_FOLDS x (grid size) models with fewer trees)
FINAL_FIT_SHARE = 0.3


@dataclass(frozen=True)
class Transfer:
    """What to borrow: the source sites (same property, depth intervals and covariate bands as the local data),
    which of them (`selection`) and how: `strategy` 'instances' pools them with the local sites at `weight`
    (0: chosen automatically from `WEIGHT_GRID`); 'representation' pre-trains a CNN on them and fine-tunes it
    on the local sites with the first `freeze_layers` layers frozen (None: the conv blocks), or stacks a random
    forest on a source forest's prediction; 'both' does that and pools them at `weight` too. With `pretrained`
    (a CNN trained elsewhere, e.g. read from a model file; `source` then None) representation transfer
    fine-tunes that model instead, and `pretrained_record` (its digest and card) goes to the model card."""

    source: TrainingData | None
    selection: str = "all"
    weight: float = 0.0
    strategy: str = "instances"
    freeze_layers: int | None = None
    pretrained: DepthModel | None = None
    pretrained_record: dict[str, Any] | None = None


@dataclass
class FoldTransfer:
    """What one fit borrowed: the weight used (0 for representation transfer, which pools nothing), the source
    sites used (pooled or pre-trained on) and excluded, the inner scores per weight."""

    weight: float
    source_sites: int
    excluded: int = 0
    scores: dict[float, float] = field(default_factory=dict)
    strategy: str = "instances"

    def to_dict(self) -> dict[str, Any]:
        return {
            "strategy": self.strategy,
            "weight": self.weight,
            "source_sites": self.source_sites,
            "excluded": self.excluded,
            "inner_rmse": {f"{w:g}": score for w, score in self.scores.items()},
        }


def _unchanged(values: np.ndarray) -> np.ndarray:
    return values


@dataclass(frozen=True)
class FitRecipe:
    """How every model of one training is made and fitted: a fresh unfitted model, the targets on the scale the
    model is fitted on (`fitted_targets`) and predictions back on the property's (`to_property`), and the seed of
    the inner choices. Transfer fits many models (screening subsets, inner folds, the final fit); all follow it."""

    make_model: Callable[[], DepthModel]
    fitted_targets: Callable[[np.ndarray], np.ndarray] = _unchanged
    to_property: Callable[[np.ndarray], np.ndarray] = _unchanged
    random_state: int = 0

    def fit(
        self,
        data: TrainingData,
        progress: Progress | None = None,
        pooled_with: TrainingData | None = None,
        weight: float = 0.0,
        screening: bool = False,
    ) -> DepthModel:
        """A model fitted on `data` (weight 1) and, when `weight` > 0, the sites of `pooled_with` at `weight`;
        weight 0 is exactly the fit on `data` alone. `screening`: the cheaper model of inner choices."""
        patches, targets, weights = pooled(data, pooled_with, weight)
        model = _screening_model(self.make_model) if screening else self.make_model()
        return model.fit(
            patches, self.fitted_targets(targets), data.intervals, categorical=data.categorical, progress=progress,
            sample_weight=weights,
        )  # fmt: skip

    def predict(self, model: DepthModel, patches: np.ndarray) -> np.ndarray:
        """The model's prediction on the property's scale."""
        return self.to_property(model.predict(patches))


def pooled(
    data: TrainingData, other: TrainingData | None, weight: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """Patches, targets and sample weights of `data` (weight 1) pooled with `other`'s sites at `weight`; `data`'s
    own arrays and no weights when nothing is pooled (weight 0, or no other sites)."""
    if other is None or weight == 0 or not len(other.site_ids):
        return data.patches, data.targets, None
    weights = np.concatenate([np.ones(len(data.site_ids)), np.full(len(other.site_ids), weight)])
    return (
        np.concatenate([data.patches, other.patches]), np.concatenate([data.targets, other.targets]), weights
    )  # fmt: skip


def check_transfer(local: TrainingData, transfer: Transfer, model_class: type[DepthModel] | None = None) -> None:
    """The source must describe the same thing as the local data, or pooling them is meaningless; representation
    transfer needs a network (`model_class` with `fine_tuned`)."""
    source = transfer.source
    if transfer.pretrained is not None:
        _check_pretrained(local, transfer, model_class)
        return
    if transfer.strategy not in STRATEGIES[1:]:
        raise ValueError(
            f"Transfer strategy '{transfer.strategy}' is not available; choose instances, representation or both."
        )
    stackable = model_class is None or _is_network(model_class) or model_class.kind == "random_forest"
    if transfer.strategy != "instances" and not stackable:
        raise ValueError(
            f"Representation transfer needs a network to fine-tune or a random forest to stack on the source "
            f"model; the {model_class.kind.replace('_', ' ')} is neither: choose instance transfer."
        )
    if transfer.selection not in SELECTIONS:
        raise ValueError(f"Unknown source selection '{transfer.selection}'; expected one of {', '.join(SELECTIONS)}.")
    if not (np.isfinite(transfer.weight) and transfer.weight >= 0):
        raise ValueError(f"The source weight is {transfer.weight}; give 0 (automatic) or a positive weight, e.g. 0.3.")
    if not len(source.site_ids):
        raise ValueError("The source data set has no usable site; check that its points lie on its covariates.")
    if source.property_name != local.property_name:
        raise ValueError(
            f"The source holds {source.property_name} but the local data {local.property_name}; harmonise the "
            "same property for both."
        )
    if not np.array_equal(source.intervals, local.intervals):
        raise ValueError(
            f"The source has the depth intervals {', '.join(source.interval_labels())} but the local data "
            f"{', '.join(local.interval_labels())}; harmonise both to the same depths."
        )
    if list(source.band_names) != list(local.band_names):
        raise ValueError(
            f"The source covariates have the bands {', '.join(source.band_names)} but the local ones "
            f"{', '.join(local.band_names)}; give the same bands in the same order."
        )
    if source.patches.shape[1:] != local.patches.shape[1:]:
        raise ValueError(
            f"Source patches are {source.patches.shape[1:]} but local ones {local.patches.shape[1:]}; sample both "
            "with the same patch size."
        )


def _check_pretrained(local: TrainingData, transfer: Transfer, model_class: type[DepthModel] | None = None) -> None:
    """A pre-trained network is fine-tuned; a pre-trained random forest's prediction becomes covariates of the
    local random forest. Either must predict the local data's depth intervals from its covariate cells."""
    model = transfer.pretrained
    if transfer.strategy != "representation" or transfer.source is not None:
        raise ValueError("A pre-trained model is carried to the local sites: use representation transfer alone.")
    if not _is_network(type(model)):
        if model_class is not None and model_class.kind != "random_forest":
            raise ValueError(
                "The pre-trained model has no network to fine-tune (a random forest); give a model file of a CNN, "
                "or choose the random forest to use its prediction as covariates."
            )
        if model.patch_size > local.patches.shape[-1]:
            raise ValueError(
                f"The pre-trained model reads {model.patch_size} x {model.patch_size} cells but the local sites "
                f"were sampled with {local.patches.shape[-1]}; sample them with the model's patch size."
            )
    intervals = np.asarray(model.intervals_, dtype=float)
    if not np.array_equal(intervals, local.intervals):
        raise ValueError(
            f"The pre-trained model predicts the depth intervals {', '.join(interval_labels(intervals))} but the "
            f"local data has {', '.join(local.interval_labels())}; harmonise the local data to the model's depths."
        )


def subset(data: TrainingData, mask: np.ndarray) -> TrainingData:
    """The sites where `mask` is True, with everything else unchanged."""
    per_site = ("site_ids", "x", "y", "patches", "targets")
    picked = {name: getattr(data, name)[mask] for name in per_site}
    if data.groups is not None:
        picked["groups"] = np.asarray(data.groups)[mask]
    return dataclasses.replace(data, **picked)


def source_summary(source: TrainingData) -> dict[str, Any]:
    """What the model card records of the source: sites, observations per depth, extent and a digest."""
    return {
        "sites": len(source.site_ids),
        "observations_per_depth": [int(n) for n in np.sum(~np.isnan(source.targets), axis=0)],
        "extent": [float(source.x.min()), float(source.y.min()), float(source.x.max()), float(source.y.max())],
        "sha256": source_digest(source),
    }


def source_digest(data: TrainingData) -> str:
    """SHA-256 of the source table (site ids, coordinates, targets and covariates): names the exact data set
    borrowed from, so that two models can be told to share (or not) their source."""
    digest = hashlib.sha256()
    digest.update("\n".join(str(site) for site in data.site_ids).encode())
    for values in (data.x, data.y, data.targets, data.patches):
        digest.update(np.ascontiguousarray(values, dtype=np.float64).tobytes())
    return digest.hexdigest()


def nearest_source_sites(local: TrainingData, source: TrainingData, per_site: int = NEAREST_PER_SITE) -> np.ndarray:
    """Mask of the source sites among the `per_site` nearest to some local site in covariate space, each band
    scaled by the local sites' standard deviation (so that units do not matter)."""
    local_values, source_values = _centre_values(local), _centre_values(source)
    centre = np.nanmean(local_values, axis=0)
    spread = np.nanstd(local_values, axis=0)
    spread[~(spread > 0)] = 1.0
    scaled_source = np.nan_to_num((source_values - centre) / spread)
    scaled_local = np.nan_to_num((local_values - centre) / spread)
    k = min(per_site, len(source_values))
    _, nearest = cKDTree(scaled_source).query(scaled_local, k=k)
    mask = np.zeros(len(source_values), dtype=bool)
    mask[np.asarray(nearest).ravel()] = True
    return mask


def rs_local_sites(local: TrainingData, source: TrainingData, recipe: FitRecipe) -> np.ndarray:
    """Mask of the source sites kept by an RS-LOCAL-style search (after the rs-local algorithm of Lobsey et
    al. 2017 for spectral libraries), which uses only the `local` sites given (a fold's training sites).

    In rounds, `RS_SUBSETS` random subsets of the remaining source sites each fit a model on their own, scored by
    its RMSE at the local sites; a site scores the mean RMSE of the subsets that held it, and the worst
    `RS_DROP_SHARE` of the remaining sites are dropped, until `RS_KEEP_SHARE` of the source is left: the sites
    that, whatever they are pooled with, predict the local data best. Repeating rounds on the survivors sharpens
    the scores, as a site that spoils its subsets stands out more among better neighbours."""
    n_sources = len(source.site_ids)
    target = max(1, round(RS_KEEP_SHARE * n_sources))
    remaining = np.arange(n_sources)
    rng = np.random.default_rng(recipe.random_state)
    observed = np.isfinite(local.targets)
    total, count = np.zeros(n_sources), np.zeros(n_sources)
    while len(remaining) > target:
        size = min(len(remaining), max(RS_MIN_SUBSET, round(RS_SUBSET_SHARE * len(remaining))))
        for _ in range(RS_SUBSETS):
            members = rng.choice(remaining, size, replace=False)
            piece = subset(source, members)
            if not np.isfinite(piece.targets).any():
                continue
            predicted = recipe.predict(recipe.fit(piece, screening=True), local.patches)
            pairs = observed & np.isfinite(predicted)
            total[members] += np.sqrt(np.mean((predicted[pairs] - local.targets[pairs]) ** 2))
            count[members] += 1
        # a site no subset drew scores the mean, so it is neither favoured nor dropped for bad luck
        drawn = count[remaining] > 0
        score = np.full(len(remaining), np.nan)
        score[drawn] = total[remaining][drawn] / count[remaining][drawn]
        score[~drawn] = np.nanmean(score) if drawn.any() else 0.0
        keep = max(target, len(remaining) - max(1, round(RS_DROP_SHARE * len(remaining))))
        remaining = remaining[np.sort(np.argsort(score, kind="stable")[:keep])]
    mask = np.zeros(n_sources, dtype=bool)
    mask[remaining] = True
    return mask


def near_sites(source: TrainingData, x: np.ndarray, y: np.ndarray, radius: float) -> np.ndarray:
    """Mask of the source sites within `radius` (map units; 0: at the same place) of any of the points x, y."""
    if not len(x):
        return np.zeros(len(source.site_ids), dtype=bool)
    distance, _ = cKDTree(np.column_stack([x, y])).query(np.column_stack([source.x, source.y]), k=1)
    return distance <= radius


def fit_with_source(
    local: TrainingData,
    transfer: Transfer,
    recipe: FitRecipe,
    exclusion_radius: float = 0.0,
    progress: Progress | None = None,
    available: np.ndarray | None = None,
) -> tuple[DepthModel, FoldTransfer]:
    """A model fitted on the local sites plus the borrowed source sites, and what was borrowed.

    `available`: the source sites this fit may use (a validation fold excludes those near its test sites).
    The sites of `transfer.selection` are chosen for the `local` sites of this fit, then, with `transfer.weight`
    0, their weight by `choose_weight` on the local sites alone.
    """
    if transfer.pretrained is not None:
        if _is_network(type(transfer.pretrained)):
            model = transfer.pretrained.fine_tuned(
                local.patches, recipe.fitted_targets(local.targets), transfer.freeze_layers, progress
            )
        else:
            from .models.stacked import SourceStackedDepthModel

            model = SourceStackedDepthModel(transfer.pretrained, recipe.make_model()).fit(
                local.patches, recipe.fitted_targets(local.targets), local.intervals, local.categorical, progress
            )
        return model, FoldTransfer(0.0, 0, strategy="representation")
    source = transfer.source if available is None else subset(transfer.source, available)
    excluded = 0 if available is None else int(np.sum(~available))
    scores: dict[float, float] = {}
    borrowed = _selected(local, source, transfer.selection, recipe)
    if transfer.strategy != "instances":
        return _fit_representation(local, borrowed, transfer, recipe, exclusion_radius, progress, excluded)
    weight, final_share = transfer.weight, 1.0
    if weight == 0:
        final_share = FINAL_FIT_SHARE
        weight, scores = choose_weight(
            local, borrowed, recipe, exclusion_radius, scaled_progress(progress, 0.0, 1.0 - final_share)
        )
    model = recipe.fit(local, scaled_progress(progress, 1.0 - final_share, final_share), borrowed, weight)
    used = len(borrowed.site_ids) if weight > 0 else 0
    return model, FoldTransfer(weight, used, excluded, scores)


def choose_weight(
    local: TrainingData,
    source: TrainingData,
    recipe: FitRecipe,
    exclusion_radius: float = 0.0,
    progress: Progress | None = None,
) -> tuple[float, dict[float, float]]:
    """The weight of `WEIGHT_GRID` whose pooled models best predict held-out local sites (RMSE over every site
    and depth of an inner random k-fold over the local sites), and the RMSE of every weight. Equal scores go to
    the smaller weight, and 0 (local only) wins unless the best weight beats it by `MIN_GAIN`. Source sites near
    an inner test site are left out as in the outer folds."""
    n_sites = len(local.site_ids)
    if n_sites < 2:
        raise ValueError("Choosing the source weight needs at least 2 local sites; give a weight instead.")
    folds = random_folds(n_sites, min(INNER_FOLDS, n_sites), recipe.random_state)
    predicted = {weight: np.full(local.targets.shape, np.nan) for weight in WEIGHT_GRID}
    fold_ids = np.unique(folds)
    for i, fold in enumerate(fold_ids):
        check_progress(progress, i / len(fold_ids), f"choosing the source weight: inner fold {i + 1}/{len(fold_ids)}")
        test = folds == fold
        inner_local = subset(local, ~test)
        if not np.isfinite(inner_local.targets).any():
            continue
        borrowed = subset(source, ~near_sites(source, local.x[test], local.y[test], exclusion_radius))
        for weight in WEIGHT_GRID:
            model = recipe.fit(inner_local, pooled_with=borrowed, weight=weight, screening=True)
            predicted[weight][test] = recipe.predict(model, local.patches[test])
    observed = np.isfinite(local.targets)
    scores = {}
    for weight, values in predicted.items():
        pairs = observed & np.isfinite(values)
        scores[weight] = float(np.sqrt(np.mean((values[pairs] - local.targets[pairs]) ** 2)))
    best = min(WEIGHT_GRID, key=lambda weight: (scores[weight], weight))
    return (best if scores[best] <= (1 - MIN_GAIN) * scores[0.0] else 0.0), scores


def _fit_representation(
    local: TrainingData,
    borrowed: TrainingData,
    transfer: Transfer,
    recipe: FitRecipe,
    exclusion_radius: float,
    progress: Progress | None,
    excluded: int,
) -> tuple[DepthModel, FoldTransfer]:
    """Representation transfer ('representation') and representation plus instances ('both').

    A network is pre-trained on the borrowed sites, then fine-tuned on the local ones (with 'both': on the
    local sites plus the borrowed ones at a weight chosen as for instance transfer). A random forest gets the
    prediction of a forest fitted on the borrowed sites as extra covariates (`SourceStackedDepthModel`); with
    'both' the borrowed sites also join its training data at a weight, their extra covariates then from forests
    that did not see them (`source_bands_out_of_fold`), as at a local site."""
    from .models.stacked import SourceStackedDepthModel, with_source_bands

    both = transfer.strategy == "both"
    source_model = recipe.fit(borrowed, scaled_progress(progress, 0.0, 0.4))
    network = _is_network(type(source_model))
    if network:
        stacked_local, stacked_source = local, borrowed
    else:
        stacked_local = dataclasses.replace(local, patches=with_source_bands(source_model, local.patches))
        stacked_source = borrowed
        if both:
            out_of_fold = source_bands_out_of_fold(borrowed, recipe)
            stacked_source = dataclasses.replace(borrowed, patches=out_of_fold)
    weight, scores = 0.0, {}
    if both:
        weight = transfer.weight
        if weight == 0:
            weight, scores = choose_weight(
                stacked_local, stacked_source, recipe, exclusion_radius, scaled_progress(progress, 0.4, 0.3)
            )
    final = scaled_progress(progress, 0.7, 0.3)
    if network:
        patches, targets, weights = pooled(stacked_local, stacked_source, weight)
        model = source_model.fine_tuned(patches, recipe.fitted_targets(targets), transfer.freeze_layers, final, weights)
    else:
        model = SourceStackedDepthModel(source_model, recipe.fit(stacked_local, final, stacked_source, weight))
    return model, FoldTransfer(weight, len(borrowed.site_ids), excluded, scores, transfer.strategy)


def source_bands_out_of_fold(source: TrainingData, recipe: FitRecipe) -> np.ndarray:
    """The source sites' patches stacked with a source model's prediction (`with_source_bands`), each from a
    model fitted on the other `INNER_FOLDS` - 1 folds of source sites: a forest predicting its own training
    sites is near their observed values, a covariate the local sites could never have."""
    from .models.stacked import with_source_bands

    n_sites = len(source.site_ids)
    folds = random_folds(n_sites, min(INNER_FOLDS, n_sites), recipe.random_state)
    stacked = np.full((n_sites, source.patches.shape[1] + source.targets.shape[1], 1, 1), np.nan, dtype=np.float32)
    for fold in np.unique(folds):
        test = folds == fold
        stacked[test] = with_source_bands(recipe.fit(subset(source, ~test)), source.patches[test])
    return stacked


def _is_network(model_class: type[DepthModel]) -> bool:
    """Whether the kind can be fine-tuned (the CNNs); the others take transfer as stacked covariates."""
    return hasattr(model_class, "fine_tuned")


def _selected(local: TrainingData, source: TrainingData, selection: str, recipe: FitRecipe) -> TrainingData:
    """The source sites `selection` borrows for a fit on the `local` sites."""
    if not len(source.site_ids) or selection == "all":
        return source
    if selection == "nearest":
        return subset(source, nearest_source_sites(local, source))
    return subset(source, rs_local_sites(local, source, recipe))


def _screening_model(make_model: Callable[[], DepthModel]) -> DepthModel:
    """The model for the inner weight choice: a random forest with `INNER_TREES` trees and no tuning of its own
    (the ranking of weights needs far fewer trees than the map); other models as they are."""
    model = make_model()
    params = model.get_params()
    overrides: dict[str, Any] = {}
    if "n_trees" in params:
        overrides["n_trees"] = min(params["n_trees"], INNER_TREES)
    if params.get("tune"):
        overrides["tune"] = False
    return model.set_params(**overrides)


def _centre_values(data: TrainingData) -> np.ndarray:
    centre = data.patches.shape[-1] // 2
    return data.patches[:, :, centre, centre].astype(float)


def gain_rows(transfer_metrics: list[dict[str, Any]], local_metrics: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per depth and over all depths (group 'all'): RMSE, MAE and CCC of the local-only and the transfer model on
    the same folds, and the change of RMSE in % (negative: transfer helped)."""
    local_by_depth = {row["depth"]: row for row in local_metrics if row["group"] == "all"}
    rows = []
    for row in transfer_metrics:
        if row["group"] != "all" or row["depth"] not in local_by_depth:
            continue
        base = local_by_depth[row["depth"]]
        change = 100.0 * (row["rmse"] - base["rmse"]) / base["rmse"] if base["rmse"] > 0 else float("nan")
        rows.append(
            {
                "depth": row["depth"],
                "n": row["n"],
                "rmse_local": base["rmse"],
                "rmse_transfer": row["rmse"],
                "rmse_change_percent": change,
                "mae_local": base["mae"],
                "mae_transfer": row["mae"],
                "ccc_local": base["ccc"],
                "ccc_transfer": row["ccc"],
            }
        )
    return rows
