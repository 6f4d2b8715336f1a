import hashlib
import io
import json
import os
import pickle
import time
import zipfile

import numpy as np
import pytest

from soc_depth_mapper.core import modelfile
from soc_depth_mapper.core.modelfile import (
    DIGEST,
    FORMAT,
    FORMAT_VERSION,
    MANIFEST,
    ModelFileError,
    load_model_file,
    save_model_file,
)


def _members(path) -> dict[str, bytes]:
    with zipfile.ZipFile(path) as archive:
        return {name: archive.read(name) for name in archive.namelist()}


def _write_members(path, members: dict[str, bytes], compression: int = zipfile.ZIP_STORED) -> None:
    with zipfile.ZipFile(path, "w", compression=compression) as archive:
        for name, data in members.items():
            archive.writestr(name, data)


def _with_digest(members: dict[str, bytes]) -> dict[str, bytes]:
    """The members with the digest of their (edited) manifest, as someone who recomputes it would write them."""
    return {**members, DIGEST: hashlib.sha256(members[MANIFEST]).hexdigest().encode()}


def _npy_bytes(array: np.ndarray, allow_pickle: bool = False) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=allow_pickle)
    return buffer.getvalue()


def _one_array_file(
    path, member_bytes: bytes, dtype: str = "<f8", shape=(3,), version: int = FORMAT_VERSION, **write
) -> None:
    """A hand-made model file whose manifest is consistent with `member_bytes` (a correct checksum and, from
    format 2, digest)."""
    manifest = {
        "format": FORMAT,
        "format_version": version,
        "metadata": {},
        "arrays": {
            "values": {
                "member": "values.npy",
                "dtype": dtype,
                "shape": list(shape),
                "sha256": hashlib.sha256(member_bytes).hexdigest(),
            }
        },
    }
    members = {MANIFEST: json.dumps(manifest).encode(), "values.npy": member_bytes}
    _write_members(path, _with_digest(members) if version >= 2 else members, **write)


@pytest.fixture
def members_read(monkeypatch) -> list[str]:
    """The names of the members opened for reading from now on, to show what a refusal read first."""
    real_open = zipfile.ZipFile.open
    names = []

    def recording_open(self, name, mode="r", *args, **kwargs):
        if mode == "r":
            names.append(getattr(name, "filename", name))
        return real_open(self, name, mode, *args, **kwargs)

    monkeypatch.setattr(zipfile.ZipFile, "open", recording_open)
    return names


@pytest.fixture
def saved(tmp_path):
    path = tmp_path / "model.socmodel"
    save_model_file(path, {"kind": "test"}, {"values": np.arange(3.0), "ids": np.array([4, 5], np.int32)})
    return path


def test_round_trip_is_bit_exact_for_every_dtype_and_shape(tmp_path):
    rng = np.random.default_rng(1)
    arrays = {
        "f32": rng.normal(size=(4, 3)).astype(np.float32),
        "f64_with_nan": np.array([1.5, np.nan, -np.inf, 5e-324]),
        "big_endian": np.arange(5, dtype=">f8") / 3,
        "fortran": np.asfortranarray(rng.normal(size=(3, 5))),
        "i8": np.array([-128, 0, 127], np.int8),
        "u16": np.arange(7, dtype=np.uint16).reshape(7, 1, 1),
        "i64": np.array([2**62, -(2**62)], np.int64),
        "flags": np.array([True, False, True]),
        "text": np.array(["ORCDRC_0_5", "pH"]),
        "scalar": np.array(3.25),
        "empty": np.zeros((0, 3), np.float32),
    }
    metadata = {
        "kind": "random_forest",
        "depths": [[0, 5], [5, 15]],
        "nested": {"units": "g/kg", "ok": True, "missing": None, "deep": {"x": [1, 2.5, "é"]}},
        "float": 0.1,
    }
    path = tmp_path / "m.socmodel"
    save_model_file(path, metadata, arrays)

    loaded_metadata, loaded = load_model_file(path)

    assert loaded_metadata == metadata
    assert set(loaded) == set(arrays)
    for name, array in arrays.items():
        assert loaded[name].dtype == array.dtype, name
        assert loaded[name].shape == array.shape, name
        assert loaded[name].tobytes(order="C") == np.ascontiguousarray(array).tobytes(), name


