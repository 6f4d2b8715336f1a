"""A self-contained HTML report of a training run: what a soil scientist would show a colleague.

Figures are PNGs embedded as data URIs, so the page opens offline and can be mailed as one file.
"""

from __future__ import annotations

import base64
import html
from pathlib import Path
from typing import Any

import numpy as np

from .aoa import IMPORTANCE_REPEATS
from .depths import interval_label
from .html_parts import STYLE, figure_to_uri, format_cell, img_html, write_html
from .metrics import BOOTSTRAP_RESAMPLES, CI_METRICS, CONFIDENCE, METRIC_NAMES
from .registry import entry, hyperparameters_of
from .training import INTERVAL_LEVEL, CrossValidation, TrainingData, TrainingResult
from .transfer import gain_rows

#: (metric name, column heading), in `metrics.METRIC_NAMES` order
METRIC_COLUMNS = tuple(zip(METRIC_NAMES, ("n", "R", "R²", "RMSE", "MAE", "ME", "CCC", "KGE")))
#: (metric name, column heading) of the metrics with confidence intervals, in `metrics.CI_METRICS` order
CI_COLUMNS = tuple(zip(CI_METRICS, ("RMSE", "R²", "CCC", "ME")))
#: (key of `transfer.gain_rows`, column heading) of the transfer comparison
TRANSFER_COLUMNS = (
    ("n", "n"),
    ("rmse_local", "RMSE local only"),
    ("rmse_transfer", "RMSE with transfer"),
    ("rmse_change_percent", "RMSE change (%)"),
    ("mae_local", "MAE local only"),
    ("mae_transfer", "MAE with transfer"),
    ("ccc_local", "CCC local only"),
    ("ccc_transfer", "CCC with transfer"),
)


#: the metrics in the property's unit (the others have none)
METRICS_WITH_UNIT = ("rmse", "mae", "me")


def metrics_html(rows: list[dict[str, Any]], unit: str = "") -> str:
    """The metrics table; `unit` (e.g. ' (g/kg)') follows the headings of the metrics in the property's unit."""
    head = "".join(
        f"<th>{label}{html.escape(unit) if key in METRICS_WITH_UNIT else ''}</th>" for key, label in METRIC_COLUMNS
    )
    body = "".join(
        f"<tr><td>{format_cell(r['depth'])}</td><td>{format_cell(r['group'])}</td>"
        + "".join(f"<td>{format_cell(r[key])}</td>" for key, _ in METRIC_COLUMNS)
        + "</tr>"
        for r in rows
    )
    return f"<table><tr><th>Depth (cm)</th><th>Group</th>{head}</tr>{body}</table>"


def transfer_html(cv: CrossValidation) -> str:
    """Local-only and transfer models on the same folds, side by side per depth, and what each fold borrowed."""
    head = "".join(f"<th>{label}</th>" for _, label in TRANSFER_COLUMNS)
    body = "".join(
        f"<tr><td>{format_cell(row['depth'])}</td>"
        + "".join(f"<td>{format_cell(row[key])}</td>" for key, _ in TRANSFER_COLUMNS)
        + "</tr>"
        for row in gain_rows(cv.metrics, cv.local_only.metrics)
    )
    folds = "".join(
        f"<tr><td>{i + 1}</td><td>{_borrowed(record.strategy, record.weight)}</td><td>{record.source_sites}</td>"
        f"<td>{record.excluded}</td></tr>"
        for i, record in enumerate(cv.transfer_folds)
    )
    return (
        f"<table><tr><th>Depth (cm)</th>{head}</tr>{body}</table>"
        "<p class='note'>Both models were validated on the same folds of local sites; source sites only trained. "
        "A negative change means the borrowed sites lowered the error at the local sites.</p>"
        "<table><tr><th>Fold</th><th>Source weight</th><th>Source sites used (pooled or pre-trained on)</th>"
        f"<th>Left out (near the fold's test sites)</th></tr>{folds}</table>"
    )


