"""Soak: resident memory of a long random-forest prediction on a large virtual raster, sampled as it runs.

    python -m bench.soak [--tiles-x 30] [--tiles-y 30] [--trees 20] [--memory-mb 256] [--minutes M]

The stack is a VRT mosaicking the Edgeroi 250 m covariates (6 bands, 190 x 128, stripes of one row) tiles-x by
tiles-y times (110 x 160 makes the 20,900 x 20,480 raster of issue 9), so every few blocks read from sources
GDAL has not opened yet. Every `--every` blocks the progress callback records the resident memory (VmRSS), GDAL's
block cache in use and the bytes malloc hands out; the table shows them over the run and the plateau check
takes the samples from when GDAL's cache has filled to its share of the budget (it grows by the blocks read until
then, by design) and compares the peak of their second half with that of their first: bounded memory grows by less
than `PLATEAU_SHARE`. `--minutes` stops the run
by cancelling it after that long, so the full-size raster can be soaked for the reporter's 7 minutes.
"""

from __future__ import annotations

import argparse
import ctypes
import ctypes.util
import tempfile
import time
from pathlib import Path

import numpy as np

from bench.predict import INTERVALS, SAMPLE, sample_sites
from soc_depth_mapper.core.predict import BLOCKS_DONE

#: once GDAL's block cache is full, the peak of the second half of the samples may exceed that of the first half
#: by at most this share
PLATEAU_SHARE = 0.05
#: the cache counts as full from the first sample at this share of its largest size
FILLED_SHARE = 0.95


def rss_mb() -> float:
    """Resident memory of this process now (VmRSS), in MB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS in /proc/self/status (not Linux?)")


def gdal_cache_mb() -> float:
    """Bytes in GDAL's block cache, in MB (the GDAL that rasterio uses: already loaded in this process)."""
    gdal = ctypes.CDLL(ctypes.util.find_library("gdal"))
    gdal.GDALGetCacheUsed64.restype = ctypes.c_int64
    return gdal.GDALGetCacheUsed64() / 2**20


def write_mosaic(source: Path, target: Path, tiles_x: int, tiles_y: int) -> tuple[int, int]:
    """A VRT of `source` repeated tiles_x x tiles_y times, one source per copy and band; returns its size."""
    import rasterio

    with rasterio.open(source) as src:
        width, height, count, nodata = src.width, src.height, src.count, src.nodata
        transform, crs, descriptions = src.transform, src.crs, src.descriptions
    total_w, total_h = width * tiles_x, height * tiles_y
    gt = ", ".join(repr(v) for v in transform.to_gdal())
    lines = [f'<VRTDataset rasterXSize="{total_w}" rasterYSize="{total_h}">', f"<SRS>{crs.to_wkt()}</SRS>"]
    lines.append(f"<GeoTransform>{gt}</GeoTransform>")
    for band in range(1, count + 1):
        lines.append(f'<VRTRasterBand dataType="Float32" band="{band}">')
        lines.append(f"<NoDataValue>{nodata!r}</NoDataValue><Description>{descriptions[band - 1]}</Description>")
        for ty in range(tiles_y):
            for tx in range(tiles_x):
                lines.append(
                    f'<SimpleSource><SourceFilename relativeToVRT="0">{source}</SourceFilename>'
                    f"<SourceBand>{band}</SourceBand>"
                    f'<SrcRect xOff="0" yOff="0" xSize="{width}" ySize="{height}"/>'
                    f'<DstRect xOff="{tx * width}" yOff="{ty * height}" xSize="{width}" ySize="{height}"/>'
                    "</SimpleSource>"
                )
        lines.append("</VRTRasterBand>")
    lines.append("</VRTDataset>")
    target.write_text("\n".join(lines))
    return total_w, total_h


