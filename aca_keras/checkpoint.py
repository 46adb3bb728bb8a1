"""Atomic files and exact checkpoints (model variables and optimiser states).

A checkpoint is one ``.npz`` file holding every model variable (trainable or not: alphas,
weights, BatchNorm statistics) and every variable of the named optimisers, plus a JSON
``meta`` record. It is written to a temporary file in the same directory and renamed into
place, so a run killed while writing still has its previous checkpoint intact.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from aca_keras.errors import RunDirError


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically (temporary file in the same folder, then rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


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
    """Save all variables of ``model`` and of each optimiser, with ``meta``, atomically."""
    arrays: dict[str, np.ndarray] = {}
    layout: dict[str, list] = {}
    for group, obj in {"model": model, **optimizers}.items():
        variables = _variables(obj)
        layout[group] = [[v.path, list(v.shape)] for v in variables]
        for i, v in enumerate(variables):
            arrays[f"{group}/{i:05d}"] = np.asarray(v.numpy())
    record = {"meta": dict(meta), "layout": layout}
    arrays["__record__"] = np.frombuffer(json.dumps(record).encode("utf-8"), dtype=np.uint8)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            np.savez(handle, **arrays)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def read_checkpoint_meta(path: str | os.PathLike) -> dict[str, Any]:
    """The ``meta`` record of a checkpoint, without loading its arrays."""
    return _open(path)[1]["meta"]


def _open(path: str | os.PathLike):
    path = Path(path)
    if not path.is_file():
        raise RunDirError(f"No checkpoint at {path}; the run has not finished an epoch yet.")
    try:
        data = np.load(path, allow_pickle=False)
        record = json.loads(bytes(data["__record__"]).decode("utf-8"))
    except Exception as error:  # zip/npz/JSON errors of many kinds
        raise RunDirError(f"The checkpoint {path} is corrupt or unreadable ({error}). Restart "
                          "the run, or restore the file from a backup.") from None
    return data, record


def load_checkpoint(path: str | os.PathLike, model, optimizers: Mapping[str, Any]) -> dict[str, Any]:
    """Restore ``model`` and the optimisers from a checkpoint; returns its ``meta``.

    Raises :class:`RunDirError` if the checkpoint does not match the model (other settings).
    """
    data, record = _open(path)
    layout = record["layout"]
    for group, obj in {"model": model, **optimizers}.items():
        variables = _variables(obj)
        saved = layout.get(group)
        if saved is None or len(saved) != len(variables) or any(
                list(v.shape) != shape for v, (_, shape) in zip(variables, saved)):
            raise RunDirError(
                f"The checkpoint {path} does not match this {group}'s variables (was it written "
                "with other settings?). Resume with the run's own config.json.")
        for i, v in enumerate(variables):
            v.assign(data[f"{group}/{i:05d}"])
    return record["meta"]
