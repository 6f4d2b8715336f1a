"""The model kinds SOC Depth Mapper can train: one entry each, so that adding a kind is one entry and one class.

An entry says what the train dialog offers (label, option text, settings), what the kind needs (optional
dependencies such as PyTorch, imported only when a model of that kind is built) and how its prediction intervals
are made. Training, the model file, prediction and the Processing algorithms all ask the registry rather than
testing a kind's name, so a kind registered here appears everywhere, in the order it was registered: the train
algorithm's MODEL option numbers are positions in that order and never change for the built-in kinds.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Union

if TYPE_CHECKING:
    from .models.base import DepthModel

#: prediction intervals from the quantiles of a quantile regression forest (the model itself)
QUANTILE_FOREST = "quantile_forest"
#: prediction intervals by normalised split-conformal prediction over the cross-validation fold models
CONFORMAL = "conformal"
INTERVAL_METHODS = (QUANTILE_FOREST, CONFORMAL)

#: convolution layers of the CNNs' default architecture: the transfer CNN freezes them while fine-tuning
CONV_BLOCK_LAYERS = 2


@dataclass(frozen=True)
class Hyperparameter:
    """A model setting offered by the train algorithm as the parameter `parameter` (an UPPER_CASE id).

    `default`, `minimum` and `maximum` are the dialog's; with `zero_is_default` a 0 there leaves the model
    class's own default (the setting is then not passed on). `check` returns a message for a value the model
    cannot use, or None.
    """

    name: str
    parameter: str
    label: str
    type: type
    default: Union[int, float, bool]
    help: str
    minimum: float | None = None
    maximum: float | None = None
    zero_is_default: bool = False
    check: Callable[[Any], str | None] | None = None


@dataclass(frozen=True)
class ModelKind:
    """One kind of model: `loader` returns its class; `requires` are import names of optional dependencies.
    A kind not `offered` is made by training itself (e.g. by a transfer strategy), never chosen as 'Model'."""

    kind: str
    label: str
    option: str
    loader: Callable[[], type[DepthModel]]
    intervals: str
    hyperparameters: tuple[str, ...] = ()
    requires: tuple[str, ...] = ()
    offered: bool = True


def _class_from(module: str, name: str) -> Callable[[], type[DepthModel]]:
    """A loader that imports `module` (relative to `core.models`) only when the class is asked for."""

    def load() -> type[DepthModel]:
        return getattr(importlib.import_module(f"{__package__}.models.{module}"), name)

    return load


def _odd_patch(size: int) -> str | None:
    if size % 2 == 0:
        return f"CNN patch size {size} must be odd (7, 9, 11, ...) so the site is the centre cell."
    return None


_CNN_SETTINGS = ("patch_size", "epochs", "batch_size", "learning_rate", "patience")
_BUILT_IN_SETTINGS = (
    Hyperparameter(
        "patch_size",
        "PATCH_SIZE",
        "CNN patch size (cells, odd)",
        int,
        7,
        "Side of the square covariate patch centred on each site that the CNNs see: odd and at least 7, "
        "because each of the two convolution blocks trims 3 cells.",
        minimum=7,
        maximum=31,
        check=_odd_patch,
    ),
    Hyperparameter(
        "epochs",
        "EPOCHS",
        "CNN epochs (maximum)",
        int,
        150,
        "Upper limit of training passes; early stopping usually ends sooner. (0, as older scripts give it, "
        "means this default.)",
        minimum=0,
        zero_is_default=True,
    ),
    Hyperparameter(
        "batch_size",
        "BATCH_SIZE",
        "CNN batch size",
        int,
        64,
        "Samples per training step. (0 means this default.)",
        minimum=0,
        zero_is_default=True,
    ),
    Hyperparameter(
        "learning_rate",
        "LEARNING_RATE",
        "CNN learning rate",
        float,
        2e-3,
        "Step size of the AdamW optimiser. (0 means this default.)",
        minimum=0,
        zero_is_default=True,
    ),
    Hyperparameter(
        "patience",
        "PATIENCE",
        "CNN early-stopping patience (epochs)",
        int,
        25,
        "Training stops after this many epochs without improvement on an inner validation split of the "
        "training sites (never the test fold). (0 means this default.)",
        minimum=0,
        zero_is_default=True,
    ),
    Hyperparameter(
        "freeze_layers",
        "FREEZE_LAYERS",
        "Transfer CNN: frozen layers",
        int,
        CONV_BLOCK_LAYERS,
        "How many of the first layers keep their pre-trained weights while each depth's copy is fine-tuned, "
        "counting the convolution layers first, then the fully-connected ones. The default, 2, freezes the "
        "convolution block, as in Han et al. (2025); 0 fine-tunes every layer.",
        minimum=0,
    ),
    Hyperparameter(
        "n_trees",
        "N_TREES",
        "Random forest: trees",
        int,
        500,
        "More trees give more stable predictions and quantiles, at a linear cost in time.",
        minimum=10,
    ),
    Hyperparameter(
        "max_features",
        "MAX_FEATURES",
        "Random forest: share of predictors per split",
        float,
        1 / 3,
        "Fraction of the predictors tried at each split (scikit-learn's max_features; randomForest's p/3 for "
        "regression by default). (0 means this default.)",
        minimum=0,
        maximum=1,
        zero_is_default=True,
    ),
    Hyperparameter(
        "min_samples_leaf",
        "MIN_SAMPLES_LEAF",
        "Random forest: minimum samples per leaf",
        int,
        5,
        "Larger leaves give smoother predictions and wider quantile intervals. (0 means this default.)",
        minimum=0,
        zero_is_default=True,
    ),
    Hyperparameter(
        "per_depth",
        "PER_DEPTH",
        "Random forest: one forest per depth",
        bool,
        False,
        "Fit a separate forest for each depth interval instead of one forest with depth as predictors.",
    ),
    Hyperparameter(
        "tune",
        "TUNE",
        "Random forest: tune by grid search",
        bool,
        False,
        "Search the share of predictors per split and the leaf size by inner cross-validation over sites (slower).",
    ),
)

_BUILT_IN_KINDS = (
    ModelKind(
        "random_forest",
        "Random forest",
        "Random forest",
        _class_from("forest", "RandomForestDepthModel"),
        QUANTILE_FOREST,
        ("n_trees", "max_features", "min_samples_leaf", "per_depth", "tune"),
    ),
    ModelKind(
        "cnn",
        "CNN",
        "CNN (depth as input)",
        _class_from("cnn", "CNNDepthModel"),
        CONFORMAL,
        _CNN_SETTINGS,
        ("torch",),
    ),
    ModelKind(
        "transfer_cnn",
        "Transfer CNN",
        "Transfer CNN (pre-train on all depths, fine-tune per depth)",
        _class_from("cnn", "TransferCNNDepthModel"),
        CONFORMAL,
        (*_CNN_SETTINGS, "freeze_layers"),
        ("torch",),
    ),
    ModelKind(
        "multitask_cnn",
        "Multi-task CNN",
        "Multi-task CNN (one head per depth)",
        _class_from("cnn", "MultiTaskCNNDepthModel"),
        CONFORMAL,
        _CNN_SETTINGS,
        ("torch",),
    ),
    ModelKind(
        "ensemble",
        "Ensemble",
        "Ensemble (random forest + transfer CNN, weighted by stacking)",
        _class_from("ensemble", "EnsembleDepthModel"),
        CONFORMAL,
        ("n_trees", "max_features", "min_samples_leaf", *_CNN_SETTINGS, "freeze_layers"),
        ("torch",),
    ),
    ModelKind(
        "source_stacked_forest",
        "Random forest on the source model's prediction",
        "Random forest with representation transfer",
        _class_from("stacked", "SourceStackedDepthModel"),
        QUANTILE_FOREST,
        ("n_trees", "max_features", "min_samples_leaf", "per_depth", "tune"),
        offered=False,
    ),
)

#: settings by name and kinds by kind, in the order they were added (the dialog's order)
_HYPERPARAMETERS: dict[str, Hyperparameter] = {h.name: h for h in _BUILT_IN_SETTINGS}
_MODELS: dict[str, ModelKind] = {m.kind: m for m in _BUILT_IN_KINDS}


def add_hyperparameter(hyperparameter: Hyperparameter) -> None:
    """Makes a setting available to model kinds; the train dialog offers settings in the order they were added."""
    taken = {h.parameter for h in _HYPERPARAMETERS.values()}
    if hyperparameter.name in _HYPERPARAMETERS or hyperparameter.parameter in taken:
        raise ValueError(f"A model setting '{hyperparameter.name}' ({hyperparameter.parameter}) already exists.")
    _HYPERPARAMETERS[hyperparameter.name] = hyperparameter


def register(model: ModelKind) -> None:
    """Adds a model kind after those already registered (so the existing option numbers stay)."""
    if model.kind in _MODELS:
        raise ValueError(f"The model kind '{model.kind}' is already registered.")
    if model.intervals not in INTERVAL_METHODS:
        raise ValueError(f"Unknown interval method '{model.intervals}'; expected one of {', '.join(INTERVAL_METHODS)}.")
    unknown = [name for name in model.hyperparameters if name not in _HYPERPARAMETERS]
    if unknown:
        raise ValueError(f"Model kind '{model.kind}' takes unknown settings: {', '.join(unknown)}.")
    _MODELS[model.kind] = model


def kinds() -> tuple[str, ...]:
    """Registered kinds a user can choose, in registration order: the train algorithm's MODEL options."""
    return tuple(kind for kind, model in _MODELS.items() if model.offered)


def entry(kind: str) -> ModelKind:
    try:
        return _MODELS[kind]
    except KeyError:
        raise ValueError(f"Unknown model kind '{kind}'; expected one of {', '.join(_MODELS)}.") from None


def model_class(kind: str) -> type[DepthModel]:
    """The class for a model kind, imported only now (torch is heavy; the random forest does not need it)."""
    return entry(kind).loader()


def hyperparameters() -> tuple[Hyperparameter, ...]:
    """Every setting some kind takes, in dialog order."""
    used = {name for model in _MODELS.values() for name in model.hyperparameters}
    return tuple(h for name, h in _HYPERPARAMETERS.items() if name in used)


def hyperparameters_of(kind: str) -> tuple[Hyperparameter, ...]:
    """The settings a kind takes, in dialog order."""
    names = entry(kind).hyperparameters
    return tuple(h for name, h in _HYPERPARAMETERS.items() if name in names)
