"""A small base class shared by the plugin's algorithms: translation, help, icon and dependency check."""

from __future__ import annotations

import os
import re
from pathlib import Path
from urllib.parse import unquote, urlparse

from qgis.core import (
    QgsCoordinateReferenceSystem,
    QgsProcessing,
    QgsProcessingAlgorithm,
    QgsProcessingException,
    QgsProcessingOutputLayerDefinition,
    QgsProcessingParameterBoolean,
    QgsProcessingParameterDefinition,
    QgsProcessingParameterFeatureSink,
    QgsProcessingParameterFileDestination,
    QgsProcessingParameterFolderDestination,
    QgsProcessingParameterMultipleLayers,
    QgsProcessingParameterString,
)
from qgis.PyQt.QtCore import QCoreApplication
from qgis.PyQt.QtGui import QIcon

from ..core.dependencies import install_hint, missing_modules
from ..core.files import EarlierFiles
from .help_pages import help_url

ICONS = Path(__file__).resolve().parent.parent / "icons"

GROUPS = {
    "prepare": "1 — Prepare data",
    "model": "2 — Model",
    "map": "3 — Map",
}


#: words every algorithm is found by in the Toolbox search
COMMON_TAGS = ("soil", "soil organic carbon", "SOC", "carbon", "digital soil mapping", "DSM", "depth")


