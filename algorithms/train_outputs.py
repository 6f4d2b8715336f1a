"""The outputs of 'Train SOC model': the model file, the metrics table (with the models compared on the same
folds), the out-of-fold predictions and the report, and what the log says of them. A mixin of the train
algorithm, kept apart so that train.py stays about reading the inputs and training."""

from __future__ import annotations

import os

from qgis.core import QgsFeature, QgsField, QgsFields, QgsProcessingException, QgsWkbTypes
from qgis.PyQt.QtCore import QVariant

from ..core import registry
from .layers import open_sink
from .styling import UNIT, ResidualStyler

#: metrics table fields of a compared model: the trained model's RMSE relative to it, in %, and the 95 % interval
CHANGE_FIELDS = ("rmse_change_pct", "rmse_change_lo", "rmse_change_hi")
#: the out-of-fold predictions table, as `core.training.out_of_fold_rows` fills it
OUT_OF_FOLD_FIELDS = (
    ("site", QVariant.LongLong),
    ("depth", QVariant.String),
    ("top", QVariant.Double),
    ("bottom", QVariant.Double),
    ("observed", QVariant.Double),
    ("predicted", QVariant.Double),
    ("fold", QVariant.Int),
)


class TrainOutputs:
    """Writes a training run's outputs, for the train algorithm (OUTPUT_MODEL, OUTPUT_METRICS, OUTPUT_PREDICTIONS,
    OUTPUT_REPORT and INPUT are its parameters)."""

    def _write_outputs(self, parameters, context, feedback, data, result, sampled, model_path, report_path):
        import numpy as np

        from ..core.bundle import SocModel
        from ..core.metrics import CI_NAMES, INTERVAL_QUALITY_NAMES, METRIC_NAMES
        from ..core.training import out_of_fold_rows

        feedback.setProgressText(self.tr("Writing the model file"))
        try:
            bundle = SocModel.from_training(result, data, sampled.grid)
        except ValueError as error:  # e.g. sites too alike for an area of applicability
            raise QgsProcessingException(str(error)) from error
        os.makedirs(os.path.dirname(os.path.abspath(model_path)), exist_ok=True)
        bundle.save(model_path)
        outputs = {self.OUTPUT_MODEL: model_path}
        cv = result.validation
        if cv is None:
            feedback.pushInfo(self.tr("No validation was asked for: no metrics."))
        else:
            for row in cv.metrics:
                if row["group"] == "all":
                    feedback.pushInfo(
                        self.tr(
                            "{depth}: n {n}, RMSE {rmse:.3f} (95 % CI {rmse_lo:.3f}–{rmse_hi:.3f}), R² {r2:.3f}, "
                            "CCC {ccc:.3f}"
                        ).format(**row)
                    )
            aoa = bundle.card.aoa_reference
            weights = ", ".join(f"{name} {value:.3g}" for name, value in zip(data.band_names, aoa["importance"]))
            feedback.pushInfo(
                self.tr("Area of applicability: DI threshold {:.4g}; band weights (permutation importance): {}").format(
                    aoa["threshold"], weights
                )
            )
            if cv.local_only is not None:
                self.report_transfer(feedback, cv)
            for comparison in result.comparisons:
                self._report_comparison(feedback, data, result, comparison)

        fields = QgsFields()
        for name in ("model", "depth", "group"):
            fields.append(QgsField(name, QVariant.String))
        values = (*METRIC_NAMES, *CI_NAMES, *INTERVAL_QUALITY_NAMES)
        for name in (*values, *CHANGE_FIELDS):
            fields.append(QgsField(name, QVariant.Int if name == "n" else QVariant.Double))
        sink = open_sink(self, parameters, self.OUTPUT_METRICS, context, fields)
        if sink is not None:
            rows = []
            if cv is not None:
                local_only = [] if cv.local_only is None else cv.local_only.metrics
                rows = [(row, None) for row in [*cv.metrics, *local_only]]
                for comparison in result.comparisons:
                    change = dict(zip(["all", *data.interval_labels()], comparison.differences))
                    rows += [(row, change.get(row["depth"])) for row in comparison.validation.metrics]
            for row, change in rows:
                feature = QgsFeature(fields)
                in_all = change is not None and row["group"] == "all"
                feature.setAttributes(
                    [row["model"], row["depth"], str(row["group"])]
                    + [None if _is_nan(row[name]) else row[name] for name in values]
                    + [_or_none(getattr(change, part)) if in_all else None for part in ("percent", "lo", "hi")]
                )
                sink.add(feature)
            outputs[self.OUTPUT_METRICS] = sink.close()

        if cv is not None:
            fields = QgsFields()
            for name, kind in OUT_OF_FOLD_FIELDS:
                fields.append(QgsField(name, kind))
            source = self.parameterAsSource(parameters, self.INPUT, context)
            sink = open_sink(
                self, parameters, self.OUTPUT_PREDICTIONS, context, fields, QgsWkbTypes.Point, source.sourceCrs()
            )
            if sink is not None:
                geometry_of = dict(zip(sampled.points.feature_ids, sampled.points.geometries))
                residuals = []
                for s, row in out_of_fold_rows(data, cv):
                    feature = QgsFeature(fields)
                    feature.setGeometry(geometry_of[data.site_ids[s]])
                    feature.setAttributes(row)
                    sink.add(feature)
                    residuals.append(row[5] - row[4])  # predicted - observed
                outputs[self.OUTPUT_PREDICTIONS] = sink.close()
                if context.willLoadLayerOnCompletion(sink.dest_id) and residuals:
                    typical = float(np.percentile(np.abs(residuals), 95))
                    styler = ResidualStyler(data.interval_labels(), typical)
                    context.layerToLoadOnCompletionDetails(sink.dest_id).setPostProcessor(styler)

        if report_path:
            from ..core.report import write_training_report

            feedback.setProgressText(self.tr("Writing the report"))
            write_training_report(report_path, bundle, data, result, unit=f" ({UNIT})")  # as the map legends
            outputs[self.OUTPUT_REPORT] = report_path
        feedback.setProgress(100)
        return outputs

    def _report_comparison(self, feedback, data, result, comparison) -> None:
        """The compared model's overall RMSE and the trained model's RMSE relative to it, overall and per depth."""
        trained, other = registry.entry(result.settings["kind"]).label, registry.entry(comparison.kind).label
        overall, *per_depth = comparison.differences
        feedback.pushInfo(
            self.tr("On the same folds: {} RMSE {:.3f}, {} {:.3f}; {} against {}: {} overall; per depth {}.").format(
                trained,
                _overall_rmse(result.validation.metrics),
                other,
                _overall_rmse(comparison.validation.metrics),
                trained,
                other,
                overall,
                "; ".join(f"{label} {change}" for label, change in zip(data.interval_labels(), per_depth)),
            )  # fmt: skip
        )


def _is_nan(value) -> bool:
    return isinstance(value, float) and value != value


def _overall_rmse(metrics: list[dict]) -> float:
    return next(row["rmse"] for row in metrics if row["depth"] == "all" and row["group"] == "all")


def _or_none(value: float) -> float | None:
    return None if _is_nan(value) else value
