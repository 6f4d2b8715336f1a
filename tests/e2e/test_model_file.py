"""The shipped model "Horizons to SOC maps" through `qgis_process.bin`, on the bundled Edgeroi data.

Oracle: the model must give exactly what its three steps give when a user runs them one by one with the same
settings, and the model file in the repository must be what scripts/make_model.py builds today.
"""

from __future__ import annotations

import csv
import subprocess
import sys
from pathlib import Path
from xml.etree.ElementTree import canonicalize

import numpy as np
import pytest
import rasterio
from osgeo import ogr

from soc_depth_mapper.core.bundle import SocModel

REPO = Path(__file__).resolve().parents[2]
DATA = REPO / "sample_data" / "edgeroi"
MODEL_FILE = REPO / "models" / "horizons_to_soc_maps.model3"
HORIZONS = f"delimitedtext://file://{DATA / 'horizons.csv'}?type=csv&xField=x&yField=y&crs=EPSG:28355&detectTypes=yes"
COVARIATES = str(DATA / "covariates_250m.tif")
GSM = ["0-5", "5-15", "15-30", "30-60", "60-100", "100-200"]
# fast settings: a small forest and three spatial folds
FAST = ["MODEL_TYPE=0", "FOLDS=3", "N_TREES=50", "SEED=7"]
INPUTS = [
    f"HORIZONS={HORIZONS}",
    "PROFILE_FIELD=SOURCEID",
    "TOP_FIELD=top",
    "BOTTOM_FIELD=bottom",
    "VALUE_FIELD=ORCDRC",
    f"COVARIATES={COVARIATES}",
    "CATEGORICAL=PMTGEO5",  # the band as QGIS shows it; the steps run one by one get its full name
]


def outputs(folder: Path) -> dict[str, Path]:
    return {
        "harmonise:HARMONISED": folder / "harmonised.gpkg",
        "train:MODEL_FILE": folder / "model.socmodel",
        "train:METRICS": folder / "metrics.csv",
        "train:REPORT": folder / "report.html",
        "predict:SOC_MAPS": folder / "soc.tif",
        "predict:INTERVALS": folder / "intervals.tif",
        "predict:DEPTH_MAPS": folder / "maps",
    }


#: the outputs a run may leave out
OPTIONAL = ("train:REPORT", "predict:DEPTH_MAPS")


def run_model(qgis_process, algorithm: str, folder: Path, *settings: str, skip: tuple = ()) -> dict[str, Path]:
    folder.mkdir()
    paths = {name: path for name, path in outputs(folder).items() if name not in skip}
    result = qgis_process("run", algorithm, "--", *INPUTS, *settings, *(f"{k}={v}" for k, v in paths.items()))
    assert {name: Path(path) for name, path in result["results"].items() if path} == paths
    return paths


def read_profiles(path: Path) -> dict[str, dict]:
    dataset = ogr.Open(str(path))  # keep the dataset alive while its layer is read (GDAL frees it otherwise)
    return {feature.GetField("SOURCEID"): feature.items() for feature in dataset.GetLayer(0)}


