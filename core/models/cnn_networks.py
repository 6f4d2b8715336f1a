"""The CNNs' network: conv blocks (3×3 convolution → 2×2 max-pool → Swish → batch norm → dropout), then
fully-connected blocks (linear → Swish → batch norm → dropout), then a linear output; after Han et al. 2025,
Front. Environ. Sci. 13:1580085. Training loops live in `cnn_training`, the estimators in `cnn`.

Why it is built so that a whole raster block can be evaluated at once ("dense" evaluation):
the convolutions are unpadded and the max-pool has stride 1, so every layer of the trunk is translation
equivariant: running it on a large block gives, at each position, what it gives on the patch around that
position. Each conv block trims 3 cells, so a p×p patch leaves an s×s map (s = p - 3 × blocks; 1×1 for the
default 7×7 patch and two blocks). "Flatten + first fully-connected layer" is written as a convolution with an
s×s kernel, and the later fully-connected layers as 1×1 convolutions; batch norm and dropout act per channel
in evaluation mode. On a patch the network returns one value; on a block with a halo of p // 2 it returns the
same value for every inner cell, computed once per cell instead of once per overlapping patch. The depth
inputs enter after the flatten step as a 1×1 term added to every cell, so one trunk pass serves all depths.
A stride-2 pool or padded convolutions would break this equality.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F  # noqa: N812 - torch's own convention

CONV_KERNEL = 3
POOL_KERNEL = 2
#: cells a conv block trims from a patch side: valid 3×3 convolution (2) + stride-1 2×2 max-pool (1)
TRIM_PER_CONV_BLOCK = CONV_KERNEL - 1 + POOL_KERNEL - 1
#: depths are fed as log1p(cm) / log1p(DEPTH_SCALE_CM): 0–1 over 0–200 cm, with room between shallow intervals
DEPTH_SCALE_CM = 200.0
#: cells per chunk when the fully-connected heads predict: small enough for their activations to stay in cache
HEAD_CHUNK_CELLS = 8192


def depth_features(intervals: np.ndarray) -> np.ndarray:
    """(D, 2) intervals in cm -> (D, 2) network inputs, log-scaled so that 0–5 and 5–15 cm stay apart."""
    return (np.log1p(np.asarray(intervals, dtype=float)) / math.log1p(DEPTH_SCALE_CM)).astype(np.float32)


class SlidingMax(nn.Module):
    """Max-pooling with stride 1 (no downsampling). At prediction time it takes the maximum of the k² shifted
    views of the input, which gives the same values as `max_pool2d` some 30 times faster on the large maps of
    dense prediction (PyTorch's CPU kernel is slow at stride 1); training keeps `max_pool2d` and its gradients."""

    def __init__(self, kernel: int):
        super().__init__()
        self.kernel = kernel

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training:
            return F.max_pool2d(x, self.kernel, stride=1)
        k = self.kernel
        rows, cols = x.shape[-2] - k + 1, x.shape[-1] - k + 1
        out = x[..., :rows, :cols]
        for i in range(k):
            for j in range(k):
                if i or j:
                    out = torch.maximum(out, x[..., i : i + rows, j : j + cols])
        return out


class ConvBlock(nn.Sequential):
    def __init__(self, in_channels: int, out_channels: int, dropout: float):
        super().__init__(
            nn.Conv2d(in_channels, out_channels, CONV_KERNEL),
            SlidingMax(POOL_KERNEL),
            nn.SiLU(),
            nn.BatchNorm2d(out_channels),
            nn.Dropout(dropout),
        )


class DenseBlock(nn.Sequential):
    """Swish → batch norm → dropout after a fully-connected layer that the caller applies."""

    def __init__(self, units: int, dropout: float):
        super().__init__(nn.SiLU(), nn.BatchNorm2d(units), nn.Dropout(dropout))


class Head(nn.Module):
    """Fully-connected blocks as convolutions: `first` is flatten + linear over the s×s trunk output."""

    def __init__(self, in_channels: int, footprint: int, units: Sequence[int], n_depth_inputs: int, dropout: float):
        super().__init__()
        self.first = nn.Conv2d(in_channels, units[0], footprint)
        self.depth = nn.Conv2d(n_depth_inputs, units[0], 1, bias=False) if n_depth_inputs else None
        self.blocks = nn.ModuleList([DenseBlock(units[0], dropout)])
        for n_in, n_out in zip(units[:-1], units[1:]):
            self.blocks.append(nn.Sequential(nn.Conv2d(n_in, n_out, 1), DenseBlock(n_out, dropout)))
        self.out = nn.Conv2d(units[-1], 1, 1)

    def finish(self, first_layer: torch.Tensor, depth: torch.Tensor | None) -> torch.Tensor:
        """Everything after the first linear map; `depth` is (N or 1, 2, 1, 1) and broadcasts over cells."""
        hidden = first_layer if self.depth is None else first_layer + self.depth(depth)
        for block in self.blocks:
            hidden = block(hidden)
        return self.out(hidden)

    def predict(self, first_layer: torch.Tensor, depth: torch.Tensor | None) -> torch.Tensor:
        """`finish` in evaluation mode for one depth (`depth` is (1, 2, 1, 1)), computed faster.

        The heads run once per depth on every cell, so they, not the trunk, set the pace of dense prediction.
        Here each batch norm, an affine map at prediction time, is folded into the 1×1 layer after it, dropout
        is skipped, and the cells go through in chunks whose activations stay in the CPU cache.
        """
        n, channels, rows, cols = first_layer.shape
        cells = first_layer.transpose(0, 1).reshape(channels, -1)  # (C, N·H·W): a view for a block or patches
        offset = None if self.depth is None else self.depth(depth).reshape(channels, 1)
        layers = [*(block[0] for block in self.blocks[1:]), self.out]
        norms = [self.blocks[0][1], *(block[1][1] for block in self.blocks[1:])]
        folded = []
        for layer, norm in zip(layers, norms):
            scale = norm.weight / torch.sqrt(norm.running_var + norm.eps)
            shift = norm.bias - norm.running_mean * scale
            matrix = layer.weight[:, :, 0, 0]
            folded.append((matrix * scale[None, :], (layer.bias + matrix @ shift)[:, None]))
        out = torch.empty(1, cells.shape[1], dtype=first_layer.dtype, device=first_layer.device)
        for start in range(0, cells.shape[1], HEAD_CHUNK_CELLS):
            chunk = cells[:, start : start + HEAD_CHUNK_CELLS]
            hidden = F.silu(chunk) if offset is None else F.silu(chunk + offset, inplace=True)
            for i, (matrix, bias) in enumerate(folded):
                hidden = torch.addmm(bias, matrix, hidden)
                if i < len(folded) - 1:
                    hidden = F.silu(hidden, inplace=True)
            out[:, start : start + HEAD_CHUNK_CELLS] = hidden
        return out.reshape(1, n, rows, cols).transpose(0, 1)

    def layers(self) -> list[nn.Module]:
        """The fully-connected layers in order, each with its activation, norm and dropout."""
        first = [m for m in (self.first, self.depth, self.blocks[0]) if m is not None]
        return [nn.ModuleList(first), *self.blocks[1:]]


class PatchNet(nn.Module):
    """Conv trunk plus `n_heads` heads; (N, C, p + k, p + k) -> (N, n_heads, 1 + k, 1 + k)."""

    def __init__(
        self,
        in_channels: int,
        patch_size: int,
        conv_channels: Sequence[int],
        dense_units: Sequence[int],
        dropout: float,
        n_depth_inputs: int,
        n_heads: int,
    ):
        super().__init__()
        widths = [in_channels, *conv_channels]
        self.trunk = nn.Sequential(*(ConvBlock(a, b, dropout) for a, b in zip(widths[:-1], widths[1:])))
        footprint = patch_size - TRIM_PER_CONV_BLOCK * len(conv_channels)
        self.heads = nn.ModuleList(
            Head(widths[-1], footprint, dense_units, n_depth_inputs, dropout) for _ in range(n_heads)
        )

    def forward(self, x: torch.Tensor, depth: torch.Tensor | None = None) -> torch.Tensor:
        features = self.trunk(x)
        return torch.cat([head.finish(head.first(features), depth) for head in self.heads], dim=1)

    def layers(self) -> list[nn.Module]:
        """Conv blocks then the fully-connected layers of the first head: what `freeze_layers` counts."""
        return [*self.trunk, *self.heads[0].layers()]
