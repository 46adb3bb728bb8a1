"""The evaluation stage as a keras-tuner ``HyperModel``: :class:`DerivedHyperModel` builds
the derived network of a fixed architecture (:func:`aca_keras.build_model`) with tunable
evaluation settings and compiles it with the DARTS evaluation optimiser.

Example::

    import keras_tuner as kt
    from aca_keras.tuning import DerivedHyperModel

    hypermodel = DerivedHyperModel(architecture, (32, 32, 3), 10, cells=(8, 14))
    tuner = kt.RandomSearch(hypermodel, objective=hypermodel.objective, max_trials=10)
    tuner.search(x_train, y_train, validation_split=0.2, epochs=20, batch_size=96)
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import keras
import keras_tuner as kt
import numpy as np
import tensorflow as tf

from aca_keras import data as data_lib
from aca_keras.errors import ArchitectureError
from aca_keras.io.run_dir import RunDir
from aca_keras.models.derived import build_model
from aca_keras.optimizers import L2SGD
from aca_keras.space.architecture import Architecture
from aca_keras.space.validation import is_int
from aca_keras.training.compiling import ACCURACY, compile_derived
from aca_keras.tuning.hyperparameters import Spec, float_param, int_param

__all__ = ["OBJECTIVE", "DerivedHyperModel"]

OBJECTIVE = f"val_{ACCURACY}"
"""The metric :class:`DerivedHyperModel` tunes for: the validation accuracy of the main output
(``logits``), with or without the auxiliary head (maximise it)."""


def _load_architecture(architecture: Any) -> Architecture:
    if isinstance(architecture, Architecture):
        return architecture
    if isinstance(architecture, Mapping):
        return Architecture.from_dict(architecture)
    if isinstance(architecture, (str, os.PathLike)):
        path = Path(architecture)
        if path.is_dir():
            path = RunDir(path).architecture
        return Architecture.load(path)
    raise ArchitectureError(
        f"architecture must be an Architecture, its dict, an {RunDir.ARCHITECTURE} path or a run "
        f"directory, got {type(architecture).__name__}")


class _EvaluationSchedule(keras.callbacks.Callback):
    """Per epoch: cosine learning rate from ``learning_rate`` towards 0, and the DARTS linear
    drop path ramp ``p = drop_path * epoch / epochs``."""

    def __init__(self, learning_rate: float, drop_path: float, epochs: int):
        super().__init__()
        self.learning_rate = float(learning_rate)
        self.drop_path = float(drop_path)
        self.epochs = max(1, int(epochs))

    def on_epoch_begin(self, epoch, logs=None):
        fraction = min(epoch, self.epochs) / self.epochs
        self.model.optimizer.learning_rate = (
            0.5 * self.learning_rate * (1.0 + math.cos(math.pi * fraction)))
        self.model.set_drop_path_rate(self.drop_path * fraction)


def _both_outputs(y: Any) -> Any:
    """``y`` for the two outputs of a network with the auxiliary head."""
    if y is None or isinstance(y, Mapping):
        return y
    if isinstance(y, np.ndarray) or not isinstance(y, (list, tuple)):
        return {"logits": y, "aux_logits": y}
    return y  # already one target per output


def _map_dataset(dataset: tf.data.Dataset) -> tf.data.Dataset:
    spec = dataset.element_spec
    if not isinstance(spec, tuple) or len(spec) < 2 or isinstance(spec[1], (dict, tuple)):
        return dataset

    def duplicate(x, y, *rest):
        return (x, {"logits": y, "aux_logits": y}, *rest)

    return dataset.map(duplicate, num_parallel_calls=tf.data.AUTOTUNE)


def _as_float_images(x: Any) -> Any:
    if isinstance(x, np.ndarray) and np.issubdtype(x.dtype, np.integer):
        return x.astype(np.float32)
    return x


class DerivedHyperModel(kt.HyperModel):
    """A keras-tuner ``HyperModel`` for the evaluation stage of one architecture.

    ``build(hp)`` returns a compiled :class:`~aca_keras.models.derived.DerivedNetwork`. The model
    takes raw pixels (0-255) like every aca_keras model; ``mean``/``std`` are the data's
    per-channel statistics on the 0-1 scale (``DataBundle.mean``/``.std``,
    :meth:`for_data` takes them from a bundle).

    Tuned hyperparameters and their default ranges (each narrowed or fixed by the
    constructor argument of the same name, see :mod:`aca_keras.tuning.hyperparameters`):

    | hyperparameter | default range |
    | --- | --- |
    | ``cells`` | 8, 14 or 20 (``hp.Int(8, 20, step=6)``) |
    | ``channels`` | 16 to 36 in steps of 4 |
    | ``drop_path`` | 0.0 to 0.3 in steps of 0.1 |
    | ``learning_rate`` | 0.005 to 0.1, log scale (SGD, DARTS: 0.025) |
    | ``weight_decay`` | 1e-4 to 1e-3, log scale (coupled L2, DARTS: 3e-4) |
    | ``auxiliary_weight`` | 0.0 to 0.8 in steps of 0.2 (only with ``auxiliary=True``) |

    The model is compiled with :class:`~aca_keras.optimizers.L2SGD` (momentum 0.9, global
    gradient clip 5) by :func:`~aca_keras.training.compiling.compile_derived`, as
    :func:`aca_keras.train` compiles it: sparse categorical cross-entropy on the logits; with
    the auxiliary head, the loss is ``logits + auxiliary_weight * aux_logits`` (DARTS). The
    main output's accuracy is logged as ``logits_accuracy`` (``val_logits_accuracy`` on
    validation data) with and without the auxiliary head: use :attr:`objective`.

    :meth:`fit` (what keras-tuner calls with the arguments of ``tuner.search``) feeds the same
    labels to both outputs, so ``tuner.search(x, y, ...)`` works with arrays and with
    ``tf.data`` datasets of ``(images, labels)``, decays the learning rate by a per-epoch
    cosine to 0 over ``epochs`` and ramps drop path up linearly, as the DARTS recipe does.
    Augmentation (pad-and-crop, cutout) is not applied: that is :func:`aca_keras.train`'s
    job, for the final training with the best hyperparameters.

    Args:
        architecture: an :class:`~aca_keras.space.architecture.Architecture`, its dict, the path
            of an ``architecture.json`` or a search run directory.
        input_shape: image shape ``(H, W, C)``.
        num_classes: number of classes.
        mean: per-channel mean on the 0-1 scale (default 0.5).
        std: per-channel standard deviation on the 0-1 scale (default 0.5).
        cells: tunable, see above.
        channels: tunable, see above.
        drop_path: tunable, see above.
        learning_rate: tunable, see above.
        weight_decay: tunable, see above.
        auxiliary_weight: tunable, see above.
        auxiliary: build the auxiliary head (fixed, default ``True`` as DARTS).
        momentum: SGD momentum (fixed).
        grad_clip: global-norm gradient clip (fixed); ``None`` for none.
        stem_multiplier: stem width multiplier (fixed).
        name: the hypermodel's name.
        tunable: keras-tuner's flag: whether the hyperparameters are added to the space.
    """

    def __init__(self, architecture: Any, input_shape: Sequence[int], num_classes: int, *,
                 mean: Sequence[float] | None = None, std: Sequence[float] | None = None,
                 cells: Spec = None, channels: Spec = None, drop_path: Spec = None,
                 learning_rate: Spec = None, weight_decay: Spec = None,
                 auxiliary_weight: Spec = None, auxiliary: bool = True, momentum: float = 0.9,
                 grad_clip: float | None = 5.0, stem_multiplier: int = 3,
                 name: str | None = None, tunable: bool = True):
        super().__init__(name=name, tunable=tunable)
        self.architecture = _load_architecture(architecture)
        self.input_shape = tuple(int(d) for d in input_shape)
        if len(self.input_shape) != 3 or min(self.input_shape) < 1:
            raise ValueError(f"input_shape must be (height, width, channels), got "
                             f"{tuple(input_shape)}")
        if not is_int(num_classes) or num_classes < 1:
            raise ValueError(f"num_classes must be a positive integer, got {num_classes!r}")
        self.num_classes = int(num_classes)
        self.mean = None if mean is None else tuple(float(m) for m in mean)
        self.std = None if std is None else tuple(float(s) for s in std)
        self.cells = cells
        self.channels = channels
        self.drop_path = drop_path
        self.learning_rate = learning_rate
        self.weight_decay = weight_decay
        self.auxiliary_weight = auxiliary_weight
        self.auxiliary = bool(auxiliary)
        self.momentum = float(momentum)
        self.grad_clip = None if grad_clip is None else float(grad_clip)
        self.stem_multiplier = int(stem_multiplier)
        self.settings(kt.HyperParameters())  # check every setting now, not in the first trial

    @classmethod
    def for_data(cls, architecture: Any, dataset: Any, **kwargs: Any) -> DerivedHyperModel:
        """A hypermodel for a data set: ``input_shape``, ``num_classes``, ``mean`` and ``std``
        come from ``dataset`` (a :class:`~aca_keras.data.DataBundle` or anything
        :func:`aca_keras.data.load` accepts); other arguments are the constructor's."""
        bundle = data_lib.load(dataset)
        return cls(architecture, bundle.input_shape, bundle.num_classes, mean=bundle.mean,
                   std=bundle.std, **kwargs)

    @property
    def objective(self) -> kt.Objective:
        """``keras_tuner.Objective("val_logits_accuracy", "max")``, to pass to a tuner."""
        return kt.Objective(OBJECTIVE, direction="max")

    def settings(self, hp: kt.HyperParameters) -> dict[str, Any]:
        """Declare the hyperparameters in ``hp`` and return their values for this trial."""
        out = {
            "cells": int_param(hp, "cells", self.cells, (8, 20, 6)),
            "channels": int_param(hp, "channels", self.channels, (16, 36, 4)),
            "drop_path": float_param(hp, "drop_path", self.drop_path, (0.0, 0.3, "linear", 0.1),
                                      high_limit=1.0, high_open=True),
            "learning_rate": float_param(hp, "learning_rate", self.learning_rate,
                                          (0.005, 0.1, "log", None), low_limit=1e-12),
            "weight_decay": float_param(hp, "weight_decay", self.weight_decay,
                                         (1e-4, 1e-3, "log", None)),
        }
        if self.auxiliary:
            out["auxiliary_weight"] = float_param(hp, "auxiliary_weight", self.auxiliary_weight,
                                                   (0.0, 0.8, "linear", 0.2))
        elif self.auxiliary_weight is not None:
            raise ValueError("auxiliary_weight is tuned only with auxiliary=True")
        return out

    def build(self, hp: kt.HyperParameters) -> keras.Model:
        """Build and compile the derived network for the values in ``hp``."""
        v = self.settings(hp)
        auxiliary_weight = v.get("auxiliary_weight", 0.4)
        model = build_model(self.architecture, self.input_shape, self.num_classes,
                            cells=v["cells"], channels=v["channels"],
                            stem_multiplier=self.stem_multiplier, auxiliary=self.auxiliary,
                            auxiliary_weight=auxiliary_weight, drop_path=v["drop_path"],
                            mean=self.mean, std=self.std)
        optimizer = L2SGD(learning_rate=v["learning_rate"], momentum=self.momentum,
                          l2=v["weight_decay"], global_clipnorm=self.grad_clip)
        # the training recipe's losses and metrics; its optimiser is built at once, so that
        # saved weights reload whole. jit_compile stays Keras's own default ("auto").
        return compile_derived(model, optimizer, auxiliary_weight, jit_compile="auto")

    def fit(self, hp: kt.HyperParameters, model: keras.Model, *args: Any, **kwargs: Any) -> Any:
        """``model.fit(*args, **kwargs)`` with the labels fed to both outputs, the per-epoch
        cosine learning rate and the drop path ramp (see the class docstring)."""
        args = list(args)
        if args:
            args[0] = _as_float_images(args[0])
        elif "x" in kwargs:
            kwargs["x"] = _as_float_images(kwargs["x"])
        if self.auxiliary:
            if len(args) >= 2:
                args[1] = _both_outputs(args[1])
            elif "y" in kwargs:
                kwargs["y"] = _both_outputs(kwargs["y"])
            if args and isinstance(args[0], tf.data.Dataset):
                args[0] = _map_dataset(args[0])
            elif isinstance(kwargs.get("x"), tf.data.Dataset):
                kwargs["x"] = _map_dataset(kwargs["x"])
        if isinstance(args[0] if args else kwargs.get("x"), tf.data.Dataset):
            kwargs.setdefault("shuffle", False)  # a dataset brings its own order
        validation = kwargs.get("validation_data")
        if isinstance(validation, tf.data.Dataset):
            kwargs["validation_data"] = _map_dataset(validation) if self.auxiliary else validation
        elif isinstance(validation, (tuple, list)) and len(validation) >= 2:
            images = _as_float_images(validation[0])
            labels = _both_outputs(validation[1]) if self.auxiliary else validation[1]
            kwargs["validation_data"] = (images, labels, *validation[2:])
        schedule = _EvaluationSchedule(float(keras.ops.convert_to_numpy(
            model.optimizer.learning_rate)), model.drop_path, kwargs.get("epochs", 1))
        kwargs["callbacks"] = [schedule, *list(kwargs.get("callbacks") or [])]
        return model.fit(*args, **kwargs)
