"""Raster prediction: throughput and peak memory of `core.predict.predict_rasters`.

    python -m bench.predict [--tiles 8] [--trees 50] [--memory-mb 64] [--repeats 2] [--skip-cnn]

- Random Forest: `predict_rasters` with a `RandomForestDepthModel` against pyspatialml 0.22 `Raster.predict` with
  the same trees (rebuilt from plain arrays, no pickle) on the same stack, 6 depths. The forest is pooled over
  depths, so pyspatialml gets two constant rasters (top and bottom) per depth and one `predict` per depth, as a
  user would do it. Values must agree to 1e-6 (relative).
- CNN: dense `predict_block` on a raster block against extracting every patch and calling `predict`.
- Memory and scaling: the engine on a stack 4x smaller; peak memory should not grow with the map, time per
  Mpixel should stay flat.

The stack is the Edgeroi 250 m covariates (6 bands, 190 x 128) tiled `--tiles` x `--tiles` times. Every run
happens in a fresh subprocess that reports its own peak RSS. pyspatialml needs numpy>=1.26, scikit-learn>=1.4.2
and rasterio>=1.3.10, newer than QGIS's Python on Debian 12: it runs in the interpreter named by the environment
variable PYSPATIALML_PYTHON (a venv with `pip install pyspatialml==0.22`); without it that part is skipped.
This module's top level imports only numpy and rasterio, so that interpreter can run its worker.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import rasterio
from rasterio.windows import Window

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "sample_data" / "edgeroi" / "covariates_250m.tif"
INTERVALS = np.array([[0, 5], [5, 15], [15, 30], [30, 60], [60, 100], [100, 200]], dtype=float)
NODATA = -9999.0
TARGET_RF_SPEEDUP = 3.0
TARGET_CNN_SPEEDUP = 10.0
TARGET_MEMORY_GROWTH = 0.10
#: values of the engine and pyspatialml agree to this relative difference
VALUE_TOLERANCE = 1e-6


# ------------------------------------------------------------------------------------------------ helpers


def peak_rss_mb() -> float:
    """Peak resident memory of this process in MB: the high-water mark of its own memory map (VmHWM).

    Not ru_maxrss: Linux carries it over from the parent through fork and exec, so a worker started by a big
    process (`make bench` runs every bench in one) would report the parent's peak instead of its own.
    """
    status = Path("/proc/self/status")
    if status.exists():
        for line in status.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024  # kB
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 1024 / (1024 if sys.platform == "darwin" else 1)  # bytes on macOS, kB elsewhere


def tile_stack(source: Path, target: Path, tiles: int) -> None:
    """Writes `source` repeated tiles x tiles times as a tiled, uncompressed float32 GeoTIFF."""
    with rasterio.open(source) as src:
        data = src.read().astype(np.float32)
        profile = src.profile
        descriptions = src.descriptions
    bands, rows, cols = data.shape
    profile.update(
        width=cols * tiles, height=rows * tiles, dtype="float32", tiled=True, blockxsize=256, blockysize=256,
        compress=None, interleave="band", nodata=NODATA,
    )  # fmt: skip
    strip = np.tile(data, (1, 1, tiles))
    with rasterio.open(target, "w", **profile) as dst:
        for i in range(tiles):
            dst.write(strip, window=Window(0, i * rows, cols * tiles, rows))
        for band, text in enumerate(descriptions, start=1):
            dst.set_band_description(band, text)


def synthetic_targets(features: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """SOC-like (sites, 6) targets: a function of elevation, wetness and the gamma bands, decaying with depth."""
    elevation, wetness, _geology, ev1, ev2, _ev3 = features.T
    surface = 8 + 0.01 * (elevation - 300) + 0.4 * (wetness - 15) + 0.3 * ev1 - 0.2 * ev2
    middle = INTERVALS.mean(axis=1)
    return np.clip(surface, 1, None)[:, None] * np.exp(-middle / 60)[None] + rng.normal(0, 0.4, (len(features), 6))


def sample_sites(path: Path, n_sites: int, patch_size: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Patches (S, 6, p, p) around random cells of `path` and synthetic targets (S, 6)."""
    from soc_depth_mapper.core.rasters import CovariateStack

    rng = np.random.default_rng(seed)
    with CovariateStack([str(path)]) as stack:
        rows, cols = rng.integers(0, stack.height, n_sites), rng.integers(0, stack.width, n_sites)
        x, y = stack.transform * (cols + 0.5, rows + 0.5)
        patches = stack.sample(x, y, patch_size).patches
    r = patch_size // 2
    return patches, synthetic_targets(patches[:, :, r, r].astype(float), rng)


