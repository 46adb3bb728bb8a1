"""The search itself as a keras-tuner ``Tuner``: :class:`SearchTuner`, whose trials are whole
ACA searches (:func:`aca_keras.search`) with tunable search settings (:class:`SearchSpace`),
each scored by a short training of its derived network (:func:`aca_keras.train`) on a
validation split. Every trial writes a normal search run directory inside the tuner's project
directory."""

from __future__ import annotations

import csv
import json
import math
import os
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import keras
import keras_tuner as kt
import numpy as np

from aca_keras import data as data_lib
from aca_keras.errors import DataError, NumericalError
from aca_keras.io.run_dir import RunDir
from aca_keras.models.derived import load_model
from aca_keras.searching.pipeline import search
from aca_keras.space.architecture import Architecture
from aca_keras.training.trainer import train
from aca_keras.tuning.hyperparameters import Spec
from aca_keras.tuning.space import SearchSpace

__all__ = ["DEFAULT_SEARCH_SETTINGS", "DEFAULT_TRAIN_SETTINGS", "SEARCH_OBJECTIVE", "SearchTuner"]

SEARCH_OBJECTIVE = "val_accuracy"
"""The objective of :class:`SearchTuner`: the accuracy of a trial's briefly trained derived
network on the tuner's validation split (maximise it)."""

#: A trial's folders in its keras-tuner trial directory: the search run and the training run.
SEARCH_DIR = "search"
TRAIN_DIR = "train"

DEFAULT_SEARCH_SETTINGS: dict[str, Any] = {"epochs": 10, "eval_cells": 8, "eval_channels": 16}
"""Search settings of a :class:`SearchTuner` unless ``search_settings`` says otherwise: a
short search, and a small derived network to score it."""

DEFAULT_TRAIN_SETTINGS: dict[str, Any] = {"epochs": 5}
"""Settings of the short training that scores a :class:`SearchTuner` trial."""

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
        alpha_accuracy = _last_value(RunDir(run_dir).history, "alpha_accuracy")
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
        """Nothing to do: :func:`aca_keras.train` writes the trained model into
        ``trial_<id>/train/`` (``RunDir.trained_model``)."""

    def load_model(self, trial: kt.engine.trial.Trial) -> Any:
        """The trained derived network of a finished trial."""
        return load_model(RunDir(self.trial_dir(trial) / TRAIN_DIR).trained_model)

    def get_best_architectures(self, num_trials: int = 1) -> list[Architecture]:
        """The architectures of the best finished trials, best first."""
        return [Architecture.load(RunDir(self.search_run_dir(t)).architecture)
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
    return data_lib.DataBundle(name=bundle.name, x_train=np.ascontiguousarray(x_train),
                      y_train=np.ascontiguousarray(y_train),
                      x_test=np.ascontiguousarray(x_val), y_test=np.ascontiguousarray(y_val),
                      input_shape=bundle.input_shape, num_classes=bundle.num_classes,
                      class_names=bundle.class_names, mean=bundle.mean, std=bundle.std,
                      flip=bundle.flip)


def _same_search(run_dir: Path, settings: Mapping[str, Any]) -> bool:
    """Whether ``run_dir`` holds a search started with ``settings`` (so it can resume)."""
    path = RunDir(run_dir).config
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
