"""QGIS desktop under a virtual display (Xvfb): one session of tests/desktop/desktop_session.py for all tests."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def desktop_session(tmp_path_factory) -> dict:
    """Runs the scripted session in QGIS desktop, with the plugin installed and enabled in a throw-away profile,
    and returns what it recorded (layer trees after each step, log messages, the error that stopped it if one
    did); its files lie in `out`."""
    missing = [program for program in ("xvfb-run", "qgis", "qgis_process.bin") if shutil.which(program) is None]
    if missing:
        pytest.skip(f"{', '.join(missing)} not installed: run `make setup` (installs QGIS and Xvfb from Debian)")
    profiles = tmp_path_factory.mktemp("qgis_profiles")
    plugins = profiles / "profiles" / "default" / "python" / "plugins"
    plugins.mkdir(parents=True)
    (plugins / "soc_depth_mapper").symlink_to(REPO, target_is_directory=True)
    out = tmp_path_factory.mktemp("desktop")
    env = {
        **os.environ,
        "QGIS_CUSTOM_CONFIG_PATH": str(profiles),
        "SOC_DESKTOP_OUT": str(out),
        "SOC_DESKTOP_DATA": str(REPO / "sample_data" / "edgeroi"),
        "OMP_NUM_THREADS": "1",
    }
    enable = subprocess.run(
        ["qgis_process.bin", "plugins", "enable", "soc_depth_mapper"],
        env={**env, "QT_QPA_PLATFORM": "offscreen"},
        capture_output=True,
        text=True,
    )
    assert enable.returncode == 0, enable.stdout + enable.stderr
    env.pop("QGIS_CUSTOM_CONFIG_PATH")
    env.pop("QT_QPA_PLATFORM", None)  # a real (virtual) display, not offscreen
    command = ["xvfb-run", "-a", "-s", "-screen 0 1280x1024x24", "qgis", "--nologo", "--noversioncheck"]
    command += ["--profiles-path", str(profiles), "--code", str(Path(__file__).with_name("desktop_session.py"))]
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=240)
    recorded = out / "session.json"
    assert recorded.exists(), f"QGIS quit without a record (exit {result.returncode}):\n{result.stderr[-3000:]}"
    session = json.loads(recorded.read_text(encoding="utf-8"))
    assert result.returncode == 0, f"QGIS did not quit cleanly (exit {result.returncode}):\n{result.stderr[-3000:]}"
    session["out"] = out
    return session
