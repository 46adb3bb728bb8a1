"""The package's only reaches into Keras and TensorFlow internals.

Everywhere else aca_keras uses public APIs only: ``tests/test_internals.py`` reads every other
module and fails on an import from ``keras.src`` (or TensorFlow's private modules) and on a
private (``_name``) attribute of a Keras or TensorFlow object. What has no public route lives
here, each reach in one small named function that says which internal it touches, why no
public route exists, and the versions it was checked on. :data:`CHECKS` holds one check per
internal, run by ``tests/test_internals.py`` (fast): when a Keras or TensorFlow release
changes one of them, that test fails naming the internal, instead of a search failing later.

"Checked" below means: run (``CHECKS``) on Keras 3.15.1 with TensorFlow 2.21.0, and read in
the source of Keras 3.7.0, the floor that CI installs with TensorFlow 2.16.1 (where
``CHECKS`` should run too: the fastest way to know that the floors still hold).
"""

from __future__ import annotations

import inspect
import warnings
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import keras
import numpy as np
import tensorflow as tf

# TensorFlow Lite's flatbuffer schema (generated code) and its read/write helpers: the only
# way to add an entry to a .tflite file's metadata table. tf.lite has no public API for it
# (tflite_support's metadata writers write another schema and need another package).
# Checked on TensorFlow 2.21.0 and 2.16.1 (run). Imported on use (_tflite()), so that a
# release that moves these private modules breaks TFLite metadata only, not every import.

__all__ = [
    "CHECKS",
    "clips_gradients_with",
    "symbolic_build_from_batch",
    "symbolic_build_skipped_when",
    "sublayers",
    "tflite_add_metadata",
    "tflite_read_metadata",
    "variable_index",
]

_T = TypeVar("_T", bound=type)

#: Keras's pre-fit build step (TensorFlow backend trainer): ``fit``, ``evaluate``,
#: ``train_on_batch`` and ``test_on_batch`` call ``self._maybe_symbolic_build(iterator=...,
#: data_batch=...)``; under a ``tf.distribute`` strategy it takes one batch of the
#: distributed iterator, averages it across replicas with ``strategy.reduce`` and builds the
#: model, its compiled metrics and losses on it. Neither ``fit`` nor ``train_step`` lets a
#: model skip or feed this step (it runs before ``train_step``, whatever ``build`` did).
#: Checked: Keras 3.15.1 (run), 3.7.0 (source; its iterator yields other tuples, which the
#: replacements here never read).
_SYMBOLIC_BUILD = "_maybe_symbolic_build"

#: ``BaseOptimizer._clip_gradients(grads)``: Keras applies ``clipnorm`` /
#: ``global_clipnorm`` / ``clipvalue`` here, inside ``apply``, on each replica's gradient
#: before the optimiser sums them across replicas. No public hook sees the gradients between
#: the loss-scale division and that sum. Checked: Keras 3.15.1 (run), 3.7.0 (source).
_CLIP_GRADIENTS = "_clip_gradients"

#: ``BaseOptimizer._get_variable_index(variable)``: the position of a trainable variable in
#: the list the optimiser was built on, which is also the position of its slot variables
#: (``SGD.momentums``...). On TensorFlow it also maps a replica's component of a mirrored
#: variable (what ``update_step`` receives under a strategy) to its container, through
#: TensorFlow's private ``_distributed_container``: there is no public way to find a
#: variable's slot. Checked: Keras 3.15.1 (run), 3.7.0 (source).
_VARIABLE_INDEX = "_get_variable_index"

#: ``Layer._flatten_layers(include_self, recursive)``: every layer a layer holds, tracked
#: through attributes, lists and dicts. Keras 3 has ``Model.layers`` (a model's direct
#: children only) and nothing public for the sublayers of a plain ``Layer``.
#: Checked: Keras 3.15.1 (run), 3.7.0 (source).
_FLATTEN_LAYERS = "_flatten_layers"


def _changed(internal: str, problem: str) -> RuntimeError:
    return RuntimeError(
        f"Keras {keras.__version__} / TensorFlow {tf.__version__}: the internal {internal} "
        f"that aca_keras relies on has changed ({problem}). aca_keras was checked with Keras "
        "3.7.0-3.15.1 and TensorFlow 2.16.1-2.21.0: install one of those, or adapt "
        "aca_keras/_internals.py (tests/test_internals.py shows what it expects).")


# ------------------------------------------------------------------- the pre-fit build step


