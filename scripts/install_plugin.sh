#!/usr/bin/env bash
# Installs this checkout into the default QGIS user profile (as a link, so edits take effect) and enables it,
# so that `qgis_process.bin run socdepth:<algorithm>` and QGIS desktop find it.
set -euo pipefail
cd "$(dirname "$0")/.."
PLUGIN=soc_depth_mapper
PROFILE_DIR=${QGIS_PROFILE_DIR:-$HOME/.local/share/QGIS/QGIS3/profiles/default}
mkdir -p "$PROFILE_DIR/python/plugins"
target="$PROFILE_DIR/python/plugins/$PLUGIN"
if [ -e "$target" ] && [ ! -L "$target" ]; then
    echo "Replacing the installed copy at $target with a link to this checkout"
    rm -rf "$target"
fi
ln -sfn "$PWD" "$target"
# `plugins enable` exits 1 when the plugin is already enabled: that is the state we want, not an error.
if ! output=$(QT_QPA_PLATFORM=offscreen qgis_process.bin plugins enable "$PLUGIN" 2>&1); then
    if ! grep -q "already enabled" <<<"$output"; then
        echo "$output" >&2
        exit 1
    fi
fi
echo "Plugin $PLUGIN enabled in $PROFILE_DIR"
