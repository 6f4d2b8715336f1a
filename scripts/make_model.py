"""Writes models/horizons_to_soc_maps.model3: the "Horizons to SOC maps" Processing model (harmonise → train → predict).

The model is built with PyQGIS's model API rather than written as XML by hand, so that QGIS itself checks that
every wire joins an existing output to an existing parameter. Run it after changing a parameter of the three
algorithms: `.venv/bin/python scripts/make_model.py` (the test `tests/e2e/test_model_file.py` fails while the
shipped file is out of date).
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
os.environ["QT_HASH_SEED"] = "0"  # Qt writes XML attributes in hash order: a fixed seed gives a stable file

REPO = Path(__file__).resolve().parents[1]
MODEL_FILE = REPO / "models" / "horizons_to_soc_maps.model3"

MODEL_NAME = "Horizons to SOC maps"
GROUP = "4 — Workflows"
HELP_URL = "https://github.com/soc-depth-mapper/soc-depth-mapper#workflow-horizons-to-soc-maps"

DESCRIPTION = (
    "The whole workflow in one run: harmonises soil horizons to standard depth intervals with equal-area "
    "splines, trains a model of the property (e.g. soil organic carbon) on covariate rasters with "
    "cross-validation over whole sites, and maps it at every depth with a prediction interval.<br><br>"
    "<b>Input</b>: a point layer with one row per horizon (profile id, top and bottom depth in cm, the property) "
    "and covariate rasters on one grid.<br>"
    "<b>Outputs</b>: the harmonised profiles, the model file, the validation metrics, the maps (one band per "
    "depth) and the prediction intervals (lower, upper and width per depth); optionally an HTML training report "
    "and a folder of one map per depth, which open in the project in depth order, in one colour ramp.<br><br>"
    "The default model is the random forest: it trains in seconds, needs no PyTorch and gives quantile "
    "prediction intervals. The CNNs need PyTorch and minutes to hours; their intervals need validation "
    "(not 'None'). Every setting of the three steps not offered here keeps that algorithm's default; run "
    "'Harmonise horizons to standard depths', 'Train SOC model' and 'Predict SOC maps' one by one for full "
    "control."
)

# The model's inputs in dialog order: each is a copy of a step's parameter (same label, help, default and range),
# so that the model and the algorithms cannot drift apart, except the two that differ from any step's.
COPIED_INPUTS = {
    "PROFILE_FIELD": ("socdepth:harmonise", "PROFILE_FIELD"),
    "TOP_FIELD": ("socdepth:harmonise", "TOP_FIELD"),
    "BOTTOM_FIELD": ("socdepth:harmonise", "BOTTOM_FIELD"),
    "DEPTHS": ("socdepth:harmonise", "DEPTHS"),
    "COVARIATES": ("socdepth:train", "COVARIATES"),
    "CATEGORICAL": ("socdepth:train", "CATEGORICAL"),
    "MODEL_TYPE": ("socdepth:train", "MODEL"),
    "VALIDATION": ("socdepth:train", "VALIDATION"),
    "FOLDS": ("socdepth:train", "FOLDS"),
    "N_TREES": ("socdepth:train", "N_TREES"),
    "SEED": ("socdepth:train", "SEED"),
    "INTERVAL": ("socdepth:predict", "INTERVAL"),
}
INPUT_ORDER = ["HORIZONS", *list(COPIED_INPUTS)[:3], "VALUE_FIELD", *list(COPIED_INPUTS)[3:]]
HORIZONS_HELP = (
    "Point layer with one row per horizon (e.g. a CSV loaded with its x and y columns); rows of one profile share "
    "its id and location."
)
VALUE_FIELD_HELP = (
    "The property to map, e.g. soil organic carbon in g/kg; its name starts the harmonised field names "
    "(ORCDRC_0_5 …) and the map band names."
)
# The Model Designer layout (component centres; every box is 200 x 30, a step's In/Out toggles below it): the
# inputs in a column on the left, the steps on a diagonal, each step's outputs in a column below and right of it,
# ending left of the next step, so that no box covers another (tests/algorithms/test_model_layout.py).
STEP_LEFT, STEP_TOP = 480, 160
STEP_DX, STEP_DY = 360, 240
OUTPUT_DX, OUTPUT_DY, OUTPUT_SPACING = 120, 80, 45

#: outputs the user may skip: the report is for reading, the per-depth maps repeat the multi-band map's bands
OPTIONAL_OUTPUTS = {"REPORT", "DEPTH_MAPS"}
MODEL_TYPE_HELP = (
    "Random forest, the default, trains in seconds, needs no PyTorch, suits the few hundred sites of a typical "
    "survey and gives quantile prediction intervals. The CNNs learn from covariate patches; they need PyTorch, "
    "take minutes to hours, and their intervals need validation (not 'None')."
)


def model_inputs():
    """The model's input parameters (definitions with help), in dialog order."""
    from qgis.core import (
        QgsApplication,
        QgsProcessing,
        QgsProcessingParameterFeatureSource,
        QgsProcessingParameterField,
    )

    registry = QgsApplication.processingRegistry()
    definitions = {
        "HORIZONS": QgsProcessingParameterFeatureSource(
            "HORIZONS", "Horizons (points)", [QgsProcessing.TypeVectorPoint]
        ),
        "VALUE_FIELD": QgsProcessingParameterField(
            "VALUE_FIELD", "Property to map (e.g. SOC)", parentLayerParameterName="HORIZONS"
        ),
    }
    definitions["HORIZONS"].setHelp(HORIZONS_HELP)
    definitions["VALUE_FIELD"].setHelp(VALUE_FIELD_HELP)
    for name, (algorithm_id, parameter) in COPIED_INPUTS.items():
        definition = registry.algorithmById(algorithm_id).parameterDefinition(parameter).clone()
        definition.setName(name)
        if isinstance(definition, QgsProcessingParameterField):
            definition.setParentLayerParameterName("HORIZONS")
        definitions[name] = definition
    definitions["MODEL_TYPE"].setHelp(MODEL_TYPE_HELP)
    return [definitions[name] for name in INPUT_ORDER]


