"""Known data sets: the names :func:`~aca_keras.data.load` accepts and what it knows of them.

Pure data and name resolution (no TensorFlow, no I/O beyond checking whether a string names an
existing path): the :class:`KnownDataset` table with published statistics, the aliases, the
``"tfds:<name>"`` prefix, and :func:`is_dataset_name` / :func:`resolve_name`, which tell a
data-set name from a path.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from aca_keras.errors import UnknownDatasetError

__all__ = [
    "CIFAR10",
    "CIFAR10_CLASS_NAMES",
    "CIFAR100",
    "DATASET_ALIASES",
    "DIGITS",
    "DIGITS_TEST_FRACTION",
    "FASHION_MNIST",
    "KNOWN_DATASETS",
    "MNIST",
    "SVHN",
    "TFDS_PREFIX",
    "KnownDataset",
    "is_dataset_name",
    "known_datasets",
    "resolve_name",
]


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
#: Share of the digits set held out as its test split (seed: ``arrays.HOLDOUT_SEED``).
DIGITS_TEST_FRACTION = 0.2


def known_datasets() -> tuple[str, ...]:
    """Names accepted by :func:`load` (besides aliases and ``tfds:<name>``)."""
    return tuple(KNOWN_DATASETS)


def is_dataset_name(source: str) -> bool:
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


def resolve_name(source: str) -> tuple[KnownDataset | None, str]:
    """``(known set or None, TFDS name)`` of a name for which :func:`is_dataset_name` holds."""
    lowered = source.strip().lower()
    if lowered.startswith(TFDS_PREFIX):
        tfds_name = source.strip()[len(TFDS_PREFIX):]
        if not tfds_name:
            raise UnknownDatasetError("'tfds:' needs a data set name, e.g. 'tfds:cifar10'.")
        # Any TFDS name; statistics are computed from the data, not taken from the table.
        return None, tfds_name
    known = KNOWN_DATASETS[DATASET_ALIASES.get(lowered, lowered)]
    return known, known.tfds_name or known.name
