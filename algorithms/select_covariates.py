"""socdepth:select_covariates — which covariate bands a model should use (Han et al. 2025, §2.2)."""

from __future__ import annotations

import os

from qgis.core import (
    QgsFeature,
    QgsField,
    QgsFields,
    QgsProcessing,
    QgsProcessingException,
    QgsProcessingOutputString,
    QgsProcessingParameterBoolean,
    QgsProcessingParameterFeatureSink,
    QgsProcessingParameterFileDestination,
    QgsProcessingParameterNumber,
    QgsProcessingParameterRasterDestination,
)
from qgis.PyQt.QtCore import QVariant

from ..core import registry
from ..core.depths import format_depth
from .layers import open_sink, open_stack, progress_callback
from .train import TrainAlgorithm

#: parameters defined by train and copied from it, so that both read their inputs and folds alike
SHARED_PARAMETERS = (
    "INPUT", "TARGET_FIELDS", "COVARIATES", "CATEGORICAL", "MODEL", "VALIDATION", "FOLDS", "BLOCK_SIZE",
    "TRANSFORM", "SEED", "RESAMPLE",
)  # fmt: skip


class SelectCovariatesAlgorithm(TrainAlgorithm):
    """Reads its inputs exactly as train does (it inherits train's readers), then selects instead of training."""

    MIN_CORRELATION = "MIN_CORRELATION"
    MAX_CORRELATION = "MAX_CORRELATION"
    STEP = "STEP"
    MAX_COVARIATES = "MAX_COVARIATES"
    PARSIMONIOUS = "PARSIMONIOUS"
    OUTPUT_TABLE = "OUTPUT_TABLE"
    OUTPUT_SUBSETS = "OUTPUT_SUBSETS"
    OUTPUT_COVARIATES = "OUTPUT_COVARIATES"
    OUTPUT_REPORT = "OUTPUT_REPORT"
    OUTPUT_CATEGORICAL = "OUTPUT_CATEGORICAL"

    NAME = "select_covariates"
    DISPLAY_NAME = "Select covariates"
    SHORT_DESCRIPTION = (
        "Drops irrelevant and redundant covariate bands, ranks the rest and picks the subset with the lowest "
        "cross-validated error, as a raster stack for training."
    )
    TAGS = (
        "covariate selection", "feature selection", "variable selection", "recursive feature elimination",
        "forward feature selection", "permutation importance", "correlation", "cross-validation", "random forest",
        "CNN",
    )  # fmt: skip
    GROUP = "model"
    ICON = "train.svg"
    HELP_ANCHOR = "select-covariates"
    HELP = (
        "Chooses which covariate bands to train on, after Han et al. (2025, Frontiers in Environmental Science "
        "13:1580085, §2.2), from the same inputs as 'Train SOC model':<br>"
        "1. bands whose mean absolute Pearson correlation with the target over the depth intervals is below the "
        "minimum are dropped;<br>"
        "2. of two bands correlated above the maximum, the one less correlated with the target is dropped;<br>"
        "3. the rest are ranked by permutation importance: the rise in out-of-fold RMSE when the band is "
        "shuffled among each fold's test sites, with the chosen model;<br>"
        "4. the first STEP, 2·STEP, … ranked bands (up to the maximum) are cross-validated with the model, "
        "folds and seed of 'Train SOC model';<br>"
        "5. the subset with the lowest RMSE is chosen, or (parsimonious) the smallest within one standard "
        "error of it.<br>"
        "Categorical bands are never dropped for correlation (the order of class codes means nothing); they are "
        "ranked with the others.<br>"
        "<b>The chosen subset's cross-validated RMSE is optimistic</b>: the same folds ranked the bands and "
        "chose the subset. Train on the selection for its accuracy, ideally on sites the selection never "
        "saw.<br>"
        "<b>Outputs</b>: a table of every band (correlation, why it was dropped or its rank and importance), a "
        "table of the subsets (RMSE per depth and overall, its standard error, CCC), the selected bands as one "
        "GeoTIFF for 'Train SOC model' and 'Predict SOC maps', the names of its categorical bands for train's "
        "'Categorical bands', and an HTML page with RMSE against subset size."
    )

    def initAlgorithm(self, config=None):  # noqa: N802
        train = TrainAlgorithm()
        train.initAlgorithm(config)
        for name in SHARED_PARAMETERS:
            self.addParameter(train.parameterDefinition(name).clone())
        self.parameterDefinition(self.MODEL).setHelp(
            self.tr(
                "The model that ranks the bands and scores the subsets; train the same model on the selection. "
                "The random forest is fast; Han et al. (2025) scored with the transfer CNN."
            )
        )
        self.parameterDefinition(self.VALIDATION).setHelp(
            self.tr(
                "How subsets are scored: random or spatial block k-fold over whole sites, as in 'Train SOC "
                "model' (None cannot score a subset and is refused). Spatial folds favour bands that carry over "
                "to unsampled places."
            )
        )
        self.add_parameter(
            QgsProcessingParameterNumber(
                self.MIN_CORRELATION, self.tr("Minimum |r| with the target"),
                QgsProcessingParameterNumber.Double, 0.05, minValue=0, maxValue=0.99,
            ),
            "Step 1: numeric bands whose mean absolute Pearson correlation with the target (r per depth "
            "interval, averaged over the intervals) is below this are dropped. 0 keeps every band.",
        )  # fmt: skip
        self.add_parameter(
            QgsProcessingParameterNumber(
                self.MAX_CORRELATION, self.tr("Maximum |r| between bands"),
                QgsProcessingParameterNumber.Double, 0.8, minValue=0.01, maxValue=1,
            ),
            "Step 2: of two numeric bands correlated above this (absolute Pearson r over the sites), the one "
            "less correlated with the target is dropped. 1 keeps every band.",
        )  # fmt: skip
        self.add_parameter(
            QgsProcessingParameterNumber(
                self.STEP, self.tr("Subset size step"), QgsProcessingParameterNumber.Integer, 10, minValue=1
            ),
            "Step 4: the subsets scored are the first STEP, 2·STEP, … ranked bands. 1 scores every size (slower).",
        )
        self.add_parameter(
            QgsProcessingParameterNumber(
                self.MAX_COVARIATES, self.tr("Maximum bands"), QgsProcessingParameterNumber.Integer, 50, minValue=1
            ),
            "The largest subset scored; the ranked bands beyond it are dropped.",
        )
        self.add_parameter(
            QgsProcessingParameterBoolean(self.PARSIMONIOUS, self.tr("Parsimonious (one-standard-error rule)"), False),
            "Step 5: choose the smallest subset whose RMSE is within one standard error (over the folds) of the "
            "lowest, rather than the lowest: fewer bands, about as accurate.",
        )
        self.add_cluster(
            "Fit the cross-validation folds of the ranking and of every subset as tasks on a Dask cluster, with "
            "the same selection."
        )
        for setting in registry.hyperparameters():  # the model's settings, as in train
            self.addParameter(train.parameterDefinition(setting.parameter).clone())
        self.add_parameter(
            QgsProcessingParameterFeatureSink(self.OUTPUT_TABLE, self.tr("Bands"), QgsProcessing.TypeVector),
            "Table, one row per band: band, categorical, correlation (mean |r| with the target), r_TOP_BOTTOM "
            "per depth, dropped (why, empty when ranked), rank (1 = most important), importance (rise of the "
            "out-of-fold RMSE when shuffled, in the target's units), selected.",
        )
        self.add_parameter(
            QgsProcessingParameterFeatureSink(self.OUTPUT_SUBSETS, self.tr("Subsets"), QgsProcessing.TypeVector),
            "Table, one row per subset scored: size, bands (by rank), rmse_TOP_BOTTOM per depth, rmse over all "
            "depths, rmse_se (its standard error over the folds), ccc, seconds, chosen.",
        )
        self.add_parameter(
            QgsProcessingParameterRasterDestination(self.OUTPUT_COVARIATES, self.tr("Selected covariates")),
            "The selected bands as one float32 GeoTIFF on the covariates' grid, each band described by its "
            "original name (train and predict call it LAYER_ORIGINALNAME). Give it to 'Train SOC model' and "
            "'Predict SOC maps' as the only covariate raster.",
        )
        self.add_parameter(
            QgsProcessingParameterFileDestination(
                self.OUTPUT_REPORT, self.tr("Selection report"), self.tr("HTML files (*.html)"), optional=True
            ),
            "Optional HTML page: RMSE (± one standard error) and RMSE per depth against subset size, the subsets "
            "and every band's fate.",
        )
        self.addOutput(
            QgsProcessingOutputString(self.OUTPUT_CATEGORICAL, self.tr("Categorical bands of the selected covariates"))
        )

    # -----------------------------------------------------------------------------------------------------------
    def process(self, parameters, context, feedback):
        from ..core.dependencies import install_hint, missing_modules
        from ..core.models.base import Cancelled
        from ..core.selection import select_covariates
        from ..core.training import TRANSFORMS, VALIDATIONS

        self.check_destinations(parameters, context)
        kind = registry.kinds()[self.parameterAsEnum(parameters, self.MODEL, context)]
        report_path = self.parameterAsFileOutput(parameters, self.OUTPUT_REPORT, context)
        missing = missing_modules([*registry.entry(kind).requires, *(["matplotlib"] if report_path else [])])
        if missing:
            raise QgsProcessingException(install_hint(missing))
        validation = VALIDATIONS[self.parameterAsEnum(parameters, self.VALIDATION, context)]
        if validation == "none":
            raise QgsProcessingException(
                self.tr("Subsets are scored by cross-validation: choose random or spatial block k-fold validation.")
            )
        stack_path = self.parameterAsOutputLayer(parameters, self.OUTPUT_COVARIATES, context)
        if os.path.splitext(stack_path)[1].lower() not in (".tif", ".tiff"):
            raise QgsProcessingException(
                self.tr("The selected covariates are written as a GeoTIFF: give '{}' the extension .tif.").format(
                    stack_path
                )
            )
        cluster = self.cluster_spec(parameters, context)
        params = self._model_params(kind, parameters, context)
        read = self._training_data(parameters, context, feedback, params.get("patch_size", 1))
        if read is None:
            return {}
        data, _sampled = read
        try:
            selection = select_covariates(
                data,
                kind,
                params,
                validation=validation,
                folds=self.parameterAsInt(parameters, self.FOLDS, context),
                block_size=self.parameterAsDouble(parameters, self.BLOCK_SIZE, context) or None,
                transform=TRANSFORMS[self.parameterAsEnum(parameters, self.TRANSFORM, context)],
                random_state=self.parameterAsInt(parameters, self.SEED, context),
                min_correlation=self.parameterAsDouble(parameters, self.MIN_CORRELATION, context),
                max_correlation=self.parameterAsDouble(parameters, self.MAX_CORRELATION, context),
                step=self.parameterAsInt(parameters, self.STEP, context),
                max_covariates=self.parameterAsInt(parameters, self.MAX_COVARIATES, context),
                parsimonious=self.parameterAsBoolean(parameters, self.PARSIMONIOUS, context),
                progress=progress_callback(feedback, 2, 88),
                cluster=cluster,
            )
        except Cancelled:
            feedback.pushInfo(self.tr("Selection cancelled; nothing was written."))
            return {}
        except ValueError as error:
            raise QgsProcessingException(str(error)) from error
        self._log(feedback, selection)
        try:
            return self._write_selection(parameters, context, feedback, data, selection, stack_path, report_path)
        except Cancelled:
            feedback.pushInfo(
                self.tr("Selection cancelled while writing the selected covariates; no raster was written.")
            )
            return {}

    def _log(self, feedback, selection) -> None:
        for band in selection.bands:
            if band.dropped and band.rank is None:
                feedback.pushInfo(self.tr("Dropped {}: {}").format(band.name, band.dropped))
        for i, subset in enumerate(selection.subsets):
            feedback.pushInfo(
                self.tr("{} bands: RMSE {:.4g} ± {:.2g} (SE), CCC {:.3f}{}").format(
                    subset.size,
                    subset.rmse,
                    subset.rmse_se,
                    subset.ccc,
                    self.tr(" — chosen") if i == selection.chosen else "",
                )
            )
        chosen = selection.subsets[selection.chosen]
        feedback.pushInfo(self.tr("Selected: {}").format(", ".join(chosen.bands)))
        feedback.pushWarning(
            self.tr(
                "The selected subset's cross-validated RMSE ({:.4g}) is optimistic: the same folds ranked the bands "
                "and chose the subset. Train on the selection for its accuracy."
            ).format(chosen.rmse)
        )

    def _write_selection(self, parameters, context, feedback, data, selection, stack_path, report_path) -> dict:
        from ..core.selection import write_selected_bands

        depth_fields = [f"{format_depth(top)}_{format_depth(bottom)}" for top, bottom in data.intervals]
        labels = data.interval_labels()
        # the raster first: the step that takes long and may fail, before any table is written
        feedback.setProgressText(self.tr("Writing the selected covariates"))
        with open_stack(*self.covariates(parameters, context)) as stack:
            write_selected_bands(stack, selection.selected, stack_path, progress_callback(feedback, 90, 8))
        layer = os.path.splitext(os.path.basename(stack_path))[0]
        # loaded into the project under the file's name, the one train prefixes the band names with when it is
        # given the file and the one OUTPUT_CATEGORICAL assumes (not the output's title)
        if context.willLoadLayerOnCompletion(stack_path):
            context.layerToLoadOnCompletionDetails(stack_path).name = layer
        categorical = [band.name for band in selection.bands if band.selected and band.categorical]
        outputs = {
            self.OUTPUT_COVARIATES: stack_path,
            self.OUTPUT_CATEGORICAL: ",".join(f"{layer}_{name}" for name in categorical),
        }

        fields = QgsFields()
        fields.append(QgsField("band", QVariant.String))
        fields.append(QgsField("categorical", QVariant.Bool))
        fields.append(QgsField("correlation", QVariant.Double))
        for name in depth_fields:
            fields.append(QgsField(f"r_{name}", QVariant.Double))
        fields.append(QgsField("dropped", QVariant.String))
        fields.append(QgsField("rank", QVariant.Int))
        fields.append(QgsField("importance", QVariant.Double))
        fields.append(QgsField("selected", QVariant.Bool))
        sink = open_sink(self, parameters, self.OUTPUT_TABLE, context, fields)
        for band in selection.bands:
            feature = QgsFeature(fields)
            feature.setAttributes(
                [band.name, band.categorical, _number(band.relevance), *map(_number, band.correlations),
                 band.dropped, band.rank, _number(band.importance), band.selected]
            )  # fmt: skip
            sink.add(feature)
        outputs[self.OUTPUT_TABLE] = sink.close()

        fields = QgsFields()
        fields.append(QgsField("size", QVariant.Int))
        fields.append(QgsField("bands", QVariant.String))
        for name in depth_fields:
            fields.append(QgsField(f"rmse_{name}", QVariant.Double))
        for name in ("rmse", "rmse_se", "ccc", "seconds"):
            fields.append(QgsField(name, QVariant.Double))
        fields.append(QgsField("chosen", QVariant.Bool))
        sink = open_sink(self, parameters, self.OUTPUT_SUBSETS, context, fields)
        for i, subset in enumerate(selection.subsets):
            feature = QgsFeature(fields)
            feature.setAttributes(
                [subset.size, ", ".join(subset.bands), *(_number(subset.depth_rmse.get(label)) for label in labels),
                 _number(subset.rmse), _number(subset.rmse_se), _number(subset.ccc), subset.seconds,
                 i == selection.chosen]
            )  # fmt: skip
            sink.add(feature)
        outputs[self.OUTPUT_SUBSETS] = sink.close()

        if report_path:
            from ..core.selection_report import write_selection_report

            feedback.setProgressText(self.tr("Writing the report"))
            write_selection_report(report_path, selection, data.property_name)
            outputs[self.OUTPUT_REPORT] = report_path

        feedback.setProgress(100)
        return outputs


def _number(value) -> float | None:
    """NULL for a missing or undefined value (NaN) in a table."""
    return None if value is None or value != value else float(value)
