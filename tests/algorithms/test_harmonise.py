"""socdepth:harmonise through QGIS Processing, on the real Edgeroi horizons and on messy input."""

from __future__ import annotations

import math
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

REPO = Path(__file__).resolve().parents[2]
EDGEROI = REPO / "sample_data" / "edgeroi" / "horizons.csv"
GSM = ["0_5", "5_15", "15_30", "30_60", "60_100", "100_200"]


def point_layer(path: Path, name: str = "horizons"):
    from qgis.core import QgsVectorLayer

    uri = f"file://{path}?type=csv&delimiter=,&xField=x&yField=y&crs=EPSG:28355&detectTypes=yes"
    layer = QgsVectorLayer(uri, name, "delimitedtext")
    assert layer.isValid()
    return layer


def table_layer(path: Path):
    """A CSV opened by OGR: every field is text, as users often meet it."""
    from qgis.core import QgsVectorLayer

    layer = QgsVectorLayer(str(path), "table", "ogr")
    assert layer.isValid()
    return layer


def value(feature, name):
    """An attribute as a Python value; NULL (a null QVariant in QGIS 3.22) as None."""
    from qgis.PyQt.QtCore import QVariant

    raw = feature[name]
    return None if raw is None or (isinstance(raw, QVariant) and raw.isNull()) else raw


def rows(layer) -> dict[str, dict]:
    return {str(f["SOURCEID"] if "SOURCEID" in f.fields().names() else f["pid"]): f for f in layer.getFeatures()}


def run(processing, context_feedback=None, **parameters):
    params = {
        "PROFILE_FIELD": "SOURCEID",
        "TOP_FIELD": "top",
        "BOTTOM_FIELD": "bottom",
        "VALUE_FIELDS": ["ORCDRC"],
        "OUTPUT": "memory:",
        **parameters,
    }
    if context_feedback is None:
        return processing.run("socdepth:harmonise", params)
    context, feedback = context_feedback
    return processing.run("socdepth:harmonise", params, context=context, feedback=feedback)


def mpspline_oracle(horizons: pd.DataFrame) -> np.ndarray:
    """The PyPI `mpspline` 0.2.0 (an independent port of R mpspline2) on one profile."""
    from mpspline import spline_one

    result = spline_one(
        horizons.rename(columns={"top": "UD", "bottom": "LD"}).reset_index(drop=True),
        "ORCDRC",
        target_depths=[(0, 5), (5, 15), (15, 30), (30, 60), (60, 100), (100, 200)],
    )
    return np.asarray(result["est_dcm"], dtype=float)


def test_edgeroi_mpspline2_mode_matches_independent_implementation(qgis_processing):
    output = run(qgis_processing, INPUT=point_layer(EDGEROI), METHOD=1)["OUTPUT"]
    horizons = pd.read_csv(EDGEROI)
    with_soc = horizons.dropna(subset=["ORCDRC"])
    # every profile with at least one ORCDRC value comes back, once
    assert output.featureCount() == with_soc["SOURCEID"].nunique() == 325
    names = output.fields().names()
    assert names == ["SOURCEID", *[f"ORCDRC_{d}" for d in GSM], "ORCDRC_rmse"]
    features = rows(output)
    checked = 0
    for profile, group in with_soc.groupby("SOURCEID"):
        if len(group) < 2 or checked >= 40:
            continue
        expected = mpspline_oracle(group[["top", "bottom", "ORCDRC"]])
        got = np.array([value(features[profile], f"ORCDRC_{d}") for d in GSM], dtype=float)
        covered = ~np.isnan(got)
        np.testing.assert_allclose(got[covered], expected[covered], rtol=0, atol=1e-9)
        checked += 1
    assert checked == 40


def test_edgeroi_exact_mode_keeps_locations_and_orders_profiles(qgis_processing):
    output = run(qgis_processing, INPUT=point_layer(EDGEROI))["OUTPUT"]
    sites = pd.read_csv(EDGEROI).drop_duplicates("SOURCEID").set_index("SOURCEID")
    features = list(output.getFeatures())
    assert output.crs().authid() == "EPSG:28355"
    first = features[0]
    point = first.geometry().asPoint()
    assert (point.x(), point.y()) == pytest.approx(tuple(sites.loc[first["SOURCEID"], ["x", "y"]]))
    # The deepest interval is NULL where the profile ends above 100 cm; shallow ones are filled.
    shallow = [f for f in features if value(f, "ORCDRC_0_5") is not None]
    assert len(shallow) > 300
    values = np.array([f["ORCDRC_0_5"] for f in shallow])
    assert values.min() >= 0 and 1 < np.median(values) < 30


