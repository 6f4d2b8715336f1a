"""Where the time goes when `socdepth:harmonise` runs through QGIS on many profiles.

    python -m bench.harmonise_qgis [--profiles 50000]

The same synthetic profiles as `bench.spline`, written as a GeoPackage point layer (one point per horizon), are
harmonised three ways: the whole algorithm through `processing.run`, only reading the horizons from the layer
(QGIS feature I/O, the floor for any algorithm that reads them), and only the spline (`core.spline.harmonise` on
arrays). The spline's share of the whole run says whether QGIS's feature I/O or the spline sets the pace.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np

from soc_depth_mapper.core.depths import STANDARD_DEPTHS
from soc_depth_mapper.core.spline import harmonise

from .spline import generate_profiles

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")


def write_horizon_layer(path: Path, ids: np.ndarray, tops: np.ndarray, bottoms: np.ndarray, values: np.ndarray):
    """A GeoPackage of horizon points; the horizons of one profile share its location."""
    from qgis.core import (
        QgsCoordinateReferenceSystem,
        QgsCoordinateTransformContext,
        QgsFeature,
        QgsField,
        QgsFields,
        QgsGeometry,
        QgsPointXY,
        QgsVectorFileWriter,
        QgsWkbTypes,
    )
    from qgis.PyQt.QtCore import QVariant

    fields = QgsFields()
    fields.append(QgsField("profile", QVariant.String))
    for name in ("top", "bottom", "soc"):
        fields.append(QgsField(name, QVariant.Double))
    options = QgsVectorFileWriter.SaveVectorOptions()
    options.driverName = "GPKG"
    writer = QgsVectorFileWriter.create(
        str(path), fields, QgsWkbTypes.Point, QgsCoordinateReferenceSystem("EPSG:28355"),
        QgsCoordinateTransformContext(), options,
    )  # fmt: skip
    rng = np.random.default_rng(3)
    xy = rng.uniform([740_000, 6_640_000], [800_000, 6_700_000], (ids.max() + 1, 2))
    for profile, top, bottom, value in zip(ids.tolist(), tops.tolist(), bottoms.tolist(), values.tolist()):
        feature = QgsFeature(fields)
        feature.setGeometry(QgsGeometry.fromPointXY(QgsPointXY(*xy[profile])))
        feature.setAttributes([f"P{profile}", top, bottom, None if np.isnan(value) else value])
        writer.addFeature(feature)
    del writer


def read_only(path: Path) -> int:
    """Reads every horizon's attributes and geometry, as the algorithm must; returns the count."""
    from qgis.core import QgsVectorLayer

    layer = QgsVectorLayer(str(path), "horizons", "ogr")
    count = 0
    for feature in layer.getFeatures():
        feature.attributes()
        feature.geometry().asPoint()
        count += 1
    return count


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profiles", type=int, default=50_000)
    args = parser.parse_args(argv)

    from qgis.core import QgsApplication

    app = QgsApplication([], False)
    app.initQgis()
    import processing
    from processing.core.Processing import Processing

    Processing.initialize()
    import soc_depth_mapper

    plugin = soc_depth_mapper.classFactory(None)
    plugin.initProcessing()

    ids, tops, bottoms, values = generate_profiles(args.profiles)
    with tempfile.TemporaryDirectory(prefix="bench_harmonise_") as folder:
        horizons = Path(folder) / "horizons.gpkg"
        write_horizon_layer(horizons, ids, tops, bottoms, values)

        started = time.perf_counter()
        processing.run(
            "socdepth:harmonise",
            {
                "INPUT": str(horizons),
                "PROFILE_FIELD": "profile",
                "TOP_FIELD": "top",
                "BOTTOM_FIELD": "bottom",
                "VALUE_FIELDS": ["soc"],
                "OUTPUT": str(Path(folder) / "harmonised.gpkg"),
            },
        )
        whole = time.perf_counter() - started

        started = time.perf_counter()
        n_read = read_only(horizons)
        reading = time.perf_counter() - started

    started = time.perf_counter()
    harmonise(ids.astype(str).astype(object), tops, bottoms, values, STANDARD_DEPTHS)
    spline = time.perf_counter() - started

    print(f"{args.profiles:,} profiles, {n_read:,} horizons in a GeoPackage point layer")
    print(f"{'stage':<46}{'wall s':>9}{'share':>8}")
    for name, seconds in (
        ("whole algorithm (processing.run)", whole),
        ("reading the horizons only (QGIS feature I/O)", reading),
        ("spline only (core.spline.harmonise)", spline),
    ):
        print(f"{name:<46}{seconds:>9.2f}{100 * seconds / whole:>7.0f}%")
    print(
        f"{'PASS' if spline < reading else 'FAIL'}: the spline takes less time than reading the horizons "
        f"({spline:.2f} s vs {reading:.2f} s)"
    )
    plugin.unload()


if __name__ == "__main__":
    main()
