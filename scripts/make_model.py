"""Writes the shipped Processing models: models/horizons_to_soc_maps.model3 (harmonise → train → predict) and
models/transfer_to_a_new_region.model3 (harmonise local and library → train with transfer → predict).

The model is built with PyQGIS's model API rather than written as XML by hand, so that QGIS itself checks that
every wire joins an existing output to an existing parameter. Run it after changing a parameter of the three
algorithms: `.venv/bin/python scripts/make_model.py` (the test `tests/e2e/test_model_file.py` fails while a
shipped file is out of date).
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
os.environ["QT_HASH_SEED"] = "0"  # Qt writes XML attributes in hash order: a fixed seed gives a stable file

REPO = Path(__file__).resolve().parents[1]
MODELS_DIR = REPO / "models"
MODEL_FILE = MODELS_DIR / "horizons_to_soc_maps.model3"
TRANSFER_MODEL_FILE = MODELS_DIR / "transfer_to_a_new_region.model3"

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
#: a second step in one column (the transfer model's two harmonise steps) sits below the first one's output
ROW_DY = 160

#: outputs the user may skip: the report is for reading, the per-depth maps repeat the multi-band map's bands
OPTIONAL_OUTPUTS = {"REPORT", "DEPTH_MAPS"}
MODEL_TYPE_HELP = (
    "Random forest, the default, trains in seconds, needs no PyTorch, suits the few hundred sites of a typical "
    "survey and gives quantile prediction intervals. The CNNs learn from covariate patches; they need PyTorch, "
    "take minutes to hours, and their intervals need validation (not 'None')."
)


#: the transfer model's inputs beyond the first model's, copied from 'Train SOC model' like the others
TRANSFER_INPUTS = {
    "SOURCE_COVARIATES": ("socdepth:train", "SOURCE_COVARIATES"),
    "TRANSFER": ("socdepth:train", "TRANSFER"),
    "SOURCE_SELECTION": ("socdepth:train", "SOURCE_SELECTION"),
    "SOURCE_WEIGHT": ("socdepth:train", "SOURCE_WEIGHT"),
}
TRANSFER_COPIED = {**COPIED_INPUTS, **TRANSFER_INPUTS}
TRANSFER_INPUT_ORDER = [
    "LOCAL_HORIZONS", "LIBRARY_HORIZONS", *list(COPIED_INPUTS)[:3], "VALUE_FIELD", *list(COPIED_INPUTS)[3:5],
    "SOURCE_COVARIATES", *list(COPIED_INPUTS)[5:7], *list(TRANSFER_INPUTS)[1:], *list(COPIED_INPUTS)[7:],
]  # fmt: skip
#: instance transfer, the strategy Shen et al. 2022 found best: the reason to run this model at all
TRANSFER_DEFAULT = 1
TRANSFER_NAME = "Transfer to a new region"
TRANSFER_HELP_URL = "https://github.com/soc-depth-mapper/soc-depth-mapper#workflow-transfer-to-a-new-region"
TRANSFER_DESCRIPTION = (
    "For a few dozen local profiles and a larger library (a national survey, a neighbouring region) of the same "
    "property: harmonises both to the same depth intervals, trains on the local sites with transfer from the "
    "library (by default instance transfer, its weight chosen by an inner cross-validation on the local sites, "
    "so that a library that does not fit is hardly used), and maps the property at every depth with a "
    "prediction interval.<br><br>"
    "<b>Inputs</b>: two point layers with one row per horizon and the same field names (profile id, top, "
    "bottom, property), and covariate rasters on one grid covering the local sites (and the library's, or give "
    "'Source covariate rasters').<br>"
    "<b>Outputs</b>: both harmonised layers, the model file, the validation metrics (local-only and with "
    "transfer on the same folds of local sites), an HTML report with the gain per depth, the maps and the "
    "prediction intervals.<br><br>"
    "Every setting not offered here keeps the step's default; run 'Harmonise horizons to standard depths' "
    "twice, 'Train SOC model' and 'Predict SOC maps' one by one for full control."
)
HORIZON_INPUTS = {
    "HORIZONS": ("Horizons (points)", HORIZONS_HELP),
    "LOCAL_HORIZONS": (
        "Local horizons (points)",
        "The horizons of the region to map, one row per horizon: they are validated on and mapped. " + HORIZONS_HELP,
    ),
    "LIBRARY_HORIZONS": (
        "Library horizons (points)",
        "The larger data set to borrow from, with the same field names as the local horizons; its sites only "
        "ever train.",
    ),
}


def model_inputs(copied: dict = COPIED_INPUTS, order: list = INPUT_ORDER, horizons: tuple = ("HORIZONS",)):
    """The model's input parameters (definitions with help), in dialog order: the horizon layers named in
    `horizons` (the first is the parent of the field pickers), VALUE_FIELD and the `copied` step parameters."""
    from qgis.core import (
        QgsApplication,
        QgsProcessing,
        QgsProcessingParameterFeatureSource,
        QgsProcessingParameterField,
    )

    registry = QgsApplication.processingRegistry()
    definitions = {
        "VALUE_FIELD": QgsProcessingParameterField(
            "VALUE_FIELD", "Property to map (e.g. SOC)", parentLayerParameterName=horizons[0]
        ),
    }
    for name in horizons:
        label, help_text = HORIZON_INPUTS[name]
        definitions[name] = QgsProcessingParameterFeatureSource(name, label, [QgsProcessing.TypeVectorPoint])
        definitions[name].setHelp(help_text)
    definitions["VALUE_FIELD"].setHelp(VALUE_FIELD_HELP)
    for name, (algorithm_id, parameter) in copied.items():
        definition = registry.algorithmById(algorithm_id).parameterDefinition(parameter).clone()
        definition.setName(name)
        if isinstance(definition, QgsProcessingParameterField):
            definition.setParentLayerParameterName(horizons[0])
        definitions[name] = definition
    definitions["MODEL_TYPE"].setHelp(MODEL_TYPE_HELP)
    return [definitions[name] for name in order]


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


def parameter(name: str):
    """A step's value from the model input `name`."""
    from qgis.core import QgsProcessingModelChildParameterSource

    return [QgsProcessingModelChildParameterSource.fromModelParameter(name)]


