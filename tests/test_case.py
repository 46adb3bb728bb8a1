"""A shared test of a Keras layer's contract, in the spirit of keras-hub's ``TestCase``.

:func:`run_layer_test` checks, for one layer configuration:

0. **call**: finite outputs whose shape is the symbolic one (``compute_output_spec``), and
   in training mode a finite gradient for every trainable weight;
1. **config round trip**: ``from_config(get_config())`` gives an equal config, every
   constructor argument of the layer's class is returned by ``get_config``, and the given
   constructor arguments come back unchanged;
2. **``.keras`` reload**: a functional model wrapping the layer, saved and loaded again
   (without ``custom_objects``), gives exactly the same outputs;
3. **float16**: built under the ``mixed_float16`` dtype policy, the layer runs (inference and,
   where it has one, training mode) with outputs of its compute dtype and finite values; the
   global policy is restored afterwards;
4. **ONNX**: the wrapping model converted with tf2onnx the way :mod:`aca_keras.exporting`
   converts (``tf.function`` -> ``tf2onnx.convert.from_function``, captured constants made
   initializers, ``onnx.checker`` full check) and run in onnxruntime matches Keras within
   ``ONNX_ATOL`` + ``ONNX_RTOL * |keras|``. A layer for which this cannot apply passes
   ``onnx=<reason>`` and the check is skipped with that reason.

Layers that take extra call arguments (``MixedEdge``/``SearchCell`` take the softmaxed
``weights``) pass them as ``call_kwargs``; they are constants of the wrapping model.
"""

from __future__ import annotations

import contextlib
import inspect
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import keras
import numpy as np

ONNX_ATOL = 1e-5  # float32 graphs on CPU: differences are float rounding only
ONNX_RTOL = 1e-5

# Layer constructor arguments that are Keras's own and may be given in ``init_kwargs``.
_BASE_KEYS = frozenset({"name", "trainable", "dtype"})


def run_layer_test(layer_cls: Callable[..., keras.layers.Layer], init_kwargs: Mapping[str, Any],
                   input_data: np.ndarray | Sequence[np.ndarray], *, tmp_path: Path,
                   call_kwargs: Mapping[str, Any] | None = None, onnx: bool | str = True,
                   expected_output_shape: tuple[int, ...] | None = None,
                   float16_dtype: str = "float16") -> None:
    """Run the checks of this module (0-4) on ``layer_cls(**init_kwargs)``.

    Args:
        layer_cls: the layer class, or a factory returning a layer (e.g. ``create_op``
            with its name bound); the checks use the class of the layer it returns.
        init_kwargs: constructor (factory) arguments.
        input_data: one input array, or a list of them for a layer taking a list of inputs.
        tmp_path: a directory for the ``.keras`` and ``.onnx`` files.
        call_kwargs: extra call arguments (constants, e.g. ``weights``), besides ``training``.
        onnx: ``True`` to run the ONNX check; a string skips it and is the reason.
        expected_output_shape: when given, the output shape is asserted too.
        float16_dtype: the expected output dtype under ``mixed_float16``.
    """
    call_kwargs = dict(call_kwargs or {})
    inputs = _as_list(input_data)
    layer = layer_cls(**init_kwargs)
    outputs = _arrays(layer(_unlist(inputs), training=False, **call_kwargs))
    assert all(np.all(np.isfinite(o)) for o in outputs), (
        f"{type(layer).__name__} gives non-finite outputs")
    if expected_output_shape is not None:
        assert outputs[0].shape == tuple(expected_output_shape)

    check_config_round_trip(layer, init_kwargs if isinstance(layer_cls, type) else None)
    model = _wrap(layer, inputs, call_kwargs)
    symbolic = [tuple(o.shape)[1:] for o in model.outputs]
    assert symbolic == [o.shape[1:] for o in outputs], (
        f"{type(layer).__name__}: symbolic output shapes {symbolic} != actual "
        f"{[o.shape for o in outputs]}")
    _assert_equal(_predict(model, inputs), outputs)
    check_gradients(layer, inputs, call_kwargs)
    check_keras_reload(model, inputs, tmp_path / "layer.keras")
    check_float16(layer_cls, init_kwargs, inputs, call_kwargs, float16_dtype)
    if onnx is True:
        check_onnx(model, inputs, tmp_path / "layer.onnx")
    else:
        assert isinstance(onnx, str) and onnx, "give the reason for skipping the ONNX check"
        warnings.warn(f"{type(layer).__name__}: ONNX check skipped: {onnx}", stacklevel=2)


