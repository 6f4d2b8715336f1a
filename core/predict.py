"""Raster prediction: a fitted model turned into depth-wise SOC GeoTIFFs, block by block under a memory budget.

Why it is built this way:

- Blocks follow the 256 x 256 tiles of the outputs (runs of whole tiles along a tile row, or bands of rows of
  one tile) and each tile is finished before the next is started, so GDAL never has to re-compress a half-written
  tile and its cache only ever holds a few dirty tiles. Peak memory is therefore set by `memory_mb`, not by the
  size of the map.
- The block layout depends only on the size of the output, the model's memory per cell and `memory_mb`, never
  on timing: a patch model's values depend (in the last bits) on how the raster is cut, so the same inputs give
  bit-identical maps whatever the machine's load, and a cluster run (`core.cluster`), whose tasks are these
  blocks, gives the same maps as a run in this process. Progress and cancel are answered between steps of
  `STEP_CELLS` inside a block for pixel models (whose values do not depend on the cut); a patch model, which
  would recompute the halo of every step, predicts a block at once.
- Each block is read with a halo of `patch_size // 2` cells, so a patch model sees exactly the neighbourhood it
  would see on the whole raster: block edges are invisible in the maps.
- Reading the next block and writing (compressing) the previous one run in two helper threads while the model
  predicts the current block on all cores (rasterio and the models release the GIL). GDAL's own multi-threaded
  compression is not used: it adds nothing while the model keeps the cores busy, and GDAL 3.6 reports errors
  when it decodes band-interleaved tiles in threads (while building overviews).
- Every file is written under a temporary name next to its destination and moved into place only when the whole
  run succeeded and every tile is found in the file (GDAL only logs a failed write, e.g. on a full disk), so a
  failed, cancelled or signalled (SIGTERM, SIGINT) run leaves nothing behind and never half-overwrites an
  earlier map.
"""

from __future__ import annotations

import ctypes
import math
import os
import secrets
import signal
import sys
import threading
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Optional, Protocol

import numpy as np
import rasterio
import rasterio.errors
from affine import Affine
from rasterio.enums import Resampling
from rasterio.features import geometry_mask
from rasterio.windows import Window

from .models.base import check_progress

if TYPE_CHECKING:
    from .cluster import ClusterRun
    from .rasters import CovariateStack

#: value of cells without a prediction in every output file
NODATA = -9999.0
#: tile size of the outputs; blocks are laid out on this grid
TILE = 256
#: the largest block (the memory budget may impose smaller ones): beyond it nothing is gained
MAX_BLOCK_CELLS = 4 * TILE * TILE
#: cells a pixel model predicts between two progress reports (and cancel checks): a fraction of a second for a
#: 500-tree forest on two cores, and enough cells that the fixed costs of a call do not count
STEP_CELLS = 64 * TILE
#: blocks alive at once for each role: the one being predicted plus the next being read (input), or the
#: previous one being written (outputs)
BLOCKS_IN_FLIGHT = 2
#: share of `memory_mb` given to GDAL's block cache, and its bounds in bytes (the floor exceeds tiny budgets)
GDAL_CACHE_SHARE = 0.25
GDAL_CACHE_MIN, GDAL_CACHE_MAX = 8 << 20, 256 << 20
#: progress fraction reached when all blocks are predicted; the rest is for overviews and moving files
BLOCKS_DONE = 0.95
#: band descriptions of the area-of-applicability rasters
AOA_LABELS = ["Dissimilarity index (DI)", "Area of applicability (1 inside, 0 outside)"]
LPD_LABELS = ["Local point density (training sites within the AOA threshold)"]

ProgressCallback = Optional[Callable[[float, str], Any]]
Extent = tuple[float, float, float, float]


class BlockPredictor(Protocol):
    """What the engine needs from a trained model bundle (e.g. `core.bundle.SocModel`)."""

    patch_size: int
    #: the lowest value a map may take (0 for SOC), or None: the run raises lower values to it and counts them
    prediction_floor: float | None

    def predict_block(self, block: np.ndarray, depth_indices: Sequence[int]) -> np.ndarray:
        """(B, h + 2r, w + 2r) block with halo r = patch_size // 2 -> (d, h, w), NaN where no prediction; before
        the floor."""

    def predict_block_interval(
        self, block: np.ndarray, depth_indices: Sequence[int], level: float
    ) -> tuple[np.ndarray, np.ndarray]:
        """Lower and upper bounds (d, h, w) of a central `level` prediction interval (e.g. 0.9)."""

    def bytes_per_pixel(self) -> int:
        """Working memory per output pixel while predicting a block, for block sizing."""


class Dissimilarity(Protocol):
    """The area of applicability of a model (e.g. `core.aoa.DissimilarityIndex`)."""

    threshold: float

    def di(self, values: np.ndarray) -> np.ndarray:
        """(N, B) covariate values -> (N,) dissimilarity index; inside the AOA where DI <= threshold."""

    def lpd(self, values: np.ndarray) -> np.ndarray:
        """(N, B) covariate values -> (N,) local point density: training sites closer than the threshold."""


