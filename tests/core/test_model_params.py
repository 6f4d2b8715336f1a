"""Every model kind follows scikit-learn's parameter protocol: get_params, set_params and clone."""

import numpy as np
import pytest
from sklearn.base import clone

from soc_depth_mapper.core.models.cnn import CNNDepthModel, MultiTaskCNNDepthModel, TransferCNNDepthModel
from soc_depth_mapper.core.models.forest import RandomForestDepthModel

INTERVALS = np.array([[0.0, 10.0], [10.0, 30.0]])


@pytest.mark.parametrize(
    ("cls", "changed"),
    [
        (RandomForestDepthModel, {"n_trees": 7, "min_samples_leaf": 2}),
        (CNNDepthModel, {"patch_size": 9, "conv_channels": (4,), "covariate_scaling": "minmax"}),
        (TransferCNNDepthModel, {"freeze_layers": 1, "finetune_epochs": 3}),
        (MultiTaskCNNDepthModel, {"dropout": 0.1}),
    ],
)
def test_parameters_come_from_the_constructor_and_survive_clone(cls, changed):
    model = cls().set_params(**changed)
    params = model.get_params()
    assert {name: params[name] for name in changed} == changed
    assert set(params) == set(cls().get_params())  # set_params adds nothing the constructor does not take
    copy = clone(model)
    assert copy is not model and copy.get_params() == params
    with pytest.raises(ValueError, match="Invalid parameter"):
        model.set_params(no_such_setting=1)


def test_a_clone_is_unfitted_and_refits_to_the_same_forest():
    rng = np.random.default_rng(0)
    patches = rng.normal(size=(60, 2, 1, 1))
    targets = np.stack([patches[:, 0, 0, 0], 0.5 * patches[:, 0, 0, 0]], axis=1) + 0.1 * rng.normal(size=(60, 2))
    model = RandomForestDepthModel(n_trees=20, random_state=4).fit(patches, targets, INTERVALS)
    copy = clone(model)
    assert not hasattr(copy, "intervals_")
    copy.fit(patches, targets, INTERVALS)
    np.testing.assert_array_equal(copy.predict(patches), model.predict(patches))
