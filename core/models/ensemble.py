"""An ensemble of the random forest and the transfer CNN, weighted per depth by stacking.

The two models err differently: the forest reads only the covariates at the site, the CNN a patch around it.
A convex combination (weights >= 0 that sum to 1) of their predictions can only be as good as the better one on
the data that chose the weights, and is often better than both elsewhere. The weights of each depth interval
are learnt from out-of-fold predictions of an inner cross-validation over the training sites (never the sites
a caller holds out: when `core.training` cross-validates the ensemble, every outer fold learns its own weights
inside it, which keeps the outer metrics honest). Then both members are refitted on all training sites.

Prediction intervals come from `core.bundle` (normalised split-conformal over the cross-validation fold models,
as for the CNNs), calibrated on the ensemble's own out-of-fold residuals.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Optional, Union

import numpy as np
from scipy.optimize import nnls

from ..folds import random_folds
from ..registry import model_class
from .base import DepthModel, check_progress

#: the members, by registry kind, in the order their weights are stored
MEMBERS = ("random_forest", "transfer_cnn")
#: a depth with fewer observed sites than this borrows the weights learnt over all depths together
MIN_SITES_FOR_DEPTH_WEIGHTS = 20


def stacking_weights(
    predictions: np.ndarray, observed: np.ndarray, row_weights: np.ndarray | None = None
) -> np.ndarray:
    """Non-negative weights summing to 1 that minimise the (row-weighted) squared error of `predictions @ weights`.

    `predictions` (n, M) holds M models' out-of-fold predictions of the n `observed` values. The sum-to-one
    constraint is an extra equation weighted far above the data (an exact penalty for non-negative least
    squares), so the solution is the constrained least-squares one to rounding.
    """
    predictions = np.asarray(predictions, dtype=float)
    observed = np.asarray(observed, dtype=float)
    if row_weights is not None:
        root = np.sqrt(np.asarray(row_weights, dtype=float))
        predictions, observed = predictions * root[:, None], observed * root
    scale = 1e3 * max(float(np.sqrt(np.mean(predictions**2))), 1.0) * np.sqrt(len(observed))
    system = np.vstack([predictions, np.full((1, predictions.shape[1]), scale)])
    target = np.concatenate([observed, [scale]])
    weights, _ = nnls(system, target)
    total = weights.sum()
    if not np.isfinite(total) or total <= 0:
        return np.full(predictions.shape[1], 1.0 / predictions.shape[1])
    return weights / total


class EnsembleDepthModel(DepthModel):
    """Random forest and transfer CNN, combined per depth with non-negative weights summing to one.

    The settings are those of the two members (see `RandomForestDepthModel` and `TransferCNNDepthModel`), plus
    `inner_folds`, the folds over training sites whose out-of-fold predictions choose the weights, and
    `cnn_options`, further `TransferCNNDepthModel` settings (architecture, fine-tuning). Fitting trains each
    member `inner_folds + 1` times. `weights_` (D, 2) holds the forest's and the CNN's weight for
    each depth interval.
    """

    kind = "ensemble"

    def __init__(
        self,
        n_trees: int = 500,
        max_features: Union[int, float] = 1 / 3,
        min_samples_leaf: int = 5,
        patch_size: int = 7,
        epochs: int = 150,
        batch_size: int = 64,
        learning_rate: float = 2e-3,
        patience: int = 25,
        freeze_layers: Optional[int] = None,
        inner_folds: int = 5,
        random_state: int = 0,
        cnn_options: Optional[dict[str, Any]] = None,
    ) -> None:
        self.n_trees = n_trees
        self.max_features = max_features
        self.min_samples_leaf = min_samples_leaf
        self._patch_size = patch_size
        self.epochs = epochs
        self.batch_size = batch_size
        self.learning_rate = learning_rate
        self.patience = patience
        self.freeze_layers = freeze_layers
        self.inner_folds = inner_folds
        self.random_state = random_state
        self.cnn_options = cnn_options

    @property
    def patch_size(self) -> int:
        """The CNN's patch: the forest reads the centre cell of it."""
        return self._patch_size

    @patch_size.setter
    def patch_size(self, value: int) -> None:  # for `set_params`
        self._patch_size = value

    def _members(self) -> list[DepthModel]:
        forest = model_class("random_forest")(
            n_trees=self.n_trees,
            max_features=self.max_features,
            min_samples_leaf=self.min_samples_leaf,
            random_state=self.random_state,
        )
        cnn = model_class("transfer_cnn")(
            patch_size=self.patch_size,
            epochs=self.epochs,
            batch_size=self.batch_size,
            learning_rate=self.learning_rate,
            patience=self.patience,
            freeze_layers=self.freeze_layers,
            random_state=self.random_state,
            **(self.cnn_options or {}),
        )
        return [forest, cnn]

    def fit(
        self,
        patches: np.ndarray,
        targets: np.ndarray,
        intervals: np.ndarray,
        categorical: tuple[int, ...] = (),
        progress=None,
        sample_weight: np.ndarray | None = None,
    ) -> EnsembleDepthModel:
        """Learns the weights from an inner cross-validation over the sites, then fits both members on all.
        `sample_weight` reaches both members and weighs each site's errors when the weights are learnt."""
        targets = np.asarray(targets, dtype=float)
        site_weight = None if sample_weight is None else np.asarray(sample_weight, dtype=float)
        n_sites = len(targets)
        if self.inner_folds < 2 or self.inner_folds > n_sites:
            raise ValueError(
                f"The ensemble needs 2 to {n_sites} inner folds to learn its weights; {self.inner_folds} given."
            )
        folds = random_folds(n_sites, self.inner_folds, self.random_state)
        steps = (self.inner_folds + 1) * len(MEMBERS)
        step = 0
        out_of_fold = np.full((len(MEMBERS), *targets.shape), np.nan)
        for fold in range(self.inner_folds):
            train, test = folds != fold, folds == fold
            for m, member in enumerate(self._members()):
                check_progress(progress, step / steps, f"ensemble weights, inner fold {fold + 1}/{self.inner_folds}")
                weight = None if site_weight is None else site_weight[train]
                member.fit(patches[train], targets[train], intervals, categorical, sample_weight=weight)
                out_of_fold[m][test] = member.predict(patches[test])
                step += 1
        self.weights_ = self._weights(out_of_fold, targets, site_weight)
        self.members_ = []
        for member in self._members():
            check_progress(progress, step / steps, f"ensemble: fitting the {member.kind.replace('_', ' ')}")
            self.members_.append(member.fit(patches, targets, intervals, categorical, sample_weight=site_weight))
            step += 1
        self.intervals_ = np.asarray(intervals, dtype=float)
        check_progress(progress, 1.0, "ensemble fitted")
        return self

    @staticmethod
    def _weights(out_of_fold: np.ndarray, targets: np.ndarray, site_weight: np.ndarray | None) -> np.ndarray:
        """(D, M) weights per depth; a depth with few observed sites takes the weights of all depths pooled."""
        usable = np.isfinite(targets) & np.isfinite(out_of_fold).all(axis=0)
        if site_weight is not None:
            usable &= (site_weight > 0)[:, None]
        cell_weight = None if site_weight is None else np.broadcast_to(site_weight[:, None], targets.shape)
        pooled = stacking_weights(
            out_of_fold[:, usable].T, targets[usable], None if cell_weight is None else cell_weight[usable]
        )
        weights = np.tile(pooled, (targets.shape[1], 1))
        for d in range(targets.shape[1]):
            rows = usable[:, d]
            if rows.sum() >= MIN_SITES_FOR_DEPTH_WEIGHTS:
                row_weights = None if site_weight is None else site_weight[rows]
                weights[d] = stacking_weights(out_of_fold[:, rows, d].T, targets[rows, d], row_weights)
        return weights

    def predict(self, patches: np.ndarray) -> np.ndarray:
        """(S, B, p, p) -> (S, D): the weighted sum of the members' predictions."""
        values = [member.predict(patches) for member in self.members_]
        return sum(w * v for w, v in zip(self.weights_.T, values))

    def predict_block(self, block: np.ndarray, depths: Sequence[int] | None = None) -> np.ndarray:
        """(B, h + 2r, w + 2r) -> (D, h, w); the forest gets the block without the CNN's halo."""
        r = self.patch_size // 2
        inner = block[:, r : block.shape[1] - r, r : block.shape[2] - r] if r else block
        forest, cnn = self.members_
        values = [forest.predict_block(inner, depths), cnn.predict_block(block, depths)]
        weights = self.weights_ if depths is None else self.weights_[list(depths)]
        return sum(w[:, None, None] * v for w, v in zip(weights.T, values))

    # ------------------------------------------------------------------------------------------------ files

    def get_state(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        config: dict[str, Any] = {"params": self.get_params(), "members": []}
        arrays: dict[str, np.ndarray] = {"weights": np.asarray(self.weights_, dtype=float)}
        arrays["intervals"] = np.asarray(self.intervals_, dtype=float)
        for m, member in enumerate(self.members_):
            member_config, member_arrays = member.get_state()
            config["members"].append({"kind": member.kind, "config": member_config})
            arrays.update({f"member{m}.{name}": value for name, value in member_arrays.items()})
        return config, arrays

    @classmethod
    def from_state(cls, config: dict[str, Any], arrays: dict[str, np.ndarray]) -> EnsembleDepthModel:
        model = cls(**config["params"])
        kinds = tuple(member["kind"] for member in config["members"])
        if kinds != MEMBERS:
            raise ValueError(f"an ensemble of {', '.join(kinds)}; this version combines {', '.join(MEMBERS)}")
        model.members_ = []
        for m, member in enumerate(config["members"]):
            prefix = f"member{m}."
            own = {name[len(prefix) :]: value for name, value in arrays.items() if name.startswith(prefix)}
            model.members_.append(model_class(member["kind"]).from_state(member["config"], own))
        model.weights_ = np.asarray(arrays["weights"], dtype=float)
        model.intervals_ = np.asarray(arrays["intervals"], dtype=float)
        if model.weights_.shape != (len(model.intervals_), len(MEMBERS)):
            raise ValueError(f"ensemble weights of shape {model.weights_.shape} for {len(model.intervals_)} depths")
        return model
