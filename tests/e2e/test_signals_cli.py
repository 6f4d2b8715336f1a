"""SIGTERM to `qgis_process.bin` while it predicts: the run cleans up as a cancel does, then the process ends."""

from __future__ import annotations

import signal
import subprocess
import time
from pathlib import Path

from osgeo import gdal

REPO = Path(__file__).resolve().parents[2]
DATA = REPO / "sample_data" / "edgeroi"
GSM = ["0_5", "5_15", "15_30", "30_60", "60_100", "100_200"]


def mosaic(folder: Path, copies: int = 8) -> Path:
    """`cov.vrt`: copies x copies tiles of the Edgeroi covariates side by side, enough for a run of seconds."""
    source = gdal.Open(str(DATA / "covariates_250m.tif"))
    left, cell, _, top, _, _ = source.GetGeoTransform()
    width, height = source.RasterXSize * cell, source.RasterYSize * cell
    tiles = []
    for i in range(copies):
        for j in range(copies):
            x, y = left + j * width, top - i * height
            tile = folder / f"tile_{i}_{j}.vrt"
            gdal.Translate(str(tile), source, format="VRT", outputBounds=[x, y, x + width, y - height])
            tiles.append(str(tile))
    path = folder / "cov.vrt"
    vrt = gdal.BuildVRT(str(path), tiles)
    for band in range(1, source.RasterCount + 1):
        vrt.GetRasterBand(band).SetDescription(source.GetRasterBand(band).GetDescription())
    vrt = None  # written on close
    return path


def test_sigterm_during_predict_removes_the_partial_map_and_keeps_the_earlier_one(
    qgis_process, qgis_process_command, tmp_path
):
    covariates = mosaic(tmp_path)
    horizons = f"delimitedtext://file://{DATA / 'horizons.csv'}?type=csv&xField=x&yField=y&crs=EPSG:28355"
    harmonised, model = tmp_path / "harmonised.gpkg", tmp_path / "rf.socmodel"
    qgis_process(
        "run", "socdepth:harmonise", "--", f"INPUT={horizons}", "PROFILE_FIELD=SOURCEID", "TOP_FIELD=top",
        "BOTTOM_FIELD=bottom", "VALUE_FIELDS=ORCDRC", f"OUTPUT={harmonised}",
    )  # fmt: skip
    qgis_process(
        "run", "socdepth:train", "--", f"INPUT={harmonised}", *(f"TARGET_FIELDS=ORCDRC_{d}" for d in GSM),
        f"COVARIATES={covariates}", "VALIDATION=0", "N_TREES=20", f"OUTPUT_MODEL={model}",
    )  # fmt: skip
    maps = tmp_path / "maps"
    maps.mkdir()
    (maps / "soc.tif").write_bytes(b"an earlier map")
    executable, env = qgis_process_command
    run = subprocess.Popen(
        [executable, "run", "socdepth:predict", "--", f"MODEL={model}", f"COVARIATES={covariates}",
         f"OUTPUT={maps / 'soc.tif'}"],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 120
        while not any(p.name.endswith(".partial.tif") for p in maps.iterdir()):
            assert run.poll() is None, f"predict ended before it wrote anything:\n{run.stdout.read()}"
            assert time.monotonic() < deadline
            time.sleep(0.05)
        run.send_signal(signal.SIGTERM)
        output = run.communicate(timeout=60)[0]
    finally:
        run.kill()
    assert run.returncode == -signal.SIGTERM, output  # ended by the signal, after cleaning up
    assert [p.name for p in maps.iterdir()] == ["soc.tif"]
    assert (maps / "soc.tif").read_bytes() == b"an earlier map"
