import pickle

import numpy as np
import pytest

from soc_depth_mapper.core.metrics import regression_metrics
from soc_depth_mapper.core.modelfile import ModelFileError, load_model_file, save_model_file
from soc_depth_mapper.core.models import forest as forest_module
from soc_depth_mapper.core.models import forest_lookup
from soc_depth_mapper.core.models.base import Cancelled
from soc_depth_mapper.core.models.forest import RandomForestDepthModel

INTERVALS = np.array([[0, 5], [5, 15], [15, 30], [30, 60], [60, 100]], dtype=float)


def _soc(x1: np.ndarray, x2: np.ndarray, intervals: np.ndarray) -> np.ndarray:
    """A smooth, known SOC surface (g/kg): rises with x1, bends with x2, decays with depth."""
    middle = intervals.mean(axis=1)
    return (8 + 10 * x1[:, None] + 6 * np.sin(3 * x2[:, None])) * np.exp(-middle[None, :] / 40)


def _synthetic(n_sites: int, seed: int, noise: float = 0.2, missing: float = 0.1):
    """Sites with two informative covariates and one irrelevant one, as 1x1 patches."""
    rng = np.random.default_rng(seed)
    covariates = rng.uniform(0, 1, (n_sites, 3)).astype(np.float32)
    truth = _soc(covariates[:, 0].astype(float), covariates[:, 1].astype(float), INTERVALS)
    targets = truth + rng.normal(0, noise, truth.shape)
    targets[rng.random(targets.shape) < missing] = np.nan
    return covariates[:, :, None, None], targets, truth


@pytest.fixture(scope="module")
def pooled():
    patches, targets, _ = _synthetic(160, seed=1)
    return RandomForestDepthModel(n_trees=60, random_state=3).fit(patches, targets, INTERVALS)


@pytest.mark.parametrize("per_depth", [False, True])
def test_learns_a_smooth_function_of_covariates_and_depth(per_depth):
    patches, targets, _ = _synthetic(250, seed=1)
    test_patches, _, test_truth = _synthetic(200, seed=2)
    model = RandomForestDepthModel(n_trees=80, per_depth=per_depth).fit(patches, targets, INTERVALS)

    predicted = model.predict(test_patches)

    assert predicted.shape == (200, len(INTERVALS))
    assert len(model.forests_) == (len(INTERVALS) if per_depth else 1)
    assert regression_metrics(test_truth, predicted)["r2"] > 0.9
    # the depth trend is right at every depth, not only overall
    assert np.all(np.diff(predicted.mean(axis=0)) < 0)


def test_the_mean_is_the_average_of_the_trees_own_predictions(pooled):
    patches, _, _ = _synthetic(30, seed=5)
    forest = pooled.forests_[0]
    # sklearn's own tree evaluation, at the third depth interval (top 15, bottom 30 cm)
    x = np.hstack([patches[:, :, 0, 0], np.tile([15, 30], (30, 1))]).astype(np.float32)
    expected = np.mean([tree.predict(x).reshape(len(x), -1)[:, 0] for tree in forest.trees], axis=0)
    np.testing.assert_allclose(pooled.predict(patches)[:, 2], expected, rtol=1e-12)


def test_missing_targets_contribute_no_training_rows():
    patches, targets, _ = _synthetic(50, seed=4, missing=0.3)
    pooled = RandomForestDepthModel(n_trees=5).fit(patches, targets, INTERVALS)
    per_depth = RandomForestDepthModel(n_trees=5, per_depth=True).fit(patches, targets, INTERVALS)
    # a bootstrap draws as many rows as there are, so the root's weight is the number of training rows
    assert pooled.forests_[0].trees[0].weighted_n_node_samples[0] == np.isfinite(targets).sum()
    for d, forest in enumerate(per_depth.forests_):
        assert forest.trees[0].weighted_n_node_samples[0] == np.isfinite(targets[:, d]).sum()


def test_each_leaf_keeps_one_training_response_from_that_leaf(pooled):
    patches, targets, _ = _synthetic(160, seed=1)
    sites, depths = np.nonzero(np.isfinite(targets))
    x = np.hstack([patches[sites, :, 0, 0], INTERVALS[depths]]).astype(np.float32)
    y = targets[sites, depths]
    forest = pooled.forests_[0]
    for t, tree in enumerate(forest.trees[:10]):
        leaves = tree.apply(x)
        for leaf in np.unique(leaves):
            assert forest.leaf_draw[forest.node_offsets[t] + leaf] in set(y[leaves == leaf])
        inner = tree.children_left != -1
        assert np.all(np.isnan(forest.leaf_draw[forest.node_offsets[t] : forest.node_offsets[t + 1]][inner]))


