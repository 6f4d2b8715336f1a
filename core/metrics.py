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

Confidence intervals (`metrics_table` with `sites`): RMSE, R², CCC and ME get 95 % percentile intervals from a
bootstrap over sites, `BOOTSTRAP_RESAMPLES` resamples with a fixed seed. A site's depths share its covariates and
its errors are correlated down the profile, so the site, not the sample, is the independent unit: each resample
draws whole sites with all their depths. Percentile intervals need not contain the estimate when there are very
few sites; such an interval is a warning in itself.

Interval quality (`metrics_table` with `lower` and `upper`): picp, the share of observations inside their
prediction interval (prediction-interval coverage probability), and pi_width, the mean width of the intervals.
"""

from __future__ import annotations

import warnings
from collections.abc import Hashable, Sequence
from dataclasses import dataclass

import numpy as np

METRIC_NAMES = ("n", "r", "r2", "rmse", "mae", "me", "ccc", "kge")
#: the metrics with bootstrap confidence intervals, whose bounds are the fields f"{name}_lo" and f"{name}_hi"
CI_METRICS = ("rmse", "r2", "ccc", "me")
CI_NAMES = tuple(f"{name}_{end}" for name in CI_METRICS for end in ("lo", "hi"))
INTERVAL_QUALITY_NAMES = ("picp", "pi_width")
#: enough for the 2.5 and 97.5 percentiles to be stable to about 1 % of the interval's width
BOOTSTRAP_RESAMPLES = 1000
#: site draws per chunk of resamples: 8 MB of counts at a time, however many sites
_CHUNK_CELLS = 2**20
CONFIDENCE = 0.95
#: per-site sums that every bootstrap metric is computed from: pairs, sum of o, p, o², p², o·p and (p - o)²
_N, _O, _P, _OO, _PP, _OP, _EE = range(7)


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


def interval_quality(observed, lower, upper) -> dict[str, float]:
    """picp and pi_width (see the module docstring) over the observations with both bounds; NaN without any."""
    obs, low, high = (np.asarray(v, dtype=float).ravel() for v in (observed, lower, upper))
    if not obs.shape == low.shape == high.shape:
        raise ValueError(f"{obs.size} observed values but {low.size} lower and {high.size} upper bounds.")
    keep = np.isfinite(obs) & np.isfinite(low) & np.isfinite(high)
    if not keep.any():
        return dict.fromkeys(INTERVAL_QUALITY_NAMES, float("nan"))
    obs, low, high = obs[keep], low[keep], high[keep]
    return {"picp": float(np.mean((low <= obs) & (obs <= high))), "pi_width": float(np.mean(high - low))}


def site_codes(sites: Sequence[Hashable]) -> np.ndarray:
    """0 .. n_sites - 1 for each pair's site id, in order of first appearance."""
    index: dict[Hashable, int] = {}
    return np.array([index.setdefault(site, len(index)) for site in sites], dtype=np.intp)


