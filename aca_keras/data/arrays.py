"""Checking and converting in-memory image and label arrays.

What every source goes through in :func:`~aca_keras.data.load`: :func:`as_images` (``(N, H, W,
C)`` raw pixel values, ``uint8`` or ``float32`` on the 0-255 scale; 0-1 floats are scaled with
a ``UserWarning``; negative or larger values are rejected), :func:`as_labels` (``(N,)``
``int32`` class indices), :func:`holdout` (a fixed-seed test split), :func:`channel_stats`
(per-channel mean/std on the 0-1 scale), :func:`empty_classes` (classes without a single
label) and :func:`split_digest` (the checksum zoo entries record).
"""

from __future__ import annotations

import hashlib
import math
import warnings
from typing import Any

import numpy as np
import tensorflow as tf

from aca_keras.errors import DataError

__all__ = [
    "ALLOWED_CHANNELS",
    "HOLDOUT_SEED",
    "MIN_IMAGE_SIZE",
    "as_images",
    "as_labels",
    "channel_stats",
    "empty_classes",
    "holdout",
    "split_digest",
]

#: Seed of the permutation that :func:`holdout` draws the test split from.
HOLDOUT_SEED = 0
#: Channels an image may have (grey, RGB, RGBA).
ALLOWED_CHANNELS = (1, 3, 4)
#: Smallest height/width accepted.
MIN_IMAGE_SIZE = 4


def as_images(x: Any, what: str) -> np.ndarray:
    """(N, H, W[, C]) images -> (N, H, W, C) uint8 or float32 on the 0-255 scale."""
    if isinstance(x, tf.Tensor):
        x = x.numpy()
    try:
        x = np.asarray(x)
    except Exception as error:
        raise DataError(f"The {what} could not be turned into a numpy array ({error}); give an "
                        "array shaped (N, H, W) or (N, H, W, C).") from error
    if x.dtype == object or not (np.issubdtype(x.dtype, np.number) or x.dtype == np.bool_):
        raise DataError(f"The {what} must be a numeric array shaped (N, H, W) or (N, H, W, C); "
                        f"got dtype {x.dtype} (images of different sizes? resize them first).")
    if x.ndim == 3:
        x = x[..., None]
    if x.ndim != 4:
        raise DataError(f"The {what} must be shaped (N, H, W) for grey images or (N, H, W, C); "
                        f"got shape {x.shape} ({x.ndim}-D). Reshape flat vectors to images, e.g. "
                        "x.reshape(-1, 28, 28).")
    if len(x) == 0:
        raise DataError(f"The {what} are empty (0 images); an empty dataset cannot be used.")
    channels = x.shape[-1]
    if channels not in ALLOWED_CHANNELS:
        hint = ""
        if x.shape[1] in ALLOWED_CHANNELS:
            hint = (" It looks channels-first: use np.transpose(x, (0, 2, 3, 1)) to make it "
                    "channels-last.")
        raise DataError(f"The {what} have {channels} channels (shape {x.shape}); expected "
                        f"channels-last images with {' or '.join(map(str, ALLOWED_CHANNELS))} "
                        f"channels.{hint}")
    if min(x.shape[1], x.shape[2]) < MIN_IMAGE_SIZE:
        raise DataError(f"The {what} are {x.shape[1]}x{x.shape[2]}; images must be at least "
                        f"{MIN_IMAGE_SIZE}x{MIN_IMAGE_SIZE} (shape (N, H, W, C), got {x.shape}).")
    if x.dtype == np.uint8:
        return x
    if x.dtype == np.bool_ or np.issubdtype(x.dtype, np.integer):
        low, high = int(x.min()), int(x.max())
        if low < 0 or high > 255:
            raise DataError(f"The {what} hold integer values from {low} to {high}; pixel values "
                            "must lie in 0..255. Rescale them to 0..255 (uint8) first.")
        return x.astype(np.uint8)
    x = x.astype(np.float32)
    if not np.all(np.isfinite(x)):
        raise DataError(f"The {what} contain NaN or infinite values; fix or drop those images.")
    low, high = float(x.min()), float(x.max())
    if low < 0.0 or high > 255.0:
        raise DataError(f"The {what} hold values from {low:.3g} to {high:.3g}; expected raw pixel "
                        "values in 0..255 (or 0..1). Pass un-normalised images: the models "
                        "scale and normalise in their first layers.")
    if high <= 1.0:
        warnings.warn(f"The {what} are floats with maximum {high:.3g} <= 1.0: taking them to be "
                      "on the 0-1 scale and multiplying by 255. Pass 0-255 values to avoid "
                      "this.", UserWarning, stacklevel=3)
        x = x * np.float32(255.0)
    return x


