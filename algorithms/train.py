"""socdepth:train — fit an SOC model on harmonised points and covariate rasters, with honest validation."""

from __future__ import annotations

import os

from qgis.core import (
    QgsFeature,
    QgsField,
    QgsFields,
    QgsProcessing,
    QgsProcessingException,
    QgsProcessingParameterBoolean,
    QgsProcessingParameterEnum,
    QgsProcessingParameterFeatureSink,
    QgsProcessingParameterFeatureSource,
    QgsProcessingParameterField,
    QgsProcessingParameterFileDestination,
    QgsProcessingParameterMultipleLayers,
    QgsProcessingParameterNumber,
    QgsProcessingParameterString,
    QgsWkbTypes,
)
from qgis.PyQt.QtCore import QVariant

from .base import SocAlgorithm
from .layers import open_sink, open_stack, progress_callback, read_points, report_infinite, report_skipped
from .values import to_float

MODEL_KINDS = ("random_forest", "cnn", "transfer_cnn", "multitask_cnn")
VALIDATIONS = ("none", "random", "spatial")
TRANSFORMS = ("none", "log")
METRIC_FIELDS = ("n", "r", "r2", "rmse", "mae", "me", "ccc", "kge")
#: convolution layers of the CNNs' default architecture: the transfer CNN freezes them while fine-tuning
CONV_BLOCK_LAYERS = 2