def resampled_totals(site_sums: np.ndarray, resamples: int, seed: int) -> np.ndarray:
    """(resamples, ...) totals of (n_sites, ...) per-site sums over bootstrap samples of the sites (n_sites drawn
    with replacement): the count of each site in a sample times its sums. The same seed and number of sites give
    the same samples, so that statistics computed in separate calls are paired."""
    n_sites = site_sums.shape[0]
    flat = site_sums.reshape(n_sites, -1)
    rng = np.random.default_rng(seed)
    chunk = max(1, _CHUNK_CELLS // n_sites)
    totals = []
    for start in range(0, resamples, chunk):
        size = min(chunk, resamples - start)
        drawn = rng.integers(0, n_sites, size=(size, n_sites)) + n_sites * np.arange(size)[:, None]
        counts = np.bincount(drawn.ravel(), minlength=size * n_sites).reshape(size, n_sites)
        totals.append(counts @ flat)
    return np.concatenate(totals).reshape(resamples, *site_sums.shape[1:])


def _site_sums(obs: np.ndarray, pred: np.ndarray, codes: np.ndarray, n_sites: int) -> np.ndarray:
    """(n_sites, 7) the sums of `_N` .. `_EE` per site: all that the bootstrap's metrics need."""
    columns = (np.ones_like(obs), obs, pred, obs * obs, pred * pred, obs * pred, (pred - obs) ** 2)
    return np.stack([np.bincount(codes, weights=c, minlength=n_sites) for c in columns], axis=1)


def _metrics_from_sums(sums: np.ndarray, scale: float) -> dict[str, np.ndarray]:
    """RMSE, R², CCC and ME from summed (..., 7) statistics, as `regression_metrics` computes them from the pairs.

    NaN where undefined: no pairs; R² and CCC with fewer than two pairs or (co)variances below `scale` * 1e-10,
    the rounding error of moments of values of size sqrt(scale)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        n = sums[..., _N]
        mean_o, mean_p = sums[..., _O] / n, sums[..., _P] / n
        var_o = sums[..., _OO] / n - mean_o**2
        var_p = sums[..., _PP] / n - mean_p**2
        cov = sums[..., _OP] / n - mean_o * mean_p
        mse = sums[..., _EE] / n
        tiny = 1e-10 * scale
        defined = n >= 2
        r2 = np.where(defined & (var_o > tiny), 1.0 - mse / var_o, np.nan)
        agreement = var_o + var_p + (mean_o - mean_p) ** 2
        ccc = np.where(defined & (agreement > tiny), 2 * cov / agreement, np.nan)
        return {"rmse": np.sqrt(mse), "r2": r2, "ccc": ccc, "me": mean_p - mean_o}


def _percentiles(values: np.ndarray, level: float) -> tuple[np.ndarray, np.ndarray]:
    """Lower and upper percentile bounds of a central `level` interval over axis 0, ignoring NaN resamples
    (e.g. R² of a resample whose observations are all equal); NaN where every resample is NaN."""
    alpha = (1.0 - level) / 2
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN columns give NaN, which is what they mean
        low, high = np.nanquantile(values, [alpha, 1.0 - alpha], axis=0)
    return low, high


def bootstrap_intervals(
    observed,
    predicted,
    sites: Sequence[Hashable],
    masks: Sequence[np.ndarray] | None = None,
    resamples: int = BOOTSTRAP_RESAMPLES,
    level: float = CONFIDENCE,
    seed: int = 0,
) -> list[dict[str, float]]:
    """{rmse_lo, rmse_hi, r2_lo, ...} for each boolean mask over the pairs (default: all pairs), from one
    bootstrap over sites shared by every mask: a resample draws sites with replacement and keeps all their
    pairs. Vectorised: per-site sums once, then (resamples x sites) counts times (sites x sums)."""
    obs, pred = np.asarray(observed, dtype=float).ravel(), np.asarray(predicted, dtype=float).ravel()
    codes = site_codes(sites)
    if not obs.size == pred.size == codes.size:
        raise ValueError(f"{obs.size} observed values, {pred.size} predictions and {codes.size} site ids.")
    masks = [np.ones(obs.size, dtype=bool)] if masks is None else [np.asarray(m, dtype=bool) for m in masks]
    keeps = [mask & np.isfinite(obs) & np.isfinite(pred) for mask in masks]
    used = [keep for keep in keeps if keep.any()]
    if not used:
        return [dict.fromkeys(CI_NAMES, float("nan")) for _ in masks]
    n_sites = int(codes.max()) + 1
    sums, scales = [], []
    for keep in used:
        # centred on the mean observation: the metrics do not change, the moments lose less to rounding
        centre = obs[keep].mean()
        o, p = obs[keep] - centre, pred[keep] - centre
        sums.append(_site_sums(o, p, codes[keep], n_sites))
        scales.append(float(np.mean(o * o + p * p)) or 1.0)
    totals = resampled_totals(np.stack(sums, axis=1), resamples, seed)  # (resamples, masks used, 7)
    rows = []
    for j, scale in enumerate(scales):
        resampled = _metrics_from_sums(totals[:, j], scale)
        row = {}
        for name in CI_METRICS:
            row[f"{name}_lo"], row[f"{name}_hi"] = (float(v) for v in _percentiles(resampled[name], level))
        rows.append(row)
    filled = iter(rows)
    return [next(filled) if keep.any() else dict.fromkeys(CI_NAMES, float("nan")) for keep in keeps]


@dataclass(frozen=True)
class RmseDifference:
    """RMSE of a model relative to a reference on the same pairs, in % (negative: the model is better), with the
    bounds of its confidence interval from a paired bootstrap over sites."""

    percent: float
    lo: float
    hi: float

    def __str__(self) -> str:
        return f"{self.percent:+.1f} % ({self.lo:+.1f} to {self.hi:+.1f})".replace("-", "−")


def paired_rmse_difference(
    observed,
    predicted,
    reference,
    sites: Sequence[Hashable],
    resamples: int = BOOTSTRAP_RESAMPLES,
    level: float = CONFIDENCE,
    seed: int = 0,
) -> RmseDifference:
    """100 (RMSE(predicted) / RMSE(reference) - 1) over the pairs where both models predict, with a percentile
    interval from resampling whole sites, the same sites for both models (paired): the site-to-site variation
    that both models share cancels, which makes the interval narrower than comparing two separate intervals.

    The interval is taken on the log of the ratio, so swapping the models gives the reciprocal ratio with the
    bounds swapped (1 + lo/100 becomes 1 / (1 + hi/100)), and identical predictions give exactly 0 (0 to 0)."""
    obs, pred, ref = (np.asarray(v, dtype=float).ravel() for v in (observed, predicted, reference))
    codes = site_codes(sites)
    if not obs.size == pred.size == ref.size == codes.size:
        raise ValueError(
            f"{obs.size} observed values, {pred.size} and {ref.size} predictions and {codes.size} site ids."
        )
    keep = np.isfinite(obs) & np.isfinite(pred) & np.isfinite(ref)
    if not keep.any():
        return RmseDifference(float("nan"), float("nan"), float("nan"))
    codes = codes[keep]
    n_sites = int(codes.max()) + 1
    squared = np.stack(
        [np.bincount(codes, weights=(v[keep] - obs[keep]) ** 2, minlength=n_sites) for v in (pred, ref)], axis=1
    )
    totals = resampled_totals(squared, resamples, seed)  # (resamples, 2)
    with np.errstate(divide="ignore", invalid="ignore"):
        log_ratio = 0.5 * (np.log(totals[:, 0]) - np.log(totals[:, 1]))
        estimate = 0.5 * (np.log(squared[:, 0].sum()) - np.log(squared[:, 1].sum()))
    finite = np.where(np.isfinite(log_ratio), log_ratio, np.nan)
    low, high = _percentiles(finite, level)
    return RmseDifference(*(float(100 * np.expm1(v)) for v in (estimate, low, high)))


def metrics_table(
    observed,
    predicted,
    interval_labels: Sequence[str],
    groups: Sequence | None = None,
    model_name: str = "",
    sites: Sequence[Hashable] | None = None,
    lower=None,
    upper=None,
) -> list[dict]:
    """Rows of {model, depth, group, *metrics, *CI bounds, picp, pi_width} for flat arrays of site x depth pairs.

    First one row per depth label (in order of first appearance) and a row 'all' over every depth, with group
    'all'; with `groups` (one value per pair, e.g. land use or a region), the same again for each group value
    (in order of first appearance, written as text). The confidence bounds need `sites` (one id per pair) and
    the interval quality `lower` and `upper` (prediction interval bounds per pair); they are NaN without.
    """
    obs, pred = np.asarray(observed, dtype=float).ravel(), np.asarray(predicted, dtype=float).ravel()
    labels = np.asarray([str(label) for label in interval_labels], dtype=object)
    lengths = {"observed": obs.size, "predicted": pred.size, "depth labels": labels.size}
    if groups is not None:
        group_values = np.asarray([str(g) for g in groups], dtype=object)
        lengths["groups"] = group_values.size
    if sites is not None:
        lengths["site ids"] = len(sites)
    if (lower is None) != (upper is None):
        raise ValueError("Give both the lower and the upper bounds of the prediction intervals, or neither.")
    if lower is not None:
        lengths["lower bounds"], lengths["upper bounds"] = np.size(lower), np.size(upper)
    if len(set(lengths.values())) > 1:
        sizes = ", ".join(f"{size} {what}" for what, size in lengths.items())
        raise ValueError(f"The inputs differ in length ({sizes}); give one value of each per observation.")

    depths = list(dict.fromkeys(labels))  # one depth order for every group

    def rows_for(group: str, selected: np.ndarray) -> list[tuple[str, str, np.ndarray]]:
        rows = [(group, depth, selected & (labels == depth)) for depth in depths]
        return [row for row in rows if row[2].any()] + [(group, "all", selected)]

    keys = rows_for("all", np.ones(obs.size, dtype=bool))
    if groups is not None:
        for group in dict.fromkeys(group_values):
            keys.extend(rows_for(group, group_values == group))
    masks = [mask for _, _, mask in keys]
    if sites is None:
        bounds = [dict.fromkeys(CI_NAMES, float("nan")) for _ in masks]
    else:
        bounds = bootstrap_intervals(obs, pred, sites, masks)
    if lower is None:
        quality = [dict.fromkeys(INTERVAL_QUALITY_NAMES, float("nan")) for _ in masks]
    else:
        low, high = np.asarray(lower, dtype=float).ravel(), np.asarray(upper, dtype=float).ravel()
        quality = [interval_quality(obs[mask], low[mask], high[mask]) for mask in masks]
    return [
        {"model": model_name, "depth": depth, "group": group, **regression_metrics(obs[mask], pred[mask]), **b, **q}
        for (group, depth, mask), b, q in zip(keys, bounds, quality)
    ]
