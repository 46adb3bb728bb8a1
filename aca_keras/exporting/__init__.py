"""Export a derived network for deployment: ONNX, TensorFlow SavedModel, TFLite, or any format
registered in :mod:`~aca_keras.exporting.formats`.

One concern per module, each importing only those listed before it:

* :mod:`~aca_keras.exporting.formats`: the format registry (:class:`ExportFormat`: writer,
  runner, metadata reader, suffix, description; ``register_format``/``list_formats``/
  ``get_format``); imports no TensorFlow, so the commands list the formats in ``--help``;
* :mod:`~aca_keras.exporting.metadata`: the metadata document, where each format stores it,
  :func:`read_metadata`;
* :mod:`~aca_keras.exporting.graph`: the float32 ``images -> logits`` inference graph;
* :mod:`~aca_keras.exporting.onnx`, :mod:`~aca_keras.exporting.savedmodel`,
  :mod:`~aca_keras.exporting.tflite`: write (and run) one built-in format each;
* :mod:`~aca_keras.exporting.verify`: run an export in its runtime and compare it with Keras;
* :mod:`~aca_keras.exporting.sources`: a model, ``.keras`` file or run directory to export
  (zoo names are resolved by the ``aca-export`` command: exporting does not import the zoo);
* :mod:`~aca_keras.exporting.placement`: output paths, staging and the rename into place;
* :mod:`~aca_keras.exporting.exporter`: :func:`export`, the entry point.

The names below are loaded lazily: ``import aca_keras.exporting.formats`` loads no TensorFlow.
"""

from __future__ import annotations

import importlib
from typing import Any

__all__ = ["FORMATS", "OUTPUTS", "ExportFormat", "ExportResult", "UntrainedModelWarning",
           "export", "get_format", "list_formats", "read_metadata", "register_format",
           "unregister_format"]

# public name -> module holding it
_LAZY = {
    "FORMATS": "aca_keras.exporting.exporter",
    "OUTPUTS": "aca_keras.exporting.exporter",
    "ExportResult": "aca_keras.exporting.exporter",
    "export": "aca_keras.exporting.exporter",
    "read_metadata": "aca_keras.exporting.metadata",
    "UntrainedModelWarning": "aca_keras.exporting.sources",
    "ExportFormat": "aca_keras.exporting.formats",
    "get_format": "aca_keras.exporting.formats",
    "list_formats": "aca_keras.exporting.formats",
    "register_format": "aca_keras.exporting.formats",
    "unregister_format": "aca_keras.exporting.formats",
}


def __getattr__(name: str) -> Any:
    try:
        module = _LAZY[name]
    except KeyError:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}") from None
    value = getattr(importlib.import_module(module), name)
    if name != "FORMATS":  # FORMATS follows the registry
        globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(__all__) | set(globals()))