def _override(cls: _T, name: str, method: Callable[..., Any]) -> _T:
    """Install ``method`` on ``cls`` as its override of the Keras internal method ``name``."""
    method.__name__ = name
    method.__qualname__ = f"{cls.__qualname__}.{name}"
    setattr(cls, name, method)
    return cls


def symbolic_build_skipped_when(predicate: Callable[[Any], bool]) -> Callable[[_T], _T]:
    """Class decorator for a ``keras.Model`` subclass: Keras's pre-fit build step
    (:data:`_SYMBOLIC_BUILD`) does nothing when ``predicate(model)`` is true, and runs as
    usual otherwise.

    For a model that builds itself and its optimisers in ``compile`` and whose batches
    Keras cannot reduce across replicas (a nested search batch under
    ``MultiWorkerMirroredStrategy``)."""

    def decorate(cls: _T) -> _T:
        def method(self, iterator=None, data_batch=None):
            if predicate(self):
                return None
            build = getattr(super(cls, self), _SYMBOLIC_BUILD)
            return build(iterator=iterator, data_batch=data_batch)

        return _override(cls, _SYMBOLIC_BUILD, method)

    return decorate


def symbolic_build_from_batch(model: Any, batch: Any) -> None:
    """Make Keras's pre-fit build step (:data:`_SYMBOLIC_BUILD`) of this one ``model`` use
    ``batch`` (a local, undistributed batch) instead of a batch of the distributed iterator,
    which under ``MultiWorkerMirroredStrategy`` mixes per-replica and plain values that
    ``strategy.reduce`` cannot convert. A batch passed by Keras itself (``train_on_batch``)
    is kept."""
    build = getattr(model, _SYMBOLIC_BUILD, None)
    if build is None:
        raise _changed(f"keras.Model.{_SYMBOLIC_BUILD}", "the model has no such method")

    def symbolic_build(iterator=None, data_batch=None):
        return build(iterator=None, data_batch=batch if data_batch is None else data_batch)

    setattr(model, _SYMBOLIC_BUILD, symbolic_build)


# ---------------------------------------------------------------------------- optimisers


def clips_gradients_with(clip: Callable[[Any, list[Any], Callable[[list[Any]], list[Any]]],
                                        list[Any]]) -> Callable[[_T], _T]:
    """Class decorator for a ``keras.optimizers.Optimizer`` subclass: its gradient clipping
    (:data:`_CLIP_GRADIENTS`, inside ``apply``) becomes ``clip(optimizer, grads,
    keras_clip)``, where ``keras_clip(grads)`` is the clipping Keras would have done."""

    def decorate(cls: _T) -> _T:
        def method(self, grads):
            return clip(self, grads, getattr(super(cls, self), _CLIP_GRADIENTS))

        return _override(cls, _CLIP_GRADIENTS, method)

    return decorate


def variable_index(optimizer: Any, variable: Any) -> int:
    """The position of ``variable`` in the list ``optimizer`` was built on, which indexes its
    slot variables (``optimizer.momentums[i]``); ``variable`` may be a Keras variable or,
    inside ``update_step`` under a strategy, a replica's component of one
    (:data:`_VARIABLE_INDEX`)."""
    index = getattr(optimizer, _VARIABLE_INDEX, None)
    if index is None:
        raise _changed(f"keras.optimizers.Optimizer.{_VARIABLE_INDEX}",
                       f"{type(optimizer).__name__} has no such method")
    return index(variable)


# -------------------------------------------------------------------------------- layers


def sublayers(layer: keras.layers.Layer) -> list[keras.layers.Layer]:
    """``layer`` and every layer it holds, recursively, each once (:data:`_FLATTEN_LAYERS`)."""
    flatten = getattr(layer, _FLATTEN_LAYERS, None)
    if flatten is None:
        raise _changed(f"keras.layers.Layer.{_FLATTEN_LAYERS}",
                       f"{type(layer).__name__} has no such method")
    return list(flatten(include_self=True, recursive=True))


# ---------------------------------------------------------------------- TensorFlow Lite


def _tflite() -> tuple[Any, Any]:
    """TensorFlow Lite's schema module and flatbuffer helpers (imported on use)."""
    # heavy optional route (TFLite export only): private TF modules, see the note at the top
    from tensorflow.lite.python import schema_py_generated as tflite_schema
    from tensorflow.lite.tools import flatbuffer_utils

    return tflite_schema, flatbuffer_utils


