"""Representation transfer for the random forest: a source model's prediction as extra covariates.

A forest has no layers to pre-train and fine-tune, but what a model fitted on a larger library learnt can still
reach it: the source model's prediction at every depth interval becomes one more covariate band of the local
forest (stacking, as in Shen et al. 2022's representation transfer, with the prediction as the representation).
Where the library follows the local relation the forest splits on it; where it does not, the forest ignores it.
The local sites' extra covariates come from a model that never saw them (it was fitted on the source only), so
they are as honest at training time as at a new pixel.

The wrapper carries the source model into the model file, so that prediction computes the extra bands block by
block from the same covariates.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from ..registry import model_class
from .base import DepthModel


def with_source_bands(source: DepthModel, patches: np.ndarray) -> np.ndarray:
    """(S, B, p, p) -> (S, B + D, 1, 1) float32: the centre cells plus the `source` model's D predictions."""
    patches = np.asarray(patches)
    r = patches.shape[2] // 2
    centre = patches[:, :, r, r].astype(np.float32)
    predicted = np.asarray(source.predict(patches), dtype=np.float32)
    return np.concatenate([centre, predicted], axis=1)[:, :, None, None]


class SourceStackedDepthModel(DepthModel):
    """A local model (`local`, a random forest) reading the covariates plus the predictions of a fitted `source`
    model at every depth interval of the source. `fit` fits the local model only; the source stays as given."""

    kind = "source_stacked_forest"

    def __init__(self, source: DepthModel | None = None, local: DepthModel | None = None) -> None:
        self.source = source
        self.local = local

    @property
    def patch_size(self) -> int:
        """The source model's window: the local forest reads only the centre cell."""
        return self.source.patch_size

    @property
    def intervals_(self) -> np.ndarray:
        return self.local.intervals_

    def fit(
        self,
        patches: np.ndarray,
        targets: np.ndarray,
        intervals: np.ndarray,
        categorical: tuple[int, ...] = (),
        progress=None,
        sample_weight: np.ndarray | None = None,
    ) -> SourceStackedDepthModel:
        """Fits the local model on the covariates and the source model's predictions at the sites."""
        self.local.fit(
            with_source_bands(self.source, patches), targets, intervals, categorical, progress, sample_weight
        )
        return self

    def predict(self, patches: np.ndarray) -> np.ndarray:
        return self.local.predict(with_source_bands(self.source, patches))

    def predict_quantiles(self, patches: np.ndarray, quantiles: Sequence[float]) -> np.ndarray:
        return self.local.predict_quantiles(with_source_bands(self.source, patches), quantiles)

    def predict_block(self, block: np.ndarray, depths: Sequence[int] | None = None) -> np.ndarray:
        return self.local.predict_block(self._stacked_block(block), depths)

    def predict_block_quantiles(
        self, block: np.ndarray, quantiles: Sequence[float], depths: Sequence[int] | None = None
    ) -> np.ndarray:
        return self.local.predict_block_quantiles(self._stacked_block(block), quantiles, depths)

    def _stacked_block(self, block: np.ndarray) -> np.ndarray:
        """(B, h + 2r, w + 2r) -> (B + D, h, w): the inner cells plus the source's prediction there."""
        block = np.asarray(block)
        r = self.patch_size // 2
        inner = block[:, r : block.shape[1] - r, r : block.shape[2] - r] if r else block
        predicted = np.asarray(self.source.predict_block(block), dtype=np.float32)
        return np.concatenate([inner.astype(np.float32), predicted], axis=0)

    # ------------------------------------------------------------------------------------------------- state

    def get_state(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        config: dict[str, Any] = {"kind": self.kind}
        arrays: dict[str, np.ndarray] = {}
        for role, member in (("source", self.source), ("local", self.local)):
            member_config, member_arrays = member.get_state()
            config[role] = {"kind": member.kind, "config": member_config}
            arrays.update({f"{role}.{name}": value for name, value in member_arrays.items()})
        return config, arrays

    @classmethod
    def from_state(cls, config: dict[str, Any], arrays: dict[str, np.ndarray]) -> SourceStackedDepthModel:
        members = {}
        for role in ("source", "local"):
            prefix = f"{role}."
            own = {name[len(prefix) :]: value for name, value in arrays.items() if name.startswith(prefix)}
            members[role] = model_class(config[role]["kind"]).from_state(config[role]["config"], own)
        return cls(**members)
