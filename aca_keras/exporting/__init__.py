"""Export a derived network for deployment: ONNX, TensorFlow SavedModel or TFLite.

One concern per module, each importing only those listed before it:

* :mod:`~aca_keras.exporting.metadata`: the metadata document, where each format stores it,
  :func:`read_metadata`;
* :mod:`~aca_keras.exporting.graph`: the float32 ``images -> logits`` inference graph;
* :mod:`~aca_keras.exporting.onnx`, :mod:`~aca_keras.exporting.savedmodel`,
  :mod:`~aca_keras.exporting.tflite`: write (and run) one format each;
* :mod:`~aca_keras.exporting.verify`: run an export in its runtime and compare it with Keras;
* :mod:`~aca_keras.exporting.sources`: a model, ``.keras`` file or run directory to export
  (zoo names are resolved by the ``aca-export`` command: exporting does not import the zoo);
* :mod:`~aca_keras.exporting.placement`: output paths, staging and the rename into place;
* :mod:`~aca_keras.exporting.exporter`: :func:`export`, the entry point.
"""

from __future__ import annotations

from aca_keras.exporting.exporter import FORMATS, OUTPUTS, ExportResult, export
from aca_keras.exporting.metadata import read_metadata
from aca_keras.exporting.sources import UntrainedModelWarning

__all__ = ["FORMATS", "OUTPUTS", "ExportResult", "UntrainedModelWarning", "export", "read_metadata"]
