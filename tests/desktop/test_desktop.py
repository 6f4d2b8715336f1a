"""What a user sees in QGIS desktop after pressing Run: the layer tree, the styles, the message log and the map
canvas, recorded by one scripted desktop session (see desktop_session.py) under a virtual display."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

GROUP = "SOC depth maps"
DEPTHS = ["0–5", "5–15", "15–30", "30–60", "60–100", "100–200"]
MULTI_BAND = ["SOC maps (one band per depth)", "Prediction intervals"]
#: the user's group: their layers, and the out-of-fold points trained while one of them was selected
USER_LAYERS = ["horizons", "Out-of-fold predictions", "cov"]


def tree_after(session: dict, step: str) -> list[dict]:
    """The layer tree after `step` of the session; fails with the session's error where it stopped before."""
    assert step in session["steps"], f"the session stopped before '{step}':\n{session.get('error')}"
    return session["steps"][step]["tree"]


def group(entries: list[dict], name: str) -> dict:
    found = [entry for entry in entries if entry.get("group") == name]
    assert len(found) == 1, f"{len(found)} groups '{name}' in {[e.get('group', e.get('layer')) for e in entries]}"
    return found[0]


def layers(entries: list[dict]) -> list[dict]:
    """Every layer under `entries`, in tree order."""
    found = []
    for entry in entries:
        found.extend(layers(entry["children"]) if "group" in entry else [entry])
    return found


def run_folder(layer: dict) -> str:
    """'first' for …/first/maps/ORCDRC_0_5cm.tif and …/first/soc.tif: the run an output belongs to."""
    path = Path(layer["source"])
    return (path.parent.parent if path.parent.name == "maps" else path.parent).name


def check_run_group(entry: dict, folder: str, depths: list[str], multi_band: list[str]) -> None:
    """The group of one run: its depth maps in depth order and visible, then its multi-band maps, hidden; all
    its own, all pseudocolour of band 1 over one value range, only the first legend unfolded."""
    names = [layer["layer"] for layer in entry["children"]]
    assert names == [f"ORCDRC {depth} cm" for depth in depths] + multi_band
    assert {run_folder(layer) for layer in entry["children"]} == {folder}
    visible = [layer["visible"] for layer in entry["children"]]
    assert visible == [True] * len(depths) + [False] * len(multi_band)
    # one open legend (they share the ramp), so that the run's layers fit the panel
    assert [layer["legend_open"] for layer in entry["children"]] == [True] + [False] * (len(names) - 1)
    for layer in entry["children"]:
        assert layer["renderer"] == "QgsSingleBandPseudoColorRenderer", layer["layer"]
        assert layer["band"] == 1
    assert len({tuple(layer["range"]) for layer in entry["children"]}) == 1


@pytest.mark.parametrize(
    ("step", "selected"),
    [("predict_user_layer_selected", "a layer of the user's group"), ("predict_depth_map_selected", "a depth map")],
)
def test_maps_load_in_depth_order_in_their_runs_group_whatever_is_selected(desktop_session, step, selected):
    tree = tree_after(desktop_session, step)
    maps = group(tree, GROUP)
    check_run_group(group(maps["children"], "maps · 80 % interval"), "first", DEPTHS, MULTI_BAND)
    if step == "predict_depth_map_selected":
        assert [entry["group"] for entry in maps["children"]] == ["maps", "maps · 80 % interval"]  # newest on top
        check_run_group(group(maps["children"], "maps"), "second", DEPTHS[:3], MULTI_BAND[:1])
    # the user's group keeps what it held
    assert [layer["layer"] for layer in group(tree, "my data")["children"]] == USER_LAYERS, selected


def test_later_unrelated_outputs_stay_out_of_the_plugins_groups(desktop_session):
    tree = tree_after(desktop_session, "unrelated")
    assert "Centroids" not in [layer["layer"] for layer in layers(group(tree, GROUP)["children"])]
    assert tree[0]["layer"] == "Centroids"  # above the plugin's group, where the insertion point was moved


def test_each_batch_row_gets_a_group_of_its_own_named_by_folder_and_interval(desktop_session):
    tree = tree_after(desktop_session, "batch")
    assert [layer["layer"] for layer in group(tree, "my data")["children"]] == USER_LAYERS
    maps = group(tree, GROUP)
    names = [entry["group"] for entry in maps["children"]]
    assert names == ["maps · 95 % interval", "maps · 80 % interval (2)", "maps", "maps · 80 % interval"]
    check_run_group(group(maps["children"], "maps · 95 % interval"), "batch_95", DEPTHS, MULTI_BAND)
    check_run_group(group(maps["children"], "maps · 80 % interval (2)"), "batch_80", DEPTHS, MULTI_BAND)
    check_run_group(group(maps["children"], "maps · 80 % interval"), "first", DEPTHS, MULTI_BAND)


