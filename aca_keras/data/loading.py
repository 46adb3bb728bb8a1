"""Data sources, in-memory data bundles and deterministic ``tf.data`` pipelines.

One entry point, :func:`load`, turns any supported source into a :class:`DataBundle` (numpy
arrays in memory, raw pixel values 0-255, per-channel statistics on the 0-1 scale):

* a known name: ``"cifar10"``, ``"cifar100"``, ``"svhn_cropped"`` (alias ``"svhn"``),
  ``"mnist"``, ``"fashion_mnist"`` through TensorFlow Datasets, or ``"digits"`` (scikit-learn's
  bundled 8x8 handwritten digits: real data, no download, the offline default);
* ``"tfds:<name>"``: any other TFDS image-classification set with ``(image, label)`` pairs;
* numpy arrays ``(x, y)`` or a mapping with keys ``x`` and ``y``;
* a path to an ``.npz`` file with keys ``x`` and ``y`` (optionally ``x_test``, ``y_test``);
* a finite ``tf.data.Dataset`` of ``(image, label)`` pairs (batched or not);
* a directory of images with one sub-folder per class (or ``train/`` and ``test/`` folders
  that each hold one sub-folder per class).

Pixel values: ``uint8`` images are kept as they are; other integer images must lie in
0..255; float images are taken to be on the 0-255 scale, except when their maximum is at
most 1.0: then they are taken to be on the 0-1 scale, multiplied by 255, and a
``UserWarning`` says so. Negative values or values above 255 are rejected (the images look
normalised already; the models normalise in their first layers).

Pipelines are deterministic: the order of epoch ``e`` is a permutation computed from
``(seed, e)`` alone, and augmentation draws from stateless random ops keyed by
``(seed, e, step in epoch)``, so a pipeline built with ``start_epoch=k`` yields exactly what
epochs ``k..`` of a pipeline built with ``start_epoch=0`` yield. A pipeline holds all its
epochs back to back; iterate it once with ``steps_per_epoch`` steps per epoch (what
``model.fit(dataset, epochs=E, initial_epoch=k, steps_per_epoch=steps)`` does).

Named TFDS sets are read with ``builder.as_dataset`` in batches rather than with
``batch_size=-1``: the latter batches by ``sys.maxsize`` when split sizes are unknown (as
under ``tfds.testing.mock_data``) and aborts the process inside TensorFlow.
"""

from __future__ import annotations

import math
import os
import ssl
import threading
import urllib.error
import urllib.parse
import urllib.request
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import tensorflow as tf

from aca_keras.errors import DataError, DatasetDownloadError, UnknownDatasetError
from aca_keras.layers.preprocessing import preprocessing_layers

__all__ = [
    "KNOWN_DATASETS",
    "DataBundle",
    "KnownDataset",
    "SearchData",
    "channel_stats",
    "known_datasets",
    "load",
    "preprocessing_layers",
]


# --------------------------------------------------------------------------------------
# Known data sets
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class KnownDataset:
    """A data set that :func:`load` knows by name.

    ``mean``/``std`` are the published per-channel statistics of the training split on the
    0-1 scale (``None``: computed from the training data). ``flip`` says whether a horizontal
    flip is a label-preserving augmentation. ``probe_url`` is the download host checked for
    reachability before TFDS is asked to download. ``class_names`` override the names in the
    TFDS metadata (which are placeholders until the data set is prepared).
    """

    name: str
    tfds_name: str | None
    mean: tuple[float, ...] | None
    std: tuple[float, ...] | None
    flip: bool
    probe_url: str | None = None
    class_names: tuple[str, ...] | None = None
    description: str = ""


CIFAR10_CLASS_NAMES: tuple[str, ...] = (
    "airplane", "automobile", "bird", "cat", "deer",
    "dog", "frog", "horse", "ship", "truck",
)

CIFAR10 = KnownDataset(
    name="cifar10", tfds_name="cifar10",
    mean=(0.4914, 0.4822, 0.4465), std=(0.2470, 0.2435, 0.2616), flip=True,
    probe_url="https://www.cs.toronto.edu/~kriz/", class_names=CIFAR10_CLASS_NAMES,
    description="CIFAR-10: 50,000 + 10,000 colour images 32x32, 10 classes",
)
CIFAR100 = KnownDataset(
    name="cifar100", tfds_name="cifar100",
    mean=(0.5071, 0.4865, 0.4409), std=(0.2673, 0.2564, 0.2762), flip=True,
    probe_url="https://www.cs.toronto.edu/~kriz/",
    description="CIFAR-100: 50,000 + 10,000 colour images 32x32, 100 fine classes",
)
SVHN = KnownDataset(
    name="svhn_cropped", tfds_name="svhn_cropped",
    mean=(0.4377, 0.4438, 0.4728), std=(0.1980, 0.2010, 0.1970), flip=False,
    probe_url="http://ufldl.stanford.edu/housenumbers/",
    description="SVHN (cropped digits): 73,257 + 26,032 colour images 32x32, 10 classes",
)
MNIST = KnownDataset(
    name="mnist", tfds_name="mnist",
    mean=(0.1307,), std=(0.3081,), flip=False,
    probe_url="https://storage.googleapis.com/cvdf-datasets/mnist/",
    description="MNIST: 60,000 + 10,000 grey images 28x28, 10 digits",
)
FASHION_MNIST = KnownDataset(
    name="fashion_mnist", tfds_name="fashion_mnist",
    mean=(0.2860,), std=(0.3530,), flip=True,
    probe_url="http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
    description="Fashion-MNIST: 60,000 + 10,000 grey images 28x28, 10 clothing classes",
)
DIGITS = KnownDataset(
    name="digits", tfds_name=None, mean=None, std=None, flip=False,
    description="scikit-learn digits: 1,797 grey images 8x8, 10 digits, bundled (offline)",
)

