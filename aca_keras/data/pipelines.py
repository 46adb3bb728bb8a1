"""Deterministic batched ``tf.data`` pipelines over in-memory images.

The order of epoch ``e`` is a permutation computed from ``(seed, e)`` alone, and augmentation
draws from stateless random ops keyed by ``(seed, e, step in epoch)``, so a pipeline built with
``start_epoch=k`` yields exactly what epochs ``k..`` of a pipeline built with ``start_epoch=0``
yield. A pipeline holds all its epochs back to back; iterate it once with ``steps_per_epoch``
steps per epoch (what ``model.fit(dataset, epochs=E, initial_epoch=k, steps_per_epoch=steps)``
does). :class:`~aca_keras.data.DataBundle`'s ``*_pipeline`` methods build them; the argument
checks they share live here too.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np
import tensorflow as tf

from aca_keras.data.augment import augment_batch, crop_padding
from aca_keras.errors import DataError
from aca_keras.space.validation import is_int

__all__ = [
    "STREAM_ALPHA",
    "STREAM_TRAIN",
    "STREAM_WEIGHT",
    "SearchData",
    "check_batch_size",
    "check_epochs",
    "check_seed",
    "effective_batch_size",
    "index_batches",
    "test_batches",
]

# Random streams of the pipelines (part of the stateless keys; changing them changes data).
STREAM_TRAIN = 1
STREAM_WEIGHT = 2
STREAM_ALPHA = 3
_PURPOSE_ORDER = 0
_PURPOSE_AUGMENT = 1


@dataclass(frozen=True)
class SearchData:
    """The zipped weight-train / alpha-validation pipeline of a DARTS search.

    ``dataset`` yields ``((x_w, y_w), (x_a, y_a))`` for epochs ``start_epoch..epochs-1``
    back to back, ``steps_per_epoch`` batches per epoch; ``batch_size`` is the batch size
    actually used; ``weight_size``/``alpha_size`` are the sizes of the two halves.
    """

    dataset: tf.data.Dataset
    steps_per_epoch: int
    batch_size: int
    weight_size: int
    alpha_size: int


def index_batches(x_train: np.ndarray, y_train: np.ndarray, subsets: list[np.ndarray],
                  streams: list[int], *, seed: int, batch_size: int, steps: int, epochs: int,
                  start_epoch: int, augment: bool, flip: bool, cutout: int) -> tf.data.Dataset:
    """Deterministic batched pipeline over index subsets of ``(x_train, y_train)``.

    Yields ``(x, y)`` for one subset, ``((x1, y1), (x2, y2))`` for two: ``steps`` batches of
    ``batch_size`` per epoch, epochs ``start_epoch..epochs-1``, subset ``i`` ordered and
    augmented from random stream ``streams[i]``. ``augment`` applies pad-and-crop, and
    horizontal flips when ``flip`` as well; ``cutout > 0`` zeroes a ``cutout x cutout``
    square per image whatever ``augment``.
    """
    height, width = int(x_train.shape[1]), int(x_train.shape[2])
    pad = crop_padding(height, width) if augment else 0
    flip = bool(augment and flip)
    per_epoch = steps * batch_size
    with tf.device("/cpu:0"):
        x_all = tf.constant(x_train)
        y_all = tf.constant(y_train)
        subset_tensors = [tf.constant(np.asarray(s, dtype=np.int64)) for s in subsets]

    def epoch_indices(epoch):
        parts = []
        for subset, stream in zip(subset_tensors, streams):
            key = _epoch_key(seed, stream, epoch)
            order_key = tf.random.experimental.stateless_fold_in(key, _PURPOSE_ORDER)
            order = tf.random.experimental.stateless_shuffle(
                tf.range(int(subset.shape[0]), dtype=tf.int64), seed=order_key)
            chosen = tf.gather(subset, order[:per_epoch])
            parts.append(tf.reshape(chosen, [steps, batch_size]))
        return tf.data.Dataset.from_tensor_slices(
            (tuple(parts), tf.fill([steps], epoch), tf.range(steps, dtype=tf.int64)))

    def make_batch(parts, epoch, step):
        out = []
        for idx, stream in zip(parts, streams):
            x = tf.cast(tf.gather(x_all, idx), tf.float32)
            if pad or flip or cutout:
                key = tf.random.experimental.stateless_fold_in(
                    tf.random.experimental.stateless_fold_in(
                        _epoch_key(seed, stream, epoch), _PURPOSE_AUGMENT), step)
                x = augment_batch(x, key, pad, flip, cutout)
            out.append((x, tf.gather(y_all, idx)))
        return out[0] if len(out) == 1 else tuple(out)

    dataset = tf.data.Dataset.range(start_epoch, epochs).flat_map(epoch_indices)
    dataset = dataset.map(make_batch, num_parallel_calls=tf.data.AUTOTUNE,
                          deterministic=True)
    dataset = dataset.apply(
        tf.data.experimental.assert_cardinality((epochs - start_epoch) * steps))
    return dataset.prefetch(tf.data.AUTOTUNE)


def test_batches(x: np.ndarray, y: np.ndarray, batch_size: int) -> tf.data.Dataset:
    """Batches ``(x, y)`` in order, last partial batch kept, no augmentation."""
    with tf.device("/cpu:0"):
        x_all = tf.constant(x)
        y_all = tf.constant(y)

    def gather(idx):
        return tf.cast(tf.gather(x_all, idx), tf.float32), tf.gather(y_all, idx)

    dataset = tf.data.Dataset.range(len(x)).batch(batch_size)
    dataset = dataset.map(gather, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    return dataset.prefetch(tf.data.AUTOTUNE)


def _epoch_key(seed: int, stream: int, epoch: tf.Tensor) -> tf.Tensor:
    """Stateless key of (seed, stream, epoch)."""
    base = tf.constant([seed, stream], dtype=tf.int64)
    return tf.random.experimental.stateless_fold_in(base, tf.cast(epoch, tf.int64))


# -- argument checks -------------------------------------------------------------------


def check_seed(seed: Any) -> int:
    """``seed`` as an int; :class:`DataError` unless it is an integer in ``0..2**63-1``."""
    if not is_int(seed) or not (
            0 <= int(seed) < 2**63):
        raise DataError(f"seed must be a non-negative integer below 2**63, got {seed!r}.")
    return int(seed)


def check_batch_size(batch_size: Any) -> int:
    """``batch_size`` as an int; :class:`DataError` unless it is a positive integer."""
    if not is_int(batch_size) or (
            batch_size < 1):
        raise DataError(f"batch_size must be a positive integer, got {batch_size!r}.")
    return int(batch_size)


def effective_batch_size(batch_size: Any, available: int, what: str) -> int:
    """``batch_size``, or ``available`` with a ``UserWarning`` (attributed to the caller of
    the caller) when ``what`` holds fewer images than one batch."""
    batch_size = check_batch_size(batch_size)
    if batch_size > available:
        warnings.warn(f"batch_size {batch_size} is larger than {what} ({available} images); "
                      f"using batch_size={available}.", UserWarning, stacklevel=3)
        return available
    return batch_size


def check_epochs(epochs: Any, start_epoch: Any) -> None:
    """:class:`DataError` unless ``epochs >= 1`` and ``0 <= start_epoch <= epochs``."""
    for value, label in ((epochs, "epochs"), (start_epoch, "start_epoch")):
        if not is_int(value):
            raise DataError(f"{label} must be an integer, got {value!r}.")
    if epochs < 1 or not 0 <= start_epoch <= epochs:
        raise DataError(f"Need epochs >= 1 and 0 <= start_epoch <= epochs, got epochs={epochs}, "
                        f"start_epoch={start_epoch}.")