@dataclass
class AoaRequest:
    """What to make of the area of applicability: `path` a two-band raster (DI, and 1 inside / 0 outside),
    `lpd_path` a raster of the local point density, `mask_maps` nodata in the maps outside the AOA."""

    dissimilarity: Dissimilarity
    path: str | None = None
    lpd_path: str | None = None
    mask_maps: bool = False


@dataclass
class PredictionResult:
    """What was written and what it holds. `n_nodata` cells were not predicted: `n_masked` lie outside the mask,
    `n_covariate_nodata` have nodata in a covariate and `n_model_nodata` got no value from the model.
    `n_out_of_range`: predicted cells where at least one covariate lies outside the range seen in training (the
    model extrapolates there). `n_floored`: map cells where the prediction at some depth fell below the
    predictor's `prediction_floor` and was raised to it."""

    output: str
    uncertainty: str | None
    depth_files: list[str]
    n_pixels: int
    n_predicted: int
    n_nodata: int
    n_masked: int
    n_covariate_nodata: int
    n_model_nodata: int
    n_out_of_range: int
    n_floored: int
    value_range: tuple[float, float]
    #: with an `AoaRequest`: the files, the predicted cells whose DI was computed, those inside the AOA and
    #: those set to nodata for lying outside (with `mask_maps`, counted in `n_nodata`, not in `n_predicted`)
    aoa: str | None = None
    lpd: str | None = None
    n_aoa_cells: int = 0
    n_inside_aoa: int = 0
    n_aoa_masked: int = 0


@dataclass
class Block:
    """A block of the output grid: offsets relative to the output's upper-left cell, and its size."""

    row: int
    col: int
    height: int
    width: int

    @property
    def window(self) -> Window:
        return Window(self.col, self.row, self.width, self.height)


@dataclass
class _Outputs:
    """The arrays written for one block (float32, NODATA filled)."""

    values: np.ndarray
    uncertainty: np.ndarray | None
    aoa: np.ndarray | None = None
    lpd: np.ndarray | None = None


def predict_rasters(
    predictor: BlockPredictor,
    stack: CovariateStack,
    output_path: str,
    depth_indices: Sequence[int],
    band_labels: Sequence[str],
    *,
    extent: Extent | None = None,
    mask_geometries: Sequence[dict[str, Any]] | None = None,
    memory_mb: float = 1024,
    interval: float | None = None,
    uncertainty_path: str | None = None,
    depth_folder: str | None = None,
    depth_file_names: Sequence[str] | None = None,
    training_ranges: np.ndarray | None = None,
    aoa: AoaRequest | None = None,
    progress: ProgressCallback = None,
    cluster: ClusterRun | None = None,
) -> PredictionResult:
    """Predicts the depths `depth_indices` of `predictor` on `stack` and writes them as GeoTIFFs.

    - `output_path`: one float32 band per depth, described by `band_labels` (e.g. "SOC 0-5 cm").
    - `extent` (xmin, ymin, xmax, ymax) in the stack's CRS, widened to whole cells; default the whole stack.
    - `mask_geometries`: GeoJSON-like geometries in the stack's CRS; cells whose centre lies outside all of them
      are nodata. Cells where any covariate is nodata are nodata in every output.
    - `memory_mb`: working memory for blocks in flight, the model's scratch space and GDAL's cache (at least
      8 MB), on top of what the process already holds (Python, libraries, the model).
    - `interval` (e.g. 0.9) with `uncertainty_path`: per depth the lower bound, upper bound and width of the
      central prediction interval, three bands per depth.
    - `depth_folder`: also one single-band GeoTIFF per depth, named by `depth_file_names` (default: the output's
      name followed by the band label).
    - `training_ranges` (B, 2): per band the minimum and maximum seen in training (NaN skips a band, e.g. a
      class layer); predicted cells with a covariate outside are counted in `n_out_of_range`.
    - `aoa`: the DI (and LPD) of every predicted cell's covariates, written and counted as `AoaRequest` says; the
      AOA band is 1 where the DI (as float32, as in the file) is at most the threshold.
    - `progress(fraction, message)`: returning False cancels; files are removed and `Cancelled` is raised.
    - `cluster`: the blocks are predicted as tasks on a Dask cluster (see `core.cluster`), with the same result.
    """
    depth_indices = [int(d) for d in depth_indices]
    band_labels = [str(label) for label in band_labels]
    _check_arguments(depth_indices, band_labels, memory_mb, interval, uncertainty_path)
    ranges = _check_training_ranges(training_ranges, stack)
    row_off, col_off, height, width = _output_window(stack, extent)
    transform = stack.transform * Affine.translation(col_off, row_off)
    halo = int(predictor.patch_size) // 2

    destinations = RasterDestinations(
        output_path, uncertainty_path, depth_folder, depth_file_names, band_labels,
        aoa_path=None if aoa is None else aoa.path, lpd_path=None if aoa is None else aoa.lpd_path,
    )  # fmt: skip
    budget = int(memory_mb * (1 << 20))
    cache_bytes = int(min(max(budget * GDAL_CACHE_SHARE, GDAL_CACHE_MIN), GDAL_CACHE_MAX))
    per_cell = _bytes_per_cell(predictor, stack.count, len(depth_indices), interval is not None, aoa is not None)
    block_budget = int(budget * (1 - GDAL_CACHE_SHARE))
    blocks = block_layout(height, width, min(_block_cells(block_budget, per_cell, stack.count, halo), MAX_BLOCK_CELLS))

    state = _RunState(ranges)
    with _signals_stop_the_run():
        try:
            with rasterio.Env(GDAL_CACHEMAX=cache_bytes):
                writers = destinations.open(stack.crs_wkt or None, transform, height, width, interval)
                try:
                    if writers.aoa is not None:
                        writers.aoa.update_tags(AOA_THRESHOLD=repr(float(aoa.dissimilarity.threshold)))
                    run = _BlockRun(
                        predictor, stack, (row_off, col_off), transform, depth_indices, interval, mask_geometries,
                        state, aoa,
                    )  # fmt: skip
                    if cluster is None:
                        run.run(blocks, writers, progress)
                    else:
                        cluster.run(run, blocks, writers, progress)
                    if state.n_predicted == 0:
                        raise NothingPredictedError(state.nothing_predicted(height * width))
                    check_progress(progress, BLOCKS_DONE, "Building overviews")
                    writers.build_overviews(height, width)
                finally:
                    writers.close()
            destinations.check_complete()
            with _signals_held():  # all outputs are moved into place, or none
                destinations.commit()
        except BaseException:
            with _signals_held():  # a signal now must not cut the clean-up short
                destinations.discard()
            raise
    if progress is not None:
        progress(1.0, "Done")  # the files are in place: too late to cancel
    n_pixels = height * width
    return PredictionResult(
        output=destinations.output,
        uncertainty=destinations.uncertainty,
        depth_files=destinations.depth_files,
        n_pixels=n_pixels,
        n_predicted=state.n_predicted,
        n_nodata=n_pixels - state.n_predicted,
        n_masked=state.n_masked,
        n_covariate_nodata=state.n_covariate_nodata,
        n_model_nodata=state.n_model_nodata,
        n_out_of_range=state.n_out_of_range,
        n_floored=state.n_floored,
        value_range=(state.value_min, state.value_max) if state.n_predicted else (math.nan, math.nan),
        aoa=destinations.aoa,
        lpd=destinations.lpd,
        n_aoa_cells=state.n_aoa_cells,
        n_inside_aoa=state.n_inside_aoa,
        n_aoa_masked=state.n_aoa_masked,
    )


