"""TFLite: ``tf.lite.TFLiteConverter.from_saved_model`` on the SavedModel route's directory
(float32, builtin ops only), the metadata in the flatbuffer; run with ``tf.lite.Interpreter``.
The ``tflite`` entry of :mod:`~aca_keras.exporting.formats` names :func:`export_tflite` and
:func:`run_tflite`."""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from aca_keras.errors import ExportError
from aca_keras.exporting.formats import ExportRequest
from aca_keras.exporting.metadata import INPUT_NAME, tflite_with_metadata
from aca_keras.exporting.savedmodel import export_savedmodel


def export_tflite(graph: keras.Model, path: Path, request: ExportRequest) -> None:
    """The ``tflite`` format's writer: the SavedModel route into a scratch directory, then
    :func:`write_tflite` from it."""
    if request.scratch is None:
        raise ExportError("The TFLite writer needs a scratch path for its SavedModel "
                          "(ExportRequest.scratch).")
    saved = request.scratch("savedmodel")
    export_savedmodel(graph, saved, request)
    write_tflite(saved, path, request.metadata)


def write_tflite(saved_model: Path, tmp: Path, metadata: dict[str, Any]) -> None:
    """Convert the SavedModel directory ``saved_model`` into the TFLite file ``tmp``."""
    try:
        converter = tf.lite.TFLiteConverter.from_saved_model(os.fspath(saved_model))
        flatbuffer = converter.convert()
    except Exception as exc:
        raise ExportError(f"The TFLite converter failed: {exc}") from exc
    tmp.write_bytes(tflite_with_metadata(flatbuffer, metadata))


def run_tflite(path: Path, batches: list[np.ndarray], output: str) -> list[np.ndarray]:
    """``output`` of the TFLite file's ``serving_default`` signature on each batch."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tf.lite.Interpreter's deprecation notice
        interpreter = tf.lite.Interpreter(model_path=os.fspath(path), num_threads=1)
    runner = interpreter.get_signature_runner("serving_default")
    return [runner(**{INPUT_NAME: b})[output] for b in batches]