MESSY = """pid,top,bottom,ORCDRC,CLAY
A,0,10,6,20
A,10,20,4,30
B,10,20,4,
B,0,10,6,
C,0,30,12,25
D,0,10,5,10
D,5,20,3,10
E, 0 ,"10,0",x,10
E,10,20,,12
E,20,,3,14
F,0,10,-5,10
F,10,30,-5,10
H,0,10,1500,10
H,10,30,1500,10
G,,,,
,0,10,3,3
"""


@pytest.fixture()
def messy_csv(tmp_path):
    path = tmp_path / "messy.csv"
    path.write_text(MESSY)
    return path


def test_messy_table_values_skips_and_reasons(qgis_processing, context_and_feedback, messy_csv):
    result = run(
        qgis_processing,
        context_and_feedback,
        INPUT=table_layer(messy_csv),
        PROFILE_FIELD="pid",
        VALUE_FIELDS=["ORCDRC", "CLAY"],
        DEPTHS="0,10,20,30,60",
        REJECTED="memory:",
    )
    output, rejected = result["OUTPUT"], result["REJECTED"]
    from qgis.core import QgsWkbTypes

    assert output.wkbType() == QgsWkbTypes.NoGeometry
    got = {f["pid"]: f for f in output.getFeatures()}
    # Closed form (Bishop et al. 1999): 0-10 = 6, 10-20 = 4, lambda 0.1 -> 5.9433962264, 4.0566037736;
    # the exact method returns those horizon means over the same intervals.
    for profile in ("A", "B"):  # B's rows are unsorted: same answer
        assert value(got[profile], "ORCDRC_0_10") == pytest.approx(5.9433962264, abs=1e-9)
        assert value(got[profile], "ORCDRC_10_20") == pytest.approx(4.0566037736, abs=1e-9)
        assert value(got[profile], "ORCDRC_20_30") is None  # nothing extrapolated below the last horizon
    # A single horizon gives its value to every interval it covers, and nothing beyond.
    assert [value(got["C"], f"ORCDRC_{d}") for d in ("0_10", "10_20", "20_30", "30_60")] == [12, 12, 12, None]
    # Overlapping horizons reject profile D, for both properties.
    assert "D" not in got
    # E: text depths with spaces and a decimal comma are read; 'x' and an empty value are missing values;
    # a horizon without a bottom depth is skipped. Nothing is left for ORCDRC, CLAY still fits 0-20.
    assert value(got["E"], "ORCDRC_0_10") is None
    assert value(got["E"], "CLAY_0_10") is not None and value(got["E"], "CLAY_20_30") is None
    # Values are clamped to [VLOW, VHIGH] = [0, 1000].
    assert value(got["F"], "ORCDRC_0_10") == 0 and value(got["H"], "ORCDRC_10_20") == 1000
    # Profile B has no CLAY at all: its CLAY fields stay NULL.
    assert all(value(got["B"], f"CLAY_{d}") is None for d in ("0_10", "10_20", "20_30", "30_60"))
    reasons = [(f["profile_id"], f["property"], f["reason"]) for f in rejected.getFeatures()]
    by_profile = {}
    for profile, prop, reason in reasons:
        by_profile.setdefault(profile, []).append((prop, reason))
    assert {prop for prop, _ in by_profile["D"]} == {"ORCDRC", "CLAY"}
    assert all("overlap" in reason for _, reason in by_profile["D"])
    assert any("bottom depth" in reason and "missing" in reason for _, reason in by_profile["E"])
    assert any(prop == "" and "no profile id" in reason for prop, reason in by_profile[""])
    assert any(p == "G" for p, _, _ in reasons)
    _, feedback = context_and_feedback
    assert any("Skipped records by reason" in e for e in feedback.warnings)
    assert feedback.errors == []  # skipped horizons are notes for the user (warnings), not errors
    assert any("Harmonised" in i for i in feedback.infos)


def test_same_profile_at_two_locations_is_an_error_naming_it(qgis_processing, tmp_path):
    from qgis.core import QgsProcessingException

    path = tmp_path / "h.csv"
    path.write_text("SOURCEID,x,y,top,bottom,ORCDRC\np1,1,1,0,10,5\np1,1,2,10,20,4\np2,5,5,0,10,3\n")
    with pytest.raises(QgsProcessingException, match="p1.*different locations"):
        run(qgis_processing, INPUT=point_layer(path))


