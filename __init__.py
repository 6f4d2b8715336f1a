"""SOC Depth Mapper: a QGIS Processing plugin for depth-wise soil organic carbon mapping."""


def classFactory(iface):  # noqa: N802 - QGIS's required entry point name
    """Called by QGIS to load the plugin; `iface` is None under qgis_process."""
    from .plugin import SocDepthMapperPlugin

    return SocDepthMapperPlugin(iface)
