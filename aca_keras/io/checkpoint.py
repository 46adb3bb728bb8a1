"""Atomic files and exact checkpoints (model variables and optimiser states).

A checkpoint is one ``.npz`` file holding every model variable (trainable or not: alphas,
weights, BatchNorm statistics) and every variable of the named optimisers, plus a JSON
``meta`` record. It is written to a temporary file in the same directory, flushed to disk and
renamed into place, so a run killed (or a disk that fills up) while writing still has its
previous checkpoint intact; the failed write raises :class:`~aca_keras.errors.StorageError`
and leaves no temporary file behind. A temporary file left by a killed process (the rename
never happened) is removed when the checkpoint is next loaded.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import IO, Any

import numpy as np

from aca_keras.errors import RunDirError, StorageError


def _atomic_write(path: str | os.PathLike, write: Callable[[IO[bytes]], None]) -> Path:
    """Write ``path`` through ``write(handle)`` into a temporary file beside it, fsync it and
    rename it into place; an ``OSError`` becomes :class:`StorageError` naming the file."""
    path = Path(path)
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        # mkstemp creates 0600 files; give the result the mode of any other new file
        with contextlib.suppress(AttributeError, NotImplementedError, OSError):
            os.fchmod(fd, _new_file_mode())
        with os.fdopen(fd, "wb") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
        tmp = None
        _fsync_dir(path.parent)
    except OSError as error:
        kept = " The previous version of the file is intact." if path.exists() else ""
        raise StorageError(
            error.errno, f"Could not write {path}: {error.strerror or error} (disk full, no "
            f"permission or a read-only file system?).{kept} Free space or choose another "
            "directory, then resume.") from error
    finally:
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)
    return path


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


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically (temporary file in the same folder, then rename).

    Raises:
        StorageError: the file could not be written; an existing ``path`` is left intact.
    """
    return _atomic_write(path, lambda handle: handle.write(data))


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    """Write text atomically (UTF-8)."""
    return atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | os.PathLike, obj: Any) -> Path:
    """Write a JSON document atomically, indented, keys in insertion order."""
    return atomic_write_text(path, json.dumps(obj, indent=2) + "\n")


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


def _variables(obj) -> list:
    return list(obj.variables)


def save_checkpoint(path: str | os.PathLike, model, optimizers: Mapping[str, Any],
                    meta: Mapping[str, Any]) -> Path:
    """Save all variables of ``model`` and of each optimiser, with ``meta``, atomically.

    Raises:
        StorageError: the checkpoint could not be written (disk full, ...); the previous
            checkpoint at ``path`` is left intact.
    """
    arrays: dict[str, np.ndarray] = {}
    layout: dict[str, list] = {}
    for group, obj in {"model": model, **optimizers}.items():
        variables = _variables(obj)
        layout[group] = [[v.path, list(v.shape)] for v in variables]
        for i, v in enumerate(variables):
            arrays[f"{group}/{i:05d}"] = np.asarray(v.numpy())
    record = {"meta": dict(meta), "layout": layout}
    arrays["__record__"] = np.frombuffer(json.dumps(record).encode("utf-8"), dtype=np.uint8)
    return _atomic_write(path, lambda handle: np.savez(handle, **arrays))


def read_checkpoint_meta(path: str | os.PathLike) -> dict[str, Any]:
    """The ``meta`` record of a checkpoint, without loading its arrays."""
    data, record = _open(path)
    data.close()
    if not isinstance(record, dict) or not isinstance(record.get("meta"), dict):
        raise RunDirError(f"The checkpoint {path} has no valid meta record; it is corrupt. "
                          f"{restart_hint(path)}")
    return record["meta"]


def _open(path: str | os.PathLike):
    path = Path(path)
    if not path.is_file():
        raise RunDirError(f"No checkpoint at {path}; the run has not finished an epoch yet.")
    try:
        data = np.load(path, allow_pickle=False)
        record = json.loads(bytes(data["__record__"]).decode("utf-8"))
    except Exception as error:  # zip/npz/JSON errors of many kinds
        raise RunDirError(f"The checkpoint {path} is corrupt or unreadable ({error}). "
                          f"{restart_hint(path)}") from None
    return data, record


def restart_hint(path: str | os.PathLike) -> str:
    """How to restart a run whose checkpoint ``path`` is corrupt."""
    path = Path(path)
    if path.parent.name == "train_checkpoint":  # aca_keras.training
        return (f"To restart the training from epoch 1, delete the folder {path.parent} and "
                f"train {path.parent.parent} again, not as a resume; or restore {path.name} "
                "from a backup and resume.")
    return (f"To restart the search from epoch 1, delete the run directory {path.parent} and "
            "start a new search with the same settings and run_dir, not as a resume; or "
            f"restore {path.name} from a backup and resume.")


def load_checkpoint(path: str | os.PathLike, model, optimizers: Mapping[str, Any]) -> dict[str, Any]:
    """Restore ``model`` and the optimisers from a checkpoint; returns its ``meta``.

    Temporary files of an interrupted write beside ``path`` are removed first.

    Raises :class:`RunDirError` if the checkpoint is unreadable or does not match the model
    (other settings).
    """
    remove_stale_temporaries(path)
    data, record = _open(path)
    try:
        layout = record["layout"]
        groups = {"model": model, **optimizers}
        values: dict[str, list[np.ndarray]] = {}
        for group, obj in groups.items():
            variables = _variables(obj)
            saved = layout.get(group)
            if saved is None or len(saved) != len(variables) or any(
                    list(v.shape) != shape for v, (_, shape) in zip(variables, saved)):
                raise RunDirError(
                    f"The checkpoint {path} does not match this {group}'s variables (was it "
                    "written with other settings?). Resume with the run's own config.json.")
            values[group] = [data[f"{group}/{i:05d}"] for i in range(len(variables))]
        meta = record["meta"]
    except RunDirError:
        raise
    except Exception as error:  # missing arrays, truncated members, a bad record
        raise RunDirError(f"The checkpoint {path} is corrupt or unreadable ({error}). "
                          f"{restart_hint(path)}") from None
    finally:
        data.close()
    # every array was read before any variable changes: a bad file never half-restores
    for group, obj in groups.items():
        for v, value in zip(_variables(obj), values[group]):
            v.assign(value)
    return meta