@pytest.mark.parametrize(
    ("parameters", "message"),
    [({"DEPTHS": "0,5,5"}, "increase"), ({"VLOW": 10, "VHIGH": 5}, "lowest allowed")],
)
def test_bad_parameters_say_what_to_do(qgis_processing, messy_csv, parameters, message):
    from qgis.core import QgsProcessingException

    with pytest.raises(QgsProcessingException, match=message):
        run(qgis_processing, INPUT=table_layer(messy_csv), PROFILE_FIELD="pid", **parameters)


def test_fractional_depth_fields_are_spelled_with_p(qgis_processing, messy_csv):
    output = run(qgis_processing, INPUT=table_layer(messy_csv), PROFILE_FIELD="pid", DEPTHS="0,2.5,10")["OUTPUT"]
    assert output.fields().names()[1:3] == ["ORCDRC_0_2p5", "ORCDRC_2p5_10"]
    single = next(f for f in output.getFeatures() if f["pid"] == "C")
    assert value(single, "ORCDRC_0_2p5") == 12 and not math.isnan(value(single, "ORCDRC_rmse"))


def test_many_skips_list_the_first_twenty_and_point_to_the_rejected_table(
    qgis_processing, context_and_feedback, tmp_path
):
    path = tmp_path / "many.csv"
    rows = [f"P{i},0,10,\nP{i},10,20,{i + 1}" for i in range(25)]  # 25 profiles, each with one missing value
    path.write_text("pid,top,bottom,ORCDRC\n" + "\n".join(rows) + "\n")
    result = run(
        qgis_processing, context_and_feedback, INPUT=table_layer(path), PROFILE_FIELD="pid", REJECTED="memory:"
    )
    assert result["REJECTED"].featureCount() == 25
    _, feedback = context_and_feedback
    skipped = [w for w in feedback.warnings if w.startswith("Skipped a horizon")]
    assert len(skipped) == 20 and skipped[0].startswith("Skipped a horizon (feature 1) of profile 'P0' [ORCDRC]")
    assert "… and 5 more; see the 'Rejected horizons and profiles' output." in feedback.warnings
    assert feedback.warnings[-1] == "Skipped records by reason — value is missing: 25"


def test_skip_summary_counts_by_cause_not_by_horizon_depth(qgis_processing, context_and_feedback, tmp_path):
    path = tmp_path / "skips.csv"
    # two missing values at different depths, one overlapping profile, one unreadable bottom depth
    path.write_text("pid,top,bottom,ORCDRC\nA,0,10,\nA,10,20,\nA,20,30,5\nB,0,10,4\nB,5,20,3\nC,0,x,3\n")
    result = run(
        qgis_processing, context_and_feedback, INPUT=table_layer(path), PROFILE_FIELD="pid", REJECTED="memory:"
    )
    _, feedback = context_and_feedback
    (summary,) = [e for e in feedback.warnings if e.startswith("Skipped records by reason — ")]
    counts = dict(part.rsplit(": ", 1) for part in summary.split(" — ", 1)[1].split("; "))
    assert counts == {"value is missing": "2", "horizons overlap": "1", "bottom depth is not a number": "1"}
    # the rejected table keeps each record's full reason, depths and all
    reasons = sorted(f["reason"] for f in result["REJECTED"].getFeatures())
    assert reasons[0] == "bottom depth 'x' is not a number"
    assert reasons[1].startswith("horizon 0-10 cm (feature 4) and horizon 5-20 cm (feature 5) overlap")
    assert reasons[2:] == [
        "horizon 0-10 cm: value is missing; the horizon is left out",
        "horizon 10-20 cm: value is missing; the horizon is left out",
    ]


