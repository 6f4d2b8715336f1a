"""The engine: QGIS-free numerics for harmonising, sampling, training and predicting."""

#: the engine's version, the plugin's (metadata.txt); a cluster's workers must run the same
__version__ = "0.1.0"
