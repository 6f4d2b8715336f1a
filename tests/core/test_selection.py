"""Covariate selection: each step on a synthetic stack whose informative, redundant and useless bands are known,
against independent oracles (numpy's corrcoef, closed forms, `train`'s own cross-validation)."""

from __future__ import annotations

import numpy as np
import pytest
import rasterio
from affine import Affine

from soc_depth_mapper.core.models.base import Cancelled, DepthModel
from soc_depth_mapper.core.rasters import CovariateStack
from soc_depth_mapper.core.selection import (
    SubsetScore,
    band_relevance,
    choose_subset,
    permutation_importance,
    select_covariates,
    subset_data,
    subset_sizes,
    write_selected_bands,
)
from soc_depth_mapper.core.selection_report import write_selection_report
from soc_depth_mapper.core.training import TrainingData, train

INTERVALS = np.array([[0.0, 10.0], [10.0, 30.0], [30.0, 60.0]])
FOREST = {"n_trees": 40, "n_jobs": 1}
NAMES = ["useless_a", "informative_1", "redundant_1", "geology", "useless_b", "informative_2", "decoy",
         "redundant_2", "informative_3"]  # fmt: skip


def _orthogonal(values: np.ndarray, against: np.ndarray) -> np.ndarray:
    """`values` with its least-squares fit on [1, against] removed: exactly uncorrelated with `against`."""
    design = np.column_stack([np.ones_like(against), against])
    return values - design @ np.linalg.lstsq(design, values, rcond=None)[0]


def synthetic_stack(n: int = 300, seed: int = 3) -> TrainingData:
    """SOC = (10 + 6 i1 + 4 i2 + 2 i3 + 3·[geology = 2] + noise) × a factor per depth. The useless bands are
    exactly uncorrelated with it; redundant_k is informative_k plus a little noise (redundant_2 with the sign
    turned); the decoy is correlated with SOC (r ≈ 0.15) but carries nothing the others do not."""
    rng = np.random.default_rng(seed)
    i1, i2, i3 = rng.uniform(0, 1, (3, n))
    geology = rng.integers(1, 5, n).astype(float)
    signal = 10 + 6 * i1 + 4 * i2 + 2 * i3 + 3 * (geology == 2) + rng.normal(0, 0.3, n)
    standard = (signal - signal.mean()) / signal.std()
    bands = {
        "useless_a": _orthogonal(rng.normal(size=n), signal),
        "informative_1": i1,
        "redundant_1": i1 + rng.normal(0, 0.05, n),
        "geology": geology,
        "useless_b": _orthogonal(rng.uniform(size=n), signal),
        "informative_2": i2,
        "decoy": 0.15 * standard + _orthogonal(rng.normal(size=n), signal),
        "redundant_2": -i2 + rng.normal(0, 0.05, n),
        "informative_3": i3,
    }
    patches = np.stack([bands[name] for name in NAMES], axis=1).reshape(n, len(NAMES), 1, 1).astype(np.float32)
    return TrainingData(
        site_ids=np.arange(n),
        x=rng.uniform(0, 10_000, n),
        y=rng.uniform(0, 10_000, n),
        patches=patches,
        targets=signal[:, None] * np.array([1.0, 0.7, 0.4]),
        intervals=INTERVALS,
        property_name="SOC",
        band_names=list(NAMES),
        categorical=(NAMES.index("geology"),),
    )


@pytest.fixture(scope="module")
def selection():
    return select_covariates(synthetic_stack(), "random_forest", FOREST, validation="random", folds=5, step=1)


def test_relevance_is_the_mean_absolute_r_over_depths_on_the_observed_sites():
    rng = np.random.default_rng(0)
    data = synthetic_stack(n=60)
    data.targets = data.targets + rng.normal(0, 2, data.targets.shape)
    data.targets[rng.random(data.targets.shape) < 0.3] = np.nan
    values = data.patches[:, :, 0, 0].astype(float)
    for b, outcome in enumerate(band_relevance(data)):
        if b in data.categorical:
            assert outcome.categorical and np.isnan(outcome.relevance) and np.isnan(outcome.correlations).all()
            continue
        oracle = []
        for d in range(3):
            seen = ~np.isnan(data.targets[:, d])
            oracle.append(np.corrcoef(values[seen, b], data.targets[seen, d])[0, 1])
        np.testing.assert_allclose(outcome.correlations, oracle, atol=1e-6)
        assert outcome.relevance == pytest.approx(np.mean(np.abs(oracle)), abs=1e-6)


