"""ONNX: convert the inference graph with tf2onnx, repair it, check it, run it.

``tf2onnx.convert.from_function`` on a ``tf.function`` that returns
``{"logits": model(images, training=False)}``: the same converter Keras's own
``model.export(format="onnx")`` drives, but that route names the output ``Identity:0`` and
turns constants captured by the traced function (the ``Normalization`` mean and variance of
every aca_keras model) into dangling *required graph inputs*, so its file cannot be run with
``images`` alone. Here such inputs are dropped (unused) or turned into initializers (used,
with the captured value), the output gets its name, the batch dimension is named ``batch``,
and ``onnx.checker.check_model(full_check=True)`` must pass. (``tf2onnx.convert.from_keras``
is never used: it is broken on Keras 3.) Keras's internal numpy-2 patch of tf2onnx is
not applied: tf2onnx 1.17, the declared floor, runs on numpy 2 in the converter paths used
here (it still calls the removed ``np.product`` only for external tensor storage, which is
for models over 2 GB).

onnx, tf2onnx and onnxruntime are heavy: they are imported by the functions that use them,
so that importing :mod:`aca_keras.exporting` (and the SavedModel/TFLite routes) does not.

The ``onnx`` entry of :mod:`~aca_keras.exporting.formats` names :func:`export_onnx` (its
writer, option ``opset``) and :func:`run_onnx` (its runner).
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from aca_keras.errors import ExportError
from aca_keras.exporting.formats import ExportRequest
from aca_keras.exporting.graph import input_signature, serving_fn
from aca_keras.exporting.metadata import INPUT_NAME, ONNX_PREFIX, onnx_metadata_props


def export_onnx(graph: keras.Model, path: Path, request: ExportRequest) -> None:
    """The ``onnx`` format's writer: :func:`write_onnx` with the request's settings (its
    ``opset`` option, default tf2onnx's)."""
    write_onnx(graph, path, request.input_shape, request.batch_size, request.output,
               request.options.get("opset"), request.metadata)


def write_onnx(graph: keras.Model, tmp: Path, input_shape: tuple[int, ...],
               batch_size: int | None, output: str, opset: int | None,
               metadata: dict[str, Any]) -> None:
    """Convert with tf2onnx, repair captured constants and names, check, save; records the
    opset used as ``metadata["onnx_opset"]``."""
    import onnx  # heavy optional route: only ONNX exports load it
    import tf2onnx  # heavy optional route: only ONNX exports load it

    signature = input_signature(input_shape, batch_size)
    fn = tf.function(serving_fn(graph, output), input_signature=signature, autograph=False)
    concrete = fn.get_concrete_function(*signature)
    captured = {internal.name: external for external, internal in concrete.graph.captures
                if external.dtype != tf.resource}
    try:
        with _quiet_tf2onnx():
            proto, _ = tf2onnx.convert.from_function(fn, input_signature=signature, opset=opset)
    except Exception as exc:
        raise ExportError(f"tf2onnx could not convert the model to ONNX: {exc}") from exc
    repair_onnx(proto, captured, output, batch_size)
    metadata["onnx_opset"] = next(
        (int(o.version) for o in proto.opset_import if o.domain in ("", "ai.onnx")), opset)
    kept = [p for p in proto.metadata_props if not p.key.startswith(ONNX_PREFIX)]
    del proto.metadata_props[:]
    proto.metadata_props.extend(kept)
    for key, value in onnx_metadata_props(metadata, output).items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = ONNX_PREFIX + key, value
    proto.doc_string = (f"aca_keras {metadata['aca_keras_version']} export: {INPUT_NAME} "
                        f"(raw pixels 0-255, NHWC float32) -> {output}")
    try:
        onnx.checker.check_model(proto, full_check=True)
    except Exception as exc:
        raise ExportError(f"The converted ONNX model does not pass onnx.checker: {exc}") from exc
    onnx.save(proto, os.fspath(tmp))


def repair_onnx(proto: Any, captured: dict[str, Any], output: str,
                batch_size: int | None) -> None:
    """Captured constants -> initializers; name the batch dimension; name the output."""
    from onnx import numpy_helper  # heavy optional route: only ONNX exports load it

    graph = proto.graph
    initialized = {t.name for t in graph.initializer}
    used = {name for node in graph.node for name in node.input}
    keep = []
    for value in graph.input:
        if value.name == INPUT_NAME:
            keep.append(value)
        elif value.name in initialized or value.name not in used:
            continue
        elif value.name in captured:
            array = np.asarray(captured[value.name].numpy())
            graph.initializer.append(numpy_helper.from_array(array, value.name))
        else:
            raise ExportError(f"The ONNX graph has an unexpected input {value.name!r} besides "
                              f"{INPUT_NAME!r}; the model cannot be exported as one image input.")
    if len(keep) != 1:
        raise ExportError(f"The ONNX graph has no input named {INPUT_NAME!r}.")
    del graph.input[:]
    graph.input.extend(keep)
    if len(graph.output) != 1:
        raise ExportError(f"The ONNX graph has {len(graph.output)} outputs; expected one.")
    old = graph.output[0].name
    if old != output:
        for node in graph.node:
            for i, name in enumerate(node.output):
                if name == old:
                    node.output[i] = output
            for i, name in enumerate(node.input):
                if name == old:
                    node.input[i] = output
        graph.output[0].name = output
    if batch_size is None:  # tf2onnx calls the batch dimension unk__N: name it "batch"
        symbols = {v.type.tensor_type.shape.dim[0].dim_param
                   for v in (graph.input[0], graph.output[0])
                   if v.type.tensor_type.shape.dim}
        symbols.discard("")
        for value in (*graph.input, *graph.output, *graph.value_info):
            for dim in value.type.tensor_type.shape.dim:
                if dim.dim_param in symbols:
                    dim.dim_param = "batch"


def run_onnx(path: Path, batches: list[np.ndarray], output: str) -> list[np.ndarray]:
    """``output`` of the ONNX file on each batch, run in ONNX Runtime (one thread, CPU)."""
    import onnxruntime as ort  # heavy optional route: only ONNX verification loads it

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    session = ort.InferenceSession(os.fspath(path), options, providers=["CPUExecutionProvider"])
    if [i.name for i in session.get_inputs()] != [INPUT_NAME]:
        raise ExportError(f"The ONNX model's inputs are "
                          f"{[i.name for i in session.get_inputs()]}, not [{INPUT_NAME!r}].")
    return [session.run([output], {INPUT_NAME: b})[0] for b in batches]


@contextlib.contextmanager
def _quiet_tf2onnx() -> Iterator[None]:
    logger = logging.getLogger("tf2onnx")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)
