"""The trained-model bundle: the model, what it was trained on and how to map with it, in one safe file.

The bundle is the only state carried from training to prediction: the model card (`core.card.ModelCard`: the
covariate names and order, the raster grid, the depth intervals, the target scale, the settings and seed, library
versions, the validation metrics and the covariate ranges seen in training) and the models needed for prediction
intervals.

Prediction intervals:
- Random forest: quantile regression forest (ranger's one-response-per-leaf approximation of Meinshausen 2006).
- CNNs and the ensemble: normalised split-conformal over the cross-validation fold models (`core.conformal`),
  which needs cross-validation at training time.
"""

from __future__ import annotations

import math
import platform
from typing import Any

import numpy as np

from .aoa import AoaReference, DissimilarityIndex, permutation_importance
from .card import SCHEMA_VERSION, Bands, Grid, ModelCard, TargetScale, TrainingSettings
from .conformal import conformal_quantile, site_scores, sorted_scores
from .depths import interval_labels
from .modelfile import ModelFileError, load_model_file, save_model_file
from .models.base import DepthModel
from .registry import CONFORMAL, QUANTILE_FOREST, entry, model_class
from .training import (
    TrainingData,
    TrainingResult,
    forward_transform,
    inverse_transform,
    prediction_floor,
    predictions_to_fitted_scale,
    to_property_scale,
)

#: the first release's files: an untyped metadata dict instead of a card
RELEASE_SCHEMA_VERSION = 1


def library_versions() -> dict[str, str]:
    from importlib import metadata

    versions = {"python": platform.python_version()}
    for name in ("numpy", "scipy", "scikit-learn", "torch", "rasterio"):
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "missing"
    return versions


def _json_row(row: dict[str, Any]) -> dict[str, Any]:
    """A metrics row for the card, which is JSON: an undefined metric (NaN, e.g. the coverage of a model without
    intervals, R² of a depth with one site) is stored as null."""
    return {key: None if isinstance(value, float) and math.isnan(value) else value for key, value in row.items()}


def _transfer_record(transfer: dict[str, Any] | None) -> dict[str, Any] | None:
    """The training run's transfer record (`training.train_with_transfer`) for the card, metrics as JSON rows."""
    if transfer is None:
        return None
    return {**transfer, "local_only_metrics": [_json_row(row) for row in transfer["local_only_metrics"]]}


