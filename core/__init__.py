"""The engine: QGIS-free numerics for harmonising, sampling, training and predicting."""
