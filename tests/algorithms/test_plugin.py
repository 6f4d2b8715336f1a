"""Loading the plugin: registers the provider, touches no iface, imports nothing heavy."""

import subprocess
import sys
import textwrap

import pytest

HEAVY = ("torch", "sklearn", "rasterio", "scipy")


def test_class_factory_registers_provider_without_iface(qgis_processing):
    """The fixture loaded the plugin through classFactory(None), as qgis_process does."""
    from qgis.core import QgsApplication

    provider = QgsApplication.processingRegistry().providerById("socdepth")
    assert provider is not None
    assert provider.name() == "SOC depth mapping"
    assert "socdepth:harmonise" in [a.id() for a in provider.algorithms()]
    assert provider.versionInfo().startswith("0.")
    assert "torch" in provider.versionInfo()


def test_loading_the_plugin_imports_no_heavy_dependency():
    code = textwrap.dedent(
        """
        import os, sys
        os.environ["QT_QPA_PLATFORM"] = "offscreen"
        from qgis.core import QgsApplication
        app = QgsApplication([], False)
        app.initQgis()
        import soc_depth_mapper
        plugin = soc_depth_mapper.classFactory(None)
        plugin.initProcessing()
        print(",".join(m for m in sys.modules if m.split(".")[0] in {heavy!r}))
        """
    ).format(heavy=set(HEAVY))
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip().splitlines()[-1:] in ([], [""])


def test_missing_dependency_keeps_algorithm_listed_and_says_how_to_install(qgis_processing, monkeypatch):
    from soc_depth_mapper.algorithms.harmonise import HarmoniseAlgorithm

    algorithm = HarmoniseAlgorithm()
    monkeypatch.setattr(HarmoniseAlgorithm, "REQUIRES", ("numpy", "surely_not_installed_module"))
    ok, message = algorithm.canExecute()
    assert ok is False
    assert "surely_not_installed_module" in message
    for platform in ("Linux", "Windows", "OSGeo4W", "macOS"):
        assert platform in message
    monkeypatch.setattr(HarmoniseAlgorithm, "REQUIRES", ("numpy",))
    assert algorithm.canExecute() == (True, "")


@pytest.mark.parametrize("module", ["torch", "sklearn"])
def test_install_hint_names_pip_and_debian_packages(module):
    from soc_depth_mapper.core.dependencies import install_hint

    message = install_hint([module])
    assert {"torch": "pip install --user torch", "sklearn": "apt install python3-sklearn"}[module] in message
