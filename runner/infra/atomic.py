"""Atomic file writes: a reader (or a later run) never sees half a file."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def _replacing(path: Path) -> Iterator[str]:
    """A temp file beside `path` to write; renamed onto `path` on success, removed on failure."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_json_atomic(obj: object, path: str | Path, indent: int | None = 2) -> Path:
    path = Path(path)
    with _replacing(path) as tmp, open(tmp, "w", encoding="utf-8") as f:
        json.dump(obj, f, indent=indent, ensure_ascii=False)
    return path


def copy_file_atomic(source: str | Path, path: str | Path) -> Path:
    """Copy `source` to `path` through a temp file beside it: `path` is whole or absent."""
    path = Path(path)
    with _replacing(path) as tmp:
        shutil.copyfile(source, tmp)
    return path


def write_text_atomic(text: str, path: str | Path) -> Path:
    path = Path(path)
    with _replacing(path) as tmp:
        Path(tmp).write_text(text, encoding="utf-8")
    return path