def test_the_useless_bands_are_dropped_at_step_1_and_one_of_each_redundant_pair_at_step_2(selection):
    by_name = {band.name: band for band in selection.bands}
    for name in ("useless_a", "useless_b"):
        assert by_name[name].relevance < 1e-6
        assert by_name[name].dropped.startswith("|r| with the target below 0.05"), by_name[name].dropped
        assert by_name[name].rank is None and not by_name[name].selected
    values = synthetic_stack().patches[:, :, 0, 0].astype(float)
    for k in (1, 2):
        r = abs(np.corrcoef(values[:, NAMES.index(f"informative_{k}")], values[:, NAMES.index(f"redundant_{k}")])[0, 1])
        assert by_name[f"redundant_{k}"].dropped == f"redundant with informative_{k} (|r| {r:.2f} > 0.8)"
    kept = {band.name for band in selection.bands if not band.dropped}
    assert kept == {"informative_1", "informative_2", "informative_3", "geology", "decoy"}


def test_a_categorical_band_is_never_dropped_for_correlation_and_is_ranked(selection):
    geology = selection.bands[NAMES.index("geology")]
    assert geology.categorical and geology.dropped == "" and geology.rank is not None
    decoy = selection.bands[NAMES.index("decoy")]
    assert (
        geology.importance > 5 * decoy.importance > 0
    )  # it shifts SOC by 3 × the depth factor at a quarter of the sites


def test_the_informative_bands_rank_first_and_the_decoy_last(selection):
    ranks = {band.name: band.rank for band in selection.bands if band.rank is not None}
    assert ranks["informative_1"] == 1
    assert {name for name, rank in ranks.items() if rank <= 4} == {
        "informative_1", "informative_2", "informative_3", "geology"
    }  # fmt: skip
    assert ranks["decoy"] == 5
    importances = [band.importance for band in sorted(selection.bands, key=lambda b: b.rank or 99)][:5]
    assert importances == sorted(importances, reverse=True)


def test_nested_subsets_are_scored_by_trains_own_cross_validation(selection):
    assert [s.size for s in selection.subsets] == [1, 2, 3, 4, 5]
    ranked = [band.name for band in sorted(selection.bands, key=lambda b: b.rank or 99)]
    for subset in selection.subsets:
        assert subset.bands == ranked[: subset.size]
    # oracle: socdepth's train on the 3-band subset, with the same folds (same scheme, k and seed)
    subset = selection.subsets[2]
    data = synthetic_stack()
    indices = sorted(NAMES.index(name) for name in subset.bands)
    result = train(subset_data(data, indices), "random_forest", FOREST, validation="random", folds=5)
    assert np.array_equal(result.validation.folds, selection.folds)
    overall = {row["depth"]: row for row in result.validation.metrics if row["group"] == "all"}
    assert subset.rmse == pytest.approx(overall["all"]["rmse"], rel=1e-12)
    assert subset.ccc == pytest.approx(overall["all"]["ccc"], rel=1e-12)
    assert subset.depth_rmse == pytest.approx({label: overall[label]["rmse"] for label in ("0-10", "10-30", "30-60")})
    per_fold = [
        np.sqrt(
            np.mean((result.validation.predictions[f == selection.folds] - data.targets[f == selection.folds]) ** 2)
        )
        for f in range(5)
    ]
    assert subset.rmse_se == pytest.approx(np.std(per_fold, ddof=1) / np.sqrt(5), rel=1e-9)


def test_the_lowest_rmse_is_chosen_and_it_holds_every_informative_band(selection):
    rmse = [s.rmse for s in selection.subsets]
    assert selection.chosen == int(np.argmin(rmse))
    assert selection.subsets[selection.chosen].size == 4  # the decoy only adds noise
    selected = {selection.bands[i].name for i in selection.selected}
    assert {"informative_1", "informative_2", "informative_3", "geology"} <= selected


def _scores(rmse, se) -> list[SubsetScore]:
    return [
        SubsetScore([f"b{i}" for i in range(k + 1)], r, s, 0.0, {}, [], 0.0) for k, (r, s) in enumerate(zip(rmse, se))
    ]


