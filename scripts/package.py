"""`make package`: builds dist/soc_depth_mapper-<version>.zip for the QGIS plugin repository, then validates it.

The zip holds one folder, soc_depth_mapper/, with the files QGIS needs at run time and nothing else (no tests,
benchmarks, scripts, caches or environments). Validation checks what plugins.qgis.org checks on upload (one top
folder with a valid name, __init__.py, LICENSE, the required metadata, no .pyc or __pycache__), that the file list
is exactly the runtime files of this checkout, and that QGIS loads the package: it is unzipped into a throw-away
profile, enabled with `qgis_process.bin plugins enable`, and `qgis_process.bin list` must show every algorithm and
model of the `socdepth` provider. Only the standard library is used, so any Python 3.9+ runs it.

Usage: python3 scripts/package.py [--out dist] [--no-load-check]
"""

from __future__ import annotations

import argparse
import ast
import configparser
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path
from urllib.parse import urlparse

REPO = Path(__file__).resolve().parents[1]
PLUGIN = "soc_depth_mapper"
PROVIDER = "socdepth"
#: what QGIS needs at run time, relative to the repository root (the plugin folder)
RUNTIME = (
    "metadata.txt",
    "__init__.py",
    "plugin.py",
    "LICENSE",
    "README.md",
    "pyproject.toml",  # `pip install` of the engine alone, for cluster workers
    "algorithms",
    "core",
    "help",
    "icons",
    "models",
    "sample_data",
)
#: never shipped, wherever they are: bytecode, caches, editor and GDAL side files, hidden files
EXCLUDED_DIRS = {"__pycache__", "__MACOSX"}
EXCLUDED_SUFFIXES = (".pyc", ".pyo", ".aux.xml", "~", ".orig", ".rej")
#: top-level folders of the checkout that must never reach users
DEVELOPMENT_DIRS = {"tests", "bench", "scripts", "dist", "demo_output", ".venv", ".venv-bench", ".build", ".git"}
#: metadata the plugin repository refuses an upload without (plugins.qgis.org's validator)
REQUIRED_METADATA = (
    "name",
    "description",
    "version",
    "qgisMinimumVersion",
    "author",
    "email",
    "about",
    "tracker",
    "repository",
)
BOOLEAN_METADATA = ("experimental", "deprecated", "server")
MAX_SIZE = 25_000_000  # bytes: the repository's upload limit
#: a fixed time stamp for every entry, so that the same files always give the same zip
ZIP_TIME = (1980, 1, 1, 0, 0, 0)


def read_metadata(text: str) -> dict[str, str]:
    """The [general] section of metadata.txt, keys in their original case."""
    parser = configparser.ConfigParser(interpolation=None)
    parser.optionxform = str
    parser.read_string(text)
    if not parser.has_section("general"):
        raise ValueError("metadata.txt has no [general] section")
    return dict(parser.items("general"))


def plugin_version(repo: Path = REPO) -> str:
    return read_metadata((repo / "metadata.txt").read_text(encoding="utf-8"))["version"].strip()


def is_excluded(relative: Path) -> bool:
    parts = relative.parts
    return (
        any(part in EXCLUDED_DIRS or part.startswith(".") for part in parts)
        or relative.name.endswith(EXCLUDED_SUFFIXES)
        or parts[0] in DEVELOPMENT_DIRS
    )


def runtime_files(repo: Path = REPO) -> list[str]:
    """The runtime files of the checkout, as sorted POSIX paths relative to the plugin folder."""
    files = []
    for entry in RUNTIME:
        path = repo / entry
        if not path.exists():
            raise FileNotFoundError(f"{entry} is missing from {repo}; the package needs it")
        candidates = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
        files += [p.relative_to(repo).as_posix() for p in candidates if not is_excluded(p.relative_to(repo))]
    return sorted(files)


