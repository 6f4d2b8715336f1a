"""Plugin entry: registers the Processing provider and nothing else."""

from qgis.core import QgsApplication

from .algorithms.provider import SocDepthProvider


class SocDepthMapperPlugin:
    """Registers the `socdepth` provider; never touches `iface`, so it loads under qgis_process."""

    def __init__(self, iface=None):
        self.provider = None

    def initProcessing(self):  # noqa: N802 - QGIS API name
        self.provider = SocDepthProvider()
        QgsApplication.processingRegistry().addProvider(self.provider)

    def initGui(self):  # noqa: N802 - QGIS API name
        self.initProcessing()

    def unload(self):
        if self.provider is not None:
            QgsApplication.processingRegistry().removeProvider(self.provider)
            self.provider = None
