"""socdepth:train — fit an SOC model on harmonised points and covariate rasters, with honest validation."""

from __future__ import annotations

from qgis.core import (
    QgsProcessing,
    QgsProcessingException,
    QgsProcessingParameterBoolean,
    QgsProcessingParameterEnum,
    QgsProcessingParameterFeatureSink,
    QgsProcessingParameterFeatureSource,
    QgsProcessingParameterField,
    QgsProcessingParameterFileDestination,
    QgsProcessingParameterNumber,
    QgsProcessingParameterString,
)

from ..core import dependencies, registry
from .base import CovariateAlgorithm
from .layers import progress_callback, report_site_reading, sample_points
from .train_outputs import TrainOutputs
from .transfer_source import TransferInputs
from .values import MISSING, to_float

#: QGIS parameter type of each hyperparameter type (bool is a parameter of its own)
NUMBER_TYPES = {int: QgsProcessingParameterNumber.Integer, float: QgsProcessingParameterNumber.Double}


class TrainAlgorithm(TrainOutputs, TransferInputs, CovariateAlgorithm):
    INPUT = "INPUT"
    TARGET_FIELDS = "TARGET_FIELDS"
    CATEGORICAL = "CATEGORICAL"
    MODEL = "MODEL"
    VALIDATION = "VALIDATION"
    FOLDS = "FOLDS"
    BLOCK_SIZE = "BLOCK_SIZE"
    TRANSFORM = "TRANSFORM"
    GROUP_FIELD = "GROUP_FIELD"
    SEED = "SEED"
    COMPARE = "COMPARE"
    OUTPUT_MODEL = "OUTPUT_MODEL"
    OUTPUT_METRICS = "OUTPUT_METRICS"
    OUTPUT_PREDICTIONS = "OUTPUT_PREDICTIONS"
    OUTPUT_REPORT = "OUTPUT_REPORT"

    NAME = "train"
    DISPLAY_NAME = "Train SOC model"
    SHORT_DESCRIPTION = "Random forest or CNN of a soil property by depth, cross-validated over whole sites."
    TAGS = (
        "random forest", "quantile regression forest", "CNN", "convolutional neural network", "deep learning",
        "transfer learning", "multi-task", "ensemble", "stacking", "machine learning", "cross-validation",
        "spatial cross-validation",
    )  # fmt: skip
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
        "convolution layers frozen; <i>Multi-task CNN</i>: a shared trunk with one output head per depth; "
        "<i>Ensemble</i>: the random forest and the transfer CNN averaged with weights per depth (non-negative, "
        "summing to one) learnt from out-of-fold predictions of an inner 5-fold cross-validation over the "
        "training sites, so each validation fold learns its own; it trains both models six times.<br>"
        "<b>Targets</b>: fields named PROPERTY_TOP_BOTTOM (e.g. ORCDRC_0_5), as written by 'Harmonise horizons "
        "to standard depths'. A site may miss some depths.<br>"
        "<b>Validation</b>: random or spatial-block k-fold; folds hold whole sites, so a site's depths are never "
        "on both sides. Metrics per depth and overall: n, R, R² (1 − SSE/SST), RMSE, MAE, ME (mean of predicted "
        "− observed), Lin's CCC, KGE, with 95 % confidence intervals for RMSE, R², CCC and ME from a bootstrap over "
        "sites (1,000 resamples of whole sites with all their depths); for the random forest also the coverage "
        "(PICP) and mean width of its out-of-fold 90 % prediction intervals. The final model is then fitted on "
        "all sites.<br>"
        "<b>Transfer</b> (Shen et al. 2022): a larger data set with the same property and covariate bands lends "
        "its sites to a small local one, weighted against the local sites (automatically: the weight that best "
        "predicts held-out local sites, 0 when the source does not fit), or a CNN pre-trained on it (or a "
        "pre-trained model file) is fine-tuned on the local sites. Folds then hold local sites only, and the same "
        "folds are also run without the source: the metrics show both side by side.<br>"
        "<b>Outputs</b>: the model file (no executable code inside), a metrics table, optional out-of-fold "
        "predictions per site and depth, and an optional HTML report. With validation the model file also holds "
        "the area of applicability (the training sites' covariates weighted by the bands' permutation importance, "
        "and the DI threshold), which 'Predict SOC maps' can map."
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
        self.add_covariates(
            "Rasters on one grid (same CRS, pixel size, extent); every band is a covariate. Prediction later "
            "needs the same rasters in the same order."
        )
        self.add_parameter(
            QgsProcessingParameterString(self.CATEGORICAL, self.tr("Categorical bands"), "", optional=True),
            "Comma-separated names of bands or of whole layers that hold class codes, such as geology or land "
            "use: a band as QGIS shows it (e.g. PMTGEO5) where only one layer has a band of that name, else as "
            "LAYER_BAND (listed in the log). The CNNs one-hot encode them; the random forest uses the codes as "
            "they are.",
        )
        self.add_parameter(
            QgsProcessingParameterEnum(
                self.MODEL,
                self.tr("Model"),
                options=[self.tr(registry.entry(kind).option) for kind in registry.kinds()],
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
            QgsProcessingParameterEnum(
                self.COMPARE,
                self.tr("Compare with (on the same folds)"),
                options=[self.tr(registry.entry(kind).option) for kind in registry.kinds()],
                allowMultiple=True,
                optional=True,
                defaultValue=[],  # without it QGIS reads an unset list as the first option
            ),
            "Other models cross-validated on the same folds, with the settings below; each one's metrics join the "
            "table, and the log and the report give the trained model's RMSE relative to it with a 95 % interval "
            "from a paired bootstrap over sites: '−1.0 % (−2.9 to +0.8)' is 1 % better, but within chance as the "
            "interval holds 0. Each comparison takes about as long as the validation again.",
            advanced=True,
        )
        self.add_cluster(
            "Fit the cross-validation folds and the final model (a tuned forest: also each candidate of its grid) "
            "as tasks on a Dask cluster, with the same model and metrics."
        )
        self.add_resample(
            "Rasters normally must share one grid. Tick this to warp the others onto the first raster's grid "
            "(nearest neighbour)."
        )
        self.add_transfer_parameters()
        for setting in registry.hyperparameters():  # CNN settings, then the random forest's
            self.add_parameter(self._hyperparameter_definition(setting), setting.help, advanced=True)
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
            "Table: model, depth (and 'all'), group, n, R, R², RMSE, MAE, ME, CCC, KGE from cross-validation; "
            "rmse_lo, rmse_hi, r2_lo, r2_hi, ccc_lo, ccc_hi, me_lo, me_hi: 95 % confidence intervals by bootstrap "
            "over sites; picp and pi_width: the share of observations inside their out-of-fold 90 % prediction "
            "interval and its mean width (the forest's quantiles; the other models' conformal intervals, each fold's "
            "from the other folds' errors); rmse_change_pct, _lo, _hi, in "
            "the rows of each model of 'Compare with': the trained model's RMSE relative to that model's, in %, "
            "with its 95 % paired bootstrap interval.",
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
    def process(self, parameters, context, feedback):
        from ..core.models.base import Cancelled
        from ..core.training import TRANSFORMS, VALIDATIONS, compare_on_folds, train

        self.check_destinations(parameters, context)
        kind = registry.kinds()[self.parameterAsEnum(parameters, self.MODEL, context)]
        report_path = self.parameterAsFileOutput(parameters, self.OUTPUT_REPORT, context)
        # Checked before training, which can take hours, not when the model or report is written.
        needed = [*registry.entry(kind).requires, *(["matplotlib"] if report_path else [])]
        missing = dependencies.missing_modules(needed)
        if missing:
            message = dependencies.install_hint(missing)
            if "matplotlib" in missing:
                message += self.tr("\nOr leave 'Report' empty to train without the HTML report.")
            raise QgsProcessingException(message)
        group_field = self.parameterAsString(parameters, self.GROUP_FIELD, context) or None
        validation = VALIDATIONS[self.parameterAsEnum(parameters, self.VALIDATION, context)]
        folds = self.parameterAsInt(parameters, self.FOLDS, context)
        block_size = self.parameterAsDouble(parameters, self.BLOCK_SIZE, context) or None
        transform = TRANSFORMS[self.parameterAsEnum(parameters, self.TRANSFORM, context)]
        seed = self.parameterAsInt(parameters, self.SEED, context)
        cluster = self.cluster_spec(parameters, context)
        params = self._model_params(kind, parameters, context)
        compared = self._compared(parameters, context, feedback, kind, validation)
        kind, params, pretrained = self.pretrained_model(parameters, context, feedback, kind, params, transform)
        model_path = self.parameterAsFileOutput(parameters, self.OUTPUT_MODEL, context)
        target_fields = self._target_intervals(parameters, context)[1]
        transfer_source = self.transfer_source(parameters, context, feedback, target_fields, kind)

        patch = max(settings.get("patch_size", 1) for settings in [params, *compared.values()])
        read = self._training_data(parameters, context, feedback, patch, group_field)
        if read is None:
            return {}
        data, sampled = read

        transfer = None
        if pretrained is not None:
            transfer = self.pretrained_transfer(parameters, context, feedback, pretrained, sampled, data)
        if transfer_source is not None:
            transfer = self.read_transfer(
                parameters, context, feedback, transfer_source, sampled, data, target_fields, self._targets
            )
            if transfer is None:
                return {}
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
                progress=progress_callback(feedback, 2, 93 if not compared else 50),
                cluster=cluster,
                transfer=transfer,
            )
            if compared:
                result.comparisons = compare_on_folds(data, result, compared, progress_callback(feedback, 52, 43))
        except Cancelled:
            feedback.pushInfo(self.tr("Training cancelled; nothing was written."))
            return {}
        except ValueError as error:
            raise QgsProcessingException(str(error)) from error
        return self._write_outputs(parameters, context, feedback, data, result, sampled, model_path, report_path)

    def _compared(self, parameters, context, feedback, kind: str, validation: str) -> dict[str, dict]:
        """The kinds to compare with (COMPARE) and their settings from this dialog, checked before any work."""
        chosen = [registry.kinds()[i] for i in self.parameterAsEnums(parameters, self.COMPARE, context)]
        if kind in chosen:
            feedback.pushInfo(self.tr("'Compare with' names the model being trained; it is compared with the others."))
        others = [other for other in dict.fromkeys(chosen) if other != kind]
        if others and validation == "none":
            raise QgsProcessingException(
                self.tr("Comparing models needs validation: choose random or spatial k-fold, or clear 'Compare with'.")
            )
        missing = dependencies.missing_modules([name for other in others for name in registry.entry(other).requires])
        if missing:
            raise QgsProcessingException(dependencies.install_hint(missing))
        return {other: self._model_params(other, parameters, context) for other in others}

    def _hyperparameter_definition(self, setting: registry.Hyperparameter):
        if setting.type is bool:
            return QgsProcessingParameterBoolean(setting.parameter, self.tr(setting.label), setting.default)
        limits = {"minValue": setting.minimum, "maxValue": setting.maximum}
        return QgsProcessingParameterNumber(
            setting.parameter,
            self.tr(setting.label),
            NUMBER_TYPES[setting.type],
            setting.default,
            **{name: limit for name, limit in limits.items() if limit is not None},
        )

    def _model_params(self, kind: str, parameters, context) -> dict:
        """The kind's settings; one the user left at 0 where 0 means the model's default is not passed on."""
        read = {bool: self.parameterAsBoolean, int: self.parameterAsInt, float: self.parameterAsDouble}
        params = {}
        for setting in registry.hyperparameters_of(kind):
            value = read[setting.type](parameters, setting.parameter, context)
            problem = setting.check(value) if setting.check else None
            if problem:
                raise QgsProcessingException(self.tr(problem))
            if not (setting.zero_is_default and value <= 0):
                params[setting.name] = value
        return params

    def _targets(self, points, target_fields: list[str], feedback):
        """(sites, depths) target values; a value that is not a number counts as missing and is reported."""
        import numpy as np

        targets = np.full((len(points.feature_ids), len(target_fields)), np.nan)
        unreadable = 0
        for i, attributes in enumerate(points.attributes):
            for j, name in enumerate(target_fields):
                value, problem, _cause = to_float(attributes[j])
                if problem and problem != MISSING:
                    unreadable += 1
                    if unreadable <= 20:
                        feedback.pushWarning(
                            self.tr("Site {}: {} {} — treated as missing.").format(points.feature_ids[i], name, problem)
                        )
                targets[i, j] = value
        if unreadable:
            feedback.pushWarning(
                self.tr("{:,} target values were not numbers and count as missing.").format(unreadable)
            )
        return targets

    def _target_intervals(self, parameters, context):
        """(property, target fields, intervals) parsed from TARGET_FIELDS, or a message that says what is wrong."""
        from ..core.sites import target_intervals

        try:
            return target_intervals(self.parameterAsFields(parameters, self.TARGET_FIELDS, context))
        except ValueError as error:
            raise QgsProcessingException(str(error)) from error

    def _training_data(self, parameters, context, feedback, patch_size: int, group_field: str | None = None):
        """(TrainingData, SampledPoints) from the INPUT, TARGET_FIELDS, COVARIATES and CATEGORICAL parameters,
        with the skipped sites reported; None when the user cancels. Shared with select_covariates, which must
        see the sites exactly as train does."""
        import numpy as np

        from ..core.sites import categorical_bands, training_data

        source = self.parameterAsSource(parameters, self.INPUT, context)
        if source is None:
            raise QgsProcessingException(self.invalidSourceError(parameters, self.INPUT))
        prop, target_fields, intervals = self._target_intervals(parameters, context)

        sampled = sample_points(
            source,
            *self.covariates(parameters, context),
            patch_size,
            context,
            feedback,
            self.tr("Reading sites"),
            fields=target_fields + ([group_field] if group_field else []),
            progress_span=2,
        )
        if sampled is None:
            return None
        points = sampled.points
        try:
            categorical = categorical_bands(
                self.parameterAsString(parameters, self.CATEGORICAL, context), sampled.band_names, sampled.layer_names
            )
        except ValueError as error:
            raise QgsProcessingException(str(error)) from error
        data, skipped_sites = training_data(
            sampled.sample,
            points.feature_ids,
            points.x,
            points.y,
            self._targets(points, target_fields, feedback),
            intervals,
            prop,
            sampled.band_names,
            categorical,
            groups=[a[-1] for a in points.attributes] if group_field else None,
        )
        report_site_reading(feedback, sampled, skipped_sites, self.tr("site"))
        if not len(data.site_ids):
            raise QgsProcessingException(
                self.tr(
                    "No site can be used for training: {} sites were read and all were skipped (see the log). "
                    "Check that the points lie on the covariate rasters and that the target fields hold numbers."
                ).format(len(points.feature_ids))
            )
        counts = np.sum(~np.isnan(data.targets), axis=0)
        feedback.pushInfo(
            self.tr("Training on {:,} sites; observations per depth: {}").format(
                len(data.site_ids),
                ", ".join(f"{f} {c:,}" for f, c in zip(target_fields, counts)),
            )
        )
        return data, sampled
