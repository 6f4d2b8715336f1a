"""`make demo`: from the bundled Edgeroi horizons and covariates to SOC maps, a report and a QGIS project.

Runs the plugin's Processing algorithms headless, exactly as the Toolbox would, and writes into --out:
harmonised.gpkg, transfer_cnn.socmodel (named after --model), metrics.csv, predictions.gpkg, report.html, soc_maps.tif,
soc_intervals.tif, maps/ (one GeoTIFF per depth), previews/ (one PNG per depth), aoa.tif and aoa.png (the area of
applicability and its preview), stocks.tif, stock_uncertainty.tif and stocks_summary.csv (0-30 and 0-100 cm) and
demo.qgz.
"""

from __future__ import annotations

import argparse
import os
import shutil
import time
from pathlib import Path

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

REPO = Path(__file__).resolve().parents[1]
DATA = REPO / "sample_data" / "edgeroi"
DEPTHS = ["0_5", "5_15", "15_30", "30_60", "60_100", "100_200"]


def start_qgis():
    from qgis.core import QgsApplication

    app = QgsApplication([], False)
    app.initQgis()
    from processing.core.Processing import Processing

    Processing.initialize()
    import soc_depth_mapper

    plugin = soc_depth_mapper.classFactory(None)
    plugin.initProcessing()
    return app, plugin


class PrintingFeedback:
    """Feedback that prints the stage names and warnings, so the user sees what happens."""

    def __new__(cls):
        from qgis.core import QgsProcessingFeedback

        class Feedback(QgsProcessingFeedback):
            def setProgressText(self, text):  # noqa: N802
                # one line per stage, not per epoch
                stage = text.split(" epoch ")[0]
                if stage != getattr(self, "_stage", None):
                    self._stage = stage
                    print(f"    {stage}", flush=True)

            def reportError(self, error, fatalError=False):  # noqa: N802, N803
                print(f"    ! {error}", flush=True)

            def pushInfo(self, info):  # noqa: N802
                print(f"    {info}", flush=True)

        return Feedback()


def render_preview(layer, path: Path, title: str) -> None:
    """Renders one styled raster layer to a PNG, as QGIS would draw it."""
    from qgis.core import QgsMapRendererSequentialJob, QgsMapSettings
    from qgis.PyQt.QtCore import QSize
    from qgis.PyQt.QtGui import QColor, QFont, QPainter

    settings = QgsMapSettings()
    settings.setLayers([layer])
    settings.setDestinationCrs(layer.crs())
    settings.setExtent(layer.extent())
    settings.setOutputSize(QSize(760, 512))
    settings.setBackgroundColor(QColor("white"))
    job = QgsMapRendererSequentialJob(settings)
    job.start()
    job.waitForFinished()
    image = job.renderedImage()
    painter = QPainter(image)
    painter.setFont(QFont("Sans", 14))
    painter.drawText(12, 26, title)
    draw_colour_bar(painter, layer, left=12, top=image.height() - 44, width=260)
    painter.end()
    image.save(str(path))


