"""Benchmarks of the engine against reference implementations; run them all with `python -m bench`."""