#: Known data sets by name.
KNOWN_DATASETS: dict[str, KnownDataset] = {
    d.name: d for d in (CIFAR10, CIFAR100, SVHN, MNIST, FASHION_MNIST, DIGITS)
}
#: Other spellings accepted by :func:`load`.
DATASET_ALIASES: dict[str, str] = {"svhn": "svhn_cropped", "fashion-mnist": "fashion_mnist"}

#: Prefix of names loaded from any TFDS data set, e.g. ``"tfds:stl10"``.
TFDS_PREFIX = "tfds:"
#: Share of the digits set held out as its test split, and the seed of that split.
DIGITS_TEST_FRACTION = 0.2
HOLDOUT_SEED = 0
#: Channels an image may have (grey, RGB, RGBA).
ALLOWED_CHANNELS = (1, 3, 4)
#: Smallest height/width accepted.
MIN_IMAGE_SIZE = 4
#: Reachability check of a download host: seconds before giving up.
PROBE_TIMEOUT_S = 5.0
#: Generic host probed for ``tfds:<name>`` sets whose download host is unknown.
GENERIC_PROBE_URL = "https://storage.googleapis.com/"
#: File name endings read from image folders.
IMAGE_EXTENSIONS = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp"})
# a class folder with fewer images than this gets a warning
MIN_IMAGES_PER_CLASS = 10

# Random streams of the pipelines (part of the stateless keys; changing them changes data).
_STREAM_TRAIN = 1
_STREAM_WEIGHT = 2
_STREAM_ALPHA = 3
_PURPOSE_ORDER = 0
_PURPOSE_AUGMENT = 1

_GREY_MODES = frozenset({"1", "L", "LA", "I", "I;16", "I;16B", "I;16L", "I;16N", "F"})


def known_datasets() -> tuple[str, ...]:
    """Names accepted by :func:`load` (besides aliases and ``tfds:<name>``)."""
    return tuple(KNOWN_DATASETS)


# --------------------------------------------------------------------------------------
# Bundle and pipelines
# --------------------------------------------------------------------------------------


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


