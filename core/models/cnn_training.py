"""The CNNs' training loop: training rows and mini-batches, per-interval target scales, and mini-batch AdamW
with early stopping.

Inputs are scaled by `PatchEncoder` (ranks, so units and outliers do not matter) fitted on the training patches
only; targets standardised per depth interval with that interval's training mean and standard deviation; MSE
loss on the standardised targets; AdamW; early stopping on an inner validation split drawn by site (never the
caller's test folds), scored by the RMSE on the target's scale, restoring the best weights.

Why per-depth scales: SOC falls by an order of magnitude from the topsoil to 1 m, and its tail is
long (organic topsoils of 30–80 % beside mineral subsoils of 1 %). With one pooled scale the loss is dominated
by the topsoil's large values, the deep intervals' variation is lost in the noise, and a covariate signal
learnt from organic topsoils carries into every depth through the shared layers: on a survey like that the
pooled CNN mapped 40 % SOC at 60–100 cm, where no observation there exceeded 12 %. Standardising each interval
gives each depth's variation equal weight in the loss and scales each output back by its own spread.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable, Sequence
from typing import Any, Optional

import numpy as np
import torch
from torch import nn

from .base import check_progress
from .cnn_networks import PatchNet
from .encoding import centre_valid

#: sites per forward pass when scoring or predicting patches (bounds memory)
PREDICT_BATCH = 4096
#: seconds between cancellation checks inside an epoch
CHECK_INTERVAL_S = 0.5

ProgressCallback = Optional[Callable[[float, str], Any]]


def train_network(
    net: PatchNet,
    stage: str,
    inputs: Inputs,
    train: Samples,
    val: Samples,
    epochs: int,
    learning_rate: float,
    progress: ProgressCallback,
    progress_span: tuple[float, float],
    frozen: Sequence[nn.Module],
    *,
    batch_size: int,
    weight_decay: float,
    patience: int,
    seed: int,
    histories: dict[str, dict[str, Any]],
) -> None:
    """Mini-batch AdamW with early stopping on `val`; leaves the best weights in `net` and the RMSE per epoch
    in `histories[stage]`."""
    if len(train) < 2:
        raise ValueError(
            f"{stage}: only {len(train)} training sample(s); a CNN needs at least 2 sites with a "
            "target value. Add sites or choose fewer depth intervals."
        )
    parameters = [p for p in net.parameters() if p.requires_grad]
    optimiser = torch.optim.AdamW(parameters, lr=learning_rate, weight_decay=weight_decay)
    generator = torch.Generator().manual_seed(seed)
    #: RMSE on the target's (fitted) scale; the loss itself is on the standardised scale
    history: dict[str, Any] = {"train_rmse": [], "val_rmse": [], "best_epoch": None, "initial_val_rmse": None}
    histories[stage] = history
    best_loss, best_state, since_best = math.inf, None, 0
    if len(val) > 0:  # epoch 0: a fine-tuned copy keeps its starting weights unless training beats them
        best_loss, best_state = mean_loss(net, inputs, val), copy.deepcopy(net.state_dict())
        history["initial_val_rmse"], history["best_epoch"] = math.sqrt(best_loss), 0
    start, span = progress_span
    last_check = time.monotonic()
    for epoch in range(epochs):
        message = f"{stage} epoch {epoch + 1}/{epochs}"
        check_progress(progress, start + span * epoch / epochs, message)
        net.train()
        for module in frozen:
            module.eval()
        total, count = 0.0, 0
        for batch in batches(len(train), batch_size, generator):
            x, depth, y = inputs.batch(train, batch, generator)
            output = net(x, depth).flatten(1)
            observed = torch.isfinite(y)  # a multi-task row may miss some intervals
            if train.weights is None:
                loss = ((output - y)[observed] ** 2).mean()
            else:
                row_weights = train.weights[batch].to(inputs.device)[:, None].expand_as(y)[observed]
                loss = (row_weights * (output - y)[observed] ** 2).sum() / row_weights.sum()
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
            total += inputs.fitted_squared_error(train, batch, output.detach(), y)[observed].sum().item()
            count += int(observed.sum())
            if time.monotonic() - last_check > CHECK_INTERVAL_S:
                check_progress(progress, start + span * epoch / epochs, message)
                last_check = time.monotonic()
        history["train_rmse"].append(math.sqrt(total / count))
        if len(val) == 0:
            continue
        val_loss = mean_loss(net, inputs, val)
        history["val_rmse"].append(math.sqrt(val_loss))
        if val_loss < best_loss:
            best_loss, best_state, since_best = val_loss, copy.deepcopy(net.state_dict()), 0
            history["best_epoch"] = epoch + 1
        else:
            since_best += 1
            if since_best >= patience:
                break
    if best_state is not None:
        net.load_state_dict(best_state)
    net.eval()


def mean_loss(net: PatchNet, inputs: Inputs, samples: Samples) -> float:
    """Mean squared error on the target's (fitted) scale, weighted by the samples' weights if any."""
    net.eval()
    weights = torch.ones(len(samples)) if samples.weights is None else samples.weights
    row_weights = weights[:, None].expand_as(samples.targets)
    with torch.no_grad():
        total = 0.0
        for start in range(0, len(samples), PREDICT_BATCH):
            batch = torch.arange(start, min(start + PREDICT_BATCH, len(samples)))
            x, depth, y = inputs.batch(samples, batch, None)
            errors = inputs.fitted_squared_error(samples, batch, net(x, depth).flatten(1), y)
            if samples.weights is not None:
                errors = errors * row_weights[batch].to(errors.device)
            total += errors.nansum().item()
    if samples.weights is None:
        return total / int(torch.isfinite(samples.targets).sum())
    return total / float(row_weights[torch.isfinite(samples.targets)].sum())


def usable_targets(
    patches: np.ndarray, targets: np.ndarray, sample_weight: np.ndarray | None
) -> tuple[np.ndarray, np.ndarray | None]:
    """Targets with NaN where the site's centre cell has nodata or its weight is 0, and the weights checked."""
    usable = centre_valid(patches)
    if sample_weight is not None:
        sample_weight = np.asarray(sample_weight, dtype=float).ravel()
        if sample_weight.shape != (len(patches),) or not np.all(np.isfinite(sample_weight) & (sample_weight >= 0)):
            raise ValueError(
                f"Give one finite, non-negative sample weight per site: {len(patches)} sites, "
                f"{sample_weight.size} weights."
            )
        usable &= sample_weight > 0
    return np.where(usable[:, None], targets, np.nan), sample_weight


