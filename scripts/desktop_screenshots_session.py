"""Run inside QGIS desktop (`qgis --code`, under Xvfb) by scripts/desktop_screenshots.py.

Does what README's worked example tells a user: with the main window at a fixed size, adds the demo's harmonised
points and the covariates, then `take_pictures` runs *Predict SOC maps* in its dialog with the demo's model and
grabs the dialog, the main window and the canvas. Records what it saw in a JSON file; quits at the end, also when a
step fails.
"""

from __future__ import annotations

import json
import os
import traceback
from pathlib import Path

from qgis.core import QgsProject, QgsRasterLayer, QgsVectorLayer
from qgis.PyQt.QtCore import QTimer
from qgis.utils import iface

from soc_depth_mapper.scripts.desktop_screenshots import take_pictures
from soc_depth_mapper.scripts.qgis_desktop import WINDOW, show_main_window

DEMO = Path(os.environ["SOC_SHOTS_DEMO"])
OUT = Path(os.environ["SOC_SHOTS_OUT"])
WORK = Path(os.environ["SOC_SHOTS_WORK"])  # predict's outputs, as a user would save them
COVARIATES = Path(os.environ["SOC_SHOTS_COVARIATES"])


def main() -> None:
    try:
        show_main_window(*WINDOW)
        points = QgsVectorLayer(str(DEMO / "harmonised.gpkg"), "harmonised", "ogr")
        covariates = QgsRasterLayer(str(COVARIATES), COVARIATES.stem)
        QgsProject.instance().addMapLayers([covariates, points])
        (model,) = DEMO.glob("*.socmodel")
        results = take_pictures(model, covariates, OUT, WORK)
    except Exception:  # reported by desktop_screenshots.py; QGIS must quit either way
        results = {"error": traceback.format_exc()}
    (WORK / "session.json").write_text(json.dumps(results, indent=1, ensure_ascii=False), encoding="utf-8")
    QgsProject.instance().clear()  # nothing left to save: no question on exit
    QTimer.singleShot(0, iface.actionExit().trigger)


QTimer.singleShot(0, main)