class TrainAlgorithm(SocAlgorithm):
    INPUT = "INPUT"
    TARGET_FIELDS = "TARGET_FIELDS"
    COVARIATES = "COVARIATES"
    CATEGORICAL = "CATEGORICAL"
    RESAMPLE = "RESAMPLE"
    MODEL = "MODEL"
    PATCH_SIZE = "PATCH_SIZE"
    EPOCHS = "EPOCHS"
    BATCH_SIZE = "BATCH_SIZE"
    LEARNING_RATE = "LEARNING_RATE"
    PATIENCE = "PATIENCE"
    FREEZE_LAYERS = "FREEZE_LAYERS"
    N_TREES = "N_TREES"
    MAX_FEATURES = "MAX_FEATURES"
    MIN_SAMPLES_LEAF = "MIN_SAMPLES_LEAF"
    PER_DEPTH = "PER_DEPTH"
    TUNE = "TUNE"
    VALIDATION = "VALIDATION"
    FOLDS = "FOLDS"
    BLOCK_SIZE = "BLOCK_SIZE"
    TRANSFORM = "TRANSFORM"
    GROUP_FIELD = "GROUP_FIELD"
    SEED = "SEED"
    OUTPUT_MODEL = "OUTPUT_MODEL"
    OUTPUT_METRICS = "OUTPUT_METRICS"
    OUTPUT_PREDICTIONS = "OUTPUT_PREDICTIONS"
    OUTPUT_REPORT = "OUTPUT_REPORT"

    NAME = "train"
    DISPLAY_NAME = "Train SOC model"
    GROUP = "model"
    ICON = "train.svg"
    HELP_ANCHOR = "train-soc-model"
    REQUIRES = ("numpy", "scipy", "sklearn", "rasterio")
    HELP = (
        "Trains a model of soil organic carbon (or any harmonised property) at several depth intervals from "
        "points and covariate rasters, validates it by cross-validation over whole sites, and writes a model "
        "file for 'Predict SOC maps'.<br><br>"
        "<b>Models</b>: <i>Random forest</i> (one forest over all depths with the interval's top and bottom as "
        "predictors, or one forest per depth); <i>CNN</i> on square covariate patches centred on each site, all "
        "depths pooled with depth as an input; <i>Transfer CNN</i> (Han et al. 2025, Frontiers in Environmental "
        "Science 13:1580085): pre-trained on all depths, then one copy per depth fine-tuned with the early "
        "convolution layers frozen; <i>Multi-task CNN</i>: a shared trunk with one output head per depth.<br>"
        "<b>Targets</b>: fields named PROPERTY_TOP_BOTTOM (e.g. ORCDRC_0_5), as written by 'Harmonise horizons "
        "to standard depths'. A site may miss some depths.<br>"
        "<b>Validation</b>: random or spatial-block k-fold; folds hold whole sites, so a site's depths are never "
        "on both sides. Metrics per depth and overall: n, R, R² (1 − SSE/SST), RMSE, MAE, ME (mean of predicted "
        "− observed), Lin's CCC, KGE. The final model is then fitted on all sites.<br>"
        "<b>Outputs</b>: the model file (no executable code inside), a metrics table, optional out-of-fold "
        "predictions per site and depth, and an optional HTML report."
    )

    def initAlgorithm(self, config=None):  # noqa: N802
        self.add_parameter(
            QgsProcessingParameterFeatureSource(
                self.INPUT, self.tr("Harmonised points"), [QgsProcessing.TypeVectorPoint]
            ),
            "One point per site with one field per depth interval, e.g. the output of 'Harmonise horizons to "
            "standard depths'.",
        )
        self.add_parameter(
            QgsProcessingParameterField(
                self.TARGET_FIELDS,
                self.tr("Target fields (one per depth interval)"),
                parentLayerParameterName=self.INPUT,
                allowMultiple=True,
            ),
            "Fields named PROPERTY_TOP_BOTTOM with depths in cm, e.g. ORCDRC_0_5 … ORCDRC_100_200; all of one "
            "property. Empty (NULL) values mean the site lacks that depth.",
        )
        self.add_parameter(
            QgsProcessingParameterMultipleLayers(
                self.COVARIATES, self.tr("Covariate rasters"), QgsProcessing.TypeRaster
            ),
            "Rasters on one grid (same CRS, pixel size, extent); every band is a covariate. Prediction later "
            "needs the same rasters in the same order.",
        )
        self.add_parameter(
            QgsProcessingParameterString(self.CATEGORICAL, self.tr("Categorical bands"), "", optional=True),
            "Comma-separated names of bands (LAYER_BAND, as listed in the log) or of whole layers that hold "
            "class codes, such as geology or land use. The CNNs one-hot encode them; the random forest uses "
            "the codes as they are.",
        )
        self.add_parameter(
            QgsProcessingParameterEnum(
                self.MODEL,
                self.tr("Model"),
                options=[
                    self.tr("Random forest"),
                    self.tr("CNN (depth as input)"),
                    self.tr("Transfer CNN (pre-train on all depths, fine-tune per depth)"),
                    self.tr("Multi-task CNN (one head per depth)"),
                ],
                defaultValue=0,
            ),
            "Random forest is fast and robust. The transfer CNN (Han et al. 2025) uses all depths' data to learn "
            "patterns from covariate patches, then specialises per depth; CNNs need PyTorch.",
        )
        self.add_parameter(
            QgsProcessingParameterEnum(
                self.VALIDATION,
                self.tr("Validation"),
                options=[self.tr("None"), self.tr("Random k-fold"), self.tr("Spatial block k-fold")],
                defaultValue=2,
            ),
            "Spatial block k-fold keeps nearby sites out of each other's test folds and gives the honest "
            "accuracy of a map; random k-fold is usually optimistic. Folds always hold whole sites.",
        )
        self.add_parameter(
            QgsProcessingParameterNumber(
                self.FOLDS, self.tr("Folds"), QgsProcessingParameterNumber.Integer, 10, minValue=2, maxValue=100
            ),
            "Number of cross-validation folds.",
        )
        self.add_parameter(
            QgsProcessingParameterNumber(
                self.BLOCK_SIZE,
                self.tr("Spatial block size (map units, 0 = automatic)"),
                QgsProcessingParameterNumber.Double,
                0,
                minValue=0,
            ),
            "Side of the square blocks for spatial folds, in the rasters' map units (e.g. metres). 0 chooses it "
            "from the data so that each fold gets several blocks.",
            advanced=True,
        )
        self.add_parameter(
            QgsProcessingParameterEnum(
                self.TRANSFORM,
                self.tr("Target transform"),
                options=[self.tr("None"), self.tr("Log (fit on log(1 + value))")],
                defaultValue=0,
            ),
            "Log fits the model on log(1 + SOC), which tames SOC's long right tail; predictions, metrics and "
            "maps are back-transformed to the original units.",
            advanced=True,
        )
        self.add_parameter(
            QgsProcessingParameterField(
                self.GROUP_FIELD,
                self.tr("Group field for metrics"),
                parentLayerParameterName=self.INPUT,
                optional=True,
            ),
            "Optional field such as climate zone or land use: metrics are also reported per group.",
            advanced=True,
        )
        self.add_parameter(
            QgsProcessingParameterNumber(self.SEED, self.tr("Random seed"), QgsProcessingParameterNumber.Integer, 42),
            "The same inputs and seed give the same model and metrics (on the CPU).",
            advanced=True,
        )
        self.add_parameter(
            QgsProcessingParameterBoolean(self.RESAMPLE, self.tr("Resample onto the first raster's grid"), False),
            "Rasters normally must share one grid. Tick this to warp the others onto the first raster's grid "
            "(nearest neighbour).",
            advanced=True,
        )
        # CNN settings
        self.add_parameter(
            QgsProcessingParameterNumber(
                self.PATCH_SIZE,
                self.tr("CNN patch size (cells, odd)"),
                QgsProcessingParameterNumber.Integer,
                7,
                minValue=7,
                maxValue=31,
            ),
            "Side of the square covariate patch centred on each site that the CNNs see: odd and at least 7, "
            "because each of the two convolution blocks trims 3 cells.",
            advanced=True,
        )
        self.add_parameter(
            QgsProcessingParameterNumber(
                self.EPOCHS, self.tr("CNN epochs (maximum)"), QgsProcessingParameterNumber.Integer, 0, minValue=0
            ),
            "Upper limit of training passes; early stopping usually ends sooner. 0 uses the model's default.",
            advanced=True,
        )
        self.add_parameter(
            QgsProcessingParameterNumber(
                self.BATCH_SIZE, self.tr("CNN batch size"), QgsProcessingParameterNumber.Integer, 0, minValue=0
            ),
            "Samples per training step. 0 uses the model's default.",
            advanced=True,
        )
        self.add_parameter(
            QgsProcessingParameterNumber(
                self.LEARNING_RATE, self.tr("CNN learning rate"), QgsProcessingParameterNumber.Double, 0, minValue=0
            ),
            "Step size of the Adam optimiser. 0 uses the model's default.",
            advanced=True,
        )
        self.add_parameter(
            QgsProcessingParameterNumber(
                self.PATIENCE,
                self.tr("CNN early-stopping patience (epochs)"),
                QgsProcessingParameterNumber.Integer,
                0,
                minValue=0,
            ),
            "Training stops after this many epochs without improvement on an inner validation split of the "
            "training sites (never the test fold). 0 uses the model's default.",
            advanced=True,
        )
        self.add_parameter(
            QgsProcessingParameterNumber(
                self.FREEZE_LAYERS,
                self.tr("Transfer CNN: frozen layers"),
                QgsProcessingParameterNumber.Integer,
                CONV_BLOCK_LAYERS,
                minValue=0,
            ),
            "How many of the first layers keep their pre-trained weights while each depth's copy is fine-tuned, "
            "counting the convolution layers first, then the fully-connected ones. The default, 2, freezes the "
            "convolution block, as in Han et al. (2025); 0 fine-tunes every layer.",
            advanced=True,
        )
        # Random forest settings
        self.add_parameter(
            QgsProcessingParameterNumber(
                self.N_TREES, self.tr("Random forest: trees"), QgsProcessingParameterNumber.Integer, 500, minValue=10
            ),
            "More trees give more stable predictions and quantiles, at a linear cost in time.",
            advanced=True,
        )
        self.add_parameter(
            QgsProcessingParameterNumber(
                self.MAX_FEATURES,
                self.tr("Random forest: share of predictors per split (0 = default)"),
                QgsProcessingParameterNumber.Double,
                0,
                minValue=0,
                maxValue=1,
            ),
            "Fraction of the predictors tried at each split (scikit-learn's max_features). 0 uses the default.",
            advanced=True,
        )
        self.add_parameter(
            QgsProcessingParameterNumber(
                self.MIN_SAMPLES_LEAF,
                self.tr("Random forest: minimum samples per leaf (0 = default)"),
                QgsProcessingParameterNumber.Integer,
                0,
                minValue=0,
            ),
            "Larger leaves give smoother predictions and wider quantile intervals.",
            advanced=True,
        )
        self.add_parameter(
            QgsProcessingParameterBoolean(self.PER_DEPTH, self.tr("Random forest: one forest per depth"), False),
            "Fit a separate forest for each depth interval instead of one forest with depth as predictors.",
            advanced=True,
        )
        self.add_parameter(
            QgsProcessingParameterBoolean(self.TUNE, self.tr("Random forest: tune by grid search"), False),
            "Search the share of predictors per split and the leaf size by inner cross-validation over sites (slower).",
            advanced=True,
        )
        # outputs
        self.add_parameter(
            QgsProcessingParameterFileDestination(
                self.OUTPUT_MODEL, self.tr("Model file"), self.tr("SOC model (*.socmodel)")
            ),
            "The trained model with everything 'Predict SOC maps' needs. It holds numbers and settings only, "
            "never code, so it is safe to share.",
        )
        self.add_parameter(
            QgsProcessingParameterFeatureSink(
                self.OUTPUT_METRICS, self.tr("Validation metrics"), QgsProcessing.TypeVector, optional=True
            ),
            "Table: model, depth (and 'all'), group, n, R, R², RMSE, MAE, ME, CCC, KGE from cross-validation.",
        )
        self.add_parameter(
            QgsProcessingParameterFeatureSink(
                self.OUTPUT_PREDICTIONS,
                self.tr("Out-of-fold predictions"),
                QgsProcessing.TypeVectorPoint,
                optional=True,
                createByDefault=False,
            ),
            "Optional points: site, depth, observed, predicted (by a model that never saw the site) and fold.",
        )
        self.add_parameter(
            QgsProcessingParameterFileDestination(
                self.OUTPUT_REPORT,
                self.tr("Report"),
                self.tr("HTML files (*.html)"),
                optional=True,
                createByDefault=False,
            ),
            "Optional HTML report: data summary, settings, metrics, observed-vs-predicted plots and learning curves.",
        )

    # -----------------------------------------------------------------------------------------------------------
    def processAlgorithm(self, parameters, context, feedback):  # noqa: N802
        import numpy as np

        from ..core.dependencies import install_hint, missing_modules
        from ..core.depths import parse_interval_field
        from ..core.models.base import Cancelled
        from ..core.training import TrainingData, train

        source = self.parameterAsSource(parameters, self.INPUT, context)
        if source is None:
            raise QgsProcessingException(self.invalidSourceError(parameters, self.INPUT))
        kind = MODEL_KINDS[self.parameterAsEnum(parameters, self.MODEL, context)]
        report_path = self.parameterAsFileOutput(parameters, self.OUTPUT_REPORT, context)
        # Checked before training, which can take hours, not when the model or report is written.
        needed = (["torch"] if kind != "random_forest" else []) + (["matplotlib"] if report_path else [])
        missing = missing_modules(needed)
        if missing:
            message = install_hint(missing)
            if "matplotlib" in missing:
                message += self.tr("\nOr leave 'Report' empty to train without the HTML report.")
            raise QgsProcessingException(message)
        target_fields = self.parameterAsFields(parameters, self.TARGET_FIELDS, context)
        if not target_fields:
            raise QgsProcessingException(self.tr("Choose the target fields, e.g. ORCDRC_0_5 … ORCDRC_100_200."))
        try:
            parsed = [parse_interval_field(name) for name in target_fields]
        except ValueError as error:
            raise QgsProcessingException(str(error)) from error
        properties = sorted({p for p, _, _ in parsed})
        if len(properties) > 1:
            raise QgsProcessingException(
                self.tr("Target fields mix properties ({}); train one property at a time.").format(
                    ", ".join(properties)
                )
            )
        order = sorted(range(len(parsed)), key=lambda i: (parsed[i][1], parsed[i][2]))
        target_fields = [target_fields[i] for i in order]
        intervals = np.array([[parsed[i][1], parsed[i][2]] for i in order])
        group_field = self.parameterAsString(parameters, self.GROUP_FIELD, context) or None
        validation = VALIDATIONS[self.parameterAsEnum(parameters, self.VALIDATION, context)]
        folds = self.parameterAsInt(parameters, self.FOLDS, context)
        block_size = self.parameterAsDouble(parameters, self.BLOCK_SIZE, context) or None
        transform = TRANSFORMS[self.parameterAsEnum(parameters, self.TRANSFORM, context)]
        seed = self.parameterAsInt(parameters, self.SEED, context)
        params = self._model_params(kind, parameters, context)
        patch_size = params.get("patch_size", 1)
        model_path = self.parameterAsFileOutput(parameters, self.OUTPUT_MODEL, context)

        layers = self.parameterAsLayerList(parameters, self.COVARIATES, context)
        with open_stack(layers, self.parameterAsBoolean(parameters, self.RESAMPLE, context)) as stack:
            feedback.pushInfo(self.tr("Covariate bands: {}").format(", ".join(stack.band_names)))
            categorical = self._categorical_bands(
                self.parameterAsString(parameters, self.CATEGORICAL, context), stack.band_names, stack.layer_names
            )
            feedback.setProgressText(self.tr("Reading sites"))
            fields = target_fields + ([group_field] if group_field else [])
            points = read_points(source, context, feedback, stack.crs_wkt, fields=fields, progress_span=2)
            if feedback.isCanceled():
                return {}
            sample = stack.sample(np.array(points.x), np.array(points.y), patch_size)
            grid = {
                "crs_wkt": stack.crs_wkt,
                "transform": list(stack.transform.to_gdal()),
                "res": list(stack.res),
                "nodata": [None if v is None else float(v) for v in stack.nodata],
                "layer_names": stack.layer_names,
            }
            band_names = stack.band_names

        report_infinite(feedback, band_names, sample.infinite.sum(axis=0), self.tr("sites"))
        skipped = list(points.skipped)
        targets = np.full((len(points.feature_ids), len(target_fields)), np.nan)
        unreadable = 0
        for i, attributes in enumerate(points.attributes):
            for j in range(len(target_fields)):
                value, problem, _cause = to_float(attributes[j])
                if problem and problem != "is missing":
                    unreadable += 1
                    feedback.reportError(
                        self.tr("Site {}: {} {} — treated as missing.").format(
                            points.feature_ids[i], target_fields[j], problem
                        )
                    ) if unreadable <= 20 else None
                targets[i, j] = value
        if unreadable:
            feedback.reportError(self.tr("{} target values were not numbers and count as missing.").format(unreadable))
        keep = np.zeros(len(points.feature_ids), dtype=bool)
        for i, fid in enumerate(points.feature_ids):
            if sample.status[i] != 0:
                skipped.append((fid, sample.reasons[i]))
            elif np.all(np.isnan(targets[i])):
                skipped.append((fid, self.tr("no target value at any depth")))
            else:
                keep[i] = True
        report_skipped(feedback, skipped, self.tr("site"))
        if not keep.any():
            raise QgsProcessingException(
                self.tr(
                    "No site can be used for training: {} sites were read and all were skipped (see the log). "
                    "Check that the points lie on the covariate rasters and that the target fields hold numbers."
                ).format(len(points.feature_ids))
            )
        groups = None
        if group_field:
            groups = np.array([str(a[-1]) for a in points.attributes], dtype=object)[keep]
        data = TrainingData(
            site_ids=np.array(points.feature_ids)[keep],
            x=np.array(points.x)[keep],
            y=np.array(points.y)[keep],
            patches=sample.patches[keep],
            targets=targets[keep],
            intervals=intervals,
            property_name=properties[0],
            band_names=band_names,
            categorical=categorical,
            groups=groups,
        )
        counts = np.sum(~np.isnan(data.targets), axis=0)
        feedback.pushInfo(
            self.tr("Training on {} sites; observations per depth: {}").format(
                len(data.site_ids),
                ", ".join(f"{f} {c}" for f, c in zip(target_fields, counts)),
            )
        )
        if validation != "none" and len(data.site_ids) < folds:
            raise QgsProcessingException(
                self.tr("{} folds need at least {} sites, but only {} can be used. Use fewer folds.").format(
                    folds, folds, len(data.site_ids)
                )
            )

        try:
            result = train(
                data,
                kind,
                params,
                validation=validation,
                folds=folds,
                block_size=block_size,
                transform=transform,
                random_state=seed,
                progress=progress_callback(feedback, 2, 93),
            )
        except Cancelled:
            feedback.pushInfo(self.tr("Training cancelled; nothing was written."))
            return {}
        except ValueError as error:
            raise QgsProcessingException(str(error)) from error
        incomplete = getattr(result.model, "n_sites_incomplete_", 0)
        if incomplete:
            feedback.reportError(
                self.tr(
                    "The multi-task CNN trains on sites with all {} depths: {} sites with missing depths were "
                    "left out of training (they still count in validation where observed)."
                ).format(len(target_fields), incomplete)
            )

        return self._write_outputs(
            parameters, context, feedback, data, result, grid, model_path, report_path, points, keep
        )

    def _model_params(self, kind: str, parameters, context) -> dict:
        """Only the settings the user changed from 0 (= the model's default) are passed on."""

        def optional(name, as_int=True):
            value = (self.parameterAsInt if as_int else self.parameterAsDouble)(parameters, name, context)
            return value if value > 0 else None

        if kind == "random_forest":
            params = {
                "n_trees": self.parameterAsInt(parameters, self.N_TREES, context),
                "max_features": optional(self.MAX_FEATURES, as_int=False),
                "min_samples_leaf": optional(self.MIN_SAMPLES_LEAF),
                "per_depth": self.parameterAsBoolean(parameters, self.PER_DEPTH, context),
                "tune": self.parameterAsBoolean(parameters, self.TUNE, context),
            }
        else:
            patch_size = self.parameterAsInt(parameters, self.PATCH_SIZE, context)
            if patch_size % 2 == 0:
                raise QgsProcessingException(
                    self.tr("CNN patch size {} must be odd (7, 9, 11, ...) so the site is the centre cell.").format(
                        patch_size
                    )
                )
            params = {
                "patch_size": patch_size,
                "epochs": optional(self.EPOCHS),
                "batch_size": optional(self.BATCH_SIZE),
                "learning_rate": optional(self.LEARNING_RATE, as_int=False),
                "patience": optional(self.PATIENCE),
            }
            if kind == "transfer_cnn":
                params["freeze_layers"] = self.parameterAsInt(parameters, self.FREEZE_LAYERS, context)
        return {name: value for name, value in params.items() if value is not None}

    def _categorical_bands(self, text: str, band_names: list[str], layer_names: list[str]) -> tuple[int, ...]:
        """Band indices from names of bands or whole layers; an unknown name is an error listing the choices."""
        chosen = []
        for name in (part.strip() for part in text.replace(";", ",").split(",")):
            if not name:
                continue
            if name in band_names:
                chosen.append(band_names.index(name))
            elif name in layer_names:
                chosen += [i for i, band in enumerate(band_names) if band.startswith(f"{name}_")]
            else:
                raise QgsProcessingException(
                    self.tr("Categorical band '{}' is not among the covariate bands: {}.").format(
                        name, ", ".join(band_names)
                    )
                )
        return tuple(sorted(set(chosen)))

    def _write_outputs(self, parameters, context, feedback, data, result, grid, model_path, report_path, points, keep):
        import numpy as np

        from ..core.bundle import SocModel

        feedback.setProgressText(self.tr("Writing the model file"))
        bundle = SocModel.from_training(result, data, grid, extra={"target_fields": None})
        os.makedirs(os.path.dirname(os.path.abspath(model_path)), exist_ok=True)
        bundle.save(model_path)
        outputs = {self.OUTPUT_MODEL: model_path}
        cv = result.validation
        if cv is None:
            feedback.pushInfo(self.tr("No validation was asked for: no metrics."))
        else:
            for row in cv.metrics:
                if row["group"] == "all":
                    feedback.pushInfo(
                        self.tr("{depth}: n {n}, RMSE {rmse:.3f}, R² {r2:.3f}, CCC {ccc:.3f}").format(**row)
                    )

        fields = QgsFields()
        for name in ("model", "depth", "group"):
            fields.append(QgsField(name, QVariant.String))
        for name in METRIC_FIELDS:
            fields.append(QgsField(name, QVariant.Int if name == "n" else QVariant.Double))
        sink = open_sink(self, parameters, self.OUTPUT_METRICS, context, fields)
        if sink is not None:
            for row in [] if cv is None else cv.metrics:
                feature = QgsFeature(fields)
                feature.setAttributes(
                    [row["model"], row["depth"], str(row["group"])]
                    + [None if _is_nan(row[name]) else row[name] for name in METRIC_FIELDS]
                )
                sink.add(feature)
            outputs[self.OUTPUT_METRICS] = sink.close()

        if cv is not None:
            fields = QgsFields()
            fields.append(QgsField("site", QVariant.LongLong))
            fields.append(QgsField("depth", QVariant.String))
            fields.append(QgsField("top", QVariant.Double))
            fields.append(QgsField("bottom", QVariant.Double))
            fields.append(QgsField("observed", QVariant.Double))
            fields.append(QgsField("predicted", QVariant.Double))
            fields.append(QgsField("fold", QVariant.Int))
            source = self.parameterAsSource(parameters, self.INPUT, context)
            sink = open_sink(
                self, parameters, self.OUTPUT_PREDICTIONS, context, fields, QgsWkbTypes.Point, source.sourceCrs()
            )
            if sink is not None:
                geometries = [g for g, k in zip(points.geometries, keep) if k]
                labels = data.interval_labels()
                for s, site in enumerate(data.site_ids):
                    for d, (top, bottom) in enumerate(data.intervals):
                        if np.isnan(data.targets[s, d]):
                            continue
                        feature = QgsFeature(fields)
                        feature.setGeometry(geometries[s])
                        feature.setAttributes(
                            [
                                int(site),
                                labels[d],
                                float(top),
                                float(bottom),
                                float(data.targets[s, d]),
                                float(cv.predictions[s, d]),
                                int(cv.folds[s]) + 1,
                            ]
                        )
                        sink.add(feature)
                outputs[self.OUTPUT_PREDICTIONS] = sink.close()

        if report_path:
            from ..core.report import write_training_report

            feedback.setProgressText(self.tr("Writing the report"))
            write_training_report(report_path, bundle, data, result)
            outputs[self.OUTPUT_REPORT] = report_path
        feedback.setProgress(100)
        return outputs


def _is_nan(value) -> bool:
    return isinstance(value, float) and value != value