def check_config_round_trip(layer: keras.layers.Layer,
                            init_kwargs: Mapping[str, Any] | None = None) -> None:
    """``from_config(get_config())`` has an equal config; every constructor argument is in the
    config; the given constructor arguments come back (JSON-like equality)."""
    cls = type(layer)
    config = layer.get_config()
    clone = cls.from_config(config)
    assert clone.get_config() == config, f"{cls.__name__}: config does not round trip"
    missing = [name for name in constructor_arguments(cls) if name not in config]
    assert not missing, f"{cls.__name__}.get_config() lacks constructor argument(s) {missing}"
    for key, value in (init_kwargs or {}).items():
        if key in _BASE_KEYS:
            continue
        assert _plain(config[key]) == _plain(value), (
            f"{cls.__name__}: get_config()[{key!r}] = {config[key]!r}, constructed with {value!r}")


def constructor_arguments(cls: type) -> list[str]:
    """Named arguments of ``cls.__init__`` (no ``self``, ``*args``, ``**kwargs``)."""
    params = inspect.signature(cls.__init__).parameters.values()
    return [p.name for p in params if p.name != "self"
            and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]


def check_gradients(layer: keras.layers.Layer, inputs: list[np.ndarray],
                    call_kwargs: Mapping[str, Any]) -> None:
    """In training mode every trainable weight gets a finite gradient (not ``None``)."""
    import tensorflow as tf

    with tf.GradientTape() as tape:
        out = layer(_unlist(inputs), training=True, **call_kwargs)
        loss = tf.add_n([tf.reduce_sum(tf.square(tf.cast(o, tf.float32)))
                         for o in keras.tree.flatten(out)])
    weights = layer.trainable_weights
    grads = tape.gradient(loss, [w.value for w in weights])
    name = type(layer).__name__
    none = [w.path for w, g in zip(weights, grads) if g is None]
    assert not none, f"{name}: no gradient for trainable weight(s) {none}"
    bad = [w.path for w, g in zip(weights, grads) if not np.all(np.isfinite(_np(g)))]
    assert not bad, f"{name}: non-finite gradient for {bad}"


def check_keras_reload(model: keras.Model, inputs: list[np.ndarray], path: Path) -> None:
    """Save ``model`` as ``.keras``, load it without custom objects: identical outputs."""
    model.save(path)
    restored = keras.saving.load_model(path)
    _assert_equal(_predict(restored, inputs), _predict(model, inputs))


def check_float16(layer_cls: Callable[..., keras.layers.Layer], init_kwargs: Mapping[str, Any],
                  inputs: list[np.ndarray], call_kwargs: Mapping[str, Any],
                  expected_dtype: str = "float16") -> None:
    """Built under ``mixed_float16``: outputs of ``expected_dtype``, finite, in inference and
    training mode. The global dtype policy is restored."""
    with dtype_policy("mixed_float16"):
        layer = layer_cls(**init_kwargs)
        assert layer.compute_dtype == "float16"
        for training in (False, True):
            name = type(layer).__name__
            for out in keras.tree.flatten(layer(_unlist(inputs), training=training,
                                                **call_kwargs)):
                assert keras.backend.standardize_dtype(out.dtype) == expected_dtype, (
                    f"{name} (training={training}) outputs {out.dtype} under mixed_float16")
                assert np.all(np.isfinite(_np(out))), (
                    f"{name} (training={training}) gives non-finite float16 outputs")


@contextlib.contextmanager
def dtype_policy(name: str) -> Iterator[None]:
    """Set the global Keras dtype policy for the block; restore the previous one."""
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy(name)
    try:
        yield
    finally:
        keras.config.set_dtype_policy(previous)


