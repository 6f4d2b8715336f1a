"""A small base class shared by the plugin's algorithms: translation, help, icon and dependency check."""

from __future__ import annotations

from pathlib import Path

from qgis.core import (
    QgsProcessing,
    QgsProcessingAlgorithm,
    QgsProcessingParameterBoolean,
    QgsProcessingParameterDefinition,
    QgsProcessingParameterMultipleLayers,
)
from qgis.PyQt.QtCore import QCoreApplication
from qgis.PyQt.QtGui import QIcon

from ..core.dependencies import install_hint, missing_modules

ICONS = Path(__file__).resolve().parent.parent / "icons"
HELP_URL = "https://github.com/soc-depth-mapper/soc-depth-mapper#{anchor}"

GROUPS = {
    "prepare": "1 — Prepare data",
    "model": "2 — Model",
    "map": "3 — Map",
}


#: words every algorithm is found by in the Toolbox search
COMMON_TAGS = ("soil", "soil organic carbon", "SOC", "carbon", "digital soil mapping", "DSM", "depth")


class SocAlgorithm(QgsProcessingAlgorithm):
    """Subclasses set NAME, DISPLAY_NAME, SHORT_DESCRIPTION, TAGS, GROUP, HELP, HELP_ANCHOR, ICON and REQUIRES."""

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
        return HELP_URL.format(anchor=self.HELP_ANCHOR or self.NAME)

    def icon(self) -> QIcon:
        return QIcon(str(ICONS / self.ICON))

    def canExecute(self):  # noqa: N802
        missing = missing_modules(self.REQUIRES)
        if missing:
            return False, install_hint(missing)
        return True, ""

    def add_parameter(self, parameter, help_text: str, advanced: bool = False):
        """Adds a parameter with its help text (shown in the dialog's tooltip and the help panel)."""
        parameter.setHelp(self.tr(help_text))
        if advanced:
            parameter.setFlags(parameter.flags() | QgsProcessingParameterDefinition.FlagAdvanced)
        self.addParameter(parameter)
        return parameter


class CovariateAlgorithm(SocAlgorithm):
    """An algorithm that reads covariate rasters: the COVARIATES and RESAMPLE parameters, defined once for
    sample, train and predict, each with its own help text."""

    COVARIATES = "COVARIATES"
    RESAMPLE = "RESAMPLE"

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

    def covariates(self, parameters, context) -> tuple[list, bool]:
        """The covariate layers and whether to resample them onto the first one's grid."""
        return (
            self.parameterAsLayerList(parameters, self.COVARIATES, context),
            self.parameterAsBoolean(parameters, self.RESAMPLE, context),
        )