def best_of(repeats: int, function):
    """(shortest wall time of `repeats` calls, last result): the least disturbed run on a shared machine."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        result = function()
        times.append(time.perf_counter() - start)
    return min(times), result


def run_worker(python: str, kind: str, arguments: dict) -> dict:
    """Runs this module's worker `kind` in a fresh `python` process; returns the JSON it prints last."""
    command = [python, "-m", "bench.predict", "--worker", kind, json.dumps(arguments)]
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"{kind} worker failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def read_band_values(path: str) -> np.ndarray:
    with rasterio.open(path) as src:
        values = src.read().astype(np.float64)
        return np.where(values == src.nodata, np.nan, values)


# ------------------------------------------------------------------------------------------------ workers


def bundle_for(model, stack):
    """A model file's contents for a model fitted outside `train`: SOC at the six depths, on `stack`'s grid."""
    from soc_depth_mapper.core.bundle import SocModel
    from soc_depth_mapper.core.card import Bands, Grid, ModelCard

    card = ModelCard(
        kind=model.kind,
        property="SOC",
        intervals=tuple(map(tuple, INTERVALS.tolist())),
        bands=Bands(tuple(stack.band_names)),
        grid=Grid(stack.crs_wkt, tuple(stack.transform.to_gdal()), tuple(stack.res)),
    )
    return SocModel(model, card)


def engine_worker(arguments: dict) -> dict:
    """predict_rasters with the saved forest on one stack (runs in its own process)."""
    from soc_depth_mapper.core.depths import interval_labels
    from soc_depth_mapper.core.models.forest import RandomForestDepthModel
    from soc_depth_mapper.core.predict import predict_rasters
    from soc_depth_mapper.core.rasters import CovariateStack

    config = json.loads(Path(arguments["config"]).read_text())
    with np.load(arguments["arrays"], allow_pickle=False) as stored:
        model = RandomForestDepthModel.from_state(config, dict(stored))
    labels = [f"SOC {label}" for label in interval_labels(INTERVALS, " cm")]
    with CovariateStack([arguments["stack"]]) as stack:
        bundle = bundle_for(model, stack)
        model_seconds = 0.0
        predict_block = bundle.predict_block

        def timed_predict_block(block: np.ndarray, depth_indices) -> np.ndarray:
            nonlocal model_seconds
            start = time.perf_counter()
            values = predict_block(block, depth_indices)
            model_seconds += time.perf_counter() - start
            return values

        bundle.predict_block = timed_predict_block
        start = time.perf_counter()
        result = predict_rasters(
            bundle, stack, arguments["output"], range(len(INTERVALS)), labels, memory_mb=arguments["memory_mb"]
        )
        seconds = time.perf_counter() - start
    return {
        "seconds": seconds,
        "model_seconds": model_seconds,
        "peak_rss_mb": peak_rss_mb(),
        "n_pixels": result.n_pixels,
    }