def depth_scales(targets: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per interval (column): mean and standard deviation of the observed values. An interval without
    observations takes the pooled mean, and one with fewer than two distinct values the pooled deviation."""
    finite = targets[np.isfinite(targets)]
    n_depths = targets.shape[1]
    mean = np.full(n_depths, finite.mean())
    std = np.full(n_depths, float(finite.std()) or 1.0)
    for d in range(n_depths):
        values = targets[np.isfinite(targets[:, d]), d]
        if values.size:
            mean[d] = values.mean()
        if values.size >= 2 and values.std() > 0:
            std[d] = values.std()
    return mean, std


class Samples:
    """Training rows: a site, the interval whose depth is fed (None: no depth input), the target(s) and the
    site's weight (None: all alike)."""

    def __init__(
        self, sites: np.ndarray, depths: np.ndarray | None, targets: np.ndarray, weights: np.ndarray | None = None
    ):
        self.sites = torch.from_numpy(sites.astype(np.int64))
        self.depths = None if depths is None else torch.from_numpy(depths.astype(np.int64))
        self.targets = torch.from_numpy(targets.astype(np.float32))
        self.weights = None if weights is None else torch.from_numpy(weights.astype(np.float32))

    def __len__(self) -> int:
        return len(self.sites)


class Inputs:
    """Encoded patches (and their 8 rotations/reflections when augmenting) on the training device."""

    def __init__(
        self,
        encoded: np.ndarray,
        targets: np.ndarray,
        depths: np.ndarray,
        device: torch.device,
        augment: bool,
        target_std: np.ndarray,
        site_weights: np.ndarray | None = None,
    ):
        self.targets = targets
        self.site_weights = site_weights
        self.device = device
        #: each interval's standard deviation, to turn standardised errors into errors on the target's scale
        self.std = torch.tensor(target_std, dtype=torch.float32, device=device)
        x = torch.from_numpy(encoded)
        variants = [x]
        if augment:
            variants = [torch.rot90(v, k, dims=(2, 3)) for v in (x, x.flip(3)) for k in range(4)]
        self.variants = torch.stack(variants).to(device)
        self.depths = torch.from_numpy(depths).reshape(-1, 2, 1, 1).to(device)

    def pooled_samples(self, site_mask: np.ndarray, interval: int | None = None) -> Samples:
        """One row per (site, interval) with a target, among the masked sites (and one interval if given)."""
        has_target = np.isfinite(self.targets) & site_mask[:, None]
        if interval is not None:
            has_target[:, np.arange(has_target.shape[1]) != interval] = False
        sites, depths = np.nonzero(has_target)
        return Samples(sites, depths, self.targets[sites, depths][:, None], self._weights_of(sites))

    def site_samples(self, site_mask: np.ndarray) -> Samples:
        """One row per masked site, with the targets at every interval, NaN where missing (multi-task)."""
        sites = np.flatnonzero(site_mask)
        return Samples(sites, None, self.targets[sites], self._weights_of(sites))

    def _weights_of(self, sites: np.ndarray) -> np.ndarray | None:
        return None if self.site_weights is None else self.site_weights[sites]

    def batch(
        self, samples: Samples, rows: torch.Tensor, generator: torch.Generator | None
    ) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor]:
        """Inputs for `rows`; with a generator (training) each row gets a random rotation/reflection."""
        sites = samples.sites[rows]
        variant = torch.zeros(len(rows), dtype=torch.int64)
        if generator is not None and len(self.variants) > 1:
            variant = torch.randint(len(self.variants), (len(rows),), generator=generator)
        x = self.variants[variant.to(self.device), sites.to(self.device)]
        depth = None if samples.depths is None else self.depths[samples.depths[rows].to(self.device)]
        return x, depth, samples.targets[rows].to(self.device)

    def fitted_squared_error(
        self, samples: Samples, rows: torch.Tensor, output: torch.Tensor, target: torch.Tensor
    ) -> torch.Tensor:
        """Squared errors on the fitted scale of standardised `output` and `target` for `rows` (NaN where the
        target is missing)."""
        # one column per interval (multi-task), or one column for the row's interval
        std = self.std[None] if samples.depths is None else self.std[samples.depths[rows].to(self.device)][:, None]
        return ((output - target) * std) ** 2


def batches(n: int, batch_size: int, generator: torch.Generator) -> list[torch.Tensor]:
    """Shuffled mini-batches; a last batch of one row joins the previous one (batch norm needs two)."""
    order = torch.randperm(n, generator=generator)
    batches = list(order.split(batch_size))
    if len(batches) > 1 and len(batches[-1]) == 1:
        batches[-2:] = [torch.cat(batches[-2:])]
    return batches
