"""QGIS-side helpers shared by the algorithms: raster layers to files, points to raster coordinates."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from qgis.core import (
    QgsCoordinateReferenceSystem,
    QgsCoordinateTransform,
    QgsCsException,
    QgsFeature,
    QgsFeatureRequest,
    QgsFeatureSink,
    QgsFields,
    QgsProcessingException,
    QgsProcessingUtils,
    QgsRasterLayer,
    QgsVectorLayer,
    QgsWkbTypes,
)
from qgis.PyQt.QtCore import QCoreApplication

from .base import file_of, is_temporary_output

if TYPE_CHECKING:  # numpy and rasterio load only when an algorithm runs
    from ..core.rasters import PointSample


def tr(text: str) -> str:
    return QCoreApplication.translate("SocDepthMapper", text)


def raster_files(layers: Iterable[QgsRasterLayer]) -> tuple[list[str], list[str]]:
    """File paths and layer names of the covariate rasters; only GDAL file rasters can be read block-wise."""
    paths, names = [], []
    for layer in layers:
        if layer.providerType() != "gdal":
            raise QgsProcessingException(
                tr("Covariate '{}' is not a raster file (provider '{}'). Save it as a GeoTIFF first.").format(
                    layer.name(), layer.providerType()
                )
            )
        paths.append(layer.source().split("|")[0])
        names.append(layer.name())
    if not paths:
        raise QgsProcessingException(tr("Choose at least one covariate raster."))
    return paths, names


def open_stack(layers, resample: bool):
    """A CovariateStack over the layers; a grid mismatch becomes an error that says what differs."""
    from ..core.rasters import CovariateStack, RasterMismatchError

    paths, names = raster_files(layers)
    try:
        return CovariateStack(paths, layer_names=names, resample=resample)
    except RasterMismatchError as error:
        raise QgsProcessingException(str(error)) from error


@dataclass
class Points:
    """Point features read once: ids, coordinates in the rasters' CRS, geometries and chosen attributes."""

    feature_ids: list[int] = field(default_factory=list)
    x: list[float] = field(default_factory=list)
    y: list[float] = field(default_factory=list)
    geometries: list = field(default_factory=list)
    attributes: list[list] = field(default_factory=list)
    skipped: list[tuple[int, str]] = field(default_factory=list)


def read_points(source, context, feedback, target_crs_wkt: str, fields: list[str] | None = None, progress_span=10):
    """Reads point features and transforms them to the rasters' CRS with the project's transform context.

    Features without a geometry, or that cannot be transformed, are skipped with a reason.
    """
    transform = QgsCoordinateTransform(
        source.sourceCrs(), QgsCoordinateReferenceSystem.fromWkt(target_crs_wkt), context.transformContext()
    )
    request = QgsFeatureRequest()
    indices = None
    if fields is not None:
        indices = [source.fields().lookupField(name) for name in fields]
        request.setSubsetOfAttributes(indices)
    points = Points()
    total = source.featureCount() or 1
    for n, feature in enumerate(source.getFeatures(request)):
        if feedback.isCanceled():
            break
        geometry = feature.geometry()
        if geometry is None or geometry.isEmpty():
            points.skipped.append((feature.id(), tr("no geometry")))
            continue
        point = geometry.vertexAt(0)
        try:
            projected = transform.transform(point.x(), point.y())
        except QgsCsException:
            points.skipped.append((feature.id(), tr("cannot be transformed to the rasters' CRS")))
            continue
        points.feature_ids.append(feature.id())
        points.x.append(projected.x())
        points.y.append(projected.y())
        points.geometries.append(geometry)
        attributes = feature.attributes()
        points.attributes.append(attributes if indices is None else [attributes[i] for i in indices])
        if n % 500 == 0:
            feedback.setProgress(progress_span * n / total)
    return points


@dataclass
class SampledPoints:
    """Points read in the rasters' CRS and the covariates sampled at them, with the facts of the raster stack."""

    points: Points
    sample: PointSample
    band_names: list[str]
    layer_names: list[str]
    grid: dict  # as core.sites.grid_of describes it


def sample_points(
    source, layers, resample: bool, patch_size: int, context, feedback, reading: str, fields=None, progress_span=10
) -> SampledPoints | None:
    """The input step of sample and train: opens the covariates, reads the points and samples every band at them
    (`patch_size` cells on a side). None when the user cancels."""
    import numpy as np

    from ..core.sites import grid_of

    with open_stack(layers, resample) as stack:
        feedback.pushInfo(tr("Covariate bands: {}").format(", ".join(stack.band_names)))
        feedback.setProgressText(reading)
        points = read_points(source, context, feedback, stack.crs_wkt, fields=fields, progress_span=progress_span)
        if feedback.isCanceled():
            return None
        feedback.setProgressText(tr("Sampling {} bands at {} points").format(stack.count, len(points.x)))
        sample = stack.sample(np.array(points.x), np.array(points.y), patch_size)
        return SampledPoints(points, sample, stack.band_names, stack.layer_names, grid_of(stack))


#: how many skipped records are listed one by one before only their counts are given
MAX_REPORTED = 20


