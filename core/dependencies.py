"""Which optional Python packages are importable, and how a user installs the missing ones.

Checked with `importlib.util.find_spec`, so nothing heavy is imported while QGIS loads the plugin.
"""

from __future__ import annotations

import importlib.util
from importlib import metadata

# import name -> (pip name, Debian package or None)
PACKAGES: dict[str, tuple[str, str | None]] = {
    "numpy": ("numpy", "python3-numpy"),
    "scipy": ("scipy", "python3-scipy"),
    "sklearn": ("scikit-learn", "python3-sklearn"),
    "rasterio": ("rasterio", "python3-rasterio"),
    "torch": ("torch", None),
    "matplotlib": ("matplotlib", "python3-matplotlib"),
}


def missing_modules(modules: tuple[str, ...] | list[str]) -> list[str]:
    """The import names among `modules` that cannot be imported."""
    return [name for name in modules if importlib.util.find_spec(name) is None]


def install_hint(modules: list[str]) -> str:
    """A message naming the missing packages and how to install them on each platform."""
    pip_names = " ".join(PACKAGES.get(m, (m, None))[0] for m in modules)
    debian = [PACKAGES[m][1] for m in modules if m in PACKAGES and PACKAGES[m][1]]
    pip_only = [PACKAGES.get(m, (m, None))[0] for m in modules if not (m in PACKAGES and PACKAGES[m][1])]
    linux = []
    if debian:
        linux.append("sudo apt install " + " ".join(debian))
    if pip_only:
        linux.append("python3 -m pip install --user " + " ".join(pip_only))
    return (
        f"Missing Python package(s): {pip_names}. Install them for QGIS's Python, then restart QGIS.\n"
        f"- Linux (Debian/Ubuntu): {' ; '.join(linux)}\n"
        f"- Windows: open the OSGeo4W Shell and run: python -m pip install {pip_names}\n"
        f"- macOS: /Applications/QGIS.app/Contents/MacOS/bin/python3 -m pip install {pip_names}"
    )


def versions() -> dict[str, str]:
    """Installed versions of the dependencies (without importing them), 'missing' where absent."""
    found = {}
    for module, (pip_name, _debian) in PACKAGES.items():
        try:
            found[pip_name] = metadata.version(pip_name)
        except metadata.PackageNotFoundError:
            found[pip_name] = "missing" if importlib.util.find_spec(module) is None else "unknown"
    return found