def test_the_parsimonious_rule_takes_the_smallest_subset_within_one_standard_error():
    scores = _scores([5.0, 4.2, 4.0, 4.05], [0.3, 0.3, 0.25, 0.2])
    assert choose_subset(scores, parsimonious=False) == 2
    assert choose_subset(scores, parsimonious=True) == 1  # 4.2 <= 4.0 + 0.25; 5.0 is not
    assert choose_subset(_scores([5.0, 4.26, 4.0], [0.3, 0.3, 0.25]), parsimonious=True) == 2
    assert choose_subset(_scores([4.0, 4.0], [0.1, 0.1]), parsimonious=False) == 0  # equals: the smaller


def test_parsimonious_selection_on_the_synthetic_stack_is_smaller_and_within_one_standard_error(selection):
    lean = select_covariates(
        synthetic_stack(), "random_forest", FOREST, validation="random", folds=5, step=1, parsimonious=True
    )
    best = selection.subsets[selection.chosen]
    chosen = lean.subsets[lean.chosen]
    assert chosen.rmse <= best.rmse + best.rmse_se
    assert all(s.rmse > best.rmse + best.rmse_se for s in lean.subsets if s.size < chosen.size)
    assert (chosen.size, best.size) == (3, 4)  # informative_3 and geology's gain is within one standard error
    assert len(lean.selected) == chosen.size


class _FirstBand(DepthModel):
    """Test double: predicts band 0 at every depth; ignores the other bands."""

    @property
    def patch_size(self) -> int:
        return 1

    def fit(self, patches, targets, intervals, categorical=(), progress=None):
        return self

    def predict(self, patches):
        return np.repeat(patches[:, :1, 0, 0].astype(float), 2, axis=1)

    def predict_block(self, block, depths=None):
        raise NotImplementedError

    def get_state(self):
        raise NotImplementedError

    @classmethod
    def from_state(cls, config, arrays):
        raise NotImplementedError


def test_permutation_importance_matches_the_closed_form():
    """y = x exactly: shuffled, the error is x' - x with variance 2 var(x), so the RMSE rises by sqrt(2)·sd;
    a band the model ignores has importance 0 exactly."""
    rng = np.random.default_rng(1)
    n = 4000
    x = rng.normal(0, 3, n)
    data = TrainingData(
        site_ids=np.arange(n), x=np.zeros(n), y=np.zeros(n),
        patches=np.stack([x, rng.normal(size=n)], axis=1).reshape(n, 2, 1, 1).astype(np.float32),
        targets=np.column_stack([x, x]), intervals=INTERVALS[:2], property_name="p", band_names=["x", "noise"],
    )  # fmt: skip
    folds = np.arange(n) % 4
    importance = permutation_importance(data, [_FirstBand()] * 4, folds, "none", 3, 0)
    assert importance[0] == pytest.approx(np.sqrt(2) * x.std(), rel=0.03)
    assert importance[1] == 0.0


def test_subset_sizes_step_up_to_the_limit_and_end_on_it():
    assert subset_sizes(57, 10, 50) == [10, 20, 30, 40, 50]
    assert subset_sizes(23, 10, 50) == [10, 20, 23]
    assert subset_sizes(6, 10, 50) == [6]
    assert subset_sizes(8, 3, 7) == [3, 6, 7]


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"validation": "none"}, "choose random or spatial validation"),
        ({"min_correlation": 1.0}, "MIN_CORRELATION 1 must lie in"),
        ({"max_correlation": 0.0}, "MAX_CORRELATION 0 must lie in"),
        ({"step": 0}, "STEP (0)"),
    ],
)
def test_bad_settings_are_refused_with_the_remedy(settings, message):
    data = synthetic_stack(n=40)
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        select_covariates(data, "random_forest", FOREST, **{"validation": "random", "folds": 3, **settings})


def test_with_no_relevant_numeric_band_only_the_categorical_one_is_left():
    data = synthetic_stack(n=40)
    only_geology = select_covariates(data, "random_forest", FOREST, validation="random", folds=3, min_correlation=0.99)
    assert [data.band_names[i] for i in only_geology.selected] == ["geology"]
    data.categorical = ()
    with pytest.raises(ValueError, match="No band is correlated with the target above MIN_CORRELATION 0.99"):
        select_covariates(data, "random_forest", FOREST, validation="random", folds=3, min_correlation=0.99)


