"""The model bundle: file round trip, prediction intervals for the forest and the CNNs."""

from __future__ import annotations

import copy
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


def test_random_forest_bundle_round_trip_and_intervals(tmp_path):
    raster = synthetic_raster()
    data = sites(raster, 200, (0, 48), 1, seed=1)
    result = train(data, "random_forest", {"n_trees": 60}, validation="random", folds=4, random_state=3)
    bundle = SocModel.from_training(result, data, GRID)
    path = tmp_path / "rf.socmodel"
    bundle.save(str(path))
    loaded = SocModel.load(str(path))
    assert loaded.band_names == ["a", "b"] and loaded.card.metrics == bundle.card.metrics
    overall = loaded.card.metrics[-1]
    assert overall["rmse_lo"] < overall["rmse"] < overall["rmse_hi"] and 0 < overall["picp"] <= 1
    np.testing.assert_array_equal(loaded.predict_block(raster, [0, 1]), bundle.predict_block(raster, [0, 1]))
    lower, upper = loaded.predict_block_interval(raster, [0, 1], 0.9)
    centre = loaded.predict_block(raster, [0, 1])
    assert np.all(lower <= upper)
    inside = np.mean((lower <= centre) & (centre <= upper))
    assert inside > 0.95  # the mean prediction almost always lies within the 90 % interval
    covered = np.mean((lower <= truth(raster)) & (truth(raster) <= upper))
    assert covered > 0.8


def test_undefined_metrics_are_stored_as_null_in_the_model_file(tmp_path):
    # a depth observed at a single site has no R² nor R: NaN in the metrics, which JSON cannot hold
    raster = synthetic_raster()
    data = sites(raster, 60, (0, 48), 1, seed=2)
    data.targets[1:, 1] = np.nan
    result = train(data, "random_forest", {"n_trees": 10}, validation="random", folds=3)
    assert math.isnan(result.validation.metrics[1]["r2"])
    path = tmp_path / "thin.socmodel"
    SocModel.from_training(result, data, GRID).save(str(path))
    row = SocModel.load(str(path)).card.metrics[1]
    assert row["n"] == 1 and row["r2"] is None and row["rmse"] == row["rmse_lo"] == row["rmse_hi"]


@pytest.fixture(scope="module")
def western_cnn() -> tuple[np.ndarray, SocModel]:
    """A CNN bundle with conformal intervals, trained on 160 sites in the western half of the raster only."""
    raster = synthetic_raster()
    data = sites(raster, 160, (0, 24), 7, seed=2)
    params = {"patch_size": 7, "epochs": 60, "patience": 15, "conv_channels": (4, 8), "dense_units": (16,)}
    params["n_threads"] = 1  # bit-reproducible fits whatever the machine
    # SOC here rises linearly into the unsampled east, a trend that min-max scaled inputs let the fold models
    # extrapolate (each its own way); the default rank scaling holds inputs within one range width past the
    # sampled values, where the fold models disagree less
    params["covariate_scaling"] = "minmax"
    result = train(data, "cnn", params, validation="random", folds=4, random_state=0)
    return raster, SocModel.from_training(result, data, GRID)


def test_cnn_conformal_intervals_widen_away_from_the_training_sites(western_cnn, tmp_path):
    """Sites only in the western half: the fold models agree there and diverge in the east."""
    raster, bundle = western_cnn
    bundle.save(str(tmp_path / "cnn.socmodel"))
    loaded = SocModel.load(str(tmp_path / "cnn.socmodel"))
    assert len(loaded.fold_models) == 4 and len(loaded.conformal_scores) == 2
    halo = np.pad(raster, ((0, 0), (3, 3), (3, 3)), mode="edge")
    lower, upper = loaded.predict_block_interval(halo, [0], 0.9)
    np.testing.assert_array_equal(lower, bundle.predict_block_interval(halo, [0], 0.9)[0])
    width = (upper - lower)[0]
    west, east = width[:, 3:21].mean(), width[:, 30:45].mean()
    assert east > 1.5 * west
    # where the sites are, the 90 % interval covers most of the truth
    west_truth = truth(raster)[0][:, 3:21]
    covered = np.mean((lower[0][:, 3:21] <= west_truth) & (west_truth <= upper[0][:, 3:21]))
    assert covered > 0.75


def test_intervals_of_a_cnn_undershooting_zero_are_raised_to_zero_and_its_maps_left_to_the_run(western_cnn):
    """SOC is never negative: a CNN whose output runs below 0 gets 0 there in its interval bounds; its maps come
    as the model gives them, with the floor of 0 for `core.predict` to apply and count (see test_predict)."""
    raster, trained = western_cnn
    bundle = copy.deepcopy(trained)
    assert bundle.prediction_floor == 0.0  # every training value is >= 0
    for member in [bundle.model, *bundle.fold_models]:
        member.target_mean_ -= 6.0  # pushes about half of the map below 0
    halo = np.pad(raster, ((0, 0), (3, 3), (3, 3)), mode="edge")
    raw = bundle.model.predict_block(halo, [0, 1])
    below = (raw < 0).any(axis=0)
    assert 0.1 < below.mean() < 0.9
    np.testing.assert_array_equal(bundle.predict_block(halo, [0, 1]), raw)  # no transform: the model's values
    maps = np.maximum(raw, bundle.prediction_floor)
    lower, upper = bundle.predict_block_interval(halo, [0, 1], 0.9)
    assert lower.min() == 0.0 and np.all(lower <= maps) and np.all(maps <= upper)


