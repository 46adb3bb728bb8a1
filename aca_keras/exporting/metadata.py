"""The metadata document of an export: what it holds, where each format stores it, and
reading it back.

A JSON document with the aca_keras, Keras and TensorFlow versions, input name / shape / value
range, output name, number of classes, class names when known and the architecture spec
(``Architecture.to_dict``) when the model is an aca_keras model. It is stored as

* ONNX: ``metadata_props`` ``aca_keras.metadata`` (the whole document) and the short keys
  ``aca_keras.version``, ``aca_keras.output``, ``aca_keras.input_shape``,
  ``aca_keras.class_names``, ``aca_keras.architecture`` (JSON strings);
* SavedModel: the asset ``assets/aca_keras.json``, tracked by the SavedModel (after
  ``tf.saved_model.load`` its path is ``loaded.aca_keras_metadata.asset_path``, and re-saving
  the loaded object keeps it);
* TFLite: a flatbuffer metadata entry named ``aca_keras`` (the same place where the converter
  keeps ``min_runtime_version``); the interpreter ignores it.

:func:`read_metadata` finds an export's format in :mod:`~aca_keras.exporting.formats` and asks
its reader (for the built-ins, :func:`onnx_metadata_text`, :func:`savedmodel_metadata_text`,
:func:`tflite_metadata_text` here) for the document.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import keras
import tensorflow as tf

from aca_keras import __version__
from aca_keras import _internals as internals
from aca_keras.errors import ExportError
from aca_keras.exporting.formats import format_for_path, get_format, list_formats

#: The name of the exported graph's one input.
INPUT_NAME = "images"
METADATA_FORMAT = "aca_keras.export"
METADATA_VERSION = 1
#: File name of the metadata asset in a SavedModel.
METADATA_FILE = "aca_keras.json"
#: Name of the metadata entry in a TFLite flatbuffer.
TFLITE_METADATA_NAME = "aca_keras"
#: Prefix of the ONNX ``metadata_props`` keys.
ONNX_PREFIX = "aca_keras."


def build_metadata(fmt: str, info: dict[str, Any], input_shape: tuple[int, ...],
                   batch_size: int | None, output: str, class_names: list[str] | None,
                   source_label: str) -> dict[str, Any]:
    """The document for an export of the graph described by ``info``
    (:func:`aca_keras.exporting.graph.inference_graph`)."""
    return {
        "format": METADATA_FORMAT,
        "version": METADATA_VERSION,
        "aca_keras_version": __version__,
        "keras_version": keras.__version__,
        "tensorflow_version": tf.__version__,
        "export_format": fmt,
        "input_name": INPUT_NAME,
        "input_shape": list(input_shape),
        "input_dtype": "float32",
        "input_range": [0.0, 255.0],
        "input_layout": "NHWC",
        "batch_size": None if batch_size is None else int(batch_size),
        "output_name": output,
        "output": output,
        "num_classes": info["num_classes"],
        "class_names": class_names,
        "model_class": info["model_class"],
        "source": source_label,
        "dtype": "float32",
        "original_dtype_policy": info["original_dtype_policy"],
        "architecture": info["architecture"],
        "model_config": info["model_config"],
    }


def metadata_json(metadata: dict[str, Any]) -> str:
    """The document as stored (compact, sorted keys, no NaN)."""
    return json.dumps(metadata, sort_keys=True, allow_nan=False)


def parse_metadata(text: str, where: Path) -> dict[str, Any]:
    """The document in ``text`` (read from ``where``); ExportError when it is not one."""
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise ExportError(f"The aca_keras metadata of {str(where)!r} is not valid JSON: "
                          f"{exc}") from None
    if not isinstance(data, dict) or data.get("format") != METADATA_FORMAT:
        raise ExportError(f"The metadata of {str(where)!r} is not an aca_keras export "
                          "document.")
    return data


# ------------------------------------------------------------------- storing, per format


def onnx_metadata_props(metadata: dict[str, Any], output: str) -> dict[str, str]:
    """The ONNX ``metadata_props`` of the document, keys without :data:`ONNX_PREFIX`."""
    props = {
        "metadata": metadata_json(metadata),
        "version": metadata["aca_keras_version"],
        "output": output,
        "input_shape": json.dumps(metadata["input_shape"]),
    }
    if metadata["class_names"] is not None:
        props["class_names"] = json.dumps(metadata["class_names"])
    if metadata["architecture"] is not None:
        props["architecture"] = json.dumps(metadata["architecture"], sort_keys=True)
    return props


def tflite_with_metadata(flatbuffer: bytes, metadata: dict[str, Any]) -> bytes:
    """The TFLite flatbuffer with a metadata entry :data:`TFLITE_METADATA_NAME` holding the
    document."""
    return internals.tflite_add_metadata(flatbuffer, TFLITE_METADATA_NAME,
                                         metadata_json(metadata).encode())


# ---------------------------------------------------------------------------- reading back


def read_metadata(path: str | os.PathLike) -> dict[str, Any]:
    """The aca_keras metadata document embedded in an export written by
    :func:`aca_keras.exporting.export`.

    Args:
        path: an export of any registered format (:mod:`~aca_keras.exporting.formats`): a
            ``.onnx`` file, a ``.tflite`` file or a SavedModel directory for the built-ins.

    Raises:
        FileNotFoundError: nothing at ``path``.
        ExportError: the file holds no aca_keras metadata or is not a known export format.
    """
    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"No export at {str(p)!r}.")
    spec = format_for_path(p)
    if spec is None:
        specs = [get_format(name) for name in list_formats()]
        files = " or ".join(s.suffix for s in specs if not s.directory)
        folders = " or ".join(s.label for s in specs if s.directory)
        raise ExportError(f"Cannot tell the format of {str(p)!r}: expected a {files} file"
                          + (f" or a {folders} directory." if folders else "."))
    return parse_metadata(spec.metadata_reader()(p), p)


def onnx_metadata_text(path: Path) -> str:
    """The document stored in an ONNX file (the ``onnx`` format's metadata reader)."""
    return _onnx_metadata(Path(path).read_bytes(), Path(path))


def savedmodel_metadata_text(path: Path) -> str:
    """The document stored in a SavedModel directory's assets (the ``savedmodel`` format's
    metadata reader)."""
    p = Path(path)
    for candidate in (p / "assets" / METADATA_FILE, p / "assets.extra" / METADATA_FILE):
        if candidate.is_file():
            return candidate.read_text(encoding="utf-8")
    raise ExportError(f"{str(p)!r} has no assets/{METADATA_FILE}; it was not written by "
                      "aca_keras.export (or its assets were removed).")


def tflite_metadata_text(path: Path) -> str:
    """The document stored in a TFLite flatbuffer (the ``tflite`` format's metadata
    reader)."""
    p = Path(path)
    text = _tflite_metadata(p.read_bytes(), p)
    if text is None:
        raise ExportError(f"{str(p)!r} has no '{TFLITE_METADATA_NAME}' metadata entry.")
    return text


def _onnx_metadata(data: bytes, where: Path) -> str:
    import onnx  # heavy; imported only when an ONNX file is read

    try:
        props = {m.key: m.value for m in onnx.load_from_string(data).metadata_props}
    except Exception as exc:  # onnx raises DecodeError and friends
        raise ExportError(f"{str(where)!r} is not a readable ONNX file: {exc}") from None
    if ONNX_PREFIX + "metadata" not in props:
        raise ExportError(f"{str(where)!r} has no aca_keras metadata (metadata_props key "
                          f"{ONNX_PREFIX}metadata).")
    return props[ONNX_PREFIX + "metadata"]


def _tflite_metadata(data: bytes, where: Path) -> str | None:
    try:
        payload = internals.tflite_read_metadata(data, TFLITE_METADATA_NAME)
        return None if payload is None else payload.decode("utf-8")
    except Exception as exc:  # a corrupt flatbuffer raises anything
        raise ExportError(f"{str(where)!r} is not a readable TFLite file: {exc}") from None
