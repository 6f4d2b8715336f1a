"""Validation statistics for predicted against observed soil properties, per depth interval and overall.

Metrics (NaN pairs are left out; a metric that is undefined for the data, e.g. R with constant observations or
anything but the errors with fewer than two pairs, is NaN rather than an error, so that a table with a thin
depth interval still prints):

- n: pairs used.
- r: Pearson correlation.
- r2: coefficient of determination 1 - SSE/SST, i.e. the share of the variance of the observations that the
  predictions explain (the "model efficiency"). Unlike r**2 it penalises bias and scale errors and is negative
  when the predictions are worse than predicting the observed mean everywhere.
- rmse, mae: root mean squared and mean absolute error.
- me: mean error, mean(predicted - observed): positive when the model over-predicts (bias).
- ccc: Lin's concordance correlation coefficient with population (1/n) moments,
  2 s_op / (s_o^2 + s_p^2 + (mean_o - mean_p)^2): agreement with the 1:1 line.
- kge: Kling-Gupta efficiency (Gupta et al. 2009, J. Hydrol. 377:80-91),
  1 - sqrt((r - 1)^2 + (alpha - 1)^2 + (beta - 1)^2), alpha = sd_pred / sd_obs, beta = mean_pred / mean_obs.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

METRIC_NAMES = ("n", "r", "r2", "rmse", "mae", "me", "ccc", "kge")


def _paired(observed, predicted) -> tuple[np.ndarray, np.ndarray]:
    obs = np.asarray(observed, dtype=float).ravel()
    pred = np.asarray(predicted, dtype=float).ravel()
    if obs.shape != pred.shape:
        raise ValueError(
            f"{obs.size} observed values but {pred.size} predictions; give one prediction per observation."
        )
    keep = np.isfinite(obs) & np.isfinite(pred)
    return obs[keep], pred[keep]


def regression_metrics(observed, predicted) -> dict[str, float]:
    """The metrics of METRIC_NAMES for one set of pairs (see the module docstring)."""
    obs, pred = _paired(observed, predicted)
    n = obs.size
    nan = float("nan")
    result = dict.fromkeys(METRIC_NAMES, nan)
    result["n"] = n
    if n == 0:
        return result
    error = pred - obs
    result["rmse"] = float(np.sqrt(np.mean(error**2)))
    result["mae"] = float(np.mean(np.abs(error)))
    result["me"] = float(np.mean(error))
    if n < 2:
        return result
    # exact tests for constant data: a variance computed from rounded means can be 1e-33 instead of 0
    obs_varies, pred_varies = np.ptp(obs) > 0, np.ptp(pred) > 0
    mean_obs, mean_pred = obs.mean(), pred.mean()
    var_obs, var_pred = np.mean((obs - mean_obs) ** 2), np.mean((pred - mean_pred) ** 2)
    cov = np.mean((obs - mean_obs) * (pred - mean_pred))
    if obs_varies:
        result["r2"] = float(1.0 - np.sum(error**2) / np.sum((obs - mean_obs) ** 2))
    if obs_varies and pred_varies:
        r = cov / np.sqrt(var_obs * var_pred)
        result["r"] = float(r)
        if mean_obs != 0:
            alpha, beta = np.sqrt(var_pred / var_obs), mean_pred / mean_obs
            result["kge"] = float(1.0 - np.sqrt((r - 1) ** 2 + (alpha - 1) ** 2 + (beta - 1) ** 2))
    if obs_varies or pred_varies:
        result["ccc"] = float(2 * cov / (var_obs + var_pred + (mean_obs - mean_pred) ** 2))
    return result


def metrics_table(
    observed,
    predicted,
    interval_labels: Sequence[str],
    groups: Sequence | None = None,
    model_name: str = "",
) -> list[dict]:
    """Rows of {model, depth, group, *metrics} for flat arrays of site x depth pairs.

    First one row per depth label (in order of first appearance) and a row 'all' over every depth, with group
    'all'; with `groups` (one value per pair, e.g. land use or a region), the same again for each group value
    (in order of first appearance, written as text).
    """
    obs, pred = np.asarray(observed, dtype=float).ravel(), np.asarray(predicted, dtype=float).ravel()
    labels = np.asarray([str(label) for label in interval_labels], dtype=object)
    lengths = {"observed": obs.size, "predicted": pred.size, "depth labels": labels.size}
    if groups is not None:
        group_values = np.asarray([str(g) for g in groups], dtype=object)
        lengths["groups"] = group_values.size
    if len(set(lengths.values())) > 1:
        sizes = ", ".join(f"{size} {what}" for what, size in lengths.items())
        raise ValueError(f"The inputs differ in length ({sizes}); give one value of each per observation.")

    depths = list(dict.fromkeys(labels))  # one depth order for every group

    def rows_for(group: str, selected: np.ndarray) -> list[dict]:
        rows = []
        for depth in depths:
            mask = selected & (labels == depth)
            if not mask.any():
                continue
            rows.append(
                {"model": model_name, "depth": depth, "group": group, **regression_metrics(obs[mask], pred[mask])}
            )
        rows.append(
            {"model": model_name, "depth": "all", "group": group, **regression_metrics(obs[selected], pred[selected])}
        )
        return rows

    table = rows_for("all", np.ones(obs.size, dtype=bool))
    if groups is not None:
        for group in dict.fromkeys(group_values):
            table.extend(rows_for(group, group_values == group))
    return table
