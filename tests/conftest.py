"""Fixtures shared by every test folder: a toy model kind that tests add through the model registry alone (to
show that nothing else names the kinds), and small file systems for fault injection."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from soc_depth_mapper.core import registry
from soc_depth_mapper.core.models.base import DepthModel

TOY_KIND = "toy_mean"
TOY_OPTION = "Toy mean (the mean of each depth everywhere)"


class ToyMeanModel(DepthModel):
    """Predicts each depth's mean training target plus `offset`, wherever every covariate has a value."""

    kind = TOY_KIND

    def __init__(self, offset: float = 0.0, random_state: int = 0):
        self.offset = offset
        self.random_state = random_state

    @property
    def patch_size(self) -> int:
        return 1

    def fit(self, patches, targets, intervals, categorical=(), progress=None) -> ToyMeanModel:
        self.means_ = np.nanmean(targets, axis=0) + self.offset
        return self

    def predict(self, patches: np.ndarray) -> np.ndarray:
        return np.tile(self.means_, (len(patches), 1))

    def predict_block(self, block: np.ndarray, depths: Sequence[int] | None = None) -> np.ndarray:
        chosen = list(range(len(self.means_))) if depths is None else list(depths)
        values = np.broadcast_to(self.means_[chosen, None, None], (len(chosen), *block.shape[1:])).copy()
        values[:, np.isnan(block).any(axis=0)] = np.nan
        return values

    def get_state(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        return {"kind": self.kind, "offset": self.offset}, {"means": self.means_}

    @classmethod
    def from_state(cls, config: dict[str, Any], arrays: dict[str, np.ndarray]) -> ToyMeanModel:
        model = cls(offset=config["offset"])
        model.means_ = arrays["means"]
        return model


def _register_toy(monkeypatch: pytest.MonkeyPatch) -> None:
    """Registers the toy kind and its setting on copies of the registry's tables, which `monkeypatch` puts back."""
    monkeypatch.setattr(registry, "_MODELS", dict(registry._MODELS))
    monkeypatch.setattr(registry, "_HYPERPARAMETERS", dict(registry._HYPERPARAMETERS))
    registry.add_hyperparameter(
        registry.Hyperparameter("offset", "TOY_OFFSET", "Toy: offset", float, 0.0, "Added to every prediction.")
    )
    registry.register(
        registry.ModelKind(TOY_KIND, "Toy mean", TOY_OPTION, lambda: ToyMeanModel, registry.CONFORMAL, ("offset",))
    )


@pytest.fixture()
def register_toy() -> Callable[[pytest.MonkeyPatch], None]:
    """The registration itself, for a test that checks it is undone."""
    return _register_toy


@pytest.fixture()
def toy_kind(monkeypatch) -> str:
    """The toy kind, registered for one test."""
    _register_toy(monkeypatch)
    return TOY_KIND


@pytest.fixture
def small_file_system(tmp_path) -> Iterator[Callable[..., Path]]:
    """`mount(size, prepare=None, leave_free=None, read_only=False)` mounts a tmpfs of `size` (e.g. "256k") on a
    new folder, runs `prepare(folder)`, then fills the file system (a file `filler`) until about `leave_free`
    bytes are free, or remounts it read-only, and returns the folder. Everything is unmounted after the test,
    also when it fails. Skips where a tmpfs cannot be mounted (not root, or not allowed in a container)."""
    mounted: list[Path] = []

    def mount(
        size: str,
        prepare: Callable[[Path], None] | None = None,
        leave_free: int | None = None,
        read_only: bool = False,
    ) -> Path:
        if os.geteuid() != 0:
            pytest.skip("mounting a small file system needs root")
        folder = tmp_path / f"mount{len(mounted)}"
        folder.mkdir()
        result = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)], capture_output=True, text=True
        )
        if result.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs here: {result.stderr.strip()}")
        mounted.append(folder)
        if prepare is not None:
            prepare(folder)
        if leave_free is not None:
            stats = os.statvfs(folder)
            (folder / "filler").write_bytes(b"\0" * max(stats.f_bavail * stats.f_frsize - leave_free, 0))
        if read_only:
            subprocess.run(["mount", "-o", "remount,ro", str(folder)], check=True, capture_output=True)
        return folder

    yield mount
    for folder in reversed(mounted):
        if subprocess.run(["umount", str(folder)], capture_output=True).returncode != 0:
            # still in use (a file a failed test left open): detach it now, freed when the file closes
            subprocess.run(["umount", "--lazy", str(folder)], check=True, capture_output=True)
