"""Resident memory of a long prediction stays bounded (issue 9): freed pages go back to the system, and over many
blocks of a virtual raster the resident memory reaches a plateau. Measured on this process (VmRSS), Linux only."""

from __future__ import annotations

import sys
import threading
from pathlib import Path

import numpy as np
import pytest

from soc_depth_mapper.core.bundle import SocModel
from soc_depth_mapper.core.card import Bands, Grid, ModelCard
from soc_depth_mapper.core.models.forest import RandomForestDepthModel
from soc_depth_mapper.core.predict import _MALLOC_TRIM, BLOCKS_DONE, predict_rasters, release_free_memory
from soc_depth_mapper.core.rasters import CovariateStack

SAMPLE = Path(__file__).resolve().parents[2] / "sample_data" / "edgeroi" / "covariates_250m.tif"
INTERVALS = np.array([[0.0, 5.0], [5.0, 15.0]])
MB = 2**20

pytestmark = pytest.mark.skipif(
    not sys.platform.startswith("linux") or _MALLOC_TRIM is None, reason="needs Linux's /proc and glibc's malloc"
)


def rss_bytes() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS in /proc/self/status")


def test_pages_freed_in_a_threads_arena_go_back_to_the_system():
    """The mechanism: arrays below malloc's mmap threshold, freed in a worker thread's arena behind one still
    alive, stay resident until `release_free_memory`."""
    kept: list[np.ndarray] = []

    def fragment() -> None:
        chunks = [np.ones(12_000) for _ in range(2_000)]  # 96 kB each: from the arena, not mmapped; ~190 MB
        kept.append(chunks[-1])  # the top of the heap stays in use, so free() alone cannot shrink it
        del chunks

    thread = threading.Thread(target=fragment)
    thread.start()
    thread.join()
    before = rss_bytes()
    release_free_memory()
    released = before - rss_bytes()
    assert released > 100 * MB, f"only {released / MB:.1f} MB of ~190 MB freed went back to the system"


def write_mosaic(path: Path, tiles: int) -> None:
    """A VRT of the Edgeroi 250 m covariates repeated tiles x tiles times (one source per copy and band)."""
    import rasterio

    with rasterio.open(SAMPLE) as src:
        width, height, count, nodata, gt = src.width, src.height, src.count, src.nodata, src.transform.to_gdal()
        crs = src.crs.to_wkt()
    sources = "".join(
        f'<SimpleSource><SourceFilename relativeToVRT="0">{SAMPLE}</SourceFilename><SourceBand>{{band}}</SourceBand>'
        f'<SrcRect xOff="0" yOff="0" xSize="{width}" ySize="{height}"/>'
        f'<DstRect xOff="{tx * width}" yOff="{ty * height}" xSize="{width}" ySize="{height}"/></SimpleSource>'
        for ty in range(tiles)
        for tx in range(tiles)
    )
    bands = "".join(
        f'<VRTRasterBand dataType="Float32" band="{band}"><NoDataValue>{nodata!r}</NoDataValue>'
        f"{sources.format(band=band)}</VRTRasterBand>"
        for band in range(1, count + 1)
    )
    path.write_text(
        f'<VRTDataset rasterXSize="{width * tiles}" rasterYSize="{height * tiles}"><SRS>{crs}</SRS>'
        f"<GeoTransform>{', '.join(map(repr, gt))}</GeoTransform>{bands}</VRTDataset>"
    )


def test_resident_memory_reaches_a_plateau_over_the_blocks_of_a_virtual_raster(tmp_path):
    """Many blocks on a mosaic of the Edgeroi stack with a small budget: after the first blocks (GDAL's cache
    filling to its share of the budget) the resident memory grows no more than a few MB. Sampled while blocks are
    predicted (building the overviews afterwards takes memory of its own)."""
    vrt = tmp_path / "mosaic.vrt"
    write_mosaic(vrt, 6)
    rng = np.random.default_rng(0)
    with CovariateStack([str(vrt)]) as stack:
        rows, cols = rng.integers(0, stack.height, 200), rng.integers(0, stack.width, 200)
        x, y = stack.transform * (cols + 0.5, rows + 0.5)
        patches = stack.sample(x, y).patches
        keep = np.isfinite(patches).all(axis=(1, 2, 3))
        centre = patches[keep, :, 0, 0].astype(float)
        targets = np.stack([centre[:, 0] / 20 + centre[:, 1], centre[:, 0] / 40], axis=1)
        model = RandomForestDepthModel(n_trees=10, n_jobs=2).fit(patches[keep], targets, INTERVALS)
        card = ModelCard(
            kind=model.kind, property="SOC", intervals=((0.0, 5.0), (5.0, 15.0)), bands=Bands(tuple(stack.band_names)),
            grid=Grid(stack.crs_wkt, tuple(stack.transform.to_gdal()), tuple(stack.res)),
        )  # fmt: skip
        samples: list[int] = []

        def record(fraction: float, message: str) -> bool:
            if fraction < BLOCKS_DONE:
                samples.append(rss_bytes())
            return True

        result = predict_rasters(
            SocModel(model, card), stack, str(tmp_path / "soc.tif"), [0, 1], ["SOC 0-5 cm", "SOC 5-15 cm"],
            memory_mb=8, interval=0.9, uncertainty_path=str(tmp_path / "unc.tif"),
            progress=record,
        )  # fmt: skip
    assert result.n_predicted > 0.9 * stack.width * stack.height
    assert len(samples) > 40  # many blocks and steps
    settled = np.array(samples[len(samples) // 4 :])
    first, last = settled[: len(settled) // 2], settled[len(settled) // 2 :]
    growth = last.max() - first.max()
    assert growth < 4 * MB, f"resident memory still grew by {growth / MB:.1f} MB over the second half of the run"
