"""SOC stocks (t/ha) per depth interval and per cumulative depth range, with a seeded Monte Carlo.

Formula (as GSIF's `OCSKGM`, Hengl et al.): stock = SOC × BD × (1 − CF/100) × thickness, with SOC in g/kg,
bulk density BD in g/cm³, coarse fragments CF in volume % and thickness in cm; dividing by 10 gives t/ha
(g/kg × g/cm³ × cm = 10⁻³ g C per cm² of soil = 10⁻¹ t/ha). Example: 10 g/kg, 1.3 g/cm³, 10 % stones,
0–30 cm → 10 × 1.3 × 0.9 × 30 / 10 = 35.1 t/ha.

Ranges (e.g. 0–30 cm) sum the stocks of the intervals inside them; an interval only partly inside a range counts
pro rata of the thickness inside (SOC, BD and CF are taken as uniform within an interval, as the maps give one
value per interval). A range must be covered by the intervals: no stock is invented for unmapped depths.

Monte Carlo: per simulation one standard-normal draw per depth and variable, shared by every pixel, so errors are
fully correlated between pixels. That is the conservative choice for an area total: independent pixel errors
would average out and make the range of a country's total shrink towards zero as pixels are added, which real
model errors (spatially correlated) do not. Depths and variables are drawn independently of each other, and the
draws are summed over depths within each simulation (quantiles of a sum are not sums of quantiles).

- SOC: log-normal matching its prediction interval at the interval's level p: median √(lower × upper) and
  σ = ln(upper / median) / z, z the standard-normal quantile of (1 + p) / 2. Where the lower limit is 0 (quantile
  forests can give 0) the median is the prediction itself and σ comes from the upper limit; a prediction of 0
  stays 0. Without an interval SOC is taken as known.
- Bulk density and coarse fragments: normal with the standard deviation given (BD floored at 0, CF clipped to
  0–100 %). When BD comes from a pedotransfer function it is computed from each SOC draw (keeping the SOC–BD
  dependence) plus the function's residual error, if given.

Implausible inputs (BD outside 0.1–2.65 g/cm³, CF outside 0–100 %, SOC below 0 or above 600 g/kg) are counted
and the pixel is left out (nodata), never used silently.
"""

from __future__ import annotations

import csv
import math
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Union

import numpy as np
import rasterio
import rasterio.crs
from scipy.stats import norm

from .depths import interval_label
from .models.base import check_progress
from .pedotransfer import PEDOTRANSFER, bulk_density_from_soc
from .predict import (
    BLOCKS_DONE,
    GDAL_CACHE_MAX,
    GDAL_CACHE_MIN,
    GDAL_CACHE_SHARE,
    NODATA,
    ProgressCallback,
    RasterDestinations,
    _temporary_name,
    iter_blocks,
)
from .rasters import RESAMPLE_HINT, CovariateStack, RasterMismatchError

#: to g/kg
SOC_UNITS = {"g/kg": 1.0, "%": 10.0}
#: to g/cm³
BD_UNITS = {"g/cm3": 1.0, "kg/m3": 1e-3}
#: plausible bulk density (g/cm³): below, organic or porous beyond any mineral soil; above, denser than quartz
BD_PLAUSIBLE = (0.1, 2.65)
#: SOC above this (g/kg) is more carbon than a peat holds
SOC_MAX = 600.0
#: quantiles written per range
QUANTILES = (0.05, 0.5, 0.95)
CORRELATION_NOTE = (
    "range computed per simulation over the whole area, errors assumed fully correlated between pixels "
    "(conservative: it does not shrink with the number of pixels)"
)

#: a number, a pedotransfer function's key, or an array per depth and pixel
Source = Union[float, str, np.ndarray]


def stock_t_ha(soc_g_kg, bd_g_cm3, cf_percent, thickness_cm):
    """SOC stock in t/ha of one layer; any argument may be an array."""
    return np.asarray(soc_g_kg) * bd_g_cm3 * (1.0 - np.asarray(cf_percent) / 100.0) * thickness_cm / 10.0