def target_fields_expression(default_depths: str) -> str:
    """The train step's target fields, PROPERTY_TOP_BOTTOM for each interval, as harmonise names them.

    The model cannot know the harmonised layer's fields before it runs, so they are derived from the same two
    inputs harmonise used: the property field and the depth boundaries, split on commas, semicolons or spaces as
    core.depths.parse_depth_list does. A depth is written as core.depths.format_depth does: 5 and 5.0 as '5',
    2.5 as '2p5' (to_string of a number drops a zero fraction). A run that leaves DEPTHS out (a script, not the
    dialog) passes no value to the expression, hence the default here.
    """
    depths = f"coalesce(@DEPTHS, '{default_depths}')"
    boundaries = rf"string_to_array(regexp_replace(trim({depths}), '[,;\\s]+', ','), ',')"
    depth = "replace(to_string(to_real(@boundaries[{}])), '.', 'p')"
    return (
        f"with_variable('boundaries', {boundaries}, "
        "array_foreach(generate_series(0, array_length(@boundaries) - 2), "
        f"@VALUE_FIELD || '_' || {depth.format('@element')} || '_' || {depth.format('@element + 1')}))"
    )


def build_model():
    """The model object: inputs, the three steps wired output to input, and the five outputs."""
    from qgis.core import (
        QgsProcessingModelAlgorithm,
        QgsProcessingModelChildAlgorithm,
        QgsProcessingModelChildParameterSource,
        QgsProcessingModelOutput,
        QgsProcessingModelParameter,
        QgsProcessingParameterDefinition,
    )
    from qgis.PyQt.QtCore import QPointF

    model = QgsProcessingModelAlgorithm(MODEL_NAME, GROUP)  # a .model3 keeps no group id: the name is the id
    inputs = model_inputs()
    depths = next(d.defaultValue() for d in inputs if d.name() == "DEPTHS")
    for row, definition in enumerate(inputs):
        component = QgsProcessingModelParameter(definition.name())
        component.setPosition(QPointF(120, 60 + 60 * row))
        model.addModelParameter(definition, component)

    def parameter(name: str):
        return [QgsProcessingModelChildParameterSource.fromModelParameter(name)]

    def child_output(child_id: str, output: str):
        return [QgsProcessingModelChildParameterSource.fromChildOutput(child_id, output)]

    def step(child_id: str, algorithm: str, label: str, column: int, sources: dict, outputs: dict):
        """Adds one algorithm; its mandatory parameters not in `sources` keep the algorithm's default."""
        child = QgsProcessingModelChildAlgorithm(algorithm)
        child.setChildId(child_id)
        child.setDescription(label)
        step_x, step_y = STEP_LEFT + STEP_DX * column, STEP_TOP + STEP_DY * column
        child.setPosition(QPointF(step_x, step_y))
        for name, source in sources.items():
            child.addParameterSources(name, source)
        child.setAlgorithmId(algorithm)  # attaches the algorithm, whose defaults fill the steps not wired
        for definition in child.algorithm().parameterDefinitions():
            unset = definition.name() not in sources and not definition.isDestination()
            if unset and not definition.flags() & QgsProcessingParameterDefinition.FlagOptional:
                child.addParameterSources(
                    definition.name(),
                    [QgsProcessingModelChildParameterSource.fromStaticValue(definition.defaultValue())],
                )
        model_outputs = {}
        for row, (output_name, (description, child_output_name)) in enumerate(outputs.items()):
            output = QgsProcessingModelOutput(output_name, description)
            output.setChildId(child_id)
            output.setChildOutputName(child_output_name)
            output.setMandatory(output_name not in OPTIONAL_OUTPUTS)
            output.setPosition(QPointF(step_x + OUTPUT_DX, step_y + OUTPUT_DY + OUTPUT_SPACING * row))
            model_outputs[output_name] = output
        child.setModelOutputs(model_outputs)
        model.addChildAlgorithm(child)

    step(
        "harmonise",
        "socdepth:harmonise",
        "Harmonise horizons to standard depths",
        0,
        {
            "INPUT": parameter("HORIZONS"),
            "PROFILE_FIELD": parameter("PROFILE_FIELD"),
            "TOP_FIELD": parameter("TOP_FIELD"),
            "BOTTOM_FIELD": parameter("BOTTOM_FIELD"),
            "VALUE_FIELDS": parameter("VALUE_FIELD"),
            "DEPTHS": parameter("DEPTHS"),
        },
        {"HARMONISED": ("Harmonised profiles", "OUTPUT")},
    )
    step(
        "train",
        "socdepth:train",
        "Train SOC model",
        1,
        {
            "INPUT": child_output("harmonise", "OUTPUT"),
            "TARGET_FIELDS": [QgsProcessingModelChildParameterSource.fromExpression(target_fields_expression(depths))],
            "COVARIATES": parameter("COVARIATES"),
            "CATEGORICAL": parameter("CATEGORICAL"),
            "MODEL": parameter("MODEL_TYPE"),
            "VALIDATION": parameter("VALIDATION"),
            "FOLDS": parameter("FOLDS"),
            "N_TREES": parameter("N_TREES"),
            "SEED": parameter("SEED"),
        },
        {
            "MODEL_FILE": ("Model file", "OUTPUT_MODEL"),
            "METRICS": ("Validation metrics", "OUTPUT_METRICS"),
            "REPORT": ("Training report", "OUTPUT_REPORT"),
        },
    )
    step(
        "predict",
        "socdepth:predict",
        "Predict SOC maps",
        2,
        {
            "MODEL": child_output("train", "OUTPUT_MODEL"),
            "COVARIATES": parameter("COVARIATES"),
            "UNCERTAINTY": [QgsProcessingModelChildParameterSource.fromStaticValue(1)],
            "INTERVAL": parameter("INTERVAL"),
        },
        {
            "SOC_MAPS": ("SOC maps (one band per depth)", "OUTPUT"),
            "INTERVALS": ("Prediction intervals", "OUTPUT_UNCERTAINTY"),
            "DEPTH_MAPS": ("Folder for one map per depth", "OUTPUT_FOLDER"),
        },
    )
    model.setParameterOrder(INPUT_ORDER)
    model.setHelpContent(
        {
            "ALG_DESC": DESCRIPTION,
            "ALG_CREATOR": "SOC Depth Mapper developers",
            "HELP_URL": HELP_URL,
            **{definition.name(): definition.help() for definition in inputs},
        }
    )
    return model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=MODEL_FILE, help=f"where to write (default {MODEL_FILE})")
    args = parser.parse_args()

    from qgis.core import QgsApplication

    app = QgsApplication([], False)
    app.initQgis()
    import soc_depth_mapper

    # The plugin's algorithms must be registered: the model reads their parameter definitions to build its outputs.
    plugin = soc_depth_mapper.classFactory(None)
    plugin.initProcessing()
    model = build_model()
    missing = [child.childId() for child in model.childAlgorithms().values() if child.algorithm() is None]
    if missing:
        raise SystemExit(f"Steps {missing} have no algorithm: is the plugin's provider registered?")
    ok, errors = model.validate()
    if not ok:
        raise SystemExit("The model is not valid:\n" + "\n".join(errors))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    if not model.toFile(str(args.out)):
        raise SystemExit(f"Could not write {args.out}")
    print(f"Wrote {args.out}")
    plugin.unload()
    app.exitQgis()


if __name__ == "__main__":
    main()
