"""The model card: what a model was trained on and how to map with it, the one contract from training to prediction.

Written once into the model file, next to the model's own state, and read back as typed attributes by the bundle,
prediction and the report. Each fact is stored once. Fields added in later versions are optional with a default,
so that a file without them still loads; `SCHEMA_VERSION` counts incompatible changes. Files of the first release
(schema 1) carry an untyped dict instead, which `ModelCard.from_release_metadata` converts.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

#: version 1: the untyped metadata dict of the first release; version 2: this card
SCHEMA_VERSION = 2


@dataclass(frozen=True)
class Bands:
    """The covariate bands in the order the model reads them; `nodata` per band as its source file declares it."""

    names: tuple[str, ...]
    categorical: tuple[int, ...] = ()
    nodata: tuple[float | None, ...] = ()
    #: the rasters (layers) the bands came from, whose names prefix the band names (LAYER_BAND)
    layer_names: tuple[str, ...] = ()


@dataclass(frozen=True)
class Grid:
    """The raster grid of training: CRS, GDAL geotransform and pixel size, in the CRS's units."""

    crs_wkt: str
    transform: tuple[float, ...]
    res: tuple[float, float]


@dataclass(frozen=True)
class TargetScale:
    """How model output becomes the property's values: back-transformed, then raised to `floor` (None: no floor)."""

    transform: str = "none"
    floor: float | None = None


@dataclass(frozen=True)
class TrainingSettings:
    """The settings of the run: the model kind's parameters as given, the validation and the seed."""

    params: dict[str, Any] = field(default_factory=dict)
    validation: str = "none"
    folds: int | None = None
    block_size: float | None = None
    seed: int = 0

    @classmethod
    def of_run(cls, settings: dict[str, Any]) -> TrainingSettings:
        """From `training.TrainingResult.settings` (also the first release's `settings` entry)."""
        return cls(
            params=settings["params"],
            validation=settings["validation"],
            folds=settings["folds"],
            block_size=settings["block_size"],
            seed=settings["random_state"],
        )


@dataclass(frozen=True)
class ModelCard:
    """Everything about a trained model except its fitted numbers."""

    kind: str
    property: str
    intervals: tuple[tuple[float, float], ...]
    bands: Bands
    grid: Grid
    target: TargetScale = field(default_factory=TargetScale)
    settings: TrainingSettings = field(default_factory=TrainingSettings)
    n_sites: int = 0
    n_observations_per_depth: tuple[int, ...] = ()
    #: cross-validation metrics rows (model, depth, group, n, r, r2, ...); empty without validation
    metrics: tuple[dict[str, Any], ...] = ()
    #: per band, the (min, max) of the training sites' values; None where unknown
    covariate_ranges: tuple[tuple[float, float], ...] | None = None
    #: conformal intervals: per depth, the floor added to the fold models' spread; empty for other methods
    spread_floors: tuple[float, ...] = ()
    versions: dict[str, str] = field(default_factory=dict)
    #: the area of applicability's training reference in predictor space (`core.aoa.AoaReference.to_dict`);
    #: None without cross-validation and in files written before it
    aoa_reference: dict[str, Any] | None = None
    #: reserved for transferred models: the model and data set this one was derived from
    transferred_from: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON values for the model file (tuples become lists there)."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> ModelCard:
        """Inverse of `to_dict`; fields a file lacks take their defaults."""
        nested = {"bands": Bands, "grid": Grid, "target": TargetScale, "settings": TrainingSettings}
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"The model card has fields this version does not know: {', '.join(unknown)}.")
        card = dict(values)
        for name, kind in nested.items():
            if name in card:
                card[name] = _typed(kind, card[name])
        card["intervals"] = tuple(tuple(pair) for pair in card["intervals"])
        for name in ("n_observations_per_depth", "spread_floors"):
            if name in card:
                card[name] = tuple(card[name])
        if card.get("metrics") is not None:
            card["metrics"] = tuple(card["metrics"])
        if card.get("covariate_ranges") is not None:
            card["covariate_ranges"] = tuple(tuple(pair) for pair in card["covariate_ranges"])
        return cls(**card)

    @classmethod
    def from_release_metadata(cls, metadata: dict[str, Any]) -> ModelCard:
        """The card of a first-release model file (schema 1), whose metadata is an untyped dict."""
        grid = metadata["grid"]
        return cls(
            kind=metadata["kind"],
            property=metadata["property"],
            intervals=tuple(tuple(pair) for pair in metadata["intervals"]),
            bands=Bands(
                names=tuple(metadata["band_names"]),
                categorical=tuple(metadata["categorical"]),
                nodata=tuple(grid["nodata"]),
                layer_names=tuple(grid.get("layer_names", ())),
            ),
            grid=Grid(crs_wkt=grid["crs_wkt"], transform=tuple(grid["transform"]), res=tuple(grid["res"])),
            target=TargetScale(metadata["target_transform"], metadata["prediction_floor"]),
            settings=TrainingSettings.of_run(metadata["settings"]),
            n_sites=metadata["n_sites"],
            n_observations_per_depth=tuple(metadata["n_observations_per_depth"]),
            metrics=tuple(metadata["metrics"]),
            covariate_ranges=tuple(tuple(pair) for pair in metadata["covariate_ranges"]),
            spread_floors=tuple(metadata.get("spread_floors", ())),
            versions=metadata["versions"],
        )


def _typed(kind: type, values: dict[str, Any]) -> Any:
    """A nested part of the card from its dict, sequences as tuples as the dataclass declares them."""
    return kind(**{name: tuple(v) if isinstance(v, list) else v for name, v in values.items()})
