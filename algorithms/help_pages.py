"""The local help pages the dialogs' Help buttons open: one HTML file per algorithm in help/, shipped with the
plugin, so that help works offline and always matches the installed version.

The pages are built from what the dialogs show (each algorithm's help, its parameters' labels, help texts and
defaults) by scripts/make_help.py; a test fails while a shipped page differs from what is built today.
"""

from __future__ import annotations

import html
from pathlib import Path

from qgis.core import (
    QgsProcessingAlgorithm,
    QgsProcessingModelAlgorithm,
    QgsProcessingParameterDefinition,
    QgsProcessingParameterEnum,
)
from qgis.PyQt.QtCore import QUrl

HELP_DIR = Path(__file__).resolve().parent.parent / "help"
#: the README online, for the examples and background the pages leave out
README_URL = "https://github.com/soc-depth-mapper/soc-depth-mapper#{anchor}"

STYLE = """
body { font-family: sans-serif; max-width: 60em; margin: 1.5em auto; padding: 0 1em; line-height: 1.45; }
h1 { font-size: 1.6em; margin-bottom: 0.2em; }
.id { color: #555; margin-top: 0; }
table { border-collapse: collapse; width: 100%; }
th, td { border: 1px solid #ccc; padding: 0.3em 0.5em; text-align: left; vertical-align: top; }
th { background: #f2f2f2; }
code { background: #f4f4f4; padding: 0 0.2em; }
.advanced { color: #555; font-size: 0.9em; }
"""


def help_page_path(name: str) -> Path:
    """The page of the algorithm (or shipped model) named `name`, e.g. help/predict.html."""
    return HELP_DIR / f"{name}.html"


def help_url(name: str) -> str:
    """The file:// URL of the algorithm's page, for `helpUrl()`."""
    return QUrl.fromLocalFile(str(help_page_path(name))).toString()


def default_text(definition: QgsProcessingParameterDefinition) -> str:
    """The default as the dialog shows it: an option's label for a choice, nothing for none."""
    default = definition.defaultValue()
    if default is None or default == "":
        return ""
    if isinstance(definition, QgsProcessingParameterEnum):
        options = definition.options()
        indices = default if isinstance(default, list) else [default]
        return ", ".join(options[int(i)] for i in indices if str(i).isdigit() and int(i) < len(options))
    if isinstance(default, bool):
        return "yes" if default else "no"
    if isinstance(default, float):
        return f"{default:g}"
    return str(default)


def _row(definition: QgsProcessingParameterDefinition, with_default: bool) -> str:
    flags = definition.flags()
    notes = []
    if flags & QgsProcessingParameterDefinition.FlagOptional:
        notes.append("optional")
    if flags & QgsProcessingParameterDefinition.FlagAdvanced:
        notes.append("advanced")
    label = html.escape(definition.description())
    if notes:
        label += f' <span class="advanced">({", ".join(notes)})</span>'
    cells = [f"<code>{html.escape(definition.name())}</code>", label, html.escape(definition.help())]
    if with_default:
        cells.append(html.escape(default_text(definition)))
    return "<tr>" + "".join(f"<td>{cell}</td>" for cell in cells) + "</tr>"


def _table(definitions: list[QgsProcessingParameterDefinition], with_default: bool) -> str:
    titles = ("Id", "Label", "What it is", "Default")[: 4 if with_default else 3]
    header = "".join(f"<th>{title}</th>" for title in titles)
    rows = "\n".join(_row(definition, with_default) for definition in definitions)
    return f"<table>\n<tr>{header}</tr>\n{rows}\n</table>"


def help_page(algorithm: QgsProcessingAlgorithm, anchor: str) -> str:
    """The HTML page of `algorithm`: its help as the dialog shows it, then its inputs and outputs; `anchor` is its
    section of the README online."""
    title = html.escape(algorithm.displayName())
    definitions = algorithm.parameterDefinitions()
    inputs = [d for d in definitions if not d.isDestination()]
    outputs = [d for d in definitions if d.isDestination()]
    summary = algorithm.shortDescription()
    if isinstance(algorithm, QgsProcessingModelAlgorithm):
        description = algorithm.helpContent().get("ALG_DESC", "")  # its help string is a whole page of its own
    else:
        description = algorithm.shortHelpString()
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en">',
        f'<head>\n<meta charset="utf-8">\n<title>{title} — SOC Depth Mapper</title>\n<style>{STYLE}</style>\n</head>',
        "<body>",
        f"<h1>{title}</h1>",
        f'<p class="id">Algorithm id <code>{html.escape(algorithm.id())}</code> · {html.escape(algorithm.group())}</p>',
    ]
    if summary:
        parts.append(f"<p><b>{html.escape(summary)}</b></p>")
    parts += [
        f"<p>{description}</p>",  # HTML already, as the dialog's help panel shows it
        "<h2>Parameters</h2>",
        _table(inputs, with_default=True),
        "<h2>Outputs</h2>",
        _table(outputs, with_default=False),
        f'<p>Examples and background: the <a href="{README_URL.format(anchor=anchor)}">README online</a>.</p>',
        "</body>",
        "</html>",
        "",
    ]
    return "\n".join(parts)
