"""Runs the installed plugin through `qgis_process.bin`, in a throw-away QGIS profile."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def qgis_process_command(tmp_path_factory) -> tuple[str, dict[str, str]]:
    """`qgis_process.bin` and the environment in which it has the plugin installed and enabled."""
    executable = shutil.which("qgis_process.bin")
    assert executable, "qgis_process.bin not found: run `make setup` (installs QGIS from Debian's packages)"
    config = tmp_path_factory.mktemp("qgis_config")
    plugins = config / "profiles" / "default" / "python" / "plugins"
    plugins.mkdir(parents=True)
    (plugins / "soc_depth_mapper").symlink_to(REPO, target_is_directory=True)
    env = {**os.environ, "QT_QPA_PLATFORM": "offscreen", "QGIS_CUSTOM_CONFIG_PATH": str(config)}
    subprocess.run([executable, "plugins", "enable", "soc_depth_mapper"], env=env, check=True, capture_output=True)
    return executable, env


@pytest.fixture(scope="session")
def qgis_process(qgis_process_command):
    """A function running `qgis_process.bin ARGS --json` with the plugin installed and enabled, as a user has it."""
    executable, env = qgis_process_command

    def run(*args: str, cwd: Path | None = None, check: bool = True) -> dict | subprocess.CompletedProcess:
        result = subprocess.run(
            [executable, "--json", *args], env=env, cwd=cwd, capture_output=True, text=True, timeout=900
        )
        if not check:
            return result
        assert result.returncode == 0, f"qgis_process failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
        return json.loads(result.stdout[result.stdout.index("{") :])

    return run
