"""The model/covariate check: each way a stack can differ from the card, and the ways it may differ harmlessly."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
from rasterio.crs import CRS

from soc_depth_mapper.core.card import Bands, Grid, ModelCard
from soc_depth_mapper.core.compatibility import BandDifference, CovariateDifferences, covariate_differences, same_crs

MGA55 = CRS.from_epsg(28355)
CARD = ModelCard(
    kind="random_forest",
    property="SOC",
    intervals=((0.0, 5.0),),
    bands=Bands(("cov_DEM", "cov_TWI", "cov_GEO"), layer_names=("cov",)),
    grid=Grid(MGA55.to_wkt(), (0.0, 250.0, 0.0, 0.0, 0.0, -250.0), (250.0, 250.0)),
)


@dataclass
class Stack:
    band_names: list[str]
    layer_names: list[str]
    crs_wkt: str = MGA55.to_wkt()
    res: tuple[float, float] = (250.0, 250.0)


def test_the_stack_of_training_has_no_differences():
    differences = covariate_differences(CARD, Stack(["cov_DEM", "cov_TWI", "cov_GEO"], ["cov"]))
    assert differences == CovariateDifferences() and not differences.blocking


def test_bands_in_another_order_or_renamed_are_listed_by_number():
    swapped = covariate_differences(CARD, Stack(["cov_TWI", "cov_DEM", "cov_GEO"], ["cov"]))
    assert swapped.bands == (BandDifference(1, "cov_DEM", "cov_TWI"), BandDifference(2, "cov_TWI", "cov_DEM"))
    assert swapped.blocking and swapped.band_count is None
    renamed = covariate_differences(CARD, Stack(["cov_DEM", "cov_TWI", "cov_GEOLOGY"], ["cov"]))
    assert renamed.bands == (BandDifference(3, "cov_GEO", "cov_GEOLOGY"),)


def test_the_same_bands_from_a_layer_named_otherwise_only_differ_in_layer_names():
    stack = Stack(["covariates_DEM", "covariates_TWI", "covariates_GEO"], ["covariates"])
    differences = covariate_differences(CARD, stack)
    assert differences.layer_names_differ and differences.bands == () and not differences.blocking


def test_another_band_count_is_reported_without_comparing_bands():
    differences = covariate_differences(CARD, Stack(["cov_DEM", "cov_TWI"], ["cov"]))
    assert differences.band_count == (3, 2) and differences.bands == () and differences.blocking


def test_another_crs_is_reported_and_the_same_crs_written_otherwise_is_not():
    utm = CRS.from_epsg(32755).to_wkt()
    differences = covariate_differences(CARD, Stack(["cov_DEM", "cov_TWI", "cov_GEO"], ["cov"], crs_wkt=utm))
    assert differences.crs == (MGA55.to_wkt(), utm) and differences.blocking
    assert same_crs(MGA55.to_wkt(version="WKT1_GDAL"), MGA55.to_wkt(version="WKT2_2019"))
    assert not same_crs("not a crs", MGA55.to_wkt()) and same_crs("", "")


@pytest.mark.parametrize(
    ("res", "differs"), [((500.0, 500.0), True), ((250.0, 250.0001), False), ((250.0, 251.0), True)]
)
def test_another_pixel_size_is_reported_beyond_rounding(res, differs):
    differences = covariate_differences(CARD, Stack(["cov_DEM", "cov_TWI", "cov_GEO"], ["cov"], res=res))
    assert differences.pixel_size == (((250.0, 250.0), res) if differs else None)