def rebuild_forest(arrays: dict[str, np.ndarray], n_features: int):
    """A scikit-learn RandomForestRegressor with the trees of `RandomForestDepthModel.get_state()` (one forest),
    built from plain arrays for whichever scikit-learn this interpreter has."""
    from sklearn.ensemble import RandomForestRegressor
    from sklearn.tree import DecisionTreeRegressor
    from sklearn.tree._tree import Tree

    offsets = arrays["forest0.node_offsets"]
    node_dtype = Tree(n_features, np.ones(1, dtype=np.intp), 1).__getstate__()["nodes"].dtype
    fields = {
        "left_child": "children_left", "right_child": "children_right", "feature": "feature",
        "threshold": "threshold", "impurity": "impurity", "n_node_samples": "n_node_samples",
        "weighted_n_node_samples": "weighted_n_node_samples",
    }  # fmt: skip
    estimators = []
    for t, depth in enumerate(arrays["forest0.max_depth"]):
        start, stop = offsets[t], offsets[t + 1]
        nodes = np.zeros(stop - start, dtype=node_dtype)  # newer fields (missing_go_to_left) stay 0: no NaN
        for field, source in fields.items():
            nodes[field] = arrays[f"forest0.{source}"][start:stop]
        tree = Tree(n_features, np.ones(1, dtype=np.intp), 1)
        values = np.ascontiguousarray(arrays["forest0.value"][start:stop], dtype=np.float64).reshape(-1, 1, 1)
        tree.__setstate__({"max_depth": int(depth), "node_count": int(stop - start), "nodes": nodes, "values": values})
        estimator = DecisionTreeRegressor()
        estimator.tree_, estimator.n_outputs_, estimator.n_features_in_ = tree, 1, n_features
        estimators.append(estimator)
    forest = RandomForestRegressor(n_estimators=len(estimators), n_jobs=-1)
    forest.estimators_ = estimators
    forest.n_outputs_, forest.n_features_in_ = 1, n_features
    return forest


def pyspatialml_worker(arguments: dict) -> dict:
    """pyspatialml `Raster.predict`, one call per depth with constant top/bottom rasters (own process)."""
    from pyspatialml import Raster

    with np.load(arguments["arrays"], allow_pickle=False) as stored:
        forest = rebuild_forest(dict(stored), n_features=arguments["n_bands"] + 2)
    folder = Path(arguments["folder"])
    with rasterio.open(arguments["stack"]) as src:
        profile = src.profile
        shape = (src.height, src.width)
    profile.update(count=1, compress=None)
    constants = []
    for d, (top, bottom) in enumerate(INTERVALS):
        pair = []
        for name, value in (("top", top), ("bottom", bottom)):
            path = folder / f"{name}_{d}.tif"
            with rasterio.open(path, "w", **profile) as dst:
                dst.write(np.full(shape, value, dtype=np.float32), 1)
            pair.append(str(path))
        constants.append(pair)
    outputs, seconds = [], 0.0
    for d, (top_path, bottom_path) in enumerate(constants):
        raster = Raster([arguments["stack"], top_path, bottom_path])
        output = str(folder / f"pyspatialml_{d}.tif")
        start = time.perf_counter()
        raster.predict(forest, file_path=output, dtype="float32", nodata=NODATA)
        seconds += time.perf_counter() - start
        outputs.append(output)
    return {"seconds": seconds, "peak_rss_mb": peak_rss_mb(), "outputs": outputs}


WORKERS = {"engine": engine_worker, "pyspatialml": pyspatialml_worker}


# --------------------------------------------------------------------------------------------- benchmarks


def train_forest(folder: Path, n_trees: int, seed: int) -> dict[str, str]:
    """Fits the pooled forest on 300 random cells of the Edgeroi stack and saves it as JSON + .npz arrays."""
    from soc_depth_mapper.core.models.forest import RandomForestDepthModel

    patches, targets = sample_sites(SAMPLE, 300, 1, seed)
    model = RandomForestDepthModel(n_trees=n_trees, random_state=seed).fit(patches, targets, INTERVALS)
    config, arrays = model.get_state()
    paths = {"config": str(folder / "forest.json"), "arrays": str(folder / "forest.npz")}
    Path(paths["config"]).write_text(json.dumps(config))
    np.savez(paths["arrays"], **arrays)
    return paths


def best(runs: list[dict]) -> dict:
    """Several runs of one measurement: the fastest one, with the highest peak memory of all."""
    fastest = min(runs, key=lambda run: run["seconds"])
    return {**fastest, "peak_rss_mb": max(run["peak_rss_mb"] for run in runs)}


