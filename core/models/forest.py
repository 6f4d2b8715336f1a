"""Random Forest for SOC by depth, with quantile regression forest (QRF) prediction intervals: the estimator.

Predictors: the covariates at the site's cell (the centre of a patch: the forest reads no neighbourhood).
Categorical bands enter as their integer codes; scikit-learn 1.2 has no categorical splits, so a split on a
class layer is a threshold on the codes (ordinal). With many trees and random predictor subsets this still
separates classes reasonably, but the code order matters: codes of similar classes should be adjacent.

Two layouts:

- pooled (`per_depth=False`, default): one forest for all depths, with the interval's top and bottom (cm) as
  two extra predictors, one training row per observed (site, interval) pair. The depth trend is learnt from
  all data and thin deep intervals borrow strength from the rest.
- per depth (`per_depth=True`): one forest per interval on that interval's sites only.

The trees and their QRF leaf draws are stored in `forest_trees` (growing, the model file's arrays and their
checks), and evaluated by `forest_lookup` (trees specialised per interval, mean and quantiles over a fixed tree
order, so predictions do not depend on `n_jobs` and are bit-identical after a save/load round trip).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Iterable, Sequence
from typing import Any, Optional, Union

import numpy as np

from ..depths import interval_label
from ..modelfile import ModelFileError
from .base import DepthModel, check_progress
from .forest_trees import Forest, child_seed

ProgressCallback = Optional[Callable[[float, str], bool]]
#: `map`'s signature for tuning candidates: (score a (max_features, min_samples_leaf) pair, the pairs) -> RMSEs
CandidateMap = Callable[[Callable[[tuple[int, int]], float], Sequence[tuple[int, int]]], Iterable[float]]

#: Tuning grid: max_features as shares of the predictors (5 % to 100 %), as counts without duplicates
TUNE_MAX_FEATURES: tuple[float, ...] = (0.05, 1 / 3, 2 / 3, 1.0)
#: min_samples_leaf values tried: the paper's range 10-100 plus 5, the best leaf size on Edgeroi (323 sites)
TUNE_MIN_SAMPLES_LEAF: tuple[int, ...] = (5, 10, 30, 100)
#: trees per forest while tuning: enough to rank settings, far cheaper than the final forest
TUNE_TREES = 100
#: folds of the inner grouped cross-validation used for tuning
TUNE_FOLDS = 5


class RandomForestDepthModel(DepthModel):
    """Random Forest (scikit-learn) on the covariates at each site, pooled over depths or one per depth.

    Defaults: 500 trees, `max_features=1/3` of the predictors per split (rounded down: Breiman's and
    randomForest's p/3 for regression) and `min_samples_leaf=5`. Chosen by 5-fold cross-validation by site
    (twice repeated, 200 trees) on Edgeroi ORCDRC (323 sites x 6 GlobalSoilMap depths, 6 covariates at
    250 m, pooled layout, 8 predictors): among max_features 1, 2, 4, 6, 8 and min_samples_leaf 1-50 this pair
    had the lowest RMSE (4.84 g/kg, R² 0.55) and interval score, with 90 % QRF intervals covering 91 % of the
    held-out values. scikit-learn's own defaults (all predictors, leaves of 1) gave RMSE 5.16 and only 82 %
    coverage: leaves of one row keep near-copies of the training data, so the intervals come out too narrow;
    leaves of 50 rows over-smooth (RMSE 5.05-5.59). Per-depth forests scored the same (RMSE 4.81).
    Checked on five real data sets, leaving one out (`bench.forest_defaults`: Edgeroi SOC with 250 m and 100 m
    covariates, Edgeroi pH and clay, Ebergötzen clay): the pair beats scikit-learn's defaults by 4.2-6.1 % RMSE on
    each, and the setting chosen on the other four was never better on the held-out one. Depth offered at every
    split (ranger's `always.split.variables`) made ranger 0.3-1.7 % worse, so the forest does not offer it.

    `max_features`: an int is a count of predictors; a float in (0, 1] is a share of them (rounded down, at
    least 1). The predictors are the B covariate bands plus, in the pooled layout, top and bottom depth.
    `best_params_` holds the max_features count and min_samples_leaf actually used (tuned or as given);
    `tuning_scores_` the cross-validated RMSE of every candidate when `tune=True`.
    """

    kind = "random_forest"

    def __init__(
        self,
        n_trees: int = 500,
        max_features: Union[int, float] = 1 / 3,
        min_samples_leaf: int = 5,
        per_depth: bool = False,
        tune: bool = False,
        random_state: Optional[int] = 0,
        n_jobs: int = -1,
    ) -> None:
        self.n_trees = n_trees
        self.max_features = max_features
        self.min_samples_leaf = min_samples_leaf
        self.per_depth = per_depth
        self.tune = tune
        self.random_state = random_state
        self.n_jobs = n_jobs

    @property
    def patch_size(self) -> int:
        """1: the forest only reads the cell itself; larger patches are accepted and their centre is used."""
        return 1

    # ----------------------------------------------------------------------------------------------- fitting

    def fit(
        self,
        patches: np.ndarray,
        targets: np.ndarray,
        intervals: np.ndarray,
        categorical: tuple[int, ...] = (),
        progress: ProgressCallback = None,
        sample_weight: np.ndarray | None = None,
        map_candidates: CandidateMap = map,
    ) -> RandomForestDepthModel:
        """Fits the forest(s); with `tune=True` first picks max_features and min_samples_leaf.

        Tuning scores every pair of the grid (`TUNE_MAX_FEATURES` x `TUNE_MIN_SAMPLES_LEAF`, `TUNE_TREES`
        trees each) by the RMSE of a 5-fold cross-validation whose folds are drawn by site, so that all depths
        of a site are on the same side. The out-of-bag error would not do for the pooled forest: a site's
        0-5 cm row can be in a tree's bootstrap while its 5-15 cm row is out of bag, and the two rows have the
        same covariates and similar SOC, so the OOB error would flatter small leaves that memorise sites.
        On Edgeroi (pooled, 2 predictors per split) the OOB RMSE was 4.32 with leaves of 1 and 4.47 with
        leaves of 5, while cross-validation by site gave 4.96 and 4.84: OOB is optimistic and ranks the two
        the wrong way round. All candidates see the same folds and tree seeds, so they differ only by their
        settings.

        `sample_weight` (S,): a weight per site for all its depths, as scikit-learn's `sample_weight` (e.g.
        borrowed sites of another data set count less than local ones); sites of weight 0 are left out.
        Tuning then scores the weighted RMSE.

        `map_candidates(score, candidates)`: the scores of the grid's candidates in their order, as the built-in
        `map` gives them (the default); `core.cluster` passes one that scores each candidate as a Dask task.
        `score` is picklable and seeded by the candidate's place in the grid alone, so where it runs does not
        change the scores.
        """
        self._check_params()
        features, targets, intervals = self._check_fit_inputs(patches, targets, intervals, categorical)
        weights = _check_weights(sample_weight, len(features))
        usable = np.isfinite(features).all(axis=1)
        if weights is not None:
            usable &= weights > 0
        targets = np.where(usable[:, None], targets, np.nan)
        self.intervals_ = intervals
        self.n_bands_ = features.shape[1]
        self.categorical_ = tuple(int(c) for c in categorical)
        n_predictors = self._n_predictors()
        seed = np.random.SeedSequence(self.random_state)
        tuning_seed, final_seed = child_seed(seed, 0), child_seed(seed, 1)
        n_forests = len(intervals) if self.per_depth else 1
        candidates = self._candidates(n_predictors) if self.tune else []
        steps = len(candidates) + n_forests
        check_progress(progress, 0.0, "Random Forest: starting")

        self.tuning_scores_: list[dict[str, Any]] = []
        self.forests_: list[Forest] = []  # those of an earlier fit would travel with every candidate's task
        if self.tune:
            folds = _site_folds(targets, TUNE_FOLDS, np.random.default_rng(child_seed(tuning_seed, 0)))
            score = functools.partial(_tuning_rmse, self, features, targets, weights, folds, child_seed(tuning_seed, 1))
            rmses = map_candidates(score, candidates)
            for index, ((max_features, min_samples_leaf), rmse) in enumerate(zip(candidates, rmses)):
                self.tuning_scores_.append(
                    {"max_features": max_features, "min_samples_leaf": min_samples_leaf, "rmse": rmse}
                )
                check_progress(
                    progress,
                    (index + 1) / steps,
                    f"Tuning {index + 1}/{len(candidates)}: max_features={max_features}, "
                    f"min_samples_leaf={min_samples_leaf}, cross-validated RMSE {rmse:.4g}",
                )
            best = min(self.tuning_scores_, key=lambda score: score["rmse"])  # first of equals: grid order
            self.best_params_ = {
                "max_features": best["max_features"],
                "min_samples_leaf": best["min_samples_leaf"],
            }
        else:
            self.best_params_ = {
                "max_features": _feature_count(self.max_features, n_predictors),
                "min_samples_leaf": int(self.min_samples_leaf),
            }

        for index, (x, y, w) in enumerate(self._training_sets(features, targets, intervals, weights)):
            self.forests_.append(
                Forest.grow(
                    x,
                    y,
                    self.n_trees,
                    seed=child_seed(final_seed, index),
                    n_jobs=self.n_jobs,
                    weights=w,
                    **self.best_params_,
                )
            )
            what = interval_label(*intervals[index], " cm") if self.per_depth else "all depths"
            fraction = (len(candidates) + index + 1) / steps
            check_progress(progress, fraction, f"Grew forest {index + 1}/{n_forests} ({what})")
        return self

    def _training_sets(
        self, features: np.ndarray, targets: np.ndarray, intervals: np.ndarray, weights: np.ndarray | None
    ) -> list[tuple[np.ndarray, np.ndarray, np.ndarray | None]]:
        """(x float32, y, row weights or None) per forest: rows are observed (site, interval) pairs, NaN
        targets left out."""
        if self.per_depth:
            sets = []
            for d in range(len(intervals)):
                observed = np.isfinite(targets[:, d])
                if not observed.any():
                    raise ValueError(
                        f"No site has a value for {interval_label(*intervals[d], ' cm')}, so a forest "
                        "for that depth cannot be trained. Leave the depth out or use one forest for all "
                        "depths (per_depth=False)."
                    )
                row_weights = None if weights is None else weights[observed]
                sets.append((features[observed], targets[observed, d], row_weights))
            return sets
        sites, depths = np.nonzero(np.isfinite(targets))
        row_weights = None if weights is None else weights[sites]
        return [(_with_depths(features[sites], intervals[depths]), targets[sites, depths], row_weights)]

    def _cross_validate(
        self,
        features: np.ndarray,
        targets: np.ndarray,
        weights: np.ndarray | None,
        folds: np.ndarray,
        seed: np.random.SeedSequence,
        max_features: int,
        min_samples_leaf: int,
    ) -> float:
        """RMSE (weighted by `weights`) of out-of-fold predictions over all observed (site, interval) pairs."""
        predicted = np.full(targets.shape, np.nan)
        for fold in range(folds.max() + 1):
            train, test = folds != fold, folds == fold
            train_weights = None if weights is None else weights[train]
            sets = self._training_sets(features[train], targets[train], self.intervals_, train_weights)
            for d, (x, y, w) in enumerate(sets):
                forest = Forest.grow(
                    x, y, TUNE_TREES, max_features, min_samples_leaf, child_seed(seed, fold, d), self.n_jobs, w
                )
                if self.per_depth:
                    predicted[test, d] = forest.predict(features[test], None, self.n_jobs)
                else:
                    for depth, interval in enumerate(self.intervals_):
                        predicted[test, depth] = forest.predict(features[test], None, self.n_jobs, tuple(interval))
        observed = np.isfinite(targets) & np.isfinite(predicted)
        site_weights = np.ones(len(targets)) if weights is None else weights
        row_weights = np.broadcast_to(site_weights[:, None], targets.shape)[observed]
        squared = (predicted[observed] - targets[observed]) ** 2
        return float(np.sqrt(np.average(squared, weights=row_weights)))

    def _candidates(self, n_predictors: int) -> list[tuple[int, int]]:
        counts = sorted({_feature_count(share, n_predictors) for share in TUNE_MAX_FEATURES})
        return [(count, leaf) for count in counts for leaf in TUNE_MIN_SAMPLES_LEAF]

    def _n_predictors(self) -> int:
        return self.n_bands_ + (0 if self.per_depth else 2)

    # ------------------------------------------------------------------------------------------- predicting

    def predict(self, patches: np.ndarray) -> np.ndarray:
        """(S, B, p, p) -> (S, D) forest means; NaN where the centre cell has a NaN band."""
        return self._evaluate(self._site_features(patches), None)

    def predict_quantiles(self, patches: np.ndarray, quantiles: Sequence[float]) -> np.ndarray:
        """(S, B, p, p) -> (S, D, Q) QRF quantiles (e.g. 0.05 and 0.95 bound a 90 % prediction interval)."""
        return self._evaluate(self._site_features(patches), _check_quantiles(quantiles))

    def predict_block(self, block: np.ndarray, depths: Sequence[int] | None = None) -> np.ndarray:
        """(B, h, w) raster block (no halo: patch_size 1) -> (D, h, w), identical to `predict` per cell."""
        features, (h, w) = self._block_features(block)
        return self._evaluate(features, None, depths).T.reshape(-1, h, w)

    def predict_block_quantiles(
        self, block: np.ndarray, quantiles: Sequence[float], depths: Sequence[int] | None = None
    ) -> np.ndarray:
        """(B, h, w) -> (D, Q, h, w) QRF quantiles, identical to `predict_quantiles` per cell."""
        features, (h, w) = self._block_features(block)
        values = self._evaluate(features, _check_quantiles(quantiles), depths)
        return values.transpose(1, 2, 0).reshape(values.shape[1], values.shape[2], h, w)

    def _evaluate(
        self, features: np.ndarray, quantiles: np.ndarray | None, depths: Sequence[int] | None = None
    ) -> np.ndarray:
        """(n, B) float32 -> (n, D) means or (n, D, Q) quantiles for the intervals numbered in `depths` (default
        all); rows with a NaN band give NaN.

        One call per forest and interval over all valid rows (no loop over cells). The pooled forest gets the
        interval's top and bottom as fixed predictors, so it walks trees specialised for that interval.
        """
        chosen = range(len(self.intervals_)) if depths is None else list(depths)
        shape = (len(features), len(chosen)) + (() if quantiles is None else (len(quantiles),))
        out = np.full(shape, np.nan)
        valid = np.isfinite(features).all(axis=1)
        rows = features[valid]
        if len(rows) == 0:
            return out
        for j, d in enumerate(chosen):
            if self.per_depth:
                values = self.forests_[d].predict(rows, quantiles, self.n_jobs)
            else:
                values = self.forests_[0].predict(rows, quantiles, self.n_jobs, fixed=tuple(self.intervals_[d]))
            out[valid, j] = values
        return out

    def _site_features(self, patches: np.ndarray) -> np.ndarray:
        features = _centre_cells(patches)
        if features.shape[1] != self.n_bands_:
            raise ValueError(
                f"The model was trained on {self.n_bands_} covariate bands but got {features.shape[1]}; use "
                "the same covariate rasters, in the same order, as for training."
            )
        return features

    def _block_features(self, block: np.ndarray) -> tuple[np.ndarray, tuple[int, int]]:
        block = np.asarray(block)
        if block.ndim != 3 or block.shape[0] != self.n_bands_:
            raise ValueError(
                f"A raster block must be (bands, rows, columns) with the {self.n_bands_} covariate bands "
                f"used for training; got shape {block.shape}."
            )
        h, w = block.shape[1:]
        return np.ascontiguousarray(block.reshape(self.n_bands_, -1).T, dtype=np.float32), (h, w)

    # ------------------------------------------------------------------------------------------------- state

    def get_state(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        """Config as JSON and, per forest `f`, its trees as plain arrays named `forest{f}.{field}`."""
        config = {
            "kind": self.kind,
            "params": self.get_params(),
            "intervals": self.intervals_.tolist(),
            "n_bands": self.n_bands_,
            "categorical": list(self.categorical_),
            "best_params": self.best_params_,
            "tuning_scores": self.tuning_scores_,
            "n_forests": len(self.forests_),
        }
        arrays = {}
        for index, forest in enumerate(self.forests_):
            arrays.update({f"forest{index}.{name}": value for name, value in forest.arrays().items()})
        return config, arrays

    @classmethod
    def from_state(cls, config: dict[str, Any], arrays: dict[str, np.ndarray]) -> RandomForestDepthModel:
        if config.get("kind") != cls.kind:
            raise ModelFileError(f"This model file holds a '{config.get('kind')}' model, not '{cls.kind}'.")
        try:
            model = cls(**config["params"])
            model.intervals_ = np.asarray(config["intervals"], dtype=float).reshape(-1, 2)
            model.n_bands_ = int(config["n_bands"])
            model.categorical_ = tuple(int(c) for c in config["categorical"])
            model.best_params_ = dict(config["best_params"])
            model.tuning_scores_ = list(config["tuning_scores"])
            n_forests = int(config["n_forests"])
            if n_forests != (len(model.intervals_) if model.per_depth else 1):
                raise ModelFileError(
                    f"The model file holds {n_forests} forests for {len(model.intervals_)} depth "
                    "intervals; it is damaged. Train and save the model again."
                )
            model.forests_ = []
            for index in range(n_forests):
                prefix = f"forest{index}."
                own = {name[len(prefix) :]: value for name, value in arrays.items() if name.startswith(prefix)}
                model.forests_.append(Forest.from_arrays(own, model._n_predictors()))
        except ModelFileError:
            raise
        except (KeyError, TypeError, ValueError) as error:
            raise ModelFileError(
                f"The Random Forest in this model file is incomplete or damaged ({error}). Train and save "
                "the model again."
            ) from None
        return model

    # --------------------------------------------------------------------------------------------- helpers

    def _check_params(self) -> None:
        if isinstance(self.n_trees, bool) or not isinstance(self.n_trees, (int, np.integer)) or self.n_trees < 1:
            raise ValueError(f"Number of trees must be a whole number of at least 1 (e.g. 500); got {self.n_trees}.")
        if (
            isinstance(self.min_samples_leaf, bool)
            or not isinstance(self.min_samples_leaf, (int, np.integer))
            or (self.min_samples_leaf < 1)
        ):
            raise ValueError(
                f"Minimum samples per leaf must be a whole number of at least 1 (e.g. 5); got {self.min_samples_leaf}."
            )
        _feature_count(self.max_features, 1)

    def _check_fit_inputs(
        self, patches: np.ndarray, targets: np.ndarray, intervals: np.ndarray, categorical: tuple[int, ...]
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        features = _centre_cells(patches)
        targets = np.asarray(targets, dtype=float)
        intervals = np.asarray(intervals, dtype=float)
        if intervals.ndim != 2 or intervals.shape[1] != 2 or not np.all(intervals[:, 0] < intervals[:, 1]):
            raise ValueError(
                f"Depth intervals must be rows of (top, bottom) in cm with top < bottom; got {intervals.tolist()}."
            )
        if targets.shape != (len(features), len(intervals)):
            raise ValueError(
                f"Targets have shape {targets.shape} but there are {len(features)} sites and "
                f"{len(intervals)} depth intervals; give one column per interval, NaN where a site lacks "
                "that depth."
            )
        bad = [c for c in categorical if not 0 <= int(c) < features.shape[1]]
        if bad:
            raise ValueError(f"Categorical band indices {bad} do not exist: there are {features.shape[1]} bands.")
        usable = np.isfinite(targets) & np.isfinite(features).all(axis=1)[:, None]
        if usable.sum() < 2:
            raise ValueError(
                "Fewer than 2 target values at sites with complete covariates; a Random Forest needs more data."
            )
        return features, targets, intervals


def _centre_cells(patches: np.ndarray) -> np.ndarray:
    """(S, B, p, p) -> (S, B) float32 covariates at the centre cell, the forest's predictors."""
    patches = np.asarray(patches)
    if patches.ndim != 4 or patches.shape[2] != patches.shape[3] or patches.shape[2] % 2 != 1:
        raise ValueError(
            f"Patches must be (sites, bands, p, p) with an odd p; got shape {patches.shape}. The Random "
            "Forest needs only the site's own cell (p = 1)."
        )
    r = patches.shape[2] // 2
    return np.ascontiguousarray(patches[:, :, r, r], dtype=np.float32)


def _with_depths(features: np.ndarray, intervals: np.ndarray) -> np.ndarray:
    """Appends each row's interval top and bottom (cm) as two predictors, float32 like the covariates."""
    return np.hstack([features, intervals]).astype(np.float32)


def _feature_count(max_features: Union[int, float], n_predictors: int) -> int:
    """max_features as a count: an int as given (at most all predictors), a share rounded down, >= 1."""
    if isinstance(max_features, (int, np.integer)) and not isinstance(max_features, bool) and max_features >= 1:
        return int(min(max_features, n_predictors))
    if isinstance(max_features, (float, np.floating)) and 0 < max_features <= 1:
        # floor, like scikit-learn and randomForest's p/3; the epsilon keeps 0.57 x 100 at 57, not 56.99999
        return int(min(n_predictors, max(1, math.floor(max_features * n_predictors + 1e-9))))
    raise ValueError(
        f"max_features must be a count of predictors (1, 2, ...) or a share of them in (0, 1], e.g. 0.5; "
        f"got {max_features!r}."
    )


def _tuning_rmse(
    model: RandomForestDepthModel,
    features: np.ndarray,
    targets: np.ndarray,
    weights: np.ndarray | None,
    folds: np.ndarray,
    seed: np.random.SeedSequence,
    candidate: tuple[int, int],
) -> float:
    """The inner cross-validated RMSE of one tuning candidate (max_features, min_samples_leaf): a module-level
    function, so that a Dask worker can run it."""
    return model._cross_validate(features, targets, weights, folds, seed, *candidate)


def _site_folds(targets: np.ndarray, n_folds: int, rng: np.random.Generator) -> np.ndarray:
    """Fold number per site (shuffled, balanced); sites without any target get -1 and are never used."""
    folds = np.full(len(targets), -1)
    sites = np.flatnonzero(np.isfinite(targets).any(axis=1))
    if len(sites) < 2:
        raise ValueError("Tuning needs at least 2 sites with data; fit without tuning or add sites.")
    folds[rng.permutation(sites)] = np.arange(len(sites)) % min(n_folds, len(sites))
    return folds


def _check_weights(sample_weight: np.ndarray | None, n_sites: int) -> np.ndarray | None:
    """`sample_weight` as a float array of one finite, non-negative weight per site (None stays None)."""
    if sample_weight is None:
        return None
    weights = np.asarray(sample_weight, dtype=float).ravel()
    if weights.shape != (n_sites,):
        raise ValueError(f"Give one sample weight per site: {n_sites} sites but {weights.size} weights.")
    if not (np.all(np.isfinite(weights)) and np.all(weights >= 0) and weights.sum() > 0):
        raise ValueError("Sample weights must be finite and non-negative, and not all 0; e.g. 1 for every site.")
    return weights


def _check_quantiles(quantiles: Sequence[float]) -> np.ndarray:
    values = np.asarray(quantiles, dtype=float).ravel()
    if values.size == 0 or not np.all((values >= 0) & (values <= 1)):
        raise ValueError(f"Quantiles must be between 0 and 1, e.g. 0.05, 0.5, 0.95; got {list(quantiles)}.")
    return values
