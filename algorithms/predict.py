"""socdepth:predict — depth-wise SOC rasters (and prediction intervals) from a model file."""

from __future__ import annotations

from functools import partial

from qgis.core import (
    QgsCoordinateReferenceSystem,
    QgsCoordinateTransform,
    QgsProcessing,
    QgsProcessingException,
    QgsProcessingParameterBoolean,
    QgsProcessingParameterEnum,
    QgsProcessingParameterExtent,
    QgsProcessingParameterFeatureSource,
    QgsProcessingParameterFile,
    QgsProcessingParameterFolderDestination,
    QgsProcessingParameterNumber,
    QgsProcessingParameterRasterDestination,
    QgsProcessingParameterString,
    QgsProcessingUtils,
)

from .base import CovariateAlgorithm
from .layers import open_stack, progress_callback, report_infinite
from .styling import MapStyler, RunGroup, dissimilarity_renderer, raster_details, shared_value_range


class PredictAlgorithm(CovariateAlgorithm):
    MODEL = "MODEL"
    DEPTHS = "DEPTHS"
    EXTENT = "EXTENT"
    MASK = "MASK"
    MEMORY_MB = "MEMORY_MB"
    UNCERTAINTY = "UNCERTAINTY"
    INTERVAL = "INTERVAL"
    OUTPUT = "OUTPUT"
    OUTPUT_UNCERTAINTY = "OUTPUT_UNCERTAINTY"
    OUTPUT_FOLDER = "OUTPUT_FOLDER"
    MASK_OUTSIDE_AOA = "MASK_OUTSIDE_AOA"
    OUTPUT_AOA = "OUTPUT_AOA"
    OUTPUT_LPD = "OUTPUT_LPD"

    NAME = "predict"
    DISPLAY_NAME = "Predict SOC maps"
    SHORT_DESCRIPTION = "SOC maps at each depth from a trained model and the covariates, with prediction intervals."
    TAGS = (
        "map", "prediction", "raster", "uncertainty", "prediction interval", "random forest", "CNN",
        "area of applicability", "AOA", "dissimilarity index", "extrapolation",
    )  # fmt: skip
    GROUP = "map"
    ICON = "predict.svg"
    HELP_ANCHOR = "predict-soc-maps"
    REQUIRES = ("numpy", "scipy", "sklearn", "rasterio")
    HELP = (
        "Maps the property a model file was trained for (e.g. SOC) at each of its depth intervals, block by block "
        "within a memory budget, optionally with a prediction interval.<br><br>"
        "<b>Covariates</b>: the same rasters, in the same order, as in training (the tool checks names, band "
        "count, CRS and pixel size and says what differs).<br>"
        "<b>Output</b>: one GeoTIFF with a band per depth ('SOC 0-5 cm', …); nodata where any covariate is nodata "
        "or outside the mask. CNN pixels whose patch reaches past the raster edge or onto nodata cells take the "
        "training mean of those cells, as in training. When every training value is at least 0 (SOC), values "
        "below 0 are set to 0 and counted in the log.<br>"
        "<b>Uncertainty</b>: random forest — quantiles of a quantile regression forest; CNNs — the spread of the "
        "cross-validation fold models, calibrated on their out-of-fold errors (normalised conformal prediction). "
        "Written as lower, upper and width per depth.<br>"
        "<b>One map per depth</b>: optionally one GeoTIFF per depth, added to the project in depth order in a "
        "group of the run named after the folder and interval level (inside 'SOC depth maps'), all with one colour "
        "ramp and one value range, legends in g/kg; the multi-band maps go hidden below them, showing the first "
        "depth in the same colours (without the folder they are the run's map, shown).<br>"
        "<b>Area of applicability</b> (Meyer & Pebesma 2021, as R's CAST): where the covariates resemble the "
        "training sites enough for the cross-validated accuracy to hold. The dissimilarity index (DI) is a pixel's "
        "distance to the nearest training site in the covariates, scaled and weighted by each band's importance "
        "to the model, divided by the mean distance between training sites; the pixel is inside the AOA when its "
        "DI is at most the threshold learnt in cross-validation (the upper whisker of the training sites' DI to "
        "the nearest site of another fold). CNNs: the DI uses the site's (centre) cell, the conditions at the "
        "site. Needs a model trained with validation. The log reports the share of pixels inside."
    )

    def initAlgorithm(self, config=None):  # noqa: N802
        self.add_parameter(
            # a file filter, not `extension=`: that would refuse a model file saved under another name
            QgsProcessingParameterFile(
                self.MODEL, self.tr("Model file"), fileFilter=self.tr("SOC model (*.socmodel);;All files (*)")
            ),
            "A model file written by 'Train SOC model', under any name: it is recognised by its content.",
        )
        self.add_covariates(
            "The rasters the model was trained with, in the same order (they may cover another extent on the same "
            "pixel size and CRS)."
        )
        self.add_parameter(
            QgsProcessingParameterString(self.DEPTHS, self.tr("Depth intervals (empty = all)"), "", optional=True),
            "Comma-separated intervals to map, written top-bottom in cm, e.g. '0-5, 5-15'. Empty maps every "
            "interval of the model.",
        )
        self.add_parameter(
            QgsProcessingParameterExtent(self.EXTENT, self.tr("Extent"), optional=True),
            "Map only this extent (snapped outwards to the covariate grid). Empty maps the covariates' extent.",
        )
        self.add_parameter(
            QgsProcessingParameterFeatureSource(
                self.MASK, self.tr("Mask polygons"), [QgsProcessing.TypeVectorPolygon], optional=True
            ),
            "Only pixels inside these polygons are mapped; the rest is nodata.",
        )
        self.add_parameter(
            QgsProcessingParameterEnum(
                self.UNCERTAINTY,
                self.tr("Uncertainty"),
                options=[self.tr("None"), self.tr("Prediction interval")],
                defaultValue=0,
            ),
            "Prediction interval writes the lower and upper limit and the width of a central interval per depth.",
        )
        self.add_parameter(
            QgsProcessingParameterNumber(
                self.INTERVAL,
                self.tr("Interval probability (%)"),
                QgsProcessingParameterNumber.Double,
                90,
                minValue=50,
                maxValue=99.9,
            ),
            "Probability that the true value lies between lower and upper limit, e.g. 90 for the 5 % and 95 % limits.",
        )
        self.add_parameter(
            QgsProcessingParameterBoolean(
                self.MASK_OUTSIDE_AOA, self.tr("Mask maps outside the area of applicability"), False
            ),
            "Set the maps (and prediction intervals) to nodata where the covariates are too unlike the training "
            "sites (DI above the threshold). Needs a model trained with validation.",
        )
        self.add_parameter(
            QgsProcessingParameterNumber(
                self.MEMORY_MB,
                self.tr("Memory budget (MB)"),
                QgsProcessingParameterNumber.Integer,
                1024,
                minValue=64,
            ),
            "Working memory for prediction; larger rasters are processed block by block within it.",
            advanced=True,
        )
        self.add_cluster(
            "Predict the blocks as tasks on a Dask cluster, with bit-identical maps. The model file, the covariates "
            "and the output folder must be reachable by every worker under the same paths."
        )
        self.add_resample("Warp the other covariates onto the first raster's grid (nearest neighbour), as in training.")
        self.add_parameter(
            QgsProcessingParameterRasterDestination(self.OUTPUT, self.tr("SOC maps (one band per depth)")),
            "A float32 GeoTIFF with one band per depth interval, tiled, compressed, with overviews.",
        )
        self.add_parameter(
            QgsProcessingParameterRasterDestination(
                self.OUTPUT_UNCERTAINTY, self.tr("Prediction intervals"), optional=True, createByDefault=False
            ),
            "With uncertainty: lower limit, upper limit and width for each depth, as one multi-band GeoTIFF.",
        )
        self.add_parameter(
            QgsProcessingParameterFolderDestination(
                self.OUTPUT_FOLDER, self.tr("Folder for one map per depth"), optional=True, createByDefault=False
            ),
            "Optional: one single-band GeoTIFF per depth, added to the project as 'ORCDRC 0–5 cm', … (property and "
            "depth) in depth order, "
            "in a group of the run named after the folder and the interval level (e.g. 'maps · 90 % interval', "
            "inside 'SOC depth maps'), styled with one colour ramp and one value range; the multi-band maps "
            "are added hidden below them.",
        )
        self.add_parameter(
            QgsProcessingParameterRasterDestination(
                self.OUTPUT_AOA, self.tr("Area of applicability (DI, inside)"), optional=True, createByDefault=False
            ),
            "Optional two-band GeoTIFF on the maps' grid: band 1 the dissimilarity index (0 at a training site's "
            "covariates; 1 is the mean distance between training sites), band 2 1 inside the area of "
            "applicability (DI at most the threshold, which the file's AOA_THRESHOLD tag holds) and 0 outside. "
            "Needs a model trained with validation.",
        )
        self.add_parameter(
            QgsProcessingParameterRasterDestination(
                self.OUTPUT_LPD, self.tr("Local point density"), optional=True, createByDefault=False
            ),
            "Optional GeoTIFF: for each pixel, how many training sites are closer than the AOA threshold in the "
            "weighted covariates (CAST's LPD); 0 means outside the area of applicability, more means better "
            "supported. Needs a model trained with validation.",
            advanced=True,
        )

    def process(self, parameters, context, feedback):
        from ..core.bundle import SocModel
        from ..core.cluster import ClusterRun
        from ..core.depths import map_file_name, select_intervals
        from ..core.modelfile import ModelFileError
        from ..core.models.base import Cancelled
        from ..core.predict import predict_rasters

        self.check_destinations(parameters, context)
        model_path = self.parameterAsFile(parameters, self.MODEL, context)
        try:
            bundle = SocModel.load(model_path)
        except (ModelFileError, OSError) as error:
            raise QgsProcessingException(str(error)) from error
        from ..core.dependencies import install_hint, missing_modules
        from ..core.registry import entry

        missing = missing_modules(entry(bundle.kind).requires)
        if missing:
            raise QgsProcessingException(install_hint(missing))
        try:
            depth_indices = select_intervals(self.parameterAsString(parameters, self.DEPTHS, context), bundle.intervals)
        except ValueError as error:
            raise QgsProcessingException(str(error)) from error
        with_uncertainty = self.parameterAsEnum(parameters, self.UNCERTAINTY, context) == 1
        level = self.parameterAsDouble(parameters, self.INTERVAL, context) / 100.0
        if with_uncertainty:
            ok, reason = bundle.supports_intervals()
            if not ok:
                raise QgsProcessingException(
                    reason
                    + self.tr(
                        " Retrain it with Validation 'Random k-fold' or 'Spatial block k-fold', or predict with "
                        "Uncertainty 'None'."
                    )
                )
        output = self.parameterAsOutputLayer(parameters, self.OUTPUT, context)
        uncertainty_path = self.parameterAsOutputLayer(parameters, self.OUTPUT_UNCERTAINTY, context) or None
        if uncertainty_path and not with_uncertainty:
            feedback.pushWarning(self.tr("Prediction intervals were not asked for (Uncertainty = None): no file."))
            uncertainty_path = None
        if with_uncertainty and not uncertainty_path:
            uncertainty_path = QgsProcessingUtils.generateTempFilename("prediction_intervals.tif")
        folder = self.parameterAsString(parameters, self.OUTPUT_FOLDER, context) or None
        aoa = self._aoa_request(bundle, parameters, context)
        spec = self.cluster_spec(parameters, context)

        with open_stack(*self.covariates(parameters, context)) as stack:
            self.check_covariates(bundle.card, stack, feedback)
            extent = None
            if parameters.get(self.EXTENT):
                crs = QgsCoordinateReferenceSystem.fromWkt(stack.crs_wkt)
                rectangle = self.parameterAsExtent(parameters, self.EXTENT, context, crs)
                extent = (rectangle.xMinimum(), rectangle.yMinimum(), rectangle.xMaximum(), rectangle.yMaximum())
            masks = self._mask_geometries(parameters, context, stack.crs_wkt)
            labels = bundle.interval_labels()
            name = bundle.property_name
            band_labels = [f"{name} {labels[d]}" for d in depth_indices]
            file_names = [map_file_name(name, *bundle.intervals[d]) for d in depth_indices]
            feedback.setProgressText(self.tr("Predicting {} depth(s)").format(len(depth_indices)))
            try:
                result = predict_rasters(
                    bundle,
                    stack,
                    output,
                    depth_indices,
                    band_labels,
                    extent=extent,
                    mask_geometries=masks,
                    memory_mb=self.parameterAsInt(parameters, self.MEMORY_MB, context),
                    interval=level if with_uncertainty else None,
                    uncertainty_path=uncertainty_path,
                    depth_folder=folder,
                    depth_file_names=file_names if folder else None,
                    training_ranges=bundle.training_ranges,
                    aoa=aoa,
                    progress=progress_callback(feedback),
                    cluster=None if spec is None else ClusterRun(spec, model_path),
                )
            except Cancelled as cancelled:
                # stop as a failed run: QGIS must not load outputs that were never written
                raise QgsProcessingException(self.tr("Prediction cancelled; no output was written.")) from cancelled
            except (ValueError, OSError) as error:  # OSError: an output that could not be written
                raise QgsProcessingException(str(error)) from error
            finally:  # also when nothing could be predicted: the infinite values may be why
                report_infinite(feedback, stack.band_names, stack.infinite_cells, self.tr("cells of the map"))

        feedback.pushInfo(
            self.tr("Predicted {:,} of {:,} cells ({:,} nodata or masked).").format(
                result.n_predicted, result.n_pixels, result.n_nodata
            )
        )
        if result.n_nodata:
            feedback.pushInfo(
                self.tr(
                    "Not predicted: {:,} cells outside the mask, {:,} with nodata in a covariate, {:,} without a value "
                    "from the model."
                ).format(result.n_masked, result.n_covariate_nodata, result.n_model_nodata)
            )
        if result.n_out_of_range:
            share = 100.0 * result.n_out_of_range / max(result.n_predicted, 1)
            feedback.pushWarning(
                self.tr(
                    "{:,} predicted cells ({:.1f} %) have covariate values outside the range seen in training: "
                    "the model extrapolates there, so treat those predictions with care."
                ).format(result.n_out_of_range, share)
            )
        if aoa is not None:
            self._report_aoa(feedback, result, aoa)
        if result.n_floored:
            feedback.pushWarning(
                self.tr(
                    "{0:,} cells were predicted below {1:g} (the model's output is unbounded) and set to {1:g}: "
                    "every training value of {2} is at least {1:g}."
                ).format(result.n_floored, bundle.prediction_floor, name)
            )
        outputs = {self.OUTPUT: result.output}
        if result.uncertainty:
            outputs[self.OUTPUT_UNCERTAINTY] = result.uncertainty
        if result.aoa:
            outputs[self.OUTPUT_AOA] = result.aoa
        if result.lpd:
            outputs[self.OUTPUT_LPD] = result.lpd
        if folder:
            outputs[self.OUTPUT_FOLDER] = folder
        # the run's group is named after what the user chose: the folder, else the map file, else the model file
        named_after = folder or (model_path if output.startswith(QgsProcessingUtils.tempFolder()) else output)
        title = RunGroup.title_of(named_after, level if with_uncertainty else None)
        threshold = aoa.dissimilarity.threshold if aoa is not None else None
        self._load_results(context, result, folder, band_labels, title, threshold)
        return outputs

    def _aoa_request(self, bundle, parameters, context):
        """The area of applicability asked for (a file, the LPD or the mask), or None; refused before any work
        for a model file that lacks it."""
        from ..core.predict import AoaRequest

        path = self.parameterAsOutputLayer(parameters, self.OUTPUT_AOA, context) or None
        lpd_path = self.parameterAsOutputLayer(parameters, self.OUTPUT_LPD, context) or None
        mask_maps = self.parameterAsBoolean(parameters, self.MASK_OUTSIDE_AOA, context)
        if not (path or lpd_path or mask_maps):
            return None
        try:
            dissimilarity = bundle.dissimilarity_index()
        except ValueError as error:
            raise QgsProcessingException(
                self.tr("{} Leave 'Area of applicability' and 'Local point density' empty and 'Mask maps outside "
                        "the area of applicability' unticked.").format(error)
            ) from error  # fmt: skip
        return AoaRequest(dissimilarity, path, lpd_path, mask_maps)

    def _report_aoa(self, feedback, result, aoa) -> None:
        share = 100.0 * result.n_inside_aoa / max(result.n_aoa_cells, 1)
        feedback.pushInfo(
            self.tr(
                "Area of applicability: {} of {} predicted pixels ({:.1f} %) are inside (DI at most {:.4g})."
            ).format(result.n_inside_aoa, result.n_aoa_cells, share, aoa.dissimilarity.threshold)
        )
        outside = result.n_aoa_cells - result.n_inside_aoa
        if outside:
            feedback.pushWarning(
                self.tr(
                    "{} predicted pixels ({:.1f} %) lie outside the area of applicability: their covariates are "
                    "unlike the training sites', so the validation metrics do not hold there{}."
                ).format(outside, 100.0 - share, self.tr(" (set to nodata in the maps)") if aoa.mask_maps else "")
            )

    def _mask_geometries(self, parameters, context, crs_wkt: str):
        import json

        source = self.parameterAsSource(parameters, self.MASK, context)
        if source is None:
            return None
        transform = QgsCoordinateTransform(
            source.sourceCrs(), QgsCoordinateReferenceSystem.fromWkt(crs_wkt), context.transformContext()
        )
        geometries = []
        for feature in source.getFeatures():
            geometry = feature.geometry()
            if geometry.isEmpty():
                continue
            geometry.transform(transform)
            geometries.append(json.loads(geometry.asJson()))
        if not geometries:
            raise QgsProcessingException(self.tr("The mask layer has no polygons; give one with polygons or none."))
        return geometries

    def _load_results(
        self, context, result, folder: str | None, labels: list[str], title: str, aoa_threshold: float | None
    ) -> None:
        """Styles the maps QGIS loads on completion alike and places them in a group of this run (on the main
        thread, after the run): the per-depth maps in depth order, then the multi-band files, hidden where
        per-depth maps show the same, then the area of applicability, coloured around its threshold."""
        files = list(result.depth_files) if folder else []
        multi_band = [result.output] + ([result.uncertainty] if result.uncertainty else [])
        opened = {path for path in multi_band if context.willLoadLayerOnCompletion(path)}  # the user asked so
        aoa = result.aoa if result.aoa and context.willLoadLayerOnCompletion(result.aoa) else None
        if not files and not opened and aoa is None:
            return
        value_range = shared_value_range(files or [result.output])
        run_group = RunGroup(title)
        for position, (path, label) in enumerate(zip(files, labels)):
            details = raster_details(context, label.replace("-", "–"), label)
            details.forceName = True  # 'SOC 0–5 cm', also where QGIS is set to name layers after their file
            details.setPostProcessor(MapStyler(value_range, run_group, position))
            context.addLayerToLoadOnCompletion(path, details)
        for position, path in enumerate(multi_band, start=len(files)):
            if path in opened:
                details = context.layerToLoadOnCompletionDetails(path)
                details.layerTypeHint = QgsProcessingUtils.LayerHint.Raster
                visible = not files and path == result.output  # the only map of the run
                details.setPostProcessor(MapStyler(value_range, run_group, position, visible))
        if aoa is not None:
            details = context.layerToLoadOnCompletionDetails(aoa)
            details.layerTypeHint = QgsProcessingUtils.LayerHint.Raster
            position = len(files) + len(multi_band)
            colours = partial(dissimilarity_renderer, threshold=aoa_threshold)
            details.setPostProcessor(MapStyler(value_range, run_group, position, visible=False, renderer=colours))
