"""The input layers every model starts with: raw 0-255 pixels to normalised images."""

from __future__ import annotations

from collections.abc import Sequence

import keras
import numpy as np

from aca_keras.errors import DataError


def preprocessing_layers(mean: Sequence[float], std: Sequence[float]) -> list:
    """``[Rescaling(1/255), Normalization(mean, std**2)]``: raw 0-255 images to
    ``(x / 255 - mean) / std`` per channel (``mean``/``std`` on the 0-1 scale)."""
    mean_array = np.asarray(mean, dtype=np.float64).reshape(-1)
    std_array = np.asarray(std, dtype=np.float64).reshape(-1)
    if mean_array.size == 0 or mean_array.shape != std_array.shape:
        raise DataError(f"mean and std need one value per channel and the same length, got "
                        f"{len(mean_array)} and {len(std_array)} values.")
    if not (np.all(np.isfinite(std_array)) and np.all(std_array > 0)):
        raise DataError(f"std must be positive per channel, got {tuple(std_array)}.")
    return [
        keras.layers.Rescaling(1.0 / 255.0),
        keras.layers.Normalization(mean=mean_array.tolist(),
                                   variance=np.square(std_array).tolist()),
    ]
