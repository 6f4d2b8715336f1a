"""The area of applicability: DI and threshold against a hand-computed case and a brute-force second
implementation, weights against the model's permutation importance, and the reference through the model file."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from soc_depth_mapper.core.aoa import AoaReference, DissimilarityIndex, permutation_importance, upper_whisker
from soc_depth_mapper.core.bundle import SocModel
from soc_depth_mapper.core.training import CrossValidation, TrainingData, TrainingResult, train

DATA = Path(__file__).resolve().parents[1] / "data"
GRID = {"crs_wkt": "EPSG:28355", "transform": [0, 250, 0, 0, 0, -250], "res": [250, 250], "nodata": [None, None]}


def test_hand_computed_one_band_case():
    """Sites 0, 1, 2, 3, 10 in folds 0, 1, 0, 1, 0. DI is a ratio of distances, so the scaling cancels: the mean
    of the 10 pairwise distances is 44 / 10 = 4.4; nearest sites of the other fold are 1, 1, 1, 1 and 7 away;
    Q25 = Q75 = 1 / 4.4, so the threshold is 1 / 4.4 (below the maximum, 7 / 4.4)."""
    reference = AoaReference.of_training(
        np.array([[0.0], [1.0], [2.0], [3.0], [10.0]]), (), np.array([0.7]), np.array([0, 1, 0, 1, 0])
    )
    scale = np.std([0, 1, 2, 3, 10], ddof=1)
    assert reference.mean_distance == pytest.approx(4.4 / scale * 0.7)
    np.testing.assert_allclose(reference.training_di, np.array([1, 1, 1, 1, 7]) / 4.4)
    assert reference.threshold == pytest.approx(1 / 4.4)
    index = DissimilarityIndex(reference)
    np.testing.assert_allclose(index.di(np.array([[2.5], [20.0], [-1.0]])), np.array([0.5, 10, 1]) / 4.4)
    # LPD: the sites closer than threshold · mean distance = 1: 2 and 3 for 2.5, none for 20, 0 for -0.2, and
    # 1 and 2 for 1.5 (0 and 3 are 1.5 away)
    np.testing.assert_array_equal(index.lpd(np.array([[2.5], [20.0], [-0.2], [1.5]])), [2, 0, 1, 2])


def test_threshold_is_the_upper_whisker_or_the_maximum():
    # R: quantile(c(1, 2, 3, 4, 100), c(.25, .75)) = 2, 4 -> 4 + 1.5 * 2 = 7
    assert upper_whisker(np.array([1.0, 2, 3, 4, 100])) == pytest.approx(7.0)
    assert upper_whisker(np.array([1.0, 2, 3, 4, 5])) == 5.0  # 4 + 3 = 7 > max


def brute_force_reference(values, categorical, importance, folds):
    """A second implementation, straight from the definitions, with full distance matrices and loops."""
    columns, weights = [], []
    for band in range(values.shape[1]):
        if band in categorical:
            for level in sorted(set(values[:, band])):
                columns.append((values[:, band] == level).astype(float))
                weights.append(importance[band])
        else:
            columns.append(values[:, band])
            weights.append(importance[band])
    x = np.array(columns).T
    mean = x.sum(axis=0) / len(x)
    sd = np.sqrt(((x - mean) ** 2).sum(axis=0) / (len(x) - 1))
    z = (x - mean) / sd * np.array(weights)
    n = len(z)
    distance = np.array([[np.sqrt(((z[i] - z[j]) ** 2).sum()) for j in range(n)] for i in range(n)])
    mean_distance = distance[~np.eye(n, dtype=bool)].mean()
    nearest = np.array([distance[i, folds != folds[i]].min() for i in range(n)])
    di = nearest / mean_distance
    ordered = np.sort(di)

    def type7(p):
        h = (n - 1) * p
        return ordered[int(np.floor(h))] + (h - np.floor(h)) * (ordered[int(np.ceil(h))] - ordered[int(np.floor(h))])

    threshold = min(type7(0.75) + 1.5 * (type7(0.75) - type7(0.25)), ordered[-1])
    levels = {b: sorted(set(values[:, b])) for b in categorical}

    def encode(points):
        out = []
        for band in range(values.shape[1]):
            if band in categorical:
                out += [(points[:, band] == level).astype(float) for level in levels[band]]
            else:
                out.append(points[:, band])
        return (np.array(out).T - mean) / sd * np.array(weights)

    def di_of(points):
        encoded = encode(points)
        return np.array([np.sqrt(((z - p) ** 2).sum(axis=1)).min() for p in encoded]) / mean_distance

    def lpd_of(points):
        encoded = encode(points)
        return np.array([(np.sqrt(((z - p) ** 2).sum(axis=1)) / mean_distance < threshold).sum() for p in encoded])

    return mean_distance, di, threshold, di_of, lpd_of


@pytest.mark.parametrize(
    ("categorical", "importance"),
    [
        ((2,), [0.4, 0.0, 1.3, 0.2]),  # the class band weighs most: its classes are far apart
        ((2,), [1.0, 0.5, 0.02, 0.8]),  # it weighs little: the nearest site is often of another class
        ((2, 4), [0.3, 0.6, 0.1, 0.2, 0.4]),  # two class bands, the second one's classes searched by tree
        ((), [0.3, 0.6, 0.1, 0.2, 0.4]),  # none
    ],
)
def test_di_threshold_and_lpd_equal_a_brute_force_implementation(categorical, importance):
    rng = np.random.default_rng(11)
    n = 150
    values = np.column_stack(
        [
            rng.normal(100, 30, n),
            rng.uniform(0, 1, n),
            rng.integers(1, 5, n).astype(float),
            rng.lognormal(0, 1, n),
            rng.integers(0, 3, n).astype(float),
        ]
    )[:, : len(importance)]
    importance = np.array(importance)
    folds = rng.integers(0, 5, n)
    reference = AoaReference.of_training(values, categorical, importance, folds)
    mean_distance, di, threshold, di_of, lpd_of = brute_force_reference(values, categorical, importance, folds)
    assert reference.mean_distance == pytest.approx(mean_distance, rel=1e-12)
    np.testing.assert_allclose(reference.training_di, di, rtol=1e-12)
    assert reference.threshold == pytest.approx(threshold, rel=1e-12)
    new = np.column_stack(
        [
            rng.normal(110, 50, 400),
            rng.uniform(-1, 2, 400),
            rng.integers(0, 6, 400),  # class codes 0 and 5 were never seen in training
            rng.lognormal(0, 1.5, 400),
            rng.integers(0, 4, 400),  # nor 3 here
        ]
    )[:, : len(importance)]
    index = DissimilarityIndex(reference)
    np.testing.assert_allclose(index.di(new), di_of(new), rtol=1e-10)
    np.testing.assert_array_equal(index.lpd(new), lpd_of(new))
    assert 0 < (index.di(new) <= reference.threshold).mean() < 1  # the test data straddle the threshold


def test_a_pixel_equal_to_a_training_site_has_di_zero():
    rng = np.random.default_rng(5)
    values = np.column_stack([rng.normal(0, 1, 40), rng.integers(0, 3, 40).astype(float), rng.normal(5, 2, 40)])
    reference = AoaReference.from_dict(
        AoaReference.of_training(values, (1,), np.array([1.0, 0.5, 2.0]), np.arange(40) % 4).to_dict()
    )
    assert np.all(DissimilarityIndex(reference).di(values) == 0.0)


def duplicated_sites_with_classes(rng, n=300):
    """Sites on a coarse grid (many ties between distances) with a class band, a quarter of them repeated."""
    values = np.column_stack(
        [rng.integers(0, 4, n), rng.integers(0, 3, n), rng.integers(1, 4, n), rng.normal(0, 1, n)]
    ).astype(float)
    values[: n // 4] = values[n // 4 : n // 2]
    return values


def test_ties_duplicates_and_twins_equal_the_brute_force_implementation():
    """Duplicated sites, and points on the sites' grid, put several sites at exactly the nearest distance, in the
    point's own class and in others; the class band splits the search and weighs little, so other classes are
    searched too."""
    rng = np.random.default_rng(21)
    values = duplicated_sites_with_classes(rng)
    importance = np.array([1.0, 0.8, 0.3, 0.05])
    folds = rng.integers(0, 4, len(values))
    reference = AoaReference.of_training(values, (2,), importance, folds)
    *_, di_of, lpd_of = brute_force_reference(values, (2,), importance, folds)
    on_grid = np.column_stack(
        [rng.integers(-1, 5, 500), rng.integers(0, 4, 500), rng.integers(0, 5, 500), np.round(rng.normal(0, 1, 500))]
    ).astype(float)
    points = np.concatenate([values, on_grid])
    index = DissimilarityIndex(reference)
    di = index.di(points)
    np.testing.assert_allclose(di, di_of(points), rtol=1e-12, atol=1e-15)
    assert np.all(di[: len(values)] == 0.0)  # every site's twin, also of a duplicated site
    np.testing.assert_array_equal(index.lpd(points), lpd_of(points))


def test_di_and_lpd_are_the_same_bits_whatever_the_blocks():
    """A point's DI must not depend on the other points of its call (blocks of a map are laid out by memory and
    time): random splits of the points give bit-identical values."""
    rng = np.random.default_rng(4)
    values = duplicated_sites_with_classes(rng)
    reference = AoaReference.of_training(values, (2,), np.array([1.0, 0.8, 2.0, 0.5]), rng.integers(0, 4, 300))
    index = DissimilarityIndex(reference)
    points = np.column_stack(
        [rng.uniform(-1, 5, 3000), rng.uniform(0, 3, 3000), rng.integers(0, 5, 3000), rng.normal(0, 2, 3000)]
    )
    points[::7] = values[rng.integers(0, 300, len(points[::7]))]
    whole_di, whole_lpd = index.di(points), index.lpd(points)
    for blocks in (2, 17, 1000):
        order = rng.permutation(len(points))
        di, lpd = np.empty_like(whole_di), np.empty_like(whole_lpd)
        for part in np.array_split(order, blocks):
            di[part], lpd[part] = index.di(points[part]), index.lpd(points[part])
        assert di.tobytes() == whole_di.tobytes()
        np.testing.assert_array_equal(lpd, whole_lpd)


def test_bands_without_importance_weigh_one_each_and_negative_importance_counts_as_zero():
    values = np.array([[0.0, 0.0], [1.0, 5.0], [2.0, 1.0], [4.0, 2.0]])
    unweighted = AoaReference.of_training(values, (), np.zeros(2), np.array([0, 1, 0, 1]))
    ones = AoaReference.of_training(values, (), np.ones(2), np.array([0, 1, 0, 1]))
    assert unweighted.weights == (1.0, 1.0) and unweighted.importance == (0.0, 0.0)
    assert unweighted.training_di == ones.training_di and unweighted.threshold == ones.threshold
    negative = AoaReference.of_training(values, (), np.array([-0.5, 2.0]), np.array([0, 1, 0, 1]))
    assert negative.importance == (0.0, 2.0) and negative.weights == (0.0, 2.0)


class LinearOnBandZero:
    """Predicts `slope` · band 0 at every depth: band 1 is never read."""

    def __init__(self, slope: float, depths: int = 2) -> None:
        self.slope, self.depths = slope, depths

    def predict(self, patches: np.ndarray) -> np.ndarray:
        return np.repeat(self.slope * patches[:, :1, 0, 0], self.depths, axis=1)


def test_permutation_importance_against_its_definition():
    rng = np.random.default_rng(2)
    n = 30
    patches = rng.normal(0, 1, (n, 2, 1, 1))
    targets = 2.0 * patches[:, 0, 0, 0, None] + rng.normal(0, 0.1, (n, 2))
    targets[::4, 1] = np.nan
    folds = np.arange(n) % 3
    models = [LinearOnBandZero(2.0 + k / 10) for k in range(3)]
    importance = permutation_importance(models, patches, targets, folds, repeats=2, seed=9)

    # brute force: the documented draw order (repeat, band, fold), one site at a time
    def rmse(predictions):
        observed = ~np.isnan(targets)
        return np.sqrt(np.mean((predictions[observed] - targets[observed]) ** 2))

    def oof(shuffle=None):
        predictions = np.full(targets.shape, np.nan)
        for k in range(3):
            test = np.flatnonzero(folds == k)
            for position, site in enumerate(test):
                patch = patches[site].copy()
                if shuffle is not None:
                    band, orders = shuffle
                    patch[band] = patches[test[orders[k][position]], band]
                predictions[site] = models[k].predict(patch[np.newaxis])[0]
        return predictions

    rng_oracle = np.random.default_rng(9)
    expected = np.zeros(2)
    for _ in range(2):
        orders = [[rng_oracle.permutation(int((folds == k).sum())) for k in range(3)] for _ in range(2)]
        for band in range(2):
            expected[band] += rmse(oof((band, orders[band]))) - rmse(oof())
    np.testing.assert_allclose(importance, np.maximum(expected / 2, 0), rtol=1e-12)
    assert importance[0] > 1.0 and importance[1] == 0.0  # the unused band: exactly no increase


@pytest.fixture(scope="module")
def training_data() -> TrainingData:
    rng = np.random.default_rng(3)
    n = 80
    covariates = np.column_stack([rng.uniform(0, 1, n), rng.uniform(0, 1, n), rng.integers(1, 4, n)])
    targets = np.stack([10 + 8 * covariates[:, 0], 4 + 3 * covariates[:, 0]], axis=1) + rng.normal(0, 0.2, (n, 2))
    return TrainingData(
        site_ids=np.arange(n),
        x=rng.uniform(0, 5000, n),
        y=rng.uniform(0, 5000, n),
        patches=covariates.reshape(n, 3, 1, 1).astype(np.float32),
        targets=targets,
        intervals=np.array([[0.0, 5.0], [5.0, 15.0]]),
        property_name="ORCDRC",
        band_names=["cov_a", "cov_noise", "cov_class"],
        categorical=(2,),
    )


@pytest.fixture(scope="module")
def forest(training_data) -> SocModel:
    params = {"n_trees": 30, "n_jobs": 1}
    result = train(training_data, "random_forest", params, validation="random", folds=4, random_state=7)
    return SocModel.from_training(result, training_data, GRID), result


def test_training_weights_are_the_fold_models_permutation_importance(forest, training_data):
    bundle, result = forest
    reference = AoaReference.from_dict(bundle.card.aoa_reference)
    cv = result.validation
    expected = permutation_importance(cv.fold_models, training_data.patches, training_data.targets, cv.folds, seed=7)
    assert reference.importance == pytest.approx(tuple(expected), rel=1e-12)
    assert expected[0] > 5 * expected[1]  # the informative band outweighs the noise
    # columns: cov_a, cov_noise, then one dummy per class 1, 2, 3, each with the class band's weight
    assert reference.weights == pytest.approx((expected[0], expected[1], expected[2], expected[2], expected[2]))
    assert reference.levels == ((1.0, 2.0, 3.0),)
    mean_distance, di, threshold, *_ = brute_force_reference(
        training_data.patches[:, :, 0, 0].astype(float), (2,), expected, cv.folds
    )
    assert reference.mean_distance == pytest.approx(mean_distance) and reference.threshold == pytest.approx(threshold)


def test_the_reference_survives_the_model_file(forest, tmp_path):
    bundle, _ = forest
    path = tmp_path / "rf.socmodel"
    bundle.save(str(path))
    loaded = SocModel.load(str(path))
    assert loaded.card.aoa_reference == bundle.card.aoa_reference
    points = np.random.default_rng(0).uniform(0, 1.5, (50, 3))
    np.testing.assert_array_equal(loaded.dissimilarity_index().di(points), bundle.dissimilarity_index().di(points))


def test_without_validation_or_in_an_old_file_there_is_no_aoa_and_asking_says_why(training_data):
    result = train(training_data, "random_forest", {"n_trees": 10, "n_jobs": 1}, validation="none")
    bundles = [SocModel.from_training(result, training_data, GRID), SocModel.load(str(DATA / "release_rf.socmodel"))]
    for bundle in bundles:
        assert bundle.card.aoa_reference is None
        with pytest.raises(ValueError, match="holds no area of applicability.*Retrain it with Validation"):
            bundle.dissimilarity_index()


def test_bad_reference_inputs_name_the_problem():
    with pytest.raises(ValueError, match="at least 2 training sites"):
        AoaReference.of_training(np.ones((1, 2)), (), np.ones(2), np.zeros(1))
    with pytest.raises(ValueError, match="mean distance 0"):
        AoaReference.of_training(np.ones((4, 2)), (), np.ones(2), np.array([0, 1, 0, 1]))
    reference = AoaReference.of_training(np.eye(3), (), np.ones(3), np.array([0, 1, 2]))
    with pytest.raises(ValueError, match="have 2 bands but the area of applicability was computed on 3"):
        DissimilarityIndex(reference).di(np.ones((5, 2)))


class CentreOfBandOne:
    """A 3 x 3 patch model reading only band 1's centre cell."""

    def predict(self, patches: np.ndarray) -> np.ndarray:
        return patches[:, 1:2, 1, 1].repeat(2, axis=1)


def test_patch_models_take_the_di_on_the_centre_cell():
    rng = np.random.default_rng(8)
    n = 40
    patches = rng.normal(0, 1, (n, 2, 3, 3))
    targets = patches[:, 1:2, 1, 1].repeat(2, axis=1) + rng.normal(0, 0.1, (n, 2))
    folds = np.arange(n) % 4
    data = TrainingData(
        np.arange(n), np.zeros(n), np.zeros(n), patches, targets, np.array([[0.0, 5.0], [5.0, 15.0]]), "SOC", ["a", "b"]
    )
    validation = CrossValidation(folds, targets, [CentreOfBandOne()] * 4, [], None, 0.0, "random")
    result = TrainingResult(CentreOfBandOne(), "none", validation, 0.0, {"random_state": 3})
    reference = SocModel._aoa_reference(result, data)
    importance = permutation_importance([CentreOfBandOne()] * 4, patches, targets, folds, seed=3)
    assert importance[0] == 0.0 < importance[1]
    assert reference == AoaReference.of_training(patches[:, :, 1, 1], (), importance, folds)
