"""Run inside QGIS desktop (`qgis --code desktop_session.py`, under Xvfb) by tests/desktop/conftest.py.

Does what a user does in the dialogs — train with the out-of-fold points loaded, predict with a layer of their own
selected, predict again with one of the plugin's maps selected, run an unrelated tool, a batch of two rows, predict
with the dialog's defaults (a temporary map, no per-depth folder), run the shipped workflow model with a map
selected — each through the dialogs' result handling (`handleAlgorithmResults`), and after each step records the
layer tree. Then shows one depth map with its legend,
renders the map canvas and grabs the main window to PNG files, and takes README's pictures as
scripts/desktop_screenshots.py does (a run of the Predict dialog itself). Everything, with every message the log
received, goes to a JSON file for the tests to check; QGIS quits at the end, also when a step fails.
"""

from __future__ import annotations

import json
import os
import traceback
from pathlib import Path

from processing.gui.Postprocessing import handleAlgorithmResults
from processing.tools import dataobjects
from qgis.core import (
    QgsApplication,
    QgsLayerTree,
    QgsMapLayerType,
    QgsProcessingFeedback,
    QgsProcessingMultiStepFeedback,
    QgsProcessingOutputLayerDefinition,
    QgsProject,
    QgsRasterLayer,
    QgsVectorLayer,
)
from qgis.PyQt.QtCore import QTimer
from qgis.utils import iface

from soc_depth_mapper.scripts.desktop_screenshots import take_pictures
from soc_depth_mapper.scripts.qgis_desktop import (
    WINDOW,
    canvas_rect,
    draw_canvas,
    grab,
    settle,
    show_main_window,
    zoom_to,
)

OUT = Path(os.environ["SOC_DESKTOP_OUT"])
DATA = Path(os.environ["SOC_DESKTOP_DATA"])
GSM = ["0_5", "5_15", "15_30", "30_60", "60_100", "100_200"]
HORIZONS_URI = "file://{}?type=csv&xField=x&yField=y&crs=EPSG:28355&detectTypes=yes"

messages: list[dict] = []
results: dict = {"steps": {}, "messages": messages}


def record_message(message: str, tag: str, level) -> None:
    messages.append({"message": message, "tag": tag, "level": int(level)})


def tree(node) -> list[dict]:
    """The layer tree under `node`: groups with their children, layers with what the tests check."""
    entries = []
    for child in node.children():
        if QgsLayerTree.isGroup(child):
            entries.append({"group": child.name(), "visible": child.itemVisibilityChecked(), "children": tree(child)})
            continue
        layer = child.layer()
        entry = {"layer": layer.name(), "visible": child.itemVisibilityChecked(), "source": layer.source()}
        entry["legend_open"] = child.isExpanded()
        entry["renderer"] = type(layer.renderer()).__name__ if layer.renderer() else None
        if layer.type() == QgsMapLayerType.RasterLayer:
            entry["band"] = getattr(layer.renderer(), "band", lambda: None)()
            shader = getattr(layer.renderer(), "shader", lambda: None)()
            if shader is not None:
                function = shader.rasterShaderFunction()
                entry["range"] = [function.minimumValue(), function.maximumValue()]
                items = function.colorRampItemList()
                entry["legend"] = [[item.value, item.label, item.color.name()] for item in items]
                entry["legend_suffix"] = function.legendSettings().suffix()
        else:
            entry["fields"] = layer.fields().names()
            renderer = layer.renderer()
            if hasattr(renderer, "rootRule"):
                entry["rules"] = [
                    {"label": rule.label(), "active": rule.active(), "children": len(rule.children())}
                    for rule in renderer.rootRule().children()
                ]
        entries.append(entry)
    return entries


class DialogFeedback(QgsProcessingFeedback):
    """Like the dialog's feedback: shown to the user, not copied to the message log; keeps the errors."""

    def __init__(self):
        super().__init__(False)
        self.errors: list[str] = []

    def reportError(self, error, fatalError=False):  # noqa: N802, N803 - QGIS API
        self.errors.append(error)


def run(algorithm_id: str, parameters: dict, step: str) -> dict:
    """Runs an algorithm as its dialog does, loads its results as the dialog does, records the tree."""
    algorithm = QgsApplication.processingRegistry().createAlgorithmById(algorithm_id)
    feedback = DialogFeedback()
    context = dataobjects.createContext(feedback)
    outputs, ok = algorithm.run(algorithm.preprocessParameters(parameters), context, feedback)
    assert ok, f"{step}: {algorithm_id} failed: {feedback.errors}"
    loaded_all = handleAlgorithmResults(algorithm, context, feedback, True, parameters)
    assert loaded_all, f"{step}: loading failed: {feedback.errors}"
    settle()
    results["steps"][step] = {"tree": tree(QgsProject.instance().layerTreeRoot()), "outputs": jsonable(outputs)}
    return outputs


