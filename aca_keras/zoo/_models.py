"""Building and loading zoo models.

Keras and :mod:`aca_keras.models.derived` are imported inside the functions that build or
load a model: importing :mod:`aca_keras.zoo` loads no TensorFlow (``aca-zoo list`` stays fast).
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np

from aca_keras.errors import AcaError, ZooError
from aca_keras.zoo._entry import EntryInfo, NoWeightsWarning, check_artifacts


def count_params(model: Any) -> dict[str, int]:
    """``total`` (the model as built), ``inference`` (no auxiliary head) and
    ``inference_trainable`` parameter counts of a :class:`~aca_keras.models.derived.DerivedNetwork`."""
    inference = model.inference_model()
    trainable = sum(int(np.prod(w.shape)) for w in inference.trainable_weights)
    return {"total": int(model.count_params()), "inference": int(inference.count_params()),
            "inference_trainable": int(trainable)}


def build(entry: EntryInfo, *, seed: int | None = None):
    """A freshly initialised :class:`~aca_keras.models.derived.DerivedNetwork` of an entry."""
    import keras  # lazy: see the module docstring

    from aca_keras.models.derived import build_model  # lazy: imports Keras

    architecture = entry.architecture()
    if seed is not None:
        keras.utils.set_random_seed(int(seed))
    try:
        return build_model(architecture, name=_model_name(entry.name), **entry.build_kwargs())
    except (AcaError, ValueError) as exc:
        raise ZooError(f"The zoo entry {entry.name!r} does not build: {exc}") from exc


def load_weights_file(entry: EntryInfo, compile: bool = False):
    """The model stored in the entry's ``keras`` artifact, checked against the entry."""
    from aca_keras.models.derived import DerivedNetwork, load_model  # lazy: imports Keras

    path = entry.artifact_path("keras")
    try:
        model = load_model(path, compile=compile)
    except AcaError as exc:
        raise ZooError(f"The weights of the zoo entry {entry.name!r} cannot be loaded from "
                       f"{path}: {exc}") from exc
    if not isinstance(model, DerivedNetwork):
        raise ZooError(f"{path} holds a {type(model).__name__}, not an aca_keras "
                       "DerivedNetwork; zoo weights must be saved from build_model's model.")
    mismatch = model_mismatch(model, entry)
    if mismatch:
        raise ZooError(f"The weights file {path} does not match the entry {entry.name!r}: "
                       f"{mismatch}.")
    return model


def model_mismatch(model: Any, entry: EntryInfo) -> str | None:
    """Why a DerivedNetwork differs from what the entry records, or ``None``."""
    recorded = entry.architecture()
    arch = model.architecture
    for key in ("normal", "reduce", "reference_channels", "ops"):
        if getattr(arch, key) != getattr(recorded, key):
            return f"its architecture's {key} differs from entry.json's"
    expected = entry.build_kwargs()
    actual = {"input_shape": tuple(model.image_shape), "num_classes": model.num_classes,
              "cells": model.cells, "channels": model.channels, "nodes": model.nodes,
              "stem_multiplier": model.stem_multiplier, "auxiliary": model.auxiliary}
    for key, value in actual.items():
        want = tuple(expected[key]) if key == "input_shape" else expected[key]
        if value != want:
            return f"{key} is {value!r} in the model, {want!r} in entry.json"
    for key in ("mean", "std"):
        got, want = tuple(getattr(model, key)), tuple(expected[key])
        if len(got) != len(want) or any(abs(a - b) > 1e-6 for a, b in zip(got, want)):
            return f"{key} is {got} in the model, {want} in entry.json"
    return None


def params_mismatch(model: Any, entry: EntryInfo) -> str | None:
    """Why the model's parameter counts differ from the recorded ones, or ``None``."""
    counts = count_params(model)
    wrong = {k: (entry.params[k], v) for k, v in counts.items() if entry.params[k] != v}
    if not wrong:
        return None
    return "; ".join(f"{k}: recorded {r:,}, built {b:,}" for k, (r, b) in wrong.items())


def load_entry_model(entry: EntryInfo, weights: bool = True, *, compile: bool = False,
                     seed: int | None = None, check: bool = True):
    """See :func:`aca_keras.zoo.load`."""
    if check:
        check_artifacts(entry)
    if weights and entry.has_weights:
        model = load_weights_file(entry, compile=compile)
    else:
        if weights:
            warnings.warn(
                f"The zoo entry {entry.name!r} has no trained weights (architecture only): the "
                "model is freshly initialised. Train it (aca_keras.train) before use, or pass "
                "weights=False to silence this warning.", NoWeightsWarning, stacklevel=3)
        model = build(entry, seed=seed)
    if check:
        mismatch = params_mismatch(model, entry)
        if mismatch:
            raise ZooError(f"The model of the zoo entry {entry.name!r} does not have the "
                           f"recorded parameter counts ({mismatch}); the entry and this "
                           "aca_keras build different networks.")
    model.class_names = tuple(entry.class_names)
    model.zoo_entry = entry
    return model


def _model_name(name: str) -> str:
    return name.replace("-", "_")