def test_file_is_a_zip_with_manifest_and_one_npy_per_array(saved):
    members = _members(saved)
    assert set(members) == {"manifest.json", "digest.sha256", "values.npy", "ids.npy"}
    manifest = json.loads(members["manifest.json"])
    assert manifest["format"] == "socdepth-model" and manifest["format_version"] == 2
    assert members["digest.sha256"] == hashlib.sha256(members["manifest.json"]).hexdigest().encode()
    assert manifest["arrays"]["ids"] == {
        "member": "ids.npy",
        "dtype": "<i4",
        "shape": [2],
        "sha256": hashlib.sha256(members["ids.npy"]).hexdigest(),
    }
    assert np.array_equal(np.load(io.BytesIO(members["ids.npy"])), [4, 5])


def test_a_pickle_inside_is_never_unpickled(tmp_path):
    marker = tmp_path / "code_ran"

    class Payload:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    # Even with a correct checksum (anyone can compute one), neither a raw pickle nor an object .npy loads.
    for member in (
        pickle.dumps(Payload()),
        _npy_bytes(np.array([Payload()], dtype=object), allow_pickle=True),
    ):
        path = tmp_path / "evil.socmodel"
        _one_array_file(path, member, dtype="<f8", shape=(1,))
        with pytest.raises(ModelFileError, match="pickle"):
            load_model_file(path)
        assert not marker.exists()


def test_an_object_dtype_in_the_manifest_is_refused(tmp_path):
    path = tmp_path / "object.socmodel"
    _one_array_file(path, _npy_bytes(np.array([1, "a"], dtype=object), allow_pickle=True), "|O", (2,))
    with pytest.raises(ModelFileError, match="Python objects"):
        load_model_file(path)


def test_a_changed_array_value_fails_the_checksum(saved):
    members = _members(saved)
    members["values.npy"] = members["values.npy"][:-1] + b"\x01"
    _write_members(saved, members)
    with pytest.raises(ModelFileError, match="checksum of 'values.npy'"):
        load_model_file(saved)