class Interrupted(BaseException):
    """SIGTERM or SIGINT arrived during a run (a BaseException, so that no `except Exception` takes it)."""


#: the signals that stop a run as a cancel does
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


@contextmanager
def _signals_stop_the_run() -> Iterator[None]:
    """Makes SIGTERM and SIGINT stop the run as a cancel does, so the temporary files are removed, and then
    take their usual course (the process ends, or Python raises KeyboardInterrupt). A signal is delivered to
    the main thread only; elsewhere (QGIS runs algorithms in a task thread) nothing changes. A signal whose
    handler was set outside Python, or that is ignored, keeps its handling."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    received: list[int] = []

    def stop(signum: int, frame) -> None:
        if not received:  # a second signal must not interrupt the clean-up of the first
            received.append(signum)
            raise Interrupted(f"Stopped by {signal.Signals(signum).name}")

    previous = {}
    for signum in STOP_SIGNALS:
        handler = signal.getsignal(signum)
        if handler is not None and handler is not signal.SIG_IGN:
            previous[signum] = signal.signal(signum, stop)
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        if received:
            # the run is cleaned up: the signal now does what it would have done (ends the process, or raises
            # KeyboardInterrupt); where its handler returns, the Interrupted goes on
            signal.raise_signal(received[0])


@contextmanager
def _signals_held() -> Iterator[None]:
    """Holds STOP_SIGNALS back (where the system can), so that they arrive after the block, not inside it."""
    if not hasattr(signal, "pthread_sigmask") or threading.current_thread() is not threading.main_thread():
        yield
        return
    signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_UNBLOCK, STOP_SIGNALS)


# --------------------------------------------------------------------------------------------- block layout


def iter_blocks(height: int, width: int, cells_for_next: Callable[[], int]) -> Iterator[Block]:
    """Blocks covering a height x width grid in writing order, each at most `cells_for_next()` cells (asked
    before each block, so the size can change as the run goes).

    A block is a run of whole tiles along a tile row, or a band of rows of one tile (part of a row for budgets
    below one tile width); either way a tile is complete before the next one starts.
    """
    for top in range(0, height, TILE):
        tile_h = min(TILE, height - top)
        left = 0
        while left < width:
            tile_w = min(TILE, width - left)
            cells = max(1, cells_for_next())
            if cells >= tile_h * tile_w:
                run_width = min(max(1, cells // (tile_h * TILE)) * TILE, width - left)
                yield Block(top, left, tile_h, run_width)
                left += run_width
                continue
            row = top
            while row < top + tile_h:
                band_h = min(cells // tile_w, top + tile_h - row)
                if band_h >= 1:
                    yield Block(row, left, band_h, tile_w)
                else:
                    band_h = 1
                    for col in range(left, left + tile_w, cells):
                        yield Block(row, col, 1, min(cells, left + tile_w - col))
                row += band_h
                if row < top + tile_h:
                    cells = max(1, cells_for_next())
            left += tile_w


def block_layout(height: int, width: int, cells: int) -> list[Block]:
    """The blocks of at most `cells` cells covering a height x width output, in writing order."""
    return list(iter_blocks(height, width, lambda: cells))


def _bytes_per_cell(
    predictor: BlockPredictor, n_bands: int, n_depths: int, with_interval: bool, with_aoa: bool = False
) -> int:
    """Memory per output cell of a block: input blocks and output arrays in flight plus the model's scratch.

    Input: float32 bands plus the reader's copy in the file's type (counted as float32 too). Output: float32
    predictions, and with an interval the lower and upper bounds (float32) and the three-band product; with the
    area of applicability its three float32 bands, and the DI's float64 copies of the covariates (scratch).
    """
    input_bytes = 2 * 4 * n_bands
    output_bytes = 4 * n_depths + 4 * n_depths  # predictions, and their NODATA-filled copy
    if with_interval:
        output_bytes += 2 * 4 * n_depths + 3 * 4 * n_depths
    scratch = int(predictor.bytes_per_pixel())
    if with_aoa:
        output_bytes += 3 * 4
        scratch += 3 * 8 * n_bands + 32
    return BLOCKS_IN_FLIGHT * (input_bytes + output_bytes) + scratch


def _block_cells(budget_bytes: int, per_cell: int, n_bands: int, halo: int) -> int:
    """Cells per block that fit the budget, counting the halo's extra input cells on a square block."""
    cells = max(1, budget_bytes // per_cell)
    if halo:
        side = math.isqrt(cells)
        halo_cells = (side + 2 * halo) ** 2 - side**2
        cells = max(1, (budget_bytes - BLOCKS_IN_FLIGHT * halo_cells * 2 * 4 * n_bands) // per_cell)
    return int(cells)


# ------------------------------------------------------------------------------------------------- the run


class _RunState:
    """Counts gathered over all blocks."""

    def __init__(self, training_ranges: np.ndarray | None) -> None:
        self.training_ranges = training_ranges
        self.n_predicted = 0
        self.n_out_of_range = 0
        self.n_floored = 0
        # why cells were not predicted: outside the mask, nodata in a covariate, no value from the model
        self.n_masked = 0
        self.n_covariate_nodata = 0
        self.n_model_nodata = 0
        self.n_aoa_cells = 0
        self.n_inside_aoa = 0
        self.n_aoa_masked = 0
        self.value_min = math.inf
        self.value_max = -math.inf

    def count_unpredicted(self, inside: np.ndarray, complete: np.ndarray, predicted: np.ndarray) -> None:
        self.n_masked += int((~inside).sum())
        self.n_covariate_nodata += int((inside & ~complete).sum())
        self.n_model_nodata += int((inside & complete & ~predicted).sum())

    def nothing_predicted(self, n_cells: int) -> str:
        reasons = [
            f"{self.n_masked:,} lie outside the mask",
            f"{self.n_covariate_nodata:,} have nodata in a covariate",
            f"{self.n_model_nodata:,} got no value from the model",
        ]
        if self.n_aoa_masked:
            reasons.append(f"{self.n_aoa_masked:,} lie outside the area of applicability (masked)")
        return (
            f"Nothing was predicted, so no file was written: of the {n_cells:,} cells in the extent, "
            f"{', '.join(reasons[:-1])} and {reasons[-1]}. Check that the extent and the mask cover cells where "
            "every covariate holds data."
        )

    def merge(self, other: _RunState) -> None:
        """Adds the counts (every `n_...`) of `other`, gathered on blocks predicted elsewhere (a cluster worker)."""
        for name, count in vars(other).items():
            if name.startswith("n_"):
                setattr(self, name, getattr(self, name) + count)
        self.value_min = min(self.value_min, other.value_min)
        self.value_max = max(self.value_max, other.value_max)

    def add(self, predicted: np.ndarray, values: np.ndarray, centre: np.ndarray) -> None:
        count = int(predicted.sum())
        if count == 0:
            return
        self.n_predicted += count
        kept = values[:, predicted]
        self.value_min = min(self.value_min, float(kept.min()))
        self.value_max = max(self.value_max, float(kept.max()))
        if self.training_ranges is not None:
            cells = centre[:, predicted]
            low, high = self.training_ranges[:, :1], self.training_ranges[:, 1:]
            # comparisons with a NaN bound are False, so such bands never count
            self.n_out_of_range += int(((cells < low) | (cells > high)).any(axis=0).sum())


class _BlockRun:
    """One prediction run over the blocks of the output window: what every block needs, in one place."""

    def __init__(
        self,
        predictor: BlockPredictor,
        stack: CovariateStack,
        origin: tuple[int, int],
        transform: Affine,
        depth_indices: list[int],
        interval: float | None,
        mask_geometries: Sequence[dict[str, Any]] | None,
        state: _RunState,
        aoa: AoaRequest | None = None,
    ) -> None:
        self.predictor = predictor
        self.stack = stack
        self.origin = origin
        self.transform = transform
        self.halo = int(predictor.patch_size) // 2
        self.depth_indices = depth_indices
        self.interval = interval
        self.mask_geometries = mask_geometries
        self.state = state
        self.aoa = aoa

    def run(self, blocks: Sequence[Block], writers: _Writers, progress: ProgressCallback) -> None:
        """Predicts every block while the next one is read and the previous one written."""
        total_cells = sum(block.height * block.width for block in blocks)
        done_cells = 0

        def report(cells: int) -> None:
            nonlocal done_cells
            done_cells += cells
            message = f"Predicted {done_cells:,} of {total_cells:,} cells"
            check_progress(progress, BLOCKS_DONE * done_cells / total_cells, message)

        with ThreadPoolExecutor(1, "socdepth-read") as reader, ThreadPoolExecutor(1, "socdepth-write") as writer:
            pending_read: Future = reader.submit(self.read, blocks[0])
            pending_write: Future | None = None
            try:
                for index, block in enumerate(blocks):
                    data = pending_read.result()
                    if index + 1 < len(blocks):
                        pending_read = reader.submit(self.read, blocks[index + 1])
                    outputs = self.predict(data, block, report)
                    if pending_write is not None:
                        pending_write.result()  # at most one block waits for the disk; re-raises a write error
                    pending_write = writer.submit(writers.write, block, outputs)
                    release_free_memory()  # the arrays of the block written before this one are freed by now
                pending_write.result()
            except BaseException:
                pending_read.cancel()
                raise

    def read(self, block: Block) -> np.ndarray:
        row_off, col_off = self.origin
        return self.stack.read_block(row_off + block.row, col_off + block.col, block.height, block.width, self.halo)

    def predict(self, data: np.ndarray, block: Block, report: Callable[[int], None] | None = None) -> _Outputs:
        """The outputs of one block read with its halo; `report(cells)` after each step (it may raise to stop)."""
        h, w, halo = block.height, block.width, self.halo
        centre = data[:, halo : halo + h, halo : halo + w]
        complete = np.isfinite(centre).all(axis=0)
        inside = np.ones((h, w), dtype=bool)
        if self.mask_geometries is not None:
            block_transform = self.transform * Affine.translation(block.col, block.row)
            inside = geometry_mask(self.mask_geometries, (h, w), block_transform, invert=True)
        wanted = complete & inside
        if self.mask_geometries is not None and halo == 0:
            # a pixel model reads nothing around a cell, so cells outside the mask are skipped (NaN);
            # a patch model keeps them, as they are the neighbourhood of cells inside
            data[:, ~wanted] = np.nan
        shape = (len(self.depth_indices), h, w)
        values = np.full(shape, np.nan, dtype=np.float32)
        bounds = None if self.interval is None else np.full((3 * shape[0], h, w), np.nan, dtype=np.float32)
        step_rows = h if halo else max(1, STEP_CELLS // w)
        for top in range(0, h, step_rows):
            rows = slice(top, top + step_rows)
            if wanted[rows].any():
                self._predict_step(data[:, top : top + step_rows + 2 * halo], values[:, rows], bounds, rows)
            if report is not None:
                report(min(step_rows, h - top) * w)
        predicted = wanted & np.isfinite(values).all(axis=0)
        if bounds is not None:
            predicted &= np.isfinite(bounds).all(axis=0)
        self.state.count_unpredicted(inside, complete, predicted)
        aoa, lpd = None, None
        if self.aoa is not None:
            aoa, lpd = self.area_of_applicability(centre, predicted)
            inside_aoa = aoa[1] == 1
            self.state.n_aoa_cells += int(predicted.sum())
            self.state.n_inside_aoa += int(inside_aoa.sum())
            if self.aoa.mask_maps:
                self.state.n_aoa_masked += int((predicted & ~inside_aoa).sum())
                predicted &= inside_aoa
        self.state.add(predicted, values, centre)
        values[:, ~predicted] = NODATA
        if bounds is not None:
            bounds[:, ~predicted] = NODATA
        return _Outputs(values, bounds, aoa, lpd)

    def area_of_applicability(self, centre: np.ndarray, cells: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        """(2, h, w) DI and 1/0 inside/outside the AOA, and (h, w) LPD where asked for, at `cells` (else NODATA).
        The inside flag is taken from the float32 DI the file holds, so the two bands always agree."""
        measure = self.aoa.dissimilarity
        values = centre[:, cells].T
        bands = np.full((2, *cells.shape), NODATA, dtype=np.float32)
        lpd = None if self.aoa.lpd_path is None else np.full(cells.shape, NODATA, dtype=np.float32)
        if values.size:
            di = measure.di(values).astype(np.float32)
            bands[0, cells] = di
            bands[1, cells] = di <= np.float32(measure.threshold)
            if lpd is not None:
                lpd[cells] = measure.lpd(values)
        return bands, lpd

    def _predict_step(self, data: np.ndarray, values: np.ndarray, bounds: np.ndarray | None, rows: slice) -> None:
        """Fills `values` (and the rows `rows` of `bounds`) from `data`, the step's rows with their halo."""
        shape = values.shape
        predicted = np.asarray(self.predictor.predict_block(data, self.depth_indices))
        floor = self.predictor.prediction_floor
        if floor is not None:
            self.state.n_floored += int((predicted < floor).any(axis=0).sum())
            predicted = np.maximum(predicted, floor)
        values[:] = _checked(predicted, shape, "predict_block")
        if bounds is not None:
            lower, upper = self.predictor.predict_block_interval(data, self.depth_indices, self.interval)
            bounds[0::3, rows] = _checked(lower, shape, "predict_block_interval")
            bounds[1::3, rows] = _checked(upper, shape, "predict_block_interval")
            bounds[2::3, rows] = bounds[1::3, rows] - bounds[0::3, rows]


def _find_malloc_trim() -> Callable[[int], int] | None:
    """glibc's `malloc_trim`, or None where the C library has none (macOS, Windows, musl)."""
    if not sys.platform.startswith("linux"):
        return None
    return getattr(ctypes.CDLL(None), "malloc_trim", None)  # the C library this process already runs on


_MALLOC_TRIM = _find_malloc_trim()


def release_free_memory() -> None:
    """Gives the pages that malloc holds free back to the system. glibc keeps what a thread freed in that
    thread's arena; the model's and GDAL's threads free a block's arrays of changing sizes in several arenas, so
    without this the resident memory creeps up over a long run (issue 9) though what is in use stays the same."""
    if _MALLOC_TRIM is not None:
        _MALLOC_TRIM(0)


def _checked(values: np.ndarray, shape: tuple[int, int, int], method: str) -> np.ndarray:
    values = np.asarray(values, dtype=np.float32)
    if values.shape != shape:
        raise ValueError(
            f"The model's {method} returned shape {values.shape} for a block needing {shape} (depths, rows, "
            "columns); the model file does not fit this version of the plugin. Train and save it again."
        )
    return values


# -------------------------------------------------------------------------------------------------- files


class _Writers:
    """The open temporary GeoTIFFs of one run. Any failure of GDAL on them means a file is incomplete: it is
    raised as an `IncompleteOutputError` that names the file the user asked for."""

    def __init__(self, final_of: dict[str, str]) -> None:
        self.final_of = final_of  # temporary path -> final path
        self.output = None
        self.uncertainty = None
        self.depth_files: list = []
        self.aoa = None
        self.lpd = None

    @property
    def all(self) -> list:
        return [d for d in (self.output, self.uncertainty, *self.depth_files, self.aoa, self.lpd) if d is not None]

    @contextmanager
    def writing(self, temporary: str) -> Iterator[None]:
        try:
            yield
        except Exception as error:  # GDAL's errors come as several unrelated classes
            raise IncompleteOutputError(_not_written(self.final_of[temporary], str(error))) from error

    def write(self, block: Block, outputs: _Outputs) -> None:
        window = block.window
        with self.writing(self.output.name):
            self.output.write(outputs.values, window=window)
        if self.uncertainty is not None:
            with self.writing(self.uncertainty.name):
                self.uncertainty.write(outputs.uncertainty, window=window)
        for band, dataset in enumerate(self.depth_files):
            with self.writing(dataset.name):
                dataset.write(outputs.values[band], 1, window=window)
        if self.aoa is not None:
            with self.writing(self.aoa.name):
                self.aoa.write(outputs.aoa, window=window)
        if self.lpd is not None:
            with self.writing(self.lpd.name):
                self.lpd.write(outputs.lpd, 1, window=window)

    def build_overviews(self, height: int, width: int) -> None:
        factors = overview_factors(height, width)
        if not factors:
            return
        for dataset in self.all:
            with self.writing(dataset.name):
                dataset.build_overviews(factors, Resampling.average)
                dataset.update_tags(ns="rio_overview", resampling="average")

    def close(self) -> None:
        for dataset in self.all:
            with self.writing(dataset.name):
                dataset.close()


def overview_factors(height: int, width: int) -> list[int]:
    """Powers of two until the coarsest overview fits in one tile (as gdaladdo does by default)."""
    factors, factor = [], 2
    while max(height, width) / (factor // 2) > TILE:
        factors.append(factor)
        factor *= 2
    return factors


class RasterDestinations:
    """Final and temporary paths of every output raster; moves them into place or removes them. Shared by the
    maps here and the stock maps of `core.stocks`."""

    def __init__(
        self,
        output_path: str,
        uncertainty_path: str | None,
        depth_folder: str | None,
        depth_file_names: Sequence[str] | None,
        band_labels: list[str],
        aoa_path: str | None = None,
        lpd_path: str | None = None,
    ) -> None:
        self.band_labels = band_labels
        self.output = os.path.abspath(os.fspath(output_path))
        self.uncertainty = None if uncertainty_path is None else os.path.abspath(os.fspath(uncertainty_path))
        self.depth_files = _depth_paths(self.output, depth_folder, depth_file_names, band_labels)
        self.aoa = None if aoa_path is None else os.path.abspath(os.fspath(aoa_path))
        self.lpd = None if lpd_path is None else os.path.abspath(os.fspath(lpd_path))
        self.created_folder: str | None = None
        finals = [p for p in (self.output, self.uncertainty, *self.depth_files, self.aoa, self.lpd) if p is not None]
        if len(set(finals)) != len(finals):
            raise ValueError(
                "Two outputs would be written to the same file; give the prediction, the uncertainty, the "
                "per-depth files and the area of applicability different names."
            )
        for path in (self.output, self.uncertainty, self.aoa, self.lpd):  # the per-depth folder is created
            if path is not None and not os.path.isdir(os.path.dirname(path)):
                raise ValueError(
                    f"The folder '{os.path.dirname(path)}' for '{os.path.basename(path)}' does not exist; create it "
                    "or choose another one."
                )
        self.temporary = {path: _temporary_name(path) for path in finals}

    def open(self, crs_wkt: str | None, transform: Affine, height: int, width: int, interval: float | None) -> _Writers:
        if self.depth_files:
            folder = os.path.dirname(self.depth_files[0])
            if not os.path.isdir(folder):
                os.makedirs(folder)
                self.created_folder = folder
        writers = _Writers({temporary: final for final, temporary in self.temporary.items()})
        try:
            with writers.writing(self.temporary[self.output]):
                writers.output = _create(
                    self.temporary[self.output], crs_wkt, transform, height, width, self.band_labels
                )
            if self.uncertainty is not None:
                labels = _uncertainty_labels(self.band_labels, interval)
                with writers.writing(self.temporary[self.uncertainty]):
                    writers.uncertainty = _create(
                        self.temporary[self.uncertainty], crs_wkt, transform, height, width, labels
                    )
            for path, label in zip(self.depth_files, self.band_labels):
                with writers.writing(self.temporary[path]):
                    writers.depth_files.append(
                        _create(self.temporary[path], crs_wkt, transform, height, width, [label])
                    )
            if self.aoa is not None:
                with writers.writing(self.temporary[self.aoa]):
                    writers.aoa = _create(self.temporary[self.aoa], crs_wkt, transform, height, width, AOA_LABELS)
            if self.lpd is not None:
                with writers.writing(self.temporary[self.lpd]):
                    writers.lpd = _create(self.temporary[self.lpd], crs_wkt, transform, height, width, LPD_LABELS)
        except BaseException:
            writers.close()
            raise
        return writers

    def check_complete(self) -> None:
        """Raises `IncompleteOutputError` unless every closed temporary file reached the disk whole."""
        for final, temporary in self.temporary.items():
            problem = _incomplete(temporary)
            if problem is not None:
                raise IncompleteOutputError(_not_written(final, problem))

    def commit(self) -> None:
        for final, temporary in self.temporary.items():
            os.replace(temporary, final)

    def discard(self) -> None:
        for temporary in self.temporary.values():
            if os.path.exists(temporary):
                os.remove(temporary)
        if self.created_folder is not None and not os.listdir(self.created_folder):
            os.rmdir(self.created_folder)


class NothingPredictedError(ValueError):
    """No cell of the extent could be predicted; the message counts why."""


class IncompleteOutputError(OSError):
    """An output file that GDAL failed to write in full; the message says what to do."""


def _not_written(final: str, problem: str) -> str:
    return (
        f"'{os.path.basename(final)}' could not be written to '{os.path.dirname(final)}' ({problem}): the disk may "
        "be full, or the folder not writable. Nothing was replaced: an earlier file of that name is unchanged. "
        "Free some space or choose another folder."
    )


def _incomplete(path: str) -> str | None:
    """What is missing from a closed GeoTIFF, or None when it is whole and synced to the disk.

    GDAL reports a failed write (a full disk, an I/O error) only to its error log, and rasterio does not raise
    when such a file is closed, so a truncated map would otherwise replace the user's earlier one. Every tile of
    every band and overview must lie inside the file: libtiff records a tile only once its bytes are written.
    """
    try:
        with open(path, "rb") as stream:
            os.fsync(stream.fileno())  # a write error the system reports only now (e.g. a network drive)
            size = os.fstat(stream.fileno()).st_size
        with rasterio.open(path) as dataset:
            levels = [{}, *({"overview_level": i} for i in range(len(dataset.overviews(1))))]
        for level in levels:
            with rasterio.open(path, **level) as dataset:
                for band, (tile_h, tile_w) in zip(dataset.indexes, dataset.block_shapes):
                    for y in range(math.ceil(dataset.height / tile_h)):
                        for x in range(math.ceil(dataset.width / tile_w)):
                            offset = dataset.get_tag_item(f"BLOCK_OFFSET_{x}_{y}", "TIFF", bidx=band)
                            length = dataset.get_tag_item(f"BLOCK_SIZE_{x}_{y}", "TIFF", bidx=band)
                            if not offset or not length or int(offset) + int(length) > size:
                                where = f"overview {level['overview_level'] + 1}" if level else "the map"
                                return f"tile {x},{y} of band {band} of {where} is missing"
    except (OSError, rasterio.errors.RasterioError) as error:
        return f"it cannot be read back: {error}"
    return None


def _temporary_name(path: str) -> str:
    folder, name = os.path.split(path)
    return os.path.join(folder, f".{name}.{secrets.token_hex(6)}.partial.tif")


def _depth_paths(
    output: str, depth_folder: str | None, names: Sequence[str] | None, band_labels: list[str]
) -> list[str]:
    if depth_folder is None:
        if names is not None:
            raise ValueError("File names for the per-depth rasters were given without a folder; choose a folder.")
        return []
    if names is None:
        stem = os.path.splitext(os.path.basename(output))[0]
        names = [f"{stem}_{_safe_file_part(label)}.tif" for label in band_labels]
    elif len(names) != len(band_labels):
        raise ValueError(
            f"{len(names)} file names were given for {len(band_labels)} depths; give one name per selected depth."
        )
    paths = []
    for name in names:
        name = str(name)
        if not name or os.path.basename(name) != name:
            raise ValueError(
                f"Per-depth file name '{name}' must be a plain file name without a folder, e.g. soc_0_5.tif."
            )
        if not os.path.splitext(name)[1]:
            name += ".tif"
        paths.append(os.path.join(os.path.abspath(os.fspath(depth_folder)), name))
    return paths


def _safe_file_part(label: str) -> str:
    """'SOC 0-5 cm' -> 'SOC_0-5_cm': letters, digits, '-', '.' and '_' only."""
    return "".join(ch if ch.isalnum() or ch in "-._" else "_" for ch in label).strip("_") or "depth"


def _uncertainty_labels(band_labels: list[str], level: float) -> list[str]:
    low, high = 100 * (1 - level) / 2, 100 * (1 + level) / 2
    labels = []
    for label in band_labels:
        labels += [f"{label} lower {low:g}%", f"{label} upper {high:g}%", f"{label} {100 * level:g}% interval width"]
    return labels


def _create(path: str, crs_wkt: str | None, transform: Affine, height: int, width: int, labels: list[str]):
    dataset = rasterio.open(
        path,
        "w",
        driver="GTiff",
        width=width,
        height=height,
        count=len(labels),
        dtype="float32",
        crs=crs_wkt,
        transform=transform,
        nodata=NODATA,
        tiled=True,
        blockxsize=TILE,
        blockysize=TILE,
        compress="deflate",
        predictor=3,
        interleave="band",  # a map is viewed one depth at a time: a tile decompresses only its band
        bigtiff="IF_SAFER",
    )
    for band, label in enumerate(labels, start=1):
        dataset.set_band_description(band, label)
    return dataset


# ------------------------------------------------------------------------------------------ argument checks


def _check_arguments(
    depth_indices: list[int],
    band_labels: list[str],
    memory_mb: float,
    interval: float | None,
    uncertainty_path: str | None,
) -> None:
    if not depth_indices:
        raise ValueError("No depth selected; choose at least one depth interval to map.")
    if len(band_labels) != len(depth_indices):
        raise ValueError(
            f"{len(band_labels)} band labels were given for {len(depth_indices)} depths; give one label per depth."
        )
    if not memory_mb > 0:
        raise ValueError(f"The memory budget must be a positive number of MB (e.g. 1024); got {memory_mb}.")
    if interval is not None and not 0 < interval < 1:
        raise ValueError(
            f"The prediction interval must be a probability between 0 and 1 (e.g. 0.9 for 90 %); got {interval}."
        )
    if (interval is None) != (uncertainty_path is None):
        raise ValueError(
            "An uncertainty map needs both an interval level (e.g. 0.9) and an output file; give both or neither."
        )


def _check_training_ranges(training_ranges: np.ndarray | None, stack: CovariateStack) -> np.ndarray | None:
    if training_ranges is None:
        return None
    ranges = np.asarray(training_ranges, dtype=float)
    if ranges.shape != (stack.count, 2):
        raise ValueError(
            f"Training ranges have shape {ranges.shape} but the covariate stack has {stack.count} bands; give "
            "one (minimum, maximum) pair per band, in the stack's order."
        )
    return ranges


def _output_window(stack: CovariateStack, extent: Extent | None) -> tuple[int, int, int, int]:
    """(row_off, col_off, height, width) of the cells covering `extent`, clipped to the stack."""
    if extent is None:
        return 0, 0, stack.height, stack.width
    xmin, ymin, xmax, ymax = (float(v) for v in extent)
    if not (xmin < xmax and ymin < ymax):
        raise ValueError(
            f"The extent ({xmin:g}, {ymin:g}, {xmax:g}, {ymax:g}) is empty; give xmin < xmax and ymin < ymax."
        )
    cols, rows = ~stack.transform * (np.array([xmin, xmin, xmax, xmax]), np.array([ymin, ymax, ymin, ymax]))
    # an edge within a millionth of a cell of a cell boundary is on it (float noise in typed-in extents)
    col0, col1 = _snap_out(cols.min(), cols.max())
    row0, row1 = _snap_out(rows.min(), rows.max())
    col0, row0 = max(col0, 0), max(row0, 0)
    col1, row1 = min(col1, stack.width), min(row1, stack.height)
    if col0 >= col1 or row0 >= row1:
        bounds = stack.bounds
        raise ValueError(
            f"The extent ({xmin:g}, {ymin:g}, {xmax:g}, {ymax:g}) does not overlap the covariates (x {bounds[0]:g} "
            f"to {bounds[2]:g}, y {bounds[1]:g} to {bounds[3]:g}); give the extent in the covariates' CRS."
        )
    return row0, col0, row1 - row0, col1 - col0


def _snap_out(low: float, high: float, tolerance: float = 1e-6) -> tuple[int, int]:
    return math.floor(low + tolerance), math.ceil(high - tolerance)
