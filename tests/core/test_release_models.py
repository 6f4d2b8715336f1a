"""Model files written by the released version (bundle version 1) still load and map the same numbers.

The files and their expected maps and intervals were written together by `tests/data/make_release_models.py`
at the release's commit, so the expected values are that code's answers, not this code's.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from soc_depth_mapper.core.bundle import SocModel

DATA = Path(__file__).resolve().parents[1] / "data"


@pytest.fixture(scope="module")
def expected() -> dict[str, np.ndarray]:
    with np.load(DATA / "release_expected.npz", allow_pickle=False) as stored:
        return dict(stored)


def test_a_released_random_forest_file_loads_and_maps_the_same_numbers(expected):
    bundle = SocModel.load(str(DATA / "release_rf.socmodel"))
    assert bundle.kind == "random_forest" and bundle.property_name == "ORCDRC"
    assert bundle.band_names == ["cov_a", "cov_b", "cov_geology"]
    np.testing.assert_array_equal(bundle.intervals, [[0, 5], [5, 15], [15, 30]])
    assert bundle.transform == "log" and bundle.prediction_floor == 0.0
    block = expected["block"]
    np.testing.assert_array_equal(bundle.predict_block(block, [0, 1, 2]), expected["rf_maps"])
    lower, upper = bundle.predict_block_interval(block, [0, 2], 0.9)
    np.testing.assert_array_equal(lower, expected["rf_lower"])
    np.testing.assert_array_equal(upper, expected["rf_upper"])


def test_a_released_file_saved_again_is_written_as_a_card_and_maps_the_same(expected, tmp_path):
    released = SocModel.load(str(DATA / "release_rf.socmodel"))
    released.save(str(tmp_path / "again.socmodel"))
    again = SocModel.load(str(tmp_path / "again.socmodel"))
    assert again.card == released.card
    np.testing.assert_array_equal(again.predict_block(expected["block"], [0, 1, 2]), expected["rf_maps"])


def test_a_released_cnn_file_loads_with_its_fold_models_and_maps_the_same_numbers(expected):
    bundle = SocModel.load(str(DATA / "release_cnn.socmodel"))
    assert bundle.kind == "cnn" and bundle.patch_size == 7
    assert len(bundle.fold_models) == 3 and len(bundle.conformal_scores) == 3
    halo = np.pad(expected["block"], ((0, 0), (3, 3), (3, 3)), mode="edge")
    np.testing.assert_allclose(bundle.predict_block(halo, [0, 1, 2]), expected["cnn_maps"], rtol=1e-5, atol=1e-5)
    lower, upper = bundle.predict_block_interval(halo, [0, 2], 0.9)
    np.testing.assert_allclose(lower, expected["cnn_lower"], rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(upper, expected["cnn_upper"], rtol=1e-5, atol=1e-5)
    assert np.all(expected["cnn_upper"] > expected["cnn_lower"])  # real intervals, not a degenerate record