def test_quantiles_of_a_single_leaf_are_those_of_a_uniform_draw_from_its_responses():
    # identical covariates: every tree is one leaf holding all 100 responses 0..99, and each tree keeps one of
    # them uniformly, so the 400 kept values are a sample from the discrete uniform distribution on 0..99
    patches = np.ones((100, 2, 1, 1), dtype=np.float32)
    targets = np.arange(100.0)[:, None]
    model = RandomForestDepthModel(n_trees=400, per_depth=True).fit(patches, targets, INTERVALS[:1])
    assert all(tree.node_count == 1 for tree in model.forests_[0].trees)

    quantiles = model.predict_quantiles(patches[:1], [0.05, 0.5, 0.95])[0, 0]

    # sampling error of a quantile from 400 draws of U{0..99}: sd about 100 * sqrt(q(1-q)/400) <= 2.5
    np.testing.assert_allclose(quantiles, [5, 49.5, 94], atol=8)
    assert len(np.unique(model.forests_[0].leaf_draw)) > 80


def test_prediction_interval_widens_with_the_noise_and_covers_held_out_data():
    def data(n: int, seed: int):
        rng = np.random.default_rng(seed)
        x = rng.uniform(0, 1, (n, 2)).astype(np.float32)
        noise_sd = 0.2 + 3.0 * x[:, 1]  # heteroscedastic: noise grows with the second covariate
        y = 10 + 5 * x[:, 0] + rng.normal(0, 1, n) * noise_sd
        return x[:, :, None, None], y[:, None]

    patches, targets = data(1500, seed=10)
    model = RandomForestDepthModel(n_trees=100, min_samples_leaf=10, per_depth=True)
    model.fit(patches, targets, INTERVALS[:1])
    test_patches, test_targets = data(1000, seed=11)

    lower, median, upper = np.moveaxis(model.predict_quantiles(test_patches, [0.05, 0.5, 0.95])[:, 0], -1, 0)

    covered = (lower <= test_targets[:, 0]) & (test_targets[:, 0] <= upper)
    assert 0.8 <= covered.mean() <= 0.97
    assert np.all(lower <= median) and np.all(median <= upper)
    quiet, noisy = test_patches[:, 1, 0, 0] < 0.2, test_patches[:, 1, 0, 0] > 0.8
    width = upper - lower
    assert np.median(width[noisy]) > 2 * np.median(width[quiet])
    # where the noise is largest (sd about 2.9) the interval is near the true 2 x 1.645 x 2.9 = 9.5
    assert 0.7 * 9.5 < np.median(width[noisy]) < 1.3 * 9.5


def test_predict_block_equals_predict_cell_by_cell_and_leaves_nan_cells_empty(pooled):
    rng = np.random.default_rng(7)
    block = rng.uniform(0, 1, (3, 6, 7)).astype(np.float32)
    block[1, 2, 3] = np.nan  # one band missing in one cell
    block[:, 5, 0] = np.nan  # all bands missing
    patches = block.reshape(3, -1).T[:, :, None, None]

    mean = pooled.predict_block(block)
    quantiles = pooled.predict_block_quantiles(block, [0.1, 0.9])

    assert mean.shape == (len(INTERVALS), 6, 7) and quantiles.shape == (len(INTERVALS), 2, 6, 7)
    assert np.array_equal(mean.reshape(len(INTERVALS), -1).T, pooled.predict(patches), equal_nan=True)
    per_cell = pooled.predict_quantiles(patches, [0.1, 0.9])
    cells_first = quantiles.reshape(len(INTERVALS), 2, -1).transpose(2, 0, 1)
    assert np.array_equal(cells_first, per_cell, equal_nan=True)
    empty = np.isnan(mean)
    assert empty[:, 2, 3].all() and empty[:, 5, 0].all() and empty.sum() == 2 * len(INTERVALS)
    assert np.isnan(quantiles[:, :, 2, 3]).all() and np.isfinite(quantiles[:, :, 0, 0]).all()


