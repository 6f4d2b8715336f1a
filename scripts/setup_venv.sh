#!/usr/bin/env bash
# Creates a virtual environment that sees QGIS's Python packages, adds test or bench tools to it and makes
# this checkout importable as the package `soc_depth_mapper` (like an editable install).
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=$1
REQUIREMENTS=$2

[ -x "$VENV/bin/python" ] || /usr/bin/python3 -m venv --system-site-packages "$VENV"
# Keep Debian's numpy: torch, scipy and rasterio from Debian are built against it.
constraints=$(mktemp)
/usr/bin/python3 -c "import numpy; print('numpy==' + numpy.__version__)" > "$constraints"
"$VENV/bin/python" -m pip install -q -r "$REQUIREMENTS" -c "$constraints"
rm -f "$constraints"

mkdir -p .build/site
ln -sfn "$PWD" .build/site/soc_depth_mapper
site=$("$VENV/bin/python" -c "import sysconfig; print(sysconfig.get_path('purelib'))")
echo "$PWD/.build/site" > "$site/soc_depth_mapper_checkout.pth"
# QGIS's own Processing framework (`import processing`) lives with QGIS's bundled plugins.
echo "/usr/share/qgis/python/plugins" > "$site/qgis_bundled_plugins.pth"
