"""socdepth:stocks — SOC stocks (t/ha) per depth interval and for 0–30 / 0–100 cm, with Monte Carlo uncertainty."""

from __future__ import annotations

from qgis.core import (
    QgsProcessing,
    QgsProcessingException,
    QgsProcessingParameterDefinition,
    QgsProcessingParameterEnum,
    QgsProcessingParameterFeatureSink,
    QgsProcessingParameterFileDestination,
    QgsProcessingParameterMapLayer,
    QgsProcessingParameterNumber,
    QgsProcessingParameterRasterDestination,
    QgsProcessingParameterRasterLayer,
    QgsProcessingParameterString,
    QgsRasterLayer,
)

from .base import SocAlgorithm
from .layers import open_sink, progress_callback, raster_files

SOC_UNIT_KEYS = ["g/kg", "%"]
BD_UNIT_KEYS = ["g/cm3", "kg/m3"]
#: the pedotransfer choices after "none", in the order of core.pedotransfer.PEDOTRANSFER
PTF_KEYS = ["saini1996", "honeysett1989", "drew1973", "grigal1989", "adams1973"]


class StocksAlgorithm(SocAlgorithm):
    SOC = "SOC"
    SOC_UNIT = "SOC_UNIT"
    SOC_UNCERTAINTY = "SOC_UNCERTAINTY"
    BULK_DENSITY = "BULK_DENSITY"
    BULK_DENSITY_VALUE = "BULK_DENSITY_VALUE"
    BULK_DENSITY_PTF = "BULK_DENSITY_PTF"
    BULK_DENSITY_UNIT = "BULK_DENSITY_UNIT"
    BULK_DENSITY_SD = "BULK_DENSITY_SD"
    COARSE_FRAGMENTS = "COARSE_FRAGMENTS"
    COARSE_FRAGMENTS_VALUE = "COARSE_FRAGMENTS_VALUE"
    COARSE_FRAGMENTS_SD = "COARSE_FRAGMENTS_SD"
    SOC_PROPERTY = "SOC_PROPERTY"
    BULK_DENSITY_PROPERTY = "BULK_DENSITY_PROPERTY"
    COARSE_FRAGMENTS_PROPERTY = "COARSE_FRAGMENTS_PROPERTY"
    RANGES = "RANGES"
    SIMULATIONS = "SIMULATIONS"
    SEED = "SEED"
    MEMORY_MB = "MEMORY_MB"
    OUTPUT = "OUTPUT"
    OUTPUT_UNCERTAINTY = "OUTPUT_UNCERTAINTY"
    OUTPUT_SUMMARY = "OUTPUT_SUMMARY"
    OUTPUT_POINTS = "OUTPUT_POINTS"

    NAME = "stocks"
    DISPLAY_NAME = "SOC stocks"
    SHORT_DESCRIPTION = "SOC stocks (t/ha) per depth and for 0–30 / 0–100 cm, with Monte Carlo uncertainty."
    TAGS = ("stock", "carbon stock", "bulk density", "pedotransfer", "coarse fragments", "Monte Carlo", "t/ha")
    GROUP = "map"
    ICON = "predict.svg"
    HELP_ANCHOR = "soc-stocks"
    REQUIRES = ("numpy", "scipy", "rasterio")
    HELP = (
        "SOC stocks in t/ha per depth interval and per cumulative range (default 0–30 and 0–100 cm), from the SOC "
        "maps of 'Predict SOC maps' (or a harmonised point layer), bulk density and coarse fragments.<br><br>"
        "<b>Formula</b> (as GSIF's OCSKGM): stock = SOC × BD × (1 − CF/100) × thickness / 10, with SOC in g/kg, "
        "BD in g/cm³, CF in volume % and thickness in cm. Example: 10 g/kg, 1.3 g/cm³, 10 % stones, 0–30 cm → "
        "35.1 t/ha. An interval only partly inside a range counts pro rata of its thickness inside; a range "
        "deeper than the intervals is refused.<br>"
        "<b>Bulk density</b>: a raster (one band, or one per interval named like 'BD 0-5 cm'), a constant, or a "
        "pedotransfer function of SOC from FAO's GSOC mapping cookbook, each of organic matter OM = 1.724 × SOC "
        "(%) giving g/cm³: Saini (1966) 1.62 − 0.06 OM; Honeysett & Ratkowsky (1989) 1/(0.564 + 0.0556 OM); "
        "Drew (1973) 1/(0.6268 + 0.0361 OM); Grigal et al. (1989) 0.669 + 0.941 e^(−0.06 OM); Adams (1973) "
        "100/(OM/0.244 + (100 − OM)/2.65). Choose one fitted to soils like yours.<br>"
        "<b>Uncertainty</b>: a seeded Monte Carlo. SOC is drawn log-normal matching predict's prediction interval "
        "(at its level), BD and CF normal with the standard deviations given; with a pedotransfer function BD is "
        "computed from each SOC draw. Draws are summed over depths within each simulation; the map gives the 5, "
        "50 and 95 % of each range.<br>"
        "<b>Summary</b> (CSV): per range the total stock over the mapped area in Tg C with its 5–95 % range, "
        "and the mean stock in t/ha. The range is computed per simulation over the whole area assuming errors "
        "fully correlated between pixels: the conservative choice, as a range that shrank with the number of "
        "pixels would claim a precision the maps do not have.<br>"
        "<b>Checks</b>: bulk density outside 0.1–2.65 g/cm³, coarse fragments outside 0–100 % and SOC above "
        "600 g/kg are counted in the log and those pixels left out (nodata)."
    )

    def initAlgorithm(self, config=None):  # noqa: N802
        from ..core.pedotransfer import PEDOTRANSFER

        self.add_parameter(
            QgsProcessingParameterMapLayer(
                self.SOC, self.tr("SOC maps or points"), types=[QgsProcessing.TypeRaster, QgsProcessing.TypeVectorPoint]
            ),
            "The multi-band SOC raster of 'Predict SOC maps' (a band per interval, e.g. 'SOC 0-5 cm'), or a point "
            "layer with fields PROPERTY_TOP_BOTTOM (e.g. ORCDRC_0_5) as 'Harmonise horizons' writes.",
        )
        self.add_parameter(
            QgsProcessingParameterEnum(self.SOC_UNIT, self.tr("SOC unit"), options=["g/kg", "%"], defaultValue=0),
            "Unit of the SOC values: g/kg (permille, as ORCDRC) or % (1 % = 10 g/kg).",
        )
        self.add_parameter(
            QgsProcessingParameterRasterLayer(self.SOC_UNCERTAINTY, self.tr("SOC prediction intervals"), optional=True),
            "Optional: the prediction interval output of 'Predict SOC maps' (lower and upper per depth) of the same "
            "run; its level is read from the band names. Without it SOC is taken as known.",
        )
        self.add_parameter(
            QgsProcessingParameterEnum(
                self.BULK_DENSITY_PTF,
                self.tr("Bulk density from SOC (pedotransfer function)"),
                options=[self.tr("None: use the raster or constant")] + [PEDOTRANSFER[k].label for k in PTF_KEYS],
                defaultValue=0,
            ),
            "A pedotransfer function of FAO's GSOC cookbook, used where no bulk density was measured. References: "
            + " ".join(PEDOTRANSFER[k].reference for k in PTF_KEYS),
        )
        self.add_parameter(
            QgsProcessingParameterRasterLayer(self.BULK_DENSITY, self.tr("Bulk density raster"), optional=True),
            "Bulk density on the SOC map's grid: one band for all depths, or one band per SOC interval named like "
            "'BD 0-5 cm' (a 'Predict SOC maps' output of a bulk-density model).",
        )
        self.add_parameter(
            QgsProcessingParameterNumber(
                self.BULK_DENSITY_VALUE,
                self.tr("Bulk density constant"),
                QgsProcessingParameterNumber.Double,
                optional=True,
                minValue=0,
            ),
            "One bulk density for every pixel and depth, when there is neither a raster nor a pedotransfer function.",
        )
        self.add_parameter(
            QgsProcessingParameterEnum(
                self.BULK_DENSITY_UNIT, self.tr("Bulk density unit"), options=["g/cm³", "kg/m³"], defaultValue=0
            ),
            "Unit of the bulk density raster, constant and standard deviation (1 g/cm³ = 1000 kg/m³).",
        )
        self.add_parameter(
            QgsProcessingParameterNumber(
                self.BULK_DENSITY_SD,
                self.tr("Bulk density standard deviation"),
                QgsProcessingParameterNumber.Double,
                0,
                minValue=0,
            ),
            "Uncertainty of bulk density for the Monte Carlo (normal), in the bulk density unit; with a "
            "pedotransfer function, its residual error (e.g. 0.1 g/cm³). 0: bulk density taken as known.",
        )
        self.add_parameter(
            QgsProcessingParameterRasterLayer(self.COARSE_FRAGMENTS, self.tr("Coarse fragments raster"), optional=True),
            "Coarse fragments in volume % on the SOC map's grid: one band for all depths or one per SOC interval.",
        )
        self.add_parameter(
            QgsProcessingParameterNumber(
                self.COARSE_FRAGMENTS_VALUE,
                self.tr("Coarse fragments constant (volume %)"),
                QgsProcessingParameterNumber.Double,
                0,
                minValue=0,
                maxValue=100,
            ),
            "Coarse fragments (stones, gravel) in volume % where there is no raster; 0 for stone-free soils.",
        )
        self.add_parameter(
            QgsProcessingParameterNumber(
                self.COARSE_FRAGMENTS_SD,
                self.tr("Coarse fragments standard deviation (volume %)"),
                QgsProcessingParameterNumber.Double,
                0,
                minValue=0,
            ),
            "Uncertainty of coarse fragments for the Monte Carlo (normal, clipped to 0–100 %). 0: taken as known.",
        )
        for name, label, help_text in (
            (self.SOC_PROPERTY, "Points: SOC property", "the SOC fields' PROPERTY, e.g. ORCDRC; empty: the only one"),
            (self.BULK_DENSITY_PROPERTY, "Points: bulk density property", "bulk density fields, e.g. BLD (BLD_0_5 …)"),
            (self.COARSE_FRAGMENTS_PROPERTY, "Points: coarse fragments property", "volume % fields, e.g. CRFVOL"),
        ):
            self.add_parameter(
                QgsProcessingParameterString(name, self.tr(label), "", optional=True),
                f"Points only: {help_text}. Fields are named PROPERTY_TOP_BOTTOM, one per SOC interval.",
                advanced=True,
            )
        self.add_parameter(
            QgsProcessingParameterString(self.RANGES, self.tr("Depth ranges (cm)"), "0-30,0-100"),
            "Cumulative ranges top-bottom in cm, comma-separated. Intervals partly inside a range count pro rata.",
        )
        self.add_parameter(
            QgsProcessingParameterNumber(
                self.SIMULATIONS, self.tr("Simulations"), QgsProcessingParameterNumber.Integer, 200, minValue=1
            ),
            "Monte Carlo simulations for the 5/50/95 % maps and the summary's range; more give steadier quantiles.",
        )
        self.add_parameter(
            QgsProcessingParameterNumber(self.SEED, self.tr("Random seed"), QgsProcessingParameterNumber.Integer, 1),
            "The same inputs and seed give the same uncertainty maps and summary.",
            advanced=True,
        )
        self.add_parameter(
            QgsProcessingParameterNumber(
                self.MEMORY_MB, self.tr("Memory budget (MB)"), QgsProcessingParameterNumber.Integer, 1024, minValue=64
            ),
            "Working memory; larger rasters are processed block by block within it.",
            advanced=True,
        )
        self.add_parameter(
            QgsProcessingParameterRasterDestination(self.OUTPUT, self.tr("SOC stocks (t/ha)"), optional=True),
            "Rasters: a band per interval and per range, e.g. 'SOC stock 0-30 cm (t/ha)'.",
        )
        self._optional_output(
            QgsProcessingParameterRasterDestination(
                self.OUTPUT_UNCERTAINTY, self.tr("SOC stock uncertainty (5/50/95 %)")
            ),
            "Rasters: the 5, 50 and 95 % of each range's stock from the Monte Carlo.",
        )
        self._optional_output(
            QgsProcessingParameterFileDestination(self.OUTPUT_SUMMARY, self.tr("Area summary"), self.tr("CSV (*.csv)")),
            "Rasters: per range the total stock (Tg C) with its 5–95 % range (errors fully correlated between "
            "pixels) and the mean stock (t/ha). Needs a projected CRS in metres.",
        )
        sink = QgsProcessingParameterFeatureSink(self.OUTPUT_POINTS, self.tr("SOC stocks at points"))
        sink.setDataType(QgsProcessing.TypeVectorPoint)
        self._optional_output(
            sink, "Points: the input points with a field per interval and range (t/ha) and the 5/50/95 % per range."
        )

    def _optional_output(self, parameter, help_text: str) -> None:
        """An output written only when the user asks for it."""
        parameter.setFlags(parameter.flags() | QgsProcessingParameterDefinition.FlagOptional)
        parameter.setCreateByDefault(False)
        self.add_parameter(parameter, help_text)

    def process(self, parameters, context, feedback):
        from ..core.stocks import BD_UNITS, SOC_UNITS, parse_ranges

        self.check_destinations(parameters, context)
        layer = self.parameterAsLayer(parameters, self.SOC, context)
        if layer is None:
            raise QgsProcessingException(self.tr("Choose the SOC maps of 'Predict SOC maps' or a point layer."))
        try:
            ranges = parse_ranges(self.parameterAsString(parameters, self.RANGES, context))
        except ValueError as error:
            raise QgsProcessingException(str(error)) from error
        bd_factor = BD_UNITS[BD_UNIT_KEYS[self.parameterAsEnum(parameters, self.BULK_DENSITY_UNIT, context)]]
        options = {
            "soc_factor": SOC_UNITS[SOC_UNIT_KEYS[self.parameterAsEnum(parameters, self.SOC_UNIT, context)]],
            "bulk_density_factor": bd_factor,
            "coarse_fragments": self.parameterAsDouble(parameters, self.COARSE_FRAGMENTS_VALUE, context),
        }
        ptf, constant = self._bulk_density_choice(parameters, context)
        options["bulk_density"] = constant
        settings = {
            "ranges": ranges,
            "bulk_density_ptf": ptf,
            "bulk_density_sd": self.parameterAsDouble(parameters, self.BULK_DENSITY_SD, context) * bd_factor,
            "coarse_fragments_sd": self.parameterAsDouble(parameters, self.COARSE_FRAGMENTS_SD, context),
            "simulations": self.parameterAsInt(parameters, self.SIMULATIONS, context),
            "seed": self.parameterAsInt(parameters, self.SEED, context),
        }
        if isinstance(layer, QgsRasterLayer):
            return self._rasters(layer, parameters, context, feedback, settings, options)
        return self._points(parameters, context, feedback, settings, options)

    def _bulk_density_choice(self, parameters, context) -> tuple[str | None, float | None]:
        """The pedotransfer function and the constant; exactly one source of bulk density must be given."""
        choice = self.parameterAsEnum(parameters, self.BULK_DENSITY_PTF, context)
        ptf = PTF_KEYS[choice - 1] if choice else None
        raster = self.parameterAsRasterLayer(parameters, self.BULK_DENSITY, context)
        fields = self.parameterAsString(parameters, self.BULK_DENSITY_PROPERTY, context).strip()
        given = parameters.get(self.BULK_DENSITY_VALUE)
        constant = None if given in (None, "") else self.parameterAsDouble(parameters, self.BULK_DENSITY_VALUE, context)
        if sum([ptf is not None, raster is not None or bool(fields), constant is not None]) != 1:
            raise QgsProcessingException(
                self.tr(
                    "Give bulk density one way: a raster (or, for points, fields), a constant, or a pedotransfer "
                    "function of SOC (where none was measured, e.g. Saini or Honeysett & Ratkowsky)."
                )
            )
        return ptf, constant

    def _rasters(self, layer, parameters, context, feedback, settings, options):
        from ..core.models.base import Cancelled
        from ..core.stocks import StockSettings, open_inputs, stock_rasters

        output = self.parameterAsOutputLayer(parameters, self.OUTPUT, context)
        if not output:
            raise QgsProcessingException(self.tr("Choose a file for the SOC stocks of the rasters."))
        uncertainty = self.parameterAsOutputLayer(parameters, self.OUTPUT_UNCERTAINTY, context) or None
        summary = self.parameterAsFileOutput(parameters, self.OUTPUT_SUMMARY, context) or None
        paths = {}
        for name in (self.SOC_UNCERTAINTY, self.BULK_DENSITY, self.COARSE_FRAGMENTS):
            raster = self.parameterAsRasterLayer(parameters, name, context)
            paths[name] = raster_files([raster])[0][0] if raster is not None else None
        try:
            stack, layout, intervals, level = open_inputs(
                raster_files([layer])[0][0],
                paths[self.SOC_UNCERTAINTY],
                paths[self.BULK_DENSITY],
                paths[self.COARSE_FRAGMENTS],
            )
            with stack:
                run_settings = StockSettings(intervals, level=level, **settings)
                feedback.pushInfo(
                    self.tr("Intervals: {}; ranges: {}").format(
                        ", ".join(f"{t:g}-{b:g}" for t, b in intervals),
                        ", ".join(f"{t:g}-{b:g}" for t, b in run_settings.ranges),
                    )
                )
                options.update(uncertainty_path=uncertainty, summary_path=summary, progress=progress_callback(feedback))
                options["memory_mb"] = self.parameterAsInt(parameters, self.MEMORY_MB, context)
                result = stock_rasters(stack, layout, run_settings, output, **options)
        except Cancelled as cancelled:
            raise QgsProcessingException(self.tr("Stock computation cancelled; no output was written.")) from cancelled
        except ValueError as error:
            raise QgsProcessingException(str(error)) from error
        known = level is None and not settings["bulk_density_sd"] and not settings["coarse_fragments_sd"]
        self._report(feedback, result.flags, result.n_pixels, known, bool(uncertainty or summary))
        for row in result.rows if summary else []:
            feedback.pushInfo(
                self.tr(
                    "{range}: {total_Tg:.6g} Tg C ({total_p5_Tg:.6g}–{total_p95_Tg:.6g}) over {area_ha:.6g} ha, "
                    "mean {mean_t_ha:.4g} t/ha ({mean_p5_t_ha:.4g}–{mean_p95_t_ha:.4g}); {uncertainty}"
                ).format(**row)
            )
        outputs = {self.OUTPUT: result.output}
        if result.uncertainty:
            outputs[self.OUTPUT_UNCERTAINTY] = result.uncertainty
        if result.summary:
            outputs[self.OUTPUT_SUMMARY] = result.summary
        return outputs

    def _points(self, parameters, context, feedback, settings, options):
        import numpy as np
        from qgis.core import QgsFeature, QgsField, QgsFields
        from qgis.PyQt.QtCore import QVariant

        from ..core.stocks import StockInputs, StockSettings, compute_stocks, quantiles

        source = self.parameterAsSource(parameters, self.SOC, context)
        for name in (self.SOC_UNCERTAINTY, self.BULK_DENSITY, self.COARSE_FRAGMENTS):
            if parameters.get(name):
                raise QgsProcessingException(
                    self.tr(
                        "Points take bulk density and coarse fragments from fields, constants or a pedotransfer "
                        "function, and no SOC intervals: leave '{}' empty."
                    ).format(self.parameterDefinition(name).description())
                )
        fields_of = property_fields(source.fields())
        soc_property = self.parameterAsString(parameters, self.SOC_PROPERTY, context).strip()
        if not soc_property and len(fields_of) == 1:
            soc_property = next(iter(fields_of))
        if soc_property not in fields_of:
            raise QgsProcessingException(
                self.tr(
                    "Give the SOC property of the point layer (fields PROPERTY_TOP_BOTTOM, e.g. ORCDRC_0_5); it has {}."
                ).format(", ".join(sorted(fields_of)) or self.tr("no such fields"))
            )
        intervals = sorted(fields_of[soc_property])
        try:
            run_settings = StockSettings(intervals, **settings)
        except ValueError as error:
            raise QgsProcessingException(str(error)) from error
        features = list(source.getFeatures())
        columns = {}
        for name, prop in (
            ("soc", soc_property),
            ("bd", self.parameterAsString(parameters, self.BULK_DENSITY_PROPERTY, context).strip()),
            ("cf", self.parameterAsString(parameters, self.COARSE_FRAGMENTS_PROPERTY, context).strip()),
        ):
            if prop:
                columns[name] = self._field_values(features, fields_of, prop, intervals)
        constant = options["bulk_density"]
        bd = columns.get("bd", None if constant is None else np.full((len(intervals), 1), constant))
        inputs = StockInputs(
            soc=columns["soc"] * options["soc_factor"],
            bulk_density=None if bd is None else bd * options["bulk_density_factor"],
            coarse_fragments=columns.get("cf", np.full((len(intervals), 1), options["coarse_fragments"])),
        )
        stocks = compute_stocks(run_settings, inputs, simulate=True)
        fields = QgsFields(source.fields())
        for name in point_fields(run_settings):
            fields.append(QgsField(name, QVariant.Double))
        sink = open_sink(self, parameters, self.OUTPUT_POINTS, context, fields, source.wkbType(), source.sourceCrs())
        if sink is None:
            raise QgsProcessingException(self.tr("Choose an output for the SOC stocks at points."))
        values = np.concatenate([stocks.values, quantiles(stocks.draws)])
        for n, feature in enumerate(features):
            out = QgsFeature(fields)
            out.setGeometry(feature.geometry())
            out.setAttributes(feature.attributes() + [None if np.isnan(v) else float(v) for v in values[:, n]])
            sink.add(out)
        dest = sink.close()
        known = not settings["bulk_density_sd"] and not settings["coarse_fragments_sd"]
        self._report(feedback, stocks.flags, len(features), known, True)
        return {self.OUTPUT_POINTS: dest}

    def _field_values(self, features, fields_of, prop: str, intervals):
        """(intervals, points) values of `prop`'s fields; NaN where a value is missing or not a number."""
        import numpy as np

        from .values import to_float

        names = fields_of.get(prop, {})
        missing = [f"{t:g}-{b:g}" for t, b in intervals if (t, b) not in names]
        if missing:
            raise QgsProcessingException(
                self.tr("The point layer has no {} field for {} cm; give one field per SOC interval.").format(
                    prop, ", ".join(missing)
                )
            )
        values = [[to_float(feature[names[i]])[0] for feature in features] for i in intervals]
        return np.array(values, dtype=float).reshape(len(intervals), len(features))

    def _report(self, feedback, flags, total: int, nothing_uncertain: bool, simulated: bool) -> None:
        """What was computed, implausible inputs as errors, and a warning when the Monte Carlo had nothing
        uncertain to draw."""
        done = total - flags.pixels_nodata - flags.pixels_implausible
        feedback.pushInfo(
            self.tr(
                "Stocks computed for {:,} of {:,} cells or points ({:,} without all inputs, {:,} implausible)."
            ).format(done, total, flags.pixels_nodata, flags.pixels_implausible)
        )
        for message in flags.messages():
            feedback.reportError(message)
        if simulated and nothing_uncertain:
            feedback.pushWarning(
                self.tr(
                    "No uncertainty was given (no SOC prediction intervals, standard deviations 0): "
                    "the 5/50/95 % equal the stocks. Give predict's interval output for an honest range."
                )
            )


def property_fields(fields) -> dict[str, dict[tuple[float, float], str]]:
    """Fields named PROPERTY_TOP_BOTTOM by property and interval, e.g. {'ORCDRC': {(0.0, 5.0): 'ORCDRC_0_5'}}."""
    from ..core.depths import parse_interval_field

    found: dict[str, dict[tuple[float, float], str]] = {}
    for field in fields:
        try:
            prop, top, bottom = parse_interval_field(field.name())
        except ValueError:
            continue
        found.setdefault(prop, {})[(top, bottom)] = field.name()
    return found


def point_fields(settings) -> list[str]:
    """Field names every format accepts: SOCS_0_5 per interval, SOCSUM_0_30 per range, SOCSUM_0_30_P5 … for its
    quantiles (an interval and a range may span the same depths)."""
    from ..core.depths import interval_field
    from ..core.stocks import QUANTILES

    names = [interval_field("SOCS", top, bottom) for top, bottom in settings.intervals]
    names += [interval_field("SOCSUM", top, bottom) for top, bottom in settings.ranges]
    names += [f"{interval_field('SOCSUM', t, b)}_P{100 * q:g}" for t, b in settings.ranges for q in QUANTILES]
    return names
