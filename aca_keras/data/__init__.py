"""Data sources, in-memory data bundles and deterministic ``tf.data`` pipelines.

The implementation lives in :mod:`aca_keras.data.loading`; this package exports its public
names."""

from __future__ import annotations

from aca_keras.data.loading import (  # noqa: F401
    KNOWN_DATASETS,
    DataBundle,
    KnownDataset,
    SearchData,
    channel_stats,
    known_datasets,
    load,
    preprocessing_layers,
)

__all__ = ["KNOWN_DATASETS", "DataBundle", "KnownDataset", "SearchData", "channel_stats", "known_datasets", "load", "preprocessing_layers"]
