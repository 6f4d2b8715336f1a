"""Makes README's pictures of the maps from the real QGIS desktop, after a run of the Predict dialog on a finished
`make demo`: the main window with the maps as the plugin loads them (docs/images/desktop_maps.png), the canvas with
each depth map ticked alone (docs/images/desktop_depths.png) and the dialog on its log (docs/images/predict_dialog.png).

    .venv/bin/python scripts/desktop_screenshots.py --demo demo_output --out docs/images

QGIS runs under Xvfb in a throw-away profile (see scripts/qgis_desktop.py) and executes
desktop_screenshots_session.py, which calls `take_pictures`; predict's outputs go to a temporary folder, deleted
afterwards. The desktop tests call `take_pictures` too.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

from soc_depth_mapper.scripts.qgis_desktop import (
    REPO,
    WINDOW,
    canvas_rect,
    dialog_log,
    draw_canvas,
    grab,
    launch,
    make_profile,
    missing_programs,
    run_in_dialog,
    zoom_to,
)

COVARIATES = REPO / "sample_data" / "edgeroi" / "covariates_250m.tif"
DIALOG = (1000, 700)
LAYER_PANEL_WIDTH = 400
#: the pictures are scaled to this width: smaller files, still readable
PICTURE_WIDTH = 1200
PREDICT_TIMEOUT_MS = 15 * 60 * 1000


def take_pictures(model: Path, covariates, out: Path, work: Path) -> dict:
    """Inside QGIS desktop, with the main window shown and the `covariates` layer in the project: runs *Predict SOC
    maps* in its dialog with `model`, 90 % intervals, one map per depth and the area of applicability (saved in
    `work`), and saves the pictures into `out`. Returns what it saw: the pictures, the run's layers, the map's
    place in the window picture."""
    from qgis.core import QgsProject
    from qgis.PyQt.QtCore import Qt
    from qgis.PyQt.QtWidgets import QDockWidget
    from qgis.utils import iface

    parameters = {
        "MODEL": str(model),
        "COVARIATES": [covariates.id()],
        "UNCERTAINTY": 1,
        "INTERVAL": 90,
        "OUTPUT": str(work / "soc_maps.tif"),
        "OUTPUT_UNCERTAINTY": str(work / "soc_intervals.tif"),
        "OUTPUT_FOLDER": str(work / "maps"),
        "OUTPUT_AOA": str(work / "aoa.tif"),
    }
    dialog = run_in_dialog("socdepth:predict", parameters, PREDICT_TIMEOUT_MS, size=DIALOG)
    seen = {"log": dialog_log(dialog)}
    grab(dialog, out / "predict_dialog.png")
    dialog.close()

    group = QgsProject.instance().layerTreeRoot().findGroup("SOC depth maps").children()[0]  # this run's, on top
    seen["run_group"] = group.name()
    seen["layers"] = [[node.layer().name(), node.itemVisibilityChecked()] for node in group.children()]
    depth_maps = [node for node in group.children() if node.itemVisibilityChecked()]
    # room in the layer panel for the whole group: the Browser panel closed, the panel as wide as the layers'
    # names (the plugin unfolds only the first map's legend)
    window = iface.mainWindow()
    window.findChild(QDockWidget, "Browser").hide()
    window.resizeDocks([window.findChild(QDockWidget, "Layers")], [LAYER_PANEL_WIDTH], Qt.Horizontal)
    iface.layerTreeView().setCurrentLayer(depth_maps[0].layer())
    zoom_to(depth_maps[0].layer())
    draw_canvas()
    grab(window, out / "desktop_maps.png", PICTURE_WIDTH)
    seen["map_in_window"] = [round(value * PICTURE_WIDTH / WINDOW[0]) for value in canvas_rect()]
    depth_montage(depth_maps, out / "desktop_depths.png")
    seen["pictures"] = {name: str(out / f"{name}.png") for name in ("desktop_maps", "desktop_depths", "predict_dialog")}
    return seen


def depth_montage(depth_maps: list, path: Path, columns: int = 3) -> None:
    """The canvas with each depth map ticked alone, in the layer tree's order, side by side and named: the depths
    on their shared ramp compare at a glance. The maps are ticked as before afterwards."""
    from qgis.PyQt.QtCore import QRect, Qt
    from qgis.PyQt.QtGui import QColor, QFont, QImage, QPainter
    from qgis.utils import iface

    canvas = iface.mapCanvas()
    views = []
    for shown in depth_maps:
        for node in depth_maps:
            node.setItemVisibilityChecked(node is shown)
        draw_canvas()
        views.append((shown.layer().name(), canvas.grab().toImage()))
    for node in depth_maps:
        node.setItemVisibilityChecked(True)
    tile_width = PICTURE_WIDTH // columns
    tiles = [(name, view.scaledToWidth(tile_width, Qt.SmoothTransformation)) for name, view in views]
    tile_height = tiles[0][1].height()
    rows = -(-len(tiles) // columns)
    montage = QImage(tile_width * columns, tile_height * rows, QImage.Format_RGB32)
    montage.fill(Qt.white)
    painter = QPainter(montage)
    painter.setFont(QFont("Sans", 11))
    for index, (name, tile) in enumerate(tiles):
        left, top = (index % columns) * tile_width, (index // columns) * tile_height
        painter.drawImage(left, top, tile)
        label = painter.boundingRect(QRect(left + 6, top + 6, tile_width, 30), Qt.AlignLeft, name)
        painter.fillRect(label.adjusted(-4, -2, 4, 2), QColor(255, 255, 255, 220))
        painter.drawText(label, Qt.AlignLeft, name)
    painter.end()
    if not montage.save(str(path)):
        raise OSError(f"could not write {path}")


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
    print(f"Layers of the run's group '{session['run_group']}':", ", ".join(name for name, _ in session["layers"]))
    print("Wrote", ", ".join(session["pictures"].values()))


if __name__ == "__main__":
    main()