class SocAlgorithm(QgsProcessingAlgorithm):
    """Subclasses set NAME, DISPLAY_NAME, SHORT_DESCRIPTION, TAGS, GROUP, HELP, HELP_ANCHOR, ICON and REQUIRES,
    and implement `process` (QGIS's `processAlgorithm`, which here also puts back the files a failed run replaced).
    """

    NAME = ""
    DISPLAY_NAME = ""
    #: one line for the Toolbox tooltip
    SHORT_DESCRIPTION = ""
    #: search words of this algorithm, beside COMMON_TAGS
    TAGS: tuple[str, ...] = ()
    GROUP = "prepare"
    HELP = ""
    HELP_ANCHOR = ""
    ICON = "socdepth.svg"
    REQUIRES: tuple[str, ...] = ("numpy",)

    def tr(self, text: str) -> str:
        return QCoreApplication.translate("SocDepthMapper", text)

    def createInstance(self):  # noqa: N802 - QGIS API name
        return type(self)()

    def name(self) -> str:
        return self.NAME

    def displayName(self) -> str:  # noqa: N802
        return self.tr(self.DISPLAY_NAME)

    def group(self) -> str:
        return self.tr(GROUPS[self.GROUP])

    def groupId(self) -> str:  # noqa: N802
        return self.GROUP

    def shortDescription(self) -> str:  # noqa: N802
        return self.tr(self.SHORT_DESCRIPTION)

    def tags(self) -> list[str]:
        return [self.tr(tag) for tag in (*COMMON_TAGS, *self.TAGS)]

    def shortHelpString(self) -> str:  # noqa: N802
        return self.tr(self.HELP)

    def helpUrl(self) -> str:  # noqa: N802
        """The page shipped in help/ (works offline, matches this version); it links to the README online."""
        return help_url(self.NAME)

    def readme_anchor(self) -> str:
        """This algorithm's section of the README."""
        return self.HELP_ANCHOR or self.NAME

    def icon(self) -> QIcon:
        return QIcon(str(ICONS / self.ICON))

    def canExecute(self):  # noqa: N802
        missing = missing_modules(self.REQUIRES)
        if missing:
            return False, install_hint(missing)
        return True, ""

    def processAlgorithm(self, parameters, context, feedback):  # noqa: N802
        self.earlier_files = EarlierFiles()
        try:
            results = self.process(parameters, context, feedback)
        except BaseException:
            for path in self.earlier_files.restore():
                feedback.pushInfo(self.tr("The earlier file {} is left as it was.").format(path))
            raise
        self.earlier_files.release()
        return results

    def process(self, parameters, context, feedback) -> dict:
        """The algorithm's work; files handed to `self.earlier_files.keep` before they are replaced come back if
        it fails."""
        raise NotImplementedError

    def check_destinations(self, parameters, context) -> None:
        """Refuses, before any work, an output that would overwrite an input or that cannot be written: a sink
        whose folder does not exist (QGIS does not create it), or a file or folder under no writable folder.
        Otherwise the failure would come only after the whole run, or the user's input would be replaced."""
        inputs = self._input_files(parameters, context)
        for definition in self.destinationParameterDefinitions():
            if is_temporary_output(parameters.get(definition.name()) or definition.defaultValue(), context):
                # QGIS's own temporary file; asking for its path here would name a second file, which a dialog
                # run would then try to load and report as 'not correctly generated'
                continue
            if isinstance(definition, (QgsProcessingParameterFileDestination, QgsProcessingParameterFolderDestination)):
                path = self.parameterAsFileOutput(parameters, definition.name(), context)
            else:
                path = self.parameterAsOutputLayer(parameters, definition.name(), context)
            path = file_of(path)
            if not path:
                continue  # not wanted, or not a file (a memory layer, a database)
            label = self.tr("'{}' ({})").format(self.tr(definition.description()), definition.name())
            if os.path.realpath(path) in inputs:
                raise QgsProcessingException(
                    self.tr("{} is {}, which is also an input of this run; the input would be overwritten. Choose "
                            "another file name.").format(label, path)
                )  # fmt: skip
            folder = os.path.dirname(os.path.abspath(path))
            if isinstance(definition, QgsProcessingParameterFeatureSink) and not os.path.isdir(folder):
                raise QgsProcessingException(
                    self.tr("{}: the folder {} does not exist. Create it or choose another folder.").format(
                        label, folder
                    )
                )
            while not os.path.isdir(folder) and os.path.dirname(folder) != folder:
                folder = os.path.dirname(folder)  # the nearest existing folder: the run creates the rest
            if not os.access(folder, os.W_OK | os.X_OK):
                raise QgsProcessingException(
                    self.tr("{}: the folder {} cannot be written to. Choose a folder where you may save files.").format(
                        label, folder
                    )
                )

    def _input_files(self, parameters, context) -> set[str]:
        """The real paths of the files this run reads (layers, rasters, a model file)."""
        paths = []
        for definition in self.parameterDefinitions():
            if definition.isDestination() or definition.name() not in parameters:
                continue
            kind = definition.type()
            if kind in ("source", "vector"):
                layers = [self.parameterAsVectorLayer(parameters, definition.name(), context)]
            elif kind == "raster":
                layers = [self.parameterAsRasterLayer(parameters, definition.name(), context)]
            elif kind == "multilayer":
                layers = self.parameterAsLayerList(parameters, definition.name(), context)
            elif kind == "file":
                paths.append(self.parameterAsFile(parameters, definition.name(), context))
                continue
            else:
                continue
            paths += [file_of(layer.source()) for layer in layers if layer is not None]
        return {os.path.realpath(path) for path in paths if path}

    def add_parameter(self, parameter, help_text: str, advanced: bool = False):
        """Adds a parameter with its help text (shown in the dialog's tooltip and the help panel)."""
        parameter.setHelp(self.tr(help_text))
        if advanced:
            parameter.setFlags(parameter.flags() | QgsProcessingParameterDefinition.FlagAdvanced)
        self.addParameter(parameter)
        return parameter


def is_temporary_output(value, context) -> bool:
    """Whether an output parameter's value asks for a temporary output (as the dialogs' default does)."""
    if isinstance(value, QgsProcessingOutputLayerDefinition):
        value = value.sink.valueAsString(context.expressionContext())[0]
    return value == QgsProcessing.TEMPORARY_OUTPUT


def file_of(source: str) -> str:
    """The file behind a layer source or output: 'x.gpkg|layername=y' and 'ogr:x.gpkg' -> 'x.gpkg', a delimited
    text URI 'file:///x.csv?delimiter=,' -> '/x.csv'; '' for what is no file (memory:, a database)."""
    if not source or source.startswith(("memory:", "postgres:", "postgis:", "spatialite:")):
        return ""
    if source.startswith("file:"):
        return unquote(urlparse(source).path)
    if source.startswith("ogr:"):  # e.g. ogr:dbname='/data/x.gpkg' table="t" (geom)
        database = re.search(r"dbname='([^']*)'", source)
        return database.group(1) if database else source[len("ogr:") :].split("|")[0]
    return source.split("|")[0]


