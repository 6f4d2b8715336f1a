"""`qgis_process.bin run socdepth:sample|train|predict` on the bundled data, as a user scripts the workflow."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
import rasterio

REPO = Path(__file__).resolve().parents[2]
DATA = REPO / "sample_data" / "edgeroi"
GSM = ["0_5", "5_15", "15_30", "30_60", "60_100", "100_200"]


@pytest.fixture(scope="module")
def harmonised(qgis_process, tmp_path_factory):
    folder = tmp_path_factory.mktemp("cli")
    horizons = f"delimitedtext://file://{DATA / 'horizons.csv'}?type=csv&xField=x&yField=y&crs=EPSG:28355"
    out = folder / "harmonised.gpkg"
    qgis_process(
        "run",
        "socdepth:harmonise",
        "--",
        f"INPUT={horizons}",
        "PROFILE_FIELD=SOURCEID",
        "TOP_FIELD=top",
        "BOTTOM_FIELD=bottom",
        "VALUE_FIELDS=ORCDRC",
        f"OUTPUT={out}",
    )
    return folder, out


def test_sample_train_predict_from_the_command_line(qgis_process, harmonised):
    from soc_depth_mapper.core.bundle import SocModel

    folder, points = harmonised
    covariates = DATA / "covariates_250m.tif"
    sampled = folder / "sampled.csv"
    qgis_process("run", "socdepth:sample", "--", f"INPUT={points}", f"COVARIATES={covariates}", f"OUTPUT={sampled}")
    with sampled.open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 323 and "covariates_250m_DEMSRT5" in rows[0]

    model, metrics = folder / "rf.socmodel", folder / "metrics.csv"
    targets = [f"TARGET_FIELDS=ORCDRC_{d}" for d in GSM]
    result = qgis_process(
        "run",
        "socdepth:train",
        "--",
        f"INPUT={points}",
        *targets,
        f"COVARIATES={covariates}",
        "CATEGORICAL=covariates_250m_PMTGEO5",
        "MODEL=0",
        "VALIDATION=2",
        "FOLDS=4",
        "N_TREES=40",
        f"OUTPUT_MODEL={model}",
        f"OUTPUT_METRICS={metrics}",
    )
    assert Path(result["results"]["OUTPUT_MODEL"]) == model
    with metrics.open(newline="") as handle:
        table = list(csv.DictReader(handle))
    assert [r["depth"] for r in table] == ["0-5", "5-15", "15-30", "30-60", "60-100", "100-200", "all"]
    assert int(table[-1]["n"]) == 1929 and 0 < float(table[-1]["r2"]) < 1

    maps, intervals = folder / "soc.tif", folder / "pi.tif"
    qgis_process(
        "run",
        "socdepth:predict",
        "--",
        f"MODEL={model}",
        f"COVARIATES={covariates}",
        "UNCERTAINTY=1",
        "INTERVAL=90",
        f"OUTPUT={maps}",
        f"OUTPUT_UNCERTAINTY={intervals}",
    )
    # Oracle: the same model file applied to the covariate cells in this process, outside QGIS.
    bundle = SocModel.load(str(model))
    with rasterio.open(covariates) as source, rasterio.open(maps) as out, rasterio.open(intervals) as pi:
        stack = source.read()
        block = np.where(stack == source.nodata, np.nan, stack).astype(np.float32)
        assert out.count == 6 and pi.count == 18
        np.testing.assert_allclose(out.read(), bundle.predict_block(block, range(6)), rtol=1e-6)
        lower, upper = bundle.predict_block_interval(block, [0], 0.9)
        np.testing.assert_allclose(pi.read(1), lower[0], rtol=1e-6)
        np.testing.assert_allclose(pi.read(2), upper[0], rtol=1e-6)

    # The wrong covariates stop prediction with the difference spelled out, and leave no file.
    five = folder / "five_bands.tif"
    with rasterio.open(covariates) as source:
        profile, first_five = source.profile | {"count": 5}, source.read()[:5]
    with rasterio.open(five, "w", **profile) as target:
        target.write(first_five)
    failed = qgis_process(
        "run",
        "socdepth:predict",
        "--",
        f"MODEL={model}",
        f"COVARIATES={five}",
        f"OUTPUT={folder / 'x.tif'}",
        check=False,
    )
    assert failed.returncode != 0
    assert "trained with 6 covariate bands" in failed.stdout + failed.stderr
    assert not (folder / "x.tif").exists()
