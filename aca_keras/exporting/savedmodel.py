"""TensorFlow SavedModel: ``tf.saved_model.save`` of a ``tf.Module`` holding a ``serve``
endpoint (also the ``serving_default`` signature) whose output dict key is
``logits``/``probabilities``, the variables it reads, and the metadata as a tracked asset; run
with a fresh ``tf.saved_model.load``. The ``savedmodel`` entry of
:mod:`~aca_keras.exporting.formats` names :func:`export_savedmodel` and :func:`run_savedmodel`.

This is what Keras's ``keras.export.ExportArchive`` writes for such a graph (the same
endpoint, signatures and variables: those the endpoint reads), through public TensorFlow API
only: the archive has no public way to attach an asset to the saved object
(``ExportArchive.track`` keeps lookup tables, not files).
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from aca_keras.errors import ExportError
from aca_keras.exporting.formats import ExportRequest
from aca_keras.exporting.graph import input_signature, serving_fn
from aca_keras.exporting.metadata import INPUT_NAME, METADATA_FILE


def export_savedmodel(graph: keras.Model, path: Path, request: ExportRequest) -> None:
    """The ``savedmodel`` format's writer: :func:`write_savedmodel` with the request's
    settings."""
    write_savedmodel(graph, path, request.input_shape, request.batch_size, request.output,
                     request.metadata)


def write_savedmodel(graph: keras.Model, tmp: Path, input_shape: tuple[int, ...],
                     batch_size: int | None, output: str, metadata: dict[str, Any]) -> None:
    """Write the SavedModel directory ``tmp`` with the metadata asset."""
    with tempfile.TemporaryDirectory(prefix="aca_keras-meta-") as meta_dir:
        meta_file = Path(meta_dir) / METADATA_FILE
        meta_file.write_text(json.dumps(metadata, indent=2, sort_keys=True) + "\n",
                             encoding="utf-8")
        root = tf.Module()
        root.serve = tf.function(serving_fn(graph, output),
                                 input_signature=input_signature(input_shape, batch_size),
                                 autograph=False)
        # a tracked asset: copied to assets/ and revived by tf.saved_model.load
        root.aca_keras_metadata = tf.saved_model.Asset(os.fspath(meta_file))
        try:
            serve = root.serve.get_concrete_function()
            # the TensorFlow variables the endpoint reads (as ExportArchive tracks them; the
            # Keras variables wrapping them would save too, but the TFLite converter then
            # freezes them to wrong values: NaN outputs)
            root.graph_variables = list(serve.variables)
            tf.saved_model.save(root, os.fspath(tmp),
                                signatures={"serve": serve, "serving_default": serve})
        except Exception as exc:
            raise ExportError(f"Writing the SavedModel failed: {exc}") from exc


def run_savedmodel(path: Path, batches: list[np.ndarray], output: str) -> list[np.ndarray]:
    """``output`` of the SavedModel's ``serving_default`` signature on each batch."""
    loaded = tf.saved_model.load(os.fspath(path))
    serve = loaded.signatures["serving_default"]
    return [serve(**{INPUT_NAME: tf.constant(b)})[output].numpy() for b in batches]