def parse_ranges(text: str) -> list[tuple[float, float]]:
    """'0-30, 0-100' -> [(0, 30), (0, 100)] (cm)."""
    ranges = []
    for part in (p.strip().replace(" ", "").replace("cm", "") for p in text.split(",")):
        if not part:
            continue
        match = re.fullmatch(r"(\d+(?:\.\d+)?)-(\d+(?:\.\d+)?)", part)
        if match is None or not float(match[1]) < float(match[2]):
            raise ValueError(
                f"Depth range '{part}' must be written top-bottom in cm with top above bottom, e.g. '0-30,0-100'."
            )
        ranges.append((float(match[1]), float(match[2])))
    if not ranges:
        raise ValueError("Give at least one depth range, e.g. '0-30,0-100'.")
    return ranges


def range_weights(intervals: Sequence[tuple[float, float]], ranges: Sequence[tuple[float, float]]) -> np.ndarray:
    """(ranges, intervals): the share of each interval's thickness inside each range (1 inside, pro rata across
    a range boundary, 0 outside). A range not covered by the intervals is a ValueError."""
    ordered = sorted(intervals)
    for upper, lower in zip(ordered, ordered[1:]):
        if lower[0] < upper[1]:
            raise ValueError(
                f"The SOC intervals {interval_label(*upper)} and {interval_label(*lower, ' cm')} overlap; give one "
                "value per depth (e.g. the GlobalSoilMap depths 0-5, 5-15, 15-30 …)."
            )
    weights = np.zeros((len(ranges), len(intervals)))
    for r, (low, high) in enumerate(ranges):
        for i, (top, bottom) in enumerate(intervals):
            weights[r, i] = max(0.0, min(high, bottom) - max(low, top)) / (bottom - top)
        covered = float(weights[r] @ np.array([b - t for t, b in intervals]))
        if covered < (high - low) * (1 - 1e-9):
            raise ValueError(
                f"The range {interval_label(low, high, ' cm')} is covered only for {covered:g} cm by the SOC "
                f"intervals ({', '.join(interval_label(t, b) for t, b in intervals)} cm); map the missing depths "
                "or choose ranges within them."
            )
    return weights


@dataclass
class StockSettings:
    """What a run computes: the intervals of the inputs, the ranges, the bulk-density source and the Monte Carlo."""

    intervals: list[tuple[float, float]]
    ranges: list[tuple[float, float]]
    bulk_density_ptf: str | None = None
    bulk_density_sd: float = 0.0
    coarse_fragments_sd: float = 0.0
    level: float | None = None
    simulations: int = 200
    seed: int = 1

    def __post_init__(self) -> None:
        self.weights = range_weights(self.intervals, self.ranges)
        self.thickness = np.array([b - t for t, b in self.intervals], dtype=float)
        if self.bulk_density_ptf is not None and self.bulk_density_ptf not in PEDOTRANSFER:
            raise ValueError(f"Unknown pedotransfer function '{self.bulk_density_ptf}'; use {', '.join(PEDOTRANSFER)}.")
        if self.simulations < 1:
            raise ValueError(f"Give at least 1 simulation (200 is usual); got {self.simulations}.")
        if self.bulk_density_sd < 0 or self.coarse_fragments_sd < 0:
            raise ValueError("Standard deviations of bulk density and coarse fragments must be 0 or more.")
        # one draw per simulation, depth and variable, shared by every pixel (fully correlated between pixels)
        rng = np.random.default_rng(self.seed)
        self.z = rng.standard_normal((3, self.simulations, len(self.intervals), 1))
        self.z_level = None if self.level is None else float(norm.ppf((1 + self.level) / 2))

    def band_labels(self) -> list[str]:
        spans = [*self.intervals, *self.ranges]
        return [f"SOC stock {interval_label(top, bottom, ' cm')} (t/ha)" for top, bottom in spans]

    def quantile_labels(self) -> list[str]:
        return [
            f"SOC stock {interval_label(top, bottom, ' cm')} {100 * q:g}% (t/ha)"
            for top, bottom in self.ranges
            for q in QUANTILES
        ]


@dataclass
class StockInputs:
    """Inputs in the engine's units, arrays of (depths, pixels): SOC g/kg, BD g/cm³ (None: from the
    pedotransfer function), CF volume %, and SOC's prediction interval (both None: SOC known)."""

    soc: np.ndarray
    bulk_density: np.ndarray | None
    coarse_fragments: np.ndarray
    soc_lower: np.ndarray | None = None
    soc_upper: np.ndarray | None = None


