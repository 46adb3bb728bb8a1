"""keras-tuner integration: tune the evaluation stage and the search itself.

Two entry points, both plain keras-tuner (https://keras.io/keras_tuner/) objects:

* :class:`DerivedHyperModel` is a ``keras_tuner.HyperModel`` whose ``build(hp)`` builds the
  derived network of a fixed architecture (:func:`aca_keras.build_model`) with tunable
  evaluation settings (cells, channels, drop path, learning rate, weight decay, auxiliary loss
  weight) and compiles it with the DARTS evaluation optimiser. Any tuner (``RandomSearch``,
  ``BayesianOptimization``, ``Hyperband``) tunes it with ``tuner.search(x, y, ...)`` or with
  ``tf.data`` datasets. The objective is the main output's validation accuracy,
  :data:`OBJECTIVE` (``"val_logits_accuracy"``), with or without the auxiliary head.
* :class:`SearchTuner` is a ``keras_tuner.Tuner`` whose trials are whole ACA searches
  (:func:`aca_keras.search`) with tunable search settings (alpha learning rate, operation
  set, allocator, seed, and the search variant where :class:`~aca_keras.search_run.SearchConfig`
  has one), each scored by a short training of its derived network
  (:func:`aca_keras.train`) on a validation split. Every trial writes a normal search run
  directory inside the tuner's project directory.

Every tunable setting is given the same way, as a constructor argument:

| value | meaning |
| --- | --- |
| ``None`` | the default range (see each class) |
| a number or a string | fixed to that value (``hp.Fixed``) |
| ``(low, high)`` | a narrowed range (``hp.Int``/``hp.Float``; ``(low, high, step)`` for integers) |
| a list | a choice among these values (``hp.Choice``) |

Example::

    import keras_tuner as kt
    from aca_keras.tuning.tuner import DerivedHyperModel

    hypermodel = DerivedHyperModel(architecture, (32, 32, 3), 10, cells=(8, 14))
    tuner = kt.RandomSearch(hypermodel, objective=hypermodel.objective, max_trials=10)
    tuner.search(x_train, y_train, validation_split=0.2, epochs=20, batch_size=96)
"""

from __future__ import annotations

import csv
import json
import math
import os
import shutil
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import keras
import keras_tuner as kt
import numpy as np
import tensorflow as tf

from aca_keras.errors import ArchitectureError, NumericalError
from aca_keras.space.architecture import Architecture

__all__ = [
    "DEFAULT_SEARCH_SETTINGS",
    "DEFAULT_TRAIN_SETTINGS",
    "OBJECTIVE",
    "SEARCH_OBJECTIVE",
    "DerivedHyperModel",
    "SearchSpace",
    "SearchTuner",
    "available_variants",
]

OBJECTIVE = "val_logits_accuracy"
"""The metric :class:`DerivedHyperModel` tunes for: the validation accuracy of the main output
(``logits``), with or without the auxiliary head (maximise it)."""

SEARCH_OBJECTIVE = "val_accuracy"
"""The objective of :class:`SearchTuner`: the accuracy of a trial's briefly trained derived
network on the tuner's validation split (maximise it)."""

SEARCH_DIR = "search"
TRAIN_DIR = "train"

DEFAULT_SEARCH_SETTINGS: dict[str, Any] = {"epochs": 10, "eval_cells": 8, "eval_channels": 16}
"""Search settings of a :class:`SearchTuner` unless ``search_settings`` says otherwise: a
short search, and a small derived network to score it."""

DEFAULT_TRAIN_SETTINGS: dict[str, Any] = {"epochs": 5}
"""Settings of the short training that scores a :class:`SearchTuner` trial."""

Spec = Any  # None | number | str | tuple | list: see the module docstring


# ------------------------------------------------------------------------ hyperparameters


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(
        value, (bool, np.bool_))


def _is_int(value: Any) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_))


def _int_param(hp: kt.HyperParameters, name: str, spec: Spec,
               default: tuple[int, int, int], minimum: int = 1) -> int:
    """Declare (or read) the integer hyperparameter ``name`` from ``spec``."""

    def check(value: Any) -> int:
        if not _is_int(value) or value < minimum:
            raise ValueError(f"{name} values must be integers >= {minimum}, got {value!r}")
        return int(value)

    if spec is None:
        low, high, step = default
        return hp.Int(name, low, high, step=step)
    if _is_int(spec):
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


