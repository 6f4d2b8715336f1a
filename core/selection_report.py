"""The HTML page of a covariate selection: RMSE against subset size, the subsets and what became of each band.

One self-contained file (the figure embedded as a PNG data URI), written like the training report.
"""

from __future__ import annotations

import html

import numpy as np

from .html_parts import STYLE, figure_to_uri, format_cell, img_html, write_html
from .registry import entry
from .selection import Selection


def rmse_figure_uri(selection: Selection, unit: str = "") -> str:
    """Overall RMSE (± one standard error over the folds) and RMSE per depth against the subset size, the
    chosen subset marked: where adding bands stops paying."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sizes = [s.size for s in selection.subsets]
    figure, ax = plt.subplots(figsize=(7, 4.2))
    labels = list(selection.subsets[0].depth_rmse)
    colours = plt.cm.viridis(np.linspace(0, 0.9, max(len(labels), 1)))
    for label, colour in zip(labels, colours):
        ax.plot(sizes, [s.depth_rmse.get(label, np.nan) for s in selection.subsets], "-", color=colour, lw=1,
                alpha=0.7, label=f"{label} cm")  # fmt: skip
    ax.errorbar(sizes, [s.rmse for s in selection.subsets], yerr=[s.rmse_se for s in selection.subsets], fmt="o-",
                color="black", lw=2, capsize=3, label="all depths (± 1 SE)")  # fmt: skip
    chosen = selection.subsets[selection.chosen]
    ax.plot([chosen.size], [chosen.rmse], "s", ms=14, mfc="none", mec="crimson", mew=2, label="chosen")
    ax.set_xlabel("bands in the subset")
    ax.set_ylabel(f"cross-validated RMSE{f' ({unit})' if unit else ''}")
    ax.set_xticks(sizes)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, ncol=2)
    return figure_to_uri(figure)


def selection_report_html(selection: Selection, property_name: str, unit: str = "") -> str:
    settings = selection.settings
    chosen = selection.subsets[selection.chosen]
    rule = "the smallest within one standard error of the lowest RMSE" if selection.parsimonious else "the lowest RMSE"
    labels = list(chosen.depth_rmse)
    subset_rows = "".join(
        f"<tr><td>{s.size}{' ✔' if i == selection.chosen else ''}</td>"
        + "".join(f"<td>{format_cell(s.depth_rmse.get(label, np.nan))}</td>" for label in labels)
        + f"<td>{format_cell(s.rmse)}</td><td>{format_cell(s.rmse_se)}</td><td>{format_cell(s.ccc)}</td>"
        f"<td>{s.seconds:.1f}</td><td style='text-align:left'>{html.escape(', '.join(s.bands))}</td></tr>"
        for i, s in enumerate(selection.subsets)
    )
    band_rows = "".join(
        f"<tr><td>{html.escape(b.name)}</td><td>{'yes' if b.categorical else ''}</td>"
        f"<td>{format_cell(b.relevance)}</td>"
        f"<td>{'' if b.rank is None else b.rank}</td><td>{format_cell(b.importance)}</td>"
        f"<td>{'✔' if b.selected else ''}</td><td style='text-align:left'>{html.escape(b.dropped)}</td></tr>"
        for b in sorted(selection.bands, key=lambda b: (b.rank is None, b.rank or 0))
    )
    depth_heads = "".join(f"<th>RMSE {html.escape(label)}</th>" for label in labels)
    parts = [
        f"<h1>SOC Depth Mapper — covariate selection for {html.escape(property_name)}</h1>",
        f"<p>{entry(settings['kind']).label}, {settings['validation']} {settings['folds']}-fold cross-validation "
        f"over whole sites{f', blocks of {selection.block_size:.0f} map units' if selection.block_size else ''}; "
        f"seed {settings['random_state']}. Chosen: <b>{chosen.size} bands</b> ({rule}), RMSE "
        f"{format_cell(chosen.rmse)} ± {format_cell(chosen.rmse_se)}.</p>",
        "<p class='note'>This RMSE is optimistic: the same folds ranked the bands and chose the subset. For an "
        "honest figure, train on the selection and validate on sites the selection never saw.</p>",
        "<h2>RMSE against subset size</h2>",
        img_html(rmse_figure_uri(selection, unit), "RMSE against subset size"),
        "<h2>Subsets</h2>",
        f"<table><tr><th>Bands</th>{depth_heads}<th>RMSE all</th><th>SE</th><th>CCC</th><th>Time (s)</th>"
        f"<th>Bands, by rank</th></tr>{subset_rows}</table>",
        "<h2>Bands</h2>",
        "<table><tr><th>Band</th><th>Categorical</th><th>Mean |r| with the target</th><th>Rank</th>"
        f"<th>Importance (RMSE rise)</th><th>Selected</th><th>Dropped because</th></tr>{band_rows}</table>",
        f"<p class='note'>Steps: bands with mean |r| below {settings['min_correlation']:g} dropped; of bands "
        f"correlated above {settings['max_correlation']:g}, the one less correlated with the target dropped; the "
        "rest ranked by out-of-fold permutation importance (the rise of the RMSE when the band is shuffled among "
        "a fold's test sites); categorical bands are only ranked.</p>",
    ]
    return (
        "<!DOCTYPE html><html><head><meta charset='utf-8'><title>SOC Depth Mapper covariate selection</title>"
        f"<style>{STYLE}</style></head><body>{''.join(parts)}</body></html>"
    )


def write_selection_report(path: str, selection: Selection, property_name: str, unit: str = "") -> None:
    """Writes the page atomically (temporary file, then moved into place)."""
    write_html(path, selection_report_html(selection, property_name, unit))