def forest_benchmark(folder: Path, tiles: int, n_trees: int, memory_mb: float, repeats: int, rows: list) -> None:
    model_files = train_forest(folder, n_trees, seed=0)
    stacks = {n: folder / f"stack_{n}x{n}.tif" for n in (tiles // 2, tiles)}  # the second has 4x the pixels
    engine_arguments = {}
    for n, path in stacks.items():
        tile_stack(SAMPLE, path, n)
        output = str(folder / f"engine_{n}.tif")
        engine_arguments[n] = {**model_files, "stack": str(path), "output": output, "memory_mb": memory_mb}
    python = os.environ.get("PYSPATIALML_PYTHON")
    reference_arguments = {**model_files, "stack": str(stacks[tiles]), "folder": str(folder), "n_bands": 6}

    def engine(n: int) -> dict:
        return run_worker(sys.executable, "engine", engine_arguments[n])

    small = best([engine(tiles // 2) for _ in range(repeats)])
    # engine and pyspatialml alternate, so that a busy spell on a shared machine hits both alike
    big_runs, reference_runs = [], []
    for _ in range(repeats):
        big_runs.append(engine(tiles))
        if python:
            reference_runs.append(run_worker(python, "pyspatialml", reference_arguments))
    big = best(big_runs)
    engine_rate = big["n_pixels"] / big["seconds"]
    rows.append((f"RF engine, {big['n_pixels'] / 1e6:.2f} Mpx x 6 depths", f"{engine_rate:,.0f} px/s", "", ""))
    # what the engine adds to the model's own predict_block: reading, masks, writing, overviews
    overhead = 1 - big["model_seconds"] / big["seconds"]
    rows.append(("RF engine time outside predict_block", f"{100 * overhead:.0f} %", "", ""))
    if python:
        reference = best(reference_runs)
        reference_rate = big["n_pixels"] / reference["seconds"]
        speedup = engine_rate / reference_rate
        memory_ratio = big["peak_rss_mb"] / reference["peak_rss_mb"]
        ours = read_band_values(engine_arguments[tiles]["output"])
        theirs = np.concatenate([read_band_values(path) for path in reference["outputs"]])
        both = np.isfinite(ours) & np.isfinite(theirs)
        same_nodata = bool((np.isfinite(ours) == np.isfinite(theirs)).all())
        relative = float(np.max(np.abs(ours[both] - theirs[both]) / np.maximum(np.abs(theirs[both]), 1.0)))
        rows += [
            ("RF pyspatialml 0.22 Raster.predict", f"{reference_rate:,.0f} px/s", "", ""),
            (
                "RF speed-up vs pyspatialml",
                f"{speedup:.2f}x",
                f">= {TARGET_RF_SPEEDUP:g}x",
                _verdict(speedup >= TARGET_RF_SPEEDUP),
            ),
            (
                "RF peak RSS engine / pyspatialml",
                f"{big['peak_rss_mb']:.0f} / {reference['peak_rss_mb']:.0f} MB",
                "<= 1.00",
                _verdict(memory_ratio <= 1.0, f"{memory_ratio:.2f}"),
            ),
            (
                "RF max relative difference",
                f"{relative:.1e}",
                f"<= {VALUE_TOLERANCE:g}",
                _verdict(same_nodata and relative <= VALUE_TOLERANCE),
            ),
        ]
    else:
        rows.append(("RF pyspatialml 0.22", "skipped: set PYSPATIALML_PYTHON", "", ""))

    growth = big["peak_rss_mb"] / small["peak_rss_mb"] - 1
    per_mpx = [run["seconds"] / run["n_pixels"] * 1e6 for run in (small, big)]
    rows += [
        (
            f"Peak RSS {small['n_pixels'] / 1e6:.2f} -> {big['n_pixels'] / 1e6:.2f} Mpx (memory_mb {memory_mb:g})",
            f"{small['peak_rss_mb']:.0f} -> {big['peak_rss_mb']:.0f} MB",
            f"<= +{100 * TARGET_MEMORY_GROWTH:.0f} %",
            _verdict(growth <= TARGET_MEMORY_GROWTH, f"{100 * growth:+.1f} %"),
        ),
        (
            "Time per Mpx, small -> large",
            f"{per_mpx[0]:.1f} -> {per_mpx[1]:.1f} s",
            "flat",
            f"{per_mpx[1] / per_mpx[0]:.2f}x",
        ),
    ]


def cnn_benchmark(block_rows: int, block_cols: int, rows: list) -> None:
    """Dense `predict_block` against patch extraction + `predict` on the same block of the tiled stack."""
    from soc_depth_mapper.core.models.cnn import CNNDepthModel
    from soc_depth_mapper.core.rasters import CovariateStack

    patches, targets = sample_sites(SAMPLE, 300, 7, seed=1)
    model = CNNDepthModel(epochs=3, patience=3, random_state=0).fit(patches, targets, INTERVALS)
    r = model.patch_size // 2
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "stack.tif"
        tile_stack(SAMPLE, path, 4)
        with CovariateStack([str(path)]) as stack:
            block = stack.read_block(0, 0, block_rows, block_cols, r)
    p = model.patch_size

    def patch_by_patch() -> np.ndarray:
        windows = np.lib.stride_tricks.sliding_window_view(block, (p, p), axis=(1, 2))
        cell_patches = np.ascontiguousarray(windows.transpose(1, 2, 0, 3, 4)).reshape(-1, block.shape[0], p, p)
        return model.predict(cell_patches).T.reshape(-1, block_rows, block_cols)

    dense_seconds, dense = best_of(3, lambda: model.predict_block(block))
    patch_seconds, per_patch = best_of(3, patch_by_patch)
    n = block_rows * block_cols
    speedup = patch_seconds / dense_seconds
    difference = float(np.nanmax(np.abs(dense - per_patch)))
    rows.append((f"CNN dense predict_block, {n:,} px", f"{n / dense_seconds:,.0f} px/s", "", ""))
    rows.append(("CNN patches + predict", f"{n / patch_seconds:,.0f} px/s", "", ""))
    rows.append(
        (
            "CNN dense speed-up",
            f"{speedup:.1f}x",
            f">= {TARGET_CNN_SPEEDUP:g}x",
            _verdict(speedup >= TARGET_CNN_SPEEDUP),
        )
    )
    rows.append(("CNN max |dense - patches|", f"{difference:.1e}", "<= 1e-4", _verdict(difference <= 1e-4)))


def _verdict(ok: bool, value: str = "") -> str:
    return f"{value} {'ok' if ok else 'MISSED'}".strip()


def print_table(rows: list, header: tuple[str, ...] = ("measure", "value", "target", "result")) -> None:
    widths = [max(len(str(row[i])) for row in rows) for i in range(4)]
    widths = [max(w, len(h)) for w, h in zip(widths, header)]
    for row in [header, *rows]:
        print("  ".join(str(cell).ljust(width) for cell, width in zip(row, widths)).rstrip())


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tiles", type=int, default=8, help="repeat the Edgeroi stack N x N times (default 8)")
    parser.add_argument("--trees", type=int, default=50, help="trees in the forest (default 50)")
    parser.add_argument("--memory-mb", type=float, default=64, help="predict_rasters memory budget (default 64)")
    parser.add_argument("--repeats", type=int, default=2, help="runs per RF measurement, best time kept (default 2)")
    parser.add_argument("--skip-cnn", action="store_true")
    parser.add_argument("--worker", choices=sorted(WORKERS), help=argparse.SUPPRESS)
    parser.add_argument("worker_arguments", nargs="?", help=argparse.SUPPRESS)
    options = parser.parse_args(argv)
    if options.worker:
        print(json.dumps(WORKERS[options.worker](json.loads(options.worker_arguments))))
        return
    rows: list = []
    with tempfile.TemporaryDirectory(prefix="bench_predict_") as folder:
        forest_benchmark(Path(folder), options.tiles, options.trees, options.memory_mb, options.repeats, rows)
    if not options.skip_cnn:
        cnn_benchmark(128, 512, rows)
    print_table(rows)


if __name__ == "__main__":
    main()
