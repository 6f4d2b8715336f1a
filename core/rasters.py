"""A stack of covariate rasters read as one array of bands: sampling at points and block reads for prediction.

Every band comes back as float32 with NaN where the file says nodata (or holds NaN or ±infinity, which a raster
without a nodata value may use instead) and where a request runs off the raster, so that models see one
missing-value convention whatever the source data type. Infinite cells are counted, so that callers can say
which band holds them. Class codes
(integers below 2**24) are exact in float32.

All rasters must lie on the same grid (CRS, transform, size) as the first one. Otherwise either the caller
fixes the data, or `resample=True` warps the others onto the first raster's grid on the fly (GDAL warped VRT,
no copy on disk) with nearest-neighbour resampling: nearest never invents values, so class codes such as
geology or land use stay valid codes (bilinear would blend code 2 and code 4 into a meaningless 3).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import rasterio
from affine import Affine
from rasterio.enums import Resampling
from rasterio.errors import RasterioIOError
from rasterio.vrt import WarpedVRT
from rasterio.windows import Window

#: Grids count as equal when origins and pixel sizes agree to this fraction of a pixel (float noise in
#: transforms written by different programs).
GRID_TOLERANCE = 1e-6

#: Points are read tile by tile, one window per tile holding the bounding box of its points, so that
#: thousands of points cost a few reads and far-apart points never force a read of the space between them.
SAMPLE_TILE = 256

RESAMPLE_HINT = "tick 'Resample onto the first raster's grid'"

STATUS_OK, STATUS_OUTSIDE, STATUS_NODATA = 0, 1, 2


class RasterMismatchError(ValueError):
    """The rasters of a stack do not share one grid."""


@dataclass
class PointSample:
    """Covariates at points. `patches` (N, B, p, p) float32 with NaN for nodata or off the raster (all NaN
    for points outside); `status` (N,) int8: 0 ok, 1 outside the rasters, 2 centre cell is nodata in some
    band; `reasons` (N,) '' for ok, else a readable reason; `infinite` (N, B) bool: the centre cell held ±inf
    (counted as nodata)."""

    patches: np.ndarray
    status: np.ndarray
    reasons: list[str]
    infinite: np.ndarray


def _unique_names(names: Sequence[str]) -> list[str]:
    """Repeated names get `_2`, `_3`, ... in order of appearance (the first keeps its name); a suffix that
    would collide with another given name is skipped."""
    given, used = set(names), set()
    unique = []
    for name in names:
        candidate, counter = name, 1
        while candidate in used or (candidate != name and candidate in given):
            counter += 1
            candidate = f"{name}_{counter}"
        used.add(candidate)
        unique.append(candidate)
    return unique


def _crs_label(crs) -> str:
    if crs is None:
        return "no coordinate system"
    wkt = crs.to_wkt()
    name = wkt.split('"')[1] if '"' in wkt else wkt
    epsg = crs.to_epsg()
    return f"'{name}' (EPSG:{epsg})" if epsg is not None else f"'{name}'"


def _unit_suffix(crs) -> str:
    if crs is None:
        return ""
    if crs.is_geographic:
        return " degrees"
    return " m" if crs.linear_units in ("metre", "meter", "m") else ""


def _grid_difference(name: str, src, ref_name: str, ref) -> str | None:
    """What differs between the grid of `src` and that of `ref`, as a sentence, or None when they agree."""
    if src.crs != ref.crs:
        return f"layer '{name}' is in {_crs_label(src.crs)} but '{ref_name}' is in {_crs_label(ref.crs)}"
    st, rt = src.transform, ref.transform
    cell = max(abs(rt.a), abs(rt.e), abs(rt.b), abs(rt.d))
    tol = GRID_TOLERANCE * cell
    if abs(st.b - rt.b) > tol or abs(st.d - rt.d) > tol:
        return f"layer '{name}' is rotated differently from '{ref_name}'"
    if abs(st.a - rt.a) > tol or abs(st.e - rt.e) > tol:
        unit = _unit_suffix(ref.crs)
        return (
            f"layer '{name}' has pixel size {abs(st.a):g} x {abs(st.e):g}{unit} but '{ref_name}' has "
            f"{abs(rt.a):g} x {abs(rt.e):g}{unit}"
        )
    if abs(st.c - rt.c) > tol or abs(st.f - rt.f) > tol:
        return (
            f"layer '{name}' has its upper-left corner at ({st.c:.10g}, {st.f:.10g}) but '{ref_name}' at "
            f"({rt.c:.10g}, {rt.f:.10g}), so the cells do not line up"
        )
    if (src.width, src.height) != (ref.width, ref.height):
        return (
            f"layer '{name}' has {src.width} x {src.height} cells (columns x rows) but '{ref_name}' has "
            f"{ref.width} x {ref.height}, so their extents differ"
        )
    return None


class CovariateStack:
    """Rasters (single- or multi-band) stacked band after band in the given order.

    Band `i` is called `{layer}_{description}` when the file gives the band a description, else
    `{layer}_{band number}` (1-based). Layer names default to the file names without extension. When two
    layers or two bands would share a name, the later ones get `_2`, `_3`, ... appended.
    """

    def __init__(self, paths: Sequence[str], layer_names: Sequence[str] | None = None, resample: bool = False):
        paths = [str(p) for p in paths]
        if not paths:
            raise ValueError("No covariate rasters given; select at least one raster layer.")
        if layer_names is None:
            layer_names = [Path(p).stem for p in paths]
        elif len(layer_names) != len(paths):
            raise ValueError(
                f"{len(layer_names)} layer names were given for {len(paths)} rasters; give one name per raster "
                "or none to use the file names."
            )
        #: the files, as given (a cluster's workers open them again)
        self.paths: list[str] = paths
        self.layer_names: list[str] = _unique_names([str(n) for n in layer_names])
        self.resample = resample
        self._files: list = []
        self._readers: list = []
        try:
            self._open(paths)
        except BaseException:
            self.close()
            raise

    def _open(self, paths: list[str]) -> None:
        for path in paths:
            try:
                self._files.append(rasterio.open(path))
            except RasterioIOError as error:
                raise ValueError(
                    f"Cannot open raster '{path}' ({error}); check that the file exists and is a raster GDAL "
                    "can read (GeoTIFF, VRT, ...)."
                ) from None
        ref, ref_name = self._files[0], self.layer_names[0]
        self._readers = [ref]
        for name, src in zip(self.layer_names[1:], self._files[1:]):
            difference = _grid_difference(name, src, ref_name, ref)
            if difference is None:
                self._readers.append(src)
            elif not self.resample:
                raise RasterMismatchError(f"{difference}; give rasters on one grid or {RESAMPLE_HINT}.")
            elif src.crs is None or ref.crs is None:
                raise RasterMismatchError(
                    f"{difference}; a raster without a coordinate system cannot be resampled: assign its CRS "
                    "(Raster > Projections > Assign Projection) first."
                )
            else:
                self._readers.append(
                    WarpedVRT(
                        src,
                        crs=ref.crs,
                        transform=ref.transform,
                        width=ref.width,
                        height=ref.height,
                        resampling=Resampling.nearest,
                        dtype="float32",
                        nodata=np.nan,
                    )
                )
        self.crs_wkt: str = ref.crs.to_wkt() if ref.crs is not None else ""
        self.transform: Affine = ref.transform
        self.width: int = ref.width
        self.height: int = ref.height
        self.res: tuple[float, float] = ref.res
        self.bounds = ref.bounds
        band_names, nodata = [], []
        for name, src in zip(self.layer_names, self._files):
            for band in range(1, src.count + 1):
                label = (src.descriptions[band - 1] or "").strip() or str(band)
                band_names.append(f"{name}_{label}")
            nodata.extend(src.nodatavals)
        self.band_names: list[str] = _unique_names(band_names)
        #: nodata value of each band in its source file (None when the file declares none)
        self.nodata: list[float | None] = nodata
        #: per band, the cells read by `read_block` (halos left out) that held ±inf and came back as NaN
        self.infinite_cells = np.zeros(len(self.band_names), dtype=np.int64)

    @property
    def count(self) -> int:
        return len(self.band_names)

    def close(self) -> None:
        for reader in self._readers:
            if isinstance(reader, WarpedVRT):
                reader.close()
        for src in self._files:
            src.close()
        self._readers, self._files = [], []

    def __enter__(self) -> CovariateStack:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _read_inside(self, row_off: int, col_off: int, height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
        """All bands of a window that lies inside the raster, float32 with NaN for nodata and ±inf, and where
        ±inf was (bool, same shape)."""
        window = Window(col_off, row_off, width, height)
        out = np.empty((self.count, height, width), dtype=np.float32)
        band = 0
        for reader in self._readers:
            data = reader.read(window=window)
            for values, nodata in zip(data, reader.nodatavals):
                out[band] = values
                if nodata is not None and not np.isnan(nodata):
                    # compared in the file's own type (the scalar is cast to it): float32 nodata such as
                    # -3.4e38 would not match after widening the data to float64
                    out[band][values == nodata] = np.nan
                band += 1
        infinite = np.isinf(out)
        out[infinite] = np.nan
        return out, infinite

    def read_block(self, row_off: int, col_off: int, height: int, width: int, halo: int = 0) -> np.ndarray:
        """(B, height + 2*halo, width + 2*halo) float32 for the window at (row_off, col_off) grown by `halo`
        cells on every side; NaN for nodata, ±inf and cells off the raster, so blocks at the edge need no
        special case in the caller. Adds the window's ±inf cells to `infinite_cells`."""
        out, infinite = self._read_block(row_off, col_off, height, width, halo)
        self.infinite_cells += infinite[:, halo : halo + height, halo : halo + width].sum(axis=(1, 2))
        return out

    def _read_block(
        self, row_off: int, col_off: int, height: int, width: int, halo: int
    ) -> tuple[np.ndarray, np.ndarray]:
        """`read_block`'s values and where they were ±inf, without counting."""
        if height < 1 or width < 1 or halo < 0:
            raise ValueError(f"Block of {height} x {width} cells with halo {halo}: sizes must be >= 1, halo >= 0.")
        top, left = row_off - halo, col_off - halo
        rows, cols = height + 2 * halo, width + 2 * halo
        out = np.full((self.count, rows, cols), np.nan, dtype=np.float32)
        infinite = np.zeros((self.count, rows, cols), dtype=bool)
        r0, r1 = max(top, 0), min(top + rows, self.height)
        c0, c1 = max(left, 0), min(left + cols, self.width)
        if r0 < r1 and c0 < c1:
            inside = (slice(None), slice(r0 - top, r1 - top), slice(c0 - left, c1 - left))
            out[inside], infinite[inside] = self._read_inside(r0, c0, r1 - r0, c1 - c0)
        return out, infinite

    def cell_of(self, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Row and column of the cell containing each point (cells are half-open: a point on the boundary
        between two cells belongs to the one to its right/below). Off the raster they are out of range."""
        cols, rows = ~self.transform * (np.asarray(x, dtype=float), np.asarray(y, dtype=float))
        with np.errstate(invalid="ignore"):
            return np.floor(rows), np.floor(cols)

    def sample(self, x: np.ndarray, y: np.ndarray, patch_size: int = 1) -> PointSample:
        """Covariates in the `patch_size` x `patch_size` window centred on the cell holding each point
        (x, y in the rasters' CRS)."""
        x = np.atleast_1d(np.asarray(x, dtype=float))
        y = np.atleast_1d(np.asarray(y, dtype=float))
        if x.ndim != 1 or x.shape != y.shape:
            raise ValueError(f"x and y must be two equally long lists of coordinates, got {x.shape} and {y.shape}.")
        if isinstance(patch_size, bool) or int(patch_size) != patch_size or patch_size < 1 or patch_size % 2 == 0:
            raise ValueError(
                f"Patch size {patch_size} must be an odd whole number >= 1 (1, 3, 5, ...) so that the point "
                "sits in the centre cell."
            )
        patch_size = int(patch_size)
        n, r = len(x), patch_size // 2
        patches = np.full((n, self.count, patch_size, patch_size), np.nan, dtype=np.float32)
        infinite = np.zeros((n, self.count), dtype=bool)
        rows, cols = self.cell_of(x, y)
        inside = (rows >= 0) & (rows < self.height) & (cols >= 0) & (cols < self.width)
        index = np.flatnonzero(inside)
        rows_in, cols_in = rows[index].astype(np.int64), cols[index].astype(np.int64)
        tiles = (rows_in // SAMPLE_TILE) * (self.width // SAMPLE_TILE + 1) + cols_in // SAMPLE_TILE
        offsets = np.arange(-r, r + 1)
        for tile in np.unique(tiles):
            members = tiles == tile
            tile_rows, tile_cols = rows_in[members], cols_in[members]
            top, left = tile_rows.min(), tile_cols.min()
            block, block_infinite = self._read_block(
                top, left, tile_rows.max() - top + 1, tile_cols.max() - left + 1, halo=r
            )
            # block row 0 is raster row `top - r`, so a cell's block row is its raster row - top + r
            local_r = (tile_rows - top + r)[:, None, None] + offsets[None, :, None]
            local_c = (tile_cols - left + r)[:, None, None] + offsets[None, None, :]
            patches[index[members]] = block[:, local_r, local_c].transpose(1, 0, 2, 3)
            infinite[index[members]] = block_infinite[:, tile_rows - top + r, tile_cols - left + r].T

        status = np.zeros(n, dtype=np.int8)
        reasons = [""] * n
        xmin, ymin, xmax, ymax = self.bounds
        for i in np.flatnonzero(~inside):
            status[i] = STATUS_OUTSIDE
            if np.isnan(x[i]) or np.isnan(y[i]):
                reasons[i] = "the point has no coordinates"
            else:
                reasons[i] = (  # the cause before the colon: the log counts skips by it
                    f"outside the rasters: ({x[i]:.1f}, {y[i]:.1f}) is beyond x {xmin:.10g} to {xmax:.10g}, "
                    f"y {ymin:.10g} to {ymax:.10g}; check that points and rasters use the same CRS"
                )
        centre_missing = np.isnan(patches[:, :, r, r]) & ~infinite
        for i in np.flatnonzero(inside & (centre_missing | infinite).any(axis=1)):
            status[i] = STATUS_NODATA
            parts = []
            for kind, bands in (("nodata", centre_missing[i]), ("an infinite value", infinite[i])):
                if bands.any():
                    parts.append(f"{kind} in band(s) {', '.join(self.band_names[b] for b in np.flatnonzero(bands))}")
            reasons[i] = "; ".join(parts)
        return PointSample(patches=patches, status=status, reasons=reasons, infinite=infinite)
