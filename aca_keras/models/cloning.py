"""Copies of Keras models: the one way aca_keras clones a model.

Used to move a model into a ``tf.distribute`` strategy scope or a mixed-precision policy
(training), to export a float32 copy of a mixed-precision model (export) and to publish a
model without its optimizer (zoo).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping
from typing import Any

import keras

__all__ = ["clone_model"]

_LOW_PRECISION = {"float16", "bfloat16", "mixed_float16", "mixed_bfloat16"}


def clone_model(model: Any, *, dtype_policy: str | None = None,
                overrides: Mapping[str, Any] | None = None) -> Any:
    """A copy of ``model``: same class and configuration, every variable copied (weights,
    BatchNorm statistics, random-generator states), nothing compiled (no optimizer).

    The copy is created in the current strategy scope. With ``dtype_policy`` (e.g.
    ``"float32"``) every low-precision dtype policy in the model's configuration is replaced
    by it and the copy is created under that global policy; the variables are cast to the
    copy's dtypes. Without it, the copy is created under the current global policy.
    ``overrides`` replaces top-level configuration entries that do not change the variables
    (e.g. ``{"sync_batch_norm": True}`` for training under a strategy).

    Raises:
        ValueError: the copy does not have the model's variables (a configuration that does
            not describe the model).
    """
    config = {**model.get_config(), **dict(overrides or {})}
    if dtype_policy is not None:
        config = _with_policy(config, dtype_policy)
    with _global_policy(dtype_policy):
        clone = type(model).from_config(config)
        if not clone.built:
            clone.build((None,) + tuple(model.input_shape[1:]))
    source, target = list(model.variables), list(clone.variables)
    if len(source) != len(target) or any(
            tuple(a.shape) != tuple(b.shape) for a, b in zip(source, target)):
        raise ValueError(f"Could not copy {type(model).__name__}: its rebuilt copy has other "
                         "variables.")
    for src, dst in zip(source, target):
        value = keras.ops.convert_to_numpy(src)
        dst.assign(value.astype(keras.backend.standardize_dtype(dst.dtype)))
    return clone


@contextlib.contextmanager
def _global_policy(name: str | None) -> Iterator[None]:
    if name is None:
        yield
        return
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy(name)
    try:
        yield
    finally:
        keras.config.set_dtype_policy(previous)


def _with_policy(config: Any, name: str) -> Any:
    """A copy of a model configuration with every low-precision dtype policy replaced by
    ``name``."""
    if isinstance(config, dict):
        out = {}
        for key, value in config.items():
            if (key == "dtype" and isinstance(value, dict)
                    and "Policy" in str(value.get("class_name", ""))):
                value = {**value, "config": {**value.get("config", {}), "name": name}}
            elif key == "dtype" and isinstance(value, str) and value in _LOW_PRECISION:
                value = name
            else:
                value = _with_policy(value, name)
            out[key] = value
        return out
    if isinstance(config, list):
        return [_with_policy(v, name) for v in config]
    return config