@pytest.mark.parametrize("per_depth", [False, True])
def test_a_subset_of_depths_gives_those_depths_maps(pooled, per_depth):
    model = pooled
    if per_depth:
        patches, targets, _ = _synthetic(80, seed=9)
        model = RandomForestDepthModel(n_trees=20, per_depth=True, random_state=3).fit(patches, targets, INTERVALS)
    block = np.random.default_rng(10).uniform(0, 1, (3, 5, 6)).astype(np.float32)
    assert np.array_equal(model.predict_block(block, [4, 0]), model.predict_block(block)[[4, 0]])
    subset = model.predict_block_quantiles(block, [0.1, 0.9], [2])
    assert np.array_equal(subset, model.predict_block_quantiles(block, [0.1, 0.9])[[2]])


def test_larger_patches_use_their_centre_cell(pooled):
    rng = np.random.default_rng(8)
    patches = rng.uniform(0, 1, (20, 3, 3, 3)).astype(np.float32)
    patches[:, :, 0, 0] = np.nan  # off-centre gaps do not matter
    assert pooled.patch_size == 1
    assert np.array_equal(pooled.predict(patches), pooled.predict(patches[:, :, 1:2, 1:2]))


@pytest.mark.parametrize("per_depth", [False, True])
def test_model_file_round_trip_is_bit_identical(tmp_path, per_depth):
    patches, targets, _ = _synthetic(80, seed=6)
    model = RandomForestDepthModel(n_trees=15, per_depth=per_depth, random_state=1)
    model.fit(patches, targets, INTERVALS, categorical=(2,))
    path = tmp_path / "forest.socmodel"
    save_model_file(path, *model.get_state())

    loaded = RandomForestDepthModel.from_state(*load_model_file(path))

    test_patches, _, _ = _synthetic(50, seed=9)
    block = test_patches[:, :, 0, 0].T.reshape(3, 5, 10)
    assert np.array_equal(loaded.predict(test_patches), model.predict(test_patches))
    assert np.array_equal(
        loaded.predict_quantiles(test_patches, [0.05, 0.5, 0.95]),
        model.predict_quantiles(test_patches, [0.05, 0.5, 0.95]),
    )
    assert np.array_equal(loaded.predict_block(block), model.predict_block(block))
    assert loaded.get_params() == model.get_params()
    assert loaded.categorical_ == (2,) and np.array_equal(loaded.intervals_, INTERVALS)
    # the rebuilt trees are complete scikit-learn trees: their own predictions agree too
    x = test_patches[:, :, 0, 0].astype(np.float32)
    if not per_depth:
        x = np.hstack([x, np.tile(INTERVALS[0], (50, 1))]).astype(np.float32)
    for before, after in zip(model.forests_[0].trees, loaded.forests_[0].trees):
        assert np.array_equal(before.predict(x), after.predict(x))
        assert np.array_equal(before.compute_feature_importances(), after.compute_feature_importances())


def _state_with(model, field: str, change) -> tuple[dict, dict]:
    config, arrays = model.get_state()
    arrays = {name: value.copy() for name, value in arrays.items()}
    change(arrays[f"forest0.{field}"])
    return config, arrays


@pytest.mark.parametrize(
    ("field", "change"),
    [
        ("children_left", lambda a: a.__setitem__(0, 10**6)),  # points outside the tree
        ("children_right", lambda a: a.__setitem__(0, 0)),  # points to itself: a cycle
        ("feature", lambda a: a.__setitem__(0, 99)),  # an unknown predictor
        ("leaf_draw", lambda a: a.__setitem__(np.flatnonzero(np.isfinite(a))[0], np.nan)),
        ("node_offsets", lambda a: a.__setitem__(-1, a[-1] - 1)),
    ],
)
def test_damaged_trees_are_refused_before_scikit_learn_walks_them(pooled, field, change):
    with pytest.raises(ModelFileError, match="damaged.*Train and save the model again"):
        RandomForestDepthModel.from_state(*_state_with(pooled, field, change))


def test_missing_arrays_or_another_kind_are_refused(pooled):
    config, arrays = pooled.get_state()
    with pytest.raises(ModelFileError, match="incomplete or damaged"):
        incomplete = {name: value for name, value in arrays.items() if not name.endswith("threshold")}
        RandomForestDepthModel.from_state(config, incomplete)
    with pytest.raises(ModelFileError, match="holds a 'cnn' model"):
        RandomForestDepthModel.from_state({**config, "kind": "cnn"}, arrays)


