"""`make demo`'s script, run as make runs it but with the quick random forest and three folds.

What a new user gets must be there and must open: the project with its layers, a preview per depth, and a report
whose maps are the previews.
"""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path

import rasterio

REPO = Path(__file__).resolve().parents[2]
GSM = ["0_5", "5_15", "15_30", "30_60", "60_100", "100_200"]


def test_demo_writes_maps_previews_report_and_a_project_that_opens(tmp_path):
    out = tmp_path / "demo_output"
    env = {**os.environ, "QT_QPA_PLATFORM": "offscreen"}
    run = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "demo.py"), "--out", str(out), "--model", "0", "--folds", "3"],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-2000:]
    assert all(f"{step}/4" in run.stdout for step in range(1, 5))

    with open(out / "metrics.csv", newline="", encoding="utf-8") as handle:
        assert [row["depth"] for row in csv.DictReader(handle)] == [d.replace("_", "-") for d in GSM] + ["all"]
    assert (out / "random_forest.socmodel").is_file()
    with rasterio.open(out / "soc_maps.tif") as maps:
        assert maps.count == len(GSM)
    with rasterio.open(out / "aoa.tif") as aoa:
        assert aoa.count == 2 and float(aoa.tags()["AOA_THRESHOLD"]) > 0
    assert (out / "aoa.png").stat().st_size > 10_000
    with rasterio.open(out / "stocks.tif") as stocks:
        assert stocks.descriptions[-2:] == ("SOC stock 0-30 cm (t/ha)", "SOC stock 0-100 cm (t/ha)")
    with open(out / "stocks_summary.csv", newline="", encoding="utf-8") as handle:
        summary = list(csv.DictReader(handle))
    assert [row["range"] for row in summary] == ["0-30 cm", "0-100 cm"]
    assert all(float(r["total_p5_Tg"]) < float(r["total_Tg"]) < float(r["total_p95_Tg"]) for r in summary)
    previews = sorted(p.name for p in (out / "previews").glob("*.png"))
    assert previews == sorted(f"ORCDRC_{d}cm.png" for d in GSM)
    assert all((out / "previews" / name).stat().st_size > 10_000 for name in previews)  # a drawn map, not blank
    report = (out / "report.html").read_text(encoding="utf-8")
    assert "<h2>Maps</h2>" in report and report.count("data:image/png;base64,") >= 5 + len(GSM)

    # the project opens in another QGIS process with every layer valid
    check = (
        "import sys\n"
        "from qgis.core import QgsApplication, QgsProject\n"
        "app = QgsApplication([], False); app.initQgis()\n"
        "project = QgsProject.instance()\n"
        "assert project.read(sys.argv[1])\n"
        "layers = project.mapLayers().values()\n"
        "print(len(layers), all(layer.isValid() for layer in layers))\n"
    )
    opened = subprocess.run(
        [sys.executable, "-c", check, str(out / "demo.qgz")], env=env, capture_output=True, text=True, timeout=120
    )
    assert opened.returncode == 0, opened.stderr[-2000:]
    count, valid = opened.stdout.split()[-2:]
    assert int(count) == 7 + len(GSM) and valid == "True"