def build(out_dir: Path, repo: Path = REPO) -> Path:
    """Writes out_dir/soc_depth_mapper-<version>.zip (replacing it) and returns its path."""
    out_dir.mkdir(parents=True, exist_ok=True)
    target = out_dir / f"{PLUGIN}-{plugin_version(repo)}.zip"
    partial = target.with_suffix(".zip.partial")
    with zipfile.ZipFile(partial, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=9) as archive:
        for name in runtime_files(repo):
            info = zipfile.ZipInfo(f"{PLUGIN}/{name}", date_time=ZIP_TIME)
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = 0o644 << 16
            archive.writestr(info, (repo / name).read_bytes())
    partial.replace(target)
    return target


def check_file_list(names: list[str], expected: list[str]) -> list[str]:
    """Problems with the zip's entries: path tricks, forbidden files, missing or unexpected files."""
    problems = []
    for name in names:
        if name.startswith("/") or ".." in name.split("/"):
            problems.append(f"{name}: absolute paths and '..' are refused by the plugin repository")
        if not name.startswith(f"{PLUGIN}/"):
            problems.append(f"{name}: every file must be inside the top folder {PLUGIN}/")
        elif is_excluded(Path(name[len(PLUGIN) + 1 :])):
            problems.append(f"{name}: development or cache file; it must not be shipped")
    shipped = {name[len(PLUGIN) + 1 :] for name in names if name.startswith(f"{PLUGIN}/") and not name.endswith("/")}
    problems += [f"{PLUGIN}/{name}: missing (a runtime file of the checkout)" for name in sorted({*expected} - shipped)]
    problems += [f"{PLUGIN}/{name}: not a runtime file of the checkout" for name in sorted(shipped - {*expected})]
    return problems


def check_metadata(metadata: dict[str, str], names: list[str], zip_version: str) -> list[str]:
    """Problems the plugin repository would refuse the upload for, and a version that differs from the zip's."""
    problems = [
        f"metadata.txt: '{key}' is missing or empty; the plugin repository requires it"
        for key in REQUIRED_METADATA
        if not metadata.get(key, "").strip()
    ]
    if not re.fullmatch(r"\d+\.\d+(\.\d+)?", metadata.get("qgisMinimumVersion", "").strip()):
        problems.append("metadata.txt: qgisMinimumVersion must look like 3.22")
    if metadata.get("version", "").strip() != zip_version:
        problems.append(f"metadata.txt: version {metadata.get('version')!r} differs from the zip name's {zip_version}")
    if "/" in metadata.get("author", ""):
        problems.append("metadata.txt: the author may not contain '/'")
    for key in ("tracker", "repository", "homepage"):
        url = urlparse(metadata.get(key, "").strip())
        if key in metadata and (url.scheme not in ("http", "https") or not url.netloc):
            problems.append(f"metadata.txt: {key} must be a full http(s) address, not {metadata[key]!r}")
    for key in BOOLEAN_METADATA:
        if key in metadata and metadata[key].strip().lower() not in ("true", "false", "1", "0"):
            problems.append(f"metadata.txt: {key} must be True or False, not {metadata[key]!r}")
    icon = metadata.get("icon", "").strip().removeprefix("./")
    if icon and f"{PLUGIN}/{icon}" not in names:
        problems.append(f"metadata.txt: the icon {icon} is not in the package")
    if metadata.get("hasProcessingProvider", "").strip().lower() != "yes":
        problems.append("metadata.txt: hasProcessingProvider=yes is needed for qgis_process to load the provider")
    return problems


def expected_algorithm_ids(plugin_dir: Path) -> set[str]:
    """`socdepth:<NAME>` of every algorithm class in algorithms/*.py, and `socdepth:<stem>` of every models/*.model3."""
    ids = set()
    for source in sorted((plugin_dir / "algorithms").glob("*.py")):
        for node in ast.walk(ast.parse(source.read_text(encoding="utf-8"))):
            if not isinstance(node, ast.ClassDef):
                continue
            for statement in node.body:
                if (
                    isinstance(statement, ast.Assign)
                    and [getattr(t, "id", None) for t in statement.targets] == ["NAME"]
                    and isinstance(statement.value, ast.Constant)
                    and statement.value.value
                ):
                    ids.add(f"{PROVIDER}:{statement.value.value}")
    ids |= {f"{PROVIDER}:{model.stem}" for model in (plugin_dir / "models").glob("*.model3")}
    return ids


