"""Files written so that a kill at any moment leaves the old file or the new one, never half.

Every file of a run folder is written through these helpers: the contents go to a temporary
file in the same folder, are flushed to disk, and the temporary file is renamed over the
target (``os.replace``, atomic on POSIX and Windows within one file system).
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from cervixnet.errors import ConfigError

_TEMPORARY_PREFIX = ".tmp-"


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yields a temporary path beside ``path``; renamed over ``path`` once the block succeeds.

    The temporary file's name ends with the target's (Keras chooses formats by suffix, e.g.
    ``.keras`` or ``.weights.h5``).
    If the block raises, the temporary file is removed and ``path`` is left as it was.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor, temporary = tempfile.mkstemp(
        prefix=_TEMPORARY_PREFIX, suffix=f"-{path.name}", dir=path.parent
    )
    os.close(descriptor)
    temporary = Path(temporary)
    try:
        yield temporary
        _fsync(temporary)
        os.replace(temporary, path)
        _fsync_folder(path.parent)
    finally:
        temporary.unlink(missing_ok=True)


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Writes ``data`` to ``path`` atomically (see the module docstring)."""
    with atomic_path(path) as temporary:
        temporary.write_bytes(data)


def atomic_write_text(path: str | Path, text: str) -> None:
    """Writes ``text`` (UTF-8) to ``path`` atomically."""
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | Path, value: Any) -> None:
    """Writes ``value`` as indented JSON to ``path`` atomically."""
    atomic_write_text(path, json.dumps(value, indent=2) + "\n")


def remove_temporaries(folder: str | Path) -> list[Path]:
    """Deletes temporary files that a killed writer left in ``folder``; returns them."""
    left = sorted(Path(folder).glob(f"{_TEMPORARY_PREFIX}*"))
    for path in left:
        if path.is_file():
            path.unlink(missing_ok=True)
    return left


def check_writable(folder: str | Path, flag: str = "--out") -> None:
    """Checks that ``folder`` can be created and written, leaving no trace.

    A probe file is written, flushed and removed; folders created for the check are removed
    again, so that a run folder appears only when its run starts.

    Raises:
        ConfigError: the folder cannot be created or written (read-only file system, no
            permission, no space left), with the operating system's reason.
    """
    folder = Path(folder)
    missing = [p for p in (folder, *folder.parents) if not p.exists()]
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with atomic_path(folder / ".write-check") as probe:
            probe.write_bytes(b"\0" * 4096)
        (folder / ".write-check").unlink()
    except OSError as error:
        reason = error.strerror or str(error)
        raise ConfigError(f"{flag} {folder}: cannot write there ({reason})") from None
    finally:
        for created in missing:  # deepest first
            with contextlib.suppress(OSError):
                created.rmdir()


def _fsync(path: Path) -> None:
    with open(path, "rb+") as handle:
        os.fsync(handle.fileno())


def _fsync_folder(folder: Path) -> None:
    if os.name != "posix":
        return
    descriptor = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)
