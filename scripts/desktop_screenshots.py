"""Makes README's pictures of the maps from the real QGIS desktop, after a run of the Predict dialog on a finished
`make demo`: the main window with the maps as the plugin loads them (docs/images/desktop_maps.png) and the dialog
on its log (docs/images/predict_dialog.png).

    .venv/bin/python scripts/desktop_screenshots.py --demo demo_output --out docs/images

QGIS runs under Xvfb in a throw-away profile (see scripts/qgis_desktop.py); predict's outputs go to a temporary
folder and are deleted afterwards.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

from soc_depth_mapper.scripts.qgis_desktop import REPO, launch, make_profile, missing_programs

COVARIATES = REPO / "sample_data" / "edgeroi" / "covariates_250m.tif"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--demo", default="demo_output", help="a finished `make demo` (read only)")
    parser.add_argument("--out", default="docs/images", help="folder for the pictures")
    args = parser.parse_args()
    demo, out = Path(args.demo).resolve(), Path(args.out).resolve()
    if len(list(demo.glob("*.socmodel"))) != 1 or not (demo / "harmonised.gpkg").exists():
        sys.exit(f"{demo} is not a finished `make demo` (one *.socmodel and harmonised.gpkg): run `make demo`")
    missing = missing_programs()
    if missing:
        sys.exit(f"{', '.join(missing)} not installed: run `make setup` (installs QGIS and Xvfb)")
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="soc_desktop_") as scratch:
        work, profiles = Path(scratch) / "edgeroi", Path(scratch) / "profiles"
        work.mkdir()
        make_profile(profiles)
        env = {"SOC_SHOTS_DEMO": str(demo), "SOC_SHOTS_OUT": str(out), "SOC_SHOTS_WORK": str(work)}
        env["SOC_SHOTS_COVARIATES"] = str(COVARIATES)
        code = Path(__file__).with_name("desktop_screenshots_session.py")
        finished = launch(code, profiles, env, timeout=1200)
        record = work / "session.json"
        if not record.exists():
            sys.exit(f"QGIS quit without a record (exit {finished.returncode}):\n{finished.stderr[-3000:]}")
        session = json.loads(record.read_text(encoding="utf-8"))
    if "error" in session:
        sys.exit(f"The desktop session failed:\n{session['error']}")
    print("Layer tree:", json.dumps(session["tree"], ensure_ascii=False))
    print("Wrote", ", ".join(session["pictures"]))


if __name__ == "__main__":
    main()
