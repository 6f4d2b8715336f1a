"""Prediction on a Dask cluster: the same maps, intervals and counts as in this process, bit for bit, also when a
worker dies mid-run; cancel and refusal leave no files. The oracle is `predict_rasters` in this process, itself
tested against closed forms in test_predict.py. One LocalCluster of two worker processes serves the module
(started and stopped by it, addressed as 'tcp://...'); the cancel test starts its own with 'local:2'."""

from __future__ import annotations

import configparser
import os
import shutil
import signal
import sys
import time
from pathlib import Path

import numpy as np
import psutil
import pytest
import rasterio
from rasterio.transform import from_origin

from soc_depth_mapper.core import cluster
from soc_depth_mapper.core.bundle import SocModel
from soc_depth_mapper.core.cluster import ClusterRun, ClusterSpec, EngineVersionError, parse_cluster
from soc_depth_mapper.core.models import forest
from soc_depth_mapper.core.models.base import Cancelled
from soc_depth_mapper.core.predict import AoaRequest, predict_rasters
from soc_depth_mapper.core.rasters import CovariateStack
from soc_depth_mapper.core.selection import select_covariates
from soc_depth_mapper.core.training import TrainingData, train
from soc_depth_mapper.core.transfer import Transfer, subset

ROWS, COLS = 70, 300  # two tile columns, and an overview level
X0, Y0 = 500_000.0, 6_600_000.0
FILE_NODATA = -9999.0
NODATA_CELLS = [(0, 0), (3, 40), (35, 255), (35, 256), (69, 299)]
INTERVALS = np.array([[0.0, 10.0], [10.0, 30.0]])
GRID = {"crs_wkt": "", "transform": [X0, 1, 0, Y0, 0, -1], "res": [1.0, 1.0], "nodata": [None, None]}
#: a budget of a few thousand cells per block: a dozen tasks or more
SMALL_MB = 0.3
#: x from inside column 2 to inside column 290, y from inside row 60 to inside row 4
EXTENT = (X0 + 2.5, Y0 - 60.5, X0 + 289.5, Y0 - 4.5)
#: kind, patch size and settings of the two models; the CNN without n_threads: it predicts on every core, and
#: its maps depend on the thread count
TRAINING = {
    "forest": ("random_forest", 1, {"n_trees": 30}),
    "cnn": ("cnn", 5, {"patch_size": 5, "epochs": 8, "conv_channels": (4,), "dense_units": (8,)}),
}
TRIANGLE = {"type": "Polygon", "coordinates": [[(X0, Y0), (X0 + 400, Y0), (X0, Y0 - 200), (X0, Y0)]]}


def covariates() -> np.ndarray:
    rows, cols = np.mgrid[0:ROWS, 0:COLS].astype(np.float32)
    noise = np.random.default_rng(0).standard_normal((ROWS, COLS)).astype(np.float32)
    return np.stack([cols / COLS, np.sin(rows / 6.0) + 0.05 * noise])


def training_data(raster: np.ndarray, patch: int, n: int = 150) -> TrainingData:
    rng = np.random.default_rng(1)
    r = patch // 2
    rows, cols = rng.integers(r, ROWS - r, n), rng.integers(r, COLS - r, n)
    offsets = np.arange(-r, r + 1)
    patches = raster[:, rows[:, None, None] + offsets[None, :, None], cols[:, None, None] + offsets[None, None, :]]
    base = 10 + 8 * raster[0, rows, cols] + 3 * raster[1, rows, cols]
    targets = np.stack([base, 0.5 * base], axis=1) + rng.normal(0, 0.3, (n, 2))
    return TrainingData(
        site_ids=np.arange(n), x=X0 + cols + 0.5, y=Y0 - rows - 0.5, patches=patches.transpose(1, 0, 2, 3),
        targets=targets, intervals=INTERVALS, property_name="SOC", band_names=["cov_1", "cov_2"],
    )  # fmt: skip


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("cluster_inputs")


@pytest.fixture(scope="module")
def covariate_path(folder) -> str:
    raster = covariates()
    written = raster.copy()
    for row, col in NODATA_CELLS:
        written[1, row, col] = FILE_NODATA
    path = folder / "cov.tif"
    profile = dict(driver="GTiff", width=COLS, height=ROWS, count=2, dtype="float32", nodata=FILE_NODATA)
    with rasterio.open(path, "w", crs="EPSG:28355", transform=from_origin(X0, Y0, 1, 1), **profile) as dst:
        dst.write(written)
    return str(path)


