"""The inputs of 'Train SOC model' for transfer from a larger data set: its parameters, reading and checking the
source sites, and the log of the gain. A mixin of the train algorithm, kept apart so that train.py stays about
training; the method itself is `core.transfer`."""

from __future__ import annotations

import os
from types import SimpleNamespace

from qgis.core import (
    QgsProcessing,
    QgsProcessingException,
    QgsProcessingParameterEnum,
    QgsProcessingParameterFeatureSource,
    QgsProcessingParameterFile,
    QgsProcessingParameterMultipleLayers,
    QgsProcessingParameterNumber,
)

from .layers import report_site_reading, sample_points

#: TRANSFER option of representation transfer alone (a pre-trained model takes only that one)
REPRESENTATION = 2


class TransferInputs:
    """SOURCE_INPUT, SOURCE_COVARIATES, TRANSFER, SOURCE_SELECTION and SOURCE_WEIGHT, for a `CovariateAlgorithm`."""

    SOURCE_INPUT = "SOURCE_INPUT"
    SOURCE_COVARIATES = "SOURCE_COVARIATES"
    TRANSFER = "TRANSFER"
    SOURCE_SELECTION = "SOURCE_SELECTION"
    SOURCE_WEIGHT = "SOURCE_WEIGHT"
    PRETRAINED_MODEL = "PRETRAINED_MODEL"

    def add_transfer_parameters(self) -> None:
        self.add_parameter(
            QgsProcessingParameterEnum(
                self.TRANSFER,
                self.tr("Transfer from a larger data set"),
                options=[
                    self.tr("None"),
                    self.tr("Instances (borrow the source's sites)"),
                    self.tr(
                        "Representation (CNNs: pre-trained on the source, fine-tuned; random forest: the source "
                        "forest's prediction as covariates)"
                    ),
                    self.tr("Instances and representation"),
                ],
                defaultValue=0,
            ),
            "Instances: the sites of 'Source data set' join the local training sites, each counting 'Source weight' "
            "of a local site; cross-validation then tests on local sites only and also runs the same folds without "
            "the source, so the log, metrics and report show the gain. Representation: a CNN is pre-trained on the "
            "source sites, then fine-tuned on the local ones with its first 'Transfer CNN: frozen layers' "
            "(FREEZE_LAYERS) layers frozen; for the random forest, a forest fitted on the source sites predicts "
            "every depth and these predictions become extra covariates of the local forest (the model file carries "
            "the source forest, so 'Predict SOC maps' computes them pixel by pixel). Each validation fold fits its "
            "source model anew without the source sites near its test sites. Instances and representation: both "
            "at once, the source sites also joining the local ones at 'Source weight' (the ensemble takes "
            "instances only).",
        )
        self.add_parameter(
            QgsProcessingParameterFeatureSource(
                self.SOURCE_INPUT,
                self.tr("Source data set (harmonised points)"),
                [QgsProcessing.TypeVectorPoint],
                optional=True,
            ),
            "A larger library of the same property, e.g. a national survey, harmonised to the same depths: it "
            "must have the target fields chosen above. Its sites only ever train, never validate; those within "
            "a spatial block of a fold's test sites are left out of that fold's training.",
        )
        self.add_parameter(
            QgsProcessingParameterFile(
                self.PRETRAINED_MODEL,
                self.tr("Pre-trained model (instead of a source data set)"),
                extension="socmodel",
                optional=True,
            ),
            "With 'Representation': a CNN model file trained elsewhere (e.g. on a national library) to fine-tune on "
            "the local sites instead of pre-training on 'Source data set'; its model kind and settings replace "
            "'Model' and the CNN settings. With the random forest as 'Model', a random forest model file instead, "
            "whose prediction becomes covariates of the local forest. Its covariate bands, depth intervals and "
            "target transform must be those of this run. Validation cannot know whether it saw the local sites: "
            "use one that did not.",
        )
        self.add_parameter(
            QgsProcessingParameterMultipleLayers(
                self.SOURCE_COVARIATES, self.tr("Source covariate rasters"), QgsProcessing.TypeRaster, optional=True
            ),
            "Rasters covering the source points with the same bands in the same order, CRS and pixel size as "
            "'Covariate rasters' (e.g. the same continental products over a larger extent). Empty: the local "
            "covariate rasters, when they cover the source points.",
        )
        self.add_parameter(
            QgsProcessingParameterEnum(
                self.SOURCE_SELECTION,
                self.tr("Source sites to borrow"),
                options=[
                    self.tr("All"),
                    self.tr("Nearest to the local sites in covariate space"),
                    self.tr("RS-LOCAL search (those whose models predict the local sites best)"),
                ],
                defaultValue=0,
            ),
            "All: every source site. Nearest: for each local training site its 10 nearest source sites in the "
            "covariate space (bands scaled by the local sites' spread): the library's most similar environments. "
            "RS-LOCAL (Lobsey et al. 2017): in rounds, models of random subsets of the source are scored at the "
            "local training sites and the sites of the worst-scoring subsets dropped, until half the source is "
            "left (slower: hundreds of small forests per fit). The chosen sites are then weighted as set below.",
            advanced=True,
        )
        self.add_parameter(
            QgsProcessingParameterNumber(
                self.SOURCE_WEIGHT,
                self.tr("Source weight (0 = automatic)"),
                QgsProcessingParameterNumber.Double,
                0,
                minValue=0,
            ),
            "How much a source site counts relative to a local one (1: the same). 0 chooses it from 0, 0.01, 0.1, "
            "0.3 and 1 by an inner cross-validation on the local training sites alone, so that a source that does "
            "not fit the local data is hardly used.",
            advanced=True,
        )

    def transfer_source(self, parameters, context, feedback, target_fields: list[str], kind: str):
        """The source layer when transfer is asked for (None without transfer); refuses, before any work, what
        cannot be done with the model `kind`."""
        from ..core import registry

        strategy = self.parameterAsEnum(parameters, self.TRANSFER, context)
        source = self.parameterAsSource(parameters, self.SOURCE_INPUT, context)
        if strategy == 0:
            if source is not None or self.parameterAsFile(parameters, self.PRETRAINED_MODEL, context):
                feedback.pushWarning(
                    self.tr("A source data set or pre-trained model was given but 'Transfer' is None: it is not used.")
                )
            return None
        if self.parameterAsFile(parameters, self.PRETRAINED_MODEL, context):
            if source is not None:
                raise QgsProcessingException(
                    self.tr("Give either a 'Source data set' or a 'Pre-trained model', not both.")
                )
            return None
        stackable = kind == "random_forest" or hasattr(registry.entry(kind).loader(), "fine_tuned")
        if strategy >= REPRESENTATION and not stackable:
            raise QgsProcessingException(
                self.tr(
                    "Representation transfer fine-tunes a network or stacks a random forest on the source model, "
                    "and the {} is neither: choose a CNN or the random forest, or 'Instances'."
                ).format(registry.entry(kind).label.lower())
            )
        if source is None:
            raise QgsProcessingException(
                self.tr("Transfer needs a 'Source data set': give the harmonised points of the larger data set.")
            )
        missing = [name for name in target_fields if source.fields().lookupField(name) < 0]
        if missing:
            raise QgsProcessingException(
                self.tr("The source data set lacks the target fields {}; harmonise it to the same depths.").format(
                    ", ".join(missing)
                )
            )
        return source

    def pretrained_model(self, parameters, context, feedback, kind: str, params: dict, transform: str):
        """(kind, model settings, pre-trained bundle): those of PRETRAINED_MODEL when one is given with
        representation transfer, else `kind` and `params` unchanged and None."""
        from ..core.bundle import SocModel
        from ..core.modelfile import ModelFileError

        path = self.parameterAsFile(parameters, self.PRETRAINED_MODEL, context)
        if not path or self.parameterAsEnum(parameters, self.TRANSFER, context) == 0:
            return kind, params, None
        if self.parameterAsEnum(parameters, self.TRANSFER, context) != REPRESENTATION:
            raise QgsProcessingException(self.tr("A 'Pre-trained model' is fine-tuned: choose 'Representation'."))
        try:
            bundle = SocModel.load(path)
        except (ModelFileError, OSError, ValueError) as error:
            raise QgsProcessingException(self.tr("Pre-trained model {}: {}").format(path, error)) from error
        if not hasattr(bundle.model, "fine_tuned"):
            if kind != "random_forest":
                raise QgsProcessingException(
                    self.tr(
                        "The pre-trained model is a {}, which has no network to fine-tune; give a CNN model file, "
                        "or choose the random forest as 'Model' to use its prediction as covariates."
                    ).format(bundle.card.kind)
                )
            feedback.pushInfo(self.tr("Stacking the local forest on the prediction of the {} of {}").format(
                bundle.card.kind, path))  # fmt: skip
            return kind, params, bundle
        if bundle.card.target.transform != transform:
            raise QgsProcessingException(
                self.tr("The pre-trained model was fitted with target transform '{}', this run asks for '{}'; choose "
                        "the model's.").format(bundle.card.target.transform, transform)
            )  # fmt: skip
        feedback.pushInfo(self.tr("Fine-tuning the pre-trained {} of {}").format(bundle.card.kind, path))
        settings = {name: value for name, value in bundle.model.get_params().items() if name != "random_state"}
        return bundle.card.kind, settings, bundle

    def pretrained_transfer(self, parameters, context, feedback, bundle, local_sample, local):
        """The transfer of a pre-trained model, after checking that the local covariates are its own."""
        import hashlib

        from ..core.transfer import Transfer

        try:
            self.check_covariates(bundle.card, _grid_of(local_sample), feedback)
        except QgsProcessingException as error:
            raise QgsProcessingException(self.tr("Pre-trained model: {}").format(error)) from error
        path = self.parameterAsFile(parameters, self.PRETRAINED_MODEL, context)
        with open(path, "rb") as handle:
            digest = hashlib.sha256(handle.read()).hexdigest()
        return Transfer(
            None,
            strategy="representation",
            freeze_layers=self.parameterAsInt(parameters, "FREEZE_LAYERS", context),
            pretrained=bundle.model,
            pretrained_record={"file": os.path.basename(path), "sha256": digest, "card": bundle.card.to_dict()},
        )

    def read_transfer(
        self, parameters, context, feedback, source, local_sample, local, target_fields: list[str], read_targets
    ):
        """The source sites sampled on their covariates and checked against the local ones (with the messages of
        'Predict SOC maps'); None when cancelled. `read_targets(points, fields, feedback)` reads the targets."""
        from ..core.card import Bands, Grid, ModelCard
        from ..core.sites import training_data
        from ..core.transfer import SELECTIONS, STRATEGIES, Transfer

        layers, resample = self.covariates(parameters, context)
        layers = self.parameterAsLayerList(parameters, self.SOURCE_COVARIATES, context) or layers
        fields = list(target_fields)
        patch_size = local.patches.shape[-1]
        sampled = sample_points(
            source, layers, resample, patch_size, context, feedback, self.tr("Reading source sites"), fields=fields,
            progress_span=2,
        )  # fmt: skip
        if sampled is None:
            return None
        grid = local_sample.grid
        local_card = ModelCard(
            kind="",
            property=local.property_name,
            intervals=(),
            bands=Bands(tuple(local_sample.band_names), layer_names=tuple(local_sample.layer_names)),
            grid=Grid(grid["crs_wkt"], tuple(grid["transform"]), tuple(grid["res"])),
        )
        try:
            self.check_covariates(local_card, _grid_of(sampled), feedback)
        except QgsProcessingException as error:
            raise QgsProcessingException(self.tr("Source covariates: {}").format(error)) from error
        points = sampled.points
        source_data, skipped = training_data(
            sampled.sample, points.feature_ids, points.x, points.y, read_targets(points, fields, feedback),
            local.intervals, local.property_name, local.band_names, local.categorical,
        )  # fmt: skip
        report_site_reading(feedback, sampled, skipped, self.tr("source site"))
        if not len(source_data.site_ids):
            raise QgsProcessingException(
                self.tr(
                    "No source site can be used: {} were read and all were skipped (see the log). Check that the "
                    "source points lie on the source covariate rasters and that the target fields hold numbers."
                ).format(len(points.feature_ids))
            )
        selection = SELECTIONS[self.parameterAsEnum(parameters, self.SOURCE_SELECTION, context)]
        weight = self.parameterAsDouble(parameters, self.SOURCE_WEIGHT, context)
        strategy = STRATEGIES[self.parameterAsEnum(parameters, self.TRANSFER, context)]
        freeze_layers = self.parameterAsInt(parameters, "FREEZE_LAYERS", context)
        if strategy != "instances":
            message = self.tr("Fitting a source model on {} source sites ({} of them), then {}")
            how = self.tr(
                "fine-tuning it with {} frozen layers (CNN) or stacking the local forest on its prediction"
            ).format(freeze_layers)
            if strategy == "both":
                how += self.tr(", with the source sites weighted {}").format(
                    f"{weight:g}" if weight else self.tr("automatically")
                )
            feedback.pushInfo(message.format(len(source_data.site_ids), selection, how))
        else:
            feedback.pushInfo(
                self.tr("Borrowing from {} source sites ({} of them), source weight {}").format(
                    len(source_data.site_ids), selection, f"{weight:g}" if weight else self.tr("automatic")
                )
            )
        return Transfer(source_data, selection, weight, strategy, freeze_layers)

    def report_transfer(self, feedback, cv) -> None:
        """The gain of transfer at the local sites, depth by depth, and what each fold borrowed."""
        from ..core.transfer import gain_rows

        for i, record in enumerate(cv.transfer_folds):
            if record.strategy == "representation" and not record.source_sites:
                stacked = cv.fold_models[i].kind == "source_stacked_forest"
                borrowed = (
                    self.tr("the local forest stacked on the pre-trained model")
                    if stacked
                    else self.tr("the pre-trained model fine-tuned")
                )
            elif record.strategy == "representation":
                borrowed = self.tr("source model fitted on {} source sites").format(record.source_sites)
            elif record.strategy == "both":
                borrowed = self.tr("source model fitted on {} source sites, source weight {:g}").format(
                    record.source_sites, record.weight
                )
            else:
                borrowed = self.tr("source weight {:g}, {} source sites used").format(
                    record.weight, record.source_sites
                )
            feedback.pushInfo(
                self.tr("Fold {}: {}, {} left out near its test sites").format(i + 1, borrowed, record.excluded)
            )
        for row in gain_rows(cv.metrics, cv.local_only.metrics):
            feedback.pushInfo(
                self.tr(
                    "{depth}: RMSE local only {rmse_local:.3f}, with transfer {rmse_transfer:.3f} "
                    "({rmse_change_percent:+.1f} %); CCC {ccc_local:.3f} → {ccc_transfer:.3f}"
                ).format(**row)
            )


def _grid_of(sampled) -> SimpleNamespace:
    """What `CovariateAlgorithm.check_covariates` reads of a stack, from sampled points."""
    return SimpleNamespace(
        band_names=sampled.band_names,
        layer_names=sampled.layer_names,
        crs_wkt=sampled.grid["crs_wkt"],
        res=tuple(sampled.grid["res"]),
    )
