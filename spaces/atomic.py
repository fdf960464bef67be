"""Atomic file writes shared by every part of tdbnas.

A file is written to a temporary name in the same directory, flushed to disk, then renamed
over the final name (`os.replace` is atomic on POSIX and Windows), so a crash or a kill never
leaves a half-written model, table export, checkpoint or report under the final name.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any


def write_atomic(path: str | Path, write: Callable[[IO[bytes]], Any]) -> Path:
    """Call `write(handle)` on a temporary binary file, then move it to `path`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        with _suppress_missing():
            os.unlink(tmp)
        raise
    return path


def write_bytes_atomic(path: str | Path, data: bytes) -> Path:
    return write_atomic(path, lambda handle: handle.write(data))


def write_text_atomic(path: str | Path, text: str) -> Path:
    return write_bytes_atomic(path, text.encode("utf-8"))


def write_json_atomic(path: str | Path, payload: Any, indent: int | None = 2) -> Path:
    return write_text_atomic(path, json.dumps(payload, indent=indent) + "\n")


class _suppress_missing:
    def __enter__(self) -> None:
        return None

    def __exit__(self, kind, value, traceback) -> bool:
        return kind is not None and issubclass(kind, FileNotFoundError)