@dataclass
class Flags:
    """Counts of implausible input values (depth × pixel) and of pixels left out for them or for nodata."""

    bulk_density: int = 0
    coarse_fragments: int = 0
    soc: int = 0
    pixels_implausible: int = 0
    pixels_nodata: int = 0

    def add(self, other: Flags) -> None:
        for name in vars(self):
            setattr(self, name, getattr(self, name) + getattr(other, name))

    def messages(self) -> list[str]:
        """What a soil scientist should check, one sentence per kind of implausible value."""
        found = []
        if self.bulk_density:
            found.append(
                f"{self.bulk_density:,} bulk density values lie outside {BD_PLAUSIBLE[0]}–{BD_PLAUSIBLE[1]} g/cm³: "
                "check the unit (g/cm³ or kg/m³), or choose a pedotransfer function valid for these SOC contents."
            )
        if self.coarse_fragments:
            found.append(
                f"{self.coarse_fragments:,} coarse fragment values lie outside 0–100 %: give them as volume %."
            )
        if self.soc:
            found.append(
                f"{self.soc:,} SOC values lie below 0 or above {SOC_MAX:g} g/kg: check the SOC unit (g/kg or %)."
            )
        if found:
            found.append(f"{self.pixels_implausible:,} cells with such values were left out (nodata).")
        return found


@dataclass
class BlockStocks:
    """Stocks of one block: `values` (intervals + ranges, pixels) with NaN where left out, `draws` (ranges,
    simulations, pixels) or None, and the flags."""

    values: np.ndarray
    draws: np.ndarray | None
    valid: np.ndarray
    flags: Flags


def compute_stocks(settings: StockSettings, inputs: StockInputs, simulate: bool) -> BlockStocks:
    """Deterministic stocks per interval and range and, with `simulate`, the Monte Carlo draws per range."""
    soc = np.asarray(inputs.soc, dtype=float)
    if inputs.bulk_density is None and settings.bulk_density_ptf is None:
        raise ValueError("Give bulk density as a raster, a constant or a pedotransfer function of SOC.")
    bd = bulk_density_from_soc(settings.bulk_density_ptf, soc) if inputs.bulk_density is None else inputs.bulk_density
    bd, cf = np.broadcast_to(bd, soc.shape), np.broadcast_to(inputs.coarse_fragments, soc.shape)
    arrays = [soc, bd, cf] + ([] if inputs.soc_lower is None else [inputs.soc_lower, inputs.soc_upper])
    with np.errstate(invalid="ignore"):
        finite = np.logical_and.reduce([np.isfinite(a).all(axis=0) for a in arrays])
        bad_bd = finite & ((bd < BD_PLAUSIBLE[0]) | (bd > BD_PLAUSIBLE[1]))
        bad_cf = finite & ((cf < 0) | (cf > 100))
        bad_soc = finite & ((soc < 0) | (soc > SOC_MAX))
    implausible = (bad_bd | bad_cf | bad_soc).any(axis=0)
    valid = finite & ~implausible
    flags = Flags(
        int(bad_bd.sum()), int(bad_cf.sum()), int(bad_soc.sum()), int(implausible.sum()), int((~finite).sum())
    )
    layers = stock_t_ha(soc, bd, cf, settings.thickness[:, None])
    values = np.concatenate([layers, settings.weights @ layers])
    values[:, ~valid] = np.nan
    draws = _draws(settings, inputs, soc, bd, cf, valid) if simulate else None
    return BlockStocks(values, draws, valid, flags)


