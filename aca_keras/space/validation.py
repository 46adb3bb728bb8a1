"""Checks of plain values shared by every module that validates settings (pure Python)."""

from __future__ import annotations

import numbers
from typing import Any

__all__ = ["is_int"]


def is_int(value: Any) -> bool:
    """Whether ``value`` is an integer and not a bool: Python and NumPy integers count;
    ``True``, ``np.bool_``, ``16.0`` and ``"16"`` do not (JSON ``true`` or ``16.0`` are not
    counts)."""
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)