@dataclass(frozen=True, eq=False, repr=False)
class DataBundle:
    """An image-classification data set held in memory.

    Images are ``(N, H, W, C)`` arrays of raw pixel values (``uint8``, or ``float32`` on the
    0-255 scale); labels are ``(N,)`` ``int32`` class indices. ``mean``/``std`` are per
    channel on the 0-1 scale (what :func:`preprocessing_layers` needs). ``flip`` says whether
    horizontal flips are a sensible augmentation. The arrays are read-only views.
    Build bundles with :func:`load`; the constructor only checks consistency.
    """

    name: str
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray | None
    y_test: np.ndarray | None
    input_shape: tuple[int, int, int]
    num_classes: int
    class_names: tuple[str, ...]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    flip: bool = False

    def __post_init__(self) -> None:
        for xs, ys, part in ((self.x_train, self.y_train, "train"),
                             (self.x_test, self.y_test, "test")):
            if part == "test" and xs is None and ys is None:
                continue
            if xs is None or ys is None:
                raise DataError(f"DataBundle {self.name!r}: x_{part} and y_{part} must both be "
                                "given or both be None.")
            if not isinstance(xs, np.ndarray) or xs.ndim != 4 or xs.dtype not in (
                    np.uint8, np.float32):
                raise DataError(f"DataBundle {self.name!r}: x_{part} must be a uint8 or float32 "
                                "array shaped (N, H, W, C); build bundles with data.load().")
            if not isinstance(ys, np.ndarray) or ys.ndim != 1 or ys.dtype != np.int32:
                raise DataError(f"DataBundle {self.name!r}: y_{part} must be an int32 array "
                                "shaped (N,); build bundles with data.load().")
            if len(xs) != len(ys) or len(xs) == 0:
                raise DataError(f"DataBundle {self.name!r}: x_{part} and y_{part} must be "
                                f"non-empty and of equal length, got {len(xs)} and {len(ys)}.")
            if tuple(xs.shape[1:]) != tuple(self.input_shape):
                raise DataError(f"DataBundle {self.name!r}: x_{part} images are "
                                f"{xs.shape[1:]}, input_shape is {self.input_shape}.")
        if len(self.class_names) != self.num_classes:
            raise DataError(f"DataBundle {self.name!r}: {len(self.class_names)} class names "
                            f"for {self.num_classes} classes.")
        channels = self.input_shape[-1]
        if len(self.mean) != channels or len(self.std) != channels:
            raise DataError(f"DataBundle {self.name!r}: mean/std need {channels} values "
                            f"(one per channel), got {len(self.mean)} and {len(self.std)}.")
        object.__setattr__(self, "input_shape", tuple(int(d) for d in self.input_shape))
        object.__setattr__(self, "class_names", tuple(str(c) for c in self.class_names))
        object.__setattr__(self, "mean", tuple(float(m) for m in self.mean))
        object.__setattr__(self, "std", tuple(float(s) for s in self.std))
        object.__setattr__(self, "flip", bool(self.flip))
        for field in ("x_train", "y_train", "x_test", "y_test"):
            array = getattr(self, field)
            if array is not None:
                view = array.view()
                view.flags.writeable = False
                object.__setattr__(self, field, view)

    def __repr__(self) -> str:
        test = f", num_test={self.num_test}" if self.x_test is not None else ""
        return (f"DataBundle(name={self.name!r}, num_train={self.num_train}{test}, "
                f"input_shape={self.input_shape}, num_classes={self.num_classes}, "
                f"flip={self.flip})")

    @property
    def num_train(self) -> int:
        """Number of training images."""
        return int(len(self.x_train))

    @property
    def num_test(self) -> int:
        """Number of test images (0 when there is no test set)."""
        return 0 if self.x_test is None else int(len(self.x_test))

    def preprocessing_layers(self) -> list:
        """``preprocessing_layers(self.mean, self.std)``."""
        return preprocessing_layers(self.mean, self.std)

    # -- splits ------------------------------------------------------------------------

    def split_indices(self, fraction: float = 0.5, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
        """Indices into the training set of the weight-train and alpha-validation parts.

        A permutation seeded by ``seed``; the first ``round(fraction * N)`` indices are the
        weight-train part, the rest the alpha-validation part. Both parts are non-empty.
        """
        fraction = float(fraction)
        if not 0.0 < fraction < 1.0:
            raise DataError(f"split fraction must be strictly between 0 and 1, got {fraction}.")
        n = self.num_train
        n_weight = int(math.floor(fraction * n + 0.5))
        if n_weight < 1 or n_weight > n - 1:
            raise DataError(
                f"Cannot split {n} training images with fraction {fraction}: one part would be "
                "empty. Use more training images or a fraction nearer 0.5.")
        order = np.random.default_rng(_check_seed(seed)).permutation(n)
        return order[:n_weight], order[n_weight:]

    def split(self, fraction: float = 0.5, seed: int = 0
              ) -> tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]:
        """The DARTS split of the training set: ``((x_w, y_w), (x_a, y_a))``.

        ``fraction`` is the share of the weight-train part; the order comes from a
        permutation seeded by ``seed``. Raises :class:`DataError` if a part would be empty.
        """
        weight, alpha = self.split_indices(fraction, seed)
        return ((self.x_train[weight], self.y_train[weight]),
                (self.x_train[alpha], self.y_train[alpha]))

    # -- pipelines ---------------------------------------------------------------------

    def search_pipelines(self, batch_size: int = 64, train_fraction: float = 0.5, seed: int = 0,
                         epochs: int = 1, start_epoch: int = 0, augment: bool = True
                         ) -> SearchData:
        """Zipped weight-train / alpha-validation batches for a bi-level search.

        Each epoch draws a fresh seeded permutation of each half and takes
        ``steps_per_epoch = min(len(weight), len(alpha)) // batch_size`` batches from each
        (remainders are dropped). When a half holds fewer than ``batch_size`` images, the
        batch size becomes that half's size and a ``UserWarning`` says so. ``augment``
        applies pad-and-crop (and horizontal flips when ``self.flip``) to both halves, as
        DARTS does.
        """
        seed = _check_seed(seed)
        _check_epochs(epochs, start_epoch)
        weight, alpha = self.split_indices(train_fraction, seed)
        smallest = min(len(weight), len(alpha))
        batch_size = _effective_batch_size(batch_size, smallest, "the smaller search half")
        steps = smallest // batch_size
        dataset = self._pipeline([weight, alpha], [_STREAM_WEIGHT, _STREAM_ALPHA], seed,
                                 batch_size, steps, epochs, start_epoch, augment, 0)
        return SearchData(dataset=dataset, steps_per_epoch=steps, batch_size=batch_size,
                          weight_size=len(weight), alpha_size=len(alpha))

    def train_pipeline(self, batch_size: int, seed: int = 0, epochs: int = 1,
                       start_epoch: int = 0, augment: bool = True, cutout: int = 0
                       ) -> tuple[tf.data.Dataset, int]:
        """Batches ``(x, y)`` over the whole training set: ``(dataset, steps_per_epoch)``.

        Epochs ``start_epoch..epochs-1`` back to back, each a fresh seeded permutation,
        ``N // batch_size`` batches per epoch (remainder dropped; a batch size larger than
        ``N`` becomes ``N`` with a ``UserWarning``). ``augment`` applies pad-and-crop (and
        horizontal flips when ``self.flip``); ``cutout > 0`` zeroes a random
        ``cutout x cutout`` square per image (clipped at the borders), whatever ``augment``.
        """
        seed = _check_seed(seed)
        _check_epochs(epochs, start_epoch)
        if isinstance(cutout, bool) or not isinstance(cutout, (int, np.integer)) or cutout < 0:
            raise DataError(f"cutout must be a non-negative integer (0 = off), got {cutout!r}.")
        batch_size = _effective_batch_size(batch_size, self.num_train, "the training set")
        steps = self.num_train // batch_size
        dataset = self._pipeline([np.arange(self.num_train)], [_STREAM_TRAIN], seed, batch_size,
                                 steps, epochs, start_epoch, augment, int(cutout))
        return dataset, steps

    def test_pipeline(self, batch_size: int) -> tf.data.Dataset | None:
        """Batches ``(x, y)`` of the test set in order, last partial batch kept, no
        augmentation; ``None`` when the bundle has no test set."""
        if self.x_test is None or self.y_test is None:
            return None
        batch_size = _check_batch_size(batch_size)
        with tf.device("/cpu:0"):
            x_all = tf.constant(self.x_test)
            y_all = tf.constant(self.y_test)

        def gather(idx):
            return tf.cast(tf.gather(x_all, idx), tf.float32), tf.gather(y_all, idx)

        dataset = tf.data.Dataset.range(self.num_test).batch(batch_size)
        dataset = dataset.map(gather, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
        return dataset.prefetch(tf.data.AUTOTUNE)

    def _pipeline(self, subsets: list[np.ndarray], streams: list[int], seed: int,
                  batch_size: int, steps: int, epochs: int, start_epoch: int, augment: bool,
                  cutout: int) -> tf.data.Dataset:
        """Deterministic batched pipeline over index subsets of the training set.

        Yields ``(x, y)`` for one subset, ``((x1, y1), (x2, y2))`` for two.
        """
        height, width, _ = self.input_shape
        pad = max(1, min(height, width) // 8) if augment else 0
        flip = bool(augment and self.flip)
        per_epoch = steps * batch_size
        with tf.device("/cpu:0"):
            x_all = tf.constant(self.x_train)
            y_all = tf.constant(self.y_train)
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
                    x = _augment_batch(x, key, pad, flip, cutout)
                out.append((x, tf.gather(y_all, idx)))
            return out[0] if len(out) == 1 else tuple(out)

        dataset = tf.data.Dataset.range(start_epoch, epochs).flat_map(epoch_indices)
        dataset = dataset.map(make_batch, num_parallel_calls=tf.data.AUTOTUNE,
                              deterministic=True)
        dataset = dataset.apply(
            tf.data.experimental.assert_cardinality((epochs - start_epoch) * steps))
        return dataset.prefetch(tf.data.AUTOTUNE)


def _epoch_key(seed: int, stream: int, epoch: tf.Tensor) -> tf.Tensor:
    """Stateless key of (seed, stream, epoch)."""
    base = tf.constant([seed, stream], dtype=tf.int64)
    return tf.random.experimental.stateless_fold_in(base, tf.cast(epoch, tf.int64))


def _augment_batch(x: tf.Tensor, key: tf.Tensor, pad: int, flip: bool, cutout: int) -> tf.Tensor:
    """Pad-and-crop, horizontal flip and cutout of a batch, all from stateless ops."""
    batch, height, width = int(x.shape[0]), int(x.shape[1]), int(x.shape[2])
    keys = tf.random.experimental.stateless_split(key, 5)
    if pad:
        padded = tf.pad(x, [[0, 0], [pad, pad], [pad, pad], [0, 0]])
        dy = tf.random.stateless_uniform([batch], seed=keys[0], minval=0, maxval=2 * pad + 1,
                                         dtype=tf.int32)
        dx = tf.random.stateless_uniform([batch], seed=keys[1], minval=0, maxval=2 * pad + 1,
                                         dtype=tf.int32)
        rows = dy[:, None] + tf.range(height)[None, :]
        cols = dx[:, None] + tf.range(width)[None, :]
        x = tf.gather(padded, rows, axis=1, batch_dims=1)
        x = tf.gather(x, cols, axis=2, batch_dims=1)
    if flip:
        mirror = tf.random.stateless_uniform([batch], seed=keys[2]) < 0.5
        x = tf.where(mirror[:, None, None, None], tf.reverse(x, axis=[2]), x)
    if cutout:
        cy = tf.random.stateless_uniform([batch], seed=keys[3], minval=0, maxval=height,
                                         dtype=tf.int32)
        cx = tf.random.stateless_uniform([batch], seed=keys[4], minval=0, maxval=width,
                                         dtype=tf.int32)
        top = cy - cutout // 2
        left = cx - cutout // 2
        r = tf.range(height)[None, :]
        c = tf.range(width)[None, :]
        in_rows = (r >= top[:, None]) & (r < top[:, None] + cutout)
        in_cols = (c >= left[:, None]) & (c < left[:, None] + cutout)
        hole = in_rows[:, :, None] & in_cols[:, None, :]
        x = tf.where(hole[..., None], tf.zeros_like(x), x)
    return x


def _check_seed(seed: Any) -> int:
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or not (
            0 <= int(seed) < 2**63):
        raise DataError(f"seed must be a non-negative integer below 2**63, got {seed!r}.")
    return int(seed)


def _check_batch_size(batch_size: Any) -> int:
    if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or (
            batch_size < 1):
        raise DataError(f"batch_size must be a positive integer, got {batch_size!r}.")
    return int(batch_size)


def _effective_batch_size(batch_size: Any, available: int, what: str) -> int:
    batch_size = _check_batch_size(batch_size)
    if batch_size > available:
        warnings.warn(f"batch_size {batch_size} is larger than {what} ({available} images); "
                      f"using batch_size={available}.", UserWarning, stacklevel=3)
        return available
    return batch_size


def _check_epochs(epochs: Any, start_epoch: Any) -> None:
    for value, label in ((epochs, "epochs"), (start_epoch, "start_epoch")):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
            raise DataError(f"{label} must be an integer, got {value!r}.")
    if epochs < 1 or not 0 <= start_epoch <= epochs:
        raise DataError(f"Need epochs >= 1 and 0 <= start_epoch <= epochs, got epochs={epochs}, "
                        f"start_epoch={start_epoch}.")


# --------------------------------------------------------------------------------------
# Normalisation
# --------------------------------------------------------------------------------------


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


# --------------------------------------------------------------------------------------
# load
# --------------------------------------------------------------------------------------


def load(
    source: Any,
    *,
    test: Any = None,
    test_fraction: float | None = None,
    name: str | None = None,
    num_classes: int | None = None,
    class_names: Sequence[str] | None = None,
    flip: bool | None = None,
    data_dir: str | os.PathLike | None = None,
    download: bool = True,
    train_split: str = "train",
    test_split: str | None = "test",
    image_size: tuple[int, int] | None = None,
) -> DataBundle:
    """Load an image-classification data set into a :class:`DataBundle`.

    Args:
        source: a known name (:func:`known_datasets`, aliases ``"svhn"``), ``"tfds:<name>"``,
            a tuple ``(x, y)`` of arrays, a mapping with ``x``/``y`` (and optionally
            ``x_test``/``y_test``), a path to an ``.npz`` file or to an image folder (one
            sub-folder per class, or ``train/`` + ``test/`` each with one per class), or a
            finite ``tf.data.Dataset`` of ``(image, label)`` pairs (unbatched with scalar
            labels, or batched), or a ``DataBundle`` (returned unchanged). A string that is a
            known name is a name even if a same-named file exists; write ``"./digits"`` or
            pass a ``Path`` for the file.
        test: test data for array, mapping, ``.npz``, folder and dataset sources, in any of
            those forms (not for named sets, which bring their own test split).
        test_fraction: hold out this share of the training data (fixed seed, order kept) as
            the test set when the source has none. ``"digits"`` uses 0.2 by default.
        name: display name (defaults: the known name, the file or folder name, ``"arrays"``;
            an ``.npz`` with a generic name such as ``train.npz`` is named after its folder).
        num_classes: number of classes; labels must be below it. Default: from
            ``class_names``, the source's metadata, or the largest label + 1.
        class_names: names of the classes in index order (default: from the source,
            sorted folder names, or ``"0", "1", ...``).
        flip: whether horizontal flips are a sensible augmentation. Default: the known set's
            setting (CIFAR, Fashion-MNIST yes; digits, MNIST, SVHN no), else ``False``.
        data_dir: TFDS data directory holding a prepared copy (named TFDS sets only).
        download: allow TFDS to download a named set that is not prepared. The download
            host is probed first (a few seconds); if it cannot be reached,
            :class:`DatasetDownloadError` is raised instead of TFDS retrying for minutes.
        train_split: TFDS split name of the training data (slicing allowed, e.g.
            ``"train[:10%]"``).
        test_split: TFDS split name of the test data (slicing allowed); ``None`` loads no
            test set.
        image_size: ``(height, width)`` to resize images of a folder to; ``None`` requires
            all images of a folder to share one size.

    Statistics are the published ones for known TFDS sets and are computed on the training
    images otherwise. Errors are :class:`DataError` subclasses that name the problem and the
    fix.
    """
    if isinstance(source, DataBundle):
        return source
    if test_fraction is not None and not 0.0 < float(test_fraction) < 1.0:
        raise DataError(f"test_fraction must be strictly between 0 and 1, got {test_fraction}.")
    if class_names is not None:
        class_names = tuple(str(c) for c in class_names)
        if num_classes is not None and int(num_classes) != len(class_names):
            raise DataError(f"num_classes={num_classes} but {len(class_names)} class_names given.")
        num_classes = len(class_names)
    if num_classes is not None and (isinstance(num_classes, bool) or not isinstance(
            num_classes, (int, np.integer)) or num_classes < 1):
        raise DataError(f"num_classes must be a positive integer, got {num_classes!r}.")

    known: KnownDataset | None = None
    meta_names: tuple[str, ...] | None = None
    if isinstance(source, str) and _is_dataset_name(source):  # Path objects are paths
        if test is not None:
            raise DataError(f"test= is for arrays, .npz files, folders and datasets; the named "
                            f"set {source!r} brings its own test split (see test_split=).")
        known, tfds_name = _resolve_name(source)
        if known is not None and known.name == "digits":
            x, y, meta_names = _load_digits()
            x_test = y_test = None
            if test_fraction is None:
                test_fraction = DIGITS_TEST_FRACTION
        else:
            x, y, x_test, y_test, meta_names = _load_tfds(
                tfds_name, known, data_dir=data_dir, download=download,
                train_split=train_split, test_split=test_split)
        default_name = known.name if known is not None else tfds_name
    else:
        x, y, x_test, y_test, meta_names, default_name = _load_local(source, image_size)
        if test is not None:
            if x_test is not None:
                raise DataError("The source already holds a test set (x_test/y_test or a test/ "
                                "folder); do not pass test= as well.")
            x_test, y_test = _load_local(test, image_size, reference_names=meta_names)[:2]

    x = _as_images(x, "training images")
    y = _as_labels(y, len(x), "training labels")
    if x_test is not None:
        if y_test is None:
            raise DataError("Test images were given without test labels.")
        x_test = _as_images(x_test, "test images")
        y_test = _as_labels(y_test, len(x_test), "test labels")
        if x_test.shape[1:] != x.shape[1:]:
            raise DataError(f"Test images are {x_test.shape[1:]} but training images are "
                            f"{x.shape[1:]}; give both the same height, width and channels.")
        if x_test.dtype != x.dtype:
            x_test = x_test.astype(np.float32)
            x = x.astype(np.float32)

    if test_fraction is not None:
        if x_test is not None:
            raise DataError("test_fraction= holds out part of the training data, but the source "
                            "already has a test set; drop test_fraction=.")
        x, y, x_test, y_test = _holdout(x, y, float(test_fraction))

    if num_classes is None and meta_names is not None:
        num_classes = len(meta_names)
    largest = int(y.max()) if y_test is None else max(int(y.max()), int(y_test.max()))
    if num_classes is None:
        num_classes = largest + 1
    num_classes = int(num_classes)
    if largest >= num_classes:
        raise DataError(f"Labels must be below num_classes={num_classes}, found label {largest}. "
                        "Pass the right num_classes / class_names, or fix the labels.")
    if class_names is None:
        if meta_names is not None and len(meta_names) == num_classes:
            class_names = meta_names
        else:
            class_names = tuple(str(i) for i in range(num_classes))

    if known is not None and known.mean is not None and known.std is not None:
        mean, std = known.mean, known.std
    else:
        mean, std = channel_stats(x)
    if flip is None:
        flip = known.flip if known is not None else False

    return DataBundle(
        name=name or default_name, x_train=x, y_train=y, x_test=x_test, y_test=y_test,
        input_shape=tuple(x.shape[1:]), num_classes=num_classes,
        class_names=tuple(class_names), mean=mean, std=std, flip=bool(flip))


def _is_dataset_name(source: str) -> bool:
    """A string is a data-set name unless it looks like a path."""
    lowered = source.strip().lower()
    if lowered in KNOWN_DATASETS or lowered in DATASET_ALIASES or lowered.startswith(TFDS_PREFIX):
        return True
    looks_like_path = (os.sep in source or "/" in source or Path(source).suffix != ""
                       or Path(source).exists())
    if looks_like_path:
        return False
    raise UnknownDatasetError(
        f"Unknown data set {source!r}. Known names: {', '.join(known_datasets())} "
        f"(aliases: {', '.join(DATASET_ALIASES)}); any TFDS set as 'tfds:<name>'; or pass numpy "
        "arrays (x, y), a path to an .npz with x and y, a folder of images with one sub-folder "
        "per class, or a tf.data.Dataset of (image, label) pairs.")


def _resolve_name(source: str) -> tuple[KnownDataset | None, str]:
    lowered = source.strip().lower()
    if lowered.startswith(TFDS_PREFIX):
        tfds_name = source.strip()[len(TFDS_PREFIX):]
        if not tfds_name:
            raise UnknownDatasetError("'tfds:' needs a data set name, e.g. 'tfds:cifar10'.")
        # Any TFDS name; statistics are computed from the data, not taken from the table.
        return None, tfds_name
    known = KNOWN_DATASETS[DATASET_ALIASES.get(lowered, lowered)]
    return known, known.tfds_name or known.name


# -- named sources ---------------------------------------------------------------------


def _load_digits() -> tuple[np.ndarray, np.ndarray, tuple[str, ...]]:
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = np.rint(np.asarray(digits.images, dtype=np.float64) * (255.0 / 16.0))
    x = np.clip(images, 0, 255).astype(np.uint8)[..., None]
    y = np.asarray(digits.target, dtype=np.int32)
    return x, y, tuple(str(int(n)) for n in digits.target_names)


def _download_reachable(url: str, timeout: float | None = None) -> bool:
    """Whether ``url``'s host answers within ``timeout`` seconds (proxies respected).

    Runs in a daemon thread with a hard deadline, so slow name resolution cannot hang the
    caller. Any HTTP answer (even an error status) or TLS handshake problem counts as
    reachable; failures to resolve or connect do not.
    """
    timeout = PROBE_TIMEOUT_S if timeout is None else float(timeout)
    result: list[bool] = []

    def attempt() -> None:
        try:
            request = urllib.request.Request(url, method="HEAD")
            with urllib.request.urlopen(request, timeout=timeout):
                pass
            result.append(True)
        except urllib.error.HTTPError:
            result.append(True)
        except urllib.error.URLError as error:
            result.append(isinstance(error.reason, ssl.SSLError))
        except ssl.SSLError:
            result.append(True)
        except Exception:  # noqa: BLE001 - any other failure means "not reachable"
            result.append(False)

    thread = threading.Thread(target=attempt, name="aca_keras-download-probe", daemon=True)
    thread.start()
    thread.join(timeout + 1.0)
    return bool(result and result[0])


def _download_error(tfds_name: str, data_dir: Any, reason: str) -> DatasetDownloadError:
    where = f"data_dir={str(data_dir)!r}" if data_dir is not None else (
        "the default TFDS data directory (~/tensorflow_datasets or $TFDS_DATA_DIR)")
    return DatasetDownloadError(
        f"Cannot load data set {tfds_name!r}: it is not prepared in {where}, and {reason}. "
        "Options: pass data_dir= pointing to a prepared TFDS copy (prepare one on a machine with "
        f"internet: tfds.builder({tfds_name!r}, data_dir=...).download_and_prepare()); or pass "
        "the images yourself: numpy arrays load((x, y)), a path to an .npz file with keys x and "
        "y, or a folder of images with one sub-folder per class; or use the bundled offline "
        "set load('digits').")


def _load_tfds(tfds_name: str, known: KnownDataset | None, *, data_dir: Any, download: bool,
               train_split: str, test_split: str | None):
    import tensorflow_datasets as tfds

    try:
        builder = tfds.builder(tfds_name, data_dir=None if data_dir is None else str(data_dir))
    except Exception as error:  # tfds raises DatasetNotFoundError and friends
        raise UnknownDatasetError(
            f"TensorFlow Datasets does not know {tfds_name!r} ({type(error).__name__}). Known "
            f"names here: {', '.join(known_datasets())}; see "
            "https://www.tensorflow.org/datasets/catalog for TFDS names.") from error

    prepared = builder.is_prepared()
    if not prepared:
        if not download:
            raise _download_error(tfds_name, data_dir, "download=False")
        url = (known.probe_url if known is not None and known.probe_url else GENERIC_PROBE_URL)
        if not _download_reachable(url):
            raise _download_error(
                tfds_name, data_dir,
                f"its download host ({urllib.parse.urlsplit(url).netloc}) cannot be reached "
                f"within {PROBE_TIMEOUT_S:g} s (no network?)")
        try:
            builder.download_and_prepare()
        except Exception as error:
            raise _download_error(tfds_name, data_dir,
                                  f"the download failed ({type(error).__name__}: {error})"
                                  ) from error

    splits = [train_split] + ([test_split] if test_split is not None else [])
    # Read in batches rather than with batch_size=-1: the latter batches by sys.maxsize when
    # the split sizes are unknown (mocked data) and aborts the process inside TensorFlow.
    try:
        loaded = builder.as_dataset(split=splits, as_supervised=True, shuffle_files=False)
        arrays = [_from_dataset(part) for part in loaded]
    except DataError:
        raise
    except Exception as error:
        raise DataError(f"Could not read the splits {splits} of {tfds_name!r} "
                        f"({type(error).__name__}: {error}). Check train_split=/test_split= and "
                        "the prepared copy in data_dir=.") from error

    names = None
    supervised = builder.info.supervised_keys
    label_key = supervised[1] if isinstance(supervised, (tuple, list)) and len(supervised) == 2 \
        else "label"
    try:
        feature = builder.info.features[label_key]
        names = tuple(str(n) for n in feature.names)
    except Exception:  # noqa: BLE001 - not a ClassLabel: names default to indices
        names = None
    if known is not None and known.class_names is not None and (
            names is None or len(names) == len(known.class_names)):
        names = known.class_names

    x, y = arrays[0]
    x_test, y_test = arrays[1] if len(arrays) > 1 else (None, None)
    return x, y, x_test, y_test, names


# -- local sources ---------------------------------------------------------------------


def _load_local(source: Any, image_size: tuple[int, int] | None,
                reference_names: tuple[str, ...] | None = None):
    """Arrays from a non-named source: ``(x, y, x_test, y_test, class_names, name)``."""
    if isinstance(source, (str, os.PathLike)):
        path = Path(source).expanduser()
        if not path.exists():
            raise DataError(f"No such file or directory: {str(path)!r}. Give a path to an .npz "
                            "file (keys x and y) or to a folder of images with one sub-folder per "
                            f"class, or a known data set name ({', '.join(known_datasets())}).")
        if path.is_dir():
            x, y, x_test, y_test, names = _read_image_folder(path, image_size, reference_names)
            return x, y, x_test, y_test, names, path.name
        if path.suffix.lower() == ".npz":
            try:
                with np.load(path, allow_pickle=False) as archive:
                    contents = {key: archive[key] for key in archive.files}
            except Exception as error:
                raise DataError(f"Could not read {str(path)!r} as an .npz file "
                                f"({type(error).__name__}: {error}).") from error
            x, y, x_test, y_test = _from_mapping(contents, f"{path.name}")
            return x, y, x_test, y_test, None, _npz_name(path)
        raise DataError(f"Unsupported file {str(path)!r}: expected an .npz file with keys x and y, "
                        "or a folder of images with one sub-folder per class.")
    if isinstance(source, tf.data.Dataset):
        x, y = _from_dataset(source)
        return x, y, None, None, None, "dataset"
    if isinstance(source, Mapping):
        x, y, x_test, y_test = _from_mapping(source, "the mapping")
        return x, y, x_test, y_test, None, "arrays"
    if isinstance(source, (tuple, list)):
        if len(source) != 2:
            raise DataError(f"Array sources are a pair (x, y); got a {type(source).__name__} of "
                            f"{len(source)} items.")
        return source[0], source[1], None, None, None, "arrays"
    raise DataError(f"Unsupported data source of type {type(source).__name__}. Give a known name "
                    f"({', '.join(known_datasets())}), 'tfds:<name>', arrays (x, y), a path to an "
                    ".npz or an image folder, or a tf.data.Dataset of (image, label) pairs.")


# .npz file names that say nothing about the data set: such a file is named after its folder
_GENERIC_NPZ_NAMES = frozenset({"train", "training", "test", "data", "dataset", "arrays",
                                "images", "all"})


def _npz_name(path: Path) -> str:
    """A data set name for an ``.npz`` file: its stem, or its folder's name when the stem is
    generic (``cifar10-sample/train.npz`` -> ``"cifar10-sample"``)."""
    stem = path.stem
    if stem.lower() in _GENERIC_NPZ_NAMES:
        parent = path.resolve().parent.name
        if parent:
            return parent
    return stem


def _from_mapping(contents: Mapping, what: str):
    keys = set(contents)
    missing = {"x", "y"} - keys
    if missing:
        raise DataError(f"{what} lacks the key(s) {sorted(missing)}: it has {sorted(keys)}. "
                        "Store training images as 'x' and labels as 'y' (optionally 'x_test' and "
                        "'y_test'), e.g. np.savez(path, x=images, y=labels).")
    has_x_test, has_y_test = "x_test" in keys, "y_test" in keys
    if has_x_test != has_y_test:
        raise DataError(f"{what} has only one of 'x_test' and 'y_test'; store both or neither.")
    return (contents["x"], contents["y"],
            contents["x_test"] if has_x_test else None, contents["y_test"] if has_y_test else None)


def _from_dataset(dataset: tf.data.Dataset) -> tuple[np.ndarray, np.ndarray]:
    spec = dataset.element_spec
    if isinstance(spec, Mapping) and "image" in spec and "label" in spec:
        dataset = dataset.map(lambda item: (item["image"], item["label"]))
        spec = dataset.element_spec
    if not (isinstance(spec, (tuple, list)) and len(spec) == 2
            and all(isinstance(s, tf.TensorSpec) for s in spec)):
        raise DataError(f"A tf.data.Dataset source must yield (image, label) pairs; its elements "
                        f"are {spec}. Map it first, e.g. dataset.map(lambda d: (d['image'], "
                        "d['label'])).")
    if dataset.cardinality() == tf.data.INFINITE_CARDINALITY:
        raise DataError("The tf.data.Dataset is infinite (repeat()?); pass a finite one, e.g. "
                        "dataset.take(n).")
    image_spec, label_spec = spec
    if label_spec.shape.rank == 0:
        dataset = dataset.batch(1024)
    elif image_spec.shape.rank not in (3, 4) or label_spec.shape.rank != 1:
        raise DataError(f"A tf.data.Dataset source must yield (image, label) pairs with images "
                        f"(H, W[, C]) and scalar labels (or batches of them); got images "
                        f"{image_spec.shape} and labels {label_spec.shape}.")
    xs, ys = [], []
    try:
        for xb, yb in dataset.as_numpy_iterator():
            xs.append(np.asarray(xb))
            ys.append(np.asarray(yb))
    except tf.errors.OpError as error:
        raise DataError("Could not read the tf.data.Dataset into arrays: all images must have "
                        "the same shape (resize them first, e.g. dataset.map(lambda x, y: "
                        f"(tf.image.resize(x, (32, 32)), y))). TensorFlow said: "
                        f"{error.message.splitlines()[0] if error.message else error}") from error
    if not xs:
        raise DataError("The tf.data.Dataset is empty: no (image, label) pairs to load.")
    try:
        return np.concatenate(xs), np.concatenate(ys)
    except ValueError as error:
        raise DataError(f"The batches of the tf.data.Dataset do not fit together ({error}); all "
                        "images must have the same shape.") from error


def _image_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir()
                  if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)


def _skipped_files(folder: Path) -> list[Path]:
    """Files of a class folder that are not images (hidden files such as ``.DS_Store`` are
    not counted)."""
    return sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith(".")
                  and p.suffix.lower() not in IMAGE_EXTENSIONS)