class SocModel:
    """A trained SOC model ready to predict from covariate patches or raster blocks."""

    def __init__(
        self,
        model: DepthModel,
        card: ModelCard,
        fold_models: list[DepthModel] | None = None,
        conformal_scores: list[np.ndarray] | None = None,
    ):
        self.model = model
        self.card = card
        self.fold_models = fold_models or []
        self.conformal_scores = conformal_scores or []

    # --- what the model was trained on -------------------------------------------------------------------------
    @property
    def kind(self) -> str:
        return self.card.kind

    @property
    def interval_method(self) -> str:
        """How this kind makes prediction intervals (`registry.QUANTILE_FOREST` or `registry.CONFORMAL`)."""
        return entry(self.kind).intervals

    @property
    def intervals(self) -> np.ndarray:
        return np.asarray(self.card.intervals, dtype=float)

    @property
    def band_names(self) -> list[str]:
        return list(self.card.bands.names)

    @property
    def property_name(self) -> str:
        return self.card.property

    @property
    def patch_size(self) -> int:
        return self.model.patch_size

    @property
    def transform(self) -> str:
        return self.card.target.transform

    @property
    def prediction_floor(self) -> float | None:
        """The lowest value a prediction may take (0 for SOC), or None; see `training.prediction_floor`."""
        return self.card.target.floor

    @property
    def training_ranges(self) -> np.ndarray | None:
        """(B, 2) the minimum and maximum of each band at the training sites, or None where not recorded."""
        ranges = self.card.covariate_ranges
        return None if ranges is None else np.asarray(ranges, dtype=float)

    def dissimilarity_index(self) -> DissimilarityIndex:
        """The DI and area of applicability of new covariate values; refused for a model file without them."""
        if self.card.aoa_reference is None:
            raise ValueError(
                "This model file holds no area of applicability: it was trained without cross-validation or by "
                "an earlier version of SOC Depth Mapper. Retrain it with Validation 'Random k-fold' or 'Spatial "
                "block k-fold', or predict without the area of applicability."
            )
        return DissimilarityIndex(AoaReference.from_dict(self.card.aoa_reference))

    def interval_labels(self, unit: str = " cm") -> list[str]:
        return interval_labels(self.intervals, unit)

    # --- construction and files -----------------------------------------------------------------------------------
    @classmethod
    def from_training(cls, result: TrainingResult, data: TrainingData, grid: dict[str, Any]) -> SocModel:
        """Bundles a training run. `grid`: crs_wkt, transform (GDAL 6-tuple), res, nodata (per band) and
        optionally layer_names (the rasters whose names prefix the band names)."""
        centre = data.patches.shape[-1] // 2
        centre_values = data.patches[:, :, centre, centre].astype(float)
        ranges = np.stack([np.nanmin(centre_values, axis=0), np.nanmax(centre_values, axis=0)], axis=1)
        settings = result.settings
        fold_models, scores, floors = [], [], []
        if result.validation is not None and entry(settings["kind"]).intervals == CONFORMAL:
            fold_models = result.validation.fold_models
            scores, _spread, floors = site_scores(
                fold_models, data.patches, forward_transform(data.targets, result.transform),
                predictions_to_fitted_scale(result.validation.predictions, result.transform),
            )  # fmt: skip
            scores = sorted_scores(scores)
        floor = prediction_floor(data.targets)
        card = ModelCard(
            kind=settings["kind"],
            property=data.property_name,
            intervals=tuple((float(top), float(bottom)) for top, bottom in data.intervals),
            bands=Bands(
                names=tuple(data.band_names),
                categorical=tuple(int(i) for i in data.categorical),
                nodata=tuple(None if v is None else float(v) for v in grid["nodata"]),
                layer_names=tuple(grid.get("layer_names", ())),
            ),
            grid=Grid(
                crs_wkt=grid["crs_wkt"],
                transform=tuple(float(v) for v in grid["transform"]),
                res=tuple(float(v) for v in grid["res"]),
            ),
            target=TargetScale(result.transform, None if floor is None else float(floor)),
            settings=TrainingSettings.of_run(settings),
            n_sites=len(data.site_ids),
            n_observations_per_depth=tuple(int(n) for n in np.sum(~np.isnan(data.targets), axis=0)),
            metrics=() if result.validation is None else tuple(map(_json_row, result.validation.metrics)),
            covariate_ranges=tuple((float(low), float(high)) for low, high in ranges),
            spread_floors=tuple(floors),
            versions=library_versions(),
            aoa_reference=None if result.validation is None else cls._aoa_reference(result, data).to_dict(),
            transferred_from=_transfer_record(settings.get("transfer")),
        )
        return cls(result.model, card, fold_models, scores)

    @staticmethod
    def _aoa_reference(result: TrainingResult, data: TrainingData) -> AoaReference:
        """The area of applicability's training reference: the sites' centre-cell covariates, weighted by the
        fold models' out-of-fold permutation importance (on the scale the models are fitted on)."""
        cv = result.validation
        importance = permutation_importance(
            cv.fold_models,
            data.patches,
            forward_transform(data.targets, result.transform),
            cv.folds,
            seed=result.settings["random_state"],
        )
        centre = data.patches.shape[-1] // 2
        return AoaReference.of_training(data.patches[:, :, centre, centre], data.categorical, importance, cv.folds)

    def save(self, path: str) -> None:
        config, arrays = self.model.get_state()
        all_arrays = {f"model.{name}": value for name, value in arrays.items()}
        fold_configs = []
        for i, fold_model in enumerate(self.fold_models):
            fold_config, fold_arrays = fold_model.get_state()
            fold_configs.append(fold_config)
            all_arrays.update({f"fold{i}.{name}": value for name, value in fold_arrays.items()})
        for d, scores in enumerate(self.conformal_scores):
            all_arrays[f"conformal.{d}"] = np.asarray(scores, dtype=float)
        metadata = {
            "bundle_version": SCHEMA_VERSION,
            "card": self.card.to_dict(),
            "model_config": config,
            "fold_configs": fold_configs,
        }
        save_model_file(path, metadata, all_arrays)

    @classmethod
    def load(cls, path: str) -> SocModel:
        """Reads a model file of this version or of the first release (whose metadata becomes a card)."""
        metadata, arrays = load_model_file(path)
        version = metadata.get("bundle_version")
        if version not in (SCHEMA_VERSION, RELEASE_SCHEMA_VERSION):
            raise ModelFileError(
                f"'{path}' was written by another version of SOC Depth Mapper (bundle version {version}); "
                "retrain the model with this version."
            )
        try:
            if version == SCHEMA_VERSION:
                card = ModelCard.from_dict(metadata["card"])
            else:
                card = ModelCard.from_release_metadata(metadata)
            cls_model = model_class(card.kind)
        except KeyError as error:
            raise ModelFileError(f"'{path}': the model description lacks {error}; retrain the model.") from error
        except (TypeError, ValueError) as error:
            raise ModelFileError(f"'{path}': {error}") from error

        def part(prefix: str) -> dict[str, np.ndarray]:
            return {name[len(prefix) :]: value for name, value in arrays.items() if name.startswith(prefix)}

        try:
            model = cls_model.from_state(metadata["model_config"], part("model."))
            configs = metadata["fold_configs"]
            fold_models = [cls_model.from_state(c, part(f"fold{i}.")) for i, c in enumerate(configs)]
        except (KeyError, TypeError, ValueError) as error:  # e.g. an edited kind: settings and arrays disagree
            raise ModelFileError(
                f"'{path}' does not hold a usable {card.kind} model ({error}); it was damaged or edited "
                "after saving. Use an intact copy, or train and save the model again."
            ) from None
        scores = [arrays[f"conformal.{d}"] for d in range(len(part("conformal.")))]
        return cls(model, card, fold_models, scores)

    # --- prediction ----------------------------------------------------------------------------------------------
    def predict(self, patches: np.ndarray) -> np.ndarray:
        """(S, B, p, p) -> (S, D) on the target's own scale."""
        return to_property_scale(self.model.predict(patches), self.transform, self.prediction_floor)

    def predict_block(self, block: np.ndarray, depth_indices) -> np.ndarray:
        """Maps on the target's own scale (float32) before `prediction_floor`, which `core.predict` applies and
        counts."""
        values = inverse_transform(self.model.predict_block(block, list(depth_indices)), self.transform)
        return values.astype(np.float32)

    def supports_intervals(self) -> tuple[bool, str]:
        if self.interval_method == QUANTILE_FOREST:
            return True, ""
        if not self.fold_models:
            return False, (
                "This model was trained without cross-validation, so it has no fold models to estimate "
                "prediction intervals from."
            )
        return True, ""

    def predict_block_interval(self, block: np.ndarray, depth_indices, level: float) -> tuple[np.ndarray, np.ndarray]:
        """Lower and upper bounds (d, h, w) of a central prediction interval with probability `level`."""
        ok, reason = self.supports_intervals()
        if not ok:
            raise ValueError(reason)
        depth_indices = list(depth_indices)
        alpha = 1.0 - level
        if self.interval_method == QUANTILE_FOREST:
            quantiles = self.model.predict_block_quantiles(block, [alpha / 2, 1 - alpha / 2], depth_indices)
            lower, upper = quantiles[:, 0], quantiles[:, 1]
        else:
            centre = self.model.predict_block(block, depth_indices)
            members = np.stack([m.predict_block(block, depth_indices) for m in self.fold_models])
            spread = members.std(axis=0)
            half = np.empty_like(centre)
            for j, d in enumerate(depth_indices):
                scores = self.conformal_scores[d]
                floor = self.card.spread_floors[d]
                half[j] = conformal_quantile(scores, level) * (spread[j] + floor)
            lower, upper = centre - half, centre + half
        lower = to_property_scale(lower, self.transform, self.prediction_floor)
        upper = to_property_scale(upper, self.transform, self.prediction_floor)
        return lower.astype(np.float32), upper.astype(np.float32)

    def bytes_per_pixel(self) -> int:
        """Working memory per output pixel while predicting a block (input, activations, outputs)."""
        bands = len(self.band_names)
        depths = len(self.intervals)
        estimate = getattr(self.model, "bytes_per_pixel", None)
        per_model = estimate() if callable(estimate) else 8 * (bands + 2) * depths + 64
        members = 1 + len(self.fold_models)
        return int(4 * bands * self.patch_size + per_model * min(members, 2) + 16 * depths)
