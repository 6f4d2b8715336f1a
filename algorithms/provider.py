"""The `socdepth` Processing provider."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlparse

from qgis.core import QgsApplication, QgsMessageLog, QgsProcessingModelAlgorithm, QgsProcessingProvider
from qgis.PyQt.QtGui import QIcon

from ..core.dependencies import versions
from .base import ICONS
from .harmonise import HarmoniseAlgorithm
from .help_pages import help_url
from .predict import PredictAlgorithm
from .sample import SampleAlgorithm
from .select_covariates import SelectCovariatesAlgorithm
from .stocks import StocksAlgorithm
from .styling import OutsideMapGroups
from .train import TrainAlgorithm

PLUGIN_DIR = Path(__file__).resolve().parent.parent
MODELS_DIR = PLUGIN_DIR / "models"


def plugin_version() -> str:
    for line in (PLUGIN_DIR / "metadata.txt").read_text(encoding="utf-8").splitlines():
        if line.startswith("version="):
            return line.split("=", 1)[1].strip()
    return "unknown"


class ShippedModel(QgsProcessingModelAlgorithm):
    """A Processing model shipped in models/, listed as `socdepth:<file name>` rather than by its title.

    QGIS names a model's algorithm after its title ("socdepth:Horizons to SOC maps"); a file-name id has no
    spaces, so it is easy to type in `qgis_process run` and scripts, while the Toolbox still shows the title.
    """

    def __init__(self, model_id: str = ""):
        super().__init__()
        self.model_id = model_id

    def name(self) -> str:
        return self.model_id

    def displayName(self) -> str:  # noqa: N802 - QGIS API name
        return super().name()

    def icon(self) -> QIcon:
        return QIcon(str(ICONS / "socdepth.svg"))

    def helpUrl(self) -> str:  # noqa: N802 - QGIS API name
        """The page shipped in help/, as for the algorithms; the model file's own link is to the README online."""
        return help_url(self.model_id)

    def readme_anchor(self) -> str:
        """The model's section of the README, from the link the model file carries."""
        return urlparse(self.helpContent().get("HELP_URL", "")).fragment

    def postProcessAlgorithm(self, context, feedback):  # noqa: N802 - QGIS API name
        """Names the layers QGIS loads after the outputs' descriptions ('Harmonised profiles'), not their ids.

        A model hands each step its output's id (HARMONISED) as the layer name; the descriptions are what the
        dialog shows. The steps' own styling and placement are kept; the other layers are kept out of the maps'
        group.
        """
        descriptions = {
            name: output.description()
            for child in self.childAlgorithms().values()
            for name, output in child.modelOutputs().items()
        }
        for path in context.layersToLoadOnCompletion():
            details = context.layerToLoadOnCompletionDetails(path)  # a reference: changed in place
            if details.name in descriptions:
                details.name = descriptions[details.name]
                details.forceName = True
            if details.postProcessor() is None:
                details.setPostProcessor(OutsideMapGroups())
        return super().postProcessAlgorithm(context, feedback)

    def createInstance(self):  # noqa: N802 - QGIS API name
        instance = ShippedModel(self.model_id)
        instance.loadVariant(self.toVariant())
        instance.setSourceFilePath(self.sourceFilePath())
        return instance


def shipped_models() -> list[ShippedModel]:
    """The models in models/*.model3; one that does not load is logged and left out."""
    models = []
    for path in sorted(MODELS_DIR.glob("*.model3")):
        model = ShippedModel(path.stem)
        if model.fromFile(str(path)):
            model.setSourceFilePath(str(path))
            models.append(model)
        else:
            QgsMessageLog.logMessage(f"Could not load the model {path}", "SOC Depth Mapper")
    return models


class SocDepthProvider(QgsProcessingProvider):
    def id(self) -> str:
        return "socdepth"

    def name(self) -> str:
        return "SOC depth mapping"

    def longName(self) -> str:  # noqa: N802
        return f"SOC Depth Mapper {plugin_version()}"

    def icon(self) -> QIcon:
        return QIcon(str(ICONS / "socdepth.svg"))

    def versionInfo(self) -> str:  # noqa: N802
        deps = ", ".join(f"{name} {version}" for name, version in versions().items())
        return f"{plugin_version()} ({deps})"

    def load(self) -> bool:
        # A model's steps are looked up in the registry, which lists this provider only after load(): the
        # models are added by a second loading once it is registered (as QGIS's own model provider does).
        QgsApplication.processingRegistry().providerAdded.connect(self._load_models_once_registered)
        return super().load()

    def unload(self):
        QgsApplication.processingRegistry().providerAdded.disconnect(self._load_models_once_registered)
        super().unload()

    def _load_models_once_registered(self, provider_id: str) -> None:
        if provider_id == self.id():
            self.refreshAlgorithms()

    def loadAlgorithms(self):  # noqa: N802
        algorithms = (
            HarmoniseAlgorithm(), SampleAlgorithm(), SelectCovariatesAlgorithm(), TrainAlgorithm(), PredictAlgorithm(),
            StocksAlgorithm(),
        )  # fmt: skip
        for algorithm in algorithms:
            self.addAlgorithm(algorithm)
        if QgsApplication.processingRegistry().providerById(self.id()) is not None:
            for model in shipped_models():
                self.addAlgorithm(model)
