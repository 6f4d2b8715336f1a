"""The model file: a fitted model as JSON metadata plus plain numeric arrays, and nothing that runs code.

Models are shared between colleagues, so opening one must be as safe as opening a raster: no pickle, which
would execute whatever the file says. The file is a zip holding

- `manifest.json`: `format`, `format_version`, the caller's `metadata` (plain JSON) and, for every array, its
  member name, dtype, shape and SHA-256;
- `digest.sha256`: the SHA-256 of `manifest.json`, which lists the SHA-256 of every array, so this one value
  covers the whole model: an edited interval or model kind is caught as surely as a changed array value;
- one `.npy` member per array, written and read with `allow_pickle=False`.

Loading bounds the size of every member from the zip's directory before reading any of it (a padded manifest
or a "zip bomb" array is refused without being decompressed), then checks the digest and everything the
manifest claims (member list, checksums, dtypes, shapes) before handing anything back, so a damaged, altered,
oversized or foreign file fails with a `ModelFileError` that says what to do.

The digest guards against damage and edits, not forgery: anyone who means to forge a model can recompute it.
That is also why format 1 files (written before the digest existed) are still read with their arrays checked:
turning an edited format 2 file into one takes as deliberate a step as recomputing the digest.

Writing is reproducible: the same metadata and arrays give the same bytes (members in a fixed order with a
fixed time stamp), so two trainings with the same seed give identical files.
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import os
import re
import zipfile
import zlib
from typing import Any

import numpy as np

from .files import write_atomically

FORMAT = "socdepth-model"
FORMAT_VERSION = 2  # 2 added the digest; format 1 files are still read
MANIFEST = "manifest.json"
DIGEST = "digest.sha256"

# Array names become zip member names: keep them to characters that are safe in any path.
_ARRAY_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,199}$")
# An .npy header is a few hundred bytes (the format allows up to 64 KiB); a member whose size differs from its
# array's by more is refused before it is decompressed.
_NPY_HEADER_ALLOWANCE = 65536
# A model's manifest is a few kB of metadata; a larger one is not a model's.
_MAX_MANIFEST_BYTES = 16 * 2**20
# Model arrays (tree nodes, network weights) compress less than 10 times. A large member that claims to
# decompress to far more than that is a "zip bomb": a few MB on disk that would fill the memory.
_MAX_COMPRESSION_RATIO = 200
_COMPRESSION_CHECK_FROM = 64 * 2**20
# Every member gets this time stamp (the earliest a zip can hold), so that the bytes depend on the model only.
_TIMESTAMP = (1980, 1, 1, 0, 0, 0)


class ModelFileError(ValueError):
    """A model file that cannot be written or read; the message says why and what to do."""


def save_model_file(path: str | os.PathLike, metadata: dict[str, Any], arrays: dict[str, np.ndarray]) -> None:
    """Writes `metadata` and `arrays` to `path` atomically: the file appears complete or not at all.

    The zip is written under a temporary name in the destination folder and moved into place with
    `os.replace` only when every member is written, so an interrupted save never leaves a truncated model
    (or a stray temporary file) behind, and an existing file at `path` survives a failed save.
    Metadata must be plain JSON; tuples come back as lists.
    """
    metadata_text = _metadata_to_json(metadata)
    _check_array_names(arrays)
    write_atomically(path, lambda stream: _write_zip(stream, metadata_text, arrays))


def load_model_file(path: str | os.PathLike) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """Reads a file written by `save_model_file` -> (metadata, arrays), after checking all of it."""
    path = os.fspath(path)
    name = os.path.basename(path)
    if not os.path.isfile(path):
        raise ModelFileError(f"Model file '{path}' does not exist; check the path or train a model first.")
    if not zipfile.is_zipfile(path):
        raise ModelFileError(
            f"'{name}' is not a SOC Depth Mapper model file (it is not a zip archive). Choose a file saved "
            "by the plugin's training tools."
        )
    try:
        with zipfile.ZipFile(path) as archive:
            _check_member_sizes(archive, name)
            manifest = _read_manifest(archive, name)
            return manifest["metadata"], _read_arrays(archive, manifest, name)
    except (zipfile.BadZipFile, zlib.error, EOFError) as error:
        raise ModelFileError(
            f"'{name}' is a damaged zip archive ({error}); save or train the model again."
        ) from None


def _metadata_to_json(metadata: dict[str, Any]) -> str:
    if not isinstance(metadata, dict):
        raise ModelFileError(f"Model metadata must be a dict, not {type(metadata).__name__}.")
    _check_plain_json(metadata, "metadata")
    return json.dumps(metadata, allow_nan=False, sort_keys=True)


def _check_plain_json(value: Any, where: str) -> None:
    """Refuses what JSON would silently change (int keys) or cannot write (NaN, NumPy ints, objects)."""
    if value is None or isinstance(value, (bool, str)):
        return
    if type(value) is int:
        return
    if isinstance(value, float):  # NumPy's float64 is a float and writes as one
        if not math.isfinite(value):
            raise ModelFileError(
                f"Model metadata {where} is {value}; JSON has no NaN or infinity. Store null (None) or a "
                "finite number instead."
            )
        return
    if isinstance(value, (list, tuple)):
        for index, item in enumerate(value):
            _check_plain_json(item, f"{where}[{index}]")
        return
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str):
                raise ModelFileError(
                    f"Model metadata {where} has the key {key!r} of type {type(key).__name__}; JSON keys "
                    "must be strings."
                )
            _check_plain_json(item, f"{where}.{key}")
        return
    raise ModelFileError(
        f"Model metadata {where} has type {type(value).__name__}; use plain JSON values (dict, list, str, "
        "int, float, bool, None), e.g. float(x) for a NumPy number, or put arrays among the arrays."
    )


def _check_array_names(arrays: dict[str, np.ndarray]) -> None:
    for name in arrays:
        if not isinstance(name, str) or not _ARRAY_NAME.match(name):
            raise ModelFileError(
                f"Array name {name!r} cannot be stored; use letters, digits, '_', '.' and '-' only "
                "(at most 200 characters, not starting with '.' or '-')."
            )


class _HashingWriter:
    """Passes bytes to a zip member while computing their SHA-256, so arrays are serialised only once."""

    def __init__(self, target) -> None:
        self.target = target
        self.digest = hashlib.sha256()

    def write(self, data: bytes) -> int:
        self.digest.update(data)
        return self.target.write(data)


def _member_info(member: str) -> zipfile.ZipInfo:
    """A zip entry that depends on the name only: fixed time stamp and permissions (rw-r--r--)."""
    info = zipfile.ZipInfo(member, date_time=_TIMESTAMP)
    info.compress_type = zipfile.ZIP_DEFLATED
    info.external_attr = 0o644 << 16
    return info


def _write_zip(stream, metadata_text: str, arrays: dict[str, np.ndarray]) -> None:
    entries = {}
    with zipfile.ZipFile(stream, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for name, value in arrays.items():
            array = np.asarray(value)
            if array.dtype.hasobject:
                raise ModelFileError(
                    f"Array '{name}' holds Python objects (dtype {array.dtype}); only numeric, boolean or "
                    "fixed-width string arrays can be stored safely."
                )
            member = f"{name}.npy"
            with archive.open(_member_info(member), "w", force_zip64=True) as target:
                writer = _HashingWriter(target)
                np.lib.format.write_array(writer, array, allow_pickle=False)
            entries[name] = {
                "member": member,
                "dtype": array.dtype.str,
                "shape": list(array.shape),
                "sha256": writer.digest.hexdigest(),
            }
        manifest = {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "metadata": json.loads(metadata_text),
            "arrays": entries,
        }
        manifest_bytes = json.dumps(manifest, allow_nan=False, indent=1, sort_keys=True).encode("utf-8")
        archive.writestr(_member_info(MANIFEST), manifest_bytes)
        archive.writestr(_member_info(DIGEST), hashlib.sha256(manifest_bytes).hexdigest())


_RETRAIN = "Use an intact copy, or train and save the model again."


def _damaged(name: str) -> str:
    """The start of every message about a file that was changed after saving."""
    return f"'{name}' is damaged or was altered after saving"


def _size(n_bytes: int) -> str:
    for unit, factor in (("GiB", 2**30), ("MiB", 2**20), ("kiB", 2**10)):
        if n_bytes >= factor:
            return f"{n_bytes / factor:.1f} {unit}"
    return f"{n_bytes} bytes"


def _check_member_sizes(archive: zipfile.ZipFile, name: str) -> None:
    """Refuses, from the zip's directory alone, members that appear twice or would decompress to more than a
    model holds; `archive.read` never returns more than the size checked here."""
    damaged, retrain = _damaged(name), _RETRAIN
    members = archive.namelist()
    if len(members) != len(set(members)):
        raise ModelFileError(f"{damaged}: a member appears twice in the archive. {retrain}")
    for info in archive.infolist():
        if info.filename == MANIFEST and info.file_size > _MAX_MANIFEST_BYTES:
            raise ModelFileError(
                f"{damaged}: its {MANIFEST} would take {_size(info.file_size)}, where a model's takes a few kB "
                f"(at most {_size(_MAX_MANIFEST_BYTES)}); refusing to read it. {retrain}"
            )
        if info.filename == DIGEST and info.file_size != 64:
            raise ModelFileError(f"{damaged}: {DIGEST} is not a SHA-256 digest. {retrain}")
        if (
            info.file_size > _COMPRESSION_CHECK_FROM
            and info.file_size > _MAX_COMPRESSION_RATIO * max(info.compress_size, 1)
        ):
            raise ModelFileError(
                f"{damaged}: member '{info.filename}' would decompress from {_size(info.compress_size)} to "
                f"{_size(info.file_size)}, far more than a model's arrays do; refusing to read it. {retrain}"
            )


def _refuse_constant(constant: str) -> None:
    raise ModelFileError(f"the manifest holds '{constant}', which is not valid JSON")


def _read_manifest(archive: zipfile.ZipFile, name: str) -> dict[str, Any]:
    """The parsed manifest, after checking its format, version and (from format 2) digest."""
    retrain = "Save or train the model again with this version of the plugin."
    try:
        text = archive.read(MANIFEST)
    except KeyError:
        raise ModelFileError(
            f"'{name}' is a zip archive but not a SOC Depth Mapper model file (no {MANIFEST}). {retrain}"
        ) from None
    try:
        manifest = json.loads(text.decode("utf-8"), parse_constant=_refuse_constant)
    except (UnicodeDecodeError, json.JSONDecodeError, ModelFileError) as error:
        raise ModelFileError(f"'{name}': {MANIFEST} cannot be read ({error}). {retrain}") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise ModelFileError(f"'{name}' is not a SOC Depth Mapper model file (its format is not '{FORMAT}').")
    version = manifest.get("format_version")
    if type(version) is not int or version < 1:
        raise ModelFileError(f"'{name}' has an invalid format version {version!r}. {retrain}")
    if version > FORMAT_VERSION:
        raise ModelFileError(
            f"'{name}' was written by a newer SOC Depth Mapper (model file format {version}; this version "
            f"reads format {FORMAT_VERSION}). Update the plugin to use this model."
        )
    if version >= 2:
        _check_digest(archive, text, name)
    if not isinstance(manifest.get("metadata"), dict) or not isinstance(manifest.get("arrays"), dict):
        raise ModelFileError(f"'{name}': {MANIFEST} lacks its metadata or array list. {retrain}")
    return manifest


def _check_digest(archive: zipfile.ZipFile, manifest_bytes: bytes, name: str) -> None:
    damaged, retrain = _damaged(name), _RETRAIN
    try:
        recorded = archive.read(DIGEST)
    except KeyError:
        raise ModelFileError(f"{damaged}: its digest ({DIGEST}) is missing. {retrain}") from None
    if recorded != hashlib.sha256(manifest_bytes).hexdigest().encode("ascii"):
        raise ModelFileError(
            f"{damaged}: its {MANIFEST} (the model's settings, depth intervals and array list) does not match "
            f"its digest. {retrain}"
        )


def _read_arrays(archive: zipfile.ZipFile, manifest: dict[str, Any], name: str) -> dict[str, np.ndarray]:
    damaged, retrain = _damaged(name), _RETRAIN
    members = archive.namelist()
    entries = manifest["arrays"]
    expected = {MANIFEST, DIGEST} if manifest["format_version"] >= 2 else {MANIFEST}
    for array_name, entry in entries.items():
        if not isinstance(entry, dict) or not _ARRAY_NAME.match(array_name):
            raise ModelFileError(f"{damaged}: the manifest entry for {array_name!r} is malformed. {retrain}")
        expected.add(entry.get("member"))
    extra, missing = set(members) - expected, expected - set(members)
    if extra or missing:
        details = []
        if extra:
            details.append(f"unexpected member(s) {sorted(extra)}")
        if missing:
            details.append(f"missing member(s) {sorted(str(m) for m in missing)}")
        raise ModelFileError(f"{damaged}: {'; '.join(details)}. {retrain}")

    # every claim is checked against the zip's directory before any array is read
    claims = {array: _array_claim(archive, array, entry, damaged, retrain) for array, entry in entries.items()}
    return {
        array_name: _read_array(archive, entries[array_name]["member"], *claim, damaged, retrain)
        for array_name, claim in claims.items()
    }


def _array_claim(
    archive: zipfile.ZipFile, array_name: str, entry: dict[str, Any], damaged: str, retrain: str
) -> tuple[np.dtype, tuple[int, ...], str]:
    """(dtype, shape, checksum) the manifest gives for an array, once they agree with its member's size."""
    try:
        dtype = np.dtype(entry["dtype"])
        shape = tuple(int(n) for n in entry["shape"])
        checksum = str(entry["sha256"])
    except (KeyError, TypeError, ValueError):
        raise ModelFileError(
            f"{damaged}: the manifest entry for '{array_name}' is malformed. {retrain}"
        ) from None
    if dtype.hasobject:
        raise ModelFileError(
            f"{damaged}: array '{array_name}' claims to hold Python objects, which would need pickle; "
            "refusing to load it. Only use model files from the plugin's own training tools."
        )
    if any(n < 0 for n in shape):
        raise ModelFileError(f"{damaged}: array '{array_name}' has a negative shape {shape}. {retrain}")
    info = archive.getinfo(entry["member"])
    claimed = math.prod(shape) * dtype.itemsize
    if not claimed < info.file_size <= claimed + _NPY_HEADER_ALLOWANCE:
        raise ModelFileError(
            f"{damaged}: the manifest says array '{array_name}' takes {_size(claimed)}, but its member "
            f"'{info.filename}' holds {_size(info.file_size)}; refusing to read it. {retrain}"
        )
    return dtype, shape, checksum


def _read_array(
    archive: zipfile.ZipFile,
    member: str,
    dtype: np.dtype,
    shape: tuple[int, ...],
    checksum: str,
    damaged: str,
    retrain: str,
) -> np.ndarray:
    info = archive.getinfo(member)
    data = archive.read(info)
    if hashlib.sha256(data).hexdigest() != checksum:
        raise ModelFileError(f"{damaged}: the checksum of '{info.filename}' does not match. {retrain}")
    try:
        array = np.load(io.BytesIO(data), allow_pickle=False)
    except (ValueError, OSError, EOFError) as error:
        raise ModelFileError(
            f"{damaged}: '{info.filename}' is not a plain NumPy array ({error}). Model files never contain "
            "pickled objects; only use files from the plugin's own training tools."
        ) from None
    if not isinstance(array, np.ndarray) or array.dtype != dtype or array.shape != shape:
        raise ModelFileError(
            f"{damaged}: '{info.filename}' does not match the dtype and shape listed in {MANIFEST}. {retrain}"
        )
    return array