def _float_param(hp: kt.HyperParameters, name: str, spec: Spec,
                 default: tuple[float, float, str, float | None],
                 low_limit: float = 0.0, high_limit: float = math.inf,
                 high_open: bool = False) -> float:
    """Declare (or read) the float hyperparameter ``name`` from ``spec``.

    ``default`` is ``(low, high, sampling, step)``; a narrowed range keeps the default's
    sampling when it is valid for the range (log needs ``low > 0``).
    """

    def check(value: Any) -> float:
        if not _is_number(value) or not math.isfinite(float(value)):
            raise ValueError(f"{name} values must be finite numbers, got {value!r}")
        value = float(value)
        if value < low_limit or value > high_limit or (high_open and value >= high_limit):
            bound = f"< {high_limit}" if high_open else f"<= {high_limit}"
            raise ValueError(f"{name} values must be >= {low_limit} and {bound}, got {value}")
        return value

    if spec is None:
        low, high, sampling, step = default
        return hp.Float(name, low, high, step=step, sampling=sampling)
    if _is_number(spec):
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


def _choice_param(hp: kt.HyperParameters, name: str, spec: Spec, default: Sequence[str],
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


# ---------------------------------------------------------------------- DerivedHyperModel


def _load_architecture(architecture: Any) -> Architecture:
    if isinstance(architecture, Architecture):
        return architecture
    if isinstance(architecture, Mapping):
        return Architecture.from_dict(architecture)
    if isinstance(architecture, (str, os.PathLike)):
        path = Path(architecture)
        if path.is_dir():
            path = path / "architecture.json"
        return Architecture.load(path)
    raise ArchitectureError(
        f"architecture must be an Architecture, its dict, an architecture.json path or a run "
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

    ``build(hp)`` returns a compiled :class:`~aca_keras.derived.DerivedNetwork`. The model
    takes raw pixels (0-255) like every aca_keras model; ``mean``/``std`` are the data's
    per-channel statistics on the 0-1 scale (``DataBundle.mean``/``.std``,
    :meth:`for_data` takes them from a bundle).

    Tuned hyperparameters and their default ranges (each narrowed or fixed by the
    constructor argument of the same name, see :mod:`aca_keras.tuning`):

    | hyperparameter | default range |
    | --- | --- |
    | ``cells`` | 8, 14 or 20 (``hp.Int(8, 20, step=6)``) |
    | ``channels`` | 16 to 36 in steps of 4 |
    | ``drop_path`` | 0.0 to 0.3 in steps of 0.1 |
    | ``learning_rate`` | 0.005 to 0.1, log scale (SGD, DARTS: 0.025) |
    | ``weight_decay`` | 1e-4 to 1e-3, log scale (coupled L2, DARTS: 3e-4) |
    | ``auxiliary_weight`` | 0.0 to 0.8 in steps of 0.2 (only with ``auxiliary=True``) |

    The model is compiled with :class:`~aca_keras.training.L2SGD` (momentum 0.9, global
    gradient clip 5) and sparse categorical cross-entropy on the logits; with the auxiliary
    head, the loss is ``logits + auxiliary_weight * aux_logits`` (DARTS). The main output's
    accuracy is logged as ``logits_accuracy`` (``val_logits_accuracy`` on validation data)
    with and without the auxiliary head: use :attr:`objective`.

    :meth:`fit` (what keras-tuner calls with the arguments of ``tuner.search``) feeds the same
    labels to both outputs, so ``tuner.search(x, y, ...)`` works with arrays and with
    ``tf.data`` datasets of ``(images, labels)``, decays the learning rate by a per-epoch
    cosine to 0 over ``epochs`` and ramps drop path up linearly, as the DARTS recipe does.
    Augmentation (pad-and-crop, cutout) is not applied: that is :func:`aca_keras.train`'s
    job, for the final training with the best hyperparameters.

    Args:
        architecture: an :class:`~aca_keras.architecture.Architecture`, its dict, the path
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
        if not _is_int(num_classes) or num_classes < 1:
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
        from aca_keras.data import loading as data_lib

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
            "cells": _int_param(hp, "cells", self.cells, (8, 20, 6)),
            "channels": _int_param(hp, "channels", self.channels, (16, 36, 4)),
            "drop_path": _float_param(hp, "drop_path", self.drop_path, (0.0, 0.3, "linear", 0.1),
                                      high_limit=1.0, high_open=True),
            "learning_rate": _float_param(hp, "learning_rate", self.learning_rate,
                                          (0.005, 0.1, "log", None), low_limit=1e-12),
            "weight_decay": _float_param(hp, "weight_decay", self.weight_decay,
                                         (1e-4, 1e-3, "log", None)),
        }
        if self.auxiliary:
            out["auxiliary_weight"] = _float_param(hp, "auxiliary_weight", self.auxiliary_weight,
                                                   (0.0, 0.8, "linear", 0.2))
        elif self.auxiliary_weight is not None:
            raise ValueError("auxiliary_weight is tuned only with auxiliary=True")
        return out

    def build(self, hp: kt.HyperParameters) -> keras.Model:
        """Build and compile the derived network for the values in ``hp``."""
        from aca_keras.models.derived import build_model
        from aca_keras.training.trainer import L2SGD

        v = self.settings(hp)
        auxiliary_weight = v.get("auxiliary_weight", 0.4)
        model = build_model(self.architecture, self.input_shape, self.num_classes,
                            cells=v["cells"], channels=v["channels"],
                            stem_multiplier=self.stem_multiplier, auxiliary=self.auxiliary,
                            auxiliary_weight=auxiliary_weight, drop_path=v["drop_path"],
                            mean=self.mean, std=self.std)
        optimizer = L2SGD(learning_rate=v["learning_rate"], momentum=self.momentum,
                          l2=v["weight_decay"], global_clipnorm=self.grad_clip)
        loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
        if self.auxiliary:
            model.compile(
                optimizer=optimizer,
                loss={"logits": loss,
                      "aux_logits": keras.losses.SparseCategoricalCrossentropy(from_logits=True)},
                loss_weights={"logits": 1.0, "aux_logits": float(auxiliary_weight)},
                metrics={"logits": [keras.metrics.SparseCategoricalAccuracy(name="accuracy")]})
        else:
            model.compile(optimizer=optimizer, loss=loss, metrics=[
                keras.metrics.SparseCategoricalAccuracy(name="logits_accuracy")])
        optimizer.build(model.trainable_variables)  # so that saved weights reload whole
        return model

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


# ------------------------------------------------------------------------------ SearchTuner


def available_variants() -> tuple[str, ...]:
    """The search variants :func:`aca_keras.search` accepts (``aca_keras.variants.VARIANTS``),
    or ``()`` when :class:`~aca_keras.search_run.SearchConfig` has no ``variant`` setting."""
    import dataclasses
    import importlib

    from aca_keras.searching import pipeline as search_run

    fields = {f.name: f for f in dataclasses.fields(search_run.SearchConfig)}
    if "variant" not in fields:
        return ()
    try:
        found = importlib.import_module("aca_keras.variants").VARIANTS
    except (ImportError, AttributeError):
        found = None
    if isinstance(found, (Mapping, list, tuple)) and found:
        return tuple(str(v) for v in found)
    default = fields["variant"].default
    return (default,) if isinstance(default, str) else ()


class SearchSpace(kt.HyperModel):
    """The search settings a :class:`SearchTuner` tunes (a ``HyperModel`` that builds a dict
    of :func:`aca_keras.search` keyword arguments instead of a model).

    Defaults (each narrowed or fixed by the argument of the same name):

    | setting | default range |
    | --- | --- |
    | ``alpha_learning_rate`` | 1e-4 to 1e-3, log scale (DARTS: 3e-4) |
    | ``ops`` | every named operation set (``"aca"``, ``"darts"``); a comma-separated string is a custom list of operations |
    | ``variant`` | every search variant (:func:`available_variants`); not tuned when the search has no variant setting |
    | ``allocator`` | every registered allocator (``adaptive``, ``fixed``, ``alpha``, ``none``) |
    | ``seed`` | 0 to 9999; fix it to compare settings on one seed |
    """

    def __init__(self, *, alpha_learning_rate: Spec = None, ops: Spec = None,
                 variant: Spec = None, allocator: Spec = None, seed: Spec = None,
                 name: str | None = None, tunable: bool = True):
        super().__init__(name=name, tunable=tunable)
        self.alpha_learning_rate = alpha_learning_rate
        self.ops = ops
        self.variant = variant
        self.allocator = allocator
        self.seed = seed
        self.variants = available_variants()
        if variant is not None and not self.variants:
            raise ValueError("This aca_keras search has no variant setting (plain DARTS only); "
                             "leave variant=None.")
        self.build(kt.HyperParameters())  # check every setting now

    def build(self, hp: kt.HyperParameters) -> dict[str, Any]:
        """Declare the hyperparameters in ``hp`` and return the search keyword arguments."""
        from aca_keras.channels.allocation import get_allocator, list_allocators
        from aca_keras.layers import ops as ops_lib

        def check_ops(value: str) -> None:
            ops_lib.resolve_op_set(_ops_argument(value))

        def check_variant(value: str) -> None:
            if value not in self.variants:
                raise ValueError(f"Unknown search variant {value!r}; available: "
                                 f"{', '.join(self.variants)}")

        settings: dict[str, Any] = {
            "alpha_learning_rate": _float_param(
                hp, "alpha_learning_rate", self.alpha_learning_rate, (1e-4, 1e-3, "log", None),
                low_limit=1e-12),
            "ops": _ops_argument(_choice_param(hp, "ops", self.ops, list(ops_lib.OP_SETS),
                                               check_ops)),
        }
        if self.variants:
            settings["variant"] = _choice_param(hp, "variant", self.variant, self.variants,
                                                check_variant)
        settings["allocator"] = _choice_param(hp, "allocator", self.allocator,
                                              list_allocators(), get_allocator)
        settings["seed"] = _int_param(hp, "seed", self.seed, (0, 9999, 1), minimum=0)
        return settings


def _ops_argument(value: str) -> str | list[str]:
    """A named op set stays a name; ``"a,b,c"`` is a custom list of operations."""
    if "," in value:
        return [name.strip() for name in value.split(",") if name.strip()]
    return value


_RESERVED_SEARCH = {"dataset", "run_dir", "resume", "verbose", "callbacks", "ops", "seed",
                    "alpha_learning_rate", "allocator", "variant"}
_RESERVED_TRAIN = {"model", "dataset", "run_dir", "resume", "verbose", "seed"}


def _make_oracle(oracle: Any, objective: Any, max_trials: int, seed: int | None) -> kt.Oracle:
    if isinstance(oracle, kt.Oracle):
        return oracle
    if oracle in (None, "random"):
        return kt.oracles.RandomSearchOracle(objective=objective, max_trials=max_trials,
                                             seed=seed)
    if oracle == "bayesian":
        return kt.oracles.BayesianOptimizationOracle(objective=objective,
                                                     max_trials=max_trials, seed=seed)
    raise ValueError(f"oracle must be a keras_tuner Oracle, 'random' or 'bayesian', got "
                     f"{oracle!r}")


class SearchTuner(kt.Tuner):
    """A keras-tuner ``Tuner`` whose trials are ACA searches.

    Each trial runs :func:`aca_keras.search` with the trial's settings (see
    :class:`SearchSpace`) into ``<project_dir>/trial_<id>/search/`` (a normal run directory,
    with pictures and checkpoints), trains the derived network briefly with
    :func:`aca_keras.train` into ``trial_<id>/train/``, and reports its accuracy on a
    validation split as ``val_accuracy`` (with ``train_accuracy``, the search's final
    ``search_alpha_accuracy``, ``params`` and ``flops`` of the derived network).

    The validation split is held out of the training set before any trial (both the search
    and the scoring training see only the rest): ``validation_split`` of it, drawn with a
    fixed seed, or the separate ``validation_data`` given to :meth:`search`. The data set's
    own test split is never used, so it stays a fair final test.

    Resuming is keras-tuner's: a tuner created again with the same ``directory`` and
    ``project_name`` and ``overwrite=False`` reloads the oracle, skips the finished trials
    and reruns an interrupted one, whose search continues from its last per-epoch
    checkpoint (and its training from its last checkpoint).

    Args:
        oracle: a ``keras_tuner.Oracle`` (its objective must be one of the reported metrics),
            or ``"random"`` (default: ``RandomSearchOracle``) or ``"bayesian"``
            (``BayesianOptimizationOracle``), built with ``objective``, ``max_trials`` and
            ``oracle_seed``.
        objective: the objective of a default oracle (default ``"val_accuracy"``, maximised).
        max_trials: trials of a default oracle.
        oracle_seed: seed of a default oracle.
        alpha_learning_rate: tunable search setting, see :class:`SearchSpace`.
        ops: tunable search setting, see :class:`SearchSpace`.
        variant: tunable search setting, see :class:`SearchSpace`.
        allocator: tunable search setting, see :class:`SearchSpace`.
        seed: tunable search setting, see :class:`SearchSpace`; also the training seed.
        search_settings: fixed :func:`aca_keras.search` settings (``epochs``, ``cells``,
            ``channels``, ``nodes``, ``batch_size``, ``eval_cells``, ``eval_channels``, ...),
            on top of :data:`DEFAULT_SEARCH_SETTINGS` (10 epochs, derived network 8 cells,
            C = 16).
        train_settings: fixed :func:`aca_keras.train` settings of the scoring training
            (``epochs``, ``batch_size``, ``learning_rate``, ``cutout``, ...), on top of
            :data:`DEFAULT_TRAIN_SETTINGS` (5 epochs).
        validation_split: share of the training set held out to score trials when
            :meth:`search` gets no ``validation_data``.
        directory: keras-tuner's working directory (default ``"."``).
        project_name: the project's folder in ``directory``.
        overwrite: start afresh instead of reloading an existing project.
        **kwargs: other ``keras_tuner.Tuner`` arguments (``tuner_id``, ...).
    """

    def __init__(self, oracle: Any = None, *, objective: Any = SEARCH_OBJECTIVE,
                 max_trials: int = 10, oracle_seed: int | None = None,
                 alpha_learning_rate: Spec = None, ops: Spec = None, variant: Spec = None,
                 allocator: Spec = None, seed: Spec = None,
                 search_settings: Mapping[str, Any] | None = None,
                 train_settings: Mapping[str, Any] | None = None,
                 validation_split: float = 0.2, directory: str | os.PathLike | None = None,
                 project_name: str = "aca_search_tuning", overwrite: bool = False,
                 **kwargs: Any):
        search_settings = {**DEFAULT_SEARCH_SETTINGS, **dict(search_settings or {})}
        train_settings = {**DEFAULT_TRAIN_SETTINGS, **dict(train_settings or {})}
        clash = sorted(_RESERVED_SEARCH & set(search_settings))
        if clash:
            raise ValueError(f"search_settings cannot set {clash}: the tuner sets them (tune or "
                             "fix ops/seed/alpha_learning_rate/allocator/variant through their "
                             "own arguments)")
        clash = sorted(_RESERVED_TRAIN & set(train_settings))
        if clash:
            raise ValueError(f"train_settings cannot set {clash}: the tuner sets them")
        if not 0.0 < float(validation_split) < 1.0:
            raise ValueError(f"validation_split must be in (0, 1), got {validation_split}")
        self.search_settings = search_settings
        self.train_settings = train_settings
        self.validation_split = float(validation_split)
        space = SearchSpace(alpha_learning_rate=alpha_learning_rate, ops=ops, variant=variant,
                            allocator=allocator, seed=seed)
        super().__init__(oracle=_make_oracle(oracle, objective, max_trials, oracle_seed),
                         hypermodel=space, directory=None if directory is None else
                         os.fspath(directory), project_name=project_name,
                         overwrite=overwrite, **kwargs)

    # ------------------------------------------------------------------------- searching

    def search(self, dataset: Any = "digits", *, validation_data: Any = None,
               verbose: int = 1, **load_options: Any) -> None:
        """Run the trials the oracle asks for (those not finished yet, on a reloaded project).

        Args:
            dataset: the data: anything :func:`aca_keras.data.load` accepts (a name,
                ``(x, y)`` arrays, an ``.npz`` file, an image folder, a ``DataBundle``).
                Only its training split is used.
            validation_data: data to score trials on, in the same forms (its training split
                is the validation set). Default: ``validation_split`` of the training set.
            verbose: 0 silent; 1 keras-tuner's trial tables and one line per search and
                training epoch.
            **load_options: passed to :func:`aca_keras.data.load` for ``dataset``
                (``data_dir``, ``download``, ``image_size``, ...).
        """
        from aca_keras.data import loading as data_lib

        bundle = data_lib.load(dataset, **load_options)
        holdout = None if validation_data is None else data_lib.load(validation_data)
        super().search(_tuning_bundle(bundle, holdout, self.validation_split), verbose=verbose)

    def trial_dir(self, trial: kt.engine.trial.Trial | str) -> Path:
        """The folder of a trial (or trial id) in the project directory."""
        trial_id = trial if isinstance(trial, str) else trial.trial_id
        return Path(self.get_trial_dir(trial_id))

    def search_run_dir(self, trial: kt.engine.trial.Trial | str) -> Path:
        """The search run directory of a trial (``trial_<id>/search``)."""
        return self.trial_dir(trial) / SEARCH_DIR

    def run_trial(self, trial: kt.engine.trial.Trial, bundle: Any, verbose: int = 1,
                  **kwargs: Any) -> dict[str, float]:
        """Search, derive, train briefly and score one trial (keras-tuner calls this)."""
        from aca_keras.searching.pipeline import search
        from aca_keras.training.trainer import train

        if kwargs:
            raise kt.errors.FatalTypeError(f"SearchTuner.search() got unexpected arguments "
                                           f"{sorted(kwargs)}")
        keras.backend.clear_session()
        settings = self.hypermodel.build(trial.hyperparameters)
        run_dir = self.search_run_dir(trial)
        fit_verbose = 0 if not verbose else 2
        search_settings = dict(self.search_settings)
        train_settings = dict(self.train_settings)
        try:
            if _same_search(run_dir, {**search_settings, **settings}):
                model = search(bundle, run_dir=run_dir, resume=True, verbose=fit_verbose,
                               epochs=search_settings.get("epochs"))
            else:
                # a fresh trial, or a folder left by other settings (a tuner that was not
                # reloaded): start afresh
                shutil.rmtree(self.trial_dir(trial) / SEARCH_DIR, ignore_errors=True)
                shutil.rmtree(self.trial_dir(trial) / TRAIN_DIR, ignore_errors=True)
                model = search(bundle, run_dir=run_dir, verbose=fit_verbose,
                               **search_settings, **settings)
            result = train(model, bundle, seed=settings["seed"],
                           run_dir=self.trial_dir(trial) / TRAIN_DIR, resume=True,
                           verbose=fit_verbose, **train_settings)
        except NumericalError as error:
            raise kt.errors.FailedTrialError(str(error)) from error
        metrics = {
            SEARCH_OBJECTIVE: float(result.test_accuracy),
            "params": float(result.model.inference_model().count_params()),
            "flops": float(result.model.flops()),
        }
        accuracy = result.history.get("accuracy")
        if accuracy:
            metrics["train_accuracy"] = float(accuracy[-1])
        alpha_accuracy = _last_value(run_dir / "history.csv", "alpha_accuracy")
        if alpha_accuracy is not None:
            metrics["search_alpha_accuracy"] = alpha_accuracy
        return metrics

    def on_trial_begin(self, trial: kt.engine.trial.Trial) -> None:
        """Save the tuner's state as the trial starts, so that a tuner reloaded after an
        interruption of even the first trial retries that trial."""
        super().on_trial_begin(trial)
        self.save()

    # ------------------------------------------------------------------------- results

    def save_model(self, trial_id: str, model: Any, step: int = 0) -> None:
        """Nothing to do: :func:`aca_keras.train` writes ``trial_<id>/train/trained.keras``."""

    def load_model(self, trial: kt.engine.trial.Trial) -> Any:
        """The trained derived network of a finished trial."""
        from aca_keras.models.derived import load_model

        return load_model(self.trial_dir(trial) / TRAIN_DIR / "trained.keras")

    def get_best_architectures(self, num_trials: int = 1) -> list[Architecture]:
        """The architectures of the best finished trials, best first."""
        return [Architecture.load(self.search_run_dir(t) / "architecture.json")
                for t in self.oracle.get_best_trials(num_trials)]

    def get_best_architecture(self) -> Architecture:
        """The architecture of the best finished trial.

        Raises:
            ValueError: no trial has finished yet.
        """
        best = self.get_best_architectures(1)
        if not best:
            raise ValueError("No trial has finished yet; run search() first.")
        return best[0]

    def get_best_run_dir(self) -> Path:
        """The search run directory of the best finished trial (for ``aca-train``,
        ``aca-export`` or ``aca-zoo publish``).

        Raises:
            ValueError: no trial has finished yet.
        """
        best = self.oracle.get_best_trials(1)
        if not best:
            raise ValueError("No trial has finished yet; run search() first.")
        return self.search_run_dir(best[0])


def _tuning_bundle(bundle: Any, holdout: Any, fraction: float) -> Any:
    """``bundle``'s training split as a bundle whose test split is the validation set."""
    from aca_keras.data.loading import DataBundle
    from aca_keras.errors import DataError

    if holdout is not None:
        if tuple(holdout.input_shape) != tuple(bundle.input_shape):
            raise DataError(f"validation_data images are {holdout.input_shape}, the data's are "
                            f"{bundle.input_shape}.")
        if int(holdout.y_train.max()) >= bundle.num_classes:
            raise DataError(f"validation_data has labels >= {bundle.num_classes}, the number of "
                            "classes of the data.")
        x_train, y_train = bundle.x_train, bundle.y_train
        x_val, y_val = holdout.x_train, holdout.y_train
        if x_train.dtype != x_val.dtype:
            x_train, x_val = x_train.astype(np.float32), x_val.astype(np.float32)
    else:
        n = bundle.num_train
        n_val = int(round(fraction * n))
        if n_val < 1 or n_val > n - 2:
            raise DataError(f"Cannot hold out {fraction:.0%} of {n} training images for "
                            "validation; use more images or another validation_split.")
        order = np.random.default_rng(0).permutation(n)
        x_train, y_train = bundle.x_train[order[n_val:]], bundle.y_train[order[n_val:]]
        x_val, y_val = bundle.x_train[order[:n_val]], bundle.y_train[order[:n_val]]
    return DataBundle(name=bundle.name, x_train=np.ascontiguousarray(x_train),
                      y_train=np.ascontiguousarray(y_train),
                      x_test=np.ascontiguousarray(x_val), y_test=np.ascontiguousarray(y_val),
                      input_shape=bundle.input_shape, num_classes=bundle.num_classes,
                      class_names=bundle.class_names, mean=bundle.mean, std=bundle.std,
                      flip=bundle.flip)


def _same_search(run_dir: Path, settings: Mapping[str, Any]) -> bool:
    """Whether ``run_dir`` holds a search started with ``settings`` (so it can resume)."""
    path = run_dir / "config.json"
    if not path.is_file():
        return False
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    for key, value in settings.items():
        if not isinstance(value, (str, int, float, bool, list, tuple, type(None))):
            continue  # e.g. a tf.distribute strategy object: config.json records its kind
        if isinstance(value, tuple):
            value = list(value)
        recorded = config.get(key)
        if isinstance(value, float) and isinstance(recorded, (int, float)):
            if not math.isclose(value, recorded, rel_tol=1e-9):
                return False
        elif recorded != value:
            return False
    return True


def _last_value(path: Path, column: str) -> float | None:
    if not path.is_file():
        return None
    with open(path, newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    try:
        return float(rows[-1][column]) if rows else None
    except (KeyError, TypeError, ValueError):
        return None
