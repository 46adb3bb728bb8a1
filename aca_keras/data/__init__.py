"""Data sources, in-memory data bundles and deterministic ``tf.data`` pipelines.

:func:`load` turns a name, arrays, an ``.npz`` file, an image folder or a ``tf.data.Dataset``
into a :class:`DataBundle`; the bundle builds the search, training and test pipelines.

Modules, each importing only those listed before it (and ``aca_keras.errors``,
``aca_keras.layers.preprocessing``):

* :mod:`~aca_keras.data.catalog`: known data sets, aliases, name-or-path resolution;
* :mod:`~aca_keras.data.arrays`: checking/converting image and label arrays, hold-out split,
  per-channel statistics, split digests;
* :mod:`~aca_keras.data.augment`: stateless pad-and-crop, flip and cutout of a batch;
* :mod:`~aca_keras.data.pipelines`: deterministic pipelines keyed by ``(seed, epoch)``;
* :mod:`~aca_keras.data.bundle`: :class:`DataBundle` (splits, pipelines);
* :mod:`~aca_keras.data.readers`: arrays, mappings, ``.npz``, image folders, ``tf.data``,
  the bundled digits;
* :mod:`~aca_keras.data.tfds`: TensorFlow Datasets sets (``data_dir``, network probe, fast
  offline failure);
* :mod:`~aca_keras.data.loading`: :func:`load`, which dispatches to the above.
"""

from __future__ import annotations

from aca_keras.data.arrays import channel_stats, split_digest
from aca_keras.data.bundle import DataBundle
from aca_keras.data.catalog import (
    CIFAR10_CLASS_NAMES,
    DATASET_ALIASES,
    KNOWN_DATASETS,
    KnownDataset,
    known_datasets,
)
from aca_keras.data.loading import load
from aca_keras.data.pipelines import SearchData
from aca_keras.layers.preprocessing import preprocessing_layers

__all__ = [
    "CIFAR10_CLASS_NAMES",
    "DATASET_ALIASES",
    "KNOWN_DATASETS",
    "DataBundle",
    "KnownDataset",
    "SearchData",
    "channel_stats",
    "known_datasets",
    "load",
    "preprocessing_layers",
    "split_digest",
]
