"""Fixtures shared by every test folder: small file systems for fault injection."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest


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
