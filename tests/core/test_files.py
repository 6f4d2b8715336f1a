"""The one atomic write (the file appears complete or not at all, with the permissions of any new file), and the
files a run replaces, kept until it succeeds."""

import os
import stat

import pytest

from soc_depth_mapper.core.files import EarlierFiles, write_atomically


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


def _files(folder) -> dict[str, bytes]:
    return {path.name: path.read_bytes() for path in sorted(folder.iterdir())}


def _replace_as_qgis_does(path, content: bytes) -> None:
    """QGIS deletes an output file and writes a new one (a new inode), which the hard link survives."""
    os.remove(path)
    path.write_bytes(content)


def test_a_failed_run_gets_the_earlier_file_back_and_loses_what_it_wrote(tmp_path):
    earlier = tmp_path / "h.gpkg"
    earlier.write_bytes(b"earlier map")
    kept = EarlierFiles()
    kept.keep(earlier)
    kept.keep(tmp_path / "new.csv")  # no file yet: a failed run's file of that name goes
    _replace_as_qgis_does(earlier, b"half")
    (tmp_path / "h.gpkg-journal").write_bytes(b"journal of the failed write")
    (tmp_path / "new.csv").write_bytes(b"half")
    assert kept.restore() == [str(earlier)]
    assert _files(tmp_path) == {"h.gpkg": b"earlier map"}


def test_a_successful_run_keeps_its_file_and_nothing_else(tmp_path):
    earlier = tmp_path / "h.gpkg"
    earlier.write_bytes(b"earlier map")
    kept = EarlierFiles()
    kept.keep(earlier)
    assert len(list(tmp_path.iterdir())) == 2  # the hidden link
    _replace_as_qgis_does(earlier, b"new map")
    kept.release()
    assert _files(tmp_path) == {"h.gpkg": b"new map"}


def test_a_shapefile_comes_back_with_its_parts(tmp_path):
    parts = {f"soil{extension}": extension.encode() for extension in (".shp", ".shx", ".dbf", ".prj")}
    for name, content in parts.items():
        (tmp_path / name).write_bytes(content)
    kept = EarlierFiles()
    kept.keep(tmp_path / "soil.shp")
    for name in parts:
        _replace_as_qgis_does(tmp_path / name, b"new")
    (tmp_path / "soil.cpg").write_bytes(b"new part")
    kept.restore()
    assert _files(tmp_path) == parts


def test_where_hard_links_are_refused_the_earlier_file_is_copied(tmp_path, monkeypatch):
    def refuse(source, target):
        raise PermissionError("no hard links here")

    earlier = tmp_path / "h.gpkg"
    earlier.write_bytes(b"earlier map")
    kept = EarlierFiles()
    with monkeypatch.context() as patch:
        patch.setattr(os, "link", refuse)
        kept.keep(earlier)
    earlier.write_bytes(b"overwritten in place")  # a copy survives even this
    kept.restore()
    assert _files(tmp_path) == {"h.gpkg": b"earlier map"}
