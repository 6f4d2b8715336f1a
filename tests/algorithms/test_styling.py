"""How loaded results look: the out-of-fold points by residual, one depth shown at a time; map legends in g/kg."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

DATA = Path(__file__).resolve().parents[2] / "sample_data" / "edgeroi"
GSM = ["0_5", "5_15", "15_30", "30_60", "60_100", "100_200"]


@pytest.fixture()
def out_of_fold_layer(qgis_processing, harmonised, tmp_path):
    """The out-of-fold points of a small random forest, loaded into the (emptied) project as the dialog does."""
    from qgis.core import QgsProject, QgsRasterLayer

    project = QgsProject.instance()
    project.removeAllMapLayers()
    qgis_processing.runAndLoadResults(
        "socdepth:train",
        {
            "INPUT": harmonised,
            "TARGET_FIELDS": [f"ORCDRC_{d}" for d in GSM],
            "COVARIATES": [QgsRasterLayer(str(DATA / "covariates_250m.tif"), "cov")],
            "MODEL": 0,
            "VALIDATION": 1,
            "FOLDS": 3,
            "N_TREES": 10,
            "OUTPUT_MODEL": str(tmp_path / "model.socmodel"),
            "OUTPUT_PREDICTIONS": str(tmp_path / "out_of_fold.gpkg"),
        },
    )
    (layer,) = project.mapLayersByName("Out-of-fold predictions")
    yield layer
    project.removeAllMapLayers()


def test_out_of_fold_points_are_coloured_by_residual_one_depth_at_a_time(out_of_fold_layer):
    from qgis.core import QgsExpression, QgsExpressionContext, QgsExpressionContextUtils, QgsRuleBasedRenderer

    renderer = out_of_fold_layer.renderer()
    assert isinstance(renderer, QgsRuleBasedRenderer)
    depth_rules = renderer.rootRule().children()
    assert [rule.label() for rule in depth_rules] == [f"{d.replace('_', '–')} cm" for d in GSM]
    assert [rule.active() for rule in depth_rules] == [True] + [False] * 5  # one point per site shown

    context = QgsExpressionContext(QgsExpressionContextUtils.globalProjectLayerScopes(out_of_fold_layer))
    counts = {"under": 0, "over": 0}
    for feature in out_of_fold_layer.getFeatures():
        context.setFeature(feature)
        matching = []
        for depth_rule in depth_rules:
            if not QgsExpression(depth_rule.filterExpression()).evaluate(context):
                continue
            assert depth_rule.label() == f"{feature['depth'].replace('-', '–')} cm"
            matching += [
                rule for rule in depth_rule.children() if QgsExpression(rule.filterExpression()).evaluate(context)
            ]
        assert len(matching) == 1, f"feature {feature.id()} falls in {len(matching)} classes"
        colour = matching[0].symbol().color()
        residual = feature["predicted"] - feature["observed"]  # the oracle: the table's own columns
        if abs(residual) > 0.5:  # clear of the white middle classes' edge
            over = colour.red() > colour.blue()
            assert over == (residual > 0), (residual, colour.name())
            counts["over" if over else "under"] += 1
    assert counts["under"] > 100 and counts["over"] > 100  # both sides of the ramp are in use
    labels = [rule.label() for rule in depth_rules[0].children()]
    assert labels[0].startswith("below -") and labels[-1].endswith(" g/kg or more")
    assert all("g/kg" in label for label in labels)


@pytest.mark.parametrize(("low", "high", "decimals"), [(1.5037, 28.4667, 1), (0.2049, 3.7391, 2)])
def test_map_legends_carry_the_unit_and_one_or_two_decimals(qgis_processing, low, high, decimals):
    from qgis.core import QgsNumericFormatContext, QgsRasterLayer

    from soc_depth_mapper.algorithms.styling import pseudocolour_renderer

    layer = QgsRasterLayer(str(DATA / "covariates_250m.tif"), "cov")
    renderer = pseudocolour_renderer(layer.dataProvider(), low, high)  # kept: it owns the shader
    function = renderer.shader().rasterShaderFunction()
    items = function.colorRampItemList()
    assert items[0].value == pytest.approx(low) and items[-1].value == pytest.approx(high)
    for item in items:
        assert re.fullmatch(rf"\d+\.\d{{{decimals}}} g/kg", item.label), item.label
        assert float(item.label.split()[0]) == pytest.approx(item.value, abs=0.51 * 10**-decimals)
    legend = function.legendSettings()  # the continuous legend QGIS draws for an interpolated ramp
    assert legend.suffix() == " g/kg"
    assert legend.numericFormat().formatDouble(high, QgsNumericFormatContext()) == f"{high:.{decimals}f}"
