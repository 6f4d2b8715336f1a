"""`qgis_process.bin run socdepth:predict` with the area of applicability, from a model trained on the command line."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import rasterio

REPO = Path(__file__).resolve().parents[2]
DATA = REPO / "sample_data" / "edgeroi"
COVARIATES = DATA / "covariates_250m.tif"


def test_area_of_applicability_from_the_command_line(qgis_process, tmp_path):
    from soc_depth_mapper.core.bundle import SocModel

    horizons = f"delimitedtext://file://{DATA / 'horizons.csv'}?type=csv&xField=x&yField=y&crs=EPSG:28355"
    points, model = tmp_path / "harmonised.gpkg", tmp_path / "rf.socmodel"
    qgis_process(
        "run", "socdepth:harmonise", "--", f"INPUT={horizons}", "PROFILE_FIELD=SOURCEID", "TOP_FIELD=top",
        "BOTTOM_FIELD=bottom", "VALUE_FIELDS=ORCDRC", f"OUTPUT={points}",
    )  # fmt: skip
    qgis_process(
        "run", "socdepth:train", "--", f"INPUT={points}", "TARGET_FIELDS=ORCDRC_0_5", "TARGET_FIELDS=ORCDRC_5_15",
        f"COVARIATES={COVARIATES}", "CATEGORICAL=covariates_250m_PMTGEO5", "VALIDATION=1", "FOLDS=4", "N_TREES=20",
        f"OUTPUT_MODEL={model}",
    )  # fmt: skip
    maps, aoa = tmp_path / "soc.tif", tmp_path / "aoa.tif"
    result = qgis_process(
        "run", "socdepth:predict", "--", f"MODEL={model}", f"COVARIATES={COVARIATES}", "MASK_OUTSIDE_AOA=true",
        f"OUTPUT={maps}", f"OUTPUT_AOA={aoa}",
    )  # fmt: skip
    assert Path(result["results"]["OUTPUT_AOA"]) == aoa
    # Oracle: the model file's DI applied to the covariate cells in this process, outside QGIS.
    dissimilarity = SocModel.load(str(model)).dissimilarity_index()
    with rasterio.open(COVARIATES) as source, rasterio.open(aoa) as written, rasterio.open(maps) as soc:
        stack = source.read().astype(np.float64)
        valid = (stack != source.nodata).all(axis=0)
        di, inside = written.read()
        np.testing.assert_array_equal(di[valid], dissimilarity.di(stack[:, valid].T).astype(np.float32))
        np.testing.assert_array_equal(inside[valid], di[valid] <= np.float32(dissimilarity.threshold))
        assert (di[~valid] == written.nodata).all()
        outside = valid & (inside == 0)
        assert outside.any() and (soc.read()[:, outside] == soc.nodata).all()
