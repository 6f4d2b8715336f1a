"""`qgis_process.bin run socdepth:train` with instance transfer: a small local subset of the bundled Edgeroi
profiles borrows from the rest, as a user scripts it."""

from __future__ import annotations

import csv
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
DATA = REPO / "sample_data" / "edgeroi"
GSM = ["0_5", "5_15", "15_30", "30_60", "60_100", "100_200"]


def test_train_with_a_source_library_from_the_command_line(qgis_process, tmp_path):
    from soc_depth_mapper.core.bundle import SocModel

    horizons = f"delimitedtext://file://{DATA / 'horizons.csv'}?type=csv&xField=x&yField=y&crs=EPSG:28355"
    points = tmp_path / "harmonised.gpkg"
    qgis_process(
        "run", "socdepth:harmonise", "--", f"INPUT={horizons}", "PROFILE_FIELD=SOURCEID", "TOP_FIELD=top",
        "BOTTOM_FIELD=bottom", "VALUE_FIELDS=ORCDRC", f"OUTPUT={points}",
    )  # fmt: skip
    model, metrics = tmp_path / "transfer.socmodel", tmp_path / "metrics.csv"
    qgis_process(
        "run", "socdepth:train", "--", f"INPUT={points}|subset=\"fid\" % 6 = 0",
        *[f"TARGET_FIELDS=ORCDRC_{d}" for d in GSM], f"COVARIATES={DATA / 'covariates_250m.tif'}",
        "VALIDATION=1", "FOLDS=3", "N_TREES=30", "TRANSFER=1", f"SOURCE_INPUT={points}|subset=\"fid\" % 6 <> 0",
        "SOURCE_WEIGHT=0.3", f"OUTPUT_MODEL={model}", f"OUTPUT_METRICS={metrics}",
    )  # fmt: skip
    with metrics.open(newline="") as handle:
        rows = [row for row in csv.DictReader(handle) if row["depth"] == "all"]
    assert [row["model"] for row in rows] == ["Random forest (with transfer)", "Random forest (local only)"]
    assert rows[0]["n"] == rows[1]["n"]
    record = SocModel.load(str(model)).card.transferred_from
    assert record["weight"] == 0.3 and record["weight_requested"] == 0.3
    # the 323 profiles on the grid, one in six local: the rest is the library
    local_sites = SocModel.load(str(model)).card.n_sites
    assert local_sites + record["source"]["sites"] == 323 and 50 <= local_sites <= 56