def tflite_add_metadata(flatbuffer: bytes, name: str, payload: bytes) -> bytes:
    """The ``.tflite`` flatbuffer with a metadata entry ``name`` holding ``payload`` (an entry
    of that name already there is replaced); the interpreter ignores such entries."""
    # TF >= 2.17 has read_model_from_bytearray (byte order and > 2 GB buffers handled); TF 2.16
    # has only convert_bytearray_to_object, the same read on little-endian machines
    _tflite_schema, _flatbuffer_utils = _tflite()
    read = getattr(_flatbuffer_utils, "read_model_from_bytearray",
                   _flatbuffer_utils.convert_bytearray_to_object)
    model = read(bytearray(flatbuffer))
    model.metadata = [m for m in (model.metadata or []) if _text(m.name) != name]
    buffer = _tflite_schema.BufferT()
    buffer.data = np.frombuffer(payload, dtype=np.uint8)
    model.buffers.append(buffer)
    entry = _tflite_schema.MetadataT()
    entry.name = name
    entry.buffer = len(model.buffers) - 1
    model.metadata.append(entry)
    return bytes(_flatbuffer_utils.convert_object_to_bytearray(model))


def tflite_read_metadata(flatbuffer: bytes, name: str) -> bytes | None:
    """The payload of the metadata entry ``name`` of a ``.tflite`` flatbuffer, or ``None``
    when it has none. A corrupt flatbuffer raises whatever the reader raises."""
    _tflite_schema = _tflite()[0]
    model = _tflite_schema.Model.GetRootAs(flatbuffer, 0)
    for i in range(model.MetadataLength()):
        entry = model.Metadata(i)
        if _text(entry.Name()) == name:
            return model.Buffers(entry.Buffer()).DataAsNumpy().tobytes()
    return None


def _text(name: Any) -> str:
    return name.decode() if isinstance(name, bytes) else str(name)


# -------------------------------------------------------------------------------- checks


def _tiny_model() -> type:
    class Tiny(keras.Model):
        def __init__(self, **kwargs):
            super().__init__(**kwargs)
            self.dense = keras.layers.Dense(1, kernel_initializer="ones")

        def call(self, x):
            return self.dense(x)

    return Tiny


def _fit_once(model: Any) -> None:
    x = np.ones((4, 2), "float32")
    model.compile(optimizer=keras.optimizers.SGD(0.1), loss="mse")
    model.fit(x, np.zeros((4, 1), "float32"), batch_size=4, epochs=1, verbose=0)


def _check_parameters(internal: str, owner: type, expected: Sequence[str]) -> None:
    method = getattr(owner, internal.rpartition(".")[2], None)
    if not callable(method):
        raise _changed(internal, "it is gone")
    parameters = list(inspect.signature(method).parameters)[1:]
    if parameters[:len(expected)] != list(expected):
        raise _changed(internal, f"its parameters are {parameters}, expected {list(expected)}")


def check_symbolic_build() -> None:
    """``fit`` calls ``Model._maybe_symbolic_build(iterator=, data_batch=)``, and both ways of
    replacing it take effect."""
    internal = f"keras.Model.{_SYMBOLIC_BUILD}"
    _check_parameters(internal, keras.Model, ("iterator", "data_batch"))
    seen = []
    decorated = symbolic_build_skipped_when(lambda model: seen.append(model) or True)(
        _tiny_model())
    model = decorated()
    _fit_once(model)
    if model not in seen:
        raise _changed(internal, "fit no longer calls it")
    batches = []
    model = _tiny_model()()
    build = getattr(model, _SYMBOLIC_BUILD)
    setattr(model, _SYMBOLIC_BUILD, lambda **kw: batches.append(kw) or build(**kw))
    symbolic_build_from_batch(model, "local batch")
    _fit_once(model)
    if [b.get("data_batch") for b in batches] != ["local batch"]:
        raise _changed(internal, f"an instance's replacement got {batches}")