class CovariateAlgorithm(SocAlgorithm):
    """An algorithm that reads covariate rasters: the COVARIATES and RESAMPLE parameters, defined once for
    sample, train and predict, each with its own help text."""

    COVARIATES = "COVARIATES"
    RESAMPLE = "RESAMPLE"
    CLUSTER = "CLUSTER"

    def add_covariates(self, help_text: str) -> None:
        self.add_parameter(
            QgsProcessingParameterMultipleLayers(
                self.COVARIATES, self.tr("Covariate rasters"), QgsProcessing.TypeRaster
            ),
            help_text,
        )

    def add_resample(self, help_text: str) -> None:
        self.add_parameter(
            QgsProcessingParameterBoolean(self.RESAMPLE, self.tr("Resample onto the first raster's grid"), False),
            help_text,
            advanced=True,
        )

    def add_cluster(self, help_text: str) -> None:
        """CLUSTER (train and predict): where the work runs, as `core.cluster.parse_cluster` reads it."""
        self.add_parameter(
            QgsProcessingParameterString(self.CLUSTER, self.tr("Dask cluster (empty = in QGIS)"), "", optional=True),
            help_text
            + " Empty: in QGIS. 'local' or 'local:N': starts N worker processes on this computer (default one per "
            "core) and stops them after the run; they run the Python named by the environment variable "
            "SOCDEPTH_WORKER_PYTHON (default: a Python beside QGIS's, e.g. /usr/bin/python3), which needs dask and "
            "distributed. 'tcp://host:port': a running scheduler ('dask scheduler'; workers: 'dask worker "
            "tcp://host:port --nthreads 1' with the folder holding the plugin on their PYTHONPATH). See 'Running "
            "on a cluster' in the README.",
            advanced=True,
        )

    def cluster_spec(self, parameters, context):
        """The `core.cluster.ClusterSpec` of CLUSTER, None to work in QGIS; checked before any work."""
        from ..core.cluster import parse_cluster

        try:
            spec = parse_cluster(self.parameterAsString(parameters, self.CLUSTER, context))
        except ValueError as error:
            raise QgsProcessingException(str(error)) from error
        missing = missing_modules(("dask", "distributed")) if spec is not None else []
        if missing:
            raise QgsProcessingException(install_hint(missing))
        return spec

    def covariates(self, parameters, context) -> tuple[list, bool]:
        """The covariate layers and whether to resample them onto the first one's grid."""
        return (
            self.parameterAsLayerList(parameters, self.COVARIATES, context),
            self.parameterAsBoolean(parameters, self.RESAMPLE, context),
        )

    def check_covariates(self, card, stack, feedback) -> None:
        """The covariates must match what the model of `card` saw, band for band; say exactly what differs."""
        from ..core.compatibility import covariate_differences

        differences = covariate_differences(card, stack)
        expected, got = list(card.bands.names), stack.band_names
        if differences.band_count:
            raise QgsProcessingException(
                self.tr("The model was trained with {} covariate bands ({}), but {} were given ({}).").format(
                    len(expected), ", ".join(expected), len(got), ", ".join(got)
                )
            )
        if differences.bands:
            listed = [f"band {d.number}: model '{d.model}', given '{d.given}'" for d in differences.bands]
            raise QgsProcessingException(
                self.tr(
                    "The covariates differ from those the model was trained with ({}). Give the same rasters "
                    "in the same order: {}."
                ).format("; ".join(listed), ", ".join(expected))
            )
        if differences.layer_names_differ:
            feedback.pushWarning(
                self.tr("Covariate layers have other names than in training ({} vs {}); the bands match.").format(
                    ", ".join(stack.layer_names), ", ".join(card.bands.layer_names)
                )
            )
        if differences.crs:
            trained, given = (QgsCoordinateReferenceSystem.fromWkt(wkt) for wkt in differences.crs)
            raise QgsProcessingException(
                self.tr("The covariates are in {} but the model was trained on {}. Reproject the rasters.").format(
                    given.userFriendlyIdentifier(), trained.userFriendlyIdentifier()
                )
            )
        if differences.pixel_size:
            trained, given = differences.pixel_size
            raise QgsProcessingException(
                self.tr("The covariates have pixels of {} x {} but the model was trained on {} x {}.").format(
                    given[0], given[1], trained[0], trained[1]
                )
                + " "
                + self.tr("A CNN reads patches of cells, so the pixel size must match: resample the rasters.")
            )