@pytest.fixture(scope="module")
def model_files(folder) -> dict[str, str]:
    """A quantile forest and a CNN with conformal intervals from its fold models, saved as model files."""
    raster = covariates()
    paths = {}
    for name, (kind, patch, params) in TRAINING.items():
        data = training_data(raster, patch)
        result = train(data, kind, params, validation="random", folds=3, random_state=2)
        paths[name] = str(folder / f"{name}.socmodel")
        SocModel.from_training(result, data, GRID).save(paths[name])
    return paths


@pytest.fixture(scope="module")
def scheduler() -> str:
    """The address of a LocalCluster with two worker processes, for the module."""
    with cluster.local_cluster(2) as client:
        yield client.scheduler.address


def predict(model_path: str, covariate_path: str, out: Path, run: ClusterRun | None = None, progress=None):
    """Maps and 90 % intervals of both depths over EXTENT inside TRIANGLE; the result's counts (with the cells
    set to the floor), the files' arrays and the stack's count of infinite cells."""
    bundle = SocModel.load(model_path)
    with CovariateStack([covariate_path]) as stack:
        result = predict_rasters(
            bundle, stack, str(out / "soc.tif"), [0, 1], ["SOC 0-10 cm", "SOC 10-30 cm"], extent=EXTENT,
            mask_geometries=[TRIANGLE], memory_mb=SMALL_MB, interval=0.9, uncertainty_path=str(out / "unc.tif"),
            training_ranges=bundle.training_ranges, progress=progress, cluster=run,
        )  # fmt: skip
        infinite = stack.infinite_cells.copy()
    arrays = []
    for path in (result.output, result.uncertainty):
        with rasterio.open(path) as dataset:
            arrays.append(dataset.read())
            levels = len(dataset.overviews(1))
        for level in range(levels):
            with rasterio.open(path, overview_level=level) as overview:
                arrays.append(overview.read())
    counts = {k: v for k, v in vars(result).items() if k.startswith("n_") or k == "value_range"}
    return counts, arrays, infinite


def assert_identical(first, second) -> None:
    counts, arrays, infinite = first
    assert second[0] == counts
    np.testing.assert_array_equal(second[2], infinite)
    assert len(second[1]) == len(arrays) == 4  # maps, intervals and an overview of each
    for mine, theirs in zip(arrays, second[1]):
        assert np.array_equal(mine, theirs)


@pytest.fixture(scope="module")
def in_process(model_files, covariate_path, tmp_path_factory) -> dict:
    return {name: predict(path, covariate_path, tmp_path_factory.mktemp(name)) for name, path in model_files.items()}


@pytest.mark.parametrize("name", ["forest", "cnn"])
def test_maps_and_intervals_on_the_cluster_are_bit_identical(name, model_files, covariate_path, scheduler, in_process,
                                                             tmp_path):  # fmt: skip
    counts = in_process[name][0]
    assert 0 < counts["n_masked"] < counts["n_pixels"] and counts["n_covariate_nodata"] == 2  # the test bites
    run = ClusterRun(parse_cluster(scheduler), model_files[name])
    assert_identical(in_process[name], predict(model_files[name], covariate_path, tmp_path, run))
    assert sorted(os.listdir(tmp_path)) == ["soc.tif", "unc.tif"]  # no tile left behind


def test_cnn_maps_do_not_depend_on_the_load(model_files, covariate_path, in_process, tmp_path):
    def slow(fraction, message):  # a loaded machine: every step of the run takes longer
        time.sleep(0.01)
        return True

    assert_identical(in_process["cnn"], predict(model_files["cnn"], covariate_path, tmp_path, progress=slow))


def test_a_worker_killed_mid_run_is_replaced_and_the_maps_are_the_same(model_files, covariate_path, scheduler,
                                                                       in_process, tmp_path):  # fmt: skip
    run = ClusterRun(parse_cluster(scheduler), model_files["forest"])
    killed = []

    def kill_one_worker(fraction: float, message: str) -> bool:
        if not killed and message.startswith("Predicted"):  # a tile is written, others are in flight
            pids = run.client.run(os.getpid)
            killed.append(pids[min(pids)])
            os.kill(killed[0], signal.SIGKILL)
        return True

    assert_identical(in_process["forest"], predict(model_files["forest"], covariate_path, tmp_path, run,
                                                   kill_one_worker))  # fmt: skip
    assert killed
    with pytest.raises(ProcessLookupError):
        os.kill(killed[0], 0)  # the worker is dead indeed


