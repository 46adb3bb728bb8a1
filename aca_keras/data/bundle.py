"""The in-memory data set: :class:`DataBundle`, its DARTS split and its pipelines.

A bundle holds the arrays (read-only views), the class names and the per-channel statistics
that :func:`~aca_keras.layers.preprocessing.preprocessing_layers` needs; its ``*_pipeline``
methods check their arguments and build the deterministic pipelines of
:mod:`aca_keras.data.pipelines`.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import numpy as np
import tensorflow as tf

from aca_keras.data.pipelines import (
    STREAM_ALPHA,
    STREAM_TRAIN,
    STREAM_WEIGHT,
    SearchData,
    check_batch_size,
    check_epochs,
    check_seed,
    effective_batch_size,
    index_batches,
    test_batches,
)
from aca_keras.errors import DataError
from aca_keras.layers.preprocessing import preprocessing_layers
from aca_keras.space.validation import is_int

__all__ = ["DataBundle"]


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

    def head(self, count: int) -> DataBundle:
        """The same bundle with only the first ``count`` training images (test part, class
        names and channel statistics unchanged). Raises :class:`DataError` when ``count``
        is not an integer in ``1..num_train``."""
        if not is_int(count) or not 1 <= count <= self.num_train:
            raise DataError(f"Cannot take the first {count!r} training images of {self.name!r}: "
                            f"it holds {self.num_train}. Give a count between 1 and "
                            f"{self.num_train}.")
        return dataclasses.replace(self, x_train=self.x_train[:count],
                                   y_train=self.y_train[:count])

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
        order = np.random.default_rng(check_seed(seed)).permutation(n)
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
        seed = check_seed(seed)
        check_epochs(epochs, start_epoch)
        weight, alpha = self.split_indices(train_fraction, seed)
        smallest = min(len(weight), len(alpha))
        batch_size = effective_batch_size(batch_size, smallest, "the smaller search half")
        steps = smallest // batch_size
        dataset = index_batches(self.x_train, self.y_train, [weight, alpha],
                                [STREAM_WEIGHT, STREAM_ALPHA], seed=seed, batch_size=batch_size,
                                steps=steps, epochs=epochs, start_epoch=start_epoch,
                                augment=augment, flip=self.flip, cutout=0)
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
        seed = check_seed(seed)
        check_epochs(epochs, start_epoch)
        if not is_int(cutout) or cutout < 0:
            raise DataError(f"cutout must be a non-negative integer (0 = off), got {cutout!r}.")
        batch_size = effective_batch_size(batch_size, self.num_train, "the training set")
        steps = self.num_train // batch_size
        dataset = index_batches(self.x_train, self.y_train, [np.arange(self.num_train)],
                                [STREAM_TRAIN], seed=seed, batch_size=batch_size, steps=steps,
                                epochs=epochs, start_epoch=start_epoch, augment=augment,
                                flip=self.flip, cutout=int(cutout))
        return dataset, steps

    def test_pipeline(self, batch_size: int) -> tf.data.Dataset | None:
        """Batches ``(x, y)`` of the test set in order, last partial batch kept, no
        augmentation; ``None`` when the bundle has no test set."""
        if self.x_test is None or self.y_test is None:
            return None
        batch_size = check_batch_size(batch_size)
        return test_batches(self.x_test, self.y_test, batch_size)
