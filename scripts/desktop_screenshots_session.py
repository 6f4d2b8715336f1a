"""Run inside QGIS desktop (`qgis --code`, under Xvfb) by scripts/desktop_screenshots.py.

Does what README's worked example tells a user: adds the demo's harmonised points and the covariates, opens
*Predict SOC maps* with the demo's model, asks for 90 % intervals, one map per depth and the area of
applicability, and presses Run. Then grabs the dialog on its log; the main window zoomed to the maps, the layer tree
and styles as the plugin left them (the Browser panel closed, the layer panel widened and the legends below the first
map folded, so that the layer panel shows the whole group); and the canvas with each depth map ticked alone.
Records what it saw in a JSON file; quits at the end, also when a step fails.
"""

from __future__ import annotations

import json
import os
import traceback
from pathlib import Path

from qgis.core import QgsLayerTree, QgsProject, QgsRasterLayer, QgsVectorLayer
from qgis.PyQt.QtCore import QRect, Qt, QTimer
from qgis.PyQt.QtGui import QColor, QFont, QImage, QPainter
from qgis.PyQt.QtWidgets import QDockWidget
from qgis.utils import iface

from soc_depth_mapper.scripts.qgis_desktop import (
    WINDOW,
    canvas_rect,
    dialog_log,
    draw_canvas,
    grab,
    run_in_dialog,
    show_main_window,
    zoom_to,
)

DEMO = Path(os.environ["SOC_SHOTS_DEMO"])
OUT = Path(os.environ["SOC_SHOTS_OUT"])
WORK = Path(os.environ["SOC_SHOTS_WORK"])  # predict's outputs, as a user would save them
COVARIATES = Path(os.environ["SOC_SHOTS_COVARIATES"])
DIALOG = (1000, 700)
LAYER_PANEL_WIDTH = 400
#: README's pictures are scaled to this width: smaller files, still readable
PICTURE_WIDTH = 1200
PREDICT_TIMEOUT_MS = 15 * 60 * 1000

results: dict = {"window": WINDOW, "picture_width": PICTURE_WIDTH}


def tree(node) -> list:
    """Names in the layer tree under `node`: a group as [name, children], a layer as its name."""
    return [
        [child.name(), tree(child)] if QgsLayerTree.isGroup(child) else child.layer().name()
        for child in node.children()
    ]


def session() -> None:
    show_main_window(*WINDOW)
    project = QgsProject.instance()
    points = QgsVectorLayer(str(DEMO / "harmonised.gpkg"), "harmonised", "ogr")
    covariates = QgsRasterLayer(str(COVARIATES), COVARIATES.stem)
    project.addMapLayers([covariates, points])  # as Add Layer does, one after the other
    (model,) = DEMO.glob("*.socmodel")
    parameters = {
        "MODEL": str(model),
        "COVARIATES": [covariates.id()],
        "UNCERTAINTY": 1,
        "INTERVAL": 90,
        "OUTPUT": str(WORK / "soc_maps.tif"),
        "OUTPUT_UNCERTAINTY": str(WORK / "soc_intervals.tif"),
        "OUTPUT_FOLDER": str(WORK / "maps"),
        "OUTPUT_AOA": str(WORK / "aoa.tif"),
    }
    dialog = run_in_dialog("socdepth:predict", parameters, PREDICT_TIMEOUT_MS, size=DIALOG)
    results["log"] = dialog_log(dialog)
    grab(dialog, OUT / "predict_dialog.png")
    dialog.close()
    root = project.layerTreeRoot()
    results["tree"] = tree(root)

    group = root.findGroup("SOC depth maps").children()[0]  # the run's group
    depth_maps = [node for node in group.children() if node.itemVisibilityChecked()]
    results["depth_maps"] = [node.layer().name() for node in depth_maps]
    # room in the layer panel for the whole group: the Browser panel closed, the panel as wide as the layers'
    # names, the maps below the first folded
    window = iface.mainWindow()
    window.findChild(QDockWidget, "Browser").hide()
    window.resizeDocks([window.findChild(QDockWidget, "Layers")], [LAYER_PANEL_WIDTH], Qt.Horizontal)
    for node in group.children()[1:]:
        node.setExpanded(False)
    iface.layerTreeView().setCurrentLayer(depth_maps[0].layer())
    zoom_to(depth_maps[0].layer())
    draw_canvas()
    grab(iface.mainWindow(), OUT / "desktop_maps.png", PICTURE_WIDTH)
    results["canvas"] = canvas_rect()
    depth_montage(depth_maps, OUT / "desktop_depths.png")
    results["pictures"] = [str(OUT / name) for name in ("desktop_maps.png", "desktop_depths.png", "predict_dialog.png")]


def depth_montage(depth_maps: list, path: Path, columns: int = 3) -> None:
    """The canvas with each depth map ticked alone, in the layer tree's order, side by side and named: the depths
    on their shared ramp compare at a glance. The maps are ticked as before afterwards."""
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
    try:
        session()
    except Exception:  # reported by desktop_screenshots.py; QGIS must quit either way
        results["error"] = traceback.format_exc()
    (WORK / "session.json").write_text(json.dumps(results, indent=1, ensure_ascii=False), encoding="utf-8")
    QgsProject.instance().clear()  # nothing left to save: no question on exit
    QTimer.singleShot(0, iface.actionExit().trigger)


QTimer.singleShot(0, main)