def test_text_that_is_not_a_plain_number_is_skipped_with_its_own_reason(
    qgis_processing, context_and_feedback, tmp_path
):
    path = tmp_path / "text.csv"
    # feature ids 1..8: OGR numbers CSV rows from 1
    path.write_text(
        'pid,top,bottom,ORCDRC\nA,0,10,"1,000"\nA,10,20,high\nA,20,30,<0.5\nA,30,40,5\n'
        'B,0,10,4\nB,5,20,3\nC,"1,000",1200,3\nC,0,10,"12,5"\n'
    )
    result = run(
        qgis_processing, context_and_feedback, INPUT=table_layer(path), PROFILE_FIELD="pid", REJECTED="memory:"
    )
    rejected = sorted(
        (f["feature_id"], f["profile_id"], f["property"], f["reason"]) for f in result["REJECTED"].getFeatures()
    )
    assert rejected == [
        (
            1,
            "A",
            "ORCDRC",
            "horizon 0-10 cm: value '1,000' is ambiguous (thousands separator or decimal comma); "
            "write 1000 or 1.000 instead; the horizon is left out",
        ),
        (2, "A", "ORCDRC", "horizon 10-20 cm: value 'high' is not a number; the horizon is left out"),
        (
            3,
            "A",
            "ORCDRC",
            "horizon 20-30 cm: value '<0.5' is a detection limit, not a measured value; enter the "
            "number to use for it, or leave it empty; the horizon is left out",
        ),
        (
            6,
            "B",
            "ORCDRC",
            "horizon 0-10 cm (feature 5) and horizon 5-20 cm (feature 6) overlap, so the profile "
            "is not harmonised; correct the depths so that each horizon starts at or below the bottom of the one "
            "above",
        ),
        (
            7,
            "C",
            "",
            "top depth '1,000' is ambiguous (thousands separator or decimal comma); write 1000 or 1.000 instead",
        ),
    ]
    _, feedback = context_and_feedback
    (summary,) = [e for e in feedback.warnings if e.startswith("Skipped records by reason — ")]
    counts = dict(part.rsplit(": ", 1) for part in summary.split(" — ", 1)[1].split("; "))
    assert counts == {
        "value is ambiguous (thousands separator or decimal comma)": "1",
        "value is not a number": "1",
        "value is a detection limit, not a measured value": "1",
        "horizons overlap": "1",
        "top depth is ambiguous (thousands separator or decimal comma)": "1",
    }
    log = "\n".join(feedback.warnings)
    assert "Skipped profile 'B' [ORCDRC]: horizon 0-10 cm (feature 5)" in log
    # one horizon skipped is not a profile skipped: A keeps its other horizons
    assert "Skipped a horizon (feature 2) of profile 'A' [ORCDRC]: horizon 10-20 cm: value 'high'" in log
    # A keeps its one readable horizon; C's decimal comma "12,5" is read as 12.5
    got = {f["pid"]: f for f in result["OUTPUT"].getFeatures()}
    assert sorted(got) == ["A", "C"]
    assert value(got["A"], "ORCDRC_30_60") == pytest.approx(5.0) and value(got["A"], "ORCDRC_0_5") is None
    assert value(got["C"], "ORCDRC_0_5") == pytest.approx(12.5)


def test_a_read_only_rejected_table_fails_the_run_naming_it(qgis_processing, messy_csv, small_file_system):
    from qgis.core import QgsProcessingException

    folder = small_file_system("64k", read_only=True)
    with pytest.raises(QgsProcessingException) as error:
        run(qgis_processing, INPUT=table_layer(messy_csv), PROFILE_FIELD="pid", REJECTED=str(folder / "rejected.csv"))
    # refused before any work (a full disk, which only writing finds, is tested with the GeoPackage outputs)
    assert str(error.value) == (
        f"'Rejected horizons and profiles' (REJECTED): the folder {folder} cannot be written to. Choose a folder "
        "where you may save files."
    )
    assert list(folder.iterdir()) == []


@pytest.mark.parametrize("free", [24_000, 140_000])
def test_a_geopackage_on_a_full_disk_fails_the_run_and_keeps_the_earlier_file(
    qgis_processing, context_and_feedback, messy_csv, small_file_system, tmp_path, free
):
    """GDAL may refuse the table (little room) or only the commit as the file closes (more room): both fail the
    run, and the GeoPackage an earlier run wrote there is put back as it was, with nothing else left behind."""
    from qgis.core import QgsProcessingException

    earlier = tmp_path / "earlier.gpkg"
    run(qgis_processing, INPUT=table_layer(messy_csv), PROFILE_FIELD="pid", OUTPUT=str(earlier))
    folder = small_file_system("1m", prepare=lambda folder: shutil.copy(earlier, folder / "h.gpkg"), leave_free=free)
    with pytest.raises(
        QgsProcessingException,
        match=rf"^The output 'Harmonised profiles' could not be written to '{folder / 'h.gpkg'}' \(.*\): the disk may "
        "be full, or the folder not writable. Free some space or choose another destination.$",
    ):
        run(qgis_processing, context_and_feedback, INPUT=point_layer(EDGEROI), OUTPUT=str(folder / "h.gpkg"))
    assert sorted(path.name for path in folder.iterdir()) == ["filler", "h.gpkg"]
    assert (folder / "h.gpkg").read_bytes() == earlier.read_bytes()
    assert f"The earlier file {folder / 'h.gpkg'} is left as it was." in context_and_feedback[1].infos


