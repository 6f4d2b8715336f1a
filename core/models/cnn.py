"""Convolutional neural networks on covariate patches (after Han et al. 2025, Front. Environ. Sci. 13:1580085):
the three estimators. The network is in `cnn_networks` (with why a whole raster block can be evaluated at
once), the training loop and target scales in `cnn_training`.

Three models share one network design:

- `CNNDepthModel`: one network for all depths; the interval's top and bottom are inputs.
- `TransferCNNDepthModel`: the same network pre-trained on all depths, then one copy per interval fine-tuned on
  that interval's samples only, with its first `freeze_layers` layers frozen.
- `MultiTaskCNNDepthModel`: one shared convolutional trunk and one fully-connected head per interval, trained
  on the sites that have every interval.

Fits are reproducible: the same data and `random_state` give bit-identical weights on the CPU with the
same `n_threads`; by default training runs on one thread (see `TRAINING_THREADS`), so on any machine. Global
torch state (random generator, thread count, deterministic mode) is restored after each call.
"""

from __future__ import annotations

import copy
import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any, Optional

import numpy as np
import torch
from torch import nn

from ..folds import inner_split
from .base import DepthModel, check_progress
from .cnn_networks import TRIM_PER_CONV_BLOCK, PatchNet, depth_features
from .cnn_training import (
    PREDICT_BATCH,
    Inputs,
    ProgressCallback,
    Samples,
    depth_scales,
    train_network,
    usable_targets,
)
from .encoding import PatchEncoder, block_centre_valid, centre_valid

#: inner cells per forward pass in `predict_block` (bounds memory)
DENSE_TILE_CELLS = 1 << 18
#: fewer sites than this train without an inner validation split (and so without early stopping)
MIN_SITES_FOR_VALIDATION = 5
#: threads for training when `n_threads` is not given. The networks are small and a batch of 64 patches is a
#: few microseconds of work per operation, so a second thread gains little, while every operation ends at a
#: barrier where threads spin until the slowest arrives: with another busy process on the same cores a
#: descheduled thread stalls them all. Measured on 2 cores beside one CPU-bound process, 30 epochs of the
#: test survey took 6 s on one thread and 136-159 s on two.
TRAINING_THREADS = 1
#: threads for prediction when a model's `n_threads` is not given; None: every core of this process. The maps
#: depend in their last bits on the thread count (oneDNN and the vectorised activations split their work by
#: thread), so a cluster worker takes the count of the process that started the run (see `core.cluster`)
PREDICTION_THREADS: Optional[int] = None


