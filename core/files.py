"""Writing a file so that it appears complete or not at all, and keeping a file a run replaces until it succeeds."""

from __future__ import annotations

import os
import secrets
import shutil
from collections.abc import Callable
from typing import BinaryIO


def write_atomically(path: str | os.PathLike, write: Callable[[BinaryIO], None]) -> None:
    """Calls `write(stream)` on a temporary file in the destination folder, flushes it to disk and moves it onto
    `path` with `os.replace`; on any error (a full disk, a cancel, a signal) the temporary file is removed and an
    existing file at `path` is left as it was.

    The temporary name starts with a dot and ends in `.partial`; it is opened with O_EXCL (never someone else's
    file) and mode 0o666, so the umask decides the permissions as for any new file (0644 usually), which
    `tempfile.mkstemp`'s 0600 would not.
    """
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    temporary = os.path.join(folder, f".{os.path.basename(path)}.{secrets.token_hex(6)}.partial")
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o666)
    try:
        with os.fdopen(descriptor, "wb") as stream:
            write(stream)
            stream.flush()
            os.fsync(stream.fileno())
        os.replace(temporary, path)
    except BaseException:
        if os.path.exists(temporary):
            os.remove(temporary)
        raise


#: files beside a database or a shapefile that belong to it: a failed write may leave new ones, and SQLite would
#: apply a journal left by the failed file to the file put back
_COMPANIONS = ("-journal", "-wal", "-shm")
_SHAPEFILE_PARTS = (".shx", ".dbf", ".prj", ".cpg", ".qix", ".sbn", ".sbx")


class EarlierFiles:
    """Files a run is about to replace, kept until the run ends: put back if it fails, let go if it succeeds.

    Where the writer deletes the old file before it writes the new one (QGIS does, for every vector output), a
    run that then fails (a full disk, a cancel) would otherwise lose the user's earlier file. Each file is kept by
    a hard link under a hidden name in its folder, which costs no space on a full disk; a copy where the file
    system has no hard links. A shapefile is kept with its parts.
    """

    def __init__(self) -> None:
        self._kept: list[tuple[str, str]] = []
        self._absent: list[str] = []

    def keep(self, path: str | os.PathLike) -> None:
        """Keeps the file at `path` (and a shapefile's parts); where there is none yet, a failed run's file of
        that name is removed."""
        path = os.fspath(path)
        if os.path.isdir(path):
            return
        stem, extension = os.path.splitext(path)
        parts = [path] + ([stem + part for part in _SHAPEFILE_PARTS] if extension.lower() == ".shp" else [])
        for part in parts + [path + companion for companion in _COMPANIONS]:
            if not os.path.exists(part):
                self._absent.append(part)
                continue
            kept = os.path.join(os.path.dirname(part), f".{os.path.basename(part)}.{secrets.token_hex(6)}.earlier")
            try:
                os.link(part, kept)
            except OSError:
                shutil.copy2(part, kept)
            self._kept.append((part, kept))

    def restore(self) -> list[str]:
        """Puts every kept file back and removes what the failed run wrote where there was none; returns the
        paths put back."""
        for part in self._absent:
            if os.path.exists(part):
                os.remove(part)
        for part, kept in self._kept:
            os.replace(kept, part)
        restored = [part for part, _kept in self._kept]
        self._kept, self._absent = [], []
        return restored

    def release(self) -> None:
        """Lets the kept files go: the run succeeded."""
        for _part, kept in self._kept:
            os.remove(kept)
        self._kept, self._absent = [], []
