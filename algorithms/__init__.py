"""Processing algorithms: thin adapters between QGIS and the engine in `core`."""
