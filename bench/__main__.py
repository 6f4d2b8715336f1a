"""Runs every benchmark in turn and prints its table: `python -m bench` from the repository root."""

from __future__ import annotations

import importlib

#: benchmark modules, each with a `main()` that prints its own table; add new ones here
BENCHMARKS: list[str] = [
    "bench.spline",
    "bench.harmonise_qgis",
    "bench.accuracy",
    "bench.forest_defaults",
    "bench.cnn_seeds",
    "bench.cnn_defaults",
    "bench.selection",
    "bench.predict",
    "bench.ranger",
    "bench.limits",
    "bench.aoa",
    "bench.cluster",
    "bench.transfer",
    "bench.soak",
]


def main() -> None:
    for name in BENCHMARKS:
        print(f"\n=== {name} ===", flush=True)
        importlib.import_module(name).main()


if __name__ == "__main__":
    main()
