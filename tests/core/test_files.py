"""The one atomic write: the file appears complete or not at all, with the permissions of any new file."""

import os
import stat

import pytest

from soc_depth_mapper.core.files import write_atomically


def test_a_write_replaces_the_file_with_the_umasks_permissions(tmp_path):
    path = tmp_path / "report.html"
    path.write_text("old")
    previous = os.umask(0o022)
    try:
        write_atomically(path, lambda stream: stream.write(b"new"))
    finally:
        os.umask(previous)
    assert path.read_bytes() == b"new"
    assert stat.S_IMODE(path.stat().st_mode) == 0o644  # readable by colleagues, as every other output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report.html"]


def test_a_failed_write_leaves_the_old_file_and_no_temporary_file(tmp_path):
    path = tmp_path / "model.socmodel"
    path.write_bytes(b"the earlier model")

    def fail_half_way(stream):
        stream.write(b"half a mod")
        raise OSError("No space left on device")

    with pytest.raises(OSError, match="No space left"):
        write_atomically(path, fail_half_way)
    assert path.read_bytes() == b"the earlier model"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.socmodel"]