def soak(
    tiles_x: int, tiles_y: int, trees: int, memory_mb: float, every: int, minutes: float | None = None
) -> list[tuple[float, ...]]:
    """Predicts six depths on the mosaic (cancelled after `minutes` if given); returns (seconds, fraction done,
    RSS, GDAL cache, malloc) samples."""
    from soc_depth_mapper.core.bundle import SocModel
    from soc_depth_mapper.core.card import Bands, Grid, ModelCard
    from soc_depth_mapper.core.depths import interval_labels
    from soc_depth_mapper.core.models.base import Cancelled
    from soc_depth_mapper.core.models.forest import RandomForestDepthModel
    from soc_depth_mapper.core.predict import predict_rasters
    from soc_depth_mapper.core.rasters import CovariateStack

    patches, targets = sample_sites(SAMPLE, 300, 1, seed=0)
    model = RandomForestDepthModel(n_trees=trees).fit(patches, targets, INTERVALS)
    labels = [f"SOC {label}" for label in interval_labels(INTERVALS, " cm")]
    samples: list[tuple[float, ...]] = []
    with tempfile.TemporaryDirectory() as folder:
        vrt = Path(folder) / "mosaic.vrt"
        write_mosaic(SAMPLE, vrt, tiles_x, tiles_y)
        with CovariateStack([str(vrt)]) as stack:
            card = ModelCard(
                kind=model.kind, property="SOC", intervals=tuple(map(tuple, INTERVALS.tolist())),
                bands=Bands(tuple(stack.band_names)),
                grid=Grid(stack.crs_wkt, tuple(stack.transform.to_gdal()), tuple(stack.res)),
            )  # fmt: skip
            start = time.perf_counter()
            calls = 0

            def record(fraction: float, message: str) -> bool:
                nonlocal calls
                calls += 1
                elapsed = time.perf_counter() - start
                if calls % every == 0:
                    samples.append((elapsed, fraction, rss_mb(), gdal_cache_mb(), malloc_mb()))
                return minutes is None or elapsed < 60 * minutes

            try:
                predict_rasters(
                    SocModel(model, card), stack, str(Path(folder) / "soc.tif"), range(len(INTERVALS)), labels,
                    memory_mb=memory_mb, progress=record,
                )  # fmt: skip
            except Cancelled:
                print(f"stopped after {minutes:g} minutes, {samples[-1][1]:.1%} done")
    return samples


class _MallInfo2(ctypes.Structure):
    """glibc's `struct mallinfo2` (glibc 2.33 and later)."""

    _fields_ = tuple(
        (name, ctypes.c_size_t)
        for name in ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks",
                     "keepcost")
    )  # fmt: skip


def malloc_mb() -> float:
    """Bytes glibc's malloc has handed out and not got back (arenas plus mmapped chunks), in MB."""
    libc = ctypes.CDLL(None)
    libc.mallinfo2.restype = _MallInfo2
    info = libc.mallinfo2()
    return (info.uordblks + info.hblkhd) / 2**20


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tiles-x", type=int, default=30)
    parser.add_argument("--tiles-y", type=int, default=30)
    parser.add_argument("--trees", type=int, default=20)
    parser.add_argument("--memory-mb", type=float, default=256)
    parser.add_argument("--every", type=int, default=20, help="progress reports between two samples")
    parser.add_argument("--minutes", type=float, help="cancel the prediction after this long")
    args = parser.parse_args(argv)
    samples = soak(args.tiles_x, args.tiles_y, args.trees, args.memory_mb, args.every, args.minutes)
    print(f"{'s':>7} {'done':>6} {'RSS MB':>8} {'GDAL cache MB':>14} {'malloc MB':>10}")
    for row in samples[:: max(1, len(samples) // 20)]:
        print(f"{row[0]:7.1f} {row[1]:6.1%} {row[2]:8.1f} {row[3]:14.1f} {row[4]:10.1f}")
    blocks = [row for row in samples if row[1] < BLOCKS_DONE]  # the blocks, not the overviews
    cache = np.array([row[3] for row in blocks])
    filled = int(np.argmax(cache >= FILLED_SHARE * cache.max()))
    rss = np.array([row[2] for row in blocks[filled:]])
    half = len(rss) // 2
    if half < 2:
        print(f"GDAL's block cache filled only at sample {filled} of {len(blocks)}: run longer to see a plateau")
        return
    early, late = rss[:half].max(), rss[half:].max()
    growth = late - early
    verdict = "plateau" if growth <= PLATEAU_SHARE * early else "STILL GROWING"
    print(
        f"GDAL's block cache full ({cache.max():.0f} MB) after {blocks[filled][0]:.0f} s; from then on, peak RSS in "
        f"the first half of the samples {early:.1f} MB, in the second {late:.1f} MB: {growth:+.1f} MB "
        f"({growth / early:+.1%}, bound {PLATEAU_SHARE:.0%}): {verdict}"
    )


if __name__ == "__main__":
    main()
