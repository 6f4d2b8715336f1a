"""Writes help/<algorithm>.html: the local help page of every algorithm and shipped model of the plugin.

The Help button of each dialog opens its page (see algorithms/help_pages.py). Run it after changing an
algorithm's help, a parameter or the workflow model: `.venv/bin/python scripts/make_help.py` (the test
tests/algorithms/test_help.py fails while a shipped page is out of date).
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")


def main() -> None:
    from qgis.core import QgsApplication

    import soc_depth_mapper
    from soc_depth_mapper.algorithms.help_pages import HELP_DIR, help_page

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=HELP_DIR, help=f"the folder to write to (default {HELP_DIR})")
    args = parser.parse_args()

    app = QgsApplication([], False)
    app.initQgis()
    plugin = soc_depth_mapper.classFactory(None)
    plugin.initProcessing()
    provider = QgsApplication.processingRegistry().providerById("socdepth")
    args.out.mkdir(parents=True, exist_ok=True)
    for algorithm in provider.algorithms():
        path = args.out / f"{algorithm.name()}.html"
        path.write_text(help_page(algorithm, algorithm.readme_anchor()), encoding="utf-8")
        print(f"Wrote {path}")
    plugin.unload()
    app.exitQgis()


if __name__ == "__main__":
    main()