def test_a_covariate_file_rewritten_between_runs_is_read_again(model_files, covariate_path, scheduler, tmp_path):
    rewritten = tmp_path / "cov.tif"
    shutil.copy(covariate_path, rewritten)
    run = ClusterRun(parse_cluster(scheduler), model_files["forest"])
    (tmp_path / "first").mkdir()
    predict(model_files["forest"], str(rewritten), tmp_path / "first", run)
    with rasterio.open(rewritten, "r+") as dataset:  # new values under the same name
        dataset.write(dataset.read(1)[::-1, ::-1], 1)
    (tmp_path / "second").mkdir()
    (tmp_path / "local").mkdir()
    maps = predict(model_files["forest"], str(rewritten), tmp_path / "second", run)[1]
    expected = predict(model_files["forest"], str(rewritten), tmp_path / "local")[1]
    assert all(np.array_equal(mine, theirs) for mine, theirs in zip(maps, expected))


def test_workers_of_another_engine_version_are_refused(model_files, covariate_path, scheduler, tmp_path,
                                                       monkeypatch):  # fmt: skip
    monkeypatch.setattr(cluster, "ENGINE_VERSION", "0.0.1")  # the client's version differs from the workers'
    run = ClusterRun(parse_cluster(scheduler), model_files["forest"])
    with pytest.raises(EngineVersionError) as refused:
        predict(model_files["forest"], covariate_path, tmp_path, run)
    message = str(refused.value)
    assert "engine 0.1.0" in message and "this plugin is 0.0.1" in message
    assert os.listdir(tmp_path) == []


def test_cancel_on_a_local_cluster_cancels_the_tasks_and_leaves_no_file(model_files, covariate_path, tmp_path):
    earlier = tmp_path / "soc.tif"
    earlier.write_bytes(b"an earlier map")
    run = ClusterRun(parse_cluster("local:2"), model_files["forest"])
    written = []

    def cancel_after_two_tiles(fraction: float, message: str) -> bool:
        written.append(message)
        return sum(m.startswith("Predicted") for m in written) < 2

    workers_before = worker_processes()
    with pytest.raises(Cancelled):
        predict(model_files["forest"], covariate_path, tmp_path, run, cancel_after_two_tiles)
    assert sorted(os.listdir(tmp_path)) == ["soc.tif"]
    assert earlier.read_bytes() == b"an earlier map"
    assert worker_processes() == workers_before  # the run's own workers are stopped


def worker_processes() -> set[int]:
    """Process ids of the `dask worker` processes this test process started (and their workers)."""
    workers = set()
    for process in psutil.Process().children(recursive=True):
        try:
            if "distributed" in " ".join(process.cmdline()):
                workers.add(process.pid)
        except psutil.NoSuchProcess:
            pass
    return workers


@pytest.mark.parametrize("name", ["forest", "cnn"])
def test_training_folds_on_the_cluster_give_the_same_models(name, scheduler):
    kind, patch, params = TRAINING[name]
    data = training_data(covariates(), patch, n=80)
    local = train(data, kind, params, validation="spatial", folds=3, random_state=4)
    spec = parse_cluster(scheduler)
    remote = train(data, kind, params, validation="spatial", folds=3, random_state=4, cluster=spec)
    np.testing.assert_array_equal(local.validation.predictions, remote.validation.predictions)
    assert repr(local.validation.metrics) == repr(remote.validation.metrics)  # NaN (no interval) equal too
    for mine, theirs in zip(
        [local.model, *local.validation.fold_models], [remote.model, *remote.validation.fold_models]
    ):
        mine_config, mine_arrays = mine.get_state()
        their_config, their_arrays = theirs.get_state()
        assert mine_config == their_config  # the settings as given, n_jobs too
        assert mine_arrays.keys() == their_arrays.keys()
        for key, array in mine_arrays.items():
            np.testing.assert_array_equal(array, their_arrays[key])  # NaN where NaN (leaf draws of inner nodes)


def test_an_unreachable_scheduler_is_a_clear_error_and_leaves_no_file(model_files, covariate_path, tmp_path,
                                                                       monkeypatch):  # fmt: skip
    monkeypatch.setattr(cluster, "CONNECT_SECONDS", 1)
    run = ClusterRun(parse_cluster("tcp://127.0.0.1:9"), model_files["forest"])  # the discard port: nobody there
    with pytest.raises(ValueError, match="No Dask scheduler answers at tcp://127.0.0.1:9 .*start one with 'dask sch"):
        predict(model_files["forest"], covariate_path, tmp_path, run)
    assert os.listdir(tmp_path) == []


