"""Evaluation-stage training of a derived network (DARTS's recipe), with checkpoint/resume.

:func:`train` trains a :class:`~aca_keras.models.derived.DerivedNetwork` with ``model.fit``:

* SGD, momentum 0.9, learning rate cosine from 0.025 to 0 over all steps
  (``keras.optimizers.schedules.CosineDecay``, stepped per batch);
* **coupled** L2 weight decay 3e-4 as PyTorch's SGD (and DARTS) apply it: ``wd * w`` is added
  to the gradient after clipping and before the momentum update, on every trainable variable.
  Keras's own ``weight_decay`` is decoupled (AdamW style) and is not used; the decay lives in
  :class:`L2SGD`, a registered SGD subclass;
* global-norm gradient clipping 5 (``global_clipnorm``; Keras's ``clipnorm`` is per variable);
* batch 96, cutout 16 (capped at half the image side for small images), pad-and-crop (and
  flips when the data set allows them) from the deterministic data pipeline;
* drop path ramped linearly per epoch from 0 to ``drop_path`` (``p = drop_path * epoch /
  epochs`` at the start of each epoch, as DARTS);
* auxiliary loss weight 0.4 when the model has the auxiliary head (the losses and metrics
  are :func:`~aca_keras.training.compiling.compile_derived`'s, shared with the tuner).

Keras's SGD momentum form (``m = mu * m - lr * g; w += m``) equals PyTorch's
(``b = mu * b + g; w -= lr * b``) for a constant learning rate and differs slightly while the
rate changes; the DARTS numbers do not depend on this.

With ``run_dir`` the run writes ``train_config.json`` (settings and seed),
``train_checkpoint/checkpoint.npz`` after every epoch (all model variables including BatchNorm
statistics and random-generator states, and the optimiser's variables; written atomically),
``train_history.csv``, ``train_result.json`` and the trained model ``trained.keras``.
(:class:`~aca_keras.io.run_dir.RunDir` names these files.) ``resume=True`` continues from the
last checkpoint; the data pipeline is a function of ``(seed, epoch)``, so a resumed run
repeats an uninterrupted one.
"""

from __future__ import annotations

import contextlib
import csv
import functools
import io
import json
import os
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from aca_keras import distribute as dist
from aca_keras.callbacks import (
    StopOnNonFinite,
    last_good_checkpoint,
    progress_callbacks,
    stdout_is_terminal,
)
from aca_keras.data import DataBundle
from aca_keras.data import load as load_data
from aca_keras.data.arrays import split_digest
from aca_keras.data.catalog import is_dataset_name
from aca_keras.errors import ArchitectureError, DataError, RunDirError, UnknownDatasetError
from aca_keras.io import checkpoint as ckpt
from aca_keras.io.atomic import (
    atomic_save_model,
    atomic_write_json,
    atomic_write_text,
    read_json,
)
from aca_keras.io.run_dir import RunDir
from aca_keras.models.cloning import clone_model
from aca_keras.models.derived import DerivedNetwork, build_model, load_model
from aca_keras.optimizers import L2SGD
from aca_keras.space.architecture import Architecture
from aca_keras.space.validation import is_int
from aca_keras.tensorboard import TensorBoardLogger
from aca_keras.training.compiling import ACCURACY, compile_derived
from aca_keras.versions import package_versions

__all__ = [
    "L2SGD",
    "TrainResult",
    "effective_cutout",
    "evaluate",
    "train",
    "train_run",
]

# -------------------------------------------------------------------------------- results


@dataclass
class TrainResult:
    """What :func:`train` returns.

    Attributes:
        history: per-epoch lists over all epochs, including those before a resume:
            ``epoch`` (1-based), ``loss`` (total), ``accuracy`` (main output), with the
            auxiliary head also ``logits_loss`` and ``aux_logits_loss``, ``learning_rate``
            (at the end of the epoch) and ``drop_path_rate`` (used during the epoch).
        test_accuracy: accuracy of the inference model on the test split, or ``None`` when
            the data has no test split.
        run_dir: the run directory, or ``None``.
        model: the trained model.
    """

    history: dict[str, list[float]] = field(default_factory=dict)
    test_accuracy: float | None = None
    run_dir: Path | None = None
    model: Any = None