def test_a_failed_run_removes_the_geopackage_it_began(qgis_processing, small_file_system):
    from qgis.core import QgsProcessingException

    folder = small_file_system("80k")
    with pytest.raises(QgsProcessingException, match="could not be written"):
        run(qgis_processing, INPUT=point_layer(EDGEROI), OUTPUT=str(folder / "h.gpkg"))
    assert list(folder.iterdir()) == []


def test_writing_over_the_input_table_is_refused(qgis_processing, context_and_feedback, tmp_path):
    from qgis.core import QgsProcessingException

    path = tmp_path / "horizons.csv"
    path.write_text("pid,top,bottom,ORCDRC\nA,0,10,5\nA,10,20,3\n")
    before = path.read_bytes()
    with pytest.raises(QgsProcessingException) as error:
        run(qgis_processing, context_and_feedback, INPUT=str(path), PROFILE_FIELD="pid", OUTPUT=str(path))
    assert str(error.value) == (
        f"'Harmonised profiles' (OUTPUT) is {path}, which is also an input of this run; the input would be "
        "overwritten. Choose another file name."
    )
    assert path.read_bytes() == before


def test_depth_fields_default_to_top_and_bottom_and_the_dialog_offers_numbers(qgis_processing):
    """The dialog picks the default where the layer has it (tests/desktop checks the picks on a real dialog)."""
    from qgis.core import QgsApplication, QgsProcessingParameterField

    algorithm = QgsApplication.processingRegistry().algorithmById("socdepth:harmonise")
    for name, default in (("TOP_FIELD", "top"), ("BOTTOM_FIELD", "bottom")):
        definition = algorithm.parameterDefinition(name)
        assert (definition.defaultValue(), definition.dataType()) == (default, QgsProcessingParameterField.Numeric)


def test_a_depth_field_the_layer_lacks_is_refused_with_the_layers_fields(qgis_processing):
    from qgis.core import QgsProcessingException

    with pytest.raises(QgsProcessingException, match=r"'upper' is not in the horizons layer; .*: SOURCEID, x, y, "):
        run(qgis_processing, INPUT=point_layer(EDGEROI), TOP_FIELD="upper")


@pytest.mark.parametrize("given", [{}, {"TOP_FIELD": None, "BOTTOM_FIELD": None}])
def test_depth_fields_named_otherwise_are_found_by_their_names_and_named_in_the_log(
    qgis_processing, context_and_feedback, tmp_path, given
):
    """With the default names absent (or nothing chosen), 'upper' and 'lower' are read, and the log says so;
    the result equals the run on the same table with top and bottom."""
    renamed = tmp_path / "horizons.csv"
    table = pd.read_csv(EDGEROI)
    table.rename(columns={"top": "upper", "bottom": "lower"}).to_csv(renamed, index=False)
    result = run(qgis_processing, context_and_feedback, INPUT=point_layer(renamed), **given)
    infos = context_and_feedback[1].infos
    assert (
        "The top depth is read from field 'upper', named like one; choose another in 'Top depth field (cm)'." in infos
    )
    assert (
        "The bottom depth is read from field 'lower', named like one; choose another in 'Bottom depth field (cm)'."
        in infos
    )
    expected = rows(run(qgis_processing, INPUT=point_layer(EDGEROI))["OUTPUT"])
    got = rows(result["OUTPUT"])
    assert got.keys() == expected.keys()
    depths = [name for name in result["OUTPUT"].fields().names() if name.startswith("ORCDRC_")]
    assert {"ORCDRC_0_5", "ORCDRC_100_200"} <= set(depths)
    for site, feature in got.items():
        assert [value(feature, name) for name in depths] == [value(expected[site], name) for name in depths]


def test_a_table_without_a_field_named_like_a_depth_is_refused_with_its_fields(qgis_processing, tmp_path):
    from qgis.core import QgsProcessingException

    path = tmp_path / "horizons.csv"
    path.write_text("pid,x,y,d1,d2,ORCDRC\nA,758572,6661724,0,10,5\n")
    with pytest.raises(QgsProcessingException) as error:
        run(qgis_processing, INPUT=point_layer(path), PROFILE_FIELD="pid")
    assert str(error.value) == (
        "No field is named like a top depth (e.g. top, upper, top_cm, upper_cm); choose the field that holds it, "
        "among: pid, x, y, d1, d2, ORCDRC. Set 'Top depth field (cm)' to it."
    )
