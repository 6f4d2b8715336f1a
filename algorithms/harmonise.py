"""socdepth:harmonise — horizons to standard depth intervals with equal-area quadratic splines."""

from __future__ import annotations

from qgis.core import (
    QgsFeature,
    QgsFeatureRequest,
    QgsField,
    QgsFields,
    QgsGeometry,
    QgsProcessing,
    QgsProcessingException,
    QgsProcessingParameterEnum,
    QgsProcessingParameterFeatureSink,
    QgsProcessingParameterFeatureSource,
    QgsProcessingParameterField,
    QgsProcessingParameterNumber,
    QgsProcessingParameterString,
    QgsWkbTypes,
)
from qgis.PyQt.QtCore import QVariant

from ..core.depths import DEPTH_FIELD_NAMES, likely_depth_field
from .base import SocAlgorithm
from .layers import open_sink, report_skips
from .values import MISSING, to_float

#: the depth fields the dialog picks where the layer has them (QGIS matches a field name in any case): the names
#: of the GlobalSoilMap / SoilGrids profile exports and the bundled data; a static definition can hold one name
DEFAULT_TOP_FIELD = "top"
DEFAULT_BOTTOM_FIELD = "bottom"


class HarmoniseAlgorithm(SocAlgorithm):
    INPUT = "INPUT"
    PROFILE_FIELD = "PROFILE_FIELD"
    TOP_FIELD = "TOP_FIELD"
    BOTTOM_FIELD = "BOTTOM_FIELD"
    VALUE_FIELDS = "VALUE_FIELDS"
    DEPTHS = "DEPTHS"
    LAMBDA = "LAMBDA"
    VLOW = "VLOW"
    VHIGH = "VHIGH"
    METHOD = "METHOD"
    OUTPUT = "OUTPUT"
    REJECTED = "REJECTED"

    METHODS = ("exact", "mpspline2")

    NAME = "harmonise"
    DISPLAY_NAME = "Harmonise horizons to standard depths"
    SHORT_DESCRIPTION = "Soil horizons to GlobalSoilMap depths (0–5 … 100–200 cm) with equal-area quadratic splines."
    TAGS = ("horizon", "profile", "spline", "equal-area spline", "mpspline", "GlobalSoilMap", "standard depths")
    GROUP = "prepare"
    ICON = "harmonise.svg"
    HELP_ANCHOR = "harmonise-horizons-to-standard-depths"
    REQUIRES = ("numpy",)
    HELP = (
        "Fits a mass-preserving (equal-area) quadratic spline to each profile's horizons and returns the "
        "property's mean over standard depth intervals, by default the GlobalSoilMap depths 0-5, 5-15, 15-30, "
        "30-60, 60-100 and 100-200 cm.<br><br>"
        "<b>Input</b>: one row per horizon (a point layer, or a table such as a CSV) with a profile id, top and "
        "bottom depth in cm and one or more properties (e.g. SOC, clay, pH), each harmonised on its own.<br>"
        "<b>Output</b>: one feature per profile, located where its horizons are, with a field "
        "PROPERTY_TOP_BOTTOM per interval (e.g. ORCDRC_0_5; a decimal point in a depth is written 'p', "
        "e.g. ORCDRC_2p5_10) and PROPERTY_rmse, the fit's root mean square error. An interval the horizons "
        "do not reach is NULL: nothing is extrapolated; a partly covered interval is averaged over its covered "
        "part.<br>"
        "<b>Skipped</b>: horizons with a missing value, a negative depth or top not above bottom; text that is "
        "not a plain number ('high', a detection limit such as '<0.5', or '1,000', which may mean 1000 or 1.0); "
        "profiles whose horizons overlap. Each is listed in the optional 'Rejected horizons and profiles' table, "
        "by input feature id.<br><br>"
        "Method: Bishop, McBratney and Laslett (1999), Geoderma 91:27-45, as in R's mpspline2 (Malone et al. "
        "2009). 'Exact' integrates the spline analytically over each interval; 'mpspline2' reproduces R "
        "mpspline2's 1-cm averaging for results that must match R. Both clamp the spline to the lowest and "
        "highest allowed values point by point before averaging, so where it crosses a limit the interval means "
        "no longer preserve the horizons' mass."
    )

    def initAlgorithm(self, config=None):  # noqa: N802 - QGIS API name
        self.add_parameter(
            QgsProcessingParameterFeatureSource(self.INPUT, self.tr("Horizons"), [QgsProcessing.TypeVector]),
            "One row per horizon: a point layer or a table (CSV, GeoPackage, spreadsheet). Rows of one "
            "profile share its id (and location).",
        )
        self.add_parameter(
            QgsProcessingParameterField(
                self.PROFILE_FIELD, self.tr("Profile id field"), parentLayerParameterName=self.INPUT
            ),
            "The field that identifies the profile each horizon belongs to.",
        )
        depth_fields = (
            (self.TOP_FIELD, "Top depth field (cm)", DEFAULT_TOP_FIELD),
            (self.BOTTOM_FIELD, "Bottom depth field (cm)", DEFAULT_BOTTOM_FIELD),
        )
        for name, label, default in depth_fields:
            self.add_parameter(
                QgsProcessingParameterField(
                    name,
                    self.tr(label),
                    default,
                    parentLayerParameterName=self.INPUT,
                    type=QgsProcessingParameterField.Numeric,
                    optional=True,
                ),
                f"Depth below the surface in cm, a number field; the dialog offers only number fields and picks "
                f"'{default}' (in any case) where the layer has it. Left empty (or '{default}' on a layer without "
                f"it), the run takes the field named like a {default} depth "
                f"({', '.join(DEPTH_FIELD_NAMES[default][1:6])}, …) and says which. A CSV needs its field types "
                f"detected (the default when adding a delimited text layer).",
            )
        self.add_parameter(
            QgsProcessingParameterField(
                self.VALUE_FIELDS,
                self.tr("Properties to harmonise"),
                parentLayerParameterName=self.INPUT,
                allowMultiple=True,
            ),
            "One or more properties measured per horizon, e.g. soil organic carbon (g/kg), clay (%), pH. "
            "Each is fitted on its own; its field name starts the output field names.",
        )
        self.add_parameter(
            QgsProcessingParameterString(self.DEPTHS, self.tr("Depth boundaries (cm)"), "0,5,15,30,60,100,200"),
            "Increasing interval boundaries in cm separated by commas. The default gives the GlobalSoilMap "
            "intervals 0-5, 5-15, 15-30, 30-60, 60-100 and 100-200 cm.",
        )
        self.add_parameter(
            QgsProcessingParameterNumber(
                self.LAMBDA, self.tr("Smoothing (lambda)"), QgsProcessingParameterNumber.Double, 0.1, minValue=0
            ),
            "Larger values give a smoother spline that follows the horizon values less closely; 0 returns "
            "each horizon's own value. 0.1 is the usual choice (Bishop et al. 1999; mpspline2's default).",
            advanced=True,
        )
        self.add_parameter(
            QgsProcessingParameterNumber(
                self.VLOW, self.tr("Lowest allowed value"), QgsProcessingParameterNumber.Double, 0
            ),
            "The spline is raised to this value wherever it falls below it, before interval means are taken "
            "(e.g. 0 for a concentration). Where the spline crosses a limit, the interval means no longer "
            "preserve the horizons' mass.",
            advanced=True,
        )
        self.add_parameter(
            QgsProcessingParameterNumber(
                self.VHIGH, self.tr("Highest allowed value"), QgsProcessingParameterNumber.Double, 1000
            ),
            "The spline is lowered to this value wherever it rises above it, before interval means are taken "
            "(e.g. 1000 g/kg for organic carbon, 100 for clay %). Where the spline crosses a limit, the interval "
            "means no longer preserve the horizons' mass.",
            advanced=True,
        )
        self.add_parameter(
            QgsProcessingParameterEnum(
                self.METHOD,
                self.tr("Interval mean"),
                options=[
                    self.tr("Exact: spline integrated over each interval (mass-preserving)"),
                    self.tr("mpspline2: 1-cm averaging as R mpspline2 0.1.x"),
                ],
                defaultValue=0,
            ),
            "Exact integrates the fitted spline, clamped to the lowest and highest allowed values point by point, "
            "analytically: interval means preserve the horizon mass (except where the spline crosses a limit) "
            "and fractional depths are handled exactly; it is what mpspline2's 1-cm averaging approaches for "
            "ever thinner slices. mpspline2 averages the clamped spline at 1-cm steps like R's mpspline2, for "
            "results that must match ones made in R.",
            advanced=True,
        )
        self.add_parameter(
            QgsProcessingParameterFeatureSink(self.OUTPUT, self.tr("Harmonised profiles")),
            "One feature per profile with PROPERTY_TOP_BOTTOM fields (NULL where not covered) and "
            "PROPERTY_rmse. Feed it to 'Train SOC model'.",
        )
        self.add_parameter(
            QgsProcessingParameterFeatureSink(
                self.REJECTED,
                self.tr("Rejected horizons and profiles"),
                QgsProcessing.TypeVector,
                optional=True,
                createByDefault=False,
            ),
            "Optional table: profile id, property, input feature id (empty for a whole profile) and the reason "
            "for every horizon skipped and every profile that could not be harmonised.",
        )

    def process(self, parameters, context, feedback):
        import numpy as np

        from ..core.depths import interval_field, intervals_from_boundaries, parse_depth_list
        from ..core.spline import harmonise

        self.check_destinations(parameters, context)
        source = self.parameterAsSource(parameters, self.INPUT, context)
        if source is None:
            raise QgsProcessingException(self.invalidSourceError(parameters, self.INPUT))
        profile_field = self.parameterAsString(parameters, self.PROFILE_FIELD, context)
        top_field = self.parameterAsString(parameters, self.TOP_FIELD, context)
        bottom_field = self.parameterAsString(parameters, self.BOTTOM_FIELD, context)
        value_fields = self.parameterAsFields(parameters, self.VALUE_FIELDS, context)
        if not value_fields:
            raise QgsProcessingException(self.tr("Choose at least one property to harmonise."))
        try:
            depths = parse_depth_list(self.parameterAsString(parameters, self.DEPTHS, context))
        except ValueError as error:
            raise QgsProcessingException(str(error)) from error
        lam = self.parameterAsDouble(parameters, self.LAMBDA, context)
        vlow = self.parameterAsDouble(parameters, self.VLOW, context)
        vhigh = self.parameterAsDouble(parameters, self.VHIGH, context)
        if vlow >= vhigh:
            raise QgsProcessingException(
                self.tr("The lowest allowed value ({}) must be below the highest ({}).").format(vlow, vhigh)
            )
        method = self.METHODS[self.parameterAsEnum(parameters, self.METHOD, context)]

        fields = source.fields()
        top_field = self._depth_field(self.TOP_FIELD, top_field, DEFAULT_TOP_FIELD, fields, feedback)
        bottom_field = self._depth_field(self.BOTTOM_FIELD, bottom_field, DEFAULT_BOTTOM_FIELD, fields, feedback)
        indices = [fields.lookupField(name) for name in (profile_field, top_field, bottom_field, *value_fields)]
        for name, index in zip((profile_field, top_field, bottom_field, *value_fields), indices):
            if index < 0:
                raise QgsProcessingException(
                    self.tr("Field '{}' is not in the horizons layer; choose one of its fields: {}.").format(
                        name, ", ".join(fields.names())
                    )
                )

        # Read every horizon once; geometry only matters per profile.
        feedback.setProgressText(self.tr("Reading horizons"))
        total = source.featureCount() or 1
        request = QgsFeatureRequest().setSubsetOfAttributes(indices)
        has_geometry = QgsWkbTypes.geometryType(source.wkbType()) != QgsWkbTypes.NullGeometry
        if not has_geometry:
            request.setFlags(QgsFeatureRequest.NoGeometry)
        ids, tops, bottoms, feature_ids, geometries = [], [], [], [], {}
        values = [[] for _ in value_fields]
        unreadable = []  # (profile id, feature id, reason, cause) for rows that never reach the spline
        # per property, row -> the reading of a value that is present but not a number (the spline sees NaN)
        value_problems = [{} for _ in value_fields]
        for n, feature in enumerate(source.getFeatures(request)):
            if feedback.isCanceled():
                return {}
            attributes = feature.attributes()
            profile = attributes[indices[0]]
            if profile is None or (isinstance(profile, QVariant) and profile.isNull()) or str(profile).strip() == "":
                unreadable.append(("", feature.id(), self.tr("no profile id"), self.tr("no profile id")))
                continue
            top, top_problem, top_cause = to_float(attributes[indices[1]])
            bottom, bottom_problem, bottom_cause = to_float(attributes[indices[2]])
            if top_problem or bottom_problem:
                side, problem, cause = (
                    ("top", top_problem, top_cause) if top_problem else ("bottom", bottom_problem, bottom_cause)
                )
                unreadable.append(
                    (
                        profile,
                        feature.id(),
                        self.tr("{} depth {}").format(side, problem),
                        self.tr("{} depth {}").format(side, cause),
                    )
                )
                continue
            if has_geometry:
                self._check_location(profile, feature.geometry(), geometries)
            ids.append(profile)
            tops.append(top)
            bottoms.append(bottom)
            feature_ids.append(feature.id())
            for column, problems, index in zip(values, value_problems, indices[3:]):
                # the spline drops a NaN as a missing value; the reading says why when it was text
                reading = to_float(attributes[index])
                if reading.problem is not None and reading.cause != MISSING:
                    problems[len(column)] = reading
                column.append(reading.value)
            if n % 1000 == 0:
                feedback.setProgress(40.0 * n / total)
        if not ids:
            raise QgsProcessingException(
                self.tr(
                    "No horizon has a profile id and numeric top and bottom depths. Check the chosen fields "
                    "('{}', '{}', '{}')."
                ).format(profile_field, top_field, bottom_field)
            )

        profile_ids = np.array(ids, dtype=object)
        tops_array = np.array(tops, dtype=float)
        bottoms_array = np.array(bottoms, dtype=float)
        results = []
        for k, (name, column) in enumerate(zip(value_fields, values)):
            if feedback.isCanceled():
                return {}
            feedback.setProgressText(self.tr("Fitting splines for {}").format(name))
            results.append(
                harmonise(
                    profile_ids,
                    tops_array,
                    bottoms_array,
                    np.array(column, dtype=float),
                    depths=depths,
                    lam=lam,
                    vlow=vlow,
                    vhigh=vhigh,
                    method=method,
                    row_names=[self.tr("feature {}").format(fid) for fid in feature_ids],
                )
            )
            feedback.setProgress(40.0 + 30.0 * (k + 1) / len(value_fields))

        # One output row per profile that any property could harmonise, in order of first appearance.
        intervals = intervals_from_boundaries(depths)
        profile_order = list(dict.fromkeys(ids))
        out_fields = QgsFields()
        out_fields.append(fields.at(indices[0]))
        for name in value_fields:
            for top, bottom in intervals:
                out_fields.append(QgsField(interval_field(name, top, bottom), QVariant.Double))
            out_fields.append(QgsField(f"{name}_rmse", QVariant.Double))
        wkb_type = source.wkbType() if has_geometry else QgsWkbTypes.NoGeometry
        sink = open_sink(self, parameters, self.OUTPUT, context, out_fields, wkb_type, source.sourceCrs())
        if sink is None:
            raise QgsProcessingException(self.invalidSinkError(parameters, self.OUTPUT))

        rows = {profile: [None] * (len(value_fields) * (len(intervals) + 1)) for profile in profile_order}
        fitted = set()
        for k, result in enumerate(results):
            offset = k * (len(intervals) + 1)
            for profile, interval_values, rmse in zip(result.profile_ids, result.values, result.rmse):
                row = rows[profile]
                for j, value in enumerate(interval_values):
                    row[offset + j] = None if np.isnan(value) else float(value)
                row[offset + len(intervals)] = None if np.isnan(rmse) else float(rmse)
                if not np.all(np.isnan(interval_values)):
                    fitted.add(profile)

        feedback.setProgressText(self.tr("Writing profiles"))
        written = 0
        for n, profile in enumerate(profile_order):
            if feedback.isCanceled():
                return {}
            if profile not in fitted:
                continue
            feature = QgsFeature(out_fields)
            feature.setAttributes([profile, *rows[profile]])
            if has_geometry and profile in geometries:
                feature.setGeometry(geometries[profile])
            sink.add(feature)
            written += 1
            if n % 1000 == 0:
                feedback.setProgress(70.0 + 30.0 * n / len(profile_order))

        rejections = [(p, "", fid, True, reason, cause) for p, fid, reason, cause in unreadable]
        for name, result, problems in zip(value_fields, results, value_problems):
            for rejection in result.rejections:
                rejections.append(self._rejection(rejection, name, feature_ids, problems, tops_array, bottoms_array))
        self._report(rejections, feedback)
        outputs = {self.OUTPUT: sink.close()}
        rejected_dest = self._write_rejections(parameters, context, rejections)
        if rejected_dest is not None:
            outputs[self.REJECTED] = rejected_dest
        feedback.pushInfo(
            self.tr("Harmonised {} of {} profiles ({} horizons read, {} records skipped).").format(
                written, len(profile_order), len(ids) + len(unreadable), len(rejections)
            )
        )
        return outputs

    def _depth_field(self, parameter: str, chosen: str, default: str, fields, feedback) -> str:
        """The depth field to read: the one chosen, or, when none is chosen or it is the default name and the
        layer lacks it, the field named like that depth (saying which, so that nothing is chosen silently)."""
        if chosen and (chosen != default or fields.lookupField(chosen) >= 0):
            return chosen
        label = self.parameterDefinition(parameter).description()
        try:
            field = likely_depth_field(fields.names(), default)
        except ValueError as error:
            raise QgsProcessingException(self.tr("{} Set '{}' to it.").format(error, label)) from error
        feedback.pushInfo(
            self.tr("The {} depth is read from field '{}', named like one; choose another in '{}'.").format(
                default, field, label
            )
        )
        return field

    def _rejection(self, rejection, prop: str, feature_ids: list, problems: dict, tops, bottoms) -> tuple:
        """A spline rejection as (profile, property, feature id, about one horizon?, reason, cause).

        A whole profile is listed under the feature that caused it (the lower of two overlapping horizons),
        and a value the spline saw as missing gets the reason its text was not read.
        """
        from ..core.spline import VALUE_MISSING

        row = rejection.horizon_index
        if row is None:
            fid = feature_ids[rejection.rows[-1]] if rejection.rows else None
            return rejection.profile_id, prop, fid, False, rejection.reason, rejection.kind
        reading = problems.get(row) if rejection.kind == VALUE_MISSING else None
        if reading is None:
            return rejection.profile_id, prop, feature_ids[row], True, rejection.reason, rejection.kind
        reason = self.tr("horizon {}-{} cm: value {}; the horizon is left out").format(
            f"{tops[row]:g}", f"{bottoms[row]:g}", reading.problem
        )
        return rejection.profile_id, prop, feature_ids[row], True, reason, self.tr("value {}").format(reading.cause)

    def _check_location(self, profile, geometry: QgsGeometry, geometries: dict) -> None:
        """Every horizon of a profile must sit at one location; otherwise the ids are ambiguous."""
        if geometry is None or geometry.isEmpty():
            return
        known = geometries.get(profile)
        if known is None:
            geometries[profile] = QgsGeometry(geometry)
        elif not known.equals(geometry):
            raise QgsProcessingException(
                self.tr(
                    "Profile '{}' has horizons at different locations ({} and {}). A profile id must "
                    "identify one site: give each site its own id, or correct the coordinates."
                ).format(profile, known.asWkt(2), geometry.asWkt(2))
            )

    def _report(self, rejections, feedback) -> None:
        skips = []
        for profile, prop, fid, one_horizon, reason, cause in rejections:
            label = f" [{prop}]" if prop else ""
            if one_horizon:  # the profile goes on without this horizon
                message = self.tr("Skipped a horizon (feature {}) of profile '{}'{}: {}")
                message = message.format(fid, profile, label, reason)
            else:
                message = self.tr("Skipped profile '{}'{}: {}").format(profile, label, reason)
            skips.append((message, cause))
        report_skips(
            feedback,
            skips,
            self.tr("Skipped records by reason — {causes}"),
            self.tr("see the 'Rejected horizons and profiles' output."),
        )

    def _write_rejections(self, parameters, context, rejections):
        fields = QgsFields()
        fields.append(QgsField("profile_id", QVariant.String))
        fields.append(QgsField("property", QVariant.String))
        fields.append(QgsField("feature_id", QVariant.LongLong))
        fields.append(QgsField("reason", QVariant.String))
        sink = open_sink(self, parameters, self.REJECTED, context, fields)
        if sink is None:
            return None
        for profile, prop, fid, _one_horizon, reason, _cause in rejections:
            feature = QgsFeature(fields)
            feature.setAttributes([str(profile), prop, fid, reason])
            sink.add(feature)
        return sink.close()
