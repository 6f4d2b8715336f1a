"""The plain CNN's settings, chosen on several real surveys at once (issue 15 §1): leave one data set out.

The CNN defaults (7 × 7 patches, dropout 0.4, targets fitted as they are) were chosen on Edgeroi alone. On every
data set of `bench.accuracy` and on the folds of `bench.forest_defaults` (spatial blocks over whole sites, seed
42), this scores the plain CNN (`kind="cnn"`, the cheapest; the transfer and the multi-task CNN share its network
and settings) with its shipped defaults and with one setting changed at a time (`CANDIDATES`), and the plugin's
random forest with its defaults as the yardstick: the out-of-fold RMSE (95 % bootstrap interval over sites) and
each candidate's paired change against the shipped CNN (`rmse_differences`). A patch of 5 cells is too small for
the two convolution blocks (each trims 3 cells), so the smaller patch is measured with one conv block.

Then each data set is held out in turn: the candidate with the lowest mean RMSE relative to the shipped CNN on
the other data sets is scored on it, against the shipped CNN. The intervals are over sites only: one network's
RMSE also varies by about 1 % from seed to seed (`bench.cnn_seeds`), which they do not include.

    python -m bench.cnn_defaults [--data edgeroi,ebergotzen,...] [--candidates shipped,dropout,...]
                                 [--epochs 150] [--seed 42] [--cache DIR] [--cached-only]

`--cache DIR` keeps each model's out-of-fold predictions, so data sets and candidates can be run by separate
processes and summarised together with `--cached-only` (which fits nothing and leaves out what is not cached).
`--epochs` below the shipped number is for a quick check that the benchmark runs, not for figures.
"""

from __future__ import annotations

import argparse
import contextlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from bench.accuracy import DATASETS
from bench.forest_defaults import Survey, leave_one_out_choice, load_survey
from soc_depth_mapper.core.models.cnn import CNNDepthModel
from soc_depth_mapper.core.models.forest import RandomForestDepthModel
from soc_depth_mapper.core.training import cross_validate, rmse_differences, validation_metrics

FOREST = "random forest (defaults)"
FOREST_TREES = 500
SHIPPED = "shipped"


@dataclass(frozen=True)
class Setting:
    """A CNN candidate: its label, its settings over the shipped ones, and the target transform it is fitted on."""

    label: str
    params: dict[str, Any] = field(default_factory=dict)
    transform: str = "none"

    @property
    def patch_size(self) -> int:
        return self.params.get("patch_size", CNNDepthModel().patch_size)


#: key (for `--candidates`) -> setting; the shipped defaults first, then one change at a time
CANDIDATES = {
    SHIPPED: Setting(SHIPPED),
    "dropout": Setting("dropout 0.2", {"dropout": 0.2}),
    "log": Setting("log target", transform="log"),
    "patch9": Setting("patch 9", {"patch_size": 9}),
    "patch5": Setting("patch 5, one conv block", {"patch_size": 5, "conv_channels": (16,)}),
}


class NotCached(Exception):
    """Raised instead of fitting under `--cached-only`."""


def run_setting(
    survey: Survey, setting: Setting, epochs: int, seed: int, cache: Path | None, cached_only: bool
) -> None:
    """Adds `setting`'s out-of-fold predictions to `survey` (from `cache` when there), on the survey's folds."""

    def fit() -> np.ndarray:
        if cached_only:
            raise NotCached(setting.label)
        data = survey.data
        if setting.patch_size != data.patches.shape[2]:
            data = DATASETS[survey.name][0](setting.patch_size)
            if not np.array_equal(data.site_ids, survey.data.site_ids):
                raise ValueError(f"{survey.name}: patch {setting.patch_size} keeps other sites; folds would differ")
        model = lambda: CNNDepthModel(epochs=epochs, random_state=seed, **setting.params)  # noqa: E731
        return cross_validate(data, model, survey.folds, transform=setting.transform, scheme="spatial").predictions

    with contextlib.suppress(NotCached):
        survey.run(setting.label, epochs, seed, cache, fit, unit="epochs")


def run_forest(survey: Survey, seed: int, cache: Path | None, cached_only: bool) -> None:
    def fit() -> np.ndarray:
        if cached_only:
            raise NotCached(FOREST)
        model = lambda: RandomForestDepthModel(FOREST_TREES, random_state=seed, n_jobs=1)  # noqa: E731
        return cross_validate(survey.data, model, survey.folds, scheme="spatial").predictions

    with contextlib.suppress(NotCached):
        survey.run(FOREST, FOREST_TREES, seed, cache, fit)


