"""`qgis_process.bin run socdepth:select_covariates`, then train on its selection, as a user scripts it."""

from __future__ import annotations

import csv
from pathlib import Path

import rasterio

REPO = Path(__file__).resolve().parents[2]
DATA = REPO / "sample_data" / "edgeroi"
GSM = ["0_5", "5_15", "15_30", "30_60", "60_100", "100_200"]


def test_select_then_train_from_the_command_line(qgis_process, tmp_path):
    horizons = f"delimitedtext://file://{DATA / 'horizons.csv'}?type=csv&xField=x&yField=y&crs=EPSG:28355"
    points = tmp_path / "harmonised.gpkg"
    qgis_process("run", "socdepth:harmonise", "--", f"INPUT={horizons}", "PROFILE_FIELD=SOURCEID", "TOP_FIELD=top",
                 "BOTTOM_FIELD=bottom", "VALUE_FIELDS=ORCDRC", f"OUTPUT={points}")  # fmt: skip
    targets = [f"TARGET_FIELDS=ORCDRC_{d}" for d in GSM]
    stack, bands, subsets = tmp_path / "selected.tif", tmp_path / "bands.csv", tmp_path / "subsets.csv"
    result = qgis_process(
        "run", "socdepth:select_covariates", "--", f"INPUT={points}", *targets,
        f"COVARIATES={DATA / 'covariates_250m.tif'}", "CATEGORICAL=covariates_250m_PMTGEO5", "FOLDS=3", "STEP=3",
        "N_TREES=20", f"OUTPUT_TABLE={bands}", f"OUTPUT_SUBSETS={subsets}", f"OUTPUT_COVARIATES={stack}",
    )  # fmt: skip
    with subsets.open(newline="") as handle:
        chosen = [row for row in csv.DictReader(handle) if row["chosen"] == "1"]  # a Bool field in CSV
    assert len(chosen) == 1
    names = chosen[0]["bands"].split(", ")
    with rasterio.open(stack) as selected:
        descriptions = selected.descriptions
    assert sorted(descriptions) == sorted(names)
    with bands.open(newline="") as handle:
        assert len(list(csv.DictReader(handle))) == 6

    model = tmp_path / "model.socmodel"
    qgis_process(
        "run", "socdepth:train", "--", f"INPUT={points}", *targets, f"COVARIATES={stack}",
        f"CATEGORICAL={result['results']['OUTPUT_CATEGORICAL']}", "VALIDATION=0", "N_TREES=20",
        f"OUTPUT_MODEL={model}",
    )  # fmt: skip
    from soc_depth_mapper.core.bundle import SocModel

    assert SocModel.load(str(model)).card.bands.names == tuple(f"selected_{name}" for name in descriptions)