def test_tuning_picks_the_best_pair_of_the_grid_and_records_it(monkeypatch):
    monkeypatch.setattr(forest_module, "TUNE_MAX_FEATURES", (0.2, 1.0))
    monkeypatch.setattr(forest_module, "TUNE_MIN_SAMPLES_LEAF", (2, 60))
    monkeypatch.setattr(forest_module, "TUNE_TREES", 15)
    # SOC driven by band 0 only, among four irrelevant bands: splits must see band 0 (all predictors) and
    # follow the sharp signal (small leaves)
    rng = np.random.default_rng(12)
    covariates = rng.uniform(0, 1, (150, 5)).astype(np.float32)
    targets = (20 * np.sin(6 * covariates[:, :1]) + rng.normal(0, 0.3, (150, 2))) * [1.0, 0.5]
    messages = []

    model = RandomForestDepthModel(n_trees=10, tune=True, random_state=2)
    model.fit(covariates[:, :, None, None], targets, INTERVALS[:2], progress=lambda f, m: messages.append(m))

    # 7 predictors (5 bands + top + bottom): shares 0.2 and 1.0 -> 1 and 7 predictors per split
    grid = [(f, leaf) for f in (1, 7) for leaf in (2, 60)]
    assert [(s["max_features"], s["min_samples_leaf"]) for s in model.tuning_scores_] == grid
    best = min(model.tuning_scores_, key=lambda s: s["rmse"])
    assert model.best_params_ == {"max_features": 7, "min_samples_leaf": 2}
    assert (best["max_features"], best["min_samples_leaf"]) == (7, 2)
    assert sum("Tuning" in m for m in messages) == 4
    # the final forest is grown with the chosen leaf size
    tree = model.forests_[0].trees[0]
    assert tree.n_node_samples[tree.children_left == -1].min() >= 2


def test_tuning_candidates_scored_elsewhere_and_in_any_order_give_the_same_choice(monkeypatch):
    """What a cluster does to the grid: each candidate's scoring pickled and run apart, the last first."""
    monkeypatch.setattr(forest_module, "TUNE_TREES", 10)
    patches, targets, _ = _synthetic(60, seed=21)
    scored_order = []

    def reversed_and_apart(score, candidates):
        scores = {}
        for candidate in reversed(candidates):
            scored_order.append(candidate)
            scores[candidate] = pickle.loads(pickle.dumps(score))(candidate)
        return [scores[candidate] for candidate in candidates]

    here = RandomForestDepthModel(n_trees=10, tune=True, random_state=4).fit(patches, targets, INTERVALS)
    apart = RandomForestDepthModel(n_trees=10, tune=True, random_state=4).fit(
        patches, targets, INTERVALS, map_candidates=reversed_and_apart
    )
    grid = [(s["max_features"], s["min_samples_leaf"]) for s in here.tuning_scores_]
    assert scored_order == grid[::-1] and len(grid) == 12  # 5 predictors: 1, 3, 5 per split x 4 leaf sizes
    assert apart.tuning_scores_ == here.tuning_scores_ and apart.best_params_ == here.best_params_
    assert len({s["rmse"] for s in here.tuning_scores_}) > 1
    many, _, _ = _synthetic(200, seed=22)
    assert np.array_equal(apart.predict_quantiles(many, [0.1, 0.9]), here.predict_quantiles(many, [0.1, 0.9]))


def test_tuning_folds_keep_all_depths_of_a_site_together():
    targets = np.ones((23, 3))
    targets[4] = np.nan  # a site without data takes no part
    folds = forest_module._site_folds(targets, 5, np.random.default_rng(0))
    assert folds[4] == -1
    assert sorted(np.bincount(folds[folds >= 0])) == [4, 4, 4, 5, 5]  # 22 sites in 5 balanced folds


