"""Writing a file so that it appears complete or not at all: the one way the engine writes its own files."""

from __future__ import annotations

import os
import secrets
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
