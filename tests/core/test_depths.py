import pytest

from soc_depth_mapper.core.depths import (
    format_depth,
    interval_field,
    interval_label,
    interval_labels,
    likely_depth_field,
    map_file_name,
    parse_depth_list,
    parse_interval_field,
    parse_map_file_name,
    select_intervals,
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


def test_interval_labels_with_and_without_unit():
    assert interval_labels([(0, 5), (2.5, 7.5), (100.0, 200.0)]) == ["0-5", "2.5-7.5", "100-200"]
    assert interval_label(15, 30, " cm") == "15-30 cm"


def test_selecting_intervals_by_label_ignores_spaces_and_cm_and_sorts():
    intervals = [(0, 5), (5, 15), (15, 30), (30, 60)]
    assert select_intervals("", intervals) == [0, 1, 2, 3]
    assert select_intervals(" 30 - 60 cm, 0-5,,0-5cm ", intervals) == [0, 3]
    message = r"Depth interval '0-10' is not in the model; it has 0-5, 5-15, 15-30, 30-60\."
    with pytest.raises(ValueError, match=message):
        select_intervals("0-5, 0-10", intervals)


def test_map_file_names_round_trip_with_fractions_and_underscored_properties():
    assert map_file_name("ORCDRC", 0, 5) == "ORCDRC_0_5cm.tif"
    for prop, top, bottom in [("ORCDRC", 0, 5), ("SOC_g_kg", 2.5, 7.5), ("clay", 100, 200)]:
        assert parse_map_file_name(map_file_name(prop, top, bottom)) == (prop, top, bottom)
    assert parse_map_file_name("ORCDRC_15_30cm") == ("ORCDRC", 15.0, 30.0)
    with pytest.raises(ValueError, match="not named like a depth map"):
        parse_map_file_name("ORCDRC_0_5.tif")


@pytest.mark.parametrize(
    ("names", "top", "bottom"),
    [
        (["pid", "top", "bottom", "SOC"], "top", "bottom"),
        (["pid", "TOP", "Bottom"], "TOP", "Bottom"),
        (["pid", "upper", "lower"], "upper", "lower"),
        (["id", "hzn_top", "hzn_bot"], "hzn_top", "hzn_bot"),
        (["cokey", "hzdept_r", "hzdepb_r"], "hzdept_r", "hzdepb_r"),
        (["profile", "upper_depth", "lower_depth"], "upper_depth", "lower_depth"),
        (["pid", "upper", "top", "lower", "bottom"], "top", "bottom"),  # the plain word first, wherever it is
        (["pid", "hor_top_cm", "hor_base_cm"], "hor_top_cm", "hor_base_cm"),  # a depth word among others
    ],
)
def test_the_likely_depth_fields_of_common_horizon_tables(names, top, bottom):
    assert likely_depth_field(names, "top") == top
    assert likely_depth_field(names, "bottom") == bottom


def test_no_depth_field_or_several_unknown_ones_are_refused_naming_them():
    with pytest.raises(ValueError, match=r"^No field is named like a top depth .*among: pid, d1, d2\.$"):
        likely_depth_field(["pid", "d1", "d2"], "top")
    with pytest.raises(ValueError, match=r"^Several fields could hold the bottom depth \(a_lower, b_lower\)"):
        likely_depth_field(["a_lower", "b_lower"], "bottom")
    # 'top' inside another word ('stop', 'topsoil') is no depth word
    with pytest.raises(ValueError, match="No field is named like a top depth"):
        likely_depth_field(["stop", "topsoil_id"], "top")
