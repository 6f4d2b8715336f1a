"""scripts/package.py: the zip for the QGIS plugin repository holds exactly the runtime files, and QGIS loads it."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "scripts" / "package.py"
RUNTIME_PATHS = [
    "metadata.txt",
    "__init__.py",
    "plugin.py",
    "LICENSE",
    "README.md",
    "pyproject.toml",
    "algorithms",
    "core",
    "help",
    "icons",
    "models",
    "sample_data",
]
MUST_SHIP = [
    "metadata.txt",
    "__init__.py",
    "plugin.py",
    "LICENSE",
    "README.md",
    "algorithms/provider.py",
    "core/depths.py",
    "help/predict.html",
    "icons/socdepth.svg",
    "models/horizons_to_soc_maps.model3",
    "models/transfer_to_a_new_region.model3",
    "sample_data/edgeroi/horizons.csv",
    "sample_data/edgeroi/covariates_250m.tif",
]


def load_packager():
    """scripts/ is no package: load the script as a module from its file."""
    spec = importlib.util.spec_from_file_location("soc_package_script", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def packager():
    return load_packager()


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """The packager run as `make package` runs it (build, then validate, QGIS load included)."""
    out = tmp_path_factory.mktemp("dist")
    result = subprocess.run(
        [sys.executable, str(SCRIPT), "--out", str(out)], capture_output=True, text=True, timeout=600
    )
    assert result.returncode == 0, f"package.py failed:\n{result.stdout}\n{result.stderr}"
    assert "QGIS lists every algorithm" in result.stdout
    zips = list(out.glob("*.zip"))
    assert len(zips) == 1
    return zips[0]


def version() -> str:
    line = next(x for x in (REPO / "metadata.txt").read_text(encoding="utf-8").splitlines() if x.startswith("version="))
    return line.split("=", 1)[1].strip()


def source_files() -> set[str]:
    """Oracle: the runtime files git knows (tracked, or new and not ignored), independent of the packager's walk."""
    if not (REPO / ".git").exists():
        pytest.skip("not a git checkout")
    listing = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard", "--", *RUNTIME_PATHS],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.splitlines()
    return {name for name in listing if (REPO / name).is_file()}  # a deleted tracked file is not shipped


def test_zip_is_named_after_the_version_and_holds_exactly_the_runtime_files(built):
    assert built.name == f"soc_depth_mapper-{version()}.zip"
    with zipfile.ZipFile(built) as archive:
        names = archive.namelist()
        assert all(name.startswith("soc_depth_mapper/") for name in names)
        shipped = {name.removeprefix("soc_depth_mapper/") for name in names}
        assert shipped == source_files()
        for forbidden in ("tests/", "bench/", "scripts/", ".venv", ".build", "__pycache__", ".pyc", ".git"):
            assert not [n for n in shipped if forbidden in n], forbidden
        assert set(MUST_SHIP) <= shipped
        for name in MUST_SHIP:
            assert archive.read(f"soc_depth_mapper/{name}") == (REPO / name).read_bytes(), name


def test_license_is_the_gpl_3(built):
    with zipfile.ZipFile(built) as archive:
        text = archive.read("soc_depth_mapper/LICENSE").decode("utf-8")
    assert "GNU GENERAL PUBLIC LICENSE" in text and "Version 3, 29 June 2007" in text


def test_the_same_files_give_the_same_zip(packager, built, tmp_path):
    """Fixed time stamps and order: a rebuild of an unchanged checkout is byte for byte the same."""
    again = packager.build(tmp_path)
    assert again.read_bytes() == built.read_bytes()


def test_file_list_check_names_forbidden_missing_and_unexpected_files(packager):
    expected = ["__init__.py", "metadata.txt", "core/depths.py"]
    names = [
        "soc_depth_mapper/__init__.py",
        "soc_depth_mapper/metadata.txt",
        "soc_depth_mapper/core/__pycache__/depths.cpython-311.pyc",
        "soc_depth_mapper/tests/core/test_depths.py",
        "other/evil.py",
        "soc_depth_mapper/../escape.py",
    ]
    problems = "\n".join(packager.check_file_list(names, expected))
    assert "core/__pycache__/depths.cpython-311.pyc: development or cache file" in problems
    assert "tests/core/test_depths.py: development or cache file" in problems
    assert "other/evil.py: every file must be inside the top folder" in problems
    assert "escape.py: absolute paths and '..'" in problems
    assert "soc_depth_mapper/core/depths.py: missing" in problems
    assert packager.check_file_list([f"soc_depth_mapper/{n}" for n in expected], expected) == []


def test_metadata_check_refuses_what_the_plugin_repository_refuses(packager):
    text = (REPO / "metadata.txt").read_text(encoding="utf-8")
    metadata = packager.read_metadata(text)
    names = ["soc_depth_mapper/icons/socdepth.svg"]
    assert packager.check_metadata(metadata, names, version()) == []
    broken = {key: value for key, value in metadata.items() if key != "email"}
    broken |= {"tracker": "github.com/issues", "experimental": "maybe", "author": "A/B"}
    problems = "\n".join(packager.check_metadata(broken, [], "9.9.9"))
    for expected in ("'email' is missing", "tracker must be a full http(s) address", "experimental must be True"):
        assert expected in problems
    assert "differs from the zip name's 9.9.9" in problems
    assert "author may not contain '/'" in problems
    assert "icon icons/socdepth.svg is not in the package" in problems


def test_load_check_fails_for_a_package_qgis_cannot_load(packager, built, tmp_path):
    """A provider that fails to import: qgis_process lists no socdepth algorithm, and the check says which."""
    broken = tmp_path / built.name
    with zipfile.ZipFile(built) as source, zipfile.ZipFile(broken, "w") as target:
        for info in source.infolist():
            data = source.read(info)
            if info.filename == "soc_depth_mapper/algorithms/provider.py":
                data = b"raise ImportError('broken on purpose')\n" + data
            target.writestr(info, data)
    expected = {"socdepth:harmonise", "socdepth:horizons_to_soc_maps"}
    problems = packager.check_loads(broken, expected, version())
    assert problems and all("socdepth" in p for p in problems)
    assert packager.check_loads(built, packager.expected_algorithm_ids(REPO), version()) == []


def test_expected_algorithms_are_read_from_the_sources(packager):
    assert packager.expected_algorithm_ids(REPO) == {
        "socdepth:harmonise",
        "socdepth:sample",
        "socdepth:select_covariates",
        "socdepth:train",
        "socdepth:predict",
        "socdepth:stocks",
        "socdepth:horizons_to_soc_maps",
        "socdepth:transfer_to_a_new_region",
    }
