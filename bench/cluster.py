"""Prediction on a Dask LocalCluster: the speed-up of two workers over one, and the cost against a run in this
process, for the same random forest maps (which must be bit-identical).

    python -m bench.cluster [--tiles 12] [--trees 100] [--memory-mb 256]

The stack is the Edgeroi 250 m covariates tiled `--tiles` x `--tiles` times; the forest is trained on 300
random cells with synthetic SOC at six depths (see bench.predict). Each cluster run starts and stops its own
workers; the table gives the whole run and, apart, the seconds until the workers were ready.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import rasterio

from bench.predict import INTERVALS, SAMPLE, sample_sites, tile_stack

TARGET_SPEEDUP = 1.8
TARGET_OVERHEAD = 0.10


def train_model(stack_path: Path, model_path: Path, n_trees: int) -> None:
    from soc_depth_mapper.core.bundle import SocModel
    from soc_depth_mapper.core.training import TrainingData, train

    patches, targets = sample_sites(SAMPLE, 300, 1, seed=0)
    with rasterio.open(stack_path) as src:
        grid = {
            "crs_wkt": src.crs.to_wkt() if src.crs else "",
            "transform": list(src.transform)[:6],
            "res": list(src.res),
            "nodata": list(src.nodatavals),
        }
        names = [f"covariates_{d or i + 1}" for i, d in enumerate(src.descriptions)]
    n = len(patches)
    data = TrainingData(
        site_ids=np.arange(n), x=np.zeros(n), y=np.zeros(n), patches=patches, targets=targets,
        intervals=INTERVALS, property_name="SOC", band_names=names,
    )  # fmt: skip
    result = train(data, "random_forest", {"n_trees": n_trees}, validation="none")
    SocModel.from_training(result, data, grid).save(str(model_path))


def predict_once(model_path: Path, stack_path: Path, out: Path, memory_mb: float, cluster: str) -> dict:
    """One run; its wall time, the seconds until the workers were ready, and the map."""
    from soc_depth_mapper.core.bundle import SocModel
    from soc_depth_mapper.core.cluster import ClusterRun, parse_cluster
    from soc_depth_mapper.core.predict import predict_rasters
    from soc_depth_mapper.core.rasters import CovariateStack

    bundle = SocModel.load(str(model_path))
    spec = parse_cluster(cluster)
    run = None if spec is None else ClusterRun(spec, str(model_path))
    ready: list[float] = []
    start, cpu_start = time.perf_counter(), time.process_time()

    def progress(fraction: float, message: str) -> bool:
        if not ready and message.startswith(("Predicting on", "Predicted")):
            ready.append(time.perf_counter() - start)
        return True

    with CovariateStack([str(stack_path)]) as stack:
        result = predict_rasters(
            bundle, stack, str(out), list(range(len(INTERVALS))), [f"SOC {a:g}-{b:g} cm" for a, b in INTERVALS],
            memory_mb=memory_mb, progress=progress, cluster=run,
        )  # fmt: skip
    seconds, client_cpu = time.perf_counter() - start, time.process_time() - cpu_start
    with rasterio.open(result.output) as dataset:
        values = dataset.read()
    startup = ready[0] if run is not None and ready else 0.0
    return {"seconds": seconds, "startup": startup, "cells": result.n_pixels, "values": values, "cpu": client_cpu}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tiles", type=int, default=12)
    parser.add_argument("--trees", type=int, default=100)
    parser.add_argument("--memory-mb", type=float, default=256)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        stack_path, model_path = folder / "stack.tif", folder / "forest.socmodel"
        tile_stack(SAMPLE, stack_path, args.tiles)
        train_model(stack_path, model_path, args.trees)
        runs = {}
        for cluster in ("", "local:1", "local:2"):
            runs[cluster] = predict_once(model_path, stack_path, folder / f"map{cluster[-1:]}.tif", args.memory_mb,
                                         cluster)  # fmt: skip
    reference = runs[""]
    identical = all(np.array_equal(reference["values"], run["values"]) for run in runs.values())
    cells = reference["cells"]
    print(f"{cells:,} cells x {len(INTERVALS)} depths, {args.trees} trees, MEMORY_MB {args.memory_mb:g}")
    print("| run | wall s | workers ready after s | cells/s (whole run) | cells/s (after start) | client CPU s |")
    print("| --- | --- | --- | --- | --- | --- |")
    for cluster, run in runs.items():
        working = run["seconds"] - run["startup"]
        print(
            f"| {cluster or 'in process'} | {run['seconds']:.1f} | {run['startup']:.1f} | "
            f"{cells / run['seconds']:,.0f} | {cells / working:,.0f} | {run['cpu']:.1f} |"
        )
    one, two = (runs[c]["seconds"] - runs[c]["startup"] for c in ("local:1", "local:2"))
    overhead = (runs["local:2"]["seconds"] - runs["local:2"]["startup"]) / reference["seconds"] - 1
    print(f"speed-up of 2 workers over 1 (after start): {one / two:.2f}x (target >= {TARGET_SPEEDUP}x)")
    print(
        f"2 workers against in process (after start): {100 * overhead:+.0f} % (target <= {100 * TARGET_OVERHEAD:.0f} %)"
    )
    print(f"maps bit-identical to in process: {identical}")
    print(
        "client CPU s: this process; with a cluster, the client's share (starting the cluster, reading the tiles, "
        "writing and compressing the GeoTIFFs), taken from the cores the workers share"
    )


if __name__ == "__main__":
    main()
