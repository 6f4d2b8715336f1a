"""socdepth:sample — covariate values (or patch means) at points."""

from __future__ import annotations

import warnings

from qgis.core import (
    QgsFeature,
    QgsField,
    QgsFields,
    QgsProcessing,
    QgsProcessingException,
    QgsProcessingParameterFeatureSink,
    QgsProcessingParameterFeatureSource,
    QgsProcessingParameterNumber,
)
from qgis.PyQt.QtCore import QVariant

from .base import CovariateAlgorithm
from .layers import open_sink, report_infinite, report_skipped, sample_points


class SampleAlgorithm(CovariateAlgorithm):
    INPUT = "INPUT"
    PATCH_SIZE = "PATCH_SIZE"
    OUTPUT = "OUTPUT"
    REJECTED = "REJECTED"

    NAME = "sample"
    DISPLAY_NAME = "Sample covariates at points"
    SHORT_DESCRIPTION = "Adds the covariate rasters' values (or patch means) at each point as fields."
    TAGS = ("covariate", "raster", "extract", "sample", "point values")
    GROUP = "prepare"
    ICON = "sample.svg"
    HELP_ANCHOR = "sample-covariates-at-points"
    REQUIRES = ("numpy", "rasterio")
    HELP = (
        "Adds the value of every covariate raster band at each point, or the mean over a square patch of cells "
        "centred on the point. This is the sampling that 'Train SOC model' uses; run it on its own to inspect or "
        "export the regression matrix.<br><br>"
        "<b>Covariates</b>: one or more rasters on one grid (same CRS, pixel size and extent); multi-band rasters "
        "add one field per band, named LAYER_BANDDESCRIPTION (or LAYER_BANDNUMBER). Points are transformed to "
        "the rasters' CRS.<br>"
        "<b>Skipped</b>: points outside the rasters or on a nodata cell; each is listed in the optional "
        "'Skipped points' table with its reason."
    )

    def initAlgorithm(self, config=None):  # noqa: N802
        self.add_parameter(
            QgsProcessingParameterFeatureSource(self.INPUT, self.tr("Points"), [QgsProcessing.TypeVectorPoint]),
            "Sites to sample, e.g. the output of 'Harmonise horizons to standard depths'.",
        )
        self.add_covariates(
            "Raster covariates (terrain, climate, vegetation, parent material...). All bands of every raster are "
            "sampled, in the order given."
        )
        self.add_parameter(
            QgsProcessingParameterNumber(
                self.PATCH_SIZE, self.tr("Patch size (cells)"), QgsProcessingParameterNumber.Integer, 1, minValue=1
            ),
            "1 samples the cell under each point. An odd size such as 3 or 5 returns the mean over that many "
            "cells on a side, centred on the point (nodata cells are left out of the mean).",
        )
        self.add_resample(
            "Rasters normally must share one grid. Tick this to warp the others onto the first raster's grid "
            "(nearest neighbour, which keeps class codes valid)."
        )
        self.add_parameter(
            QgsProcessingParameterFeatureSink(self.OUTPUT, self.tr("Sampled points"), QgsProcessing.TypeVectorPoint),
            "The input points that could be sampled, with all their fields plus one field per covariate band.",
        )
        self.add_parameter(
            QgsProcessingParameterFeatureSink(
                self.REJECTED,
                self.tr("Skipped points"),
                QgsProcessing.TypeVector,
                optional=True,
                createByDefault=False,
            ),
            "Optional table of the points that were skipped: feature id and reason.",
        )

    def process(self, parameters, context, feedback):
        import numpy as np

        from ..core.sites import sampling_skips

        self.check_destinations(parameters, context)
        source = self.parameterAsSource(parameters, self.INPUT, context)
        if source is None:
            raise QgsProcessingException(self.invalidSourceError(parameters, self.INPUT))
        patch_size = self.parameterAsInt(parameters, self.PATCH_SIZE, context)
        if patch_size % 2 == 0:
            raise QgsProcessingException(
                self.tr("Patch size {} must be odd (1, 3, 5, ...) so that the point is the centre cell.").format(
                    patch_size
                )
            )
        sampled = sample_points(
            source,
            *self.covariates(parameters, context),
            patch_size,
            context,
            feedback,
            self.tr("Reading points"),
            progress_span=20,
        )
        if sampled is None:
            return {}
        points, sample = sampled.points, sampled.sample
        feedback.setProgress(70)

        # Every check that can fail comes before the sinks, so a failed run leaves no empty output behind.
        usable = sample.status == 0
        report_infinite(feedback, sampled.band_names, sample.infinite.sum(axis=0), self.tr("points"))
        skipped = list(points.skipped) + sampling_skips(points.feature_ids, sample)
        if not usable.any():
            raise QgsProcessingException(
                self.tr(
                    "None of the {} points could be sampled ({}). Check that the points lie on the rasters and "
                    "that both have the right CRS."
                ).format(source.featureCount(), skipped[0][1] if skipped else self.tr("no points"))
            )
        with warnings.catch_warnings():  # skipped points have all-NaN patches: 'mean of empty slice'
            warnings.simplefilter("ignore", RuntimeWarning)
            values = np.nanmean(sample.patches.reshape(*sample.patches.shape[:2], -1), axis=2)

        fields = QgsFields(source.fields())
        existing = {name.lower() for name in fields.names()}
        for name in sampled.band_names:
            field_name = name
            while field_name.lower() in existing:
                field_name += "_cov"
            existing.add(field_name.lower())
            fields.append(QgsField(field_name, QVariant.Double))
        sink = open_sink(self, parameters, self.OUTPUT, context, fields, source.wkbType(), source.sourceCrs())
        if sink is None:
            raise QgsProcessingException(self.invalidSinkError(parameters, self.OUTPUT))
        rejected_fields = QgsFields()
        rejected_fields.append(QgsField("feature_id", QVariant.LongLong))
        rejected_fields.append(QgsField("reason", QVariant.String))
        rejected_sink = open_sink(self, parameters, self.REJECTED, context, rejected_fields)

        for i in np.flatnonzero(usable):
            if feedback.isCanceled():
                return {}
            feature = QgsFeature(fields)
            feature.setGeometry(points.geometries[i])
            feature.setAttributes([*points.attributes[i], *(float(v) for v in values[i])])
            sink.add(feature)
        outputs = {self.OUTPUT: sink.close()}
        report_skipped(feedback, skipped, self.tr("point"))
        if rejected_sink is not None:
            for fid, reason in skipped:
                feature = QgsFeature(rejected_fields)
                feature.setAttributes([fid, reason])
                rejected_sink.add(feature)
            outputs[self.REJECTED] = rejected_sink.close()
        feedback.pushInfo(
            self.tr("Sampled {:,} of {:,} points ({:,} skipped).").format(
                int(usable.sum()), len(points.x), len(skipped)
            )
        )
        return outputs