def test_the_input_data_is_not_modified():
    data = synthetic_stack(n=80)
    before = data.patches.copy(), data.targets.copy(), list(data.band_names), data.categorical
    select_covariates(data, "random_forest", FOREST, validation="spatial", folds=3, step=2)
    assert np.array_equal(data.patches, before[0]) and np.array_equal(data.targets, before[1])
    assert (data.band_names, data.categorical) == (before[2], before[3])


def _raster(path, data: np.ndarray, descriptions: tuple[str, ...], nodata: float = -9999.0) -> str:
    profile = {"driver": "GTiff", "width": data.shape[2], "height": data.shape[1], "count": data.shape[0],
               "dtype": "float32", "crs": "EPSG:28355", "transform": Affine(30, 0, 700_000, 0, -30, 6_600_000),
               "nodata": nodata}  # fmt: skip
    with rasterio.open(path, "w", **profile) as dataset:
        dataset.write(data.astype(np.float32))
        for band, text in enumerate(descriptions, start=1):
            dataset.set_band_description(band, text)
    return str(path)


def test_the_selected_stack_keeps_values_nodata_and_band_names_over_several_tiles(tmp_path):
    rng = np.random.default_rng(5)
    terrain = rng.normal(100, 20, (2, 300, 270))
    terrain[0, 10, 20] = -9999.0
    climate = rng.normal(5, 1, (1, 300, 270))
    paths = [_raster(tmp_path / "terrain.tif", terrain, ("dem", "twi")), _raster(tmp_path / "climate.tif", climate, ())]
    out = tmp_path / "chosen.tif"
    with CovariateStack(paths) as stack:
        write_selected_bands(stack, [0, 2], str(out))
    with CovariateStack([str(out)]) as chosen:
        assert chosen.band_names == ["chosen_terrain_dem", "chosen_climate_1"]
        block = chosen.read_block(0, 0, 300, 270)
    assert np.isnan(block[0, 10, 20]) and np.isnan(block).sum() == 1
    expected = np.stack([terrain[0], climate[0]]).astype(np.float32)
    assert np.array_equal(block[~np.isnan(block)], expected[~np.isnan(block)])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["chosen.tif", "climate.tif", "terrain.tif"]


def test_a_cancelled_write_leaves_no_file_and_an_earlier_one_unchanged(tmp_path):
    path = _raster(tmp_path / "cov.tif", np.ones((1, 600, 600)), ("a",))
    out = tmp_path / "chosen.tif"
    out.write_bytes(b"an earlier file")
    calls = []

    def cancel_at_the_third_tile(fraction: float, message: str) -> bool:
        calls.append(message)
        return len(calls) < 3

    with CovariateStack([path]) as stack, pytest.raises(Cancelled):
        write_selected_bands(stack, [0], str(out), cancel_at_the_third_tile)
    assert out.read_bytes() == b"an earlier file"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["chosen.tif", "cov.tif"]


def test_any_registered_kind_scores_and_with_equal_scores_the_most_relevant_band_alone_wins(toy_kind):
    """The toy kind (the registry alone knows it) ignores the covariates: every importance is 0, so the bands
    rank by relevance, every subset scores the same, and of equals the smallest is chosen."""
    selection = select_covariates(synthetic_stack(n=60), toy_kind, {}, validation="random", folds=3, step=1)
    assert all(band.importance == 0 for band in selection.bands if band.rank is not None)
    ranked = sorted((b for b in selection.bands if b.rank is not None), key=lambda b: b.rank)
    numeric = [b.relevance for b in ranked if not b.categorical]
    assert numeric == sorted(numeric, reverse=True) and ranked[-1].categorical
    assert len({s.rmse for s in selection.subsets}) == 1
    assert selection.chosen == 0 and [selection.bands[i].name for i in selection.selected] == ["informative_1"]


def test_the_report_page_has_the_plot_every_subset_and_every_band(selection, tmp_path):
    path = tmp_path / "selection.html"
    write_selection_report(str(path), selection, "SOC", "g/kg")
    page = path.read_text(encoding="utf-8")
    assert page.count("data:image/png;base64,") == 1 and "http" not in page
    assert all(name in page for name in NAMES) and "optimistic" in page
    assert page.count("<td>4 ✔</td>") == 1  # the chosen subset of four bands, marked once
    assert "redundant with informative_1" in page