def test_same_seed_same_forest_whatever_the_threads(monkeypatch):
    patches, targets, _ = _synthetic(80, seed=13)
    many, _, _ = _synthetic(3000, seed=17)  # 3000 rows x 20 trees: leaf lookups run in a thread pool
    runs = [
        RandomForestDepthModel(n_trees=20, random_state=5, n_jobs=jobs).fit(patches, targets, INTERVALS)
        for jobs in (1, 2, 1)
    ]
    other = RandomForestDepthModel(n_trees=20, random_state=6).fit(patches, targets, INTERVALS)
    outputs = [m.predict_quantiles(many, [0.1, 0.9]) for m in runs]
    one_pass = runs[0].predict(many)
    assert np.array_equal(one_pass, runs[1].predict(many))
    assert np.array_equal(outputs[0], outputs[1]) and np.array_equal(outputs[0], outputs[2])
    assert not np.array_equal(one_pass, other.predict(many))
    # pieces of 7 rows, spread over two threads, give the same numbers as one pass, for means and quantiles
    monkeypatch.setattr(forest_lookup, "MEAN_PIECE_ROWS", 7)
    monkeypatch.setattr(forest_lookup, "LOOKUP_BUDGET", 20 * 2 * 7)
    assert np.array_equal(runs[1].predict(many), one_pass)
    assert np.array_equal(runs[1].predict_quantiles(many, [0.1, 0.9]), outputs[0])


def test_trees_specialised_for_one_interval_give_the_full_trees_numbers(pooled):
    """The pooled forest walks trees with the depth splits resolved; every row must reach the same leaf."""
    patches, _, _ = _synthetic(500, seed=21)
    forest = pooled.forests_[0]
    rows = patches[:, :, 0, 0].astype(np.float32)
    quantiles = np.array([0.05, 0.5, 0.95])
    for top, bottom in INTERVALS:
        full = np.hstack([rows, np.tile([top, bottom], (len(rows), 1))]).astype(np.float32)
        leaves = forest.leaf_ids(full, 1)
        np.testing.assert_array_equal(
            forest.predict(rows, None, 1, fixed=(top, bottom)), forest.value[leaves].mean(axis=1)
        )
        np.testing.assert_array_equal(
            forest.predict(rows, quantiles, 1, fixed=(top, bottom)),
            np.quantile(forest.leaf_draw[leaves], quantiles, axis=1).T,
        )
        specialised = forest._lookup((top, bottom))
        assert sum(t.node_count for t in specialised.trees) < forest.node_offsets[-1]


def test_progress_is_reported_per_forest_and_can_cancel():
    patches, targets, _ = _synthetic(40, seed=14)
    calls = []
    RandomForestDepthModel(n_trees=3, per_depth=True).fit(
        patches, targets, INTERVALS, progress=lambda f, m: calls.append(f)
    )
    assert calls == [0.0, 0.2, 0.4, 0.6, 0.8, 1.0]

    with pytest.raises(Cancelled):
        RandomForestDepthModel(n_trees=3, per_depth=True).fit(
            patches, targets, INTERVALS, progress=lambda f, m: f < 0.3
        )


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"max_features": 0}, "max_features must be a count"),
        ({"max_features": 1.5}, "max_features must be a count"),
        ({"n_trees": 0}, "Number of trees"),
        ({"min_samples_leaf": 2.5}, "Minimum samples per leaf"),
    ],
)
def test_bad_settings_are_explained(params, message):
    patches, targets, _ = _synthetic(20, seed=15)
    with pytest.raises(ValueError, match=message):
        RandomForestDepthModel(**params).fit(patches, targets, INTERVALS)


def test_bad_inputs_are_explained(pooled):
    patches, targets, _ = _synthetic(20, seed=16)
    with pytest.raises(ValueError, match="trained on 3 covariate bands but got 2"):
        pooled.predict(patches[:, :2])
    with pytest.raises(ValueError, match="3 covariate bands"):
        pooled.predict_block(np.zeros((4, 2, 2), np.float32))
    with pytest.raises(ValueError, match="one column per interval"):
        RandomForestDepthModel().fit(patches, targets[:, :2], INTERVALS)
    targets[:, 4] = np.nan
    with pytest.raises(ValueError, match="No site has a value for 60-100 cm"):
        RandomForestDepthModel(n_trees=2, per_depth=True).fit(patches, targets, INTERVALS)
    with pytest.raises(ValueError, match="Quantiles must be between 0 and 1"):
        pooled.predict_quantiles(patches, [5, 95])


@pytest.mark.parametrize(
    ("max_features", "n_predictors", "count"),
    [
        (1 / 3, 8, 2),
        (1 / 3, 6, 2),
        (1 / 3, 9, 3),
        (0.05, 8, 1),
        (1.0, 8, 8),
        (0.5, 7, 3),
        (12, 8, 8),
        (3, 8, 3),
        (0.57, 100, 57),
    ],
)
def test_max_features_share_is_rounded_down_like_p_over_3(max_features, n_predictors, count):
    assert forest_module._feature_count(max_features, n_predictors) == count