def effective_cutout(cutout: int, input_shape: Sequence[int]) -> int:
    """Cutout size for an image shape: ``min(cutout, min(H, W) // 2)`` (16 on CIFAR's 32x32,
    4 on 8x8 images)."""
    if cutout <= 0:
        return 0
    return int(min(cutout, min(int(input_shape[0]), int(input_shape[1])) // 2))


# -------------------------------------------------------------------------------- callbacks


class _DropPathSchedule(keras.callbacks.Callback):
    """``p = rate * epoch / epochs`` at the start of each epoch (DARTS)."""

    def __init__(self, network, rate: float, epochs: int):
        super().__init__()
        self.network = network
        self.rate = rate
        self.epochs = epochs

    def on_epoch_begin(self, epoch, logs=None):
        self.network.set_drop_path_rate(self.rate * epoch / self.epochs)


class _EpochRecorder(keras.callbacks.Callback):
    """Records the epoch's numbers, writes history and checkpoint (after
    :class:`~aca_keras.callbacks.StopOnNonFinite` has checked the loss)."""

    def __init__(self, network, optimizer, history: dict[str, list[float]],
                 run: RunDir | None, meta: dict[str, Any]):
        super().__init__()
        self.network = network
        self.opt = optimizer
        self.history = history
        self.run = run
        self.meta = meta

    def on_epoch_end(self, epoch, logs=None):
        logs = dict(logs or {})
        row = {"epoch": epoch + 1}
        for key in sorted(logs):
            # one name for the main accuracy, with or without the auxiliary head
            row["accuracy" if key == ACCURACY else key] = float(logs[key])
        row["learning_rate"] = float(keras.ops.convert_to_numpy(self.opt.learning_rate))
        row["drop_path_rate"] = self.network.drop_path_rate
        for key, value in row.items():
            self.history.setdefault(key, []).append(value)
        if self.run is not None:
            _write_history(self.run.train_history, self.history)
            ckpt.save_checkpoint(
                self.run.train_checkpoint, self.network,
                {"optimizer": self.opt},
                {**self.meta, "epoch": epoch + 1, "history": self.history})


def _write_history(path: Path, history: Mapping[str, list[float]]) -> None:
    keys = list(history)
    rows = len(history.get("epoch", []))
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(keys)
    for i in range(rows):
        writer.writerow([history[k][i] if i < len(history[k]) else "" for k in keys])
    atomic_write_text(path, out.getvalue())


# ---------------------------------------------------------------------------------- train


def train(model, dataset, *, epochs: int = 600, batch_size: int = 96,
          learning_rate: float = 0.025, momentum: float = 0.9, weight_decay: float = 3e-4,
          grad_clip: float | None = 5.0, cutout: int = 16, drop_path: float | None = None,
          auxiliary_weight: float | None = None, seed: int | None = None,
          run_dir: str | os.PathLike | None = None, resume: bool = False, verbose: int = 1,
          data_dir: str | os.PathLike | None = None, callbacks: Sequence[Any] = (),
          jit_compile: bool = False, strategy: str | tf.distribute.Strategy | None = None,
          mixed_precision: bool | str = False, sync_batch_norm: bool = True,
          tensorboard: str | os.PathLike | None = None) -> TrainResult:
    """Train a derived network with DARTS's evaluation recipe (see the module docstring).

    Args:
        model: a :class:`~aca_keras.models.derived.DerivedNetwork` (or the path of one saved as
            ``.keras``).
        dataset: a :class:`~aca_keras.data.DataBundle` or anything
            :func:`aca_keras.data.load` accepts (a name, arrays, a path).
        epochs: total epochs (600 in DARTS).
        batch_size: batch size (96).
        learning_rate: initial learning rate, cosine-decayed to 0 over all steps (0.025).
        momentum: SGD momentum (0.9).
        weight_decay: coupled L2 coefficient (3e-4), see :class:`L2SGD`.
        grad_clip: global-norm clip of the gradient (5); ``None`` for none.
        cutout: cutout size (16), capped by :func:`effective_cutout`; 0 for none.
        drop_path: the drop path rate reached at the end of the linear ramp; ``None`` takes the
            model's ``drop_path``.
        auxiliary_weight: weight of the auxiliary loss; ``None`` takes the model's. Ignored
            for a model without the auxiliary head.
        seed: seed of the data order, augmentation and drop path masks; ``None`` draws one (or,
            on resume, takes the run's). It is recorded in ``train_config.json``.
        run_dir: where to write checkpoints, history and the trained model; ``None`` writes
            nothing.
        resume: continue from ``run_dir``'s last checkpoint (starts afresh if there is none).
        verbose: 0 silent, 1 progress bar, 2 one line per epoch.
        data_dir: TFDS data directory for named data sets.
        callbacks: extra Keras callbacks for ``fit``.
        jit_compile: XLA-compile the train step.
        strategy: ``None`` (one device), ``"mirrored"``, ``"multiworker"`` or a
            ``tf.distribute`` strategy object (see ``docs/scaling.md``). ``batch_size`` is the
            global batch, split evenly over the replicas; gradient clipping sees the summed
            gradient. A model object is copied into the strategy's scope (the returned
            ``TrainResult.model`` is that copy).
        mixed_precision: ``True`` for ``mixed_float16`` on a GPU or ``mixed_bfloat16`` on the
            CPU (or a policy name); the model is copied under that policy (variables and
            logits' loss stay float32). Keras's global policy is restored afterwards.
        sync_batch_norm: under a strategy with several replicas, BatchNorm uses the
            statistics of the global batch (default; the results of one device) or, ``False``,
            each replica's own (a smaller graph). Under a strategy the model (copied into its
            scope) gets ``sync_batch_norm`` =
            :func:`aca_keras.distribute.synchronize_batch_norm` of the strategy and this
            setting; without one the model is left as it is.
        tensorboard: a directory for TensorBoard event files
            (:class:`~aca_keras.tensorboard.TensorBoardLogger`): per epoch (step = epoch from
            1) every column of the training history under its ``train_history.csv`` name
            (losses, ``accuracy``, ``learning_rate``, ``drop_path_rate``), and
            ``test_accuracy`` at the last epoch; ``None`` writes none.

    Returns:
        A :class:`TrainResult`.

    Raises:
        RunDirError: ``run_dir`` already holds a training run and ``resume`` is false, or the
            checkpoint does not match the model or the seed.
        DataError: the data does not fit the model (image shape, number of classes).
        NumericalError: the loss became NaN or Inf (the message names the last good
            checkpoint).
        StrategyError: an unusable strategy or precision, or a batch that does not split
            over the replicas.
        StorageError: a checkpoint (or the TensorBoard directory) could not be written (the
            previous checkpoint is kept).
    """
    return _train_scoped(model, dataset, {}, epochs=epochs, batch_size=batch_size,
                         learning_rate=learning_rate, momentum=momentum,
                         weight_decay=weight_decay, grad_clip=grad_clip, cutout=cutout,
                         drop_path=drop_path, auxiliary_weight=auxiliary_weight, seed=seed,
                         run_dir=run_dir, resume=resume, verbose=verbose, data_dir=data_dir,
                         callbacks=callbacks, jit_compile=jit_compile, strategy=strategy,
                         mixed_precision=mixed_precision, sync_batch_norm=sync_batch_norm,
                         tensorboard=tensorboard)


def _train_scoped(model, dataset, record: Mapping[str, Any], *, jit_compile: bool,
                  strategy: str | tf.distribute.Strategy | None,
                  mixed_precision: bool | str, sync_batch_norm: bool,
                  **settings: Any) -> TrainResult:
    """:func:`train` with ``record`` (more settings for ``train_config.json`` and the
    checkpoint, e.g. :func:`train_run`'s ``test_fraction``); sets up the strategy and the
    dtype policy, then runs :func:`_train` in them."""
    strategy_obj = dist.get_strategy(strategy)  # first: a multi-worker strategy
    policy = dist.precision_policy(mixed_precision)
    described = dist.describe_strategy(strategy_obj)
    # under a strategy, the model's BatchNorm synchronisation is the run's
    overrides = ({} if strategy_obj is None else
                 {"sync_batch_norm": dist.synchronize_batch_norm(strategy_obj, sync_batch_norm)})
    with dist.dtype_policy(policy), dist.strategy_scope(strategy_obj):
        loaded = isinstance(model, (str, os.PathLike))
        if loaded:
            model = load_model(model, compile=False)
        if isinstance(model, DerivedNetwork):
            differs = any(getattr(model, key) != value for key, value in overrides.items())
            if differs or (not loaded and (strategy_obj is not None or policy != "float32")):
                model = clone_model(model, overrides=overrides)
        run_info = {"strategy": described["kind"], "replicas": described["replicas"],
                    "sync_batch_norm": bool(sync_batch_norm),
                    "mixed_precision": policy != "float32", "dtype_policy": policy,
                    "jit_compile": bool(jit_compile), "versions": package_versions()}
        return _train(model, dataset, jit_compile=jit_compile,
                      run_info={**run_info, **record}, **settings)


def _train(model, dataset, *, epochs: int, batch_size: int, learning_rate: float,
           momentum: float, weight_decay: float, grad_clip: float | None, cutout: int,
           drop_path: float | None, auxiliary_weight: float | None, seed: int | None,
           run_dir: str | os.PathLike | None, resume: bool, verbose: int,
           data_dir: str | os.PathLike | None, callbacks: Sequence[Any], jit_compile: bool,
           run_info: dict[str, Any], tensorboard: str | os.PathLike | None) -> TrainResult:
    """:func:`train` in its strategy scope and dtype policy (``run_info`` goes into
    ``train_config.json``)."""
    tf.config.experimental.enable_op_determinism()  # reproducible on CPU with a seed

    if isinstance(model, (str, os.PathLike)):
        model = load_model(model, compile=False)
    if not isinstance(model, DerivedNetwork):
        raise TypeError(f"train() needs a DerivedNetwork (aca_keras.build_model), got "
                        f"{type(model).__name__}")
    if isinstance(dataset, DataBundle):
        bundle = dataset
    elif data_dir is not None:
        bundle = load_data(dataset, data_dir=data_dir)
    else:
        bundle = load_data(dataset)
    if tuple(bundle.input_shape) != tuple(model.image_shape):
        raise DataError(f"The data's images are {bundle.input_shape} but the model takes "
                        f"{model.image_shape}; build the model with the data's input_shape.")
    if bundle.num_classes != model.num_classes:
        raise DataError(f"The data has {bundle.num_classes} classes but the model predicts "
                        f"{model.num_classes}; build the model with the data's num_classes.")
    if not is_int(epochs) or epochs < 1:
        raise ValueError(f"epochs must be a positive integer, got {epochs!r}")
    epochs = int(epochs)
    drop_path = model.drop_path if drop_path is None else float(drop_path)
    auxiliary_weight = (model.auxiliary_weight if auxiliary_weight is None
                        else float(auxiliary_weight))
    cut = effective_cutout(int(cutout), bundle.input_shape)

    run_path = Path(run_dir) if run_dir is not None else None
    run = None if run_path is None else RunDir(run_path)
    checkpoint_path = None if run is None else run.train_checkpoint
    resuming = bool(resume and checkpoint_path is not None and checkpoint_path.is_file())
    if resume and run_path is None:
        raise RunDirError("resume=True needs run_dir, the directory of the run to continue.")
    if run_path is not None and not resume and checkpoint_path.exists():
        raise RunDirError(f"{run_path} already holds a training run "
                          f"({RunDir.TRAIN_CHECKPOINT_DIR}/). Resume it with resume=True (CLI: "
                          "--resume), or choose another run directory.")
    if resuming:
        saved = ckpt.read_checkpoint_meta(checkpoint_path)
        if seed is not None and int(seed) != saved["seed"]:
            raise RunDirError(f"Cannot resume {run_path} with seed={seed}: the run used seed "
                              f"{saved['seed']}. Leave seed unset to resume.")
        seed = saved["seed"]
        if saved.get("batch_size") != batch_size or saved.get("epochs") != epochs:
            raise RunDirError(
                f"Cannot resume {run_path} with epochs={epochs}, batch_size={batch_size}: the run "
                f"used epochs={saved.get('epochs')}, batch_size={saved.get('batch_size')} (the "
                "learning-rate schedule depends on both). Resume with the run's settings.")
        split = _split_record(bundle)
        if any(key in saved and saved[key] != split[key] for key in split):
            raise RunDirError(
                f"Cannot resume {run_path} on other data: the run trained on "
                f"{saved.get('train_images')} images and was evaluated on "
                f"{saved.get('test_images')} (test split sha256 "
                f"{saved.get('test_split_sha256')}), this data has {split['train_images']} and "
                f"{split['test_images']} ({split['test_split_sha256']}). Resume with the run's "
                "data set and test_fraction.")
    if seed is None:
        seed = random.SystemRandom().randrange(2**31)
    seed = int(seed)

    start_epoch = 0
    if resuming:
        start_epoch = min(int(saved["epoch"]), epochs)
    pipeline, steps = bundle.train_pipeline(batch_size, seed=seed, epochs=epochs,
                                            start_epoch=start_epoch, augment=True, cutout=cut)
    dist.check_global_batch(min(batch_size, bundle.num_train), dist.num_replicas())
    pipeline = dist.data_options(pipeline)
    settings = {
        "dataset": bundle.name, "epochs": epochs, "batch_size": batch_size,
        "learning_rate": learning_rate, "momentum": momentum, "weight_decay": weight_decay,
        "grad_clip": grad_clip, "cutout": cut, "drop_path": drop_path,
        "auxiliary_weight": auxiliary_weight, "seed": seed, "steps_per_epoch": steps,
        **_split_record(bundle),
        # what else it takes to repeat the run: the model, the devices, the versions
        "model": {"class": type(model).__name__, "cells": model.cells,
                  "channels": model.channels, "auxiliary": bool(model.auxiliary),
                  "image_shape": list(model.image_shape), "num_classes": model.num_classes,
                  "architecture": model.architecture.to_dict()},
        **run_info,
    }

    optimizer = L2SGD(
        learning_rate=keras.optimizers.schedules.CosineDecay(
            learning_rate, decay_steps=epochs * steps, alpha=0.0),
        momentum=momentum, l2=weight_decay, global_clipnorm=grad_clip)
    compile_derived(model, optimizer, auxiliary_weight, jit_compile=jit_compile)

    say = print if verbose else (lambda *a, **k: None)
    if resume and not resuming:
        say(f"no training checkpoint in {run_path}; starting from epoch 1", flush=True)
    history: dict[str, list[float]] = {}
    if resuming:
        meta = ckpt.load_checkpoint(checkpoint_path, model, {"optimizer": optimizer})
        history = {k: list(v) for k, v in meta.get("history", {}).items()}
    else:
        _seed_drop_path(model, seed)
    if run_path is not None:
        try:
            run_path.mkdir(parents=True, exist_ok=True)
            atomic_write_json(run.train_config, settings)
        except OSError as error:
            raise RunDirError(f"Cannot write the run directory {run_path}: {error}. Choose a "
                              "writable run_dir.") from None

    say(f"aca_keras train: {model.name} ({model.inference_model().count_params():,} "
        f"parameters without the auxiliary head, "
        f"{model.flops():,} multiply-adds/image) on {bundle.name} {bundle.input_shape} "
        f"x{bundle.num_train}, epochs {start_epoch + 1}..{epochs}, batch {batch_size}, "
        f"seed {seed}" + (f" -> {run_path}" if run_path is not None else ""), flush=True)

    # TensorBoard scalars under the names of train_history.csv
    logger = None if tensorboard is None else TensorBoardLogger(
        tensorboard, alphas=False, rename={ACCURACY: "accuracy"},
        values=lambda: {"drop_path_rate": model.drop_path_rate}, close_at_end=False)
    with logger if logger is not None else contextlib.nullcontext():  # closes it
        if start_epoch < epochs:
            if model.auxiliary:
                pipeline = pipeline.map(lambda x, y: (x, {"logits": y, "aux_logits": y}))
            dist.multiworker_train_step(model, pipeline)
            recorder = _EpochRecorder(model, optimizer, history, run, settings)
            stop = StopOnNonFinite(
                ("loss",),
                checkpoint=functools.partial(
                    last_good_checkpoint, checkpoint_path, "epoch",
                    f"no epoch had finished, so there is no checkpoint in {run_path}"),
                advice=("Lower the learning rate or check the data, then resume (resume=True, "
                        "CLI --resume) or restart."))
            progress = progress_callbacks(verbose)
            # Keras's progress bar shows no metrics when written to a file: one line per epoch
            # there, and progress lines during the epoch
            fit_verbose = 2 if verbose == 1 and not stdout_is_terminal() else verbose
            board = [] if logger is None else [logger]
            model.fit(pipeline, epochs=epochs, initial_epoch=start_epoch, steps_per_epoch=steps,
                      verbose=fit_verbose, shuffle=False,
                      callbacks=[_DropPathSchedule(model, drop_path, epochs),
                                 stop, recorder, *board, *progress, *callbacks])

        test_accuracy = evaluate(model, bundle, batch_size=max(batch_size, 256))
        if test_accuracy is not None:
            say(f"test accuracy: {test_accuracy:.4f}", flush=True)
            if logger is not None:
                logger.write(epochs, {"test_accuracy": test_accuracy})
    if run_path is not None:
        atomic_save_model(model, run.trained_model)
        atomic_write_json(run.train_result, {
            "test_accuracy": test_accuracy, "epochs": epochs,
            "params": int(model.inference_model().count_params()),
            "flops": int(model.flops()), "seed": seed,
            "final": {k: v[-1] for k, v in history.items() if v},
            # what test_accuracy was measured on, so that it can be measured again
            "test_split": None if bundle.x_test is None else {
                "data": (os.fspath(dataset) if isinstance(dataset, (str, os.PathLike))
                         else bundle.name),
                "images": int(len(bundle.y_test)),
                "split_sha256": split_digest(bundle.x_test, bundle.y_test)},
        })
    return TrainResult(history=history, test_accuracy=test_accuracy, run_dir=run_path,
                       model=model)


def _split_record(bundle: DataBundle) -> dict[str, Any]:
    """What the run trains and evaluates on: image counts and the test split's sha256."""
    return {"train_images": int(bundle.num_train),
            "test_images": 0 if bundle.y_test is None else int(len(bundle.y_test)),
            "test_split_sha256": (None if bundle.x_test is None
                                  else split_digest(bundle.x_test, bundle.y_test))}


def evaluate(model, dataset, batch_size: int = 256) -> float | None:
    """Top-1 accuracy of ``model.inference_model()`` on the test split of ``dataset`` (a
    ``DataBundle``); ``None`` when it has no test split."""
    test = dataset.test_pipeline(batch_size)
    if test is None:
        return None
    logits = model.inference_model().predict(test.map(lambda x, y: x), verbose=0)
    return float(np.mean(np.argmax(logits, axis=-1) == dataset.y_test))


def _seed_drop_path(model, seed: int) -> None:
    """Make the drop path masks a function of the training seed (not of build order)."""
    rng = np.random.default_rng([seed, 0x0D2A])
    for layer in model.drop_path_layers:
        state = layer.seed_generator.state
        value = np.array([int(rng.integers(0, 2**31)), 0])
        state.assign(keras.ops.cast(value, state.dtype))


# ------------------------------------------------------------------------ run directories


def train_run(run_dir: str | os.PathLike, *,
              architecture: str | os.PathLike | Architecture | None = None,
              epochs: int | None = None, batch_size: int | None = None,
              cells: int | None = None, channels: int | None = None,
              dataset: Any = None, data_dir: str | os.PathLike | None = None,
              test_fraction: float | None = None,
              seed: int | None = None, resume: bool = False, auxiliary: bool | None = None,
              drop_path: float | None = None, auxiliary_weight: float = 0.4,
              learning_rate: float = 0.025, momentum: float = 0.9,
              weight_decay: float = 3e-4, grad_clip: float | None = 5.0, cutout: int = 16,
              verbose: int = 1, jit_compile: bool = False,
              strategy: str | tf.distribute.Strategy | None = None,
              mixed_precision: bool | str = False, sync_batch_norm: bool = True,
              tensorboard: str | os.PathLike | None = None,
              architecture_source: str | None = None,
              callbacks: Sequence[Any] = ()) -> TrainResult:
    """Build the derived model of a run directory and train it into that directory.

    Without ``architecture``, ``run_dir`` is a search run: it holds ``architecture.json`` and
    ``config.json`` (written by :func:`aca_keras.search`; ``config.json`` needs at least
    ``dataset``, and may give ``data_dir``, ``seed``, ``eval_cells``, ``eval_channels``,
    ``auxiliary``, ``drop_path``, ``test_fraction``: the search's hold-out, which training
    leaves out and evaluates on).

    With ``architecture`` (an :class:`~aca_keras.space.architecture.Architecture` or the path
    of one saved with :meth:`~aca_keras.space.architecture.Architecture.save`; ``aca-train
    --architecture`` also takes zoo entry names), ``run_dir`` need not hold a search: it is
    created if missing, and the architecture is written to its ``architecture.json`` and the
    run's settings to its ``config.json`` (``dataset``, ``data_dir``, ``test_fraction``,
    ``seed``, ``eval_cells``, ``eval_channels``, ``auxiliary``, ``drop_path`` and
    ``architecture_source``), so that ``train_run(run_dir, resume=True)`` (CLI ``aca-train
    RUN_DIR --resume``) continues from the directory alone. A directory that already holds
    the same architecture is trained as a run directory (its ``config.json`` gives what the
    arguments leave ``None``).

    Arguments left ``None`` come from ``config.json``, then from DARTS's defaults (20 cells,
    C = 36, auxiliary head, drop path 0.2); ``epochs`` and ``batch_size`` from the run's
    ``train_config.json`` when resuming, else 600 and 96. ``test_fraction`` given here overrides the
    run's: that share of the data set's training images is held out as the test set (when
    the data set brings no test split), trained without and evaluated on; it is recorded in
    ``train_config.json`` (and a resumed run must use the same split). The model's initial
    weights are drawn from ``seed`` (for a new directory, drawn and recorded when not
    given). ``architecture_source`` says where the architecture came from, for
    ``config.json`` (the CLI passes ``"zoo:<name>"``; default: the file's path or the
    architecture's name). Other arguments are :func:`train`'s.

    Raises:
        RunDirError: the directory, ``architecture.json`` or ``config.json`` is missing or
            invalid, the run's data set cannot be reloaded (pass ``dataset``), or, with
            ``architecture``: the directory holds a different architecture or an unfinished
            search, or it is new and no ``dataset`` is given.
        ArchitectureError: ``architecture`` is a file that is not a valid architecture.
        FileNotFoundError: ``architecture`` is a path with no file.
    """
    strategy = dist.get_strategy(strategy)  # before any TensorFlow work (multi-worker)
    run_path = Path(run_dir)
    run = RunDir(run_path)
    # a resumed run keeps its schedule: its epochs and batch size unless given
    trained = (read_json(run.train_config, "training config")
               if resume and run.train_config.is_file() else {})
    trained = trained if isinstance(trained, dict) else {}
    epochs = epochs if epochs is not None else trained.get("epochs", 600)
    batch_size = batch_size if batch_size is not None else trained.get("batch_size", 96)
    if architecture is not None:
        architecture, source = _given_architecture(architecture, architecture_source)
        config, write_config = _architecture_run_config(run, architecture)
        if dataset is None and not config.get("dataset"):
            raise RunDirError(
                f"{run_path} holds no run to take the data set from: training an "
                "architecture in a new run directory needs dataset= (CLI: --dataset "
                "NAME_OR_PATH).")
    else:
        architecture, config = _search_run(run)
        source, write_config = config.get("architecture_source"), False

    if dataset is None:
        dataset = config.get("dataset")
        if not isinstance(dataset, str) or not dataset or dataset.startswith("<"):
            raise RunDirError(
                f"{run.config} names no reloadable data set (dataset="
                f"{dataset!r}: the search ran on in-memory data); pass the data set explicitly "
                "(CLI: --dataset NAME_OR_PATH).")
    if data_dir is None:
        data_dir = config.get("data_dir")
    if seed is None and config.get("seed") is not None:
        seed = int(config["seed"])
    if seed is None and write_config:
        seed = random.SystemRandom().randrange(2**31)  # recorded: a resume rebuilds the model
    cells = int(cells if cells is not None else config.get("eval_cells", 20))
    channels = int(channels if channels is not None else config.get("eval_channels", 36))
    auxiliary = bool(auxiliary if auxiliary is not None else config.get("auxiliary", True))
    drop_path = float(drop_path if drop_path is not None else config.get("drop_path", 0.2))

    # the hold-out (the search's test_fraction, or this call's): trained on the rest,
    # evaluated on it
    if test_fraction is None:
        test_fraction = config.get("test_fraction")
    load_kwargs: dict[str, Any] = {}
    if data_dir is not None:
        load_kwargs["data_dir"] = data_dir
    if test_fraction is not None:
        test_fraction = float(test_fraction)
        load_kwargs["test_fraction"] = test_fraction
    bundle = load_data(dataset, **load_kwargs)

    if write_config:
        _write_architecture_run(run, architecture, {
            "dataset": _describe_dataset(dataset),
            "data_dir": None if data_dir is None else os.fspath(data_dir),
            "test_fraction": test_fraction, "seed": seed, "eval_cells": cells,
            "eval_channels": channels, "auxiliary": auxiliary, "drop_path": drop_path,
            "architecture_source": source, "versions": package_versions()})
    if seed is not None:
        keras.utils.set_random_seed(int(seed))
    model = build_model(architecture, bundle.input_shape, bundle.num_classes, cells=cells,
                        channels=channels, auxiliary=auxiliary,
                        auxiliary_weight=auxiliary_weight, drop_path=drop_path,
                        mean=bundle.mean, std=bundle.std)
    record: dict[str, Any] = {"test_fraction": test_fraction}
    if source is not None:
        record["architecture_source"] = source
    return _train_scoped(model, bundle, record, epochs=epochs, batch_size=batch_size,
                         learning_rate=learning_rate, momentum=momentum,
                         weight_decay=weight_decay, grad_clip=grad_clip, cutout=cutout,
                         drop_path=None, auxiliary_weight=None, seed=seed, run_dir=run_path,
                         resume=resume, verbose=verbose, data_dir=None, callbacks=callbacks,
                         jit_compile=jit_compile, strategy=strategy,
                         mixed_precision=mixed_precision, sync_batch_norm=sync_batch_norm,
                         tensorboard=tensorboard)


def _search_run(run: RunDir) -> tuple[Architecture, dict[str, Any]]:
    """The architecture and config of a search run directory."""
    if not run.path.is_dir():
        raise RunDirError(f"The run directory {str(run.path)!r} does not exist; give the "
                          f"directory of a search run (it holds {RunDir.ARCHITECTURE} and "
                          f"{RunDir.CONFIG}), or an architecture to train there (CLI: "
                          "--architecture NAME_OR_PATH).")
    if not run.architecture.is_file():
        raise RunDirError(f"The run directory {str(run.path)!r} has no {RunDir.ARCHITECTURE}; "
                          "the search did not finish. Finish or resume the search first.")
    config = _read_config(run)
    try:
        architecture = Architecture.load(run.architecture)
    except ArchitectureError as error:
        raise RunDirError(f"{run.architecture} is not a valid architecture: {error}") from None
    return architecture, config


def _read_config(run: RunDir) -> dict[str, Any]:
    config = read_json(run.config, "run config")
    if not isinstance(config, dict):
        raise RunDirError(f"{run.config} must hold a JSON object.")
    return config


def _given_architecture(architecture: str | os.PathLike | Architecture,
                        source: str | None) -> tuple[Architecture, str]:
    """The architecture ``train_run`` was given, and where it came from."""
    if isinstance(architecture, Architecture):
        return architecture, source or (f"object:{architecture.name}" if architecture.name
                                         else "object")
    if not isinstance(architecture, (str, os.PathLike)):
        raise TypeError(f"architecture must be an Architecture or the path of an "
                        f"{RunDir.ARCHITECTURE} file, got {type(architecture).__name__}")
    path = Path(architecture)
    if path.is_dir() and RunDir(path).architecture.is_file():
        path = RunDir(path).architecture  # a run directory: its architecture
    return Architecture.load(path), source or f"file:{path.resolve()}"


def _same(a: Architecture, b: Architecture) -> bool:
    """Equal documents (as their JSON, which is what a run directory keeps)."""
    return json.loads(a.to_json()) == json.loads(b.to_json())


def _architecture_run_config(run: RunDir, architecture: Architecture
                             ) -> tuple[dict[str, Any], bool]:
    """``(config, write_config)`` for training ``architecture`` in ``run``: refuses a
    directory holding another architecture or an unfinished search; ``write_config`` is
    true for a new run (nothing trained yet in a directory written by ``train_run``)."""
    if run.path.exists() and not run.path.is_dir():
        raise RunDirError(f"{str(run.path)!r} is a file, not a run directory; choose a "
                          "directory (it is created if missing).")
    if run.architecture.is_file():
        try:
            held = Architecture.load(run.architecture)
        except ArchitectureError as error:
            raise RunDirError(f"{run.architecture} is not a valid architecture ({error}); "
                              "choose a new run directory.") from None
        if not _same(held, architecture):
            raise RunDirError(
                f"{run.path} already holds a different {RunDir.ARCHITECTURE} "
                f"({_describe_architecture(held)}, not {_describe_architecture(architecture)}). "
                "To train the architecture it holds, leave out architecture=; to train this "
                "one, choose a new run directory.")
        if not run.config.is_file():
            return {}, True
        config = _read_config(run)
        # a directory written by train_run whose training has not started: rewritten with
        # this call's settings; a search run's config is never rewritten
        ours = "architecture_source" in config
        return config, ours and not run.train_checkpoint_dir.exists()
    if run.config.is_file():
        raise RunDirError(
            f"{run.path} holds a run ({RunDir.CONFIG}) without {RunDir.ARCHITECTURE}: a search "
            "that has not finished. Finish or resume the search, or choose a new run "
            "directory for this architecture.")
    return {}, True


def _describe_architecture(architecture: Architecture) -> str:
    name = f"{architecture.name!r}" if architecture.name else "unnamed"
    return f"{name}, {len(architecture.normal.edges)}+{len(architecture.reduce.edges)} edges"


def _describe_dataset(dataset: Any) -> str:
    """The data set as ``config.json`` records it: a name as given, a path made absolute
    (a resume may start elsewhere), in-memory data as ``<type>`` (pass it again)."""
    if isinstance(dataset, (str, os.PathLike)):
        text = os.fspath(dataset)
        try:
            named = isinstance(dataset, str) and is_dataset_name(text)
        except UnknownDatasetError:
            named = False
        if not named and Path(text).exists():
            return str(Path(text).resolve())
        return text
    return f"<{type(dataset).__name__}>"


def _write_architecture_run(run: RunDir, architecture: Architecture,
                            config: dict[str, Any]) -> None:
    try:
        run.path.mkdir(parents=True, exist_ok=True)
        architecture.save(run.architecture)
        atomic_write_json(run.config, config)
    except OSError as error:
        raise RunDirError(f"Cannot write the run directory {run.path}: {error}. Choose a "
                          "writable directory.") from None
