"""The versions recorded in every run directory (``config.json``, ``train_config.json``)."""

from __future__ import annotations

import platform

import keras
import numpy as np
import tensorflow as tf

from aca_keras import __version__

__all__ = ["package_versions"]


def package_versions() -> dict[str, str]:
    """Versions of the packages that determine a run's results, and the Python version and
    machine type."""
    return {"aca_keras": __version__, "tensorflow": tf.__version__,
            "keras": keras.__version__, "numpy": np.__version__,
            "python": platform.python_version(), "machine": platform.machine()}
