import json

import numpy as np
import pytest

from soc_depth_mapper.core.models.encoding import PatchEncoder, block_centre_valid, centre_valid


def _training_patches() -> np.ndarray:
    """2 sites, 3 bands (continuous, categorical, continuous), 3×3 patches with hand-checkable values."""
    patches = np.zeros((2, 3, 3, 3))
    patches[0, 0] = [[2, 4, 6], [8, 10, 12], [14, 16, 18]]
    patches[1, 0] = [[20, 22, np.nan], [10, 10, 10], [10, 10, 10]]
    patches[:, 1] = 3.0
    patches[0, 1, 0, 0] = 7.0
    patches[1, 1, 2, 2] = 1.0
    patches[1, 1, 0, 1] = np.nan
    patches[:, 2] = 5.0  # a constant band
    return patches


def test_continuous_band_is_min_max_scaled_without_clipping():
    encoder = PatchEncoder(categorical=(1,), scaling="minmax").fit(_training_patches())
    assert encoder.band_min_[0] == 2 and encoder.band_max_[0] == 22
    new = np.full((1, 3, 3, 3), 3.0)
    new[0, 0] = [[2, 12, 22], [42, 10, -18], [7, 17, 2]]
    out = encoder.transform(new)
    expected = (new[0, 0] - 2) / 20  # 42 -> 2.0 and -18 -> -1.0: outside [0, 1] on purpose
    np.testing.assert_allclose(out[0, 0], expected, rtol=1e-6)
    assert out.dtype == np.float32


def test_nan_off_centre_takes_training_mean_of_valid_cells():
    patches = _training_patches()
    encoder = PatchEncoder(categorical=(1,), scaling="minmax").fit(patches)
    # 9 + 8 valid cells of band 0: site 0 sums to 90, site 1 to 20 + 22 + 6 * 10 = 102
    assert encoder.band_mean_[0] == pytest.approx((90 + 102) / 17)
    new = np.full((1, 3, 3, 3), 3.0)
    new[0, 0] = 10.0
    new[0, 0, 0, 0] = np.nan
    new[0, 0, 2, 1] = np.inf  # treated as nodata, like NaN
    out = encoder.transform(new)
    fill = ((90 + 102) / 17 - 2) / 20
    assert out[0, 0, 0, 0] == pytest.approx(fill, rel=1e-6)
    assert out[0, 0, 2, 1] == pytest.approx(fill, rel=1e-6)
    assert out[0, 0, 1, 1] == pytest.approx(0.4)


def test_categorical_band_becomes_one_hot_in_place_with_zeros_for_unknown_and_nan():
    encoder = PatchEncoder(categorical=(1,)).fit(_training_patches())
    np.testing.assert_array_equal(encoder.levels_[1], [1.0, 3.0, 7.0])
    assert encoder.n_channels_ == 1 + 3 + 1
    new = np.zeros((1, 3, 1, 4))
    new[0, 1] = [7.0, 3.0, 5.0, np.nan]  # known, known, never seen, nodata
    out = encoder.transform(new)
    assert out.shape == (1, 5, 1, 4)
    np.testing.assert_array_equal(out[0, 1:4, 0].T, [[0, 0, 1], [0, 1, 0], [0, 0, 0], [0, 0, 0]])


def test_constant_band_maps_to_zero():
    encoder = PatchEncoder(categorical=(1,)).fit(_training_patches())
    out = encoder.transform(np.full((1, 3, 3, 3), 5.0))
    np.testing.assert_array_equal(out[0, 4], np.zeros((3, 3)))


def test_transform_block_applies_the_same_rule_as_transform():
    rng = np.random.default_rng(0)
    block = rng.normal(size=(3, 6, 8))
    block[1] = rng.choice([1.0, 3.0, 7.0, 9.0], size=(6, 8))
    block[rng.random(block.shape) < 0.2] = np.nan
    encoder = PatchEncoder(categorical=(1,)).fit(_training_patches())
    out = encoder.transform_block(block)
    assert out.shape == (5, 6, 8)
    # every cell of the block, seen as a 1×1 patch
    as_patches = block.transpose(1, 2, 0).reshape(-1, 3, 1, 1)
    np.testing.assert_array_equal(out.reshape(5, -1).T, encoder.transform(as_patches)[:, :, 0, 0])


def test_state_round_trip_through_json():
    encoder = PatchEncoder(categorical=(1,)).fit(_training_patches())
    config, arrays = encoder.get_state()
    restored = PatchEncoder.from_state(json.loads(json.dumps(config)), arrays)
    new = np.random.default_rng(1).normal(size=(4, 3, 3, 3)) * 10
    np.testing.assert_array_equal(restored.transform(new), encoder.transform(new))


