"""Prediction and training on a Dask cluster: `core.predict`'s blocks and `core.training`'s fits as tasks.

Why it is built this way:

- A task is one block of `core.predict`'s layout (which depends on the output size, the model and the memory
  budget, never on timing) and runs the same code as a run in this process (`_BlockRun.predict`), so the maps,
  intervals and counts are bit-identical to it. The CNN's values depend in their last bits on the thread count,
  so workers predict on as many threads as this process would (`cnn.PREDICTION_THREADS`).
- Workers load the model file once (by path, checked against the digest taken when the run started) and read
  the covariates from their paths: both must lie where every worker can reach them. Each task writes its block
  as a tile file into a temporary folder beside the output (written under a temporary name and renamed, so a
  killed worker leaves no half tile for the client to read); the client writes the tiles in order into the
  GeoTIFFs that `core.predict` opened, so compression, overviews and the completeness check are the same.
- A worker that dies is replaced by its nanny and Dask runs its tasks again; their tiles are written again
  under the same names. At most `TASKS_PER_WORKER` tasks per worker are submitted ahead of the one written
  next, so tiles do not pile up on disk when the client writes slower than the cluster predicts.
- Cancel cancels the futures and removes the tile folder; a task still running then finds its folder gone and
  writes nothing. Workers of another engine version are refused before any task runs.
- Training (`fit_models`, `fit_on`, `run_on`): the cross-validation folds and the final model (covariate
  selection's folds; with transfer also each fit with the source) are fitted as one task each and returned to this
  process; each fit is seeded by the run's `random_state` alone, so the models are the same. A tuned forest's fit
  scores each candidate of its grid as a task of its own (`map_on_cluster`): the fit's task submits them from its
  worker with `distributed.worker_client`, which takes the waiting task out of the worker's thread pool, so the
  candidates run (on that worker too) however few workers there are, and no deadlock. The candidates are seeded by
  their place in the grid, so the scores and the choice are the same.
- Workers are never started by forking this process: inside QGIS `sys.executable` is QGIS itself. A local
  cluster runs the scheduler in this process and starts `dask worker` with the interpreter of
  `worker_python()` (the environment variable `SOCDEPTH_WORKER_PYTHON`, else a Python beside this one), with
  this plugin's folder on its PYTHONPATH.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass, fields, replace
from typing import TYPE_CHECKING, Any, BinaryIO

import numpy as np
from affine import Affine

from . import __version__ as ENGINE_VERSION  # noqa: N812 - a constant
from .files import write_atomically
from .models.base import check_progress
from .predict import (
    BLOCKS_DONE,
    AoaRequest,
    Block,
    ProgressCallback,
    _BlockRun,
    _Outputs,
    _RunState,
    _Writers,
    release_free_memory,
)

if TYPE_CHECKING:
    from distributed import Client

    from .models.base import DepthModel
    from .training import TrainingData

#: environment variable naming the Python interpreter that runs local workers
WORKER_PYTHON_VARIABLE = "SOCDEPTH_WORKER_PYTHON"
#: tasks submitted per worker thread ahead of the block written next
TASKS_PER_WORKER = 2
#: seconds between two looks at the futures (progress and cancel are answered at least this often)
POLL_SECONDS = 0.25
#: seconds to wait for local workers to start
START_SECONDS = 120
#: seconds to wait for a scheduler to answer
CONNECT_SECONDS = 30
#: seconds given to local workers to stop before they are killed
STOP_SECONDS = 15
#: seconds spent removing a tile folder that a task still running may write into
REMOVE_SECONDS = 10

CLUSTER_HELP = (
    "'' (empty) works in this process; 'local' or 'local:N' starts N local worker processes (default: one "
    "per core); 'tcp://host:port' uses a running Dask scheduler."
)


class EngineVersionError(ValueError):
    """A worker runs another version of the engine than this process."""


@dataclass(frozen=True)
class ClusterSpec:
    """Where the tasks run: `workers` local processes started by the run, or the scheduler at `address`."""

    workers: int = 0
    address: str = ""


def parse_cluster(text: str | None) -> ClusterSpec | None:
    """'' -> None (in this process); 'local' / 'local:N' -> N local workers; 'tcp://host:port' -> a scheduler."""
    text = (text or "").strip()
    if not text:
        return None
    if text == "local":
        return ClusterSpec(workers=_available_cores())
    if text.startswith("local:"):
        count = text[len("local:") :]
        if not count.isdigit() or int(count) < 1:
            raise ValueError(
                f"Cluster '{text}': give the number of local workers as a whole number >= 1, e.g. local:4."
            )
        return ClusterSpec(workers=int(count))
    scheme, _, rest = text.partition("://")
    host, _, port = rest.rpartition(":")
    if scheme == "tcp" and host and port.isdigit():
        return ClusterSpec(address=text)
    raise ValueError(f"Cluster '{text}' is not understood. {CLUSTER_HELP}")


def worker_python() -> str:
    """The Python interpreter for local workers: `SOCDEPTH_WORKER_PYTHON` when set, else the first that can import
    dask's `distributed` of this interpreter (when it is a Python, not QGIS embedding one), a Python in this
    one's installation, /usr/bin/python3 and the Pythons on the PATH."""
    configured = os.environ.get(WORKER_PYTHON_VARIABLE, "").strip()
    if configured:
        if not (os.path.isfile(configured) and os.access(configured, os.X_OK)):
            raise ValueError(
                f"{WORKER_PYTHON_VARIABLE}='{configured}' is not an executable file; set it to the Python "
                "interpreter that has the plugin's dependencies (numpy, rasterio, dask), e.g. /usr/bin/python3."
            )
        return configured
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    candidates = [
        # inside QGIS `sys.executable` is QGIS, or the first python3 on the PATH, which need not be QGIS's
        sys.executable if os.path.basename(sys.executable).lower().startswith("python") else None,
        os.path.join(sys.exec_prefix, "bin", f"python{version}"),
        os.path.join(sys.exec_prefix, "bin", "python3"),
        os.path.join(sys.exec_prefix, "python.exe"),  # Windows (OSGeo4W)
        "/usr/bin/python3",  # Debian and Ubuntu, whose QGIS runs the system's Python
        shutil.which(f"python{version}"),
        shutil.which("python3"),
    ]
    tried = []
    for candidate in dict.fromkeys(filter(None, candidates)):
        if os.path.isfile(candidate) and os.access(candidate, os.X_OK):
            if _runs_workers(candidate):
                return candidate
            tried.append(candidate)
    raise ValueError(
        f"No Python interpreter with dask's 'distributed' was found to start the workers (this process runs "
        f"{sys.executable}; tried {', '.join(tried) or 'none'}); install it (Debian/Ubuntu: sudo apt install "
        f"python3-distributed) or set {WORKER_PYTHON_VARIABLE} to the Python that has it."
    )


