"""Makes two of README's pictures headless from a finished `make demo`: the Train dialog as QGIS shows it, filled in
for the Edgeroi data, and the area of applicability. The pictures of the maps come from the QGIS desktop after a
run of the Predict dialog: scripts/desktop_screenshots.py.

    .venv/bin/python scripts/screenshots.py --demo demo_output --out docs/images
"""

from __future__ import annotations

import argparse
import os
import shutil
from pathlib import Path

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

REPO = Path(__file__).resolve().parents[1]


def dialog_screenshot(demo: Path, out: Path) -> None:
    from processing.gui.AlgorithmDialog import AlgorithmDialog
    from qgis.core import QgsApplication, QgsProject, QgsRasterLayer, QgsVectorLayer

    points = QgsVectorLayer(str(demo / "harmonised.gpkg"), "harmonised", "ogr")
    covariates = QgsRasterLayer(str(REPO / "sample_data" / "edgeroi" / "covariates_250m.tif"), "covariates_250m")
    QgsProject.instance().addMapLayers([points, covariates])
    algorithm = QgsApplication.processingRegistry().algorithmById("socdepth:train").create()
    dialog = AlgorithmDialog(algorithm)
    dialog.mainWidget().setParameters(
        {
            "INPUT": points.id(),
            "TARGET_FIELDS": [f"ORCDRC_{d}" for d in ("0_5", "5_15", "15_30", "30_60", "60_100", "100_200")],
            "COVARIATES": [covariates.id()],
            "CATEGORICAL": "covariates_250m_PMTGEO5",
            "MODEL": 2,
            "VALIDATION": 2,
            "FOLDS": 10,
        }
    )
    dialog.resize(1000, 720)
    dialog.show()
    for _ in range(30):
        QgsApplication.processEvents()
    dialog.grab().save(str(out / "train_dialog.png"))
    dialog.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--demo", default="demo_output")
    parser.add_argument("--out", default="docs/images")
    args = parser.parse_args()
    demo, out = Path(args.demo).resolve(), Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)

    from qgis.core import QgsApplication

    app = QgsApplication([], True)
    app.initQgis()
    from processing.core.Processing import Processing

    Processing.initialize()
    import soc_depth_mapper

    plugin = soc_depth_mapper.classFactory(None)
    plugin.initProcessing()
    dialog_screenshot(demo, out)
    shutil.copyfile(demo / "aoa.png", out / "aoa_map.png")  # the demo's preview, drawn as QGIS draws the layer
    print(f"Wrote {out / 'train_dialog.png'} and {out / 'aoa_map.png'}")
    plugin.unload()


if __name__ == "__main__":
    main()