def _draws(settings, inputs, soc, bd, cf, valid) -> np.ndarray:
    """(ranges, simulations, pixels) range stocks, one simulation per row, NaN where left out."""
    z_soc, z_bd, z_cf = settings.z
    soc_draws = np.broadcast_to(soc, (settings.simulations, *soc.shape))
    if inputs.soc_lower is not None and settings.z_level is not None:
        with np.errstate(invalid="ignore", divide="ignore"):
            lower, upper = np.asarray(inputs.soc_lower, float), np.asarray(inputs.soc_upper, float)
            median = np.where(lower > 0, np.sqrt(np.clip(lower, 0, None) * upper), soc)
            sigma = np.where(median > 0, np.log(np.maximum(upper, median) / median) / settings.z_level, 0.0)
            soc_draws = np.where(median > 0, median * np.exp(sigma * z_soc), 0.0)
    if settings.bulk_density_ptf is not None and inputs.bulk_density is None:
        bd_draws = bulk_density_from_soc(settings.bulk_density_ptf, soc_draws)
    else:
        bd_draws = np.broadcast_to(bd, soc_draws.shape)
    bd_draws = np.maximum(bd_draws + settings.bulk_density_sd * z_bd, 0.0)
    cf_draws = np.clip(cf + settings.coarse_fragments_sd * z_cf, 0.0, 100.0)
    layers = stock_t_ha(soc_draws, bd_draws, cf_draws, settings.thickness[:, None])
    ranges = np.einsum("ri,sip->rsp", settings.weights, layers)
    ranges[:, :, ~valid] = np.nan
    return ranges


def quantiles(draws: np.ndarray) -> np.ndarray:
    """(ranges × 3, pixels): the 5, 50 and 95 % quantiles of each range's draws, range after range."""
    with np.errstate(invalid="ignore"):
        q = np.quantile(draws, QUANTILES, axis=1)  # (3, ranges, pixels)
    return q.transpose(1, 0, 2).reshape(-1, draws.shape[2])


@dataclass
class AreaSummary:
    """Totals over the mapped area, per range: deterministic and per simulation (t), and the area (ha)."""

    settings: StockSettings
    pixels: int = 0
    area_ha: float = 0.0
    total_t: np.ndarray = field(init=False)
    draws_t: np.ndarray = field(init=False)

    def __post_init__(self) -> None:
        self.total_t = np.zeros(len(self.settings.ranges))
        self.draws_t = np.zeros((len(self.settings.ranges), self.settings.simulations))

    def add(self, block: BlockStocks, pixel_area_ha: float) -> None:
        n = int(block.valid.sum())
        if n == 0:
            return
        self.pixels += n
        self.area_ha += n * pixel_area_ha
        ranges = block.values[len(self.settings.intervals) :, block.valid]
        self.total_t += ranges.sum(axis=1) * pixel_area_ha
        if block.draws is not None:
            self.draws_t += block.draws[:, :, block.valid].sum(axis=2) * pixel_area_ha

    def rows(self) -> list[dict[str, object]]:
        """One row per range: total (Tg C) with its 5/50/95 % and the mean stock (t/ha) with its 5–95 %."""
        rows = []
        for r, (top, bottom) in enumerate(self.settings.ranges):
            low, mid, high = np.quantile(self.draws_t[r], QUANTILES) if self.pixels else (math.nan,) * 3
            area = self.area_ha or math.nan
            rows.append(
                {
                    "range": interval_label(top, bottom, " cm"),
                    "pixels": self.pixels,
                    "area_ha": round(self.area_ha, 4),
                    "total_Tg": self.total_t[r] / 1e6,
                    "total_p5_Tg": low / 1e6,
                    "total_p50_Tg": mid / 1e6,
                    "total_p95_Tg": high / 1e6,
                    "mean_t_ha": self.total_t[r] / area,
                    "mean_p5_t_ha": low / area,
                    "mean_p95_t_ha": high / area,
                    "uncertainty": CORRELATION_NOTE,
                }
            )
        return rows


def write_summary(path: str, rows: list[dict[str, object]]) -> None:
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


# ------------------------------------------------------------------------------------------------ rasters


_INTERVAL = re.compile(r"(?P<top>\d+(?:\.\d+)?)\s*-\s*(?P<bottom>\d+(?:\.\d+)?)\s*cm")
_BOUND = re.compile(r"(?P<kind>lower|upper) (?P<percent>\d+(?:\.\d+)?)%")


def band_interval(description: str) -> tuple[float, float] | None:
    """'SOC 0-5 cm' (as predict names its bands) -> (0.0, 5.0); None when the name gives no interval."""
    match = _INTERVAL.search(description or "")
    return None if match is None else (float(match["top"]), float(match["bottom"]))


