"""Reading numbers from attribute text: what is read, and what is refused with which cause."""

from __future__ import annotations

import math

import pytest

from soc_depth_mapper.algorithms.values import AMBIGUOUS, CENSORED, MISSING, NOT_A_NUMBER, to_float


@pytest.mark.parametrize(
    ("text", "number"),
    [("12,5", 12.5), (" 7 ", 7.0), ("0,125", 0.125), ("1,0000", 1.0), ("-2,25", -2.25), ("1000", 1000.0), (3, 3.0)],
)
def test_numbers_are_read(text, number):
    assert to_float(text) == (number, None, None)


@pytest.mark.parametrize(
    ("text", "cause"),
    [
        ("1,000", AMBIGUOUS),
        ("-12,500", AMBIGUOUS),
        ("<0.5", CENSORED),
        ("> 100", CENSORED),
        ("≤2,5", CENSORED),
        ("high", NOT_A_NUMBER),
        ("<LOD", NOT_A_NUMBER),
        ("1.000,5", NOT_A_NUMBER),
        ("", MISSING),
        (None, MISSING),
    ],
)
def test_other_text_gives_nan_and_its_cause(text, cause):
    value, problem, got_cause = to_float(text)
    assert math.isnan(value) and got_cause == cause
    assert problem == MISSING if cause == MISSING else problem.startswith(f"'{str(text).strip()}' {cause}")