def test_cluster_specs():
    assert parse_cluster("") is None and parse_cluster("  ") is None
    assert parse_cluster("local:3") == ClusterSpec(workers=3)
    assert parse_cluster("local").workers >= 1
    assert parse_cluster("tcp://10.0.0.5:8786") == ClusterSpec(address="tcp://10.0.0.5:8786")
    for wrong in ("local:0", "local:two", "10.0.0.5:8786", "tcp://10.0.0.5", "slurm"):
        with pytest.raises(ValueError, match="local|tcp://"):
            parse_cluster(wrong)


def test_workers_never_run_the_qgis_executable(monkeypatch, tmp_path):
    monkeypatch.delenv(cluster.WORKER_PYTHON_VARIABLE, raising=False)
    assert cluster.worker_python() == sys.executable  # a Python: used as it is
    monkeypatch.setattr(sys, "executable", "/usr/bin/qgis")  # inside QGIS
    python = cluster.worker_python()
    assert os.path.basename(python).startswith("python") and os.access(python, os.X_OK)
    monkeypatch.setenv(cluster.WORKER_PYTHON_VARIABLE, str(tmp_path / "missing"))
    with pytest.raises(ValueError, match="SOCDEPTH_WORKER_PYTHON='.*missing' is not an executable"):
        cluster.worker_python()
    monkeypatch.setenv(cluster.WORKER_PYTHON_VARIABLE, "/usr/bin/python3")
    assert cluster.worker_python() == "/usr/bin/python3"


def test_the_engine_version_is_the_plugin_version():
    metadata = configparser.ConfigParser()
    metadata.read(Path(cluster.__file__).parents[1] / "metadata.txt")
    assert metadata["general"]["version"] == cluster.ENGINE_VERSION


def predict_with_aoa(model_path: str, covariate_path: str, out: Path, run: ClusterRun | None = None):
    """Maps masked outside the area of applicability, the DI/inside raster and the local point density."""
    out.mkdir()
    bundle = SocModel.load(model_path)
    aoa = AoaRequest(bundle.dissimilarity_index(), str(out / "aoa.tif"), str(out / "lpd.tif"), mask_maps=True)
    with CovariateStack([covariate_path]) as stack:
        result = predict_rasters(
            bundle, stack, str(out / "soc.tif"), [0, 1], ["SOC 0-10 cm", "SOC 10-30 cm"], extent=EXTENT,
            memory_mb=SMALL_MB, aoa=aoa, cluster=run,
        )  # fmt: skip
    arrays = []
    for path in (result.output, result.aoa, result.lpd):
        with rasterio.open(path) as dataset:
            arrays.append(dataset.read())
    counts = {k: v for k, v in vars(result).items() if k.startswith("n_")}
    return counts, arrays


def test_the_area_of_applicability_on_the_cluster_is_bit_identical(model_files, covariate_path, scheduler, tmp_path):
    local = predict_with_aoa(model_files["forest"], covariate_path, tmp_path / "local")
    assert 0 < local[0]["n_inside_aoa"] <= local[0]["n_aoa_cells"]  # there is an AOA to compare
    run = ClusterRun(parse_cluster(scheduler), model_files["forest"])
    remote = predict_with_aoa(model_files["forest"], covariate_path, tmp_path / "remote", run)
    assert remote[0] == local[0]
    for mine, theirs in zip(local[1], remote[1]):
        assert np.array_equal(mine, theirs)


@pytest.fixture
def small_tuning(scheduler, monkeypatch):
    """A client of the module's cluster, with a tuning grid of few trees and folds, here and on its workers
    (the grid's candidates stay as they are): seconds instead of a minute."""
    from distributed import Client

    small = {"TUNE_TREES": 10, "TUNE_FOLDS": 3}
    usual = {name: getattr(forest, name) for name in small}
    with Client(scheduler, set_as_default=False) as client:
        for name, value in small.items():
            monkeypatch.setattr(forest, name, value)
            client.run(setattr, forest, name, value)
        try:
            yield client
        finally:
            for name, value in usual.items():
                client.run(setattr, forest, name, value)


