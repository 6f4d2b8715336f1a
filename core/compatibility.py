"""Whether a covariate stack is what a model was trained on: the differences, for the caller to report.

A model reads its covariates band by band, so the stack must hold the same bands in the same order, in the same
CRS and at the same pixel size (a CNN reads patches of cells). Band names are LAYER_BAND; a layer named
differently than in training (another file name, the same bands) is only worth a warning.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from rasterio.crs import CRS
from rasterio.errors import CRSError

from .card import ModelCard

#: relative tolerance on the pixel size
RES_TOLERANCE = 1e-6


class CovariateGrid(Protocol):
    """What the check reads from a covariate stack (e.g. `core.rasters.CovariateStack`)."""

    band_names: list[str]
    layer_names: list[str]
    crs_wkt: str
    res: tuple[float, float]


@dataclass(frozen=True)
class BandDifference:
    number: int  # 1-based, as users count bands
    model: str
    given: str


@dataclass(frozen=True)
class CovariateDifferences:
    """Empty fields mean agreement. With another band count, the bands are not compared one by one."""

    band_count: tuple[int, int] | None = None  # (model, given)
    bands: tuple[BandDifference, ...] = ()
    #: the band names differ only in their layer part: the same bands from layers named otherwise
    layer_names_differ: bool = False
    crs: tuple[str, str] | None = None  # (model, given) as WKT
    pixel_size: tuple[tuple[float, float], tuple[float, float]] | None = None  # (model, given)

    @property
    def blocking(self) -> bool:
        """True when the model cannot map these covariates (a layer renamed is not blocking)."""
        return bool(self.band_count or self.bands or self.crs or self.pixel_size)


def _band_parts(bands: Sequence[str], layers: Sequence[str]) -> list[str]:
    """'cov_DEMSRT5' -> 'DEMSRT5' where 'cov' is one of `layers` (the longest that fits)."""
    parts = []
    for band in bands:
        layer = next((lyr for lyr in sorted(layers, key=len, reverse=True) if band.startswith(f"{lyr}_")), "")
        parts.append(band[len(layer) + 1 :] if layer else band)
    return parts


def covariate_differences(card: ModelCard, stack: CovariateGrid) -> CovariateDifferences:
    """How `stack` differs from the covariates `card` was trained on."""
    expected, given = list(card.bands.names), list(stack.band_names)
    band_count, bands, renamed_layers = None, (), False
    if len(expected) != len(given):
        band_count = (len(expected), len(given))
    elif expected != given:
        model_parts = _band_parts(expected, card.bands.layer_names)
        given_parts = _band_parts(given, stack.layer_names)
        bands = tuple(
            BandDifference(i + 1, e, g)
            for i, (e, g) in enumerate(zip(expected, given))
            if model_parts[i] != given_parts[i]
        )
        renamed_layers = not bands
    crs = None if same_crs(card.grid.crs_wkt, stack.crs_wkt) else (card.grid.crs_wkt, stack.crs_wkt)
    trained, res = tuple(card.grid.res), tuple(stack.res)
    pixel_size = None
    if any(abs(a - b) > RES_TOLERANCE * abs(a) for a, b in zip(trained, res)):
        pixel_size = (trained, res)
    return CovariateDifferences(band_count, bands, renamed_layers, crs, pixel_size)


def same_crs(first_wkt: str, second_wkt: str) -> bool:
    """The same coordinate reference system, however its WKT is written; text that is no CRS only equals itself."""
    if first_wkt == second_wkt:
        return True
    try:
        return CRS.from_wkt(first_wkt) == CRS.from_wkt(second_wkt)
    except CRSError:
        return False
