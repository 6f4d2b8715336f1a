"""The area of applicability (AOA): where the covariates resemble the training data closely enough for the
model's cross-validated accuracy to hold (Meyer & Pebesma 2021, Methods Ecol. Evol. 12:1620–1633), computed as
R's CAST (`trainDI`, `aoa`) does, so that results match what R users expect.

- Predictor space: each band's value at the site (the centre cell of a CNN's patch: the patch's other cells are
  the site's surroundings, not its conditions, and a DI over p × p × B values would be dominated by the
  surroundings and cost p² times more), a categorical band as one 0/1 dummy per class seen in training. Every
  column is centred and scaled with the training sites' mean and standard deviation (n − 1, as R's `scale`), then
  multiplied by its band's weight (a categorical band's dummies all take the band's weight).
- Weights: the model's permutation importance, out of fold (see `permutation_importance`): how much the RMSE of
  the cross-validation grows when a band's values are shuffled among the test sites. A band the model does not
  use adds nothing to the distance. Negative importances (noise) are set to 0, as CAST does; when every band's
  importance is 0 all bands weigh 1.
- DI of a point = its distance to the nearest training site / the mean distance between training sites.
- The training sites' DI is taken to the nearest site outside the site's own cross-validation fold, so that it
  measures the dissimilarity the cross-validation actually tested; the threshold is the upper whisker of those
  values: min(Q75 + 1.5 · IQR, max) (quantiles as R's default, type 7). A point with DI ≤ threshold is inside
  the AOA.
- Local point density (LPD): how many training sites lie closer than the threshold, in DI units (CAST's LPD).

New points are matched against k-d trees (scipy's cKDTree) over the weighted, scaled sites, one per class of the
most important categorical band (see `DissimilarityIndex`), so a map is processed block by block in memory that
does not grow with the map.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
from scipy.spatial import cKDTree
from scipy.spatial.distance import cdist

#: shuffles of each band (per fold) whose RMSE increases are averaged into its importance
IMPORTANCE_REPEATS = 3
#: sites per leaf of the k-d tree: in the 10–20 dimensions of a covariate stack larger leaves than scipy's 16
#: answer a query about 25 % sooner (bench/aoa.py)
TREE_LEAF_SIZE = 32
#: a search bounded by each point's best distance so far goes in batches of similar bounds (a query takes one)
BOUND_BATCHES = 8
#: rows of the training sites compared at once when averaging pairwise distances (bounds memory to ~64 MB)
DISTANCE_ROWS = 2048


class FoldModel(Protocol):
    def predict(self, patches: np.ndarray) -> np.ndarray:
        """(S, B, p, p) -> (S, D) on the scale of the targets it was fitted to."""


def permutation_importance(
    fold_models: Sequence[FoldModel],
    patches: np.ndarray,
    targets: np.ndarray,
    folds: np.ndarray,
    repeats: int = IMPORTANCE_REPEATS,
    seed: int = 0,
) -> np.ndarray:
    """Per band, the increase in out-of-fold RMSE when that band is shuffled, negatives set to 0.

    `fold_models[k]` is the model fitted without the sites of the k-th fold id (in sorted order), `targets`
    (S, D) on the scale the models predict (NaN where a site lacks a depth). For each repeat and each band, the
    band's patches are shuffled among the sites of each test fold (one permutation per fold, drawn from
    `numpy.random.default_rng(seed)` in the order repeat, band, fold); the RMSE over every observed site and
    depth of those predictions, minus the unshuffled out-of-fold RMSE, averaged over the repeats, is the band's
    importance. Out of fold rather than on the training sites, so that a forest's memorised training data does
    not make every band look important (the same reason randomForest uses its out-of-bag samples).
    """
    patches = np.asarray(patches)
    targets = np.asarray(targets, dtype=float)
    fold_ids = np.unique(folds)
    if len(fold_ids) != len(fold_models):
        raise ValueError(
            f"{len(fold_models)} fold models were given for {len(fold_ids)} folds; give one model per fold."
        )
    if repeats < 1:
        raise ValueError(f"Permutation importance needs at least 1 repeat; got {repeats}.")
    observed = np.isfinite(targets)
    tests = [np.flatnonzero(folds == fold) for fold in fold_ids]
    baseline = np.full(targets.shape, np.nan)
    for model, test in zip(fold_models, tests):
        baseline[test] = model.predict(patches[test])
    base_rmse = _rmse(baseline, targets, observed)
    n_bands = patches.shape[1]
    rng = np.random.default_rng(seed)
    increase = np.zeros(n_bands)
    for _ in range(repeats):
        orders = [[rng.permutation(len(test)) for test in tests] for _ in range(n_bands)]
        shuffled = np.full((n_bands, *targets.shape), np.nan)
        for k, (model, test) in enumerate(zip(fold_models, tests)):
            # every band's shuffled copy of this fold's test sites in one call: far fewer model calls
            copies = np.repeat(patches[test][np.newaxis], n_bands, axis=0)
            for band in range(n_bands):
                copies[band, :, band] = copies[band, orders[band][k], band]
            predicted = model.predict(copies.reshape(-1, *patches.shape[1:]))
            shuffled[:, test] = predicted.reshape(n_bands, len(test), -1)
        increase += [_rmse(shuffled[band], targets, observed) - base_rmse for band in range(n_bands)]
    return np.maximum(increase / repeats, 0.0)


def _rmse(predicted: np.ndarray, targets: np.ndarray, observed: np.ndarray) -> float:
    return float(np.sqrt(np.mean((predicted[observed] - targets[observed]) ** 2)))


@dataclass(frozen=True)
class AoaReference:
    """What the DI of new points needs, as plain values for the model card (`ModelCard.aoa_reference`)."""

    #: indices of the categorical bands, and per categorical band the class codes seen in training (sorted)
    categorical: tuple[int, ...]
    levels: tuple[tuple[float, ...], ...]
    #: per band: its permutation importance (negatives set to 0)
    importance: tuple[float, ...]
    #: per predictor column (bands in order, a categorical band as its dummies): mean, standard deviation, weight
    centre: tuple[float, ...]
    scale: tuple[float, ...]
    weights: tuple[float, ...]
    #: (S, C) the training sites' columns, scaled and weighted
    sites: tuple[tuple[float, ...], ...]
    #: per site: its DI to the nearest site outside its own fold
    training_di: tuple[float, ...]
    #: the mean distance between training sites (scaled, weighted), the DI's unit
    mean_distance: float
    threshold: float

    @classmethod
    def of_training(
        cls, values: np.ndarray, categorical: Sequence[int], importance: np.ndarray, folds: np.ndarray
    ) -> AoaReference:
        """From the sites' band values (S, B), the categorical band indices, each band's importance (B,;
        negatives count as 0, as in CAST) and the cross-validation fold of each site (S,)."""
        values = np.asarray(values, dtype=float)
        importance = np.maximum(np.asarray(importance, dtype=float), 0.0)
        folds = np.asarray(folds)
        n_sites, n_bands = values.shape
        if n_sites < 2:
            raise ValueError(f"The area of applicability needs at least 2 training sites; there are {n_sites}.")
        if importance.shape != (n_bands,) or folds.shape != (n_sites,):
            raise ValueError(
                f"Give one importance per band ({n_bands}) and one fold per site ({n_sites}); got "
                f"{importance.shape[0]} and {folds.shape[0]}."
            )
        if not np.isfinite(values).all():
            raise ValueError("The training sites' covariates must all hold values to compute the DI.")
        if len(np.unique(folds)) < 2:
            raise ValueError("The training DI needs at least 2 cross-validation folds.")
        categorical = tuple(sorted(int(b) for b in categorical))
        levels = tuple(tuple(float(v) for v in np.unique(values[:, b])) for b in categorical)
        columns = _columns(values, categorical, levels)
        centre = columns.mean(axis=0)
        scale = columns.std(axis=0, ddof=1)
        scale[~(scale > 0)] = 1.0  # a constant column: all sites equal; nothing to scale
        band_weights = importance if importance.sum() > 0 else np.ones(n_bands)
        weights = band_weights[_column_bands(n_bands, categorical, levels)]
        sites = (columns - centre) / scale * weights
        mean_distance = mean_pairwise_distance(sites)
        if not mean_distance > 0:
            raise ValueError(
                "All training sites are alike in the weighted covariates (mean distance 0), so no DI can be "
                "computed; check that the covariates vary between the sites."
            )
        training_di = _nearest_in_other_folds(sites, folds) / mean_distance
        return cls(
            categorical=categorical,
            levels=levels,
            importance=tuple(float(v) for v in importance),
            centre=tuple(float(v) for v in centre),
            scale=tuple(float(v) for v in scale),
            weights=tuple(float(v) for v in weights),
            sites=tuple(tuple(float(v) for v in row) for row in sites),
            training_di=tuple(float(v) for v in training_di),
            mean_distance=float(mean_distance),
            threshold=upper_whisker(training_di),
        )

    def to_dict(self) -> dict[str, Any]:
        """JSON values (lists for tuples), so that the card in memory equals the card read back from its file."""
        return {name: _lists(getattr(self, name)) for name in self.__dataclass_fields__}

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> AoaReference:
        """Inverse of `to_dict`, also from the card's JSON (lists instead of tuples)."""
        nested = ("levels", "sites")
        flat = ("categorical", "importance", "centre", "scale", "weights", "training_di")
        fields = dict(values)
        for name in nested:
            fields[name] = tuple(tuple(row) for row in fields[name])
        for name in flat:
            fields[name] = tuple(fields[name])
        return cls(**fields)