def check_loads(zip_path: Path, expected_ids: set[str], version: str) -> list[str]:
    """Unzips into a fresh QGIS profile, enables the plugin and compares `qgis_process.bin list` with expected_ids."""
    executable = shutil.which("qgis_process.bin") or shutil.which("qgis_process")
    if executable is None:
        return ["qgis_process.bin not found: install QGIS (make setup) or pass --no-load-check"]
    with tempfile.TemporaryDirectory(prefix="socdepth_package_") as config:
        plugins = Path(config) / "profiles" / "default" / "python" / "plugins"
        plugins.mkdir(parents=True)
        with zipfile.ZipFile(zip_path) as archive:
            archive.extractall(plugins)
        # only the unzipped copy may be found: no PYTHONPATH into a checkout, no user profile
        env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
        env |= {"QGIS_CUSTOM_CONFIG_PATH": config, "QT_QPA_PLATFORM": "offscreen", "PYTHONDONTWRITEBYTECODE": "1"}
        enabled = subprocess.run(
            [executable, "plugins", "enable", PLUGIN], env=env, capture_output=True, text=True, timeout=300
        )
        if enabled.returncode != 0:
            return [f"qgis_process could not enable {PLUGIN}:\n{enabled.stdout[-2000:]}{enabled.stderr[-2000:]}"]
        listed = subprocess.run([executable, "--json", "list"], env=env, capture_output=True, text=True, timeout=300)
        if listed.returncode != 0:
            return [f"qgis_process list failed:\n{listed.stderr[-3000:]}"]
        provider = json.loads(listed.stdout[listed.stdout.index("{") :])["providers"].get(PROVIDER)
        if provider is None:
            return [f"QGIS loaded no '{PROVIDER}' provider from the package:\n{listed.stderr[-3000:]}"]
        listed_ids = set(provider["algorithms"])
        problems = [f"{name}: not listed by qgis_process" for name in sorted(expected_ids - listed_ids)]
        problems += [f"{name}: listed but not expected" for name in sorted(listed_ids - expected_ids)]
        if not provider.get("long_name", "").endswith(version):
            problems.append(f"the provider reports {provider.get('long_name')!r}, not version {version}")
        return problems


def validate(zip_path: Path, repo: Path = REPO, load_check: bool = True) -> list[str]:
    """Every problem found with the zip; an empty list means it is ready to upload."""
    version = zip_path.name.removeprefix(f"{PLUGIN}-").removesuffix(".zip")
    problems = []
    if zip_path.stat().st_size > MAX_SIZE:
        problems.append(f"{zip_path.name} is {zip_path.stat().st_size / 1e6:.1f} MB; the limit is {MAX_SIZE / 1e6:.0f}")
    with zipfile.ZipFile(zip_path) as archive:
        bad = archive.testzip()
        if bad is not None:
            return [f"{zip_path.name} is damaged (CRC error in {bad})"]
        names = archive.namelist()
        problems += check_file_list(names, runtime_files(repo))
        if f"{PLUGIN}/metadata.txt" in names:
            metadata = read_metadata(archive.read(f"{PLUGIN}/metadata.txt").decode("utf-8"))
            problems += check_metadata(metadata, names, version)
    if load_check and not problems:
        with tempfile.TemporaryDirectory() as unpacked:
            with zipfile.ZipFile(zip_path) as archive:
                archive.extractall(unpacked)
            expected = expected_algorithm_ids(Path(unpacked) / PLUGIN)
        problems += check_loads(zip_path, expected, version)
    return problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=REPO / "dist", help="folder for the zip (default: dist)")
    parser.add_argument("--no-load-check", action="store_true", help="skip loading the package in QGIS")
    args = parser.parse_args(argv)
    zip_path = build(args.out)
    print(f"Built {zip_path} ({zip_path.stat().st_size / 1e6:.2f} MB)")
    problems = validate(zip_path, load_check=not args.no_load_check)
    if problems:
        print(f"{zip_path.name} is NOT ready to upload:", *(f"  - {p}" for p in problems), sep="\n", file=sys.stderr)
        return 1
    checked = "file list and metadata" + ("" if args.no_load_check else ", and QGIS lists every algorithm")
    print(f"Validated: {checked}.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
