#!/usr/bin/env bash
# Installs what QGIS's own Python needs to run the plugin: QGIS 3.22 LTR and the scientific stack from Debian,
# PyTorch (CPU) from PyPI. Each step is skipped when already satisfied.
set -euo pipefail
cd "$(dirname "$0")/.."

SYSPY=/usr/bin/python3
APT_PACKAGES=(qgis python3-qgis python3-numpy python3-scipy python3-sklearn python3-rasterio python3-matplotlib python3-dask python3-distributed python3-venv python3-pip xvfb xauth chromium)
# chromium: the tests render the HTML report in it headless (no network, every image loaded).
# `make bench` adds the peers it compares against (R ranger and terra) through BENCH_APT_PACKAGES.
read -r -a bench_packages <<<"${BENCH_APT_PACKAGES:-}"
APT_PACKAGES+=("${bench_packages[@]}")

run_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

missing=()
for pkg in "${APT_PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if [ ${#missing[@]} -gt 0 ]; then
    echo "Installing from Debian: ${missing[*]}"
    run_root apt-get update -q
    run_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}"
else
    echo "Debian packages present: ${APT_PACKAGES[*]}"
fi

if "$SYSPY" -c "import torch" 2>/dev/null; then
    echo "PyTorch present: $("$SYSPY" -c 'import torch; print(torch.__version__)')"
else
    echo "Installing PyTorch (CPU) for QGIS's Python"
    # Debian marks its Python as externally managed; torch is not packaged, so it goes to /usr/local.
    run_root "$SYSPY" -m pip install --break-system-packages --no-warn-script-location -r requirements.txt
fi
