"""Exact checkpoints: model variables and optimiser states, restored bit for bit.

A checkpoint is one ``.npz`` file holding every model variable (trainable or not: alphas,
weights, BatchNorm statistics) and every variable of the named optimisers, plus a JSON
``meta`` record. It is written atomically (:mod:`aca_keras.io.atomic`: a temporary file in
the same directory, flushed to disk and renamed into place), so a run killed (or a disk that
fills up) while writing still has its previous checkpoint intact; the failed write raises
:class:`~aca_keras.errors.StorageError` and leaves no temporary file behind. A temporary file left by a killed process (the rename
never happened) is removed when the checkpoint is next loaded.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from aca_keras.errors import RunDirError
from aca_keras.io.atomic import atomic_write, remove_stale_temporaries
from aca_keras.io.run_dir import RunDir

__all__ = ["load_checkpoint", "read_checkpoint_meta", "restart_hint", "save_checkpoint"]


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
    return atomic_write(path, lambda handle: np.savez(handle, **arrays))


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
    if path.parent.name == RunDir.TRAIN_CHECKPOINT_DIR:  # aca_keras.training
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
                # a model may know why (the supernet: a checkpoint of its other edge layout)
                explain = getattr(model, "checkpoint_mismatch_hint", None)
                hint = explain([entry[0] for entry in layout.get("model") or [] if entry]) \
                    if callable(explain) else None
                if hint:
                    raise RunDirError(f"The checkpoint {path} {hint}")
                raise RunDirError(
                    f"The checkpoint {path} does not match this {group}'s variables (was it "
                    f"written with other settings?). Resume with the run's own {RunDir.CONFIG}.")
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
