"""Normalised split-conformal prediction intervals over the cross-validation fold models (Papadopoulos et al.
2008; Lei et al. 2018), for the models that predict no quantiles of their own (the CNNs, the ensemble).

The fold models form an ensemble whose spread s(x) says where the models disagree, typically far from the
training data. Each site's out-of-fold error divided by its spread (plus a small floor) is its score; the interval
at a pixel is prediction ± q · (s(x) + floor), q the score quantile for the level. The out-of-fold errors make the
coverage honest; the spread makes the width vary where it should.

How well such intervals cover new sites is measured the same way as the models' accuracy, fold by fold: the
sites of one fold get the quantile of the scores of the other folds' sites only (`out_of_fold_bounds`), so no site
calibrates its own interval.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from .models.base import DepthModel


def spread_floor(spread: np.ndarray) -> float:
    """A small floor for the ensemble spread, so that a pixel where all fold models agree still gets a width."""
    positive = spread[np.isfinite(spread) & (spread > 0)]
    return float(0.1 * np.median(positive)) if positive.size else 1e-6


def conformal_quantile(scores: np.ndarray, level: float) -> float:
    """The finite-sample conformal quantile of sorted `scores`: the ceil((n + 1) level)-th smallest score."""
    n = len(scores)
    if n == 0:
        return math.nan
    rank = min(n, math.ceil((n + 1) * level))
    return float(scores[rank - 1])


def site_scores(
    fold_models: Sequence[DepthModel], patches: np.ndarray, fitted_targets: np.ndarray, fitted_oof: np.ndarray
) -> tuple[np.ndarray, np.ndarray, list[float]]:
    """(S, D) scores |out-of-fold error| / (spread + floor), NaN where a depth is not observed or not predicted,
    the (S, D) spread of the fold models at the sites, and the floor per depth; all on the fitted scale."""
    spread = np.stack([model.predict(patches) for model in fold_models]).std(axis=0)
    scores = np.full(fitted_targets.shape, np.nan)
    floors = []
    for d in range(fitted_targets.shape[1]):
        observed = np.isfinite(fitted_targets[:, d]) & np.isfinite(fitted_oof[:, d])
        floors.append(spread_floor(spread[observed, d]))
        scores[observed, d] = np.abs(fitted_targets[observed, d] - fitted_oof[observed, d]) / (
            spread[observed, d] + floors[-1]
        )
    return scores, spread, floors


def sorted_scores(scores: np.ndarray) -> list[np.ndarray]:
    """Per depth, the sorted scores of the sites observed there: what a model file keeps."""
    return [np.sort(column[np.isfinite(column)]) for column in scores.T]


def out_of_fold_bounds(
    scores: np.ndarray, spread: np.ndarray, floors: Sequence[float], fitted_oof: np.ndarray, folds: np.ndarray,
    level: float,
) -> np.ndarray:  # fmt: skip
    """(2, S, D) lower and upper bounds, on the fitted scale, of each site's out-of-fold interval at `level`, its
    quantile from the scores of the sites of the other folds."""
    bounds = np.full((2, *fitted_oof.shape), np.nan)
    for fold in np.unique(folds):
        test = folds == fold
        for d in range(scores.shape[1]):
            others = scores[~test, d]
            q = conformal_quantile(np.sort(others[np.isfinite(others)]), level)
            half = q * (spread[test, d] + floors[d])
            bounds[0, test, d] = fitted_oof[test, d] - half
            bounds[1, test, d] = fitted_oof[test, d] + half
    bounds[:, ~np.isfinite(scores)] = np.nan
    return bounds
