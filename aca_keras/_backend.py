"""Checks that TensorFlow and the TensorFlow backend of Keras are available."""

from __future__ import annotations

import importlib.util
import os

_INSTALL_HINT = (
    "aca_keras needs TensorFlow, which is installed through an extra so that only one "
    "TensorFlow distribution is present: `pip install 'aca-keras[cpu]'` (tensorflow-cpu) or "
    "`pip install 'aca-keras[gpu]'` (tensorflow[and-cuda])."
)


def tensorflow_available() -> bool:
    """True when some TensorFlow distribution is importable (without importing it)."""
    return importlib.util.find_spec("tensorflow") is not None


def require_tensorflow() -> None:
    """Raise a clear ImportError when TensorFlow is missing or Keras uses another backend."""
    if not tensorflow_available():
        raise ImportError(f"TensorFlow is not installed. {_INSTALL_HINT}")
    backend = os.environ.get("KERAS_BACKEND")
    if backend is not None and backend != "tensorflow":
        raise ImportError(
            f"KERAS_BACKEND is set to {backend!r}, but aca_keras runs on the TensorFlow backend. "
            "Unset KERAS_BACKEND or set it to 'tensorflow'."
        )