def draw_colour_bar(painter, layer, left: int, top: int, width: int) -> None:
    """The layer's colour ramp as a bar with its lowest and highest value, so a preview can be read alone."""
    from qgis.PyQt.QtCore import QPointF, QRectF, Qt
    from qgis.PyQt.QtGui import QColor, QFont, QLinearGradient

    items = layer.renderer().shader().rasterShaderFunction().colorRampItemList()
    low, high = items[0].value, items[-1].value
    gradient = QLinearGradient(QPointF(left, 0), QPointF(left + width, 0))
    for item in items:
        gradient.setColorAt((item.value - low) / ((high - low) or 1.0), item.color)
    painter.fillRect(QRectF(left - 6, top - 6, width + 12, 40), QColor(255, 255, 255, 220))
    painter.fillRect(QRectF(left, top, width, 14), gradient)
    painter.setPen(QColor("black"))
    painter.drawRect(QRectF(left, top, width, 14))
    painter.setFont(QFont("Sans", 10))
    painter.drawText(QRectF(left, top + 15, width, 16), Qt.AlignLeft, f"{low:.1f}")
    painter.drawText(QRectF(left, top + 15, width, 16), Qt.AlignRight, f"{high:.1f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", default="demo_output", help="output folder (replaced)")
    parser.add_argument("--model", type=int, default=2, help="0 RF, 1 CNN, 2 transfer CNN (default), 3 multi-task")
    parser.add_argument("--folds", type=int, default=10)
    args = parser.parse_args()
    out = Path(args.out).resolve()
    if out.exists():
        shutil.rmtree(out)
    (out / "maps").mkdir(parents=True)
    (out / "previews").mkdir()

    app, plugin = start_qgis()
    try:
        run_demo(out, args.model, args.folds)
    finally:
        # QGIS objects must go before QGIS does: layers freed after exitQgis crash Python on exit. Here
        # run_demo's locals are gone already; the project and the pending stylers are emptied by hand.
        from qgis.core import QgsProject

        from soc_depth_mapper.algorithms.styling import MapStyler

        QgsProject.instance().clear()
        MapStyler.pending.clear()
        plugin.unload()
        app.exitQgis()


