"""Install hints: each platform's line must be a command that works there."""

from __future__ import annotations

import os
import shlex
import subprocess
from pathlib import Path

import pytest

from soc_depth_mapper.core.dependencies import TORCH_CPU_INDEX, install_hint, missing_modules


def platform_lines(message: str) -> dict[str, str]:
    lines = [line[2:] for line in message.splitlines() if line.startswith("- ")]
    return {line.split(":", 1)[0]: line.split(":", 1)[1].strip() for line in lines}


def test_debian_packages_come_from_apt_and_only_torch_from_pip():
    lines = platform_lines(install_hint(["scipy", "sklearn", "rasterio", "matplotlib", "torch"]))
    assert lines["Linux (Debian/Ubuntu)"] == (
        "sudo apt install python3-scipy python3-sklearn python3-rasterio python3-matplotlib ; "
        "PIP_BREAK_SYSTEM_PACKAGES=1 python3 -m pip install --user torch "
        f"(add --index-url {TORCH_CPU_INDEX} for the CPU-only PyTorch, without the multi-GB CUDA libraries)"
    )
    assert TORCH_CPU_INDEX == "https://download.pytorch.org/whl/cpu"
    assert lines["Windows"] == (
        "open the OSGeo4W Shell and run: python -m pip install scipy scikit-learn rasterio matplotlib torch"
    )
    assert lines["macOS"] == (
        "/Applications/QGIS.app/Contents/MacOS/bin/python3 -m pip install scipy scikit-learn rasterio matplotlib torch"
    )


def test_without_torch_linux_needs_no_pip():
    linux = platform_lines(install_hint(["matplotlib"]))["Linux (Debian/Ubuntu)"]
    assert linux == "sudo apt install python3-matplotlib"


def test_a_module_debian_does_not_package_is_pip_installed_by_its_own_name():
    linux = platform_lines(install_hint(["surely_not_installed_module"]))["Linux (Debian/Ubuntu)"]
    assert linux == "PIP_BREAK_SYSTEM_PACKAGES=1 python3 -m pip install --user surely_not_installed_module"


def test_missing_modules_lists_only_the_missing():
    assert missing_modules(["numpy", "surely_not_installed_module"]) == ["surely_not_installed_module"]


@pytest.mark.skipif(
    not list(Path("/usr/lib").glob("python3*/EXTERNALLY-MANAGED")) or not Path("/usr/bin/python3").exists(),
    reason="needs a Debian 12-style externally managed system Python",
)
def test_the_linux_pip_command_gets_past_debians_externally_managed_refusal():
    """A dry run without an index installs nothing and needs no network; it shows whether pip refuses."""
    linux = platform_lines(install_hint(["torch"]))["Linux (Debian/Ubuntu)"]
    words = shlex.split(linux.split(" (add ")[0])
    variables = dict(word.split("=", 1) for word in words if "=" in word)
    command = ["/usr/bin/python3"] + [w for w in words if "=" not in w][1:] + ["--dry-run", "--no-index"]

    def refused(env: dict[str, str]) -> bool:
        result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120)
        return "externally-managed-environment" in result.stdout + result.stderr

    plain = {k: v for k, v in os.environ.items() if k != "PIP_BREAK_SYSTEM_PACKAGES"}
    if not refused(plain):
        pytest.skip("this system's pip does not refuse --user installs")
    assert variables == {"PIP_BREAK_SYSTEM_PACKAGES": "1"}
    assert not refused({**plain, **variables})
