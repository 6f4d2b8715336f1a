"""`qgis_process.bin run socdepth:harmonise` on a CSV, as a user scripts it."""

from __future__ import annotations

import pytest
from osgeo import ogr


def read_layer(path) -> dict[str, dict]:
    dataset = ogr.Open(str(path))
    layer = dataset.GetLayer(0)
    return {f.GetField("pid"): f.items() for f in layer}


def test_harmonise_csv_from_any_directory(qgis_process, tmp_path):
    csv = tmp_path / "horizons.csv"
    csv.write_text("pid,top,bottom,soc\nA,0,10,6\nA,10,20,4\nB,0,30,12\nC,0,10,5\nC,5,20,3\n")
    out = tmp_path / "harmonised.gpkg"
    rejected = tmp_path / "rejected.csv"
    result = qgis_process(
        "run",
        "socdepth:harmonise",
        "--",
        f"INPUT={csv}",
        "PROFILE_FIELD=pid",
        "TOP_FIELD=top",
        "BOTTOM_FIELD=bottom",
        "VALUE_FIELDS=soc",
        "DEPTHS=0,10,20,30",
        f"OUTPUT={out}",
        f"REJECTED={rejected}",
        cwd=tmp_path.parent,
    )
    assert result["results"]["OUTPUT"].startswith(str(out))
    got = read_layer(out)
    assert set(got) == {"A", "B"}
    assert got["A"]["soc_0_10"] == pytest.approx(5.9433962264, abs=1e-9)
    assert got["A"]["soc_10_20"] == pytest.approx(4.0566037736, abs=1e-9)
    assert got["A"]["soc_20_30"] is None
    assert [got["B"][f"soc_{d}"] for d in ("0_10", "10_20", "20_30")] == [12, 12, 12]
    text = rejected.read_text()
    assert "C" in text and "overlap" in text


def test_unknown_field_fails_with_a_clear_message(qgis_process, tmp_path):
    csv = tmp_path / "h.csv"
    csv.write_text("pid,top,bottom,soc\nA,0,10,6\n")
    result = qgis_process(
        "run",
        "socdepth:harmonise",
        "--",
        f"INPUT={csv}",
        "PROFILE_FIELD=pid",
        "TOP_FIELD=top",
        "BOTTOM_FIELD=depth_to",
        "VALUE_FIELDS=soc",
        f"OUTPUT={tmp_path / 'o.gpkg'}",
        check=False,
    )
    assert result.returncode != 0
    assert "depth_to" in result.stdout + result.stderr