def test_without_a_folder_the_multi_band_map_is_the_runs_map_shown_in_a_group_named_after_the_model(
    desktop_session,
):
    tree = tree_after(desktop_session, "predict_without_folder")
    maps = group(tree, GROUP)
    assert maps["children"][0]["group"] == "model"  # model.socmodel: the map file is a temporary one
    (layer,) = maps["children"][0]["children"]
    assert layer["layer"] == MULTI_BAND[0] and layer["visible"]
    assert layer["renderer"] == "QgsSingleBandPseudoColorRenderer" and layer["band"] == 1
    assert [entry["layer"] for entry in group(tree, "my data")["children"]] == USER_LAYERS


def test_the_workflow_models_results_load_named_grouped_and_styled_as_predicts(desktop_session):
    tree = tree_after(desktop_session, "workflow_model")
    maps = group(tree, GROUP)
    assert maps["children"][0]["group"] == "maps · 90 % interval"  # the per-depth folder and level, on top
    check_run_group(maps["children"][0], "workflow", DEPTHS, MULTI_BAND)
    # the steps' other results, named as the model's outputs read in its dialog, just above the plugin's group
    # although a map inside it was selected
    above = [entry.get("layer") for entry in tree[: tree.index(maps)]]
    assert above[-2:] == ["Harmonised profiles", "Validation metrics"]
    names = [layer["layer"] for layer in layers(tree)]
    assert [name for name in names if re.fullmatch(r"[A-Z_]+", name)] == []  # no raw output id
    assert [layer["layer"] for layer in group(tree, "my data")["children"]] == USER_LAYERS


def test_depth_field_pickers_choose_top_and_bottom_in_any_case_and_offer_only_numbers(desktop_session):
    assert "field_picks" in desktop_session, desktop_session.get("error")
    picks = desktop_session["field_picks"]["typed"]
    # the empty entry first: left empty, the run reads the field named like that depth and says which
    assert picks["TOP_FIELD"] == {"chosen": "TOP", "offered": ["", "TOP", "Bottom"]}
    assert picks["BOTTOM_FIELD"] == {"chosen": "Bottom", "offered": ["", "TOP", "Bottom"]}
    # where the layer has no field of the default's name, nothing is chosen for the user (no text id by mistake),
    # which the run resolves to 'upper' and 'lower' (tests/algorithms/test_harmonise.py)
    other = desktop_session["field_picks"]["other_names"]
    assert other["TOP_FIELD"] == other["BOTTOM_FIELD"] == {"chosen": None, "offered": ["", "upper", "lower"]}


def test_legends_show_the_unit_and_one_or_two_decimals(desktop_session):
    maps = group(tree_after(desktop_session, "batch"), GROUP)
    for layer in layers(maps["children"]):
        low, high = layer["range"]
        decimals = 1 if high - low >= 10 else 2
        assert layer["legend_suffix"] == " g/kg"
        assert len(layer["legend"]) >= 5  # a class at each colour of the ramp
        for value, label, _ in layer["legend"]:
            assert re.fullmatch(rf"-?\d+\.\d{{{decimals}}} g/kg", label), label
            assert float(label.split()[0]) == pytest.approx(value, abs=0.6 * 10**-decimals)
        assert layer["legend"][0][0] == pytest.approx(low) and layer["legend"][-1][0] == pytest.approx(high)


def test_no_warning_reaches_the_message_log(desktop_session):
    assert "error" not in desktop_session, desktop_session["error"]
    # e.g. 'Cannot open …tif ().()' when a raster is loaded without a type hint and OGR is tried first
    warnings = [message for message in desktop_session["messages"] if message["level"] >= 1]
    assert warnings == []


def distance_to_ramp(pixels: np.ndarray, legend: list) -> np.ndarray:
    """RGB distance of each pixel to the legend's ramp (piecewise linear between its colours)."""
    stops = np.array([[int(colour[i : i + 2], 16) for i in (1, 3, 5)] for *_, colour in legend], dtype=float)
    ramp = np.concatenate([np.linspace(a, b, 50) for a, b in zip(stops[:-1], stops[1:])])
    return np.sqrt(((pixels[:, None, :] - ramp[None, :, :]) ** 2).sum(axis=2)).min(axis=1)


