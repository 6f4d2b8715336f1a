"""From sites and covariate rasters to the training table, with the sites that cannot be used and why.

Shared by the train and sample algorithms and the accuracy bench, so that they skip the same sites for the same
reasons: a site off the rasters or on a nodata cell has no covariates; a site without a value at any depth has
nothing to learn from.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from .depths import parse_interval_field
from .rasters import CovariateStack, PointSample
from .training import TrainingData

NO_TARGET = "no target value at any depth"

Skipped = list[tuple[Any, str]]


def target_intervals(field_names: Sequence[str]) -> tuple[str, list[str], np.ndarray]:
    """Target fields named PROPERTY_TOP_BOTTOM -> (property, the fields in depth order, intervals (D, 2)).

    A ValueError says which name does not fit, or which properties are mixed.
    """
    if not field_names:
        raise ValueError("Choose the target fields, e.g. ORCDRC_0_5 … ORCDRC_100_200.")
    parsed = [parse_interval_field(name) for name in field_names]
    properties = sorted({prop for prop, _, _ in parsed})
    if len(properties) > 1:
        raise ValueError(f"Target fields mix properties ({', '.join(properties)}); train one property at a time.")
    order = sorted(range(len(parsed)), key=lambda i: (parsed[i][1], parsed[i][2]))
    intervals = np.array([[parsed[i][1], parsed[i][2]] for i in order])
    return properties[0], [field_names[i] for i in order], intervals


def categorical_bands(text: str, band_names: Sequence[str], layer_names: Sequence[str]) -> tuple[int, ...]:
    """Band indices from comma- or semicolon-separated names: a band as the log lists it (LAYER_BAND), a whole
    layer (all its bands), or a band as QGIS shows it (PMTGEO5, its description, in any case) where only one band
    has that name.

    An unknown or ambiguous name is a ValueError that lists the choices.
    """
    labels = band_labels(band_names, layer_names)
    chosen = []
    for name in (part.strip() for part in text.replace(";", ",").split(",")):
        if not name:
            continue
        if name in band_names:
            chosen.append(list(band_names).index(name))
        elif name in layer_names:
            chosen += [i for i, band in enumerate(band_names) if band.startswith(f"{name}_")]
        else:
            matches = [i for i, label in enumerate(labels) if label.casefold() == name.casefold()]
            if len(matches) > 1:
                raise ValueError(
                    f"Categorical band '{name}' is a band of several layers: "
                    f"{', '.join(band_names[i] for i in matches)}; write the one you mean."
                )
            if not matches:
                raise ValueError(
                    f"Categorical band '{name}' is not among the covariate bands: {', '.join(band_names)} "
                    f"(or their layers {', '.join(layer_names)})."
                )
            chosen += matches
    return tuple(sorted(set(chosen)))


def band_labels(band_names: Sequence[str], layer_names: Sequence[str]) -> list[str]:
    """Each band's name without its layer's ('PMTGEO5' for 'covariates_250m_PMTGEO5'): what QGIS shows."""
    labels = []
    for band in band_names:
        layers = [layer for layer in layer_names if band.startswith(f"{layer}_")]
        labels.append(band[len(max(layers, key=len)) + 1 :] if layers else band)
    return labels


def grid_of(stack: CovariateStack) -> dict[str, Any]:
    """The stack's grid as `bundle.SocModel.from_training` records it."""
    return {
        "crs_wkt": stack.crs_wkt,
        "transform": list(stack.transform.to_gdal()),
        "res": list(stack.res),
        "nodata": [None if v is None else float(v) for v in stack.nodata],
        "layer_names": stack.layer_names,
    }


def sampling_skips(site_ids: Sequence[Any], sample: PointSample) -> Skipped:
    """(site, reason) for each site the stack could not sample."""
    return [(site, reason) for site, status, reason in zip(site_ids, sample.status, sample.reasons) if status != 0]


def training_data(
    sample: PointSample,
    site_ids: Sequence[Any],
    x: Sequence[float],
    y: Sequence[float],
    targets: np.ndarray,
    intervals: np.ndarray,
    property_name: str,
    band_names: Sequence[str],
    categorical: tuple[int, ...] = (),
    groups: Sequence[Any] | None = None,
) -> tuple[TrainingData, Skipped]:
    """The sites with covariates and at least one target, and (site, reason) for the others, in site order.

    `targets` (S, D) holds NaN where a site lacks a depth; `groups` (S,) are written as text. The table may be
    empty: the caller says what to do then.
    """
    targets = np.asarray(targets, dtype=float)
    skipped: Skipped = []
    keep = np.zeros(len(site_ids), dtype=bool)
    for i, site in enumerate(site_ids):
        if sample.status[i] != 0:
            skipped.append((site, sample.reasons[i]))
        elif np.all(np.isnan(targets[i])):
            skipped.append((site, NO_TARGET))
        else:
            keep[i] = True
    data = TrainingData(
        site_ids=np.asarray(site_ids)[keep],
        x=np.asarray(x, dtype=float)[keep],
        y=np.asarray(y, dtype=float)[keep],
        patches=sample.patches[keep],
        targets=targets[keep],
        intervals=np.asarray(intervals),
        property_name=property_name,
        band_names=list(band_names),
        categorical=categorical,
        groups=None if groups is None else np.array([str(g) for g in groups], dtype=object)[keep],
    )
    return data, skipped