def interval_bands(descriptions: Sequence[str], what: str) -> dict[tuple[float, float], int]:
    """Band index (0-based) of each interval named in the band descriptions."""
    found: dict[tuple[float, float], int] = {}
    for index, description in enumerate(descriptions):
        interval = band_interval(description)
        if interval is None:
            raise ValueError(
                f"Band {index + 1} of the {what} ('{description or 'no name'}') names no depth interval; give the "
                "raster written by 'Predict SOC maps', whose bands are called e.g. 'SOC 0-5 cm'."
            )
        if interval in found:
            raise ValueError(
                f"Bands {found[interval] + 1} and {index + 1} of the {what} are both "
                f"{interval_label(*interval, ' cm')}; give one band per interval."
            )
        found[interval] = index
    return found


def interval_bounds(descriptions: Sequence[str]) -> tuple[dict[tuple[float, float], tuple[int, int]], float]:
    """The lower and upper band (0-based) per interval of predict's interval output, and the interval's level."""
    bounds: dict[tuple[float, float], dict[str, int]] = {}
    percents: dict[str, set[float]] = {"lower": set(), "upper": set()}
    for index, description in enumerate(descriptions):
        interval, bound = band_interval(description), _BOUND.search(description or "")
        if interval is None or bound is None:
            continue  # the width bands
        bounds.setdefault(interval, {})[bound["kind"]] = index
        percents[bound["kind"]].add(float(bound["percent"]))
    if not bounds or len(percents["lower"]) != 1 or len(percents["upper"]) != 1:
        raise ValueError(
            "The SOC uncertainty raster must be the prediction interval output of 'Predict SOC maps' (bands "
            "'SOC 0-5 cm lower 5%', 'SOC 0-5 cm upper 95%', … at one level)."
        )
    low, high = percents["lower"].pop(), percents["upper"].pop()
    if not (0 < low < high < 100 and math.isclose(low + high, 100)):
        raise ValueError(
            f"The SOC prediction interval runs from {low:g} % to {high:g} %; the log-normal is fitted to a central "
            "interval (e.g. 5 % to 95 %): predict it again with 'Interval probability'."
        )
    incomplete = [interval_label(*i, " cm") for i, b in bounds.items() if len(b) != 2]
    if incomplete:
        raise ValueError(f"The SOC uncertainty raster lacks a lower or upper limit for {', '.join(incomplete)}.")
    level = (high - low) / 100.0
    return {interval: (b["lower"], b["upper"]) for interval, b in bounds.items()}, level


@dataclass
class RasterLayout:
    """Where each input lives in the stack's bands: per interval, in the settings' interval order."""

    soc: list[int]
    lower: list[int] | None = None
    upper: list[int] | None = None
    bulk_density: list[int] | None = None
    coarse_fragments: list[int] | None = None


@dataclass
class StockRasterResult:
    output: str
    uncertainty: str | None
    summary: str | None
    rows: list[dict[str, object]]
    flags: Flags
    n_pixels: int