def child_output(child_id: str, output: str):
    """A step's value from the output `output` of the step `child_id`."""
    from qgis.core import QgsProcessingModelChildParameterSource

    return [QgsProcessingModelChildParameterSource.fromChildOutput(child_id, output)]


def add_step(model, child_id: str, algorithm: str, label: str, column: int, sources: dict, outputs: dict, row: int = 0):
    """Adds one algorithm to `model` (drawn in `column`, `row` of the columns' steps); its mandatory parameters
    not in `sources` keep the algorithm's default."""
    from qgis.core import (
        QgsProcessingModelChildAlgorithm,
        QgsProcessingModelChildParameterSource,
        QgsProcessingModelOutput,
        QgsProcessingParameterDefinition,
    )
    from qgis.PyQt.QtCore import QPointF

    child = QgsProcessingModelChildAlgorithm(algorithm)
    child.setChildId(child_id)
    child.setDescription(label)
    step_x, step_y = STEP_LEFT + STEP_DX * column, STEP_TOP + STEP_DY * column + ROW_DY * row
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
    for index, (output_name, (description, child_output_name)) in enumerate(outputs.items()):
        output = QgsProcessingModelOutput(output_name, description)
        output.setChildId(child_id)
        output.setChildOutputName(child_output_name)
        output.setMandatory(output_name not in OPTIONAL_OUTPUTS)
        output.setPosition(QPointF(step_x + OUTPUT_DX, step_y + OUTPUT_DY + OUTPUT_SPACING * index))
        model_outputs[output_name] = output
    child.setModelOutputs(model_outputs)
    model.addChildAlgorithm(child)


