"""Reading numbers from attribute values as soil data arrive: numbers, text holding numbers, or NULL."""

from __future__ import annotations

import math

from qgis.PyQt.QtCore import QVariant

#: what `to_float` says of an empty value; anything else it says is "'...' is not a number"
MISSING = "is missing"


def to_float(value) -> tuple[float, str | None]:
    """(number, None), or (NaN, what is wrong) for NULL, empty or non-numeric values.

    Text may use a decimal comma ("12,5"), as spreadsheets in many locales write it.
    """
    if value is None or (isinstance(value, QVariant) and value.isNull()):
        return math.nan, MISSING
    if isinstance(value, bool):
        return math.nan, f"'{value}' is not a number"
    if isinstance(value, (int, float)):
        number = float(value)
    else:
        text = str(value).strip()
        if not text:
            return math.nan, MISSING
        try:
            number = float(text.replace(",", ".") if text.count(",") == 1 and "." not in text else text)
        except ValueError:
            return math.nan, f"'{text}' is not a number"
    if math.isnan(number) or math.isinf(number):
        return math.nan, MISSING
    return number, None
