"""Turns covariate patches into the network's input channels, with one rule shared by training and mapping.

- Continuous band, `scaling="quantile"` (the default): each value becomes its rank among the valid cells of the
  training patches, a number in [0, 1] read off the band's empirical distribution (101 quantiles, linear in
  between). Covariates come in units a thousand-fold apart (elevation in m, slope × 100, temperature in K),
  skewed, with outliers and unflagged fill values (32767); min–max scaling squeezes such a band's real values
  into a sliver of [0, 1], and at mapping time sends a value beyond the training range far outside anything
  the network saw, where its unbounded output follows. Ranks do not depend on units or outliers. Beyond the
  training range a value goes on linearly (the range's width = 1) for at most one width more, to [-1, 2]: the
  network may follow a trend a little way out, which makes the fold models disagree there and so widens the
  prediction intervals, but a fill value of 32767 can no longer take it anywhere.
- Continuous band, `scaling="minmax"`: min–max to [0, 1] with the training minimum and maximum, not clipped;
  the rule of model files written before the quantile scaling, which load with it.
- Either way the training range is recorded (`band_min_`, `band_max_`) so that another component can report
  pixels the model never saw.
- Categorical band: one channel per class code seen in training (sorted); a code never seen, or NaN, gives
  all zeros, i.e. "none of the known classes".
- Edge and nodata policy: an off-centre continuous cell that is NaN (nodata neighbour, or a cell off the
  raster edge that the reader padded with NaN) takes the scaled value of the band's training mean. Patches at
  sampling time and raster blocks at mapping time go through the same code, so a cell near the map edge gets
  exactly the input its site-patch twin would get. Whether the centre is valid is the caller's business
  (`centre_valid`): models return NaN there rather than an invented value.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

SCALINGS = ("quantile", "minmax")
#: quantiles of each continuous band kept for the rank scaling: percent steps, 0 % and 100 % included
N_QUANTILES = 101
#: how far beyond the training range, in widths of that range, a value may still move the scaled input
MAX_EXTRAPOLATION = 1.0


class PatchEncoder:
    """Rank (or min–max) scaling, mean fill and one-hot encoding fitted on training patches (S, B, p, p)."""

    def __init__(self, categorical: Sequence[int] = (), scaling: str = "quantile"):
        if scaling not in SCALINGS:
            raise ValueError(f"Unknown covariate scaling '{scaling}'; expected one of {', '.join(SCALINGS)}.")
        self.categorical = tuple(int(b) for b in categorical)
        self.scaling = scaling

    def fit(self, patches: np.ndarray) -> PatchEncoder:
        patches = _as_float_array(patches, 4, "patches", "(sites, bands, rows, columns)")
        n_bands = patches.shape[1]
        bad = [b for b in self.categorical if not 0 <= b < n_bands]
        if bad:
            raise ValueError(
                f"Categorical band index {bad[0]} does not exist: the patches have {n_bands} bands "
                f"(indices 0 to {n_bands - 1}). Check the list of categorical covariates."
            )
        self.n_bands_ = n_bands
        self.band_min_ = np.zeros(n_bands)
        self.band_max_ = np.zeros(n_bands)
        self.band_mean_ = np.zeros(n_bands)
        self.levels_: dict[int, np.ndarray] = {}
        self.knots_: dict[int, np.ndarray] = {}
        self.ranks_: dict[int, np.ndarray] = {}
        for band in range(n_bands):
            values = patches[:, band]
            values = values[np.isfinite(values)]
            if values.size == 0:
                raise ValueError(
                    f"Covariate band {band + 1} has no valid cell in the training patches; "
                    "remove it from the covariate stack or check its nodata value."
                )
            if band in self.categorical:
                self.levels_[band] = np.unique(values)
            else:
                self.band_min_[band] = values.min()
                self.band_max_[band] = values.max()
                self.band_mean_[band] = values.mean()
                if self.scaling == "quantile":
                    self.knots_[band], self.ranks_[band] = _rank_knots(values)
        return self

    @property
    def n_channels_(self) -> int:
        """Channels after encoding: one per continuous band plus one per class of each categorical band."""
        return sum(len(self.levels_[b]) if b in self.categorical else 1 for b in range(self.n_bands_))

    def transform(self, patches: np.ndarray) -> np.ndarray:
        """(S, B, p, p) -> (S, C, p, p) float32; bands keep their order, a categorical one expands in place."""
        patches = _as_float_array(patches, 4, "patches", "(sites, bands, rows, columns)")
        self._check_bands(patches.shape[1])
        channels = []
        for band in range(self.n_bands_):
            values = patches[:, band]
            if band in self.categorical:
                channels.extend(values == level for level in self.levels_[band])
            else:
                scaled, fill = self._scale(band, values), self._scale(band, self.band_mean_[band])
                channels.append(np.where(np.isfinite(values), scaled, fill))
        return np.stack(channels, axis=1).astype(np.float32)

    def _scale(self, band: int, values):
        if self.scaling == "quantile":
            knots = self.knots_[band]
            scaled = np.interp(values, knots, self.ranks_[band])
            width = knots[-1] - knots[0]
            if width > 0:
                above = np.clip((values - knots[-1]) / width, 0.0, MAX_EXTRAPOLATION)
                below = np.clip((values - knots[0]) / width, -MAX_EXTRAPOLATION, 0.0)
                scaled = scaled + above + below
            return scaled
        span = self.band_max_[band] - self.band_min_[band]
        return (values - self.band_min_[band]) / (span if span > 0 else 1.0)

    def transform_block(self, block: np.ndarray) -> np.ndarray:
        """(B, H, W) raster block -> (C, H, W) float32, the same rule as `transform`."""
        block = _as_float_array(block, 3, "block", "(bands, rows, columns)")
        return self.transform(block[np.newaxis])[0]

    def _check_bands(self, n_bands: int) -> None:
        if n_bands != self.n_bands_:
            raise ValueError(
                f"The covariates have {n_bands} bands but the model was trained on {self.n_bands_}; "
                "use the same covariate stack (same bands, same order) as for training."
            )

    def get_state(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        config = {"categorical": list(self.categorical), "n_bands": self.n_bands_, "scaling": self.scaling}
        arrays = {"band_min": self.band_min_, "band_max": self.band_max_, "band_mean": self.band_mean_}
        arrays.update({f"levels_{b}": levels for b, levels in self.levels_.items()})
        arrays.update({f"knots_{b}": knots for b, knots in self.knots_.items()})
        arrays.update({f"ranks_{b}": ranks for b, ranks in self.ranks_.items()})
        return config, arrays

    @classmethod
    def from_state(cls, config: dict[str, Any], arrays: dict[str, np.ndarray]) -> PatchEncoder:
        encoder = cls(config["categorical"], config.get("scaling", "minmax"))  # files before 2026-12: min–max
        encoder.n_bands_ = int(config["n_bands"])
        encoder.band_min_ = np.asarray(arrays["band_min"], dtype=float)
        encoder.band_max_ = np.asarray(arrays["band_max"], dtype=float)
        encoder.band_mean_ = np.asarray(arrays["band_mean"], dtype=float)
        encoder.levels_ = {b: np.asarray(arrays[f"levels_{b}"], dtype=float) for b in encoder.categorical}
        continuous = [b for b in range(encoder.n_bands_) if b not in encoder.categorical]
        if encoder.scaling == "quantile":
            encoder.knots_ = {b: np.asarray(arrays[f"knots_{b}"], dtype=float) for b in continuous}
            encoder.ranks_ = {b: np.asarray(arrays[f"ranks_{b}"], dtype=float) for b in continuous}
        return encoder


def _rank_knots(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """A band's quantiles and their ranks in [0, 1], for `np.interp`. Where several quantiles share a value (a
    band that is often exactly 0), the value takes the mean of their ranks, so ties get one mid rank; a
    constant band maps to 0."""
    ranks = np.linspace(0.0, 1.0, N_QUANTILES)
    knots, index = np.unique(np.quantile(values, ranks), return_inverse=True)
    if len(knots) == 1:
        return knots, np.zeros(1)
    return knots, np.bincount(index, ranks) / np.bincount(index)


def centre_valid(patches: np.ndarray) -> np.ndarray:
    """(S, B, p, p) -> (S,) True where every band is finite at the centre cell."""
    r = patches.shape[-1] // 2
    return np.isfinite(patches[:, :, r, r]).all(axis=1)


def block_centre_valid(block: np.ndarray, halo: int) -> np.ndarray:
    """(B, h + 2 halo, w + 2 halo) -> (h, w) True where every band is finite at the inner cell."""
    rows, cols = block.shape[1] - 2 * halo, block.shape[2] - 2 * halo
    return np.isfinite(block[:, halo : halo + rows, halo : halo + cols]).all(axis=0)


def _as_float_array(values: np.ndarray, ndim: int, name: str, layout: str) -> np.ndarray:
    values = np.asarray(values, dtype=float)
    if values.ndim != ndim:
        raise ValueError(f"'{name}' must be a {ndim}-D array {layout}; got shape {values.shape}.")
    return np.where(np.isfinite(values), values, np.nan)