def run_batch(algorithm_id: str, rows: list[dict], step: str) -> None:
    """Rows run as BatchAlgorithmDialog.runAlgorithm runs them (QGIS 3.22): one algorithm, a context per row,
    each row's layers loaded before the next row starts."""
    algorithm = QgsApplication.processingRegistry().createAlgorithmById(algorithm_id)
    feedback = DialogFeedback()
    multi_feedback = QgsProcessingMultiStepFeedback(len(rows), feedback)
    for number, row in enumerate(rows):
        multi_feedback.setCurrentStep(number)
        parameters = algorithm.preprocessParameters(row)
        context = dataobjects.createContext(feedback)
        _, ok = algorithm.run(parameters, context, multi_feedback)
        assert ok, f"{step}: row {number + 1} failed: {feedback.errors}"
        assert handleAlgorithmResults(algorithm, context, multi_feedback, False, parameters)
        settle()
    results["steps"][step] = {"tree": tree(QgsProject.instance().layerTreeRoot())}


def jsonable(outputs: dict) -> dict:
    return {key: value if isinstance(value, (str, int, float, bool)) else str(value) for key, value in outputs.items()}


def loaded(path: Path) -> QgsProcessingOutputLayerDefinition:
    """An output loaded on completion, as the dialog's 'Open output file after running' does."""
    return QgsProcessingOutputLayerDefinition(str(path), QgsProject.instance())


def select(layer) -> None:
    iface.layerTreeView().setCurrentLayer(layer)
    settle()


def _inside(node, group) -> bool:
    while node is not None:
        if node is group:
            return True
        node = node.parent()
    return False


