"""Reading numbers from attribute values as soil data arrive: numbers, text holding numbers, or NULL."""

from __future__ import annotations

import math
import re
from typing import NamedTuple

from qgis.PyQt.QtCore import QVariant

#: the causes `to_float` gives, for counting skipped records per cause
MISSING = "is missing"
NOT_A_NUMBER = "is not a number"
AMBIGUOUS = "is ambiguous (thousands separator or decimal comma)"
CENSORED = "is a detection limit, not a measured value"

# "1,000" or "-12,500": a comma before exactly three digits may group thousands (1000) or be a decimal comma
# (1.0); a leading 0 ("0,125") cannot start a thousands group.
_AMBIGUOUS = re.compile(r"^[+-]?[1-9]\d{0,2},\d{3}$")
# "<0.5", "> 100", "≤ 2,5": a laboratory's detection or reporting limit, not the value itself
_CENSORED = re.compile(r"^[<>≤≥]=?\s*[+-]?(\d+([.,]\d*)?|[.,]\d+)$")


class Reading(NamedTuple):
    """A value read from an attribute: the number, or NaN with what is wrong for the user and its cause."""

    value: float
    problem: str | None  # e.g. "'high' is not a number"; None when `value` is a number
    cause: str | None  # the problem without the text, e.g. NOT_A_NUMBER


def to_float(value) -> Reading:
    """Reads a number; NULL, empty, non-numeric or ambiguous values give NaN and say why.

    Text may use a decimal comma ("12,5"), as spreadsheets in many locales write it. A comma before exactly
    three digits ("1,000") is refused rather than guessed: read one way the value is a thousand times the other.
    """
    if value is None or (isinstance(value, QVariant) and value.isNull()):
        return Reading(math.nan, MISSING, MISSING)
    if isinstance(value, bool):
        return Reading(math.nan, f"'{value}' {NOT_A_NUMBER}", NOT_A_NUMBER)
    if isinstance(value, (int, float)):
        number = float(value)
    else:
        text = str(value).strip()
        if not text:
            return Reading(math.nan, MISSING, MISSING)
        if _AMBIGUOUS.match(text):
            return Reading(
                math.nan,
                f"'{text}' {AMBIGUOUS}; write {text.replace(',', '')} or {text.replace(',', '.')} instead",
                AMBIGUOUS,
            )
        if _CENSORED.match(text):
            return Reading(
                math.nan,
                f"'{text}' {CENSORED}; enter the number to use for it, or leave it empty",
                CENSORED,
            )
        try:
            number = float(text.replace(",", ".") if text.count(",") == 1 and "." not in text else text)
        except ValueError:
            return Reading(math.nan, f"'{text}' {NOT_A_NUMBER}", NOT_A_NUMBER)
    if math.isnan(number) or math.isinf(number):
        return Reading(math.nan, MISSING, MISSING)
    return Reading(number, None, None)