def check_gradient_clipping() -> None:
    """``apply_gradients`` clips through ``Optimizer._clip_gradients(grads)``."""
    internal = f"keras.optimizers.Optimizer.{_CLIP_GRADIENTS}"
    _check_parameters(internal, keras.optimizers.Optimizer, ("grads",))
    calls = []

    def halve(optimizer, grads, keras_clip):
        calls.append(len(grads))
        return [g * 0.5 for g in keras_clip(grads)]

    cls = clips_gradients_with(halve)(type("Halving", (keras.optimizers.SGD,), {}))
    variable = keras.Variable(np.ones(2, "float32"))
    cls(learning_rate=1.0, global_clipnorm=1.0).apply_gradients(
        [(tf.constant([3.0, 4.0]), variable)])
    # Keras's clip scales (3, 4) to norm 1, then halved: (0.3, 0.4)
    got = keras.ops.convert_to_numpy(variable)
    if calls != [1] or not np.allclose(got, [0.7, 0.6]):
        raise _changed(internal, f"apply_gradients called it {len(calls)} time(s), variable {got}")


def check_variable_index() -> None:
    """``Optimizer._get_variable_index`` gives a variable's slot position."""
    internal = f"keras.optimizers.Optimizer.{_VARIABLE_INDEX}"
    _check_parameters(internal, keras.optimizers.Optimizer, ("variable",))
    first, second = keras.Variable(np.zeros(2, "float32")), keras.Variable(np.zeros(3, "float32"))
    optimizer = keras.optimizers.SGD(momentum=0.9)
    optimizer.build([first, second])
    found = [variable_index(optimizer, v) for v in (first, second)]
    shapes = [tuple(optimizer.momentums[i].shape) for i in found]
    if found != [0, 1] or shapes != [(2,), (3,)]:
        raise _changed(internal, f"positions {found}, momentum shapes {shapes}")


def check_sublayers() -> None:
    """``Layer._flatten_layers`` lists a layer, its sublayers in attributes and lists, and
    theirs."""
    internal = f"keras.layers.Layer.{_FLATTEN_LAYERS}"
    _check_parameters(internal, keras.layers.Layer, ("include_self", "recursive"))

    class Inner(keras.layers.Layer):
        def __init__(self, **kwargs):
            super().__init__(**kwargs)
            self.norm = keras.layers.BatchNormalization(name="norm")

    class Outer(keras.layers.Layer):
        def __init__(self, **kwargs):
            super().__init__(**kwargs)
            self.parts = [keras.layers.Dense(1, name="dense"), Inner(name="inner")]

    names = sorted(layer.name for layer in sublayers(Outer(name="outer")))
    if names != ["dense", "inner", "norm", "outer"]:
        raise _changed(internal, f"it listed {names}")


def check_tflite_metadata() -> None:
    """The TFLite schema module writes a metadata entry that reads back and leaves the model
    running."""
    internal = "tensorflow.lite.python.schema_py_generated / tensorflow.lite.tools"
    module = tf.Module()
    module.scale = tf.Variable(2.0)
    module.serve = tf.function(lambda x: {"y": x * module.scale},
                               input_signature=[tf.TensorSpec((1, 2), tf.float32, name="x")])
    converter = tf.lite.TFLiteConverter.from_concrete_functions(
        [module.serve.get_concrete_function()], module)
    try:
        flatbuffer = tflite_add_metadata(converter.convert(), "aca_keras_check", b"{}")
        flatbuffer = tflite_add_metadata(flatbuffer, "aca_keras_check", b"[1]")
        payload = tflite_read_metadata(flatbuffer, "aca_keras_check")
        with warnings.catch_warnings():  # tf.lite.Interpreter's deprecation notice
            warnings.simplefilter("ignore")
            interpreter = tf.lite.Interpreter(model_content=flatbuffer)
        interpreter.allocate_tensors()
        runner = interpreter.get_signature_runner()
        y = runner(x=np.ones((1, 2), np.float32))["y"]
    except Exception as exc:  # any failure of the generated code is a change
        raise _changed(internal, f"{type(exc).__name__}: {exc}") from exc
    if payload != b"[1]" or not np.allclose(y, 2.0):
        raise _changed(internal, f"read back {payload!r}, ran to {y}")


#: One check per internal this module reaches (the internal's name -> its check), run by
#: ``tests/test_internals.py``.
CHECKS: dict[str, Callable[[], None]] = {
    f"keras.Model.{_SYMBOLIC_BUILD}": check_symbolic_build,
    f"keras.optimizers.Optimizer.{_CLIP_GRADIENTS}": check_gradient_clipping,
    f"keras.optimizers.Optimizer.{_VARIABLE_INDEX}": check_variable_index,
    f"keras.layers.Layer.{_FLATTEN_LAYERS}": check_sublayers,
    "tensorflow.lite.python.schema_py_generated": check_tflite_metadata,
}

