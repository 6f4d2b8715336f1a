"""Instance transfer on real data: does borrowing a library's sites help a small local data set, and does the
automatic weight back off when the library does not fit?

The bundled Edgeroi survey (ORCDRC, six GlobalSoilMap depths, 250 m covariates) is split into halves: by
northing and by easting (regional splits, both directions: the library is one half, the local area the other)
and at random (the control, where the library follows the local distribution); `doubled` is the random split with
the library's SOC doubled (as a library measured by another method would be): a library that does not fit, from
which the automatic weight must back off. In the local half, `n` sites
drawn at random (seeded) train, and every other local site tests. For each draw the table gives the RMSE, MAE and
CCC over all depths at the test sites of

- the local-only random forest,
- plain pooling (the library at weight 1, as a local site),
- instance transfer with the automatic weight (`core.transfer`, weight chosen by inner CV on the training sites),
- representation transfer for the forest (a forest fitted on the library predicts every depth; these predictions
  are extra covariates of the local forest, `core.models.stacked`),

and the change of RMSE against local-only (negative: transfer helped).

    python -m bench.transfer [--sizes 25,50,100] [--draws 3] [--splits random,south,north,west,east,doubled]
                             [--trees 100] [--figure docs/images/transfer_learning_curve.png]

`--figure` draws the learning curve (mean RMSE of the draws against the number of local sites, per split and
strategy) with matplotlib.

`south` means the library is the southern half and the local area the northern one (south -> north), and so on.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from soc_depth_mapper.core.models.forest import RandomForestDepthModel
from soc_depth_mapper.core.training import TrainingData, validation_metrics
from soc_depth_mapper.core.transfer import FitRecipe, Transfer, fit_with_source, subset

from .accuracy import edgeroi_training_data

#: split name -> (coordinate, library side): the library is the half on that side of the median
SPLITS = {
    "random": None,
    "doubled": None,
    "south": ("y", "low"),
    "north": ("y", "high"),
    "west": ("x", "low"),
    "east": ("x", "high"),
}
#: factor on the library's SOC per split (1 where the library is as surveyed)
LIBRARY_FACTOR = {"doubled": 2.0}
STRATEGIES = ("local only", "pooled (weight 1)", "transfer (auto weight)", "representation")


def halves(data: TrainingData, split: str, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(library mask, local mask) over the sites."""
    if SPLITS[split] is None:
        library = np.zeros(len(data.site_ids), dtype=bool)
        library[np.random.default_rng(seed).permutation(len(library))[: len(library) // 2]] = True
        return library, ~library
    axis, side = SPLITS[split]
    values = getattr(data, axis)
    library = values < np.median(values) if side == "low" else values >= np.median(values)
    return library, ~library


def run_draw(data: TrainingData, split: str, size: int, draw: int, trees: int) -> dict[str, dict[str, float]]:
    """RMSE, MAE and CCC at the held-out local sites of every strategy for one seeded draw of `size` sites."""
    library, local = halves(data, split, seed=draw)
    local_sites = np.flatnonzero(local)
    chosen = np.random.default_rng(1000 + draw).choice(local_sites, size, replace=False)
    train_mask = np.zeros(len(data.site_ids), dtype=bool)
    train_mask[chosen] = True
    test_mask = local & ~train_mask
    training, test, source = subset(data, train_mask), subset(data, test_mask), subset(data, library)
    source.targets = source.targets * LIBRARY_FACTOR.get(split, 1.0)

    def make_model() -> RandomForestDepthModel:
        return RandomForestDepthModel(n_trees=trees, random_state=draw, n_jobs=1)

    scores = {}
    transfers = (None, Transfer(source, weight=1.0), Transfer(source), Transfer(source, strategy="representation"))
    for strategy, transfer in zip(STRATEGIES, transfers):
        if transfer is None:
            model = make_model().fit(training.patches, training.targets, training.intervals, training.categorical)
            chosen_weight = 0.0
        else:
            model, record = fit_with_source(training, transfer, FitRecipe(make_model, random_state=draw))
            chosen_weight = record.weight
        predicted = np.maximum(model.predict(test.patches), 0.0)
        overall = next(row for row in validation_metrics(test, predicted, strategy) if row["depth"] == "all")
        scores[strategy] = {"rmse": overall["rmse"], "mae": overall["mae"], "ccc": overall["ccc"], "w": chosen_weight}
    return scores


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="25,50,100")
    parser.add_argument("--draws", type=int, default=3)
    parser.add_argument("--splits", default="random,south,north,doubled")
    parser.add_argument("--trees", type=int, default=100)
    parser.add_argument("--figure", help="PNG file for the learning curve (needs matplotlib)")
    args = parser.parse_args(argv)
    data = edgeroi_training_data(1)
    print(
        f"Edgeroi ORCDRC (g/kg): {len(data.site_ids)} sites split into halves; random forests of {args.trees} "
        "trees; RMSE / MAE / CCC over all depths at the local sites not drawn for training.",
        flush=True,
    )
    print(
        f"{'split':<8}{'n':>4}{'draw':>5}"
        + "".join(f"{s:>26}" for s in STRATEGIES)
        + f"{'weight':>8}{'pooled':>9}{'auto':>8}{'repr.':>8}"
    )
    summary: dict[tuple[str, int], list[tuple[float, ...]]] = {}
    rmse: dict[tuple[str, str, int], list[float]] = {}
    for split in args.splits.split(","):
        for size in (int(s) for s in args.sizes.split(",")):
            for draw in range(args.draws):
                started = time.perf_counter()
                scores = run_draw(data, split, size, draw, args.trees)
                base = scores["local only"]["rmse"]
                changes = [100 * (scores[s]["rmse"] - base) / base for s in STRATEGIES[1:]]
                summary.setdefault((split, size), []).append(tuple(changes))
                for strategy in STRATEGIES:
                    rmse.setdefault((split, strategy, size), []).append(scores[strategy]["rmse"])
                cells = "".join(
                    f"{scores[s]['rmse']:>10.3f}{scores[s]['mae']:>8.3f}{scores[s]['ccc']:>8.3f}" for s in STRATEGIES
                )
                print(
                    f"{split:<8}{size:>4}{draw:>5}{cells}{scores[STRATEGIES[2]]['w']:>8g}{changes[0]:>+8.1f}%"
                    f"{changes[1]:>+7.1f}%{changes[2]:>+7.1f}%  ({time.perf_counter() - started:.0f} s)",
                    flush=True,
                )
    print("\nRMSE change against local-only (mean, worst draw), library -> local area:")
    for (split, size), changes in summary.items():
        pooled, auto, representation = np.array(changes).T
        print(
            f"  {split:<8} n={size:<4} pooled {pooled.mean():+6.1f} % (worst {pooled.max():+6.1f} %)   "
            f"auto weight {auto.mean():+6.1f} % (worst {auto.max():+6.1f} %)   "
            f"representation {representation.mean():+6.1f} % (worst {representation.max():+6.1f} %)"
        )
    if args.figure:
        learning_curve(rmse, args.splits.split(","), args.trees, args.figure)


def learning_curve(rmse: dict[tuple[str, str, int], list[float]], splits: list[str], trees: int, path: str) -> None:
    """Mean RMSE of the draws against the number of local training sites: one panel per split, one line per
    strategy (plain pooling left out: the automatic weight is what the plugin does)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, len(splits), figsize=(4.2 * len(splits), 3.4), squeeze=False, sharey=True)
    for ax, split in zip(axes[0], splits):
        for strategy, style in zip((STRATEGIES[0], *STRATEGIES[2:]), ("o-", "s--", "^:")):
            sizes = sorted(size for (s, name, size) in rmse if s == split and name == strategy)
            ax.plot(sizes, [np.mean(rmse[split, strategy, size]) for size in sizes], style, label=strategy)
        library = {"random": "random half", "doubled": "random half, SOC doubled"}.get(split, f"{split} half")
        ax.set_title(f"library: {library}", fontsize=10)
        ax.set_xlabel("local training sites")
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("RMSE at held-out local sites (g/kg)")
    axes[0][0].legend(fontsize=8)
    figure.suptitle(f"Edgeroi ORCDRC, all depths; random forests of {trees} trees, mean of the draws", fontsize=10)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    print(f"Wrote {path}")


if __name__ == "__main__":
    main()
