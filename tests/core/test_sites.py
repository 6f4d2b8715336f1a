"""The training table from sites and covariates: target fields to intervals, categorical bands, skipped sites."""

from __future__ import annotations

import numpy as np
import pytest

from soc_depth_mapper.core.rasters import PointSample
from soc_depth_mapper.core.sites import NO_TARGET, categorical_bands, sampling_skips, target_intervals, training_data


def test_target_fields_come_back_in_depth_order_with_their_intervals():
    prop, fields, intervals = target_intervals(["SOC_g_15_30", "SOC_g_0_5", "SOC_g_5_15"])
    assert prop == "SOC_g" and fields == ["SOC_g_0_5", "SOC_g_5_15", "SOC_g_15_30"]
    np.testing.assert_array_equal(intervals, [[0, 5], [5, 15], [15, 30]])
    with pytest.raises(ValueError, match=r"Target fields mix properties \(CLAY, SOC\); train one property at a time"):
        target_intervals(["SOC_0_5", "CLAY_0_5"])
    with pytest.raises(ValueError, match="Choose the target fields"):
        target_intervals([])


def test_categorical_bands_by_band_or_by_whole_layer():
    bands, layers = ["cov_DEM", "cov_GEO", "landuse_1", "landuse_2"], ["cov", "landuse"]
    assert categorical_bands("cov_GEO; landuse", bands, layers) == (1, 2, 3)
    assert categorical_bands(" ", bands, layers) == ()
    with pytest.raises(ValueError, match="Categorical band 'soil' is not among the covariate bands: cov_DEM, cov_GEO"):
        categorical_bands("cov_GEO, soil", bands, layers)


def test_categorical_bands_by_the_name_qgis_shows_where_one_band_has_it():
    bands, layers = (
        ["cov_250m_DEM", "cov_250m_PMTGEO5", "landuse_1", "soil_1", "soil_GEO"],
        ["cov_250m", "landuse", "soil"],
    )
    assert categorical_bands("PMTGEO5", bands, layers) == (1,)
    assert categorical_bands("pmtgeo5, GEO", bands, layers) == (1, 4)  # any case; GEO is no band of cov_250m
    assert categorical_bands("cov_250m_PMTGEO5, PMTGEO5", bands, layers) == (1,)  # both spellings: one band
    with pytest.raises(ValueError, match=r"'1' is a band of several layers: landuse_1, soil_1; write the one"):
        categorical_bands("1", bands, layers)
    with pytest.raises(ValueError, match=r"'GEOL' is not among .*: cov_250m_DEM, .* \(or their layers cov_250m, "):
        categorical_bands("GEOL", bands, layers)


def test_sites_without_covariates_or_targets_are_skipped_with_the_reason_in_site_order():
    patches = np.arange(4 * 2, dtype=np.float32).reshape(4, 2, 1, 1)
    status = np.array([0, 1, 0, 2], dtype=np.int8)
    sample = PointSample(patches, status, ["", "outside", "", "nodata centre"], np.zeros((4, 2), dtype=bool))
    targets = np.array([[1.0, np.nan], [2.0, 3.0], [np.nan, np.nan], [4.0, 5.0]])
    data, skipped = training_data(
        sample, [10, 11, 12, 13], [0.0, 1.0, 2.0, 3.0], [5.0, 6.0, 7.0, 8.0], targets, [[0, 5], [5, 15]], "SOC",
        ["a", "b"], categorical=(1,), groups=["x", "y", "z", 7],
    )
    assert skipped == [(11, "outside"), (12, NO_TARGET), (13, "nodata centre")]
    assert sampling_skips([10, 11, 12, 13], sample) == [(11, "outside"), (13, "nodata centre")]
    assert data.site_ids.tolist() == [10] and data.x.tolist() == [0.0] and data.y.tolist() == [5.0]
    np.testing.assert_array_equal(data.patches, patches[:1])
    np.testing.assert_array_equal(data.targets, [[1.0, np.nan]])
    assert data.groups.tolist() == ["x"] and data.categorical == (1,) and data.band_names == ["a", "b"]


def test_a_table_without_usable_sites_is_empty_for_the_caller_to_report():
    outside = np.array([1, 1], np.int8)
    sample = PointSample(np.zeros((2, 1, 1, 1), np.float32), outside, ["outside"] * 2, np.zeros((2, 1), bool))
    data, skipped = training_data(sample, [1, 2], [0, 0], [0, 0], np.ones((2, 1)), [[0, 5]], "SOC", ["a"])
    assert len(data.site_ids) == 0 and data.patches.shape == (0, 1, 1, 1) and len(skipped) == 2
