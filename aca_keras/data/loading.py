"""The entry point :func:`load`: any supported source -> a :class:`DataBundle`.

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

:func:`load` only dispatches: names are resolved by :mod:`~aca_keras.data.catalog`, named sets
read by :mod:`~aca_keras.data.tfds` (or :func:`~aca_keras.data.readers.read_digits`), other
sources by :mod:`~aca_keras.data.readers`, and every array checked by
:mod:`~aca_keras.data.arrays`.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np

from aca_keras.data.arrays import as_images, as_labels, channel_stats, empty_classes, holdout
from aca_keras.data.bundle import DataBundle
from aca_keras.data.catalog import (
    DIGITS_TEST_FRACTION,
    KnownDataset,
    is_dataset_name,
    resolve_name,
)
from aca_keras.data.readers import read_digits, read_local
from aca_keras.data.tfds import read_tfds
from aca_keras.errors import DataError

__all__ = ["load"]

# The ``X as X`` imports below keep names importable from here for callers outside
# aca_keras/data/ that import ``aca_keras.data.loading`` (trainer, tuner, exporter, zoo, studies,
# zoo tools, benchmarks, some tests); new code imports them from ``aca_keras.data``.
from aca_keras.data.arrays import split_digest as split_digest  # noqa: E402
from aca_keras.data.catalog import CIFAR10_CLASS_NAMES as CIFAR10_CLASS_NAMES  # noqa: E402
from aca_keras.data.catalog import DATASET_ALIASES as DATASET_ALIASES  # noqa: E402
from aca_keras.data.catalog import KNOWN_DATASETS as KNOWN_DATASETS  # noqa: E402
from aca_keras.data.catalog import known_datasets as known_datasets  # noqa: E402
from aca_keras.data.pipelines import SearchData as SearchData  # noqa: E402
from aca_keras.data.readers import npz_name as _npz_name  # noqa: E402, F401
from aca_keras.layers.preprocessing import preprocessing_layers as preprocessing_layers  # noqa: E402
from aca_keras.space.validation import is_int


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
    if num_classes is not None and (not is_int(num_classes) or num_classes < 1):
        raise DataError(f"num_classes must be a positive integer, got {num_classes!r}.")

    known: KnownDataset | None = None
    meta_names: tuple[str, ...] | None = None
    if isinstance(source, str) and is_dataset_name(source):  # Path objects are paths
        if test is not None:
            raise DataError(f"test= is for arrays, .npz files, folders and datasets; the named "
                            f"set {source!r} brings its own test split (see test_split=).")
        known, tfds_name = resolve_name(source)
        if known is not None and known.name == "digits":
            x, y, meta_names = read_digits()
            x_test = y_test = None
            if test_fraction is None:
                test_fraction = DIGITS_TEST_FRACTION
        else:
            x, y, x_test, y_test, meta_names = read_tfds(
                tfds_name, known, data_dir=data_dir, download=download,
                train_split=train_split, test_split=test_split)
        default_name = known.name if known is not None else tfds_name
    else:
        x, y, x_test, y_test, meta_names, default_name = read_local(source, image_size)
        if test is not None:
            if x_test is not None:
                raise DataError("The source already holds a test set (x_test/y_test or a test/ "
                                "folder); do not pass test= as well.")
            x_test, y_test = read_local(test, image_size, reference_names=meta_names)[:2]

    x = as_images(x, "training images")
    y = as_labels(y, len(x), "training labels")
    if x_test is not None:
        if y_test is None:
            raise DataError("Test images were given without test labels.")
        x_test = as_images(x_test, "test images")
        y_test = as_labels(y_test, len(x_test), "test labels")
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
        x, y, x_test, y_test = holdout(x, y, float(test_fraction))

    if num_classes is None and meta_names is not None:
        num_classes = len(meta_names)
    largest = int(y.max()) if y_test is None else max(int(y.max()), int(y_test.max()))
    inferred = num_classes is None
    if inferred:
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
    _check_every_class_has_images(y, num_classes, class_names, inferred=inferred,
                                  held_out=test_fraction is not None)

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


#: How many class indices a label message lists before it says "... (N in all)".
_LISTED_CLASSES = 8


def _list_classes(indices: Sequence[int], class_names: Sequence[str]) -> str:
    """``0, 3 ('cat'), ...``: the first few indices, with their names where they say more."""
    shown = []
    for index in indices[:_LISTED_CLASSES]:
        label = class_names[index] if index < len(class_names) else str(index)
        shown.append(str(index) if label == str(index) else f"{index} ({label!r})")
    more = f", ... ({len(indices)} in all)" if len(indices) > _LISTED_CLASSES else ""
    return ", ".join(shown) + more


def _check_every_class_has_images(y: np.ndarray, num_classes: int,
                                  class_names: Sequence[str], *, inferred: bool,
                                  held_out: bool) -> None:
    """Refuse (``num_classes`` inferred from the largest label) or warn (``num_classes`` given,
    or from the source's class list) when a class has no training image: the model would have
    an output that no image trains."""
    empty = empty_classes(y, num_classes)
    if not empty:
        return
    found = tuple(int(c) for c in np.unique(y))
    split = " after the test split was held out" if held_out else ""
    summary = (f"The training labels leave {len(empty)} of {num_classes} classes without a "
               f"single image{split}: {_list_classes(empty, class_names)}. The labels found "
               f"are {len(found)} classes: {_list_classes(found, class_names)}")
    if inferred:
        raise DataError(
            f"{summary}; num_classes was taken as the largest label + 1 = {num_classes}, "
            f"for {len(y)} training images. A model would have outputs that no image trains. "
            f"Relabel the classes to 0..{len(found) - 1} (e.g. "
            "y = np.unique(y, return_inverse=True)[1], applied to training and test labels "
            "alike), or pass num_classes= / class_names= to keep the empty classes on "
            "purpose.")
    warnings.warn(
        f"{summary}; with num_classes={num_classes} their outputs are never trained. If this "
        f"is not deliberate, relabel the classes to 0..{len(found) - 1} or check the data "
        "split.", UserWarning, stacklevel=3)