def _lists(value: Any) -> Any:
    return [_lists(item) for item in value] if isinstance(value, tuple) else value


def upper_whisker(values: np.ndarray) -> float:
    """min(Q75 + 1.5 · IQR, max): CAST's AOA threshold (its quantiles are R's type 7, numpy's default)."""
    values = np.asarray(values, dtype=float)
    q25, q75 = np.quantile(values, [0.25, 0.75])
    return float(min(q75 + 1.5 * (q75 - q25), values.max()))


def mean_pairwise_distance(points: np.ndarray) -> float:
    """The mean Euclidean distance over all pairs of distinct rows, in row blocks of bounded memory."""
    n = len(points)
    total = 0.0
    for start in range(0, n, DISTANCE_ROWS):
        total += float(cdist(points[start : start + DISTANCE_ROWS], points).sum())
    return total / (n * (n - 1))


def _nearest_in_other_folds(sites: np.ndarray, folds: np.ndarray) -> np.ndarray:
    """Per site, the distance to the nearest site of another fold."""
    nearest = np.empty(len(sites))
    for fold in np.unique(folds):
        test = folds == fold
        nearest[test] = cKDTree(sites[~test]).query(sites[test])[0]
    return nearest


def _columns(values: np.ndarray, categorical: tuple[int, ...], levels: tuple[tuple[float, ...], ...]) -> np.ndarray:
    """(N, B) band values -> (N, C) predictor columns: continuous bands as they are, each categorical band as
    one 0/1 column per training class (a class never seen in training, or NaN, is 0 in all of them)."""
    columns = []
    levels_of = dict(zip(categorical, levels))
    for band in range(values.shape[1]):
        if band in levels_of:
            columns.extend(values[:, band] == level for level in levels_of[band])
        else:
            columns.append(values[:, band])
    return np.stack(columns, axis=1).astype(float)


