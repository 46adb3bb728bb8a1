"""TensorBoard event files for searches and trainings (``tf.summary``).

:class:`TensorBoardLogger` is a Keras callback that writes, once per epoch (the step is the
epoch counted from 1, as in ``history.csv``, ``alphas.jsonl`` and ``train_history.csv``):

* every numeric value of the epoch's ``logs`` as a scalar under its own name: the losses and
  accuracies, and in a search the collapse monitor's figures (``skip_edges``,
  ``hessian_eigenvalue``, ...; a figure not measured in an epoch is not written for it);
* the learning rates of the model's optimisers at the end of the epoch:
  ``learning_rate`` (``model.optimizer``) and, for a search supernet, ``alpha_learning_rate``
  (``model.alpha_optimizer``), unless the logs already hold a value of that name;
* for a model with architecture weights (``alpha_normal``/``alpha_reduce``, a
  :class:`~aca_keras.models.supernet.SearchNetwork`), the softmax over the operations of each
  cell type's alphas as a grey-scale image ``alphas/normal`` and ``alphas/reduce``: one row
  per edge (DARTS edge order), one column per operation (op-set order), the pixel value
  ``round(255 * weight)`` (black 0, white 1), each entry drawn as a ``scale`` x ``scale``
  block (:func:`alpha_heat_map`). A text summary ``alphas/legend`` written once names the
  rows and columns.

>>> search("digits", callbacks=[TensorBoardLogger("runs/tb")])     # doctest: +SKIP
>>> train(model, "digits", tensorboard="runs/tb")                    # doctest: +SKIP

then ``tensorboard --logdir runs/tb``. A resumed run writes the epochs it runs into a new
event file in the same directory, with the same steps an uninterrupted run would use.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from aca_keras.errors import StorageError

__all__ = ["TensorBoardLogger", "alpha_heat_map", "alpha_weights", "edge_labels"]

#: the optimiser attributes whose learning rate is written, and the scalar's name
OPTIMIZERS = (("optimizer", "learning_rate"), ("alpha_optimizer", "alpha_learning_rate"))


def _softmax(logits: np.ndarray) -> np.ndarray:
    logits = np.asarray(logits, dtype=np.float64)
    shifted = np.exp(logits - logits.max(axis=-1, keepdims=True))
    return shifted / shifted.sum(axis=-1, keepdims=True)


def alpha_weights(model: Any) -> dict[str, np.ndarray]:
    """``{"normal": ..., "reduce": ...}``: the softmax over the operations (last axis, in
    float64) of ``model.alpha_normal`` and ``model.alpha_reduce``; empty for a model without
    them."""
    out = {}
    for cell in ("normal", "reduce"):
        variable = getattr(model, f"alpha_{cell}", None)
        if variable is not None:
            out[cell] = _softmax(keras.ops.convert_to_numpy(variable))
    return out


def alpha_heat_map(weights: np.ndarray, scale: int = 16) -> np.ndarray:
    """A grey-scale picture of an ``(edges, ops)`` matrix of weights in ``[0, 1]``.

    Returns a ``uint8`` array of shape ``(edges * scale, ops * scale, 1)``: entry ``(e, o)``
    fills the block of rows ``e * scale .. (e + 1) * scale - 1`` and columns
    ``o * scale .. (o + 1) * scale - 1`` with ``round(255 * weight)``.

    Raises:
        ValueError: ``weights`` is not a 2-D matrix or ``scale`` is not a positive integer.
    """
    weights = np.asarray(weights, dtype=np.float64)
    if weights.ndim != 2:
        raise ValueError(f"alpha_heat_map needs an (edges, ops) matrix, got shape "
                         f"{weights.shape}")
    if isinstance(scale, bool) or not isinstance(scale, (int, np.integer)) or scale < 1:
        raise ValueError(f"scale must be a positive integer, got {scale!r}")
    pixels = np.rint(255.0 * np.clip(weights, 0.0, 1.0)).astype(np.uint8)
    pixels = np.repeat(np.repeat(pixels, int(scale), axis=0), int(scale), axis=1)
    return pixels[..., None]


def edge_labels(num_edges: int) -> list[str]:
    """Names of the rows of an alpha matrix in DARTS edge order: ``"2 <- 0"`` is the edge
    from state 0 (the first cell input) into state 2 (the first intermediate node)."""
    labels, node = [], 0
    while len(labels) < num_edges:
        labels.extend(f"{node + 2} <- {i}" for i in range(node + 2))
        node += 1
    return labels[:num_edges]


def _learning_rate(optimizer: Any) -> float | None:
    if not isinstance(optimizer, keras.optimizers.Optimizer):
        return None
    try:
        return float(keras.ops.convert_to_numpy(optimizer.learning_rate))
    except (TypeError, ValueError, AttributeError):
        return None


def _number(value: Any) -> float | None:
    """``value`` as a float when it is one number (a Python or NumPy scalar, a 0-d array or
    tensor); ``None`` for anything else (``None``, strings, arrays)."""
    if value is None or isinstance(value, (str, bytes)):
        return None
    try:
        array = np.asarray(keras.ops.convert_to_numpy(value))
    except (TypeError, ValueError):
        return None
    if array.shape == () and (array.dtype == np.bool_ or np.issubdtype(array.dtype, np.number)):
        return float(array)
    return None


class TensorBoardLogger(keras.callbacks.Callback):
    """Writes a run's per-epoch figures (and a supernet's alphas) to TensorBoard event files.

    Args:
        log_dir: the directory of the event files (created if missing).
        alphas: write the alpha images when the model has architecture weights.
        scale: pixels per alpha entry along each side of the images.
        rename: scalar names to use instead of the logs' keys (``{"logits_accuracy":
            "accuracy"}``: the training's history names).
        values: called at the end of each epoch; its numbers are written as scalars too
            (e.g. the training's ``drop_path_rate``).
        close_at_end: close the event file when ``fit`` ends (``False``: the caller writes
            more with :meth:`write`, then calls :meth:`close`).

    Raises:
        StorageError: ``log_dir`` cannot be created (when the run starts).
    """

    def __init__(self, log_dir: str | os.PathLike, *, alphas: bool = True, scale: int = 16,
                 rename: Mapping[str, str] | None = None,
                 values: Callable[[], Mapping[str, Any]] | None = None,
                 close_at_end: bool = True):
        super().__init__()
        self.log_dir = Path(log_dir)
        self.alphas = bool(alphas)
        alpha_heat_map(np.zeros((1, 1)), scale)  # checks scale
        self.scale = int(scale)
        self.rename = dict(rename or {})
        self.values = values
        self.close_at_end = bool(close_at_end)
        self._writer = None
        self._legend_written = False

    # ----------------------------------------------------------------------------- writer

    def _open(self):
        if self._writer is None:
            try:
                self.log_dir.mkdir(parents=True, exist_ok=True)
            except OSError as error:
                raise StorageError(f"Cannot create the TensorBoard directory {self.log_dir}: "
                                   f"{error}. Choose a writable directory.") from None
            self._writer = tf.summary.create_file_writer(os.fspath(self.log_dir))
        return self._writer

    def close(self) -> None:
        """Flush and close the event file (done at the end of ``fit``)."""
        if self._writer is not None:
            self._writer.close()
            self._writer = None

    def __enter__(self) -> TensorBoardLogger:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    # -------------------------------------------------------------------------- callbacks

    def on_train_begin(self, logs=None):
        self._open()

    def on_train_end(self, logs=None):
        if self.close_at_end:
            self.close()
        elif self._writer is not None:
            self._writer.flush()

    def scalars(self, logs: Mapping[str, Any] | None) -> dict[str, float]:
        """The scalars of one epoch: the logs' numbers (renamed), the learning rates, then
        ``values()``'s numbers."""
        out: dict[str, float] = {}
        for key in sorted(logs or {}):
            number = _number(logs[key])
            if number is not None:
                out[self.rename.get(key, key)] = number
        for attribute, name in OPTIMIZERS:
            rate = _learning_rate(getattr(self.model, attribute, None))
            if rate is not None and name not in out:
                out[name] = rate
        if self.values is not None:
            for key, value in dict(self.values()).items():
                number = _number(value)
                if number is not None:
                    out[key] = number
        return out

    def write(self, step: int, scalars: Mapping[str, Any]) -> None:
        """Write ``scalars``' numbers at ``step`` (e.g. a final test accuracy after ``fit``)."""
        writer = self._open()
        with writer.as_default(step=int(step)):
            for name, value in scalars.items():
                number = _number(value)
                if number is not None:
                    tf.summary.scalar(name, number)
        writer.flush()

    def on_epoch_end(self, epoch, logs=None):
        writer = self._open()
        step = int(epoch) + 1
        with writer.as_default(step=step):
            for name, value in self.scalars(logs).items():
                tf.summary.scalar(name, value)
            if self.alphas:
                weights = alpha_weights(self.model)
                for cell, matrix in weights.items():
                    tf.summary.image(f"alphas/{cell}",
                                     alpha_heat_map(matrix, self.scale)[None], max_outputs=1)
                if weights and not self._legend_written:
                    self._write_legend(next(iter(weights.values())).shape[0])
        writer.flush()

    def _write_legend(self, num_edges: int) -> None:
        ops = list(getattr(self.model, "op_names", ()) or ())
        rows = "; ".join(f"row {i}: {label}" for i, label in enumerate(edge_labels(num_edges)))
        cols = "; ".join(f"column {i}: {op}" for i, op in enumerate(ops)) or "the op set's order"
        tf.summary.text("alphas/legend",
                        f"Softmax of the alphas over the operations, black 0, white 1 "
                        f"({self.scale} pixels per entry). Rows (edges, state <- input): "
                        f"{rows}. Columns (operations): {cols}.")
        self._legend_written = True