def rmse_text(survey: Survey, label: str) -> str:
    overall = validation_metrics(survey.data, survey.predictions[label], label)[-1]
    return f"{overall['rmse']:.3f} ({overall['rmse_lo']:.3f}–{overall['rmse_hi']:.3f})"


def print_survey(survey: Survey, seed: int) -> None:
    """`survey`'s RMSE per model, and each one's change against the shipped CNN, overall and per depth."""
    shipped = CANDIDATES[SHIPPED].label
    depths = survey.data.interval_labels()
    print(f"\n{survey.title}: out-of-fold RMSE (95 % CI over sites); RMSE relative to the shipped CNN (paired 95 % CI)")
    for label in survey.predictions:
        line = f"  {label:<26}{rmse_text(survey, label):>24}"
        if label != shipped and shipped in survey.predictions:
            overall, *per_depth = rmse_differences(
                survey.data, survey.predictions[label], survey.predictions[shipped], seed
            )
            line += f"  {overall!s:>26};  " + ";  ".join(f"{d} {v}" for d, v in zip(depths, per_depth, strict=True))
        print(line, flush=True)


def leave_one_out(surveys: list[Survey], labels: list[str]) -> dict[str, str]:
    """Held-out data set -> the CNN candidate with the lowest mean RMSE relative to the shipped CNN on the others."""
    return leave_one_out_choice(surveys, labels, CANDIDATES[SHIPPED].label, "the shipped CNN", 26)


def print_table(surveys: list[Survey], labels: list[str], chosen: dict[str, str], seed: int) -> None:
    """The summary as a Markdown table: one row per data set."""
    shipped = CANDIDATES[SHIPPED].label
    changes = [label for label in labels if label != shipped]
    header = ["data set", "sites", "forest RMSE (95 % CI)", "shipped CNN RMSE (95 % CI)", "CNN vs forest"]
    header += [f"{label} vs shipped" for label in changes] + ["chosen on the others", "its change on this one"]
    print("\n| " + " | ".join(header) + " |\n" + "| --- " * len(header) + "|")
    for survey in surveys:
        p = survey.predictions
        forest = rmse_text(survey, FOREST) if FOREST in p else "—"
        versus_forest = str(rmse_differences(survey.data, p[shipped], p[FOREST], seed)[0]) if FOREST in p else "—"
        cells = [survey.title, str(len(survey.data.site_ids)), forest, rmse_text(survey, shipped), versus_forest]
        cells += [str(rmse_differences(survey.data, p[label], p[shipped], seed)[0]) for label in changes]
        pick = chosen.get(survey.name)
        if pick is None:
            cells += ["—", "—"]
        else:
            cells += [
                pick,
                "0" if pick == shipped else str(rmse_differences(survey.data, p[pick], p[shipped], seed)[0]),
            ]
        print("| " + " | ".join(cells) + " |")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=",".join(DATASETS), help=f"of {', '.join(DATASETS)}")
    parser.add_argument("--candidates", default=",".join(CANDIDATES), help=f"of {', '.join(CANDIDATES)}")
    parser.add_argument("--epochs", type=int, default=CNNDepthModel().epochs, help="maximum epochs (shipped: 150)")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--cache", type=Path, default=None, help="folder for out-of-fold predictions")
    parser.add_argument("--cached-only", action="store_true", help="summarise the cache, fit nothing")
    parser.add_argument("--no-forest", dest="forest", action="store_false", help="skip the random forest")
    args = parser.parse_args(argv)
    keys = list(dict.fromkeys([SHIPPED, *args.candidates.split(",")]))
    unknown = [key for key in keys if key not in CANDIDATES]
    if unknown:
        parser.error(f"unknown candidates {', '.join(unknown)}; choose of {', '.join(CANDIDATES)}")
    settings = [CANDIDATES[key] for key in keys]
    surveys = [load_survey(name, args.seed, CNNDepthModel().patch_size) for name in args.data.split(",")]
    if args.forest:
        for survey in surveys:
            run_forest(survey, args.seed, args.cache, args.cached_only)
    for setting in settings:  # candidate by candidate, so that a cut-short run has whole candidates
        for survey in surveys:
            run_setting(survey, setting, args.epochs, args.seed, args.cache, args.cached_only)
    for survey in surveys:
        print_survey(survey, args.seed)
    shipped = CANDIDATES[SHIPPED].label
    labels = [s.label for s in settings if all(s.label in survey.predictions for survey in surveys)]
    chosen = leave_one_out(surveys, labels) if len(surveys) > 1 and shipped in labels else {}
    print_table(surveys, labels, chosen, args.seed)


if __name__ == "__main__":
    main()