def stock_rasters(
    stack: CovariateStack,
    layout: RasterLayout,
    settings: StockSettings,
    output_path: str,
    *,
    soc_factor: float = 1.0,
    bulk_density: float | None = None,
    bulk_density_factor: float = 1.0,
    coarse_fragments: float = 0.0,
    uncertainty_path: str | None = None,
    summary_path: str | None = None,
    memory_mb: float = 1024,
    progress: ProgressCallback = None,
) -> StockRasterResult:
    """Writes the stocks per interval and range (t/ha), optionally their 5/50/95 % and the area summary (CSV).

    `stack` holds every input raster on one grid; `layout` says which band is which. `soc_factor` and
    `bulk_density_factor` convert to g/kg and g/cm³; `bulk_density` and `coarse_fragments` are the constants
    used where the layout has no band (BD None with a pedotransfer function in `settings`). Every file is
    written under a temporary name and moved into place when the whole run succeeded.
    """
    if not memory_mb > 0:
        raise ValueError(f"The memory budget must be a positive number of MB (e.g. 1024); got {memory_mb}.")
    pixel_area_ha = _pixel_area_ha(stack) if summary_path else 0.0
    finals = [p for p in (output_path, uncertainty_path, summary_path) if p]
    if len({os.path.abspath(p) for p in finals}) != len(finals):
        raise ValueError(
            "Two outputs would be written to the same file; give stocks, uncertainty and summary their own."
        )
    outputs = RasterDestinations(output_path, None, None, None, settings.band_labels())
    spread = (
        None
        if uncertainty_path is None
        else RasterDestinations(uncertainty_path, None, None, None, settings.quantile_labels())
    )
    summary_temporary = None
    if summary_path:
        summary_path = os.path.abspath(summary_path)
        if not os.path.isdir(os.path.dirname(summary_path)):
            raise ValueError(
                f"The folder for the summary '{summary_path}' does not exist; create it or choose another."
            )
        summary_temporary = _temporary_name(summary_path)
    simulate = uncertainty_path is not None or summary_path is not None
    n_depths, n_ranges = len(settings.intervals), len(settings.ranges)
    # per cell: the input bands (float32, and the reader's copy), the float64 stocks and, when simulating, the
    # float64 draws (simulations × depths) of SOC, BD, CF, the layer stocks and their temporaries, and the range
    # draws with the sorted copy the quantiles take (measured: 22 kB a cell at 200 simulations, 2 depths, 2 ranges)
    per_cell = 8 * stack.count + 8 * (n_depths + n_ranges) * 3
    if simulate:
        per_cell += 8 * settings.simulations * (7 * n_depths + 2 * n_ranges)
    budget = int(memory_mb * (1 << 20))
    cache_bytes = int(min(max(budget * GDAL_CACHE_SHARE, GDAL_CACHE_MIN), GDAL_CACHE_MAX))
    cells = max(1, int(budget * (1 - GDAL_CACHE_SHARE)) // per_cell)
    summary, flags = AreaSummary(settings), Flags()
    destinations = [d for d in (outputs, spread) if d is not None]
    try:
        with rasterio.Env(GDAL_CACHEMAX=cache_bytes):
            writers = [
                d.open(stack.crs_wkt or None, stack.transform, stack.height, stack.width, None) for d in destinations
            ]
            try:
                done, total = 0, stack.height * stack.width
                for block in iter_blocks(stack.height, stack.width, lambda: cells):
                    data = stack.read_block(block.row, block.col, block.height, block.width)
                    stocks = compute_stocks(
                        settings,
                        _block_inputs(data, layout, soc_factor, bulk_density, bulk_density_factor, coarse_fragments),
                        simulate,
                    )
                    flags.add(stocks.flags)
                    summary.add(stocks, pixel_area_ha)
                    shape = (-1, block.height, block.width)
                    writers[0].output.write(_filled(stocks.values).reshape(shape), window=block.window)
                    if spread is not None:
                        writers[1].output.write(_filled(quantiles(stocks.draws)).reshape(shape), window=block.window)
                    done += block.height * block.width
                    check_progress(
                        progress, BLOCKS_DONE * done / total, f"Computed stocks for {done:,} of {total:,} cells"
                    )
                check_progress(progress, BLOCKS_DONE, "Building overviews")
                for writer in writers:
                    writer.build_overviews(stack.height, stack.width)
            finally:
                for writer in writers:
                    writer.close()
        rows = summary.rows()
        if summary_temporary:
            write_summary(summary_temporary, rows)
        for destination in destinations:
            destination.commit()
        if summary_temporary:
            os.replace(summary_temporary, summary_path)
    except BaseException:
        for destination in destinations:
            destination.discard()
        if summary_temporary and os.path.exists(summary_temporary):
            os.remove(summary_temporary)
        raise
    if progress is not None:
        progress(1.0, "Done")
    return StockRasterResult(
        outputs.output, spread and spread.output, summary_path, rows, flags, stack.height * stack.width
    )


def _block_inputs(data, layout: RasterLayout, soc_factor, bulk_density, bulk_density_factor, coarse_fragments):
    """The engine's inputs of one block read from the stack, in g/kg, g/cm³ and %."""
    flat = data.reshape(data.shape[0], -1).astype(float)

    def pick(bands: list[int] | None) -> np.ndarray | None:
        return None if bands is None else flat[bands]

    bd = pick(layout.bulk_density)
    if bd is not None:
        bd = bd * bulk_density_factor
    elif bulk_density is not None:
        bd = np.full((len(layout.soc), 1), bulk_density * bulk_density_factor)
    cf = pick(layout.coarse_fragments)
    lower, upper = pick(layout.lower), pick(layout.upper)
    return StockInputs(
        soc=flat[layout.soc] * soc_factor,
        bulk_density=bd,
        coarse_fragments=np.full((len(layout.soc), 1), coarse_fragments) if cf is None else cf,
        soc_lower=None if lower is None else lower * soc_factor,
        soc_upper=None if upper is None else upper * soc_factor,
    )


def _filled(values: np.ndarray) -> np.ndarray:
    out = values.astype(np.float32)
    out[~np.isfinite(out)] = NODATA
    return out


def _pixel_area_ha(stack: CovariateStack) -> float:
    """A pixel's area in ha; only a CRS in metres gives one (an area total needs a projected map)."""
    crs = rasterio.crs.CRS.from_wkt(stack.crs_wkt) if stack.crs_wkt else None
    if crs is None or crs.is_geographic or crs.linear_units not in ("metre", "meter", "m"):
        raise ValueError(
            "The area summary needs a map in a projected CRS in metres (pixel areas in m²); reproject the SOC map, "
            "ideally to an equal-area CRS, or leave the summary out."
        )
    return abs(stack.res[0] * stack.res[1]) / 1e4


def open_inputs(
    soc_path: str,
    uncertainty_path: str | None = None,
    bulk_density_path: str | None = None,
    coarse_fragments_path: str | None = None,
) -> tuple[CovariateStack, RasterLayout, list[tuple[float, float]], float | None]:
    """The input rasters as one stack on the SOC map's grid, which band is which, SOC's intervals (from the band
    names predict writes) and the level of its prediction interval. A BD or CF raster has one band for every
    depth, or one band per SOC interval named like predict's ('BD 0-5 cm')."""
    named = [("SOC", soc_path), ("SOC uncertainty", uncertainty_path)]
    named += [("bulk density", bulk_density_path), ("coarse fragments", coarse_fragments_path)]
    named = [(name, path) for name, path in named if path]
    descriptions = {}
    for name, path in named:
        with rasterio.open(path) as dataset:
            descriptions[name] = list(dataset.descriptions)
    soc_bands = interval_bands(descriptions["SOC"], "SOC map")
    intervals = sorted(soc_bands)
    offsets, offset = {}, 0
    for name, _ in named:
        offsets[name] = offset
        offset += len(descriptions[name])
    layout = RasterLayout(soc=[soc_bands[i] for i in intervals])
    level = None
    if uncertainty_path:
        bounds, level = interval_bounds(descriptions["SOC uncertainty"])
        missing = [interval_label(*i, " cm") for i in intervals if i not in bounds]
        if missing:
            raise ValueError(
                f"The SOC uncertainty raster has no interval for {', '.join(missing)}; give predict's "
                "interval output of the same run as the SOC map."
            )
        layout.lower = [offsets["SOC uncertainty"] + bounds[i][0] for i in intervals]
        layout.upper = [offsets["SOC uncertainty"] + bounds[i][1] for i in intervals]
    for name, attribute in (("bulk density", "bulk_density"), ("coarse fragments", "coarse_fragments")):
        if name in descriptions:
            setattr(layout, attribute, [offsets[name] + b for b in _per_interval(descriptions[name], intervals, name)])
    try:
        stack = CovariateStack([path for _, path in named], layer_names=[name for name, _ in named])
    except RasterMismatchError as error:
        raise ValueError(str(error).replace(RESAMPLE_HINT, "warp them onto the SOC map's grid first")) from None
    return stack, layout, intervals, level


def _per_interval(descriptions: list[str], intervals: list[tuple[float, float]], what: str) -> list[int]:
    """Band (0-based) of a BD or CF raster for each SOC interval: its only band, or the band named for it."""
    if len(descriptions) == 1:
        return [0] * len(intervals)
    bands = interval_bands(descriptions, f"{what} raster")
    missing = [interval_label(*i, " cm") for i in intervals if i not in bands]
    if missing:
        raise ValueError(
            f"The {what} raster has no band for {', '.join(missing)}; give one band per SOC interval, named like "
            "'BD 0-5 cm', or a single band for all depths."
        )
    return [bands[i] for i in intervals]