def workflow(name: str, inputs: list, order: list, description: str, help_url: str, add_steps):
    """A model with `inputs` (drawn in a column) and the steps `add_steps(model)` adds, with its help."""
    from qgis.core import QgsProcessingModelAlgorithm, QgsProcessingModelParameter
    from qgis.PyQt.QtCore import QPointF

    model = QgsProcessingModelAlgorithm(name, GROUP)  # a .model3 keeps no group id: the name is the id
    for row, definition in enumerate(inputs):
        component = QgsProcessingModelParameter(definition.name())
        component.setPosition(QPointF(120, 60 + 60 * row))
        model.addModelParameter(definition, component)
    add_steps(model)
    model.setParameterOrder(order)
    model.setHelpContent(
        {
            "ALG_DESC": description,
            "ALG_CREATOR": "SOC Depth Mapper developers",
            "HELP_URL": help_url,
            **{definition.name(): definition.help() for definition in inputs},
        }
    )
    return model


def harmonise_sources(horizons: str) -> dict:
    """The harmonise step's inputs from the horizon layer `horizons` and the shared field and depth inputs."""
    return {
        "INPUT": parameter(horizons),
        "PROFILE_FIELD": parameter("PROFILE_FIELD"),
        "TOP_FIELD": parameter("TOP_FIELD"),
        "BOTTOM_FIELD": parameter("BOTTOM_FIELD"),
        "VALUE_FIELDS": parameter("VALUE_FIELD"),
        "DEPTHS": parameter("DEPTHS"),
    }


def train_sources(harmonised_step: str, depths: str) -> dict:
    """The train step's inputs shared by both models."""
    from qgis.core import QgsProcessingModelChildParameterSource

    return {
        "INPUT": child_output(harmonised_step, "OUTPUT"),
        "TARGET_FIELDS": [QgsProcessingModelChildParameterSource.fromExpression(target_fields_expression(depths))],
        "COVARIATES": parameter("COVARIATES"),
        "CATEGORICAL": parameter("CATEGORICAL"),
        "MODEL": parameter("MODEL_TYPE"),
        "VALIDATION": parameter("VALIDATION"),
        "FOLDS": parameter("FOLDS"),
        "N_TREES": parameter("N_TREES"),
        "SEED": parameter("SEED"),
    }


TRAIN_OUTPUTS = {
    "MODEL_FILE": ("Model file", "OUTPUT_MODEL"),
    "METRICS": ("Validation metrics", "OUTPUT_METRICS"),
    "REPORT": ("Training report", "OUTPUT_REPORT"),
}
PREDICT_OUTPUTS = {
    "SOC_MAPS": ("SOC maps (one band per depth)", "OUTPUT"),
    "INTERVALS": ("Prediction intervals", "OUTPUT_UNCERTAINTY"),
    "DEPTH_MAPS": ("Folder for one map per depth", "OUTPUT_FOLDER"),
}


def add_predict_step(model, column: int) -> None:
    from qgis.core import QgsProcessingModelChildParameterSource

    sources = {
        "MODEL": child_output("train", "OUTPUT_MODEL"),
        "COVARIATES": parameter("COVARIATES"),
        "UNCERTAINTY": [QgsProcessingModelChildParameterSource.fromStaticValue(1)],
        "INTERVAL": parameter("INTERVAL"),
    }
    add_step(model, "predict", "socdepth:predict", "Predict SOC maps", column, sources, PREDICT_OUTPUTS)


