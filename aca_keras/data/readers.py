"""Readers of local sources into arrays: pairs of arrays, mappings, ``.npz`` files, finite
``tf.data`` datasets, image folders (one sub-folder per class, optionally under ``train/`` and
``test/``), and scikit-learn's bundled 8x8 digits.

Readers return the arrays as found; :mod:`aca_keras.data.arrays` checks and converts them.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import tensorflow as tf
from PIL import Image
from sklearn.datasets import load_digits

from aca_keras.data.catalog import known_datasets
from aca_keras.errors import DataError

__all__ = [
    "IMAGE_EXTENSIONS",
    "MIN_IMAGES_PER_CLASS",
    "npz_name",
    "read_dataset",
    "read_digits",
    "read_local",
]

#: File name endings read from image folders.
IMAGE_EXTENSIONS = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp"})
# a class folder with fewer images than this gets a warning
MIN_IMAGES_PER_CLASS = 10

_GREY_MODES = frozenset({"1", "L", "LA", "I", "I;16", "I;16B", "I;16L", "I;16N", "F"})

# .npz file names that say nothing about the data set: such a file is named after its folder
_GENERIC_NPZ_NAMES = frozenset({"train", "training", "test", "data", "dataset", "arrays",
                                "images", "all"})


def read_digits() -> tuple[np.ndarray, np.ndarray, tuple[str, ...]]:
    """scikit-learn's 8x8 digits (bundled, no download) as ``uint8`` images on the 0-255 scale:
    ``(x, y, class_names)``."""
    digits = load_digits()
    images = np.rint(np.asarray(digits.images, dtype=np.float64) * (255.0 / 16.0))
    x = np.clip(images, 0, 255).astype(np.uint8)[..., None]
    y = np.asarray(digits.target, dtype=np.int32)
    return x, y, tuple(str(int(n)) for n in digits.target_names)


def read_local(source: Any, image_size: tuple[int, int] | None,
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
            return x, y, x_test, y_test, None, npz_name(path)
        raise DataError(f"Unsupported file {str(path)!r}: expected an .npz file with keys x and y, "
                        "or a folder of images with one sub-folder per class.")
    if isinstance(source, tf.data.Dataset):
        x, y = read_dataset(source)
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


def npz_name(path: Path) -> str:
    """A data set name for an ``.npz`` file: its stem, or its folder's name when the stem is
    generic (``cifar10-sample/train.npz`` -> ``"cifar10-sample"``)."""
    stem = path.stem
    if stem.lower() in _GENERIC_NPZ_NAMES:
        parent = path.resolve().parent.name
        if parent:
            return parent
    return stem


def _from_mapping(contents: Mapping, what: str):
    """``(x, y, x_test, y_test)`` of a mapping with keys ``x``, ``y`` (and both or neither of
    ``x_test``, ``y_test``)."""
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


def read_dataset(dataset: tf.data.Dataset) -> tuple[np.ndarray, np.ndarray]:
    """A finite dataset of ``(image, label)`` pairs (or ``{"image", "label"}`` dicts), batched
    or not, read into ``(x, y)`` arrays."""
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