def run_demo(out: Path, model: int, folds: int) -> None:
    """The three steps, the project and the previews, written into `out`."""
    import processing
    import rasterio
    from qgis.core import QgsProcessingContext, QgsProject, QgsRasterLayer, QgsVectorLayer

    from soc_depth_mapper.algorithms.styling import MapStyler, RunGroup, dissimilarity_renderer, shared_value_range
    from soc_depth_mapper.core.depths import interval_label, parse_map_file_name
    from soc_depth_mapper.core.registry import entry, kinds
    from soc_depth_mapper.core.report import append_maps

    feedback = PrintingFeedback()
    started = time.perf_counter()

    print("1/4 Harmonising the Edgeroi horizons to the GlobalSoilMap depths", flush=True)
    horizons = QgsVectorLayer(
        f"file://{DATA / 'horizons.csv'}?type=csv&xField=x&yField=y&crs=EPSG:28355&detectTypes=yes",
        "Edgeroi horizons",
        "delimitedtext",
    )
    harmonised = processing.run(
        "socdepth:harmonise",
        {
            "INPUT": horizons,
            "PROFILE_FIELD": "SOURCEID",
            "TOP_FIELD": "top",
            "BOTTOM_FIELD": "bottom",
            "VALUE_FIELDS": ["ORCDRC"],
            "OUTPUT": str(out / "harmonised.gpkg"),
        },
        feedback=feedback,
    )["OUTPUT"]

    covariates = QgsRasterLayer(str(DATA / "covariates_250m.tif"), "covariates_250m")
    file_name = kinds()[model]  # the train algorithm's MODEL choices, in order
    label = entry(file_name).label
    print(f"2/4 Training the {label} with spatial cross-validation", flush=True)
    trained = processing.run(
        "socdepth:train",
        {
            "INPUT": harmonised,
            "TARGET_FIELDS": [f"ORCDRC_{d}" for d in DEPTHS],
            "COVARIATES": [covariates],
            "CATEGORICAL": "covariates_250m_PMTGEO5",
            "MODEL": model,
            "VALIDATION": 2,
            "FOLDS": folds,
            "OUTPUT_MODEL": str(out / f"{file_name}.socmodel"),
            "OUTPUT_METRICS": str(out / "metrics.csv"),
            "OUTPUT_PREDICTIONS": str(out / "predictions.gpkg"),
            "OUTPUT_REPORT": str(out / "report.html"),
        },
        feedback=feedback,
    )

    print("3/4 Predicting SOC maps with 90 % prediction intervals", flush=True)
    predicted = processing.run(
        "socdepth:predict",
        {
            "MODEL": trained["OUTPUT_MODEL"],
            "COVARIATES": [covariates],
            "UNCERTAINTY": 1,
            "INTERVAL": 90,
            "OUTPUT": str(out / "soc_maps.tif"),
            "OUTPUT_UNCERTAINTY": str(out / "soc_intervals.tif"),
            "OUTPUT_FOLDER": str(out / "maps"),
            "OUTPUT_AOA": str(out / "aoa.tif"),
        },
        feedback=feedback,
    )

    print("4/4 SOC stocks for 0-30 and 0-100 cm (bulk density by Saini's pedotransfer function)", flush=True)
    stocks = processing.run(
        "socdepth:stocks",
        {
            "SOC": predicted["OUTPUT"],
            "SOC_UNCERTAINTY": predicted["OUTPUT_UNCERTAINTY"],
            "BULK_DENSITY_PTF": 1,  # Edgeroi has no measured bulk density
            "BULK_DENSITY_SD": 0.1,  # g/cm³, the function's error on soils it was not fitted to (assumed)
            "RANGES": "0-30,0-100",
            "OUTPUT": str(out / "stocks.tif"),
            "OUTPUT_UNCERTAINTY": str(out / "stock_uncertainty.tif"),
            "OUTPUT_SUMMARY": str(out / "stocks_summary.csv"),
        },
        feedback=feedback,
    )

    # The project a user opens: points, covariates, the multi-band maps and one styled layer per depth.
    project = QgsProject.instance()
    project.setCrs(covariates.crs())
    project.addMapLayer(QgsVectorLayer(str(out / "harmonised.gpkg"), "Harmonised profiles", "ogr"))
    project.addMapLayer(QgsRasterLayer(str(out / "soc_maps.tif"), "SOC maps (all depths)"))
    project.addMapLayer(QgsRasterLayer(str(out / "soc_intervals.tif"), "SOC 90 % prediction intervals"))
    project.addMapLayer(QgsRasterLayer(str(DATA / "covariates_250m.tif"), "Covariates (250 m)"))
    project.addMapLayer(QgsRasterLayer(stocks["OUTPUT"], "SOC stocks (t/ha)"))
    project.addMapLayer(QgsRasterLayer(stocks["OUTPUT_UNCERTAINTY"], "SOC stocks 5/50/95 % (t/ha)"))
    aoa = QgsRasterLayer(predicted["OUTPUT_AOA"], "Area of applicability (DI, inside)")
    project.addMapLayer(aoa)
    with rasterio.open(predicted["OUTPUT_AOA"]) as dataset:
        threshold = float(dataset.tags()["AOA_THRESHOLD"])
    aoa.setRenderer(dissimilarity_renderer(aoa.dataProvider(), threshold))
    render_preview(aoa, out / "aoa.png", f"Dissimilarity index: inside the area of applicability up to {threshold:.2f}")
    files = sorted((out / "maps").glob("*.tif"), key=lambda p: parse_map_file_name(p.name)[1])
    value_range = shared_value_range([str(f) for f in files])
    run_group = RunGroup(RunGroup.title_of(str(out / "maps"), 0.9))
    context = QgsProcessingContext()
    context.setProject(project)
    previews = {}
    for position, path in enumerate(files):  # ORCDRC_0_5cm.tif -> "SOC 0–5 cm"
        label = "SOC " + interval_label(*parse_map_file_name(path.name)[1:], " cm").replace("-", "–")
        layer = QgsRasterLayer(str(path), label)
        project.addMapLayer(layer)
        MapStyler(value_range, run_group, position).postProcessLayer(layer, context, feedback)
        previews[f"{label} (g/kg)"] = str(out / "previews" / f"{path.stem}.png")
        render_preview(layer, Path(previews[f"{label} (g/kg)"]), f"{label} (g/kg)")
    project.write(str(out / "demo.qgz"))
    append_maps(str(out / "report.html"), previews)

    print(
        f"\nDone in {time.perf_counter() - started:.0f} s. Open {out / 'demo.qgz'} in QGIS; the report is "
        f"{out / 'report.html'}.",
        flush=True,
    )
    print("Outputs:", ", ".join(sorted(p.name for p in out.iterdir())), flush=True)
    print("Maps:", predicted["OUTPUT"], flush=True)


if __name__ == "__main__":
    main()