def _read_image_folder(root: Path, image_size: tuple[int, int] | None,
                       reference_names: tuple[str, ...] | None):
    """Images of ``root``: ``(x, y, x_test, y_test, class_names)``."""
    subdirs = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if "train" in subdirs and set(subdirs) <= {"train", "test"} and any(
            p.is_dir() for p in (root / "train").iterdir()):
        x, y, names = _read_class_folders(root / "train", image_size, reference_names, None)
        x_test = y_test = None
        if "test" in subdirs:
            x_test, y_test, _ = _read_class_folders(root / "test", image_size, names,
                                                    x.shape[-1])
        return x, y, x_test, y_test, names
    x, y, names = _read_class_folders(root, image_size, reference_names, None)
    return x, y, None, None, names


def _read_class_folders(root: Path, image_size: tuple[int, int] | None,
                        reference_names: tuple[str, ...] | None, channels: int | None):
    from PIL import Image

    class_dirs = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not class_dirs:
        raise DataError(f"The folder {str(root)!r} has no sub-folders: put the images of each "
                        "class in a sub-folder named after the class (root/cat/1.png, ...).")
    if reference_names is None:
        names = tuple(p.name for p in class_dirs)
        if len(names) < 2:
            raise DataError(
                f"The folder {str(root)!r} has {len(names)} class sub-folder ({names[0]!r}); a "
                "classifier needs at least two classes. Add a sub-folder of images for each "
                "other class (root/cat/1.png, root/dog/1.png, ...), or point to the folder "
                "that holds the class sub-folders.")
    else:
        names = reference_names
        unknown = [p.name for p in class_dirs if p.name not in names]
        if unknown:
            raise DataError(f"The folder {str(root)!r} has classes {unknown} that the training "
                            f"data lacks (training classes: {list(names)}).")
    files: list[tuple[Path, int]] = []
    skipped: list[Path] = []
    few: list[str] = []
    for class_dir in class_dirs:
        found = _image_files(class_dir)
        skipped.extend(_skipped_files(class_dir))
        if not found:
            warnings.warn(f"Class folder {str(class_dir)!r} holds no images.", UserWarning,
                          stacklevel=4)
        elif len(found) < MIN_IMAGES_PER_CLASS:
            few.append(f"{class_dir.name} ({len(found)})")
        files.extend((f, names.index(class_dir.name)) for f in found)
    if skipped:
        examples = ", ".join(repr(str(p.relative_to(root))) for p in skipped[:3])
        warnings.warn(f"Skipped {len(skipped)} file(s) under {str(root)!r} that are not images "
                      f"({', '.join(sorted(IMAGE_EXTENSIONS))}): {examples}"
                      f"{', ...' if len(skipped) > 3 else ''}.", UserWarning, stacklevel=4)
    if few:
        warnings.warn(f"Under {str(root)!r} the class(es) {', '.join(few)} have fewer than "
                      f"{MIN_IMAGES_PER_CLASS} images: too few to learn or to measure them; add "
                      "images.", UserWarning, stacklevel=4)
    if not files:
        raise DataError(f"No images ({', '.join(sorted(IMAGE_EXTENSIONS))}) found under "
                        f"{str(root)!r}: it is an empty dataset.")

    size = None if image_size is None else (int(image_size[0]), int(image_size[1]))
    first_size: tuple[int, int] | None = None
    grey = True
    for path, _ in files:  # headers only: sizes and colour modes
        try:
            with Image.open(path) as image:
                mode, (width, height) = image.mode, image.size
        except Exception as error:
            raise DataError(f"Could not read the image {str(path)!r} "
                            f"({type(error).__name__}: {error}); remove or fix it.") from error
        grey = grey and mode in _GREY_MODES
        if size is None:
            if first_size is None:
                first_size = (height, width)
            elif (height, width) != first_size:
                raise DataError(
                    f"Image {str(path)!r} is {height}x{width} (HxW) but {str(files[0][0])!r} is "
                    f"{first_size[0]}x{first_size[1]}: all images must have the same size. Pass "
                    "image_size=(height, width) to resize them, or resize the files.")
    target_mode = "L" if (channels == 1 or (channels is None and grey)) else "RGB"
    images = []
    for path, _ in files:
        with Image.open(path) as image:
            image = image.convert(target_mode)
            if size is not None and image.size != (size[1], size[0]):
                image = image.resize((size[1], size[0]), Image.Resampling.BILINEAR)
            images.append(np.asarray(image, dtype=np.uint8))
    x = np.stack(images)
    if x.ndim == 3:
        x = x[..., None]
    y = np.asarray([label for _, label in files], dtype=np.int32)
    return x, y, names