def check_onnx(model: keras.Model, inputs: list[np.ndarray], path: Path) -> None:
    """Convert ``model`` as :mod:`aca_keras.exporting` does and compare onnxruntime's outputs
    with Keras's."""
    import onnxruntime as ort

    from aca_keras.exporting.metadata import INPUT_NAME
    from aca_keras.exporting.onnx import write_onnx

    assert len(inputs) == 1 and len(model.outputs) == 1, (
        "the ONNX check takes single-input, single-output layers")
    shape = tuple(inputs[0].shape[1:])
    # exporting's input name; the model is re-wired on an input of that name
    images = keras.Input(shape=shape, name=INPUT_NAME)
    graph = keras.Model(images, model(images))
    metadata = {"aca_keras_version": "test", "input_shape": list(shape), "class_names": None,
                "architecture": None}
    write_onnx(graph, path, shape, None, "output", None, metadata)
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    got = session.run(["output"], {INPUT_NAME: inputs[0]})[0]
    expected = _predict(graph, inputs)[0]
    assert got.shape == expected.shape
    np.testing.assert_allclose(got, expected, atol=ONNX_ATOL, rtol=ONNX_RTOL,
                               err_msg="onnxruntime differs from Keras")


# ------------------------------------------------------------------------------- helpers


def _as_list(data: np.ndarray | Sequence[np.ndarray]) -> list[np.ndarray]:
    if isinstance(data, np.ndarray):
        return [data]
    return [np.asarray(d) for d in data]


def _unlist(inputs: list[Any]) -> Any:
    return inputs[0] if len(inputs) == 1 else list(inputs)


def _np(x: Any) -> np.ndarray:
    return np.asarray(keras.ops.convert_to_numpy(x))


def _wrap(layer: keras.layers.Layer, inputs: list[np.ndarray],
          call_kwargs: Mapping[str, Any]) -> keras.Model:
    """A functional model ``inputs -> layer(inputs, **call_kwargs)`` (inference mode)."""
    symbolic = [keras.Input(shape=x.shape[1:], dtype=str(x.dtype)) for x in inputs]
    return keras.Model(_unlist(symbolic), layer(_unlist(symbolic), **call_kwargs))


def _arrays(outputs: Any) -> list[np.ndarray]:
    return [_np(o) for o in keras.tree.flatten(outputs)]


def _predict(model: keras.Model, inputs: list[np.ndarray]) -> list[np.ndarray]:
    return _arrays(model(_unlist(inputs), training=False))


def _assert_equal(got: list[np.ndarray], expected: list[np.ndarray]) -> None:
    assert len(got) == len(expected)
    for g, e in zip(got, expected):
        np.testing.assert_array_equal(g, e)


def _plain(value: Any) -> Any:
    """Tuples as lists, recursively (a config holds lists where the constructor got tuples)."""
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, Mapping):
        return {k: _plain(v) for k, v in value.items()}
    return value


def inputs_like(shape: tuple[int, ...], seed: int = 0, low: float = -2.0,
                high: float = 2.0) -> np.ndarray:
    """Deterministic float32 test inputs."""
    return np.random.default_rng(seed).uniform(low, high, shape).astype("float32")


__all__ = ["ONNX_ATOL", "ONNX_RTOL", "check_config_round_trip", "check_float16",
           "check_gradients", "check_keras_reload", "check_onnx", "constructor_arguments", "dtype_policy",
           "inputs_like", "run_layer_test"]


def tiny_architecture(name: str | None = None):
    """A small hand-made architecture (reference C = 4, two nodes per cell) with every kind
    of edge: full, partial and zero k_e, pools and convolutions, stride 1 and 2. Shared by
    the training, tuning and TensorBoard tests."""
    from aca_keras.space.architecture import Architecture, CellSpec, EdgeSpec

    normal = CellSpec((EdgeSpec(0, 0, "sep_conv_3x3", 4), EdgeSpec(0, 1, "max_pool_3x3", 2),
                       EdgeSpec(1, 0, "dil_conv_3x3", 0), EdgeSpec(1, 2, "avg_pool_3x3", 3)),
                      (2, 3))
    reduce = CellSpec((EdgeSpec(0, 0, "sep_conv_5x5", 1), EdgeSpec(0, 1, "max_pool_3x3", 0),
                       EdgeSpec(1, 0, "dil_conv_5x5", 4), EdgeSpec(1, 2, "sep_conv_3x3", 2)),
                      (2, 3))
    ops = ("none", "max_pool_3x3", "avg_pool_3x3", "sep_conv_3x3", "sep_conv_5x5",
           "dil_conv_3x3", "dil_conv_5x5")
    return Architecture(normal, reduce, 4, ops, name=name)