def test_a_tuned_forest_scores_its_grid_on_the_cluster_as_in_this_process(scheduler, small_tuning):
    """Every fit (two folds and the final model) tunes with one task per grid candidate, nested in the fit's
    task; the scores, the chosen settings, the forests and the out-of-fold predictions are those of this
    process."""
    from distributed import get_task_stream

    data = training_data(covariates(), 1, n=40)
    params = {"n_trees": 10, "tune": True, "n_jobs": 1}
    local = train(data, "random_forest", params, validation="random", folds=2, random_state=5)
    with get_task_stream(small_tuning) as stream:
        remote = train(data, "random_forest", params, validation="random", folds=2, random_state=5,
                       cluster=parse_cluster(scheduler))  # fmt: skip
    candidates = len(local.model.tuning_scores_)
    assert len({score["rmse"] for score in local.model.tuning_scores_}) > 1  # the choice means something
    assert candidates == 12  # 4 predictors: max_features 1, 2 or 4 (0.05 and 1/3 both give 1) x 4 leaf sizes
    assert sum(task["key"].startswith("socdepth-candidate-") for task in stream.data) == 3 * candidates
    np.testing.assert_array_equal(local.validation.predictions, remote.validation.predictions)
    for mine, theirs in zip(
        [local.model, *local.validation.fold_models], [remote.model, *remote.validation.fold_models]
    ):
        assert theirs.tuning_scores_ == mine.tuning_scores_  # the RMSEs bit for bit
        assert theirs.best_params_ == mine.best_params_
        mine_config, mine_arrays = mine.get_state()
        their_config, their_arrays = theirs.get_state()
        assert mine_config == their_config
        for key, array in mine_arrays.items():
            np.testing.assert_array_equal(array, their_arrays[key])


def test_covariate_selection_on_the_cluster_is_the_one_in_this_process(scheduler):
    """The ranking's folds and each subset's are fitted as tasks; ranks, importances, every subset's scores and
    the choice are the same bit for bit."""
    from distributed import Client, get_task_stream

    data = training_data(covariates(), 1, n=60)
    noise = np.random.default_rng(7).standard_normal((60, 2, 1, 1)).astype(np.float32)
    data.patches = np.concatenate([data.patches, noise], axis=1)
    data.band_names += ["noise_1", "noise_2"]
    settings = {"validation": "random", "folds": 3, "step": 1, "min_correlation": 0.0, "random_state": 3}
    params = {"n_trees": 20, "n_jobs": 1}
    local = select_covariates(data, "random_forest", params, **settings)
    with Client(scheduler, set_as_default=False) as client, get_task_stream(client) as stream:
        remote = select_covariates(data, "random_forest", params, cluster=parse_cluster(scheduler), **settings)
    assert [band.rank for band in local.bands] != [1, 2, 3, 4]  # the ranking reorders the bands: it bites
    assert sum(task["key"].startswith("socdepth-fit-") for task in stream.data) == 3 * 4  # ranking + 3 subsets
    assert [s.size for s in local.subsets] == [1, 2, 3, 4] and remote.chosen == local.chosen

    def band_fate(band):
        return band.name, band.dropped, band.rank, band.importance, band.selected

    def subset_scores(subset):
        return subset.bands, subset.rmse, subset.rmse_se, subset.ccc, repr(subset.metrics)  # repr: NaN equal too

    assert [band_fate(band) for band in remote.bands] == [band_fate(band) for band in local.bands]
    assert [subset_scores(s) for s in remote.subsets] == [subset_scores(s) for s in local.subsets]


@pytest.mark.parametrize(
    ("name", "transfer"),
    [("forest", {"weight": 0.0}), ("cnn", {"strategy": "representation"})],
    ids=["forest-instances-chosen-weight", "cnn-representation"],
)
def test_training_with_transfer_on_the_cluster_gives_the_same_models(name, transfer, scheduler):
    """Every fit is a task (local-only folds, folds with the source, final); the gain table, what each fold
    borrowed and every model are those of this process."""
    kind, patch, params = TRAINING[name]
    sites = training_data(covariates(), patch, n=90)
    local, source = subset(sites, sites.site_ids < 30), subset(sites, sites.site_ids >= 30)
    settings = {"validation": "spatial", "folds": 2, "random_state": 4, "transfer": Transfer(source, **transfer)}
    here = train(local, kind, params, **settings)
    there = train(local, kind, params, cluster=parse_cluster(scheduler), **settings)
    np.testing.assert_array_equal(here.validation.predictions, there.validation.predictions)
    np.testing.assert_array_equal(here.validation.local_only.predictions, there.validation.local_only.predictions)
    assert repr(there.settings) == repr(here.settings)  # weights, inner scores per fold, gains: NaN equal too
    assert here.settings["transfer"]["source_sites_used"] > 0  # the source was used: the test bites
    models = [here.model, *here.validation.fold_models, *here.validation.local_only.fold_models]
    theirs = [there.model, *there.validation.fold_models, *there.validation.local_only.fold_models]
    for mine, their in zip(models, theirs):
        mine_config, mine_arrays = mine.get_state()
        their_config, their_arrays = their.get_state()
        assert repr(mine_config) == repr(their_config)
        for key, array in mine_arrays.items():
            np.testing.assert_array_equal(array, their_arrays[key])
