"""The inference graph that is exported: ``images -> logits|probabilities``, float32.

For a :class:`~aca_keras.models.derived.DerivedNetwork` it is
:meth:`~aca_keras.models.derived.DerivedNetwork.inference_model` (no auxiliary head, no drop
path; BatchNorm in inference mode), re-wired on one input named ``images`` (raw pixels 0-255,
float32, NHWC: the model normalises itself); any other single-input, single-output image model
is exported as it is, with a warning.

Mixed precision: a model whose layers compute in another dtype than float32 (e.g. a
``mixed_float16`` policy) is exported as a float32 *clone* (same config, float32 policy, same
weights), with a warning. A quantized dtype policy is refused.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Callable
from typing import Any

import keras
import tensorflow as tf

from aca_keras import _internals as internals
from aca_keras.errors import ExportError
from aca_keras.exporting.metadata import INPUT_NAME
from aca_keras.models.cloning import clone_model


def inference_graph(model: Any, output: str) -> tuple[keras.Model, dict[str, Any]]:
    """The float32 ``images -> logits|probabilities`` graph to export, and facts about it
    (``model_class``, ``architecture``, ``model_config``, ``original_dtype_policy``,
    ``num_classes``)."""
    info: dict[str, Any] = {"model_class": type(model).__name__, "architecture": None,
                            "model_config": None, "original_dtype_policy": None}
    policy = _non_float32_policy(model)
    if policy is not None:
        if "int" in policy or "float8" in policy or "quant" in policy:
            raise ExportError(
                f"The model uses the quantized dtype policy {policy!r}; aca_keras exports "
                "float32 graphs. Export the float model before quantizing it.")
        warnings.warn(
            f"The model computes with dtype policy {policy!r}; exporting a float32 clone of it "
            "(same weights). Outputs differ from the original by the mixed-precision rounding.",
            stacklevel=3)
        info["original_dtype_policy"] = policy
        model = _float32_clone(model)

    if callable(getattr(model, "inference_model", None)) and hasattr(model, "architecture"):
        arch = model.architecture
        info["architecture"] = arch.to_dict() if hasattr(arch, "to_dict") else None
        try:  # the macro settings (cells, channels, mean, std, ...); the spec is stored once
            config = json.loads(json.dumps(model.get_config()))
            config.pop("architecture", None)
            info["model_config"] = config
        except (TypeError, ValueError, NotImplementedError, AttributeError):
            info["model_config"] = None
        inner = model.inference_model()
    else:
        warnings.warn(
            f"{type(model).__name__} {getattr(model, 'name', '')!r} is not an aca_keras model "
            "(no inference_model()/architecture); exporting it as a plain Keras model, "
            "without architecture metadata.", stacklevel=3)
        inner = model

    inputs = getattr(inner, "inputs", None)
    outputs = getattr(inner, "outputs", None)
    if not getattr(inner, "built", False) or not inputs:
        raise ExportError(f"{type(inner).__name__} has not been built; call it on data or "
                          "build it with an input shape before exporting.")
    if len(inputs) != 1 or (outputs is not None and len(outputs) != 1):
        raise ExportError(f"aca_keras exports models with one image input and one output; "
                          f"this model has {len(inputs)} input(s) and "
                          f"{len(outputs or [])} output(s).")
    shape = tuple(inputs[0].shape)
    if any(d is None for d in shape[1:]):
        raise ExportError(f"The model's input shape {shape} has unknown dimensions; build it "
                          "with a fixed input shape (H, W, C).")
    if str(inputs[0].dtype) != "float32":
        raise ExportError(f"The model's input dtype is {inputs[0].dtype}; aca_keras exports "
                          "float32 image inputs.")
    images = keras.Input(shape=shape[1:], name=INPUT_NAME, dtype="float32")
    y = inner(images)
    if output == "probabilities":
        y = keras.layers.Softmax(name="probabilities")(y)
    graph = keras.Model(images, y, name="aca_keras_export")
    out_shape = tuple(graph.output_shape)
    if len(out_shape) != 2 or out_shape[1] is None:
        raise ExportError(f"The model's output shape {out_shape} is not (batch, classes).")
    info["num_classes"] = int(out_shape[1])
    return graph, info


def input_signature(input_shape: tuple[int, ...], batch_size: int | None
                    ) -> list[tf.TensorSpec]:
    """The serving signature: one float32 ``images`` tensor (batch ``None`` = dynamic)."""
    return [tf.TensorSpec((batch_size, *input_shape), tf.float32, name=INPUT_NAME)]


def serving_fn(graph: keras.Model, output: str) -> Callable[[Any], dict[str, Any]]:
    """``images -> {output: graph(images)}``, the function every format serves."""

    def serve(images):
        return {output: graph(images, training=False)}

    return serve


# ------------------------------------------------------------------------ mixed precision


def _non_float32_policy(model: Any) -> str | None:
    layers = internals.sublayers(model) if isinstance(model, keras.layers.Layer) else [model]
    for layer in layers:
        policy = getattr(layer, "dtype_policy", None)
        name = getattr(policy, "name", None)
        if name is not None and name != "float32":
            return str(name)
    return None


def _float32_clone(model: Any) -> Any:
    try:
        return clone_model(model, dtype_policy="float32")
    except Exception as exc:
        raise ExportError(
            f"Could not make a float32 clone of the mixed-precision model ({exc}). Rebuild it "
            "under keras.config.set_dtype_policy('float32'), copy the weights with "
            "set_weights(model.get_weights()), and export that.") from exc
