"""Export a derived network for deployment: ONNX, TensorFlow SavedModel or TFLite.

The implementation lives in :mod:`aca_keras.exporting.exporter`; this package exports its public
names."""

from __future__ import annotations

from aca_keras.exporting.exporter import (  # noqa: F401
    FORMATS,
    OUTPUTS,
    ExportResult,
    UntrainedModelWarning,
    export,
    read_metadata,
)

__all__ = ["FORMATS", "OUTPUTS", "ExportResult", "UntrainedModelWarning", "export", "read_metadata"]