def read_metrics(path: Path) -> list[dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def read_raster(path: Path) -> tuple[np.ndarray, tuple[str, ...]]:
    with rasterio.open(path) as dataset:
        return dataset.read(masked=True), dataset.descriptions


@pytest.fixture(scope="module")
def model_run(qgis_process, tmp_path_factory):
    """The model, run by its id as a user scripts it."""
    return run_model(qgis_process, "socdepth:horizons_to_soc_maps", tmp_path_factory.mktemp("model") / "out", *FAST)


def test_shipped_model_files_are_what_make_model_builds(tmp_path):
    subprocess.run([sys.executable, str(REPO / "scripts" / "make_model.py"), "--out-dir", str(tmp_path)], check=True)
    for name in ("horizons_to_soc_maps.model3", "transfer_to_a_new_region.model3"):
        assert canonicalize(from_file=tmp_path / name) == canonicalize(from_file=REPO / "models" / name), (
            f"models/{name} is out of date: run scripts/make_model.py"
        )


def test_model_outputs_have_the_expected_shape(model_run):
    profiles = read_profiles(model_run["harmonise:HARMONISED"])
    assert len(profiles) == 325  # the Edgeroi profiles with SOC (sample_data/README.md)
    assert {f"ORCDRC_{d.replace('-', '_')}" for d in GSM} <= set(next(iter(profiles.values())))
    metrics = read_metrics(model_run["train:METRICS"])
    assert [row["depth"] for row in metrics] == [*GSM, "all"]
    per_depth = [int(row["n"]) for row in metrics[:-1]]
    assert int(metrics[-1]["n"]) == sum(per_depth) and min(per_depth) > 300  # 323 sites lie on the rasters
    assert all(float(row["rmse"]) > 0 for row in metrics)
    maps, names = read_raster(model_run["predict:SOC_MAPS"])
    assert names == tuple(f"ORCDRC {d} cm" for d in GSM)
    intervals, _ = read_raster(model_run["predict:INTERVALS"])
    assert intervals.shape == (3 * len(GSM), *maps.shape[1:])
    lower, upper, width = intervals[0::3], intervals[1::3], intervals[2::3]
    assert np.all(lower <= upper)
    np.testing.assert_allclose(width, upper - lower, rtol=1e-5)
    assert maps.min() > 0 and maps.max() < 200  # g/kg: the range of Edgeroi's horizons
    report = model_run["train:REPORT"].read_text(encoding="utf-8")
    # the report's metrics are the metrics table's: the overall RMSE appears as the report formats it
    assert "<html" in report and "Observed vs predicted" in report
    assert f"{float(metrics[-1]['rmse']):.3f}" in report
    # CATEGORICAL given as QGIS shows the band: the model file records that band as categorical
    bundle = SocModel.load(model_run["train:MODEL_FILE"])
    assert [bundle.band_names[i] for i in bundle.card.bands.categorical] == ["covariates_250m_PMTGEO5"]
    # one map per depth: each the multi-band map's band of that depth
    for band, depth in enumerate(GSM):
        single, (name,) = read_raster(model_run["predict:DEPTH_MAPS"] / f"ORCDRC_{depth.replace('-', '_')}cm.tif")
        assert name == f"ORCDRC {depth} cm"
        np.testing.assert_array_equal(single[0].filled(np.nan), maps[band].filled(np.nan))


def test_model_equals_its_three_steps_run_one_by_one(qgis_process, model_run, tmp_path):
    harmonised = tmp_path / "harmonised.gpkg"
    qgis_process(
        "run",
        "socdepth:harmonise",
        "--",
        f"INPUT={HORIZONS}",
        "PROFILE_FIELD=SOURCEID",
        "TOP_FIELD=top",
        "BOTTOM_FIELD=bottom",
        "VALUE_FIELDS=ORCDRC",
        f"OUTPUT={harmonised}",
    )
    assert read_profiles(harmonised) == read_profiles(model_run["harmonise:HARMONISED"])

    metrics = tmp_path / "metrics.csv"
    qgis_process(
        "run",
        "socdepth:train",
        "--",
        f"INPUT={harmonised}",
        *(f"TARGET_FIELDS=ORCDRC_{d.replace('-', '_')}" for d in GSM),
        f"COVARIATES={COVARIATES}",
        "CATEGORICAL=covariates_250m_PMTGEO5",
        "MODEL=0",
        "FOLDS=3",
        "N_TREES=50",
        "SEED=7",
        f"OUTPUT_MODEL={tmp_path / 'model.socmodel'}",
        f"OUTPUT_METRICS={metrics}",
    )
    assert read_metrics(metrics) == read_metrics(model_run["train:METRICS"]) and len(read_metrics(metrics)) == 7

    # the model's own model file, mapped directly: the model wired the file and the rasters into predict
    qgis_process(
        "run",
        "socdepth:predict",
        "--",
        f"MODEL={model_run['train:MODEL_FILE']}",
        f"COVARIATES={COVARIATES}",
        "UNCERTAINTY=1",
        f"OUTPUT={tmp_path / 'soc.tif'}",
        f"OUTPUT_UNCERTAINTY={tmp_path / 'intervals.tif'}",
    )
    for ours, direct in (("predict:SOC_MAPS", "soc.tif"), ("predict:INTERVALS", "intervals.tif")):
        (expected, expected_names), (got, got_names) = read_raster(tmp_path / direct), read_raster(model_run[ours])
        assert got_names == expected_names
        np.testing.assert_array_equal(got.mask, expected.mask)
        np.testing.assert_array_equal(got.filled(np.nan), expected.filled(np.nan))


def test_model_file_runs_by_path_with_other_depths(qgis_process, tmp_path):
    """Depths written with spaces and a decimal: the model derives the train step's fields from them. The
    report and the per-depth maps are left out: they are optional."""
    paths = run_model(
        qgis_process,
        str(MODEL_FILE),
        tmp_path / "out",
        "DEPTHS=0 2.5 30.0 100",
        "VALIDATION=1",
        "FOLDS=2",
        "N_TREES=20",
        skip=OPTIONAL,
    )
    assert not (tmp_path / "out" / "report.html").exists() and not (tmp_path / "out" / "maps").exists()
    profiles = read_profiles(paths["harmonise:HARMONISED"])
    assert {"ORCDRC_0_2p5", "ORCDRC_2p5_30", "ORCDRC_30_100"} <= set(next(iter(profiles.values())))
    assert [row["depth"] for row in read_metrics(paths["train:METRICS"])] == ["0-2.5", "2.5-30", "30-100", "all"]
    _, names = read_raster(paths["predict:SOC_MAPS"])
    assert names == ("ORCDRC 0-2.5 cm", "ORCDRC 2.5-30 cm", "ORCDRC 30-100 cm")
