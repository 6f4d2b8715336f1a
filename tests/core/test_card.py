"""The model card: written once into the model file, typed when read, and made from a first-release file."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest

from soc_depth_mapper.core.bundle import SocModel
from soc_depth_mapper.core.card import SCHEMA_VERSION, Bands, Grid, ModelCard, TargetScale
from soc_depth_mapper.core.modelfile import ModelFileError, load_model_file, save_model_file
from soc_depth_mapper.core.training import TrainingData, train

DATA = Path(__file__).resolve().parents[1] / "data"
GRID = {
    "crs_wkt": "EPSG:28355",
    "transform": [700000, 250, 0, 6650000, 0, -250],
    "res": [250, 250],
    "nodata": [-9999, None],
    "layer_names": ["cov"],
}


@pytest.fixture(scope="module")
def forest() -> SocModel:
    rng = np.random.default_rng(3)
    n = 60
    covariates = rng.uniform(0, 1, (n, 2))
    targets = np.stack([10 + 5 * covariates[:, 0], 4 + 2 * covariates[:, 1]], axis=1)
    data = TrainingData(
        site_ids=np.arange(n),
        x=rng.uniform(0, 5000, n),
        y=rng.uniform(0, 5000, n),
        patches=covariates.reshape(n, 2, 1, 1).astype(np.float32),
        targets=targets,
        intervals=np.array([[0.0, 5.0], [5.0, 15.0]]),
        property_name="ORCDRC",
        band_names=["cov_a", "cov_b"],
        categorical=(1,),
    )
    result = train(data, "random_forest", {"n_trees": 20, "n_jobs": 1}, validation="random", folds=3, random_state=4)
    return SocModel.from_training(result, data, GRID)


def test_the_card_holds_each_fact_once_from_the_training_run(forest):
    card = forest.card
    assert card.kind == "random_forest" and card.property == "ORCDRC"
    assert card.intervals == ((0.0, 5.0), (5.0, 15.0))
    assert card.bands == Bands(("cov_a", "cov_b"), (1,), (-9999.0, None), ("cov",))
    assert card.grid == Grid("EPSG:28355", (700000.0, 250.0, 0.0, 6650000.0, 0.0, -250.0), (250.0, 250.0))
    assert card.target == TargetScale("none", 0.0)
    assert (card.settings.validation, card.settings.folds, card.settings.seed) == ("random", 3, 4)
    assert card.settings.params == {"n_trees": 20, "n_jobs": 1}
    assert card.n_sites == 60 and card.n_observations_per_depth == (60, 60)
    assert [row["depth"] for row in card.metrics] == ["0-5", "5-15", "all"]
    assert card.spread_floors == ()  # the forest's intervals are its own quantiles
    assert card.aoa_reference is not None and card.transferred_from is None  # validated: an AOA


def test_the_model_file_holds_the_card_and_the_model_state_only(forest, tmp_path):
    path = tmp_path / "rf.socmodel"
    forest.save(str(path))
    metadata, _ = load_model_file(path)
    assert sorted(metadata) == ["bundle_version", "card", "fold_configs", "model_config"]
    assert metadata["bundle_version"] == SCHEMA_VERSION == 2
    assert "target_fields" not in str(metadata)
    assert SocModel.load(str(path)).card == forest.card


def test_a_card_without_later_optional_fields_loads_with_their_defaults(forest):
    values = forest.card.to_dict()
    for name in ("aoa_reference", "transferred_from", "spread_floors", "versions"):
        del values[name]
    card = ModelCard.from_dict(values)
    assert card == dataclasses.replace(forest.card, versions={}, aoa_reference=None)


def test_unknown_card_fields_and_versions_are_refused_with_a_reason(forest, tmp_path):
    path = tmp_path / "rf.socmodel"
    forest.save(str(path))
    metadata, arrays = load_model_file(path)
    save_model_file(tmp_path / "newer.socmodel", {**metadata, "bundle_version": 3}, arrays)
    with pytest.raises(ModelFileError, match="another version of SOC Depth Mapper \\(bundle version 3\\)"):
        SocModel.load(str(tmp_path / "newer.socmodel"))
    save_model_file(tmp_path / "odd.socmodel", {**metadata, "card": {**metadata["card"], "colour": "red"}}, arrays)
    with pytest.raises(ModelFileError, match="fields this version does not know: colour"):
        SocModel.load(str(tmp_path / "odd.socmodel"))


def test_a_first_release_files_metadata_becomes_the_same_facts_as_a_card():
    """Oracle: the values tests/data/make_release_models.py wrote, read straight from the file's JSON."""
    metadata, _ = load_model_file(DATA / "release_cnn.socmodel")
    card = ModelCard.from_release_metadata(metadata)
    assert card.kind == "cnn" and card.property == "ORCDRC"
    assert card.intervals == ((0.0, 5.0), (5.0, 15.0), (15.0, 30.0))
    assert card.bands == Bands(("cov_a", "cov_b", "cov_geology"), (2,), (-9999.0, None, 0.0), ("cov",))
    assert card.grid.res == (250.0, 250.0) and card.grid.transform[:2] == (700000.0, 250.0)
    assert card.grid.crs_wkt.endswith('AUTHORITY["EPSG","32755"]]')
    assert card.target == TargetScale("log", 0.0)
    assert (card.settings.validation, card.settings.folds, card.settings.seed) == ("random", 3, 5)
    assert card.settings.params["conv_channels"] == [2, 2]
    assert card.n_sites == 40 and card.n_observations_per_depth == (40, 40, 35)
    assert len(card.spread_floors) == 3 and all(floor > 0 for floor in card.spread_floors)
    assert len(card.covariate_ranges) == 3 and card.covariate_ranges[2] == (1.0, 3.0)