def comparison_html(trained: str, result: TrainingResult, labels: list[str], unit: str) -> str:
    """RMSE per depth of the trained model and of each model compared on the same folds, and the trained
    model's RMSE relative to each, with the paired interval that says whether the difference is more than chance."""

    def rmse_of(metrics: list[dict[str, Any]]) -> dict[str, float]:
        return {row["depth"]: row["rmse"] for row in metrics if row["group"] == "all"}

    depths = [*labels, "all"]
    own = rmse_of(result.validation.metrics)
    head = f"<th>Depth (cm)</th><th>{html.escape(trained)} RMSE{html.escape(unit)}</th>"
    cells = {depth: f"<td>{format_cell(depth)}</td><td>{format_cell(own[depth])}</td>" for depth in depths}
    for comparison in result.comparisons:
        label = html.escape(entry(comparison.kind).label)
        head += f"<th>{label} RMSE{html.escape(unit)}</th><th>{html.escape(trained)} against {label}</th>"
        other = rmse_of(comparison.validation.metrics)
        overall, *per_depth = comparison.differences
        for depth, change in zip(depths, [*per_depth, overall]):
            cells[depth] += f"<td>{format_cell(other[depth])}</td><td>{html.escape(str(change))}</td>"
    body = "".join(f"<tr>{cells[depth]}</tr>" for depth in depths)
    return (
        f"<table><tr>{head}</tr>{body}</table>"
        "<p class='note'>Every model was validated on the same folds. The change is the trained model's RMSE "
        "relative to the other's, with a 95 % interval from resampling whole sites for both models at once "
        "(paired): negative means the trained model is better; an interval that holds 0 means the data cannot "
        "tell the two apart.</p>"
    )


def confidence_html(rows: list[dict[str, Any]], interval_level: float) -> str:
    """Each row's confidence intervals and the quality of its out-of-fold prediction intervals: how far each
    metric can be trusted, and whether the maps' intervals mean what they say."""
    head = "".join(f"<th>{label} {CONFIDENCE:.0%} CI</th>" for _, label in CI_COLUMNS)
    body = "".join(
        f"<tr><td>{format_cell(r['depth'])}</td><td>{format_cell(r['group'])}</td>"
        + "".join(f"<td>{format_cell(r[f'{key}_lo'])} to {format_cell(r[f'{key}_hi'])}</td>" for key, _ in CI_COLUMNS)
        + f"<td>{_percent(r['picp'])}</td><td>{format_cell(r['pi_width'])}</td></tr>"
        for r in rows
    )
    return (
        f"<table><tr><th>Depth (cm)</th><th>Group</th>{head}<th>PICP</th><th>PI width</th></tr>{body}</table>"
        f"<p class='note'>Confidence intervals: percentiles of {BOOTSTRAP_RESAMPLES} bootstrap resamples of whole "
        f"sites with all their depths. PICP: the share of observations inside their out-of-fold {interval_level:.0%} "
        "prediction interval, which should be close to that level; PI width: the intervals' mean width. "
        "Empty (–) for a model without out-of-fold prediction intervals (the CNNs).</p>"
    )


def _percent(value: float) -> str:
    return "–" if np.isnan(value) else f"{value:.1%}"


def _grid(n: int) -> tuple[int, int]:
    cols = min(3, n)
    return (n + cols - 1) // cols, cols


def _hide_unused(axes, used: int) -> None:
    """Blanks the panels of a (rows, cols) grid after the first `used`."""
    for ax in axes.ravel()[used:]:
        ax.axis("off")