def _column_bands(n_bands: int, categorical: tuple[int, ...], levels: tuple[tuple[float, ...], ...]) -> np.ndarray:
    """The band of each predictor column."""
    counts = dict(zip(categorical, (len(level) for level in levels)))
    return np.repeat(np.arange(n_bands), [counts.get(band, 1) for band in range(n_bands)])


class DissimilarityIndex:
    """DI, AOA and LPD of new points against an `AoaReference`, through k-d trees over the training sites.

    Exact, and faster than one tree over every column: the dummies of the most important categorical band are
    left out of the trees, with one tree per class of that band instead. Between a point and the sites of one
    class those dummies add the same squared distance (the class's penalty), so the nearest site is the least of
    (nearest site of each class in the other columns)² + penalty, and a class whose penalty alone exceeds the
    best distance found so far is never searched. The trees have fewer dimensions and fewer sites each, which
    is what a k-d tree needs.
    """

    def __init__(self, reference: AoaReference) -> None:
        self.reference = reference
        self.threshold = reference.threshold
        weights = np.asarray(reference.weights)
        #: columns of weight 0 add nothing to any distance: the trees do without them (fewer dimensions)
        self._used = np.flatnonzero(weights > 0)
        self._centre = np.asarray(reference.centre)[self._used]
        self._scale = np.asarray(reference.scale)[self._used]
        self._weights = weights[self._used]
        self._n_bands = len(reference.importance)
        sites = np.asarray(reference.sites, dtype=float)[:, self._used]
        bands = _column_bands(self._n_bands, reference.categorical, reference.levels)[self._used]
        used_categorical = [b for b in reference.categorical if reference.importance[b] > 0 and (bands == b).any()]
        split = max(used_categorical, key=lambda b: reference.importance[b], default=None)
        self._dummies = np.flatnonzero(bands == split)
        self._others = np.flatnonzero(bands != split)
        # a site's class: the dummy column where it holds the value of 1, the only one above the column's minimum
        dummies = sites[:, self._dummies]
        self._zero = dummies.min(axis=0)
        site_class = _dummy_class(dummies, self._zero)
        classes = np.unique(site_class)
        #: per class: the dummy values of its sites, and a tree over their other columns
        self._prototypes = [dummies[np.argmax(site_class == k)] for k in classes]
        self._trees = [cKDTree(sites[site_class == k][:, self._others], leafsize=TREE_LEAF_SIZE) for k in classes]

    def _points(self, values: np.ndarray) -> np.ndarray:
        if values.shape[1] != self._n_bands:
            raise ValueError(
                f"The covariates have {values.shape[1]} bands but the area of applicability was computed on "
                f"{self._n_bands}; use the covariate stack the model was trained with."
            )
        columns = _columns(values, self.reference.categorical, self.reference.levels)[:, self._used]
        return (columns - self._centre) / self._scale * self._weights  # as the sites: a site's twin is at 0

    def _groups(self, points: np.ndarray):
        """Per distinct dummy part of the points (a class, or a class unseen in training): the rows, the other
        columns, and the classes' penalties in ascending order."""
        dummies = points[:, self._dummies]
        kinds = _dummy_class(dummies, self._zero)
        for kind in np.unique(kinds):
            rows = np.flatnonzero(kinds == kind)
            dummy = dummies[rows[0]]  # the same for every row of the kind
            penalties = [float(((dummy - prototype) ** 2).sum()) for prototype in self._prototypes]
            order = np.argsort(penalties, kind="stable")
            yield rows, points[rows][:, self._others], [(penalties[k], self._trees[k]) for k in order]

    def di(self, values: np.ndarray) -> np.ndarray:
        """(N, B) band values -> (N,) DI."""
        points = self._points(np.asarray(values, dtype=float))
        squared = np.full(len(points), np.inf)
        for rows, others, trees in self._groups(points):
            best = np.full(len(rows), np.inf)
            for penalty, tree in trees:
                searched = np.flatnonzero(best > penalty)
                if not searched.size:
                    break  # the penalties only grow from here
                best[searched] = np.minimum(
                    best[searched], _bounded_nearest(tree, others[searched], best[searched] - penalty) + penalty
                )
            squared[rows] = best
        return np.sqrt(squared) / self.reference.mean_distance

    def lpd(self, values: np.ndarray) -> np.ndarray:
        """(N, B) band values -> (N,) the number of training sites at a DI below the threshold."""
        points = self._points(np.asarray(values, dtype=float))
        counts = np.zeros(len(points), dtype=int)
        radius = self.threshold * self.reference.mean_distance
        for rows, others, trees in self._groups(points):
            for penalty, tree in trees:
                if penalty >= radius**2:
                    break
                within = np.nextafter(np.sqrt(radius**2 - penalty), 0.0)  # strictly below, as CAST
                counts[rows] += tree.query_ball_point(others, within, workers=-1, return_length=True)
        return counts


def _dummy_class(dummies: np.ndarray, zero: np.ndarray) -> np.ndarray:
    """The column of each row's dummy 1 (the one value above the column's 0), or -1 where there is none (a class
    unseen in training, or a band without dummies)."""
    if not dummies.shape[1]:
        return np.full(len(dummies), -1)
    ones = dummies > zero
    return np.where(ones.any(axis=1), np.argmax(ones, axis=1), -1)


def _bounded_nearest(tree: cKDTree, points: np.ndarray, squared_bounds: np.ndarray) -> np.ndarray:
    """Squared distance to the nearest point of `tree`, inf where none is closer than the point's bound."""
    squared = np.full(len(points), np.inf)
    if np.isinf(squared_bounds).all():
        return tree.query(points, workers=-1)[0] ** 2
    order = np.argsort(squared_bounds)
    for batch in np.array_split(order, min(BOUND_BATCHES, len(order))):
        bound = np.sqrt(squared_bounds[batch[-1]])
        squared[batch] = tree.query(points[batch], distance_upper_bound=bound, workers=-1)[0] ** 2
    return squared
