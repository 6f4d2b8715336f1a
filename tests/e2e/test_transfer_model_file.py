"""The shipped model "Transfer to a new region" through `qgis_process.bin`: the bundled Edgeroi horizons split
by halves, the western profiles as the library and a third of the eastern ones as the local survey.

Oracle: the model's train step must give exactly what 'Train SOC model' gives on the model's own harmonised
layers with the same settings, and both harmonised layers must hold each half's profiles."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
import rasterio

from .test_model_file import COVARIATES, DATA, GSM, read_metrics, read_profiles, read_raster

TRANSFER_MODEL = Path(__file__).resolve().parents[2] / "models" / "transfer_to_a_new_region.model3"
#: one eastern profile in LOCAL_EVERY is local
LOCAL_EVERY = 3
SETTINGS = ["MODEL_TYPE=0", "VALIDATION=1", "FOLDS=3", "N_TREES=40", "SEED=3"]


def _halves(folder: Path) -> tuple[str, str, set[str], set[str]]:
    """(local URI, library URI, local ids, library ids): horizons.csv split at the profiles' median easting."""
    with open(DATA / "horizons.csv", newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    easting = {row["SOURCEID"]: float(row["x"]) for row in rows}
    median = float(np.median(list(easting.values())))
    east = sorted(profile for profile, x in easting.items() if x >= median)
    local_ids = set(east[::LOCAL_EVERY])
    library_ids = {profile for profile, x in easting.items() if x < median}
    uris = []
    for name, ids in (("local", local_ids), ("library", library_ids)):
        path = folder / f"{name}.csv"
        with open(path, "w", newline="", encoding="utf-8") as handle:
            writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(row for row in rows if row["SOURCEID"] in ids)
        uris.append(f"delimitedtext://file://{path}?type=csv&xField=x&yField=y&crs=EPSG:28355&detectTypes=yes")
    return uris[0], uris[1], local_ids, library_ids


@pytest.fixture(scope="module")
def transfer_run(qgis_process, tmp_path_factory):
    folder = tmp_path_factory.mktemp("transfer_model")
    local, library, local_ids, library_ids = _halves(folder)
    paths = {
        "harmonise_local:HARMONISED_LOCAL": folder / "local.gpkg",
        "harmonise_library:HARMONISED_LIBRARY": folder / "library.gpkg",
        "train:MODEL_FILE": folder / "model.socmodel",
        "train:METRICS": folder / "metrics.csv",
        "train:REPORT": folder / "report.html",
        "predict:SOC_MAPS": folder / "soc.tif",
        "predict:INTERVALS": folder / "intervals.tif",
    }
    inputs = [
        f"LOCAL_HORIZONS={local}",
        f"LIBRARY_HORIZONS={library}",
        "PROFILE_FIELD=SOURCEID",
        "TOP_FIELD=top",
        "BOTTOM_FIELD=bottom",
        "VALUE_FIELD=ORCDRC",
        f"COVARIATES={COVARIATES}",
        "CATEGORICAL=covariates_250m_PMTGEO5",
    ]
    result = qgis_process(
        "run", "socdepth:transfer_to_a_new_region", "--", *inputs, *SETTINGS, *(f"{k}={v}" for k, v in paths.items())
    )
    assert set(paths) <= set(result["results"])  # also the optional per-depth folder, left empty here
    return paths, local_ids, library_ids


def test_the_model_harmonises_both_halves_trains_with_transfer_and_maps(transfer_run):
    from soc_depth_mapper.core.bundle import SocModel

    paths, local_ids, library_ids = transfer_run
    local, library = (
        read_profiles(paths["harmonise_local:HARMONISED_LOCAL"]),
        read_profiles(paths["harmonise_library:HARMONISED_LIBRARY"]),
    )
    assert set(local) <= local_ids and set(library) <= library_ids and len(library) > 2 * len(local) > 80
    card = SocModel.load(str(paths["train:MODEL_FILE"])).card
    record = card.transferred_from
    assert record["strategy"] == "instances"  # the model's default: instance transfer
    assert len(library) - 2 <= record["source"]["sites"] <= len(library) and card.n_sites <= len(local)
    metrics = read_metrics(paths["train:METRICS"])
    overall = {row["model"]: row for row in metrics if row["depth"] == "all"}
    assert set(overall) == {"Random forest (with transfer)", "Random forest (local only)"}
    assert overall["Random forest (with transfer)"]["n"] == overall["Random forest (local only)"]["n"]
    assert "Gain from transfer" in paths["train:REPORT"].read_text(encoding="utf-8")
    maps, names = read_raster(paths["predict:SOC_MAPS"])
    assert names == tuple(f"ORCDRC {d} cm" for d in GSM) and maps.min() > 0 and maps.max() < 200
    intervals, _ = read_raster(paths["predict:INTERVALS"])
    assert np.all(intervals[0::3] <= intervals[1::3])


def test_the_models_train_step_equals_train_run_on_its_harmonised_layers(qgis_process, transfer_run, tmp_path):
    paths = transfer_run[0]
    metrics = tmp_path / "metrics.csv"
    qgis_process(
        "run",
        "socdepth:train",
        "--",
        f"INPUT={paths['harmonise_local:HARMONISED_LOCAL']}",
        f"SOURCE_INPUT={paths['harmonise_library:HARMONISED_LIBRARY']}",
        "TRANSFER=1",
        *(f"TARGET_FIELDS=ORCDRC_{d.replace('-', '_')}" for d in GSM),
        f"COVARIATES={COVARIATES}",
        "CATEGORICAL=covariates_250m_PMTGEO5",
        *(setting.replace("MODEL_TYPE", "MODEL") for setting in SETTINGS),
        f"OUTPUT_MODEL={tmp_path / 'model.socmodel'}",
        f"OUTPUT_METRICS={metrics}",
    )
    assert read_metrics(metrics) == read_metrics(paths["train:METRICS"])
    with rasterio.open(paths["predict:SOC_MAPS"]) as maps, rasterio.open(COVARIATES) as stack:
        assert maps.transform == stack.transform and maps.count == len(GSM)