def test_cnn_conformal_intervals_cover_new_observations_at_the_nominal_rate(western_cnn):
    """New sites drawn like the training sites (same area, same noise) fall inside a level-L interval with
    probability about L. Tolerance: 3 binomial standard deviations for the held-out draws plus 3 for the
    calibration set's own sampling (160 out-of-fold scores), sqrt(L (1 - L) (1 / n_new + 1 / n_calibration)).
    Measured over 4 data/seed draws: 0.46-0.64 at 50 %, 0.85-0.96 at 90 %; calibrating on fold models and
    predicting with the final model, which saw more sites, leans to over-coverage. Level 0.5 catches a mix-up
    of the level with the upper quantile (0.75), 0.9 a doubled or halved width."""
    raster, bundle = western_cnn
    new = sites(raster, 1000, (0, 24), 7, seed=10)
    rows, cols = (-new.y).astype(int), new.x.astype(int)
    halo = np.pad(raster, ((0, 0), (3, 3), (3, 3)), mode="edge")
    for level in (0.5, 0.9):
        lower, upper = bundle.predict_block_interval(halo, [0, 1], level)
        for d in range(2):
            observed = new.targets[:, d]
            coverage = np.mean((lower[d][rows, cols] <= observed) & (observed <= upper[d][rows, cols]))
            n_calibration = len(bundle.conformal_scores[d])
            tolerance = 3 * math.sqrt(level * (1 - level) * (1 / len(observed) + 1 / n_calibration))
            assert abs(coverage - level) < tolerance, (level, d, coverage, tolerance)


def test_random_forest_intervals_widen_where_training_sites_are_sparse():
    """300 sites with covariate x in [0, 0.5), 12 in [0.5, 1); SOC rises with x, noise sd 1. Where sites are
    dense, QRF leaves are narrow in x and hold noise only: the 90 % interval is about 2 x 1.645 sd = 3.29 wide
    (measured 2.75-3.3 over 6 seeds). Where they are sparse a leaf spans a wide range of x, and so of SOC, and
    the interval widens (measured 1.4-4.4 times wider over 12 seeds and sparse counts)."""
    rng = np.random.default_rng(0)
    x = np.concatenate([rng.uniform(0, 0.5, 300), rng.uniform(0.5, 1, 12)])
    n = len(x)
    base = 10 + 20 * x
    data = TrainingData(
        site_ids=np.arange(n),
        x=100 * x,
        y=np.zeros(n),
        patches=x.reshape(n, 1, 1, 1).astype(np.float32),
        targets=np.stack([base, 0.5 * base], axis=1) + rng.normal(0, 1, (n, 2)),
        intervals=INTERVALS,
        property_name="SOC",
        band_names=["x"],
    )
    result = train(data, "random_forest", {"n_trees": 100, "n_jobs": 1}, validation="none", random_state=0)
    bundle = SocModel.from_training(result, data, {**GRID, "nodata": [None]})
    block = np.linspace(0.02, 0.98, 200, dtype=np.float32).reshape(1, 1, 200)
    lower, upper = bundle.predict_block_interval(block, [0, 1], 0.9)
    width = (upper - lower)[:, 0]
    dense, sparse = width[:, block[0, 0] < 0.45].mean(axis=1), width[:, block[0, 0] > 0.55].mean(axis=1)
    noise_only = 2 * 1.6449 * 1.0
    assert np.all((0.75 * noise_only < dense) & (dense < 1.15 * noise_only)), dense
    assert np.all(sparse > 1.3 * dense), (sparse, dense)


def test_cnn_without_validation_has_no_intervals_and_says_why():
    raster = synthetic_raster()
    data = sites(raster, 40, (0, 48), 7, seed=4)
    params = {"patch_size": 7, "epochs": 2, "conv_channels": (2, 2), "dense_units": (4,)}
    bundle = SocModel.from_training(train(data, "cnn", params, validation="none"), data, GRID)
    ok, reason = bundle.supports_intervals()
    assert not ok and reason == (
        "This model was trained without cross-validation, so it has no fold models to estimate prediction intervals "
        "from."
    )
    with pytest.raises(ValueError, match="cross-validation"):
        bundle.predict_block_interval(raster, [0], 0.9)


def test_a_model_file_whose_kind_was_edited_is_refused_with_a_message(tmp_path):
    """An edited kind fails the digest; one whose digest was recomputed too is refused when the model is built."""
    import hashlib
    import json
    import zipfile

    from soc_depth_mapper.core.modelfile import ModelFileError

    raster = synthetic_raster(16)
    data = sites(raster, 40, (0, 16), 1, seed=1)
    result = train(data, "random_forest", {"n_trees": 5}, validation="none", random_state=3)
    path = tmp_path / "rf.socmodel"
    SocModel.from_training(result, data, GRID).save(str(path))
    with zipfile.ZipFile(path) as archive:
        members = {name: archive.read(name) for name in archive.namelist()}
    manifest = json.loads(members["manifest.json"])
    manifest["metadata"]["card"]["kind"] = "cnn"
    members["manifest.json"] = json.dumps(manifest).encode()
    members["digest.sha256"] = hashlib.sha256(members["manifest.json"]).hexdigest().encode()
    with zipfile.ZipFile(path, "w") as archive:
        for name, content in members.items():
            archive.writestr(name, content)
    with pytest.raises(ModelFileError) as error:
        SocModel.load(str(path))
    assert str(error.value) == (
        f"'{path}' does not hold a usable cnn model (This model file holds a 'random_forest' model, not 'cnn'.); "
        "it was damaged or edited after saving. Use an intact copy, or train and save the model again."
    )
