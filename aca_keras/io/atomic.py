"""Atomic files: the one way aca_keras writes a file that must never be left half written.

Every writer here writes into a temporary file in the target's folder, flushes it to disk and
renames it into place, so a process killed (or a disk that fills up) while writing leaves the
previous version of the file intact; a failed write raises
:class:`~aca_keras.errors.StorageError` naming the file and leaves no temporary file behind. A
temporary file left by a killed process (the rename never happened) is named
``.<name>.<random>.tmp`` and :func:`remove_stale_temporaries` deletes it.

Keras is not imported here: :func:`atomic_save_model` calls the model's own ``save``.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

from aca_keras.errors import RunDirError, StorageError

__all__ = [
    "atomic_copy_file",
    "atomic_save_model",
    "atomic_write",
    "atomic_write_bytes",
    "atomic_write_json",
    "atomic_write_text",
    "read_json",
    "remove_stale_temporaries",
]


def _replace_atomically(path: str | os.PathLike, fill: Callable[[int, Path], None],
                        suffix: str = ".tmp") -> Path:
    """Create a temporary file beside ``path``, let ``fill(fd, tmp)`` write it (and close
    ``fd``), fsync it, rename it onto ``path`` and fsync the folder. An ``OSError`` becomes
    :class:`StorageError`; the temporary file never outlives a failure."""
    path = Path(path)
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=suffix)
        # mkstemp creates 0600 files; give the result the mode of any other new file
        with contextlib.suppress(AttributeError, NotImplementedError, OSError):
            os.fchmod(fd, _new_file_mode())
        fill(fd, Path(tmp))
        os.replace(tmp, path)
        tmp = None
        _fsync_dir(path.parent)
    except OSError as error:
        if isinstance(error, StorageError):
            raise
        kept = " The previous version of the file is intact." if path.exists() else ""
        raise StorageError(
            error.errno, f"Could not write {path}: {error.strerror or error} (disk full, no "
            f"permission or a read-only file system?).{kept} Free space or choose another "
            "directory, then resume.") from error
    finally:
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)
    return path


def atomic_write(path: str | os.PathLike, write: Callable[[IO[bytes]], Any]) -> Path:
    """Write ``path`` atomically through ``write(handle)`` (a binary file handle).

    Raises:
        StorageError: the file could not be written; an existing ``path`` is left intact.
    """

    def fill(fd: int, _tmp: Path) -> None:
        with os.fdopen(fd, "wb") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())

    return _replace_atomically(path, fill)


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically (temporary file in the same folder, then rename).

    Raises:
        StorageError: the file could not be written; an existing ``path`` is left intact.
    """
    return atomic_write(path, lambda handle: handle.write(data))


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    """Write text atomically (UTF-8)."""
    return atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | os.PathLike, obj: Any) -> Path:
    """Write a JSON document atomically, indented, keys in insertion order."""
    return atomic_write_text(path, json.dumps(obj, indent=2) + "\n")


def atomic_copy_file(source: str | os.PathLike, path: str | os.PathLike) -> Path:
    """Copy the file ``source`` to ``path`` atomically (e.g. a snapshot of a checkpoint).

    Raises:
        StorageError: the copy could not be written; an existing ``path`` is left intact.
    """

    def copy(handle: IO[bytes]) -> None:
        with open(source, "rb") as src:
            shutil.copyfileobj(src, handle)

    return atomic_write(path, copy)


def atomic_save_model(model: Any, path: str | os.PathLike) -> Path:
    """``model.save(path)`` atomically: saved to ``.<name>.<random>.keras`` beside ``path``,
    fsynced, then renamed into place (Keras needs the ``.keras`` suffix).

    Raises:
        StorageError: the file could not be written; an existing ``path`` is left intact.
    """

    def fill(fd: int, tmp: Path) -> None:
        os.close(fd)
        model.save(tmp, overwrite=True)
        with open(tmp, "rb") as handle:
            os.fsync(handle.fileno())

    return _replace_atomically(path, fill, suffix=Path(path).suffix or ".keras")


def read_json(path: str | os.PathLike, what: str = "file") -> Any:
    """Read a JSON file, raising :class:`RunDirError` that names the file when it is missing
    or not valid JSON."""
    path = Path(path)
    if not path.is_file():
        raise RunDirError(f"The {what} {path} does not exist.")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise RunDirError(f"The {what} {path} is not valid JSON ({error}); it may be corrupt.") from None


def remove_stale_temporaries(path: str | os.PathLike) -> list[Path]:
    """Delete the temporary files that an interrupted atomic write of ``path`` left beside
    it (``.<name>.*.tmp``); returns the removed paths."""
    path = Path(path)
    removed = []
    for stale in path.parent.glob(f".{path.name}.*.tmp"):
        with contextlib.suppress(OSError):
            stale.unlink()
            removed.append(stale)
    return removed


def _new_file_mode() -> int:
    """The mode ``open()`` gives a new file: ``0o666`` less the process's umask (read from
    ``/proc`` where possible, since setting the umask to read it is not thread-safe)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return 0o666 & ~int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return 0o666 & ~mask


def _fsync_dir(folder: Path) -> None:
    """Make a rename durable (POSIX); a no-op where directories cannot be opened."""
    with contextlib.suppress(OSError, AttributeError):
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
