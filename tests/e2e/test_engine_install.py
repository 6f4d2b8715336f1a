"""The engine alone installs with pip from the plugin's zip into a fresh Python without QGIS, and a Dask worker
started with that Python (nothing of the checkout on its path) predicts the same maps, bit for bit, as this
process. The oracle is `predict_rasters` in this process; the zip is the one `make package` ships."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest
import rasterio
from rasterio.transform import from_origin

from soc_depth_mapper.core import __version__ as ENGINE_VERSION  # noqa: N812 - a constant
from soc_depth_mapper.core.bundle import SocModel
from soc_depth_mapper.core.cluster import ClusterRun, ClusterSpec
from soc_depth_mapper.core.predict import predict_rasters
from soc_depth_mapper.core.rasters import CovariateStack
from soc_depth_mapper.core.training import TrainingData, train

REPO = Path(__file__).resolve().parents[2]
ROWS, COLS = 60, 90
X0, Y0 = 500_000.0, 6_600_000.0
GRID = {"crs_wkt": "", "transform": [X0, 1, 0, Y0, 0, -1], "res": [1.0, 1.0], "nodata": [None, None]}
#: a budget of a few thousand cells per block: several tasks
SMALL_MB = 0.3


def load_packager():
    """scripts/ is no package: load the script as a module from its file."""
    spec = importlib.util.spec_from_file_location("soc_package_script", REPO / "scripts" / "package.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def worker_python(tmp_path_factory) -> Path:
    """A throw-away venv (seeing the system's numpy, rasterio and dask, as a cluster node's Python would) with the
    engine installed from the plugin zip by the command README gives."""
    folder = tmp_path_factory.mktemp("engine_venv")
    plugin_zip = load_packager().build(folder / "dist")
    subprocess.run(["/usr/bin/python3", "-m", "venv", "--system-site-packages", str(folder / "venv")], check=True)
    python = folder / "venv" / "bin" / "python"
    command = [str(python), "-m", "pip", "install", "--no-deps", "--no-build-isolation", "--no-index", str(plugin_zip)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=120, cwd=folder, env=clean_environment())
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    return python


def clean_environment() -> dict[str, str]:
    """This environment without PYTHONPATH, so that nothing of the checkout can be imported by accident."""
    return {key: value for key, value in os.environ.items() if key != "PYTHONPATH"} | {"OMP_NUM_THREADS": "1"}


def run_python(python: Path, code: str, cwd: Path) -> str:
    done = subprocess.run([str(python), "-c", code], capture_output=True, text=True, cwd=cwd, env=clean_environment())
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout.strip()


def test_the_installed_engine_is_the_core_package_alone_without_qgis(worker_python, tmp_path):
    code = (
        "import sys, soc_depth_mapper, soc_depth_mapper.core as core, soc_depth_mapper.core.cluster, "
        "soc_depth_mapper.core.predict, soc_depth_mapper.core.models.forest\n"
        "print(core.__version__, core.__file__, 'qgis' in sys.modules, hasattr(soc_depth_mapper, 'classFactory'))"
    )
    version, location, qgis_imported, has_plugin_entry = run_python(worker_python, code, tmp_path).split()
    assert version == ENGINE_VERSION
    assert Path(location).is_relative_to(worker_python.parent.parent)  # the venv's copy, not the checkout
    assert qgis_imported == "False"
    assert has_plugin_entry == "False"  # the plugin's own __init__ (QGIS's entry point) is not installed
    command = [str(worker_python), "-c", "import soc_depth_mapper.algorithms"]
    done = subprocess.run(command, capture_output=True, text=True, cwd=tmp_path, env=clean_environment())
    assert done.returncode != 0 and "No module named 'soc_depth_mapper.algorithms'" in done.stderr


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> tuple[str, str]:
    """A small covariate raster with a nodata cell and a quantile forest trained on it, as files."""
    folder = tmp_path_factory.mktemp("engine_inputs")
    rows, cols = np.mgrid[0:ROWS, 0:COLS].astype(np.float32)
    raster = np.stack([cols / COLS, np.sin(rows / 6.0)])
    written = raster.copy()
    written[1, 5, 7] = -9999.0
    covariate_path = folder / "cov.tif"
    profile = dict(driver="GTiff", width=COLS, height=ROWS, count=2, dtype="float32", nodata=-9999.0)
    with rasterio.open(covariate_path, "w", crs="EPSG:28355", transform=from_origin(X0, Y0, 1, 1), **profile) as dst:
        dst.write(written)
    rng = np.random.default_rng(1)
    n = 120
    site_rows, site_cols = rng.integers(0, ROWS, n), rng.integers(0, COLS, n)
    base = 10 + 8 * raster[0, site_rows, site_cols] + 3 * raster[1, site_rows, site_cols]
    data = TrainingData(
        site_ids=np.arange(n), x=X0 + site_cols + 0.5, y=Y0 - site_rows - 0.5,
        patches=raster[:, site_rows, site_cols].T[:, :, None, None],
        targets=np.stack([base, 0.5 * base], axis=1) + rng.normal(0, 0.3, (n, 2)),
        intervals=np.array([[0.0, 10.0], [10.0, 30.0]]), property_name="SOC", band_names=["cov_1", "cov_2"],
    )  # fmt: skip
    result = train(data, "random_forest", {"n_trees": 20}, validation="none", random_state=3)
    model_path = folder / "forest.socmodel"
    SocModel.from_training(result, data, GRID).save(str(model_path))
    return str(model_path), str(covariate_path)


def predict(model_path: str, covariate_path: str, out: Path, run: ClusterRun | None = None) -> list[np.ndarray]:
    """Maps and 90 % intervals of both depths, as arrays read back from the files."""
    bundle = SocModel.load(model_path)
    with CovariateStack([covariate_path]) as stack:
        result = predict_rasters(
            bundle, stack, str(out / "soc.tif"), [0, 1], ["SOC 0-10 cm", "SOC 10-30 cm"], memory_mb=SMALL_MB,
            interval=0.9, uncertainty_path=str(out / "unc.tif"), cluster=run,
        )  # fmt: skip
    arrays = []
    for path in (result.output, result.uncertainty):
        with rasterio.open(path) as dataset:
            arrays.append(dataset.read())
    return arrays


def test_a_worker_with_the_installed_engine_predicts_bit_identical_maps(worker_python, inputs, tmp_path):
    from distributed import Client, LocalCluster

    model_path, covariate_path = inputs
    expected = predict(model_path, covariate_path, tmp_path)
    with LocalCluster(n_workers=0, host="127.0.0.1", dashboard_address=None) as scheduler:
        worker = subprocess.Popen(
            [str(worker_python), "-m", "distributed.cli.dask_worker", scheduler.scheduler_address, "--nthreads",
             "1", "--no-dashboard", "--memory-limit", "0"],
            cwd=tmp_path, env=clean_environment(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        try:
            with Client(scheduler, set_as_default=False) as client:
                deadline = time.monotonic() + 60
                while not client.scheduler_info()["workers"]:
                    assert worker.poll() is None and time.monotonic() < deadline, "the worker did not start"
                    time.sleep(0.1)
                locations = client.run(lambda: __import__("soc_depth_mapper.core", fromlist=["core"]).__file__)
                (location,) = locations.values()
                assert Path(location).is_relative_to(worker_python.parent.parent)
            run = ClusterRun(ClusterSpec(address=scheduler.scheduler_address), model_path)
            out = tmp_path / "cluster"
            out.mkdir()
            arrays = predict(model_path, covariate_path, out, run)
        finally:
            worker.terminate()
            worker.wait(30)
    assert len(arrays) == len(expected) == 2
    for mine, theirs in zip(expected, arrays):
        assert np.isfinite(mine).any() and np.array_equal(mine, theirs, equal_nan=True)
