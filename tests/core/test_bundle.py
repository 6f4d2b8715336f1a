"""The model bundle: file round trip, prediction intervals for the forest and the CNNs."""

from __future__ import annotations

import math

import numpy as np
import pytest

from soc_depth_mapper.core.bundle import SocModel
from soc_depth_mapper.core.training import TrainingData, train

INTERVALS = np.array([[0.0, 10.0], [10.0, 30.0]])


def synthetic_raster(size: int = 48, seed: int = 0) -> np.ndarray:
    """Two smooth covariates: a west-east gradient and a north-south wave."""
    rows, cols = np.mgrid[0:size, 0:size].astype(np.float32)
    rng = np.random.default_rng(seed)
    return np.stack([cols / size, np.sin(rows / 6.0) + 0.05 * rng.standard_normal((size, size))]).astype(np.float32)


def truth(raster: np.ndarray) -> np.ndarray:
    """SOC at two depths as a known function of the covariates (g/kg)."""
    base = 10 + 8 * raster[0] + 3 * raster[1]
    return np.stack([base, 0.5 * base])


def sites(raster: np.ndarray, n: int, cols: tuple[int, int], patch: int, seed: int) -> TrainingData:
    rng = np.random.default_rng(seed)
    r = patch // 2
    size = raster.shape[1]
    row = rng.integers(r, size - r, n)
    col = rng.integers(max(cols[0], r), min(cols[1], size - r), n)
    offsets = np.arange(-r, r + 1)
    patches = raster[:, row[:, None, None] + offsets[None, :, None], col[:, None, None] + offsets[None, None, :]]
    targets = truth(raster)[:, row, col].T + rng.normal(0, 0.3, (n, 2))
    return TrainingData(
        site_ids=np.arange(n),
        x=col.astype(float),
        y=-row.astype(float),
        patches=patches.transpose(1, 0, 2, 3),
        targets=targets,
        intervals=INTERVALS,
        property_name="SOC",
        band_names=["a", "b"],
    )


GRID = {"crs_wkt": "", "transform": [0, 1, 0, 0, 0, -1], "res": [1.0, 1.0], "nodata": [None, None]}


def test_conformal_quantile_is_the_finite_sample_rank():
    scores = np.arange(1.0, 20.0)  # 19 sorted scores
    assert SocModel.conformal_quantile(scores, 0.9) == 18.0  # ceil(20 * 0.9) = 18th smallest
    assert SocModel.conformal_quantile(scores, 0.99) == 19.0  # capped at the largest
    assert math.isnan(SocModel.conformal_quantile(np.array([]), 0.9))


def test_random_forest_bundle_round_trip_and_intervals(tmp_path):
    raster = synthetic_raster()
    data = sites(raster, 200, (0, 48), 1, seed=1)
    result = train(data, "random_forest", {"n_trees": 60}, validation="random", folds=4, random_state=3)
    bundle = SocModel.from_training(result, data, GRID)
    path = tmp_path / "rf.socmodel"
    bundle.save(str(path))
    loaded = SocModel.load(str(path))
    assert loaded.band_names == ["a", "b"] and loaded.metadata["metrics"] == bundle.metadata["metrics"]
    np.testing.assert_array_equal(loaded.predict_block(raster, [0, 1]), bundle.predict_block(raster, [0, 1]))
    lower, upper = loaded.predict_block_interval(raster, [0, 1], 0.9)
    centre = loaded.predict_block(raster, [0, 1])
    assert np.all(lower <= upper)
    inside = np.mean((lower <= centre) & (centre <= upper))
    assert inside > 0.95  # the mean prediction almost always lies within the 90 % interval
    covered = np.mean((lower <= truth(raster)) & (truth(raster) <= upper))
    assert covered > 0.8


def test_cnn_conformal_intervals_widen_away_from_the_training_sites(tmp_path):
    """Sites only in the western half: the fold models agree there and diverge in the east."""
    raster = synthetic_raster()
    data = sites(raster, 160, (0, 24), 7, seed=2)
    params = {"patch_size": 7, "epochs": 60, "patience": 15, "conv_channels": (4, 8), "dense_units": (16,)}
    result = train(data, "cnn", params, validation="random", folds=4, random_state=0)
    bundle = SocModel.from_training(result, data, GRID)
    bundle.save(str(tmp_path / "cnn.socmodel"))
    loaded = SocModel.load(str(tmp_path / "cnn.socmodel"))
    assert len(loaded.fold_models) == 4 and len(loaded.conformal_scores) == 2
    halo = np.pad(raster, ((0, 0), (3, 3), (3, 3)), mode="edge")
    centre = loaded.predict_block(halo, [0])[0]
    lower, upper = loaded.predict_block_interval(halo, [0], 0.9)
    np.testing.assert_array_equal(lower, bundle.predict_block_interval(halo, [0], 0.9)[0])
    assert np.all(lower[0] <= centre + 1e-5) and np.all(centre <= upper[0] + 1e-5)
    width = (upper - lower)[0]
    west, east = width[:, 3:21].mean(), width[:, 30:45].mean()
    assert east > 1.5 * west
    # where the sites are, the 90 % interval covers most of the truth
    west_truth = truth(raster)[0][:, 3:21]
    covered = np.mean((lower[0][:, 3:21] <= west_truth) & (west_truth <= upper[0][:, 3:21]))
    assert covered > 0.75


def test_cnn_without_validation_has_no_intervals_and_says_why():
    raster = synthetic_raster()
    data = sites(raster, 40, (0, 48), 7, seed=4)
    params = {"patch_size": 7, "epochs": 2, "conv_channels": (2, 2), "dense_units": (4,)}
    bundle = SocModel.from_training(train(data, "cnn", params, validation="none"), data, GRID)
    ok, reason = bundle.supports_intervals()
    assert not ok and "Retrain it with validation" in reason
    with pytest.raises(ValueError, match="cross-validation"):
        bundle.predict_block_interval(raster, [0], 0.9)
