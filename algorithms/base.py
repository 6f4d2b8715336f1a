"""A small base class shared by the plugin's algorithms: translation, help, icon and dependency check."""

from __future__ import annotations

from pathlib import Path

from qgis.core import QgsProcessingAlgorithm, QgsProcessingParameterDefinition
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


class SocAlgorithm(QgsProcessingAlgorithm):
    """Subclasses set NAME, DISPLAY_NAME, GROUP, HELP, HELP_ANCHOR, ICON and REQUIRES."""

    NAME = ""
    DISPLAY_NAME = ""
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