def screenshot(group_name: str) -> None:
    """Shows only the maps of the group `group_name`, renders the canvas to a PNG, grabs the main window (at its
    full size and scaled to half its width, as README's pictures are made)."""
    root = QgsProject.instance().layerTreeRoot()
    for node in root.findLayers():
        node.setItemVisibilityChecked(False)
    shown = next(group for group in root.findGroups(True) if group.name() == group_name)
    first = shown.findLayers()[0]
    first.setItemVisibilityChecked(True)
    node = first.parent()
    while node is not None:
        if QgsLayerTree.isGroup(node):
            node.setItemVisibilityChecked(True)
        node = node.parent()
    for other in root.findGroups(True):  # the legend of the shown map in view, the rest folded away
        other.setExpanded(_inside(first, other))
    for node in root.findLayers():
        node.setExpanded(node is first)
    iface.layerTreeView().setCurrentLayer(first.layer())
    iface.layerTreeView().scrollTo(iface.layerTreeView().currentIndex())
    zoom_to(first.layer())
    draw_canvas()
    iface.mapCanvas().saveAsImage(str(OUT / "canvas.png"))
    grab(iface.mainWindow(), OUT / "window.png")
    grab(iface.mainWindow(), OUT / "window_scaled.png", width=WINDOW[0] // 2)
    results["screenshot"] = {
        "layer": first.layer().name(),
        "canvas": str(OUT / "canvas.png"),
        "window": str(OUT / "window.png"),
        "window_scaled": str(OUT / "window_scaled.png"),
        "window_size": WINDOW,
        "canvas_rect": canvas_rect(),
    }


def dialog_field_picks() -> None:
    """Opens harmonise's dialog on a layer with depth fields named in other cases and a text field, then on one
    whose depth fields have other names, and records which fields the depth pickers chose and offer."""
    from processing.gui.AlgorithmDialog import AlgorithmDialog

    layers = {
        "typed": "field=profile:string&field=TOP:integer&field=Bottom:double&field=top_note:string",
        "other_names": "field=profile:string&field=upper:integer&field=lower:integer",
    }
    results["field_picks"] = {}
    for key, fields in layers.items():
        layer = QgsVectorLayer(f"Point?crs=EPSG:28355&{fields}", key, "memory")
        QgsProject.instance().addMapLayer(layer, False)  # a dialog offers the project's layers
        dialog = AlgorithmDialog(QgsApplication.processingRegistry().createAlgorithmById("socdepth:harmonise"))
        wrappers = dialog.mainWidget().wrappers
        wrappers["INPUT"].setParameterValue(layer, dataobjects.createContext())
        settle()
        picks = {}
        for name in ("TOP_FIELD", "BOTTOM_FIELD"):
            combo = wrappers[name].wrappedWidget()
            offered = [combo.itemText(index) for index in range(combo.count())]
            chosen = wrappers[name].parameterValue()  # a NULL QVariant where nothing is chosen
            picks[name] = {"chosen": chosen if isinstance(chosen, str) else None, "offered": offered}
        results["field_picks"][key] = picks
        dialog.close()
        QgsProject.instance().removeMapLayer(layer)


def session() -> None:
    show_main_window(*WINDOW)
    project = QgsProject.instance()
    for run_folder in ("first", "second", "batch_80", "batch_95", "workflow"):
        (OUT / run_folder).mkdir()
    horizons = QgsVectorLayer(HORIZONS_URI.format(DATA / "horizons.csv"), "horizons", "delimitedtext")
    covariates = QgsRasterLayer(str(DATA / "covariates_250m.tif"), "cov")
    # the user's own data, in a group of their own
    mine = project.layerTreeRoot().addGroup("my data")
    for layer in (horizons, covariates):
        project.addMapLayer(layer, False)
        mine.addLayer(layer)
    QgsApplication.messageLog().messageReceived.connect(record_message)
    dialog_field_picks()

    harmonised = run(
        "socdepth:harmonise",
        {
            "INPUT": horizons,
            "PROFILE_FIELD": "SOURCEID",
            "TOP_FIELD": "top",
            "BOTTOM_FIELD": "bottom",
            "VALUE_FIELDS": ["ORCDRC"],
            "OUTPUT": str(OUT / "harmonised.gpkg"),
        },
        "harmonise",
    )["OUTPUT"]
    select(covariates)
    model = run(
        "socdepth:train",
        {
            "INPUT": harmonised,
            "TARGET_FIELDS": [f"ORCDRC_{d}" for d in GSM],
            "COVARIATES": [covariates],
            "MODEL": 0,
            "VALIDATION": 1,
            "FOLDS": 3,
            "N_TREES": 10,
            "OUTPUT_MODEL": str(OUT / "model.socmodel"),
            "OUTPUT_PREDICTIONS": loaded(OUT / "out_of_fold.gpkg"),
        },
        "train",
    )["OUTPUT_MODEL"]

    select(covariates)  # a layer of the user's own group
    run(
        "socdepth:predict",
        {
            "MODEL": model,
            "COVARIATES": [covariates],
            "UNCERTAINTY": 1,
            "INTERVAL": 80,
            "OUTPUT": loaded(OUT / "first" / "soc.tif"),
            "OUTPUT_UNCERTAINTY": loaded(OUT / "first" / "intervals.tif"),
            "OUTPUT_FOLDER": str(OUT / "first" / "maps"),
        },
        "predict_user_layer_selected",
    )
    depth_map = next(layer for layer in project.mapLayers().values() if layer.name() == "ORCDRC 30–60 cm")
    select(depth_map)  # one of the plugin's own maps
    run(
        "socdepth:predict",
        {
            "MODEL": model,
            "COVARIATES": [covariates],
            "DEPTHS": "0-5, 5-15, 15-30",
            "OUTPUT": loaded(OUT / "second" / "soc.tif"),
            "OUTPUT_FOLDER": str(OUT / "second" / "maps"),
        },
        "predict_depth_map_selected",
    )
    run("native:centroids", {"INPUT": horizons, "OUTPUT": loaded(OUT / "centroids.gpkg")}, "unrelated")
    select(covariates)  # the user's layer again, as when the batch put both rows' maps into the user's group
    run_batch(
        "socdepth:predict",
        [
            {
                "MODEL": model,
                "COVARIATES": [str(DATA / "covariates_250m.tif")],
                "UNCERTAINTY": 1,
                "INTERVAL": level,
                "OUTPUT": loaded(OUT / f"batch_{level}" / "soc.tif"),
                "OUTPUT_UNCERTAINTY": loaded(OUT / f"batch_{level}" / "intervals.tif"),
                "OUTPUT_FOLDER": str(OUT / f"batch_{level}" / "maps"),
            }
            for level in (80, 95)
        ],
        "batch",
    )
    select(horizons)
    run(  # the dialog's defaults: a temporary map file, no folder of per-depth maps
        "socdepth:predict",
        {"MODEL": model, "COVARIATES": [covariates], "OUTPUT": loaded("TEMPORARY_OUTPUT")},
        "predict_without_folder",
    )
    select(depth_map)  # a map of the plugin's: the workflow's maps must not land in that run's group
    run(
        "socdepth:horizons_to_soc_maps",
        {
            "HORIZONS": horizons,
            "PROFILE_FIELD": "SOURCEID",
            "TOP_FIELD": "top",
            "BOTTOM_FIELD": "bottom",
            "VALUE_FIELD": "ORCDRC",
            "COVARIATES": [covariates],
            "FOLDS": 3,
            "N_TREES": 10,
            "harmonise:HARMONISED": loaded(OUT / "workflow" / "harmonised.gpkg"),
            "train:MODEL_FILE": str(OUT / "workflow" / "model.socmodel"),
            "train:METRICS": loaded(OUT / "workflow" / "metrics.csv"),
            "predict:SOC_MAPS": loaded(OUT / "workflow" / "soc.tif"),
            "predict:INTERVALS": loaded(OUT / "workflow" / "intervals.tif"),
            "predict:DEPTH_MAPS": str(OUT / "workflow" / "maps"),
        },
        "workflow_model",
    )
    screenshot("maps · 95 % interval")
    # README's pictures, as scripts/desktop_screenshots.py takes them: a run of the Predict dialog itself
    (OUT / "pictures").mkdir()
    (OUT / "pictures_run").mkdir()
    results["pictures"] = take_pictures(Path(model), covariates, OUT / "pictures", OUT / "pictures_run")


def main() -> None:
    try:
        session()
    except Exception:  # the tests report it; QGIS must quit either way
        results["error"] = traceback.format_exc()
    (OUT / "session.json").write_text(json.dumps(results, indent=1), encoding="utf-8")
    QgsProject.instance().clear()  # nothing left to save: no question on exit
    QTimer.singleShot(0, iface.actionExit().trigger)


QTimer.singleShot(0, main)