def _plots(data: TrainingData, result: TrainingResult, unit: str) -> dict[str, str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = data.interval_labels()
    figures: dict[str, str] = {}
    n_depths = len(labels)

    # SOC distribution per depth
    fig, ax = plt.subplots(figsize=(7, 3.2))
    values = [data.targets[:, d][~np.isnan(data.targets[:, d])] for d in range(n_depths)]
    ax.boxplot(values, labels=labels, vert=True, showfliers=True)
    ax.set_xlabel("Depth interval (cm)")
    ax.set_ylabel(f"{data.property_name}{unit}")
    figures["distribution"] = figure_to_uri(fig)

    cv = result.validation
    if cv is not None:
        rows, cols = _grid(n_depths)
        fig, axes = plt.subplots(rows, cols, figsize=(3.6 * cols, 3.4 * rows), squeeze=False)
        for d in range(n_depths):
            ax = axes[d // cols][d % cols]
            observed, predicted = data.targets[:, d], cv.predictions[:, d]
            ok = ~np.isnan(observed) & ~np.isnan(predicted)
            ax.scatter(observed[ok], predicted[ok], s=8, alpha=0.6, color="#6b4a2b")
            if ok.any():
                high = float(max(observed[ok].max(), predicted[ok].max()))
                ax.plot([0, high], [0, high], color="#888", lw=1)
            ax.set_title(f"{interval_label(*data.intervals[d], ' cm')} (n = {int(ok.sum())})", fontsize=10)
            ax.set_xlabel("observed")
            ax.set_ylabel("predicted")
        _hide_unused(axes, n_depths)
        fig.tight_layout()
        figures["scatter"] = figure_to_uri(fig)

        # residual map (mean out-of-fold residual per site over its depths)
        residual = np.nanmean(np.where(np.isnan(data.targets), np.nan, cv.predictions - data.targets), axis=1)
        fig, ax = plt.subplots(figsize=(6.5, 5))
        limit = float(np.nanpercentile(np.abs(residual), 95)) or 1.0
        points = ax.scatter(
            data.x, data.y, c=residual, cmap="RdBu_r", vmin=-limit, vmax=limit, s=18, edgecolors="#333", linewidths=0.3
        )
        fig.colorbar(points, ax=ax, label=f"mean residual, predicted − observed{unit}")
        ax.set_aspect("equal")
        ax.set_xlabel("x")
        ax.set_ylabel("y")
        figures["residuals"] = figure_to_uri(fig)

        # depth profile of the mean observed and predicted values
        fig, ax = plt.subplots(figsize=(4.2, 4.2))
        mids = data.intervals.mean(axis=1)
        observed_mean = [np.nanmean(v) for v in values]
        predicted_mean = [
            np.nanmean(np.where(np.isnan(data.targets[:, d]), np.nan, cv.predictions[:, d])) for d in range(n_depths)
        ]
        ax.plot(observed_mean, mids, "o-", color="#6b4a2b", label="observed")
        ax.plot(predicted_mean, mids, "s--", color="#2e8b57", label="predicted (out-of-fold)")
        ax.invert_yaxis()
        ax.set_xlabel(f"mean {data.property_name}{unit}")
        ax.set_ylabel("depth (cm, interval mid-point)")
        ax.legend(fontsize=8)
        figures["profile"] = figure_to_uri(fig)

        # density of observed and predicted values per depth (Han et al. 2025, Figure 10)
        fig, axes = plt.subplots(rows, cols, figsize=(3.6 * cols, 2.8 * rows), squeeze=False)
        for d in range(n_depths):
            ax = axes[d // cols][d % cols]
            ok = ~np.isnan(data.targets[:, d]) & ~np.isnan(cv.predictions[:, d])
            for sample, colour, label in (
                (data.targets[ok, d], "#6b4a2b", "observed"),
                (cv.predictions[ok, d], "#2e8b57", "predicted"),
            ):
                _density_curve(ax, sample, colour, label)
            ax.set_title(interval_label(*data.intervals[d], " cm"), fontsize=10)
            ax.set_xlabel(f"{data.property_name}{unit}")
            ax.set_ylabel("density")
        axes[0][0].legend(fontsize=8)
        _hide_unused(axes, n_depths)
        fig.tight_layout()
        figures["density"] = figure_to_uri(fig)

    history = getattr(result.model, "history_", None)
    if history:
        stages = [(name, h) for name, h in history.items() if h.get("train_rmse")]
        if stages:
            rows, cols = _grid(len(stages))
            fig, axes = plt.subplots(rows, cols, figsize=(3.6 * cols, 2.8 * rows), squeeze=False)
            for k, (name, h) in enumerate(stages):
                ax = axes[k // cols][k % cols]
                ax.plot(h["train_rmse"], label="training")
                if h.get("val_rmse"):
                    ax.plot(h["val_rmse"], label="inner validation")
                if h.get("best_epoch") is not None:
                    ax.axvline(h["best_epoch"], color="#888", lw=0.8, ls=":")
                ax.set_title(name, fontsize=9)
                ax.set_xlabel("epoch")
                ax.set_ylabel("RMSE (fitted scale)")
            axes[0][0].legend(fontsize=7)
            _hide_unused(axes, len(stages))
            fig.tight_layout()
            figures["learning"] = figure_to_uri(fig)
    return figures


def density_curve(sample: np.ndarray, points: int = 200) -> tuple[np.ndarray, np.ndarray]:
    """(grid, density) of a Gaussian kernel density estimate of `sample` (Scott's bandwidth).

    For a sample that is never negative (SOC) the estimate is reflected at 0 (the density at x is k(x) + k(−x)),
    so the curve neither runs below 0, where no value can lie, nor dips towards 0 where many values lie close to it.
    """
    from scipy.stats import gaussian_kde

    kde = gaussian_kde(sample)
    spread = float(np.std(sample))
    low = max(float(sample.min()) - spread, 0.0) if sample.min() >= 0 else float(sample.min()) - spread
    grid = np.linspace(low, float(sample.max()) + spread, points)
    density = kde(grid)
    if sample.min() >= 0:
        density = density + kde(-grid)
    return grid, density


def _density_curve(ax, sample: np.ndarray, colour: str, label: str) -> None:
    """The density of `sample` (see `density_curve`), or a rug where it cannot be estimated."""
    if len(sample) < 3 or np.ptp(sample) == 0:
        ax.plot(sample, np.zeros_like(sample), "|", color=colour, label=label)
        return
    grid, density = density_curve(sample)
    ax.plot(grid, density, color=colour, label=label)
    ax.fill_between(grid, density, color=colour, alpha=0.15)


def importance_rows(card) -> list[tuple[str, float]]:
    """(covariate band, permutation importance) as the model card holds them for the area of applicability, most
    important first (ties in band order); empty for a model trained without validation, which has none."""
    if card.aoa_reference is None:
        return []
    return sorted(zip(card.bands.names, card.aoa_reference["importance"]), key=lambda pair: -pair[1])


def importance_scale(card, unit: str) -> str:
    """What the importance is measured in: the property's unit, or the log scale a log-transformed model is
    fitted on (which has none)."""
    return f" (log(1 + {card.property}))" if card.target.transform == "log" else unit


def importance_html(card, unit: str = "") -> str:
    """The 'Covariate importance' section: chart, table and what the numbers mean, or why there are none."""
    rows = importance_rows(card)
    if not rows:
        return (
            "<h2>Covariate importance</h2><p>No covariate importance: it is measured on the sites each "
            "cross-validation fold held out, and this model was trained without validation. Train with Validation "
            "'Random k-fold' or 'Spatial block k-fold' to see which covariates the model relies on.</p>"
        )
    scale = importance_scale(card, unit)
    table = "".join(f"<tr><td>{html.escape(name)}</td><td>{value:.4g}</td></tr>" for name, value in rows)
    log_note = (
        f" The model is fitted on log(1 + {html.escape(card.property)}), so the RMSE is on that scale."
        if card.target.transform == "log"
        else ""
    )
    unused = "" if any(value > 0 for _, value in rows) else " No covariate's shuffling raised the RMSE."
    return (
        "<h2>Covariate importance</h2>"
        "<p class='note'>Permutation importance, out of fold: how much the cross-validation's RMSE (over every site "
        "and depth) rises when one covariate's values are shuffled among the test sites of each fold, averaged over "
        f"{IMPORTANCE_REPEATS} shuffles; 0 means the model does not rely on it (a fall, which is noise, counts as "
        f"0). The same numbers weigh the covariates in the area of applicability.{log_note}{unused}</p>"
        + img_html(_importance_figure(rows, scale), "covariate importance")
        + f"<table><tr><th>Covariate</th><th>RMSE increase{html.escape(scale)}</th></tr>{table}</table>"
    )


def _importance_figure(rows: list[tuple[str, float]], scale: str) -> str:
    """Horizontal bars, the most important covariate on top."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [name for name, _ in reversed(rows)]
    fig, ax = plt.subplots(figsize=(6.5, 1.0 + 0.28 * len(rows)))
    ax.barh(range(len(rows)), [value for _, value in reversed(rows)], color="#6b4a2b")
    ax.set_yticks(range(len(rows)), names, fontsize=8)
    ax.set_xlabel(f"increase in out-of-fold RMSE{scale}")
    return figure_to_uri(fig)


def _transfer_setting(transfer: dict[str, Any] | None) -> dict[str, str]:
    """The settings table's row on transfer, none without."""
    if transfer is None:
        return {}
    if transfer.get("pretrained"):
        pretrained = transfer["pretrained"]
        return {
            "Transfer": f"representation: the pre-trained {pretrained['card']['kind']} model {pretrained['file']} "
            f"(SHA-256 {pretrained['sha256'][:12]}…) carried to the local sites (a CNN fine-tuned, a random forest "
            "on its prediction as covariates)"
        }
    source = transfer["source"]
    if transfer["strategy"] == "representation":
        return {
            "Transfer": f"representation: pre-trained on {transfer['source_sites_used']} of {source['sites']} source "
            f"sites ({transfer['selection']}), carried to the local sites (a CNN fine-tuned, a random forest on its "
            "prediction as covariates)"
        }
    chosen = "chosen by inner cross-validation" if transfer["weight_requested"] == 0 else "as given"
    return {
        "Transfer": f"{transfer['strategy']} from {source['sites']} source sites ({transfer['selection']}); final "
        f"weight {transfer['weight']:g} ({chosen}), {transfer['source_sites_used']} source sites used"
    }


def _borrowed(strategy: str, weight: float) -> str:
    if strategy == "both":
        return f"pre-trained, {weight:g}"
    return "pre-trained" if strategy == "representation" else f"{weight:g}"


def _value_text(value: Any) -> str:
    return format(value, "g") if isinstance(value, float) else str(value)


def settings_rows(bundle, data: TrainingData, result: TrainingResult) -> list[tuple[str, str]]:
    """(setting, value with its unit) of the run, one row per model setting with the dialog's label, so the
    report reads as the dialog did rather than as a Python dict."""
    settings = result.settings
    labels = {setting.name: setting.label for setting in hyperparameters_of(settings["kind"])}
    validation = settings["validation"] + (f", {settings['folds']} folds" if settings["folds"] else "")
    if settings.get("block_size"):
        validation += f", blocks of {settings['block_size']:,.0f} map units"
    model_rows = [(labels.get(name, name), _value_text(value)) for name, value in settings["params"].items()]
    return [
        ("Model", entry(settings["kind"]).label),
        *(model_rows or [("Model settings", "the model's defaults")]),
        ("Validation", validation),
        ("Target transform", settings["transform"]),
        ("Seed", str(settings["random_state"])),
        *_transfer_setting(settings.get("transfer")).items(),
        ("Covariate bands", ", ".join(data.band_names)),
        ("Categorical bands", ", ".join(data.band_names[i] for i in data.categorical) or "none"),
        ("Patch size", f"{bundle.patch_size} × {bundle.patch_size} cells"),
        ("Training time", f"{result.seconds:.1f} s"),
        ("Library versions", ", ".join(f"{k} {v}" for k, v in bundle.card.versions.items())),
    ]


def training_report_html(
    bundle, data: TrainingData, result: TrainingResult, maps: dict[str, str] | None = None, unit: str = ""
) -> str:
    """The report page. `maps`: optional label → PNG data URI of predicted maps (added by the demo); `unit`, e.g.
    ' (g/kg)', follows the property's name and the headings of values in its unit."""
    settings = result.settings
    figures = _plots(data, result, unit)
    counts = np.sum(~np.isnan(data.targets), axis=0)
    labels = data.interval_labels()
    summary_rows = "".join(
        f"<tr><td>{label}</td><td>{int(c)}</td><td>{format_cell(float(np.nanmean(data.targets[:, d])))}</td>"
        f"<td>{format_cell(float(np.nanmedian(data.targets[:, d])))}</td>"
        f"<td>{format_cell(float(np.nanmin(data.targets[:, d])))}</td>"
        f"<td>{format_cell(float(np.nanmax(data.targets[:, d])))}</td></tr>"
        for d, (label, c) in enumerate(zip(labels, counts))
        if c
    )
    setting_rows = "".join(
        f"<tr><td>{html.escape(name)}</td><td>{html.escape(value)}</td></tr>"
        for name, value in settings_rows(bundle, data, result)
    )
    parts = [
        f"<h1>SOC Depth Mapper — {html.escape(entry(settings['kind']).label)} for "
        f"{html.escape(data.property_name)}</h1>",
        "<h2>Data</h2>",
        f"<p>{len(data.site_ids)} sites with covariates; observations per depth interval:</p>",
        "<table><tr><th>Depth (cm)</th><th>Sites</th>"
        + "".join(f"<th>{name}{html.escape(unit)}</th>" for name in ("Mean", "Median", "Min", "Max"))
        + f"</tr>{summary_rows}</table>",
        img_html(figures["distribution"], "distribution per depth"),
        "<h2>Settings</h2>",
        f"<table><tr><th>Setting</th><th>Value</th></tr>{setting_rows}</table>",
        "<h2>Validation</h2>",
    ]
    if result.validation is None:
        parts.append("<p>No cross-validation was run: the accuracy of this model is unknown.</p>")
    else:
        parts += [
            f"<p class='note'>{settings['validation'].capitalize()} {settings['folds']}-fold cross-validation over "
            "whole sites: every prediction below comes from a model that never saw that site.</p>",
            metrics_html(result.validation.metrics, unit),
            *(
                []
                if result.validation.local_only is None
                else ["<h3>Gain from transfer</h3>", transfer_html(result.validation)]
            ),
            *(
                []
                if not result.comparisons
                else [
                    "<h3>Compared with other models on the same folds</h3>",
                    comparison_html(entry(settings["kind"]).label, result, data.interval_labels(), unit),
                ]
            ),
            "<h3>Confidence intervals and prediction-interval coverage</h3>",
            confidence_html(result.validation.metrics, INTERVAL_LEVEL),
            "<h3>Observed vs predicted, per depth</h3>",
            img_html(figures["scatter"], "observed vs predicted"),
            "<h3>Residuals in space</h3>",
            img_html(figures["residuals"], "residual map"),
            "<h3>Mean depth profile</h3>",
            img_html(figures["profile"], "depth profile"),
            "<h3>Density of observed and predicted values, per depth</h3>",
            img_html(figures["density"], "density"),
        ]
    parts.append(importance_html(bundle.card, unit))
    if "learning" in figures:
        parts += ["<h2>Learning curves</h2>", img_html(figures["learning"], "learning curves")]
    body = "\n".join(parts)
    return (
        f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>SOC Depth Mapper report</title>"
        f"<style>{STYLE}</style></head><body>{body}</body></html>"
    )


def maps_html(maps: dict[str, str]) -> str:
    """A 'Maps' section from label -> PNG file path (e.g. the demo's rendered previews)."""
    parts = ["<h2>Maps</h2>"]
    for label, png in maps.items():
        uri = "data:image/png;base64," + base64.b64encode(Path(png).read_bytes()).decode("ascii")
        parts.append(f"<h3>{html.escape(label)}</h3>{img_html(uri, label)}")
    return "\n".join(parts)


def append_maps(path: str, maps: dict[str, str]) -> None:
    """Adds the maps to an existing report, e.g. once they have been predicted and rendered."""
    text = Path(path).read_text(encoding="utf-8")
    write_html(path, text.replace("</body>", maps_html(maps) + "</body>"))


def write_training_report(path: str, bundle, data: TrainingData, result: TrainingResult, **kwargs) -> None:
    """Writes the report atomically (temporary file, then moved into place)."""
    write_html(path, training_report_html(bundle, data, result, **kwargs))
