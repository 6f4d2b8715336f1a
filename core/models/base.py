"""The interface every SOC model implements, so that validation, saving and raster prediction treat
Random Forest and the CNNs alike.

Data layout (all models):
- `patches`: float32 array (S, B, p, p): for each of S sites, B covariate bands in a p x p window centred on the
  site (p = 1 for pixel-only models). NaN marks nodata or cells off the raster. The centre cell is always valid
  (the sampler drops sites whose centre is nodata); off-centre NaN are filled by the model (band training mean).
- `targets`: float array (S, D): the target at each of D depth intervals, NaN where a site lacks that depth.
- `intervals`: float array (D, 2) of [top, bottom) in cm, increasing.
- `categorical`: indices of the bands that hold class codes (integers stored as floats).

Raster prediction uses `predict_block`, which takes a block of the covariate raster with a halo of
`patch_size // 2` cells on every side and returns a value for every inner cell, so that no model-specific code
lives in the raster loop.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import Any

import numpy as np
from sklearn.base import BaseEstimator


class DepthModel(BaseEstimator, ABC):
    """scikit-learn style: `__init__` stores its parameters under their own names, `fit` returns self, fitted
    state ends in `_`; `BaseEstimator` reads the parameters from `__init__`'s signature, so `get_params`,
    `set_params` and `sklearn.base.clone` work for every model without a list kept by hand."""

    #: key written to the model file; `core.modelfile` maps it back to the class
    kind: str = ""

    @property
    @abstractmethod
    def patch_size(self) -> int:
        """Window size (odd) the model reads around each site or pixel; 1 for pixel-only models."""

    @abstractmethod
    def fit(
        self,
        patches: np.ndarray,
        targets: np.ndarray,
        intervals: np.ndarray,
        categorical: tuple[int, ...] = (),
        progress=None,
        sample_weight: np.ndarray | None = None,
    ) -> DepthModel:
        """Fits on S sites. `progress(fraction: float, message: str) -> bool` is called regularly; when it
        returns False the fit stops by raising `core.models.base.Cancelled`. `sample_weight` (S,), in
        scikit-learn's convention: how much each site counts (None: all alike; 0: left out)."""

    @abstractmethod
    def predict(self, patches: np.ndarray) -> np.ndarray:
        """(S, B, p, p) -> (S, D) predictions at every interval of `intervals_`."""

    @abstractmethod
    def predict_block(self, block: np.ndarray, depths: Sequence[int] | None = None) -> np.ndarray:
        """(B, h + 2r, w + 2r) raster block with halo r = patch_size // 2 -> (D, h, w), or only the intervals
        numbered in `depths` (the others are not computed). Equal (to 1e-5) to `predict` on the patch around
        each inner cell. Cells whose centre has any NaN band come back NaN."""

    @abstractmethod
    def get_state(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        """The fitted model as (JSON-able config, named numeric arrays): no pickle, no code."""

    @classmethod
    @abstractmethod
    def from_state(cls, config: dict[str, Any], arrays: dict[str, np.ndarray]) -> DepthModel:
        """Inverse of `get_state`."""


class Cancelled(Exception):
    """Raised inside `fit` when the progress callback asks to stop."""


def check_progress(progress, fraction: float, message: str) -> None:
    """Reports progress and raises `Cancelled` when the caller asked to stop."""
    if progress is not None and progress(fraction, message) is False:
        raise Cancelled(message)


def scaled_progress(progress, start: float, span: float, prefix: str = ""):
    """A progress callback for a stage that covers [start, start + span] of the caller's run, its messages
    prefixed with `prefix`; None when there is no callback."""
    if progress is None:
        return None

    def report(fraction: float, message: str) -> bool:
        return progress(start + span * min(max(fraction, 0.0), 1.0), f"{prefix}{message}")

    return report