def test_centre_masks():
    patches = np.ones((3, 2, 5, 5))
    patches[1, 1, 2, 2] = np.nan
    patches[2, 0, 0, 0] = np.nan  # off-centre: still valid
    np.testing.assert_array_equal(centre_valid(patches), [True, False, True])
    block = np.ones((2, 6, 7))
    block[0, 0, 0] = np.nan  # in the halo
    block[1, 3, 4] = np.nan  # inner cell (2, 3)
    mask = block_centre_valid(block, halo=1)
    assert mask.shape == (4, 5)
    assert not mask[2, 3] and mask.sum() == 19


def test_bad_input_is_explained():
    with pytest.raises(ValueError, match="Categorical band index 4 does not exist"):
        PatchEncoder(categorical=(4,)).fit(_training_patches())
    patches = _training_patches()
    patches[:, 2] = np.nan
    with pytest.raises(ValueError, match="band 3 has no valid cell"):
        PatchEncoder().fit(patches)
    encoder = PatchEncoder().fit(_training_patches())
    with pytest.raises(ValueError, match="trained on 3"):
        encoder.transform(np.zeros((1, 2, 3, 3)))


def _one_band(values: np.ndarray) -> np.ndarray:
    """Training patches (S, 1, 1, 1) holding `values`."""
    return np.asarray(values, dtype=float).reshape(-1, 1, 1, 1)


def test_quantile_scaling_is_the_empirical_rank_and_extrapolates_one_range_at_most():
    encoder = PatchEncoder().fit(_one_band(np.arange(101.0)))  # percentiles fall on the values themselves
    new = _one_band([0.0, 12.0, 12.5, 100.0, -40.0, 150.0, 200.0, -500.0, 32767.0])
    expected = [0.0, 0.12, 0.125, 1.0, -0.4, 1.5, 2.0, -1.0, 2.0]
    np.testing.assert_allclose(encoder.transform(new).ravel(), expected, atol=1e-6)


def test_quantile_scaling_ignores_units_and_a_few_outliers_where_min_max_collapses():
    rng = np.random.default_rng(3)
    bulk = rng.normal(800.0, 200.0, 5000)
    with_fill_values = bulk.copy()
    with_fill_values[:10] = 32767.0  # unflagged fill values in 0.2 % of the cells
    probe = _one_band(np.quantile(bulk, [0.1, 0.5, 0.9]))
    clean = PatchEncoder().fit(_one_band(bulk)).transform(probe).ravel()
    np.testing.assert_allclose(clean, [0.1, 0.5, 0.9], atol=0.01)
    np.testing.assert_allclose(
        PatchEncoder().fit(_one_band(with_fill_values)).transform(probe).ravel(), clean, atol=0.01
    )
    in_feet = PatchEncoder().fit(_one_band(bulk * 3.28 + 50)).transform(probe * 3.28 + 50).ravel()
    np.testing.assert_allclose(in_feet, clean, atol=1e-9)
    # min-max squeezes the real values into 3 % of the input range
    squeezed = PatchEncoder(scaling="minmax").fit(_one_band(with_fill_values)).transform(probe).ravel()
    assert squeezed.max() - squeezed.min() < 0.03


def test_quantile_ties_share_their_mean_rank():
    values = np.concatenate([np.zeros(500), np.linspace(1.0, 10.0, 500)])  # half the cells are exactly 0
    encoder = PatchEncoder().fit(_one_band(values))
    zero, top = encoder.transform(_one_band([0.0, 10.0])).ravel()
    assert zero == pytest.approx(0.25, abs=0.01)  # the mean of the ranks 0 to 0.5
    assert top == pytest.approx(1.0)


def test_nan_takes_the_rank_of_the_training_mean_under_quantile_scaling():
    values = np.arange(101.0) ** 2  # skewed: the mean (3383.5) sits at rank 0.58
    encoder = PatchEncoder().fit(_one_band(values))
    expected = np.interp(values.mean(), values, np.arange(101) / 100)
    np.testing.assert_allclose(encoder.transform(_one_band([np.nan])).ravel(), [expected], rtol=1e-6)


def test_state_written_before_quantile_scaling_loads_as_min_max():
    encoder = PatchEncoder(categorical=(1,), scaling="minmax").fit(_training_patches())
    config, arrays = encoder.get_state()
    del config["scaling"]  # as in model files from before the quantile scaling
    restored = PatchEncoder.from_state(config, arrays)
    assert restored.scaling == "minmax"
    new = np.random.default_rng(1).normal(size=(4, 3, 3, 3)) * 10
    np.testing.assert_array_equal(restored.transform(new), encoder.transform(new))
    with pytest.raises(ValueError, match="Unknown covariate scaling 'zscore'"):
        PatchEncoder(scaling="zscore")