def report_skips(
    feedback, skips: Sequence[tuple[str, str]], summary: str, where_listed: str = "", limit: int = MAX_REPORTED
) -> None:
    """The one way skipped records are reported: `skips` holds (message, cause) per record, in order. The first
    `limit` messages are warnings one by one, then how many more there are (and `where_listed`, the output that
    lists them all), then the count per cause, most frequent first: `summary` with `{count}` (all records) and
    `{causes}` ("cause: n; ...") filled in."""
    if not skips:
        return
    for message, _cause in skips[:limit]:
        feedback.pushWarning(message)
    if len(skips) > limit:
        if where_listed:
            feedback.pushWarning(tr("… and {:,} more; {}").format(len(skips) - limit, where_listed))
        else:
            feedback.pushWarning(tr("… and {:,} more.").format(len(skips) - limit))
    counts = Counter(cause for _message, cause in skips)
    causes = "; ".join(f"{cause}: {count:,}" for cause, count in counts.most_common())
    feedback.pushWarning(summary.format(count=f"{len(skips):,}", causes=causes))


def report_skipped(feedback, skipped: list[tuple[object, str]], what: str, limit: int = MAX_REPORTED) -> None:
    """Reports skipped records, given as (record, reason), by `report_skips`; the cause is the reason up to its
    first colon."""
    skips = [(tr("Skipped {} {}: {}").format(what, record, reason), reason.split(":")[0]) for record, reason in skipped]
    summary = tr("Skipped {{count}} {}s in all — {{causes}}").format(what)
    report_skips(feedback, skips, summary, limit=limit)


def report_infinite(feedback, band_names: list[str], counts, where: str) -> None:
    """Warns of ±infinite covariate values, band by band. A raster without a nodata value may hold them
    instead; they are treated as nodata, and the user should know which band to fix."""
    for name, count in zip(band_names, counts):
        if count:
            feedback.pushWarning(
                tr(
                    "Covariate band {} holds ±infinite values at {:,} {}; they were treated as nodata. Give the "
                    "raster a nodata value, or correct those cells."
                ).format(name, int(count), where)
            )


def report_site_reading(feedback, sampled: SampledPoints, skipped: list[tuple[object, str]], site: str) -> None:
    """What reading the sites of `sampled` left out: ±infinite covariate values (treated as nodata), band by
    band, and every skipped site, those off the rasters (`sampled.points.skipped`) and then `skipped`. `site`
    names one site in the messages ("site", "source site")."""
    report_infinite(feedback, sampled.band_names, sampled.sample.infinite.sum(axis=0), tr("{}s").format(site))
    report_skipped(feedback, sampled.points.skipped + skipped, site)


def progress_callback(feedback, start: float = 0.0, span: float = 100.0):
    """Engine progress (fraction, message) -> the feedback's bar and text; False when the user cancels."""
    last = {"message": None}

    def report(fraction: float, message: str) -> bool:
        feedback.setProgress(start + span * fraction)
        if message != last["message"]:
            feedback.setProgressText(message)
            last["message"] = message
        return not feedback.isCanceled()

    return report


class CheckedSink:
    """A feature sink whose writes are checked. QGIS only logs a feature it could not write (a full disk, a
    read-only folder) and a GeoPackage commit that fails as the sink closes, so without these checks a run would
    succeed and list an output that is missing, empty or short."""

    def __init__(self, sink, dest_id: str, label: str, context) -> None:
        self.sink = sink
        self.dest_id = dest_id
        self.label = label
        self.context = context
        self.written = 0

    def add(self, feature: QgsFeature) -> None:
        if not self.sink.addFeature(feature, QgsFeatureSink.FastInsert):
            self._fail(self.sink.lastError())
        self.written += 1

    def close(self) -> str:
        """Closes the sink (the last reference to it goes, so QGIS commits the file), then checks that the
        output opens and holds every feature; returns its id for the algorithm's results."""
        if not self.sink.flushBuffer():
            self._fail(self.sink.lastError())
        self.sink = None
        layer = QgsProcessingUtils.mapLayerFromString(self.dest_id, self.context, False)
        if layer is None:  # a file: opened here and released at once
            layer = QgsVectorLayer(self.dest_id, "written", "ogr")
        if not layer.isValid():
            self._fail(tr("it cannot be opened after writing"))
        if layer.featureCount() != self.written:
            self._fail(tr("it holds {} of the {} features written").format(layer.featureCount(), self.written))
        return self.dest_id

    def _fail(self, problem: str) -> None:
        self.sink = None  # closes the file now, not when the failed run is garbage-collected
        raise QgsProcessingException(
            tr(
                "The output '{}' could not be written to '{}' ({}): the disk may be full, or the folder not "
                "writable. Free some space or choose another destination."
            ).format(self.label, self.dest_id, problem)
        )


def open_sink(
    algorithm, parameters, name: str, context, fields: QgsFields, geometry_type=QgsWkbTypes.NoGeometry, crs=None
) -> CheckedSink | None:
    """The checked sink for the output parameter `name`; None when an optional output is not wanted. A file it
    replaces is kept until the run ends, and put back if the run fails (QGIS deletes it as the sink is made)."""
    definition = algorithm.parameterDefinition(name)
    if not is_temporary_output(parameters.get(name) or definition.defaultValue(), context):
        destination = file_of(algorithm.parameterAsOutputLayer(parameters, name, context))
        if destination:
            algorithm.earlier_files.keep(destination)
    arguments = (parameters, name, context, fields, geometry_type) + (() if crs is None else (crs,))
    sink, dest_id = algorithm.parameterAsSink(*arguments)
    if sink is None:
        return None
    return CheckedSink(sink, dest_id, definition.description(), context)
