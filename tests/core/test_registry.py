"""The model registry: the built-in kinds in their option order, lazy imports, and a kind added by one entry."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from soc_depth_mapper.core import registry
from soc_depth_mapper.core.bundle import SocModel
from soc_depth_mapper.core.training import TrainingData, train

BUILT_IN = ("random_forest", "cnn", "transfer_cnn", "multitask_cnn", "ensemble")


def test_built_in_kinds_keep_the_train_dialogs_option_numbers():
    assert registry.kinds() == BUILT_IN
    assert [registry.entry(k).label for k in registry.kinds()] == [
        "Random forest",
        "CNN",
        "Transfer CNN",
        "Multi-task CNN",
        "Ensemble",
    ]
    assert [registry.entry(k).intervals for k in registry.kinds()] == [registry.QUANTILE_FOREST] + 4 * [
        registry.CONFORMAL
    ]
    assert [registry.entry(k).requires for k in registry.kinds()] == [(), *4 * [("torch",)]]


def test_each_kinds_settings_are_keywords_of_its_class():
    """A setting the dialog passes on must be a parameter of the model class, or training fails late."""
    for kind in registry.kinds():
        cls = registry.model_class(kind)
        assert cls.kind == kind
        for setting in registry.hyperparameters_of(kind):
            assert setting.name in cls().get_params(), (kind, setting.name)
    assert [h.parameter for h in registry.hyperparameters_of("transfer_cnn")][-1] == "FREEZE_LAYERS"
    assert "FREEZE_LAYERS" not in [h.parameter for h in registry.hyperparameters_of("cnn")]


def test_the_dialog_shows_each_models_real_defaults():
    """The dialog's default is the value the model class uses, not a 0 that stands for it (FREEZE_LAYERS
    counts layers of the default architecture, whose class default None means the same 2)."""
    for kind in registry.kinds():
        defaults = registry.model_class(kind)().get_params()
        for setting in registry.hyperparameters_of(kind):
            expected = registry.CONV_BLOCK_LAYERS if setting.name == "freeze_layers" else defaults[setting.name]
            assert setting.default == pytest.approx(expected), (kind, setting.name)


def test_the_random_forest_class_loads_without_importing_torch():
    code = (
        "import sys\n"
        "from soc_depth_mapper.core import registry\n"
        "registry.model_class('random_forest')\n"
        "print('torch' in sys.modules)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "False"


def test_unknown_kinds_and_settings_are_refused_with_the_choices():
    with pytest.raises(ValueError, match="Unknown model kind 'svm'; expected one of random_forest, cnn"):
        registry.entry("svm")
    duplicate = registry.ModelKind("cnn", "CNN", "CNN", lambda: None, registry.CONFORMAL)
    with pytest.raises(ValueError, match="already registered"):
        registry.register(duplicate)
    unknown = registry.ModelKind("svm", "SVM", "SVM", lambda: None, registry.CONFORMAL, ("kernel",))
    with pytest.raises(ValueError, match="takes unknown settings: kernel"):
        registry.register(unknown)
    assert "svm" not in registry.kinds()
    assert registry.hyperparameters()[0].check(8) == (
        "CNN patch size 8 must be odd (7, 9, 11, ...) so the site is the centre cell."
    )
    assert registry.hyperparameters()[0].check(9) is None


def test_registering_a_kind_in_a_test_is_undone_afterwards(register_toy):
    with pytest.MonkeyPatch.context() as patch:
        register_toy(patch)
        assert registry.kinds()[-1] == "toy_mean"
        assert "TOY_OFFSET" in [h.parameter for h in registry.hyperparameters()]
    assert registry.kinds() == BUILT_IN
    assert "TOY_OFFSET" not in [h.parameter for h in registry.hyperparameters()]


def test_a_kind_added_through_the_registry_alone_trains_saves_and_predicts(toy_kind, tmp_path):
    rng = np.random.default_rng(0)
    n = 30
    targets = np.stack([rng.uniform(10, 20, n), rng.uniform(2, 6, n)], axis=1)
    targets[:4, 1] = np.nan
    data = TrainingData(
        site_ids=np.arange(n),
        x=rng.uniform(0, 1000, n),
        y=rng.uniform(0, 1000, n),
        patches=rng.uniform(0, 1, (n, 1, 1, 1)).astype(np.float32),
        targets=targets,
        intervals=np.array([[0.0, 5.0], [5.0, 15.0]]),
        property_name="SOC",
        band_names=["b"],
    )
    result = train(data, toy_kind, {"offset": 1.5}, validation="random", folds=3, random_state=1)
    assert result.validation.metrics[0]["model"] == "Toy mean"
    grid = {"crs_wkt": "", "transform": [0, 1, 0, 0, 0, -1], "res": [1, 1], "nodata": [None]}
    bundle = SocModel.from_training(result, data, grid)
    bundle.save(str(tmp_path / "toy.socmodel"))
    loaded = SocModel.load(str(tmp_path / "toy.socmodel"))
    block = np.array([[[0.2, np.nan, 0.7]]], dtype=np.float32)
    maps = loaded.predict_block(block, [0, 1])[:, 0]  # (depth, column) of the one row
    expected = np.nanmean(targets, axis=0) + 1.5
    np.testing.assert_allclose(maps[:, 0], expected, rtol=1e-6)
    np.testing.assert_allclose(maps[:, 2], expected, rtol=1e-6)
    assert np.isnan(maps[:, 1]).all()
    # conformal intervals, as the entry says: the three fold models' means differ, so the intervals have width
    lower, upper = (bound[:, 0] for bound in loaded.predict_block_interval(block, [0, 1], 0.9))
    assert np.all(lower[:, 0] < maps[:, 0]) and np.all(maps[:, 0] < upper[:, 0])