# -- validation ------------------------------------------------------------------------


def _as_images(x: Any, what: str) -> np.ndarray:
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


def _as_labels(y: Any, count: int, what: str) -> np.ndarray:
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


def split_digest(x: np.ndarray, y: np.ndarray) -> str:
    """sha256 of a split as loaded: its images (uint8 when 8-bit, else float32), then its
    labels (int32), C order. Zoo entries record it to check that a rebuilt split is the one
    a metric was measured on."""
    import hashlib

    x = np.asarray(x)
    x = x if x.dtype == np.uint8 else x.astype(np.float32)
    digest = hashlib.sha256(np.ascontiguousarray(x).tobytes())
    digest.update(np.ascontiguousarray(np.asarray(y, dtype=np.int32)).tobytes())
    return digest.hexdigest()


def _holdout(x: np.ndarray, y: np.ndarray, fraction: float):
    """Hold out ``fraction`` of (x, y) as a test set (fixed seed; original order kept)."""
    n = len(x)
    n_test = int(math.floor(fraction * n + 0.5))
    if n_test < 1 or n_test > n - 1:
        raise DataError(f"Cannot hold out a fraction {fraction} of {n} images as a test set: one "
                        "part would be empty.")
    order = np.random.default_rng(HOLDOUT_SEED).permutation(n)
    test_idx, train_idx = np.sort(order[:n_test]), np.sort(order[n_test:])
    return x[train_idx], y[train_idx], x[test_idx], y[test_idx]
