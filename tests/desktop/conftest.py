"""QGIS desktop under a virtual display (Xvfb): one session of tests/desktop/desktop_session.py for all tests."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from soc_depth_mapper.scripts.qgis_desktop import REPO, launch, make_profile, missing_programs


@pytest.fixture(scope="session")
def desktop_session(tmp_path_factory) -> dict:
    """Runs the scripted session in QGIS desktop, with the plugin installed and enabled in a throw-away profile,
    and returns what it recorded (layer trees after each step, log messages, the error that stopped it if one
    did); its files lie in `out`."""
    missing = missing_programs()
    if missing:
        pytest.skip(f"{', '.join(missing)} not installed: run `make setup` (installs QGIS and Xvfb from Debian)")
    profiles = tmp_path_factory.mktemp("qgis_profiles")
    make_profile(profiles)
    out = tmp_path_factory.mktemp("desktop")
    env = {"SOC_DESKTOP_OUT": str(out), "SOC_DESKTOP_DATA": str(REPO / "sample_data" / "edgeroi")}
    result = launch(Path(__file__).with_name("desktop_session.py"), profiles, env, timeout=240)
    recorded = out / "session.json"
    assert recorded.exists(), f"QGIS quit without a record (exit {result.returncode}):\n{result.stderr[-3000:]}"
    session = json.loads(recorded.read_text(encoding="utf-8"))
    assert result.returncode == 0, f"QGIS did not quit cleanly (exit {result.returncode}):\n{result.stderr[-3000:]}"
    session["out"] = out
    return session