class _CNNBase(DepthModel):
    """Parameters, training loop, prediction and state shared by the three CNN models."""

    _uses_depth_input = True

    def __init__(
        self,
        patch_size: int = 7,
        epochs: int = 150,
        batch_size: int = 64,
        learning_rate: float = 2e-3,
        patience: int = 25,
        conv_channels: Sequence[int] = (16, 32),
        dense_units: Sequence[int] = (64, 32),
        dropout: float = 0.4,
        weight_decay: float = 1e-4,
        validation_fraction: float = 0.15,
        augment: bool = True,
        random_state: int = 0,
        device: str | None = None,
        n_threads: int | None = None,
        covariate_scaling: str = "quantile",
    ):
        self._patch_size = patch_size
        self.epochs = epochs
        self.batch_size = batch_size
        self.learning_rate = learning_rate
        self.patience = patience
        self.conv_channels = tuple(conv_channels)
        self.dense_units = tuple(dense_units)
        self.dropout = dropout
        self.weight_decay = weight_decay
        self.validation_fraction = validation_fraction
        self.augment = augment
        self.random_state = random_state
        self.device = device
        self.n_threads = n_threads
        #: "quantile" (ranks, robust to units and outliers) or "minmax"; see `encoding`
        self.covariate_scaling = covariate_scaling

    @property
    def patch_size(self) -> int:
        return self._patch_size

    @patch_size.setter
    def patch_size(self, value: int) -> None:  # for `set_params`
        self._patch_size = value

    # ----------------------------------------------------------------------------------------------- fitting

    def fit(
        self,
        patches: np.ndarray,
        targets: np.ndarray,
        intervals: np.ndarray,
        categorical: tuple[int, ...] = (),
        progress: ProgressCallback = None,
        sample_weight: np.ndarray | None = None,
    ) -> _CNNBase:
        """`sample_weight` (S,): a weight per site, as scikit-learn's: each site's squared errors count that
        much in the loss (e.g. borrowed sites of another data set less than local ones); weight 0 leaves a site
        out. None weighs all sites alike."""
        patches, targets, intervals = self._check_fit_inputs(patches, targets, intervals)
        targets, sample_weight = usable_targets(patches, targets, sample_weight)
        self.encoder_ = PatchEncoder(categorical, self.covariate_scaling).fit(patches)
        self.intervals_ = intervals
        self.target_mean_, self.target_std_ = depth_scales(targets)
        self.history_: dict[str, dict[str, Any]] = {}
        self.device_ = self._resolve_device()
        with self._torch_session(seed=self.random_state, threads=self.n_threads or TRAINING_THREADS):
            inputs = Inputs(
                self.encoder_.transform(patches),
                (targets - self.target_mean_) / self.target_std_,
                depth_features(intervals),
                self.device_,
                self.augment,
                self.target_std_,
                sample_weight,
            )
            self._fit_networks(inputs, progress)
        return self

    def _fit_networks(self, inputs: Inputs, progress: ProgressCallback) -> None:
        raise NotImplementedError

    def fine_tuned(
        self,
        patches: np.ndarray,
        targets: np.ndarray,
        freeze_layers: int | None = None,
        progress: ProgressCallback = None,
        sample_weight: np.ndarray | None = None,
    ) -> _CNNBase:
        """A copy of this fitted model whose networks go on training on other sites: representation transfer
        (Shen et al. 2022), e.g. pre-trained on a library, fine-tuned on a small local data set (same intervals).

        The first `freeze_layers` layers (conv blocks first, then fully connected; default: every conv block)
        keep their weights and batch-norm statistics bit for bit. The covariate encoding and the target scales
        stay those of pre-training, the scales the frozen layers were learnt on. Trains with the model's own
        `epochs` and `learning_rate` (a few dozen sites give one mini-batch per epoch, too few steps for the
        transfer CNN's gentler fine-tuning rate to move a library's level to the local one), with early stopping
        on a share of the new sites."""
        patches, targets, _ = self._check_fit_inputs(patches, targets, self.intervals_)
        targets, sample_weight = usable_targets(patches, targets, sample_weight)
        model = copy.deepcopy(self)
        n_frozen = len(self.conv_channels) if freeze_layers is None else freeze_layers
        n_layers = len(self.conv_channels) + len(self.dense_units)
        if not 0 <= n_frozen <= n_layers:
            raise ValueError(
                f"freeze_layers is {freeze_layers} but the network has {len(self.conv_channels)} conv and "
                f"{len(self.dense_units)} fully-connected layers; choose 0 to {n_layers}."
            )
        model.history_ = {}
        with model._torch_session(seed=self.random_state, threads=self.n_threads or TRAINING_THREADS):
            inputs = Inputs(
                model.encoder_.transform(patches),
                (targets - model.target_mean_) / model.target_std_,
                depth_features(model.intervals_),
                model.device_,
                model.augment,
                model.target_std_,
                sample_weight,
            )
            has_target = np.isfinite(inputs.targets).any(axis=1)
            validation = model._validation_sites(np.flatnonzero(has_target), len(has_target))
            model.validation_sites_ = validation
            for index, net in enumerate(model.nets_):
                frozen = net.layers()[:n_frozen]
                for module in frozen:
                    module.requires_grad_(False)
                train, val = (
                    model._net_samples(inputs, has_target & ~validation, index),
                    model._net_samples(inputs, has_target & validation, index),
                )
                span = (index / len(model.nets_), 1 / len(model.nets_))
                stage = f"fine-tuning network {index + 1}/{len(model.nets_)}"
                if len(train) >= 2:
                    model._train(
                        net, stage, inputs, train, val, model.epochs, model.learning_rate, progress, span,
                        frozen,
                    )  # fmt: skip
                for module in frozen:
                    module.requires_grad_(True)
                net.eval()
        return model

    def _net_samples(self, inputs: Inputs, site_mask: np.ndarray, index: int) -> Samples:
        """The training rows of network `index` among the masked sites: every depth of them (pooled layout)."""
        return inputs.pooled_samples(site_mask)

    def _new_net(self, n_heads: int) -> PatchNet:
        net = PatchNet(
            self.encoder_.n_channels_,
            self.patch_size,
            self.conv_channels,
            self.dense_units,
            self.dropout,
            2 if self._uses_depth_input else 0,
            n_heads,
        )
        return net.to(self.device_)

    def _validation_sites(self, candidates: np.ndarray, n_sites: int) -> np.ndarray:
        """Boolean mask over sites: a random `validation_fraction` of the candidate sites for early stopping
        (none when the fraction is 0 or there are too few sites to spare any)."""
        mask = np.zeros(n_sites, dtype=bool)
        if self.validation_fraction > 0 and len(candidates) >= MIN_SITES_FOR_VALIDATION:
            mask[candidates[inner_split(len(candidates), self.validation_fraction, self.random_state)]] = True
        return mask

    def _train(
        self,
        net: PatchNet,
        stage: str,
        inputs: Inputs,
        train: Samples,
        val: Samples,
        epochs: int,
        learning_rate: float,
        progress: ProgressCallback,
        progress_span: tuple[float, float],
        frozen: Sequence[nn.Module] = (),
    ) -> None:
        """`train_network` with this model's settings; the history goes to `history_[stage]`."""
        train_network(
            net, stage, inputs, train, val, epochs, learning_rate, progress, progress_span, frozen,
            batch_size=self.batch_size, weight_decay=self.weight_decay, patience=self.patience,
            seed=self.random_state, histories=self.history_,
        )  # fmt: skip

    # -------------------------------------------------------------------------------------------- prediction

    def predict(self, patches: np.ndarray) -> np.ndarray:
        """(S, B, p, p) -> (S, D) float32; NaN where the centre cell has a NaN band."""
        patches = np.asarray(patches, dtype=float)
        p = self.patch_size
        if patches.ndim != 4 or patches.shape[2:] != (p, p):
            raise ValueError(
                f"Patches must be (sites, bands, {p}, {p}) for this model (patch_size {p}); got shape "
                f"{patches.shape}. Sample the covariates with the model's patch size."
            )
        x = torch.from_numpy(self.encoder_.transform(patches))
        device = self._resolve_device()
        with self._torch_session(seed=None), torch.no_grad():
            parts = [
                self._outputs(x[i : i + PREDICT_BATCH].to(device))[:, :, 0, 0].cpu()
                for i in range(0, len(x), PREDICT_BATCH)
            ]
        out = torch.cat(parts).numpy() if parts else np.empty((0, len(self.intervals_)), np.float32)
        out = self._to_target_scale(out, self._chosen(None), axis=1)
        out[~centre_valid(patches)] = np.nan
        return out

    def predict_block(self, block: np.ndarray, depths: Sequence[int] | None = None) -> np.ndarray:
        """(B, h + 2r, w + 2r) -> (D, h, w) float32, one trunk pass over the block (see module docstring)."""
        block = np.asarray(block, dtype=float)
        r = self.patch_size // 2
        if block.ndim != 3 or min(block.shape[1:]) <= 2 * r:
            raise ValueError(
                f"A raster block must be (bands, rows, columns) with a halo of {r} cells on every side; "
                f"got shape {block.shape}."
            )
        rows, cols = block.shape[1] - 2 * r, block.shape[2] - 2 * r
        encoded = torch.from_numpy(self.encoder_.transform_block(block))[None]
        tile_rows = max(1, DENSE_TILE_CELLS // cols)
        device = self._resolve_device()
        with self._torch_session(seed=None), torch.no_grad():
            parts = [
                self._outputs(encoded[:, :, top : top + tile_rows + 2 * r].to(device), depths)[0].cpu()
                for top in range(0, rows, tile_rows)
            ]
        out = torch.cat(parts, dim=1).numpy()
        out = self._to_target_scale(out, self._chosen(depths), axis=0)
        out[:, ~block_centre_valid(block, r)] = np.nan
        return out

    def _outputs(self, x: torch.Tensor, depths: Sequence[int] | None = None) -> torch.Tensor:
        """Encoded (N, C, p + k, p + k) -> standardised (N, D, 1 + k, 1 + k), for patches and blocks alike;
        only the intervals numbered in `depths` when given."""
        raise NotImplementedError

    def _to_target_scale(self, standardised: np.ndarray, depths: list[int], axis: int) -> np.ndarray:
        """Network outputs for `depths` (along `axis`) -> the fitted scale, each with its interval's scale."""
        shape = [1] * standardised.ndim
        shape[axis] = len(depths)
        mean, std = (np.asarray(v[depths], np.float32).reshape(shape) for v in (self.target_mean_, self.target_std_))
        return standardised * std + mean

    def _chosen(self, depths: Sequence[int] | None) -> list[int]:
        return list(range(len(self.intervals_))) if depths is None else list(depths)

    def _depth_tensor(self, interval: int) -> torch.Tensor:
        features = depth_features(self.intervals_[interval : interval + 1])
        return torch.from_numpy(features).reshape(1, 2, 1, 1).to(self._resolve_device())

    # ------------------------------------------------------------------------------------------------- state

    def get_state(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        encoder_config, encoder_arrays = self.encoder_.get_state()
        params = self.get_params()
        params.update(conv_channels=list(self.conv_channels), dense_units=list(self.dense_units))
        config = {
            "kind": self.kind,
            "params": params,
            "encoder": encoder_config,
            "intervals": self.intervals_.tolist(),
            "target_mean": self.target_mean_.tolist(),
            "target_std": self.target_std_.tolist(),
            "n_networks": len(self.nets_),
            "n_heads": len(self.nets_[0].heads),
            "history": self.history_,
        }
        arrays = {f"encoder.{name}": value for name, value in encoder_arrays.items()}
        arrays["validation_sites"] = self.validation_sites_
        for index, net in enumerate(self.nets_):
            for name, tensor in net.state_dict().items():
                arrays[f"net{index}.{name}"] = tensor.detach().cpu().numpy().copy()
        return config, arrays

    @classmethod
    def from_state(cls, config: dict[str, Any], arrays: dict[str, np.ndarray]) -> _CNNBase:
        if config.get("kind") != cls.kind:
            raise ValueError(f"This model file holds a '{config.get('kind')}' model, not '{cls.kind}'.")
        model = cls(**config["params"])
        model.encoder_ = PatchEncoder.from_state(
            config["encoder"],
            {name[len("encoder.") :]: value for name, value in arrays.items() if name.startswith("encoder.")},
        )
        model.covariate_scaling = model.encoder_.scaling  # files before 2026-12 lack the parameter: min–max
        model.intervals_ = np.asarray(config["intervals"], dtype=float).reshape(-1, 2)
        # files before 2026-12 hold one pooled mean and spread for all intervals
        n_depths = len(model.intervals_)
        model.target_mean_ = np.broadcast_to(np.asarray(config["target_mean"], dtype=float), n_depths).copy()
        model.target_std_ = np.broadcast_to(np.asarray(config["target_std"], dtype=float), n_depths).copy()
        model.history_ = config["history"]
        model.validation_sites_ = np.asarray(arrays["validation_sites"], dtype=bool)
        model.device_ = model._resolve_device()
        model.nets_ = []
        for index in range(config["n_networks"]):
            net = model._new_net(config["n_heads"])
            prefix = f"net{index}."
            state = {k[len(prefix) :]: torch.from_numpy(np.array(v)) for k, v in arrays.items() if k.startswith(prefix)}
            net.load_state_dict(state)
            model.nets_.append(net.eval())
        return model

    # --------------------------------------------------------------------------------------------- helpers

    def _check_fit_inputs(
        self, patches: np.ndarray, targets: np.ndarray, intervals: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        patches = np.asarray(patches, dtype=float)
        targets = np.asarray(targets, dtype=float)
        intervals = np.asarray(intervals, dtype=float)
        p = self.patch_size
        if p % 2 != 1 or p < 1:
            raise ValueError(f"patch_size must be an odd number of cells (e.g. 5, 7, 9); got {p}.")
        smallest = TRIM_PER_CONV_BLOCK * len(self.conv_channels) + 1
        if p < smallest:
            raise ValueError(
                f"patch_size {p} is too small for {len(self.conv_channels)} convolution blocks (each trims "
                f"{TRIM_PER_CONV_BLOCK} cells): use patch_size {smallest + (smallest % 2 == 0)} or more, "
                "or fewer conv_channels."
            )
        if patches.ndim != 4 or patches.shape[2:] != (p, p):
            raise ValueError(
                f"Patches must be (sites, bands, {p}, {p}) for patch_size {p}; got shape {patches.shape}. "
                "Sample the covariates with the model's patch size."
            )
        if intervals.ndim != 2 or intervals.shape[1] != 2 or not np.all(intervals[:, 0] < intervals[:, 1]):
            raise ValueError(
                f"Depth intervals must be rows of (top, bottom) in cm with top < bottom; got {intervals.tolist()}."
            )
        if targets.shape != (len(patches), len(intervals)):
            raise ValueError(
                f"Targets have shape {targets.shape} but there are {len(patches)} sites and {len(intervals)} "
                "depth intervals; give one column per interval, NaN where a site lacks that depth."
            )
        if np.isfinite(targets).sum() < 2:
            raise ValueError("Fewer than 2 target values are available; a CNN cannot be trained on these sites.")
        return patches, targets, intervals

    def _resolve_device(self) -> torch.device:
        if self.device is not None:
            return torch.device(self.device)
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")

    @contextmanager
    def _torch_session(self, seed: int | None, threads: int | None = None) -> Iterator[None]:
        """`threads` (default: `n_threads`, else all cores), and for fitting a seeded, deterministic RNG; global
        torch state restored after. Prediction works on large blocks, where every core pays."""
        threads_before = torch.get_num_threads()
        deterministic_before = torch.are_deterministic_algorithms_enabled()
        warn_only_before = torch.is_deterministic_algorithms_warn_only_enabled()
        device = self._resolve_device()
        cuda_devices = [device.index or 0] if device.type == "cuda" else []
        torch.set_num_threads(threads or self.n_threads or prediction_threads())
        try:
            with torch.random.fork_rng(devices=cuda_devices, enabled=seed is not None):
                if seed is not None:
                    torch.manual_seed(seed)
                    if device.type == "cpu":
                        torch.use_deterministic_algorithms(True)
                yield
        finally:
            torch.use_deterministic_algorithms(deterministic_before, warn_only=warn_only_before)
            torch.set_num_threads(threads_before)


class CNNDepthModel(_CNNBase):
    """One network for all depths, the interval's top and bottom as inputs after the flatten step."""

    kind = "cnn"

    def _fit_networks(self, inputs: Inputs, progress: ProgressCallback) -> None:
        has_target = np.isfinite(inputs.targets)
        validation = self._validation_sites(np.flatnonzero(has_target.any(axis=1)), len(has_target))
        self.validation_sites_ = validation
        net = self._new_net(n_heads=1)
        train, val = inputs.pooled_samples(~validation), inputs.pooled_samples(validation)
        self._train(net, "training", inputs, train, val, self.epochs, self.learning_rate, progress, (0.0, 1.0))
        self.nets_ = [net]
        check_progress(progress, 1.0, "training done")

    def _outputs(self, x: torch.Tensor, depths: Sequence[int] | None = None) -> torch.Tensor:
        net = self.nets_[0].eval()
        head = net.heads[0]
        first = head.first(net.trunk(x))
        return torch.cat([head.predict(first, self._depth_tensor(d)) for d in self._chosen(depths)], dim=1)


class TransferCNNDepthModel(_CNNBase):
    """Pre-trained on all depths like `CNNDepthModel`, then a copy per interval fine-tuned on that interval.

    In each copy the first `freeze_layers` layers (conv blocks first, then fully-connected layers; default:
    every conv block) keep the pre-trained weights and batch-norm statistics bit for bit: their parameters do
    not take gradients and the modules stay in evaluation mode while the rest trains.
    """

    kind = "transfer_cnn"

    def __init__(
        self,
        patch_size: int = 7,
        epochs: int = 150,
        batch_size: int = 64,
        learning_rate: float = 2e-3,
        patience: int = 25,
        conv_channels: Sequence[int] = (16, 32),
        dense_units: Sequence[int] = (64, 32),
        dropout: float = 0.4,
        weight_decay: float = 1e-4,
        validation_fraction: float = 0.15,
        augment: bool = True,
        random_state: int = 0,
        device: str | None = None,
        n_threads: int | None = None,
        covariate_scaling: str = "quantile",
        freeze_layers: int | None = None,
        finetune_epochs: int = 100,
        finetune_learning_rate: float = 5e-4,
    ):
        super().__init__(
            patch_size, epochs, batch_size, learning_rate, patience, conv_channels, dense_units, dropout,
            weight_decay, validation_fraction, augment, random_state, device, n_threads, covariate_scaling,
        )  # fmt: skip
        self.freeze_layers = freeze_layers
        self.finetune_epochs = finetune_epochs
        self.finetune_learning_rate = finetune_learning_rate

    def _n_frozen(self) -> int:
        """Layers frozen in every fine-tuned copy."""
        return len(self.conv_channels) if self.freeze_layers is None else self.freeze_layers

    def _fit_networks(self, inputs: Inputs, progress: ProgressCallback) -> None:
        n_layers = len(self.conv_channels) + len(self.dense_units)
        if not 0 <= self._n_frozen() <= n_layers:
            raise ValueError(
                f"freeze_layers is {self.freeze_layers} but the network has {len(self.conv_channels)} conv and "
                f"{len(self.dense_units)} fully-connected layers; choose 0 to {n_layers}."
            )
        has_target = np.isfinite(inputs.targets)
        validation = self._validation_sites(np.flatnonzero(has_target.any(axis=1)), len(has_target))
        self.validation_sites_ = validation
        pretrained = self._new_net(n_heads=1)
        train, val = inputs.pooled_samples(~validation), inputs.pooled_samples(validation)
        self._train(
            pretrained, "pre-training", inputs, train, val, self.epochs, self.learning_rate, progress, (0.0, 0.5)
        )
        n_depths = inputs.targets.shape[1]
        self.nets_ = []
        # one after another, never apart (as Dask tasks): dropout draws from torch's global generator, which each
        # fine-tune takes over from the one before, so apart they would not give the same weights
        for d in range(n_depths):
            net = copy.deepcopy(pretrained)
            frozen = net.layers()[: self._n_frozen()]
            for module in frozen:
                module.requires_grad_(False)
            train_d, val_d = inputs.pooled_samples(~validation, d), inputs.pooled_samples(validation, d)
            top, bottom = self.intervals_[d]
            stage = f"fine-tuning {top:g}-{bottom:g} cm"
            if len(train_d) >= 2:
                span = (0.5 + 0.5 * d / n_depths, 0.5 / n_depths)
                self._train(
                    net, stage, inputs, train_d, val_d, self.finetune_epochs, self.finetune_learning_rate,
                    progress, span, frozen,
                )  # fmt: skip
            else:
                self.history_[stage] = {"train_rmse": [], "val_rmse": [], "best_epoch": None, "skipped": True}
            self.nets_.append(net.eval())
        check_progress(progress, 1.0, "fine-tuning done")

    def _net_samples(self, inputs: Inputs, site_mask: np.ndarray, index: int) -> Samples:
        """Network `index` is the one for depth interval `index`."""
        return inputs.pooled_samples(site_mask, index)

    def _outputs(self, x: torch.Tensor, depths: Sequence[int] | None = None) -> torch.Tensor:
        shared_trunk = self._n_frozen() >= len(self.conv_channels)
        features = self.nets_[0].eval().trunk(x) if shared_trunk else None
        outputs = []
        for d in self._chosen(depths):
            net = self.nets_[d].eval()
            head = net.heads[0]
            first = head.first(features if shared_trunk else net.trunk(x))
            outputs.append(head.predict(first, self._depth_tensor(d)))
        return torch.cat(outputs, dim=1)


class MultiTaskCNNDepthModel(_CNNBase):
    """A shared conv trunk (up to the flatten step) and one fully-connected head per interval, no depth input.

    Trains on every site with a value at some interval: the loss counts the intervals a site has, so a profile
    that stops at 30 cm still teaches the shallow heads and the shared trunk (most surveys have many such).
    """

    kind = "multitask_cnn"
    _uses_depth_input = False

    def _fit_networks(self, inputs: Inputs, progress: ProgressCallback) -> None:
        observed = np.isfinite(inputs.targets).any(axis=1)
        validation = self._validation_sites(np.flatnonzero(observed), len(observed))
        self.validation_sites_ = validation
        net = self._new_net(n_heads=inputs.targets.shape[1])
        train, val = inputs.site_samples(observed & ~validation), inputs.site_samples(observed & validation)
        self._train(net, "training", inputs, train, val, self.epochs, self.learning_rate, progress, (0.0, 1.0))
        self.nets_ = [net]
        check_progress(progress, 1.0, "training done")

    def _net_samples(self, inputs: Inputs, site_mask: np.ndarray, index: int) -> Samples:
        """One row per site with all its intervals, as in training."""
        return inputs.site_samples(site_mask)

    def _outputs(self, x: torch.Tensor, depths: Sequence[int] | None = None) -> torch.Tensor:
        net = self.nets_[0].eval()
        features = net.trunk(x)
        heads = [net.heads[d] for d in self._chosen(depths)]
        return torch.cat([head.predict(head.first(features), None) for head in heads], dim=1)


def prediction_threads() -> int:
    """Threads a model without its own `n_threads` predicts on here."""
    return PREDICTION_THREADS or _available_cores()


def _available_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1
