"""HTML building blocks shared by the training report (`report`) and the covariate selection report
(`selection_report`): the style sheet, figures embedded as data URIs, table cells, and writing a page."""

from __future__ import annotations

import base64
import html
import io
from pathlib import Path
from typing import Any

import numpy as np

from .files import write_atomically

STYLE = """
body{font-family:system-ui,Segoe UI,Helvetica,Arial,sans-serif;margin:2em auto;max-width:1100px;color:#222}
h1{font-size:1.6em}h2{border-bottom:1px solid #ccc;padding-bottom:.2em;margin-top:1.6em}
table{border-collapse:collapse;margin:.5em 0}td,th{border:1px solid #ccc;padding:.25em .6em;text-align:right}
th{background:#f2efe9}td:first-child,th:first-child{text-align:left}.note{color:#555;font-size:.92em}
img{max-width:100%}
"""


def figure_to_uri(figure) -> str:
    """A matplotlib figure as a PNG data URI, so the page needs no side files; the figure is closed."""
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=96, bbox_inches="tight")
    import matplotlib.pyplot as plt

    plt.close(figure)
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def img_html(uri: str, alt: str) -> str:
    return f'<img src="{uri}" alt="{html.escape(alt)}">'


def format_cell(value: Any) -> str:
    """A table cell's text: floats to 3 decimals, NaN as a dash, anything else escaped."""
    if isinstance(value, float):
        return "–" if np.isnan(value) else f"{value:.3f}"
    return html.escape(str(value))


def write_html(path: str, text: str) -> None:
    """Writes a page atomically (temporary file, then moved into place), creating its folder."""
    Path(path).resolve().parent.mkdir(parents=True, exist_ok=True)
    write_atomically(path, lambda stream: stream.write(text.encode("utf-8")))
