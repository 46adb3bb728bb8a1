"""Tunable settings as keras-tuner hyperparameters: every tunable setting of
:class:`~aca_keras.tuning.DerivedHyperModel` and :class:`~aca_keras.tuning.SearchSpace` is
given the same way, as a constructor argument (a :data:`Spec`):

| value | meaning |
| --- | --- |
| ``None`` | the default range (see each class) |
| a number or a string | fixed to that value (``hp.Fixed``) |
| ``(low, high)`` | a narrowed range (``hp.Int``/``hp.Float``; ``(low, high, step)`` for integers) |
| a list | a choice among these values (``hp.Choice``) |

Each ``*_param`` function declares the hyperparameter in ``hp`` (or reads it back on a later
trial) and checks the values.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import keras_tuner as kt
import numpy as np

from aca_keras.space.validation import is_int

Spec = Any
"""``None | number | str | tuple | list``: see the module docstring."""


def is_number(value: Any) -> bool:
    return isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(
        value, (bool, np.bool_))


def int_param(hp: kt.HyperParameters, name: str, spec: Spec,
               default: tuple[int, int, int], minimum: int = 1) -> int:
    """Declare (or read) the integer hyperparameter ``name`` from ``spec``."""

    def check(value: Any) -> int:
        if not is_int(value) or value < minimum:
            raise ValueError(f"{name} values must be integers >= {minimum}, got {value!r}")
        return int(value)

    if spec is None:
        low, high, step = default
        return hp.Int(name, low, high, step=step)
    if is_int(spec):
        return hp.Fixed(name, check(spec))
    if isinstance(spec, tuple) and len(spec) in (2, 3):
        low, high = check(spec[0]), check(spec[1])
        step = check(spec[2]) if len(spec) == 3 else 1
        if low > high:
            raise ValueError(f"{name}: the range {spec} has low > high")
        return hp.Fixed(name, low) if low == high else hp.Int(name, low, high, step=step)
    if isinstance(spec, list) and spec:
        values = sorted({check(v) for v in spec})
        return hp.Fixed(name, values[0]) if len(values) == 1 else hp.Choice(name, values)
    raise ValueError(f"{name} must be None, an integer, a (low, high[, step]) tuple or a "
                     f"non-empty list of integers, got {spec!r}")


def float_param(hp: kt.HyperParameters, name: str, spec: Spec,
                 default: tuple[float, float, str, float | None],
                 low_limit: float = 0.0, high_limit: float = math.inf,
                 high_open: bool = False) -> float:
    """Declare (or read) the float hyperparameter ``name`` from ``spec``.

    ``default`` is ``(low, high, sampling, step)``; a narrowed range keeps the default's
    sampling when it is valid for the range (log needs ``low > 0``).
    """

    def check(value: Any) -> float:
        if not is_number(value) or not math.isfinite(float(value)):
            raise ValueError(f"{name} values must be finite numbers, got {value!r}")
        value = float(value)
        if value < low_limit or value > high_limit or (high_open and value >= high_limit):
            bound = f"< {high_limit}" if high_open else f"<= {high_limit}"
            raise ValueError(f"{name} values must be >= {low_limit} and {bound}, got {value}")
        return value

    if spec is None:
        low, high, sampling, step = default
        return hp.Float(name, low, high, step=step, sampling=sampling)
    if is_number(spec):
        return hp.Fixed(name, check(spec))
    if isinstance(spec, tuple) and len(spec) == 2:
        low, high = check(spec[0]), check(spec[1])
        if low > high:
            raise ValueError(f"{name}: the range {spec} has low > high")
        if low == high:
            return hp.Fixed(name, low)
        sampling = default[2] if (default[2] != "log" or low > 0) else "linear"
        return hp.Float(name, low, high, sampling=sampling)
    if isinstance(spec, list) and spec:
        values = sorted({check(v) for v in spec})
        return hp.Fixed(name, values[0]) if len(values) == 1 else hp.Choice(name, values)
    raise ValueError(f"{name} must be None, a number, a (low, high) tuple or a non-empty list "
                     f"of numbers, got {spec!r}")


def choice_param(hp: kt.HyperParameters, name: str, spec: Spec, default: Sequence[str],
                  check: Callable[[str], Any]) -> str:
    """Declare (or read) the string hyperparameter ``name`` from ``spec``."""

    def valid(value: Any) -> str:
        if not isinstance(value, str) or not value:
            raise ValueError(f"{name} values must be non-empty strings, got {value!r}")
        check(value)
        return value

    if spec is None:
        values = [valid(v) for v in default]
    elif isinstance(spec, str):
        values = [valid(spec)]
    elif isinstance(spec, (list, tuple)) and spec:
        values = list(dict.fromkeys(valid(v) for v in spec))
    else:
        raise ValueError(f"{name} must be None, a string or a non-empty list of strings, got "
                         f"{spec!r}")
    return hp.Fixed(name, values[0]) if len(values) == 1 else hp.Choice(name, values)
