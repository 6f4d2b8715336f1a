"""The `socdepth` Processing provider."""

from __future__ import annotations

from pathlib import Path

from qgis.core import QgsProcessingProvider
from qgis.PyQt.QtGui import QIcon

from ..core.dependencies import versions
from .base import ICONS
from .harmonise import HarmoniseAlgorithm
from .predict import PredictAlgorithm
from .sample import SampleAlgorithm
from .train import TrainAlgorithm

PLUGIN_DIR = Path(__file__).resolve().parent.parent


def plugin_version() -> str:
    for line in (PLUGIN_DIR / "metadata.txt").read_text(encoding="utf-8").splitlines():
        if line.startswith("version="):
            return line.split("=", 1)[1].strip()
    return "unknown"


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

    def loadAlgorithms(self):  # noqa: N802
        for algorithm in (HarmoniseAlgorithm(), SampleAlgorithm(), TrainAlgorithm(), PredictAlgorithm()):
            self.addAlgorithm(algorithm)