def test_screenshot_shows_the_map_in_its_ramp_and_its_legend(desktop_session):
    import matplotlib.image

    assert "screenshot" in desktop_session, (
        f"the session stopped before the screenshot:\n{desktop_session.get('error')}"
    )
    shot = desktop_session["screenshot"]
    assert shot["layer"] == "ORCDRC 0–5 cm"
    maps = group(tree_after(desktop_session, "batch"), GROUP)
    legend = group(maps["children"], "maps · 95 % interval")["children"][0]["legend"]
    pixels = (matplotlib.image.imread(shot["canvas"])[..., :3] * 255).reshape(-1, 3)
    background = (pixels == 255).all(axis=1)
    assert background.mean() < 0.7  # the map fills much of the canvas
    shown = pixels[~background]
    assert len(np.unique(shown, axis=0)) > 20  # not one colour: the map's values vary
    # every map pixel lies on the ramp of the legend: the map is drawn in its style, not in false colours
    assert np.quantile(distance_to_ramp(shown[:: max(len(shown) // 3000, 1)], legend), 0.99) < 12
    # the main window, grabbed at the size asked for; the canvas in it shows the map as drawn, not a blank view
    window = matplotlib.image.imread(shot["window"])[..., :3] * 255
    width, height = shot["window_size"]
    assert window.shape == (height, width, 3)
    left, top, canvas_width, canvas_height = shot["canvas_rect"]
    in_window = window[top : top + canvas_height, left : left + canvas_width]
    assert in_window.shape == (canvas_height, canvas_width, 3) and canvas_width > width / 2
    canvas = matplotlib.image.imread(shot["canvas"])[..., :3] * 255
    assert in_window.shape == canvas.shape
    assert np.abs(in_window - canvas).mean() < 1
    scaled = matplotlib.image.imread(shot["window_scaled"])
    assert scaled.shape[:2] == (height // 2, width // 2)
    assert len(np.unique(scaled.reshape(-1, scaled.shape[2]), axis=0)) > 100  # a picture, not one colour
    # left of the canvas, the layer panel shows the map's legend, a bar in the ramp's colours
    panel = window[:, :left].reshape(-1, 3)
    panel = panel[(panel < 245).any(axis=1)]  # the white of panels and the lightest ramp colour alike left out
    assert (distance_to_ramp(panel, legend) < 6).sum() > 800


def test_out_of_fold_points_load_coloured_by_residual_one_depth_shown(desktop_session):
    (points,) = [
        layer for layer in layers(tree_after(desktop_session, "train")) if layer["source"].endswith("out_of_fold.gpkg")
    ]
    assert points["layer"] == "Out-of-fold predictions" and points["visible"]
    assert points["renderer"] == "QgsRuleBasedRenderer"
    assert [rule["label"] for rule in points["rules"]] == [f"{depth} cm" for depth in DEPTHS]
    assert [rule["active"] for rule in points["rules"]] == [True] + [False] * 5
    assert {rule["children"] for rule in points["rules"]} == {6}  # residual classes


def test_readme_pictures_show_a_predict_dialog_runs_maps_as_loaded_each_depth_and_the_log(desktop_session):
    """The pictures scripts/desktop_screenshots.py makes for README, taken after a run of the Predict dialog."""
    import matplotlib.image

    assert "pictures" in desktop_session, f"the session stopped before the pictures:\n{desktop_session.get('error')}"
    seen = desktop_session["pictures"]
    assert seen["run_group"] == "maps · 90 % interval (2)"  # the workflow model's run took the name before
    others = [*MULTI_BAND, "Area of applicability (DI, inside)"]
    assert seen["layers"] == [[f"ORCDRC {depth} cm", True] for depth in DEPTHS] + [[name, False] for name in others]
    assert "Algorithm 'Predict SOC maps' finished" in seen["log"]
    pictures = {name: matplotlib.image.imread(path)[..., :3] * 255 for name, path in seen["pictures"].items()}
    assert pictures["predict_dialog"].shape[:2] == (700, 1000)
    # the main window at 1600 × 1000, scaled to 1200 across; its canvas shows the map in the ramp of the legends
    window = pictures["desktop_maps"]
    assert window.shape[:2] == (750, 1200)
    assert len(np.unique(window.reshape(-1, 3), axis=0)) > 100
    left, top, width, height = seen["map_in_window"]
    assert width > 600 and height > 400
    shown = window[top : top + height, left : left + width].reshape(-1, 3)
    shown = shown[(shown < 250).any(axis=1)]
    assert len(shown) > 0.3 * width * height and len(np.unique(shown, axis=0)) > 20
    maps = group(tree_after(desktop_session, "batch"), GROUP)
    legend = group(maps["children"], "maps · 95 % interval")["children"][0]["legend"]  # the same ramp, other values
    assert np.quantile(distance_to_ramp(shown[:: max(len(shown) // 3000, 1)], legend), 0.9) < 12
    # six canvases in two rows of three, in depth order: the topsoil, richest in carbon, darkest on the shared ramp
    montage = pictures["desktop_depths"]
    assert montage.shape[1] == 1200
    tiles = [
        montage[row * montage.shape[0] // 2 : (row + 1) * montage.shape[0] // 2, column * 400 : (column + 1) * 400]
        for row in range(2)
        for column in range(3)
    ]
    brightness = [tile.mean() for tile in tiles]
    assert all(len(np.unique(tile.reshape(-1, 3), axis=0)) > 100 for tile in tiles)
    assert brightness[0] < brightness[-1] - 20
