"""Depth intervals, the field names that carry them (`{PROPERTY}_{top}_{bottom}`) and the labels users read.

Depths are in cm. Whole numbers are written plainly (`ORCDRC_0_5`); fractional depths use `p` for the decimal
point (`ORCDRC_2p5_7p5`), because QGIS and most formats reject `.` in field names and `-` reads as a range.
Labels (`0-5`, `0-5 cm`) name an interval in metrics tables, band names, reports and the predict dialog; map
files are named `{PROPERTY}_{top}_{bottom}cm.tif`.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

STANDARD_DEPTHS: tuple[float, ...] = (0, 5, 15, 30, 60, 100, 200)

_FIELD = re.compile(r"^(?P<prop>.+)_(?P<top>\d+(?:p\d+)?)_(?P<bottom>\d+(?:p\d+)?)$")
_MAP_FILE = re.compile(r"^(?P<prop>.+)_(?P<top>\d+(?:\.\d+)?)_(?P<bottom>\d+(?:\.\d+)?)cm(?:\.tif)?$")


def format_depth(depth: float) -> str:
    """5 -> '5', 2.5 -> '2p5', 0.25 -> '0p25'."""
    if depth < 0:
        raise ValueError(f"Depth {depth} cm is negative; depths are measured downwards from 0 cm.")
    text = f"{float(depth):.6f}".rstrip("0").rstrip(".")
    return text.replace(".", "p")


def parse_depth(text: str) -> float:
    return float(text.replace("p", "."))


def interval_field(prop: str, top: float, bottom: float) -> str:
    """The field name for a property over [top, bottom) cm, e.g. `ORCDRC_0_5`."""
    return f"{prop}_{format_depth(top)}_{format_depth(bottom)}"


def parse_interval_field(name: str) -> tuple[str, float, float]:
    """`ORCDRC_15_30` -> ('ORCDRC', 15.0, 30.0); a clear ValueError when the name does not fit."""
    match = _FIELD.match(name)
    if match is None:
        raise ValueError(
            f"Field '{name}' does not name a depth interval. Target fields must be called "
            "PROPERTY_TOP_BOTTOM with depths in cm, e.g. ORCDRC_0_5 or ORCDRC_100_200 "
            "(as written by 'Harmonise horizons to standard depths'); write a decimal point as 'p' (2p5)."
        )
    top, bottom = parse_depth(match["top"]), parse_depth(match["bottom"])
    if not top < bottom:
        raise ValueError(f"Field '{name}': the top depth {top:g} cm must be above the bottom {bottom:g} cm.")
    return match["prop"], top, bottom


def parse_depth_list(text: str | Sequence[float]) -> tuple[float, ...]:
    """'0,5,15,30' (or a sequence) -> strictly increasing, non-negative boundaries; ValueError otherwise."""
    if isinstance(text, str):
        parts = [p for p in re.split(r"[,;\s]+", text.strip()) if p]
        try:
            depths = tuple(float(p) for p in parts)
        except ValueError:
            raise ValueError(
                f"Depths '{text}' must be numbers in cm separated by commas, e.g. 0,5,15,30,60,100,200."
            ) from None
    else:
        depths = tuple(float(d) for d in text)
    if len(depths) < 2:
        raise ValueError("Give at least two depth boundaries (one interval), e.g. 0,30.")
    if depths[0] < 0:
        raise ValueError(f"Depth boundaries start at {depths[0]:g} cm; they must be 0 or deeper.")
    if any(b <= a for a, b in zip(depths, depths[1:])):
        raise ValueError(f"Depth boundaries {text} must increase strictly, e.g. 0,5,15,30,60,100,200.")
    return depths


def intervals_from_boundaries(depths: Sequence[float]) -> list[tuple[float, float]]:
    return list(zip(depths[:-1], depths[1:]))


def interval_label(top: float, bottom: float, unit: str = "") -> str:
    """(0, 5) -> '0-5', or '0-5 cm' with `unit=" cm"`; 2.5 stays '2.5'."""
    return f"{top:g}-{bottom:g}{unit}"


def interval_labels(intervals: Sequence[Sequence[float]], unit: str = "") -> list[str]:
    return [interval_label(top, bottom, unit) for top, bottom in intervals]


def select_intervals(text: str, intervals: Sequence[Sequence[float]]) -> list[int]:
    """'0-5, 30-60 cm' -> the numbers of those intervals, sorted; empty text -> all of them.

    Spaces and 'cm' are ignored. A ValueError names the first interval that is not among `intervals`.
    """
    labels = interval_labels(intervals)
    if not text.strip():
        return list(range(len(labels)))
    chosen = []
    for part in (p.strip().replace(" ", "").replace("cm", "") for p in text.split(",")):
        if not part:
            continue
        if part not in labels:
            raise ValueError(f"Depth interval '{part}' is not in the model; it has {', '.join(labels)}.")
        chosen.append(labels.index(part))
    return sorted(set(chosen))


def map_file_name(prop: str, top: float, bottom: float) -> str:
    """The single-depth map of a property: ('ORCDRC', 0, 5) -> 'ORCDRC_0_5cm.tif'."""
    return f"{prop}_{top:g}_{bottom:g}cm.tif"


def parse_map_file_name(name: str) -> tuple[str, float, float]:
    """Inverse of `map_file_name` (a path's stem or name): 'ORCDRC_0_5cm.tif' -> ('ORCDRC', 0.0, 5.0)."""
    match = _MAP_FILE.match(name)
    if match is None:
        raise ValueError(f"'{name}' is not named like a depth map, PROPERTY_TOP_BOTTOMcm.tif (e.g. ORCDRC_0_5cm.tif).")
    return match["prop"], float(match["top"]), float(match["bottom"])


#: names a horizon table's depth fields go by (compared without case), most telling first: plain words, then
#: with the unit or the word depth, then the codes of common soil databases (USDA NASIS/SSURGO `hzdept`/`hzdepb`,
#: ISRIC WoSIS `upper_depth`/`lower_depth`, the `hzn_top`/`hzn_bot` of R's aqp)
DEPTH_FIELD_NAMES: dict[str, tuple[str, ...]] = {
    "top": ("top", "upper", "top_cm", "upper_cm", "top_depth", "upper_depth", "depth_top", "depth_upper", "hzn_top",
            "hzdept", "hzdept_r", "from", "depth_from"),
    "bottom": ("bottom", "lower", "bottom_cm", "lower_cm", "bottom_depth", "lower_depth", "depth_bottom",
               "depth_lower", "hzn_bot", "hzn_bottom", "hzdepb", "hzdepb_r", "to", "depth_to"),
}  # fmt: skip
#: words that mark a field as one end's depth within a longer name (`hor_top_cm`, `Lower_Boundary`)
_DEPTH_WORDS = {"top": ("top", "upper"), "bottom": ("bottom", "bot", "lower", "base")}


def likely_depth_field(names: Sequence[str], end: str) -> str:
    """The field of `names` that holds the `end` ('top' or 'bottom') depth of each horizon: the first of
    `DEPTH_FIELD_NAMES[end]` present, or else the one field whose name holds one of that end's words as a word of
    its own. A clear ValueError when there is none, or several such fields and no known name among them."""
    by_lower = {name.lower(): name for name in reversed(names)}  # the first of names that differ only in case
    for known in DEPTH_FIELD_NAMES[end]:
        if known in by_lower:
            return by_lower[known]
    words = _DEPTH_WORDS[end]
    candidates = [name for name in names if any(word in re.split(r"[^a-z]+", name.lower()) for word in words)]
    if len(candidates) == 1:
        return candidates[0]
    if candidates:
        raise ValueError(f"Several fields could hold the {end} depth ({', '.join(candidates)}); choose one.")
    raise ValueError(
        f"No field is named like a {end} depth (e.g. {', '.join(DEPTH_FIELD_NAMES[end][:4])}); choose the field that "
        f"holds it, among: {', '.join(names)}."
    )