@functools.cache
def _runs_workers(python: str) -> bool:
    """Whether `python` imports what a worker needs (asked once per interpreter and process)."""
    try:
        done = subprocess.run([python, "-c", "import distributed, numpy, rasterio"], capture_output=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return done.returncode == 0


def worker_environment() -> dict[str, str]:
    """This process's environment, with the folder holding this plugin's package first on PYTHONPATH, so that
    workers import the engine from the same files."""
    package_parent = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    environment = dict(os.environ)
    paths = [package_parent, *filter(None, environment.get("PYTHONPATH", "").split(os.pathsep))]
    environment["PYTHONPATH"] = os.pathsep.join(paths)
    return environment


@contextmanager
def local_cluster(workers: int) -> Iterator[Client]:
    """A scheduler in this process and `workers` worker processes of one thread each (`dask worker` with a
    nanny that restarts a worker that dies), all stopped on exit."""
    from distributed import Client, LocalCluster

    python = worker_python()
    with LocalCluster(
        n_workers=0, processes=True, host="127.0.0.1", dashboard_address=None, silence_logs=logging.ERROR,
        scheduler_kwargs={"dashboard_address": "127.0.0.1:0"},  # its HTTP server on a free port, not on 8787
    ) as cluster, Client(cluster, set_as_default=False) as client, tempfile.TemporaryFile() as log:  # fmt: skip
        command = [
            python, "-m", "distributed.cli.dask_worker", cluster.scheduler_address, "--nworkers", str(workers),
            "--nthreads", "1", "--no-dashboard", "--memory-limit", "0", "--death-timeout", str(START_SECONDS),
        ]  # fmt: skip
        process = subprocess.Popen(command, env=worker_environment(), stdout=log, stderr=subprocess.STDOUT)
        try:
            _wait_for_workers(client, workers, process, log)
            yield client
        finally:
            process.terminate()  # the nannies stop their workers
            try:
                process.wait(STOP_SECONDS)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def _wait_for_workers(client: Client, workers: int, process: subprocess.Popen, log: BinaryIO) -> None:
    deadline = time.monotonic() + START_SECONDS
    while len(client.scheduler_info()["workers"]) < workers:
        if process.poll() is not None or time.monotonic() > deadline:
            log.seek(0)
            tail = log.read().decode(errors="replace").strip().splitlines()[-5:]
            raise ValueError(
                f"The local Dask workers did not start ({process.args[0]} said: {' / '.join(tail) or 'nothing'}). "
                f"Set {WORKER_PYTHON_VARIABLE} to a Python that has dask, distributed and the plugin's "
                "dependencies."
            )
        time.sleep(0.1)


@contextmanager
def connect(spec: ClusterSpec) -> Iterator[Client]:
    """A client of the cluster `spec`, its workers checked to run this engine version."""
    if spec.address:
        from distributed import Client

        try:
            client = Client(spec.address, timeout=CONNECT_SECONDS, set_as_default=False)
        except (OSError, TimeoutError) as error:
            raise ValueError(
                f"No Dask scheduler answers at {spec.address} ({error}); start one with 'dask scheduler' and "
                "workers with 'dask worker <address>', or check the address."
            ) from None
        with client:
            check_workers(client)
            yield client
        return
    with local_cluster(spec.workers) as client:
        check_workers(client)
        yield client


def engine_version() -> str:
    """The engine version of the process this runs in (on a worker, that worker's)."""
    return ENGINE_VERSION


def check_workers(client: Client) -> None:
    """Raises unless there is a worker and every worker runs this engine version."""
    try:
        versions = client.run(engine_version)
    except ImportError as error:
        raise ValueError(
            f"The Dask workers cannot import the engine ({error}); install it in the workers' Python with "
            "'python3 -m pip install --no-deps --no-build-isolation <the plugin's zip or folder>' (see 'Running on "
            "a cluster' in the README)."
        ) from None
    if not versions:
        raise ValueError("The Dask scheduler has no workers; start some with 'dask worker <scheduler address>'.")
    for address, version in sorted(versions.items()):
        if version != ENGINE_VERSION:
            raise EngineVersionError(_version_message(address, version, ENGINE_VERSION))


def _version_message(worker: str, worker_version: str, plugin_version: str) -> str:
    return (
        f"The Dask worker {worker} runs SOC Depth Mapper engine {worker_version}, but this plugin is "
        f"{plugin_version}; install version {plugin_version} on the workers."
    )


# ----------------------------------------------------------------------------------------------- the run


@dataclass(frozen=True)
class TileJob:
    """What every task of one run needs besides its block."""

    engine_version: str
    model_path: str
    model_digest: str
    covariate_paths: tuple[str, ...]
    layer_names: tuple[str, ...]
    resample: bool
    origin: tuple[int, int]
    transform: Affine
    depth_indices: tuple[int, ...]
    interval: float | None
    mask_geometries: Sequence[dict[str, Any]] | None
    training_ranges: np.ndarray | None
    tile_folder: str
    prediction_threads: int | None
    #: the run's area-of-applicability request without its dissimilarity index, which each worker takes from the
    #: model file (the same numbers, and nothing large sent with every task)
    aoa: AoaRequest | None = None


@dataclass
class TileResult:
    """A predicted block: its tile file and the counts `core.predict` gathers."""

    path: str
    state: _RunState
    infinite_cells: np.ndarray


class ClusterRun:
    """Runs `core.predict`'s blocks on the cluster `spec` for the model file at `model_path`; given to
    `predict_rasters(cluster=...)`. A local cluster is started and stopped by each run."""

    def __init__(self, spec: ClusterSpec, model_path: str) -> None:
        self.spec = spec
        self.model_path = os.path.abspath(model_path)
        self.model_digest = file_digest(self.model_path)
        self.client: Client | None = None

    def run(self, block_run: _BlockRun, blocks: Sequence[Block], writers: _Writers, progress: ProgressCallback) -> None:
        final = writers.final_of[writers.output.name]
        folder = os.path.join(os.path.dirname(final), f".{os.path.basename(final)}.{secrets.token_hex(6)}.tiles")
        os.mkdir(folder)
        try:
            check_progress(progress, 0.0, "Starting the cluster")
            with connect(self.spec) as client:
                self.client = client
                try:
                    self._run(client, self._job(block_run, folder), block_run, blocks, writers, progress)
                finally:
                    self.client = None
        finally:
            _remove_folder(folder)

    def _job(self, block_run: _BlockRun, folder: str) -> TileJob:
        stack = block_run.stack
        threads = None
        if "torch" in sys.modules:  # a CNN: its maps depend on the thread count
            from .models import cnn

            threads = cnn.prediction_threads()
        return TileJob(
            engine_version=ENGINE_VERSION,
            model_path=self.model_path,
            model_digest=self.model_digest,
            covariate_paths=tuple(os.path.abspath(path) for path in stack.paths),
            layer_names=tuple(stack.layer_names),
            resample=stack.resample,
            origin=block_run.origin,
            transform=block_run.transform,
            depth_indices=tuple(block_run.depth_indices),
            interval=block_run.interval,
            mask_geometries=block_run.mask_geometries,
            training_ranges=block_run.state.training_ranges,
            tile_folder=folder,
            prediction_threads=threads,
            aoa=None if block_run.aoa is None else replace(block_run.aoa, dissimilarity=None),
        )

    def _run(
        self,
        client: Client,
        job: TileJob,
        block_run: _BlockRun,
        blocks: Sequence[Block],
        writers: _Writers,
        progress: ProgressCallback,
    ) -> None:
        """Submits the blocks in order, a few ahead, and writes each as soon as it and those before it are done."""
        from distributed import KilledWorker

        n_workers = sum(client.nthreads().values())
        ahead = max(2, TASKS_PER_WORKER * n_workers)
        token = secrets.token_hex(6)
        total_cells = sum(block.height * block.width for block in blocks)
        futures: dict[int, Any] = {}
        submitted = written = done_cells = 0
        message = f"Predicting on {n_workers} Dask worker(s)"
        try:
            while written < len(blocks):
                while submitted < len(blocks) and submitted - written < ahead:
                    key = f"socdepth-tile-{token}-{submitted}"
                    futures[submitted] = client.submit(predict_tile, job, blocks[submitted], key=key, pure=False)
                    submitted += 1
                try:
                    result = futures[written].result(timeout=POLL_SECONDS)
                except TimeoutError:
                    check_progress(progress, BLOCKS_DONE * done_cells / total_cells, message)
                    continue
                except KilledWorker as error:
                    raise ValueError(
                        f"Block {written + 1} of {len(blocks)} ended every worker that tried it ({error}); a worker "
                        "may run out of memory: give the workers more memory or lower the memory budget."
                    ) from None
                if result is None:
                    raise RuntimeError(f"The tile folder '{job.tile_folder}' vanished during the run.")
                block = blocks[written]
                writers.write(block, read_tile(result.path))
                os.remove(result.path)
                _add_counts(block_run, result)
                del futures[written]
                written += 1
                done_cells += block.height * block.width
                message = f"Predicted {done_cells:,} of {total_cells:,} cells on {n_workers} Dask worker(s)"
                check_progress(progress, BLOCKS_DONE * done_cells / total_cells, message)
        finally:
            if futures:
                client.cancel(list(futures.values()))


def _add_counts(block_run: _BlockRun, result: TileResult) -> None:
    """Adds what a worker counted on its block to this process's run, as if the block were predicted here."""
    block_run.state.merge(result.state)
    block_run.stack.infinite_cells += result.infinite_cells


def _remove_folder(folder: str) -> None:
    """Removes the tile folder; a task still running may add a file meanwhile, so this is tried until it is gone
    (tasks never create the folder, so once gone it stays gone)."""
    deadline = time.monotonic() + REMOVE_SECONDS
    while os.path.exists(folder) and time.monotonic() < deadline:
        shutil.rmtree(folder, ignore_errors=True)
        if os.path.exists(folder):
            time.sleep(0.05)


def file_digest(path: str) -> str:
    """SHA-256 of a file's bytes (hex)."""
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        for chunk in iter(lambda: stream.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


# ------------------------------------------------------------------------------------------------ training


@dataclass(frozen=True)
class FitInput:
    """What one fit is given: the sites' patches and targets (on the fitted scale), as `DepthModel.fit` takes them."""

    patches: np.ndarray
    targets: np.ndarray
    intervals: np.ndarray
    categorical: tuple[int, ...]

    @classmethod
    def of(cls, data: TrainingData, fitted_targets: np.ndarray, rows: np.ndarray | None) -> FitInput:
        """The sites `rows` (None: all) of `data`, with `fitted_targets` (the targets on the fitted scale)."""
        selected = slice(None) if rows is None else rows
        return cls(data.patches[selected], fitted_targets[selected], data.intervals, tuple(data.categorical))


def fit_models(
    spec: ClusterSpec,
    kind: str,
    params: dict[str, Any],
    random_state: int,
    data: TrainingData,
    fitted_targets: np.ndarray,
    row_sets: Sequence[np.ndarray | None],
    progress: ProgressCallback = None,
) -> list[DepthModel]:
    """Models of `kind` fitted on the sites `rows` (None: all) of each of `row_sets`, one task each on the
    cluster `spec`: the cross-validation folds and the final model of `core.training.train`, bit-identical to
    fitting them in this process (every fit is seeded by `random_state` alone)."""
    fits = [FitInput.of(data, fitted_targets, rows) for rows in row_sets]
    with connect(spec) as client:
        return fit_on(client, kind, params, random_state, fits, progress)


def fit_on(
    client: Client,
    kind: str,
    params: dict[str, Any],
    random_state: int,
    fits: Sequence[FitInput],
    progress: ProgressCallback = None,
) -> list[DepthModel]:
    """A model of `kind` fitted on each of `fits`, one task each on the cluster of `client` (for callers that
    fit several batches on one cluster, as covariate selection does), in the order of `fits`."""
    return run_on(client, [fit_call(kind, params, random_state, fit) for fit in fits], progress)


def fit_call(kind: str, params: dict[str, Any], random_state: int, fit: FitInput) -> Callable[[], DepthModel]:
    """The call of `run_on` that fits a model of `kind` on `fit`."""
    return functools.partial(
        fit_model, kind, params, random_state, fit.patches, fit.targets, fit.intervals, fit.categorical
    )


def run_on(client: Client, calls: Sequence[Callable[[], Any]], progress: ProgressCallback = None) -> list[Any]:
    """The results of `calls` (picklable, e.g. `functools.partial`s of engine functions), each run as one task on
    the cluster of `client` by a worker of this engine version, in the order of `calls`."""
    n_workers = sum(client.nthreads().values())
    token = secrets.token_hex(6)
    futures = [
        client.submit(run_call, ENGINE_VERSION, call, key=f"socdepth-fit-{token}-{index}", pure=False)
        for index, call in enumerate(calls)
    ]
    try:
        while True:
            done = sum(future.done() for future in futures)
            message = f"{done} of {len(futures)} models fitted on {n_workers} Dask worker(s)"
            check_progress(progress, done / len(futures), message)
            if done == len(futures):
                return [future.result() for future in futures]
            first_unfinished = next(future for future in futures if not future.done())
            with suppress(TimeoutError):
                first_unfinished.result(timeout=POLL_SECONDS)  # raises the task's error, if any
    finally:
        client.cancel(futures)


def run_call(engine: str, call: Callable[[], Any]) -> Any:
    """`call()` on a worker, refused when the worker runs another engine version than the client (`engine`)."""
    if engine != ENGINE_VERSION:
        raise EngineVersionError(_version_message(_worker_address(), ENGINE_VERSION, engine))
    return call()


def fit_model(
    kind: str,
    params: dict[str, Any],
    random_state: int,
    patches: np.ndarray,
    targets: np.ndarray,
    intervals: np.ndarray,
    categorical: tuple[int, ...],
) -> DepthModel:
    """One fit on a worker, as `core.training.train` does it in process."""
    from .models.forest import RandomForestDepthModel
    from .registry import entry

    model = entry(kind).loader()(**params, random_state=random_state)
    jobs = getattr(model, "n_jobs", None)
    if jobs is not None:  # the forest fits the same trees on any number of threads: the worker's own
        model.n_jobs = _worker_threads()
    options = {"map_candidates": map_on_cluster} if isinstance(model, RandomForestDepthModel) and model.tune else {}
    model.fit(patches, targets, intervals, categorical=categorical, **options)
    if jobs is not None:
        model.n_jobs = jobs  # the setting as given, as the model file records it
    return model


def map_on_cluster(score: Callable[[Any], float], candidates: Sequence[Any]) -> list[float]:
    """`map(score, candidates)` with one task per candidate, for a task on a worker: while they run, the task
    that waits for them is out of the worker's thread pool (`worker_client` secedes), so they can run there."""
    from distributed import worker_client

    token = secrets.token_hex(6)
    with worker_client() as client:
        keys = [f"socdepth-candidate-{token}-{index}" for index in range(len(candidates))]
        return client.gather(client.map(score, candidates, key=keys, pure=False))


# -------------------------------------------------------------------------------------------- on a worker

#: per worker process: the model and the covariate stack of the latest run, loaded once
_loaded: dict[str, tuple[Any, Any]] = {}


def predict_tile(job: TileJob, block: Block) -> TileResult | None:
    """Predicts `block` on a worker and writes its tile file; None when the run's tile folder is gone (the run
    was cancelled)."""
    if job.engine_version != ENGINE_VERSION:
        raise EngineVersionError(_version_message(_worker_address(), ENGINE_VERSION, job.engine_version))
    release_free_memory()  # the arrays of this worker's previous tile are freed by now
    model = _cached("model", (job.model_path, job.model_digest), lambda: _load_model(job))
    # a rewritten covariate file is opened again: a handle held from an earlier run would read the old one
    stamps = tuple((os.stat(path).st_mtime_ns, os.stat(path).st_size) for path in job.covariate_paths)
    stack = _cached("stack", (job.covariate_paths, stamps, job.layer_names, job.resample), lambda: _open_stack(job))
    if job.prediction_threads is not None:
        from .models import cnn

        cnn.PREDICTION_THREADS = job.prediction_threads
    state = _RunState(job.training_ranges)
    aoa = None
    if job.aoa is not None:
        measure = _cached("aoa", (job.model_path, job.model_digest), model.dissimilarity_index)
        aoa = replace(job.aoa, dissimilarity=measure)
    run = _BlockRun(
        model, stack, job.origin, job.transform, list(job.depth_indices), job.interval, job.mask_geometries, state,
        aoa,
    )  # fmt: skip
    infinite_before = stack.infinite_cells.copy()
    outputs = run.predict(run.read(block), block)
    path = os.path.join(job.tile_folder, f"tile_{block.row}_{block.col}.npz")
    try:
        write_atomically(path, lambda stream: _write_tile(stream, outputs))
    except FileNotFoundError:
        if os.path.isdir(job.tile_folder):
            raise
        return None
    return TileResult(path, state, stack.infinite_cells - infinite_before)


def _cached(role: str, key: tuple, load) -> Any:
    held = _loaded.get(role)
    if held is None or held[0] != key:
        if held is not None and hasattr(held[1], "close"):
            held[1].close()
        _loaded[role] = (key, load())
    return _loaded[role][1]


def _load_model(job: TileJob):
    from .bundle import SocModel

    if file_digest(job.model_path) != job.model_digest:
        raise ValueError(
            f"The model file '{job.model_path}' seen by worker {_worker_address()} differs from the one the run "
            "started with; give the workers the same file (a shared folder) and do not change it during a run."
        )
    bundle = SocModel.load(job.model_path)
    threads = _worker_threads()
    for model in (bundle.model, *bundle.fold_models):
        if hasattr(model, "n_jobs"):  # the forest: its values do not depend on n_jobs, its speed does
            model.n_jobs = threads
    return bundle


def _open_stack(job: TileJob):
    from .rasters import CovariateStack

    return CovariateStack(list(job.covariate_paths), list(job.layer_names), job.resample)


def _worker_threads() -> int:
    """The threads this worker runs tasks on (one for the workers a local cluster starts)."""
    try:
        from distributed import get_worker

        return get_worker().state.nthreads
    except (ImportError, ValueError, AttributeError):
        return 1


def _worker_address() -> str:
    try:
        from distributed import get_worker

        return get_worker().address
    except (ImportError, ValueError):
        return "(not a worker)"


def _write_tile(stream: BinaryIO, outputs: _Outputs) -> None:
    """Every array of the block's outputs, by field name (so an output added to `_Outputs` travels too)."""
    arrays = {field.name: getattr(outputs, field.name) for field in fields(outputs)}
    np.savez(stream, **{name: array for name, array in arrays.items() if array is not None})


def read_tile(path: str) -> _Outputs:
    """The outputs of a block from its tile file."""
    with np.load(path) as archive:
        return _Outputs(**{field.name: archive.get(field.name) for field in fields(_Outputs)})


def _available_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1