def test_a_flipped_byte_anywhere_in_the_file_is_caught(saved):
    original = saved.read_bytes()
    # Flip bytes in the compressed member data (after the first local header) and near the end.
    for position in (60, 80, len(original) // 2):
        damaged = bytearray(original)
        damaged[position] ^= 0xFF
        saved.write_bytes(bytes(damaged))
        with pytest.raises(ModelFileError):
            load_model_file(saved)


def test_a_renamed_extra_or_missing_member_is_refused(saved):
    members = _members(saved)
    renamed = dict(members)
    renamed["numbers.npy"] = renamed.pop("values.npy")
    _write_members(saved, renamed)
    with pytest.raises(
        ModelFileError, match=r"unexpected member\(s\) \['numbers.npy'\].*missing.*values.npy"
    ):
        load_model_file(saved)

    _write_members(saved, {**members, "readme.txt": b"hello"})
    with pytest.raises(ModelFileError, match="unexpected member"):
        load_model_file(saved)

    _write_members(saved, {k: v for k, v in members.items() if k != "ids.npy"})
    with pytest.raises(ModelFileError, match="missing member"):
        load_model_file(saved)


def test_shape_or_dtype_differing_from_the_manifest_is_refused(tmp_path):
    path = tmp_path / "m.socmodel"
    _one_array_file(path, _npy_bytes(np.arange(3.0)), dtype="<f8", shape=(4,))
    with pytest.raises(ModelFileError, match="dtype and shape"):
        load_model_file(path)
    _one_array_file(path, _npy_bytes(np.arange(3.0)), dtype="<f4", shape=(3,))
    with pytest.raises(ModelFileError, match="dtype and shape"):
        load_model_file(path)


def test_files_that_are_not_model_files(tmp_path):
    text = tmp_path / "notes.socmodel"
    text.write_text("SOC,depth\n1,2\n")
    with pytest.raises(ModelFileError, match="not a zip"):
        load_model_file(text)

    other_zip = tmp_path / "other.zip"
    _write_members(other_zip, {"data.csv": b"1,2"})
    with pytest.raises(ModelFileError, match="no manifest.json"):
        load_model_file(other_zip)

    foreign = tmp_path / "foreign.zip"
    _write_members(foreign, {"manifest.json": json.dumps({"format": "other", "format_version": 1}).encode()})
    with pytest.raises(ModelFileError, match="format is not 'socdepth-model'"):
        load_model_file(foreign)

    with pytest.raises(ModelFileError, match="does not exist"):
        load_model_file(tmp_path / "absent.socmodel")


def test_a_newer_format_version_asks_to_update_the_plugin(saved):
    members = _members(saved)
    manifest = json.loads(members["manifest.json"])
    manifest["format_version"] = FORMAT_VERSION + 1
    _write_members(saved, {**members, "manifest.json": json.dumps(manifest).encode()})
    with pytest.raises(ModelFileError, match="newer SOC Depth Mapper.*Update the plugin"):
        load_model_file(saved)

    manifest["format_version"] = "1"
    _write_members(saved, {**members, "manifest.json": json.dumps(manifest).encode()})
    with pytest.raises(ModelFileError, match="invalid format version"):
        load_model_file(saved)


def test_nan_in_metadata_is_refused_on_save_and_on_load(tmp_path):
    with pytest.raises(ModelFileError, match=r"metadata\.scores\[1\] is nan"):
        save_model_file(tmp_path / "m.socmodel", {"scores": [1.0, float("nan")]}, {})
    assert os.listdir(tmp_path) == []

    path = tmp_path / "m.socmodel"
    save_model_file(path, {"score": 1.0}, {})
    members = _members(path)
    members["manifest.json"] = members["manifest.json"].replace(b'"score": 1.0', b'"score": Infinity')
    assert b"Infinity" in members["manifest.json"]
    _write_members(path, members)
    with pytest.raises(ModelFileError, match="Infinity"):
        load_model_file(path)


@pytest.mark.parametrize(
    ("metadata", "message"),
    [
        ({1: "a"}, "key 1 of type int"),
        ({"n": np.int64(3)}, r"metadata\.n has type int64"),
        ({"a": {"b": object()}}, r"metadata\.a\.b has type object"),
    ],
)
def test_metadata_that_json_would_change_or_cannot_hold_is_refused(tmp_path, metadata, message):
    with pytest.raises(ModelFileError, match=message):
        save_model_file(tmp_path / "m.socmodel", metadata, {})


def test_unsafe_array_names_and_object_arrays_are_refused_on_save(tmp_path):
    for name in ("../escape", "a/b", ".hidden", "", "manifest.json "):
        with pytest.raises(ModelFileError, match="cannot be stored"):
            save_model_file(tmp_path / "m.socmodel", {}, {name: np.zeros(1)})
    with pytest.raises(ModelFileError, match="Python objects"):
        save_model_file(tmp_path / "m.socmodel", {}, {"ok": np.zeros(2), "bad": np.array([None, 1])})
    assert os.listdir(tmp_path) == []


def test_a_failed_save_leaves_no_file_and_keeps_the_previous_one(tmp_path, monkeypatch):
    path = tmp_path / "model.socmodel"
    save_model_file(path, {"version": "old"}, {"a": np.zeros(2)})
    previous = path.read_bytes()
    real_write_array = np.lib.format.write_array
    seen_during_write = []

    def fail_on_second_array(stream, array, **kwargs):
        seen_during_write.append(sorted(os.listdir(tmp_path)))
        if len(seen_during_write) == 2:
            raise MemoryError("simulated failure while writing")
        real_write_array(stream, array, **kwargs)

    monkeypatch.setattr(modelfile.np.lib.format, "write_array", fail_on_second_array)
    with pytest.raises(MemoryError):
        save_model_file(path, {"version": "new"}, {"a": np.ones(2), "b": np.ones(3)})

    # The partial file existed while writing, and is gone now; the old model is untouched.
    assert len(seen_during_write[1]) == 2 and any(name.endswith(".partial") for name in seen_during_write[1])
    assert os.listdir(tmp_path) == ["model.socmodel"]
    assert path.read_bytes() == previous
    monkeypatch.undo()
    assert load_model_file(path)[0] == {"version": "old"}

    new_path = tmp_path / "new.socmodel"
    monkeypatch.setattr(modelfile.np.lib.format, "write_array", fail_on_second_array)
    seen_during_write.clear()
    with pytest.raises(MemoryError):
        save_model_file(new_path, {}, {"a": np.ones(2), "b": np.ones(3)})
    assert os.listdir(tmp_path) == ["model.socmodel"]


def test_a_member_larger_than_its_array_is_refused_before_reading(tmp_path, members_read):
    path = tmp_path / "bomb.socmodel"
    member = _npy_bytes(np.zeros(300_000))  # compresses to a few kB
    _one_array_file(path, member, dtype="<f8", shape=(3,), compression=zipfile.ZIP_DEFLATED)
    with pytest.raises(ModelFileError) as error:
        load_model_file(path)
    assert str(error.value) == (
        "'bomb.socmodel' is damaged or was altered after saving: the manifest says array 'values' takes 24 bytes, "
        "but its member 'values.npy' holds 2.3 MiB; refusing to read it. Use an intact copy, or train and save "
        "the model again."
    )
    assert members_read == [MANIFEST, DIGEST]


def _edit_manifest(path, edit) -> dict[str, bytes]:
    """Rewrites the file with `edit` applied to its parsed manifest, the digest left as it was."""
    members = _members(path)
    manifest = json.loads(members[MANIFEST])
    edit(manifest)
    members[MANIFEST] = json.dumps(manifest).encode()
    _write_members(path, members)
    return members


@pytest.mark.parametrize(
    "edit",
    [
        pytest.param(lambda m: m["metadata"].update(intervals=[[0, 10], [10, 15]]), id="intervals"),
        pytest.param(lambda m: m["metadata"].update(kind="cnn"), id="kind"),
        pytest.param(lambda m: m["arrays"]["values"].update(shape=[1, 3]), id="shape"),
    ],
)
def test_an_edited_manifest_fails_the_digest(tmp_path, edit):
    path = tmp_path / "model.socmodel"
    save_model_file(path, {"kind": "random_forest", "intervals": [[0, 5], [5, 15]]}, {"values": np.arange(3.0)})
    _edit_manifest(path, edit)
    with pytest.raises(ModelFileError) as error:
        load_model_file(path)
    assert str(error.value) == (
        "'model.socmodel' is damaged or was altered after saving: its manifest.json (the model's settings, depth "
        "intervals and array list) does not match its digest. Use an intact copy, or train and save the model "
        "again."
    )


def test_a_missing_or_malformed_digest_is_refused(saved):
    members = _members(saved)
    _write_members(saved, {k: v for k, v in members.items() if k != DIGEST})
    with pytest.raises(ModelFileError, match=r"its digest \(digest.sha256\) is missing"):
        load_model_file(saved)
    _write_members(saved, {**members, DIGEST: members[DIGEST] + b"\n"})
    with pytest.raises(ModelFileError, match="digest.sha256 is not a SHA-256 digest"):
        load_model_file(saved)


def test_a_padded_manifest_is_refused_before_reading(saved, members_read):
    members = _members(saved)
    # 17 MiB of spaces after the JSON deflate to about 17 kB; the digest matches, as a forger would make it
    members[MANIFEST] += b" " * (17 * 2**20)
    _write_members(saved, _with_digest(members), compression=zipfile.ZIP_DEFLATED)
    assert saved.stat().st_size < 100_000
    members_read.clear()
    with pytest.raises(ModelFileError) as error:
        load_model_file(saved)
    assert str(error.value) == (
        "'model.socmodel' is damaged or was altered after saving: its manifest.json would take 17.0 MiB, where a "
        "model's takes a few kB (at most 16.0 MiB); refusing to read it. Use an intact copy, or train and save the "
        "model again."
    )
    assert members_read == []


def test_an_oversized_claimed_array_is_refused_before_reading(tmp_path, members_read):
    path = tmp_path / "claim.socmodel"
    # the manifest claims 2 GiB for an array whose member holds 24 values
    _one_array_file(path, _npy_bytes(np.arange(3.0)), dtype="<f8", shape=(2**28,))
    with pytest.raises(ModelFileError, match=r"says array 'values' takes 2\.0 GiB, but its member 'values.npy' holds "
                       r"152 bytes; refusing to read it"):
        load_model_file(path)
    assert members_read == [MANIFEST, DIGEST]


def test_a_zip_bomb_array_is_refused_before_reading(tmp_path, members_read):
    path = tmp_path / "bomb.socmodel"
    # a consistent file (checksum, digest, shape) whose 80 MiB array of zeros deflates to about 80 kB
    zeros = np.zeros(10 * 2**20)
    _one_array_file(path, _npy_bytes(zeros), shape=zeros.shape, compression=zipfile.ZIP_DEFLATED)
    assert path.stat().st_size < 200_000
    with pytest.raises(ModelFileError, match=r"member 'values.npy' would decompress from \d+\.\d kiB to 80\.0 MiB, "
                       "far more than a model's arrays do; refusing to read it"):
        load_model_file(path)
    assert members_read == []


def test_format_1_files_without_a_digest_still_load_with_their_arrays_checked(tmp_path):
    path = tmp_path / "old.socmodel"
    member = _npy_bytes(np.arange(3.0))
    _one_array_file(path, member, version=1)
    metadata, arrays = load_model_file(path)
    assert metadata == {} and np.array_equal(arrays["values"], [0.0, 1.0, 2.0])
    _one_array_file(path, member, version=1)
    members = _members(path)
    members["values.npy"] = _npy_bytes(np.arange(1.0, 4.0))
    _write_members(path, members)
    with pytest.raises(ModelFileError, match="checksum of 'values.npy' does not match"):
        load_model_file(path)
    # a format 1 file has no digest member, so one is unexpected there
    _write_members(path, _with_digest(_members(path)))
    with pytest.raises(ModelFileError, match=r"unexpected member\(s\) \['digest.sha256'\]"):
        load_model_file(path)


def test_the_same_model_saved_at_another_time_gives_the_same_bytes(tmp_path, monkeypatch):
    arrays = {"values": np.arange(3.0), "ids": np.array([4, 5], np.int32)}
    save_model_file(tmp_path / "now.socmodel", {"kind": "test"}, arrays)
    monkeypatch.setattr(time, "time", lambda: 1_000_000_000.0)  # zip time stamps would say 2001
    save_model_file(tmp_path / "then.socmodel", {"kind": "test"}, arrays)
    assert (tmp_path / "now.socmodel").read_bytes() == (tmp_path / "then.socmodel").read_bytes()
    with zipfile.ZipFile(tmp_path / "now.socmodel") as archive:
        assert {info.date_time for info in archive.infolist()} == {(1980, 1, 1, 0, 0, 0)}
