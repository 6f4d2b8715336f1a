"""`qgis_process.bin run socdepth:predict -- CLUSTER=local:2`: the workers are started with the configured Python
(never a fork of qgis_process) and the maps equal those of the engine run in this process."""

from __future__ import annotations

import os
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import psutil
import rasterio
from rasterio.crs import CRS
from rasterio.transform import from_origin

from soc_depth_mapper.core.bundle import SocModel
from soc_depth_mapper.core.predict import predict_rasters
from soc_depth_mapper.core.rasters import CovariateStack
from soc_depth_mapper.core.training import TrainingData, train

ROWS, COLS = 60, 280


def inputs(folder: Path, rows: int = ROWS, cols: int = COLS) -> tuple[Path, Path]:
    """A two-band covariate GeoTIFF and a 20-tree forest model file trained on 120 of its cells."""
    grid_rows, grid_cols = np.mgrid[0:rows, 0:cols].astype(np.float32)
    raster = np.stack([grid_cols / cols, np.cos(grid_rows / 5.0)])
    covariates = folder / "cov.tif"
    with rasterio.open(
        covariates, "w", driver="GTiff", width=cols, height=rows, count=2, dtype="float32", crs="EPSG:28355",
        transform=from_origin(600_000, 6_500_000, 100, 100),
    ) as dataset:  # fmt: skip
        dataset.write(raster)
    rng = np.random.default_rng(0)
    site_rows, site_cols = rng.integers(0, rows, 120), rng.integers(0, cols, 120)
    values = 5 + 10 * raster[0, site_rows, site_cols] + 2 * raster[1, site_rows, site_cols]
    data = TrainingData(
        site_ids=np.arange(120), x=site_cols.astype(float), y=site_rows.astype(float),
        patches=raster[:, site_rows, site_cols].T[:, :, None, None], targets=values[:, None],
        intervals=np.array([[0.0, 30.0]]), property_name="SOC", band_names=["cov_1", "cov_2"],
    )  # fmt: skip
    model = folder / "rf.socmodel"
    grid = {
        "crs_wkt": CRS.from_epsg(28355).to_wkt(),
        "transform": [600_000, 100, 0, 6_500_000, 0, -100],
        "res": [100.0, 100.0],
        "nodata": [None, None],
    }
    SocModel.from_training(train(data, "random_forest", {"n_trees": 20}, validation="none"), data, grid).save(
        str(model)
    )
    return covariates, model


def test_predict_on_a_local_cluster_from_the_command_line(qgis_process_command, tmp_path):
    covariates, model = inputs(tmp_path)
    # the configured worker Python: a wrapper that notes each start, then runs this Python
    log = tmp_path / "worker_starts.txt"
    wrapper = tmp_path / "python_for_workers"
    wrapper.write_text(f'#!/bin/sh\necho "$@" >> {log}\nexec {sys.executable} "$@"\n')
    wrapper.chmod(wrapper.stat().st_mode | stat.S_IXUSR)
    executable, env = qgis_process_command
    out = tmp_path / "cluster.tif"
    done = subprocess.run(
        [executable, "--json", "run", "socdepth:predict", "--", f"MODEL={model}", f"COVARIATES={covariates}",
         "MEMORY_MB=64", "CLUSTER=local:2", f"OUTPUT={out}"],
        env={**env, "SOCDEPTH_WORKER_PYTHON": str(wrapper)}, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    assert "distributed.cli.dask_worker" in log.read_text()  # started by the configured Python, once
    with CovariateStack([str(covariates)]) as stack:
        local = predict_rasters(SocModel.load(str(model)), stack, str(tmp_path / "local.tif"), [0], ["SOC 0-30 cm"])
    with rasterio.open(out) as mine, rasterio.open(local.output) as theirs:
        np.testing.assert_array_equal(mine.read(), theirs.read())
    assert [name for name in os.listdir(tmp_path) if name.startswith(".")] == []  # no tile folder or partial file


def test_sigterm_during_a_cluster_run_removes_the_tiles_and_stops_the_workers(qgis_process_command, tmp_path):
    covariates, model = inputs(tmp_path, rows=1500, cols=1500)
    maps = tmp_path / "maps"
    maps.mkdir()
    executable, env = qgis_process_command
    run = subprocess.Popen(
        [executable, "run", "socdepth:predict", "--", f"MODEL={model}", f"COVARIATES={covariates}",
         "MEMORY_MB=64", "CLUSTER=local:2", f"OUTPUT={maps / 'soc.tif'}"],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 120
        while not any(p.name.startswith("tile_") for p in maps.glob(".*.tiles/*")):  # the workers are predicting
            assert run.poll() is None, f"predict ended before a tile was written:\n{run.stdout.read()}"
            assert time.monotonic() < deadline
            time.sleep(0.05)
        workers = psutil.Process(run.pid).children(recursive=True)
        assert workers
        run.send_signal(signal.SIGTERM)
        output = run.communicate(timeout=60)[0]
    finally:
        run.kill()
    assert run.returncode == -signal.SIGTERM, output  # ended by the signal, after cleaning up
    assert list(maps.iterdir()) == []
    _, alive = psutil.wait_procs(workers, timeout=30)
    assert alive == []