def as_labels(y: Any, count: int, what: str) -> np.ndarray:
    """(N,) or (N, 1) integer labels -> (N,) int32, checked non-negative."""
    if isinstance(y, tf.Tensor):
        y = y.numpy()
    y = np.asarray(y)
    if y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]
    if y.ndim == 2 and y.shape[1] > 1:
        raise DataError(f"The {what} are shaped {y.shape}: one-hot or multi-label? Give class "
                        "indices shaped (N,), e.g. y.argmax(axis=1).")
    if y.ndim != 1:
        raise DataError(f"The {what} must be class indices shaped (N,), got shape {y.shape}.")
    if len(y) != count:
        raise DataError(f"There are {count} images but {len(y)} {what}: x and y must have the "
                        "same length.")
    if y.dtype == np.bool_:
        y = y.astype(np.int64)
    if np.issubdtype(y.dtype, np.floating):
        if not np.all(np.isfinite(y)) or not np.all(np.equal(np.floor(y), y)):
            raise DataError(f"The {what} are non-integer floats; labels must be integer class "
                            "indices 0..num_classes-1.")
        y = y.astype(np.int64)
    if not np.issubdtype(y.dtype, np.integer):
        raise DataError(f"The {what} have dtype {y.dtype}; labels must be integer class indices "
                        "0..num_classes-1 (map names to indices first, e.g. "
                        "np.unique(y, return_inverse=True)).")
    if len(y) and int(y.min()) < 0:
        raise DataError(f"The {what} include the negative label {int(y.min())}; labels must be "
                        "class indices 0..num_classes-1.")
    if len(y) and int(y.max()) > np.iinfo(np.int32).max:
        raise DataError(f"The {what} include the label {int(y.max())}, too large for a class "
                        "index.")
    return y.astype(np.int32)


def empty_classes(y: np.ndarray, num_classes: int) -> tuple[int, ...]:
    """The class indices in ``0..num_classes-1`` that no label of ``y`` names, ascending.

    ``y`` holds class indices checked by :func:`as_labels` (non-negative); labels at or above
    ``num_classes`` are ignored here (:func:`~aca_keras.data.load` rejects them separately).
    """
    y = np.asarray(y, dtype=np.int64)
    counts = np.bincount(y[y < num_classes], minlength=num_classes)
    return tuple(int(c) for c in np.flatnonzero(counts == 0))


def split_digest(x: np.ndarray, y: np.ndarray) -> str:
    """sha256 of a split as loaded: its images (uint8 when 8-bit, else float32), then its
    labels (int32), C order. Zoo entries record it to check that a rebuilt split is the one
    a metric was measured on."""
    x = np.asarray(x)
    x = x if x.dtype == np.uint8 else x.astype(np.float32)
    digest = hashlib.sha256(np.ascontiguousarray(x).tobytes())
    digest.update(np.ascontiguousarray(np.asarray(y, dtype=np.int32)).tobytes())
    return digest.hexdigest()


def holdout(x: np.ndarray, y: np.ndarray, fraction: float):
    """Hold out ``fraction`` of (x, y) as a test set (fixed seed; original order kept)."""
    n = len(x)
    n_test = int(math.floor(fraction * n + 0.5))
    if n_test < 1 or n_test > n - 1:
        raise DataError(f"Cannot hold out a fraction {fraction} of {n} images as a test set: one "
                        "part would be empty.")
    order = np.random.default_rng(HOLDOUT_SEED).permutation(n)
    test_idx, train_idx = np.sort(order[:n_test]), np.sort(order[n_test:])
    return x[train_idx], y[train_idx], x[test_idx], y[test_idx]


def channel_stats(x: np.ndarray, chunk: int = 2048) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and (population) std of ``(N, H, W, C)`` raw images, on the 0-1 scale."""
    x = np.asarray(x)
    channels = x.shape[-1]
    total = np.zeros(channels, np.float64)
    total_sq = np.zeros(channels, np.float64)
    count = 0
    for start in range(0, len(x), chunk):
        part = x[start:start + chunk].reshape(-1, channels).astype(np.float64) / 255.0
        total += part.sum(axis=0)
        total_sq += np.square(part).sum(axis=0)
        count += part.shape[0]
    if count == 0:
        raise DataError("Cannot compute statistics of an empty image array.")
    mean = total / count
    std = np.sqrt(np.maximum(total_sq / count - np.square(mean), 0.0))
    if np.any(std == 0):
        warnings.warn("Some channel is constant over the training images (std 0); using std 1 "
                      "for it.", UserWarning, stacklevel=2)
        std = np.where(std == 0, 1.0, std)
    return tuple(float(m) for m in mean), tuple(float(s) for s in std)
