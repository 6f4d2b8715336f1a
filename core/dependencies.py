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

#: PyTorch's CPU-only wheels: on Linux, PyPI's torch pulls in several GB of CUDA libraries
TORCH_CPU_INDEX = "https://download.pytorch.org/whl/cpu"


def missing_modules(modules: tuple[str, ...] | list[str]) -> list[str]:
    """The import names among `modules` that cannot be imported."""
    return [name for name in modules if importlib.util.find_spec(name) is None]


def install_hint(modules: list[str]) -> str:
    """A message naming the missing packages and how to install them on each platform.

    Linux: apt for what Debian packages, as Debian 12 refuses `pip install --user` into its externally managed
    Python; pip for the rest, with PIP_BREAK_SYSTEM_PACKAGES=1 rather than `--break-system-packages`: Debian
    12's pip honours both, but older pips (Ubuntu 22.04 ships pip 22) reject the option and ignore the variable.
    """
    pip_names = " ".join(PACKAGES.get(m, (m, None))[0] for m in modules)
    debian = [PACKAGES[m][1] for m in modules if m in PACKAGES and PACKAGES[m][1]]
    pip_only = [PACKAGES.get(m, (m, None))[0] for m in modules if not (m in PACKAGES and PACKAGES[m][1])]
    commands = []
    if debian:
        commands.append("sudo apt install " + " ".join(debian))
    if pip_only:
        commands.append("PIP_BREAK_SYSTEM_PACKAGES=1 python3 -m pip install --user " + " ".join(pip_only))
    linux = " ; ".join(commands)
    if "torch" in pip_only:
        linux += f" (add --index-url {TORCH_CPU_INDEX} for the CPU-only PyTorch, without the multi-GB CUDA libraries)"
    return (
        f"Missing Python package(s): {pip_names}. Install them for QGIS's Python, then restart QGIS.\n"
        f"- Linux (Debian/Ubuntu): {linux}\n"
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