def build_model():
    """The "Horizons to SOC maps" model: inputs, the three steps wired output to input, and the five outputs."""
    inputs = model_inputs()
    depths = next(d.defaultValue() for d in inputs if d.name() == "DEPTHS")

    def add_steps(model) -> None:
        harmonised = {"HARMONISED": ("Harmonised profiles", "OUTPUT")}
        label = "Harmonise horizons to standard depths"
        add_step(model, "harmonise", "socdepth:harmonise", label, 0, harmonise_sources("HORIZONS"), harmonised)
        add_step(
            model, "train", "socdepth:train", "Train SOC model", 1, train_sources("harmonise", depths), TRAIN_OUTPUTS
        )
        add_predict_step(model, 2)

    return workflow(MODEL_NAME, inputs, INPUT_ORDER, DESCRIPTION, HELP_URL, add_steps)


def build_transfer_model():
    """The "Transfer to a new region" model: local and library horizons harmonised alike, the model trained on
    the local sites with transfer from the library's, and the maps."""
    from qgis.core import QgsProcessingModelChildParameterSource

    inputs = model_inputs(TRANSFER_COPIED, TRANSFER_INPUT_ORDER, ("LOCAL_HORIZONS", "LIBRARY_HORIZONS"))
    next(d for d in inputs if d.name() == "TRANSFER").setDefaultValue(TRANSFER_DEFAULT)
    depths = next(d.defaultValue() for d in inputs if d.name() == "DEPTHS")

    def add_steps(model) -> None:
        for row, (child_id, horizons, label, output) in enumerate(
            (
                ("harmonise_local", "LOCAL_HORIZONS", "Harmonise the local horizons", "HARMONISED_LOCAL"),
                ("harmonise_library", "LIBRARY_HORIZONS", "Harmonise the library horizons", "HARMONISED_LIBRARY"),
            )
        ):
            outputs = {output: (label.replace("Harmonise the", "Harmonised"), "OUTPUT")}
            add_step(model, child_id, "socdepth:harmonise", label, 0, harmonise_sources(horizons), outputs, row)
        sources = {
            **train_sources("harmonise_local", depths),
            "SOURCE_INPUT": child_output("harmonise_library", "OUTPUT"),
            **{name: parameter(name) for name in TRANSFER_INPUTS},
            # a run that leaves TRANSFER out (a script, not the dialog) passes no value: train's default is none
            "TRANSFER": [
                QgsProcessingModelChildParameterSource.fromExpression(f"coalesce(@TRANSFER, {TRANSFER_DEFAULT})")
            ],
        }
        add_step(model, "train", "socdepth:train", "Train SOC model with transfer", 1, sources, TRAIN_OUTPUTS)
        add_predict_step(model, 2)

    return workflow(TRANSFER_NAME, inputs, TRANSFER_INPUT_ORDER, TRANSFER_DESCRIPTION, TRANSFER_HELP_URL, add_steps)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--out-dir", type=Path, default=MODELS_DIR, help=f"folder to write both models to (default {MODELS_DIR})"
    )
    args = parser.parse_args()

    from qgis.core import QgsApplication

    app = QgsApplication([], False)
    app.initQgis()
    import soc_depth_mapper

    # The plugin's algorithms must be registered: the model reads their parameter definitions to build its outputs.
    plugin = soc_depth_mapper.classFactory(None)
    plugin.initProcessing()
    args.out_dir.mkdir(parents=True, exist_ok=True)
    for build, file in ((build_model, MODEL_FILE), (build_transfer_model, TRANSFER_MODEL_FILE)):
        model = build()
        missing = [child.childId() for child in model.childAlgorithms().values() if child.algorithm() is None]
        if missing:
            raise SystemExit(f"Steps {missing} have no algorithm: is the plugin's provider registered?")
        ok, errors = model.validate()
        if not ok:
            raise SystemExit(f"The model {model.name()} is not valid:\n" + "\n".join(errors))
        out = args.out_dir / file.name
        if not model.toFile(str(out)):
            raise SystemExit(f"Could not write {out}")
        print(f"Wrote {out}")
    plugin.unload()
    app.exitQgis()


if __name__ == "__main__":
    main()
