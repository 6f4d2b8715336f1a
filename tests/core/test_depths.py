import pytest

from soc_depth_mapper.core.depths import (
    format_depth,
    interval_field,
    parse_depth_list,
    parse_interval_field,
)


@pytest.mark.parametrize(
    ("depth", "text"), [(0, "0"), (5, "5"), (200.0, "200"), (2.5, "2p5"), (0.25, "0p25"), (12.125, "12p125")]
)
def test_format_depth(depth, text):
    assert format_depth(depth) == text


def test_field_round_trip_including_fractions():
    for prop, top, bottom in [("ORCDRC", 0, 5), ("ORCDRC", 100, 200), ("clay_pct", 2.5, 7.75)]:
        assert parse_interval_field(interval_field(prop, top, bottom)) == (prop, top, bottom)


def test_property_names_with_underscores_keep_them():
    assert parse_interval_field("SOC_g_kg_15_30") == ("SOC_g_kg", 15.0, 30.0)


@pytest.mark.parametrize("name", ["ORCDRC", "ORCDRC_0", "ORCDRC_5_0", "ORCDRC_a_5", "0_5"])
def test_unparseable_or_inverted_names_are_clear_errors(name):
    with pytest.raises(ValueError, match="interval|above"):
        parse_interval_field(name)


def test_depth_list_parsing():
    assert parse_depth_list("0,5,15,30,60,100,200") == (0, 5, 15, 30, 60, 100, 200)
    assert parse_depth_list(" 0; 2.5 10 ") == (0, 2.5, 10)
    for bad in ["", "10", "0,5,5", "0,x", "-5,10", "30,10"]:
        with pytest.raises(ValueError):
            parse_depth_list(bad)
