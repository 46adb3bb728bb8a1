"""``aca_keras.search``: run an ACA architecture search end to end.

A search runs the bi-level DARTS optimisation of a :class:`~aca_keras.models.supernet.SearchNetwork`
under ``model.fit``, derives the genotype, scores the channels of every kept edge, allocates
channels, and returns the static derived Keras model. Everything lands in a run directory:

| file | content |
| --- | --- |
| ``config.json`` | every setting, the seed, package versions (to repeat the run) |
| ``history.csv`` | Keras History, one row per epoch |
| ``alphas.jsonl`` | per epoch: alphas (logits), derived genotype, metrics |
| ``checkpoint.npz`` | written atomically every epoch: all variables, both optimiser states, epoch; ``aca-search --resume RUN_DIR`` continues from it |
| ``genotype.json`` | the final DARTS genotype (versioned JSON) |
| ``architecture.json`` | the ACA architecture: genotype plus channels per edge, scores, diagnostics (identity edges, kept channels per operation kind, the derived network's parameters and multiply-adds) |
| ``model.keras`` | the derived model (evaluation macro settings), untrained |
| ``*.png`` | pictures of the derived cells and of the alpha history |
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import functools
import json
import os
import random
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import keras
import tensorflow as tf

from aca_keras import data as data_lib
from aca_keras import distribute as dist
from aca_keras.callbacks import (
    EpochCSVLogger,
    StopOnNonFinite,
    last_good_checkpoint,
    progress_callbacks,
    stdout_is_terminal,
)
from aca_keras.channels.allocation import allocate
from aca_keras.channels.importance import score_channels
from aca_keras.data import DataBundle
from aca_keras.errors import RunDirError
from aca_keras.io.atomic import (
    atomic_write_json,
    atomic_write_text,
    read_json,
    remove_stale_temporaries,
)
from aca_keras.io.checkpoint import load_checkpoint, save_checkpoint
from aca_keras.io.run_dir import RunDir
from aca_keras.models.derived import DerivedNetwork, build_model
from aca_keras.models.supernet import SearchNetwork
from aca_keras.optimizers import MomentumSGD
from aca_keras.plots import write_run_pictures
from aca_keras.searching.config import SearchConfig
from aca_keras.searching.monitor import MONITOR_KEYS, CollapseMonitor
from aca_keras.searching.variants import SearchVariant, get_variant
from aca_keras.space.architecture import Architecture
from aca_keras.space.topology import reduction_indices
from aca_keras.tensorboard import TensorBoardLogger
from aca_keras.versions import package_versions

__all__ = ["SearchConfig", "build_derived", "build_search_network", "derive_architecture",
           "search", "search_supernet", "search_variant"]


def _default_run_dir(dataset: str) -> Path:
    stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    safe = "".join(c if c.isalnum() or c in "-_" else "_" for c in Path(str(dataset)).name)
    return Path("runs") / f"search-{safe or 'data'}-{stamp}"


def _describe_source(dataset: Any) -> str:
    if isinstance(dataset, (str, os.PathLike)):
        return os.fspath(dataset)
    return f"<{type(dataset).__name__}>"  # in-memory data: pass it again to resume


class _RunDirWriter(keras.callbacks.Callback):
    """Per epoch: append alphas and genotype to ``alphas.jsonl``; write the checkpoint."""

    def __init__(self, run_dir: RunDir, network, steps_per_epoch: int):
        super().__init__()
        self.run_dir = run_dir
        self.network = network
        self.steps_per_epoch = steps_per_epoch

    def on_epoch_end(self, epoch, logs=None):
        alphas = self.network.alphas()
        genotype = self.network.genotype()
        logs = logs or {}
        record = {"epoch": epoch + 1,
                  "metrics": {k: float(v) for k, v in logs.items()
                              if k not in MONITOR_KEYS},
                  # the collapse monitor's figures (None where not measured this epoch)
                  **{k: logs.get(k) for k in MONITOR_KEYS},
                  "alphas": {k: v.tolist() for k, v in alphas.items()},
                  "genotype": genotype.to_dict()}
        betas = self.network.betas()
        if betas is not None:  # PC-DARTS edge normalisation (node-wise softmax)
            record["edge_weights"] = {k: v.tolist() for k, v in betas.items()}
        with open(self.run_dir.alphas, "a", encoding="utf-8") as handle:
            handle.write(json.dumps(record) + "\n")
        save_checkpoint(
            self.run_dir.checkpoint, self.network,
            {"optimizer": self.network.optimizer, "alpha_optimizer": self.network.alpha_optimizer},
            {"epochs_done": epoch + 1, "steps_per_epoch": self.steps_per_epoch,
             "data_position": {"epoch": epoch + 1, "step": 0}})


def _stop_on_non_finite(run_dir: RunDir) -> StopOnNonFinite:
    """Stops at the first NaN/Inf loss, naming the last good search checkpoint."""
    return StopOnNonFinite(
        keys=("loss", "alpha_loss"),
        checkpoint=functools.partial(last_good_checkpoint, run_dir.checkpoint, "epochs_done"),
        advice="Lower the learning rates or check the input data, then resume or restart "
               "the run.")


def _history_rows(run_dir: RunDir) -> int:
    path = run_dir.history
    if not path.is_file():
        return 0
    return max(0, len(path.read_text().strip().splitlines()) - 1)


def _truncate_logs(run_dir: RunDir, epochs_done: int) -> None:
    """Drop per-epoch records written after the checkpoint (a kill between the two writes)."""
    path = run_dir.alphas
    if path.is_file():
        lines = [ln for ln in path.read_text().splitlines() if ln.strip()]
        atomic_write_text(path, "".join(ln + "\n" for ln in lines[:epochs_done]))
    path = run_dir.history
    if path.is_file():
        lines = path.read_text().splitlines()
        atomic_write_text(path, "".join(ln + "\n" for ln in lines[: epochs_done + 1]))


def search(dataset: Any = None, *, epochs: int | None = None,
           ops: str | Sequence[str] | None = None, order: int | None = None,
           cells: int | None = None, channels: int | None = None, nodes: int | None = None,
           batch_size: int | None = None, seed: int | None = None,
           run_dir: str | os.PathLike | None = None, resume: bool = False,
           data_dir: str | None = None, download: bool | None = None, verbose: int | str = 1,
           callbacks: Sequence[keras.callbacks.Callback] = (),
           strategy: str | tf.distribute.Strategy | None = None,
           mixed_precision: bool | str = False, sync_batch_norm: bool | None = None,
           tensorboard: str | os.PathLike | None = None,
           **settings: Any) -> DerivedNetwork:
    """Search a cell with DARTS + ACA and return the derived static Keras model.

    Every setting left ``None`` takes its default from :class:`SearchConfig` (the one
    place the defaults are written; on resume, the run's own ``config.json``).

    Args:
        dataset: a data source for :func:`aca_keras.data.load`: a TFDS name (``"cifar10"``),
            ``"digits"`` (bundled, no download), ``(x, y)`` arrays, an ``.npz`` path, a
            ``tf.data.Dataset`` or an image folder.
        epochs: search epochs (DARTS: 50). On resume, the run's own count unless a larger
            one is given (to extend a finished or interrupted run).
        ops: operation set: ``"aca"`` (no skip_connect, the default), ``"darts"``, R-DARTS's
            ``"rdarts-s2"``/``"-s3"``/``"-s4"`` and their ``-aca`` forms, or a list.
        order: 1 (first-order DARTS) or 2 (unrolled second-order hypergradient).
        cells: supernet cells (DARTS: 8).
        channels: supernet initial channels C (DARTS: 16).
        nodes: intermediate nodes per cell (DARTS: 4).
        batch_size: batch of each of the two halves (DARTS: 64).
        seed: makes the search reproducible on CPU (op determinism is switched on). When
            ``None`` a seed is drawn and recorded in ``config.json``.
        run_dir: where to write the run (default ``runs/search-<dataset>-<time>``).
        resume: continue the run in ``run_dir`` from its last checkpoint, with its own
            ``config.json`` (``epochs`` may be raised).
        data_dir: TFDS data directory holding a prepared copy (named TFDS sets).
        download: allow TFDS to download a named set that is not prepared.
        verbose: Keras ``fit`` verbosity; 0 silences progress output.
        callbacks: extra Keras callbacks for ``fit``.
        strategy: ``None`` (one device), ``"mirrored"`` (the GPUs of this machine),
            ``"multiworker"`` (several machines, configured by ``TF_CONFIG``) or a
            ``tf.distribute`` strategy object; see :mod:`aca_keras.distribute` and
            ``docs/scaling.md``. ``batch_size`` stays the global batch (split evenly over the
            replicas); the search computes the same steps as on one device. ``config.json``
            records the kind and the replica count. On resume, give the strategy to use now.
        mixed_precision: ``True`` runs the supernet in ``mixed_float16`` on a GPU or
            ``mixed_bfloat16`` on the CPU (or give the policy name); alphas, their softmax,
            the logits and the loss stay float32. A resumed run keeps its setting. Keras's
            global dtype policy is restored afterwards.
        sync_batch_norm: under a strategy with several replicas, normalise with the
            statistics of the global batch (default: the search computes what one device
            computes) or, ``False``, with each replica's own (a much smaller and faster to
            build graph, but BatchNorm then sees ``batch_size / replicas`` images). A resumed
            run keeps its setting.
        tensorboard: a directory for TensorBoard event files: every figure of the epoch
            line (losses, accuracies, the collapse monitor's), both learning rates and the
            alphas of each cell as an image, per epoch (:class:`~aca_keras.tensorboard.TensorBoardLogger`).
        **settings: any other :class:`SearchConfig` field (``learning_rate``,
            ``alpha_learning_rate``, ``train_fraction``, ``scorer``, ``allocator``,
            ``eval_cells``, ``eval_channels``, ``auxiliary``, ``drop_path``, ...). The search
            variant: ``variant``, ``"darts"`` (default), ``"pc_darts"``, ``"beta_darts"`` or
            ``"sdarts_rs"`` (any registered one: see :mod:`aca_keras.searching.variants`),
            with ``partial_k`` (PC-DARTS's K, default 4), ``alpha_warmup_epochs`` (epochs
            with frozen architecture weights, default 15 for PC-DARTS clipped to
            ``epochs - 1``, else 0), ``beta_decay_weight`` (the beta-decay ramp end, default 1
            for beta-DARTS, else 0) and ``perturbation_epsilon`` (SDARTS-RS's largest
            perturbation, default 0.3). Other settings keep DARTS's defaults for every
            variant.

    Returns:
        The derived :class:`~aca_keras.models.derived.DerivedNetwork`, with ``model.architecture``.
    """
    # first: a multi-worker strategy must exist before TensorFlow runs anything
    strategy_obj = dist.get_strategy(strategy)
    described = dist.describe_strategy(strategy_obj)
    given = dict(epochs=epochs, ops=ops if ops is None or isinstance(ops, str) else list(ops),
                 order=order, cells=cells, channels=channels, nodes=nodes,
                 batch_size=batch_size, seed=seed, data_dir=data_dir, download=download,
                 sync_batch_norm=sync_batch_norm, **settings)
    run, config = _prepare(dataset, run_dir, resume,
                           {k: v for k, v in given.items() if v is not None},
                           devices=dict(strategy=described["kind"],
                                        replicas=described["replicas"]),
                           mixed_precision=mixed_precision)
    say = _printer(verbose)
    try:
        source = config.dataset if dataset is None or isinstance(dataset, (str, os.PathLike)) \
            else dataset
        bundle = load_search_data(source, config)
        say(f"aca_keras search: {bundle.name} {bundle.input_shape} x{bundle.num_train}, "
            f"{config.epochs} epochs, variant={config.variant}, ops={config.ops}, "
            f"order={config.order}, seed={config.seed} -> {run.path}")
        if len(reduction_indices(config.cells)) == config.cells:
            say(f"note: with cells={config.cells} every supernet cell is a reduction cell; the "
                "normal cell's alphas get no gradient and the derived normal cell comes from "
                "their initial values (use cells >= 3 to search it)")
        # Keras's progress bar shows no metrics in a file: one line per epoch there, and
        # progress lines during the epoch
        fit_verbose = 2 if verbose == 1 and not stdout_is_terminal() else verbose
        network = search_supernet(bundle, config, run, verbose=fit_verbose,
                                  callbacks=[*callbacks, *_tensorboard_callbacks(tensorboard),
                                             *progress_callbacks(verbose)],
                                  strategy=strategy_obj, say=say)
    except BaseException:
        # a new run that failed before its first checkpoint leaves nothing behind, so the
        # same run directory can be used again
        if not resume and not run.checkpoint.exists():
            _remove_unstarted_run(run)
        raise
    # the step's graph is not needed any more: scoring and the derived model reuse its memory
    network.release_traced_functions()
    architecture = derive_architecture(network, bundle, config, run, say=say)
    del network
    return build_derived(architecture, bundle, config, run, say=say)


def _tensorboard_callbacks(directory: str | os.PathLike | None) -> list:
    """``[TensorBoardLogger(directory)]``, or nothing when ``directory`` is ``None``."""
    return [] if directory is None else [TensorBoardLogger(directory)]


def load_search_data(source: Any, config: SearchConfig) -> DataBundle:
    """The data a search with ``config`` sees: ``source`` loaded with the run's hold-out
    (``test_fraction``), then cut to its first ``search_images`` training images.

    The held-out images are the bundle's test part; the search never reads them.
    """
    bundle = data_lib.load(source, data_dir=config.data_dir, download=config.download,
                           test_fraction=config.test_fraction)
    if config.search_images is not None:
        bundle = bundle.head(config.search_images)
    return bundle


def _remove_unstarted_run(run: RunDir) -> None:
    """Delete what a new run wrote before its first checkpoint (config, logs, temporaries)
    and the run directory itself when that leaves it empty."""
    for path in (run.config, run.history, run.alphas, run.checkpoint):
        remove_stale_temporaries(path)
        with contextlib.suppress(OSError):
            path.unlink(missing_ok=True)
    with contextlib.suppress(OSError):
        run.path.rmdir()  # only when empty


def _printer(verbose):
    def say(message: str) -> None:
        if verbose:
            print(message, flush=True)
    say.enabled = bool(verbose)
    return say


def _prepare(dataset, run_dir, resume: bool, overrides: dict[str, Any], *,
             devices: dict[str, Any], mixed_precision: bool | str) -> tuple[RunDir, SearchConfig]:
    """The run directory and the settings of a new or resumed run (``config.json`` written)."""
    if resume:
        if run_dir is None:
            raise RunDirError("resume=True needs run_dir, the directory of the run to continue.")
        run = RunDir(run_dir)
        if not run.path.is_dir():
            raise RunDirError(f"Cannot resume: {run.path} is not a directory.")
        if run.architecture.is_file() and not run.checkpoint.exists():
            raise RunDirError(
                f"Cannot resume {run.path}: it holds an allocation ({RunDir.ARCHITECTURE}) but no "
                f"supernet checkpoint, as a reallocation writes it; there is no search to "
                "continue. Train it with aca-train, or resume the source run.")
        config = SearchConfig.from_dict(read_json(run.config, "run config"))
        if overrides.get("epochs") is not None:
            if overrides["epochs"] < config.epochs:
                raise ValueError(f"The run in {run.path} was set up for {config.epochs} epochs; "
                                 "resume can keep or raise that, not lower it.")
            config.epochs = overrides["epochs"]
        # the devices of this session (the dtype policy stays the run's own)
        config.strategy, config.replicas = devices["strategy"], devices["replicas"]
        if config.dataset.startswith("<") and (dataset is None
                                               or isinstance(dataset, (str, os.PathLike))):
            raise RunDirError(
                f"The run in {run.path} searched in-memory data ({config.dataset}); pass the "
                "same data again as `dataset` to resume it.")
    else:
        if overrides.get("seed") is None:
            overrides["seed"] = random.SystemRandom().randrange(2**31)
        source = _describe_source(dataset) if dataset is not None else SearchConfig.dataset
        config = SearchConfig(dataset=source, **devices,
                              mixed_precision=bool(mixed_precision),
                              dtype_policy=dist.precision_policy(mixed_precision), **overrides)
        run = RunDir(run_dir if run_dir is not None else _default_run_dir(config.dataset))
        if run.holds_search():
            raise RunDirError(f"{run.path} already holds a run. Resume it with resume=True "
                              "(CLI: --resume), or choose another run directory.")
    config.validate()
    config.resolve_variant()
    config.versions = package_versions()
    try:
        run.path.mkdir(parents=True, exist_ok=True)
        atomic_write_json(run.config, config.to_dict())
    except OSError as error:
        raise RunDirError(f"Cannot write the run directory {run.path}: {error.strerror}. "
                          "Choose a writable run_dir.") from None
    return run, config


def build_search_network(bundle, config: SearchConfig, steps_per_epoch: int, *,
                         strategy: tf.distribute.Strategy | None = None) -> SearchNetwork:
    """The compiled supernet for ``config`` with DARTS's optimisers and cosine schedule.

    ``strategy``: the strategy the network is built for (call this in its scope); its
    BatchNorm layers synchronise when it has several replicas and ``config.sync_batch_norm``
    is on (:func:`aca_keras.distribute.synchronize_batch_norm`)."""
    variant = search_variant(config, steps_per_epoch)
    keras.utils.set_random_seed(config.seed)
    network = SearchNetwork(
        bundle.input_shape, bundle.num_classes, cells=config.cells, channels=config.channels,
        nodes=config.nodes, stem_multiplier=config.stem_multiplier, ops=config.ops,
        mean=bundle.mean, std=bundle.std, **variant.network_arguments(),
        sync_batch_norm=dist.synchronize_batch_norm(strategy, config.sync_batch_norm),
        layout=config.layout)
    schedule = keras.optimizers.schedules.CosineDecay(
        config.learning_rate, decay_steps=max(1, config.epochs * steps_per_epoch),
        alpha=config.learning_rate_min / config.learning_rate)
    network.compile(
        optimizer=MomentumSGD(schedule, momentum=config.momentum),
        alpha_optimizer=keras.optimizers.Adam(config.alpha_learning_rate, beta_1=0.5,
                                              beta_2=0.999),
        order=config.order, weight_decay=config.weight_decay,
        alpha_weight_decay=config.alpha_weight_decay, grad_clip=config.grad_clip,
        jit_compile=config.jit_compile, recompute=config.recompute,
        **variant.compile_arguments())
    return network


def search_variant(config: SearchConfig, steps_per_epoch: int | None = None) -> SearchVariant:
    """The search variant of ``config`` (:func:`~aca_keras.searching.variants.get_variant`),
    its settings resolved into ``config`` and bound to this search
    (:meth:`~aca_keras.models.variant.SearchVariant.configure`: the settings, ``epochs``,
    ``steps_per_epoch``, ``seed``)."""
    config.resolve_variant()
    variant = get_variant(config.variant)
    settings = {name: getattr(config, name) for name in variant.setting_names()}
    return variant.configure(settings, epochs=config.epochs, steps_per_epoch=steps_per_epoch,
                             seed=config.seed)


def search_supernet(bundle, config: SearchConfig, run_dir: str | os.PathLike | RunDir, *,
                    verbose: int | str = 1,
                    callbacks: Sequence[keras.callbacks.Callback] = (),
                    strategy: tf.distribute.Strategy | None = None, say=None) -> SearchNetwork:
    """Stage 1 of :func:`search`: build the supernet and train weights and alphas in turns,
    resuming from ``run_dir``'s checkpoint if there is one; per epoch it writes the
    checkpoint, ``alphas.jsonl`` (with the collapse monitor) and ``history.csv``.

    Runs in ``strategy``'s scope, ``config``'s dtype policy and BatchNorm synchronisation;
    returns the trained supernet.
    """
    run = run_dir if isinstance(run_dir, RunDir) else RunDir(run_dir)
    say = say or _printer(verbose)
    with dist.dtype_policy(config.dtype_policy), dist.strategy_scope(strategy):
        return _train_supernet(bundle, config, run, verbose, callbacks, say, strategy)


def _train_supernet(bundle, config: SearchConfig, run: RunDir, verbose, callbacks, say,
                    strategy: tf.distribute.Strategy | None = None):
    tf.config.experimental.enable_op_determinism()
    probe = bundle.search_pipelines(batch_size=config.batch_size,
                                    train_fraction=config.train_fraction, seed=config.seed,
                                    epochs=config.epochs, start_epoch=0)
    steps = probe.steps_per_epoch
    dist.check_global_batch(probe.batch_size, dist.num_replicas())
    network = build_search_network(bundle, config, steps, strategy=strategy)
    optimizers = {"optimizer": network.optimizer, "alpha_optimizer": network.alpha_optimizer}
    start_epoch = 0
    if run.checkpoint.is_file():
        meta = load_checkpoint(run.checkpoint, network, optimizers)
        start_epoch = int(meta["epochs_done"])
        if meta.get("steps_per_epoch") != steps:
            raise RunDirError(f"The checkpoint in {run.path} was written with "
                              f"{meta.get('steps_per_epoch')} steps per epoch, this data gives "
                              f"{steps}; resume with the same data.")
        _truncate_logs(run, start_epoch)
        say(f"resuming after epoch {start_epoch} of {config.epochs}")
    if start_epoch < config.epochs:
        pipelines = bundle.search_pipelines(
            batch_size=config.batch_size, train_fraction=config.train_fraction,
            seed=config.seed, epochs=config.epochs, start_epoch=start_epoch)
        network.fit(
            dist.data_options(pipelines.dataset), epochs=config.epochs, initial_epoch=start_epoch,
            steps_per_epoch=steps, verbose=verbose, shuffle=False,
            callbacks=[*search_variant(config, steps).callbacks(network),
                       _stop_on_non_finite(run),
                       _collapse_monitor(network, bundle, config, say),
                       _RunDirWriter(run, network, steps),
                       # history.csv counts epochs from 1
                       EpochCSVLogger(str(run.history), append=_history_rows(run) > 0),
                       *callbacks])
    return network


def _collapse_monitor(network, bundle, config: SearchConfig, say) -> CollapseMonitor:
    """The collapse monitor on a fixed alpha-validation batch (the first one, unaugmented)."""
    first = bundle.search_pipelines(
        batch_size=config.batch_size, train_fraction=config.train_fraction, seed=config.seed,
        epochs=1, start_epoch=0, augment=False).dataset
    (_, _), (x_a, y_a) = next(iter(first))
    every = config.hessian_every
    if every and dist.num_replicas() > 1:
        say("collapse monitor: the Hessian eigenvalue is measured on one device only; "
            "switched off under a multi-replica strategy (skip counts are still recorded)")
        every = 0
    return CollapseMonitor(network, (x_a, y_a), every=every,
                           iterations=config.hessian_iterations, verbose=say.enabled)


def derive_architecture(network: SearchNetwork, bundle, config: SearchConfig,
                        run_dir: str | os.PathLike | RunDir | None = None, *,
                        say=None) -> Architecture:
    """Stage 2 of :func:`search`: the genotype of the trained supernet, its channels scored
    (``config.scorer``, ``pooling``, ``divide_weight``, ``score_batches``) on the
    alpha-validation split and allocated (``config.allocator``); the provenance records the
    settings. With ``run_dir``, writes ``genotype.json`` and ``architecture.json``."""
    run = None if run_dir is None else (run_dir if isinstance(run_dir, RunDir)
                                        else RunDir(run_dir))
    say = say or _printer(0)
    genotype = network.genotype()
    if run is not None:
        atomic_write_text(run.genotype, genotype.to_json() + "\n")
    provenance = {
        "variant": config.variant, "partial_k": config.partial_k,
        "alpha_warmup_epochs": config.alpha_warmup_epochs,
        "beta_decay_weight": config.beta_decay_weight,
        **{name: getattr(config, name) for name in get_variant(config.variant).own_settings},
        "order": config.order, "scorer": config.scorer, "pooling": config.pooling,
        "divide_weight": config.divide_weight,
        "allocator": config.allocator, "dataset": config.dataset, "seed": config.seed,
        "search": {k: v for k, v in config.to_dict().items() if k != "versions"},
        "versions": config.versions,
    }
    architecture = Architecture.from_genotype(genotype, config.channels, network.op_names,
                                              provenance=provenance)
    alpha_batches = bundle.search_pipelines(
        batch_size=config.batch_size, train_fraction=config.train_fraction, seed=config.seed,
        epochs=1, start_epoch=0, augment=False)
    short = alpha_batches.steps_per_epoch < config.score_batches
    say(f"scoring channels ({config.scorer}, pooling {config.pooling}"
        f"{', divided by the op weight' if config.divide_weight else ''}) on "
        f"{min(config.score_batches, alpha_batches.steps_per_epoch)} validation batches"
        + (f" (the split has fewer than the {config.score_batches} requested)" if short else ""))
    scores = score_channels(network, architecture, alpha_batches.dataset, scorer=config.scorer,
                            pooling=config.pooling, divide_weight=config.divide_weight,
                            max_batches=config.score_batches, verbose=say.enabled)
    architecture = allocate(architecture, scores, method=config.allocator)
    if run is not None:
        architecture.save(run.architecture)
    say(f"allocation ({config.allocator}): normal k_e={list(architecture.normal.channels)}, "
        f"reduce k_e={list(architecture.reduce.channels)} of C={config.channels}")
    say(architecture.summary())
    return architecture


def build_derived(architecture: Architecture, bundle, config: SearchConfig,
                  run_dir: str | os.PathLike | RunDir | None = None, *,
                  say=None) -> DerivedNetwork:
    """Stage 3 of :func:`search`: the derived network at the evaluation macro settings
    (``config.eval_cells``, ``eval_channels``, ``auxiliary``, ``drop_path``). With
    ``run_dir``, saves it as ``model.keras`` with the run's pictures, records its size
    (:meth:`~aca_keras.models.derived.DerivedNetwork.size` and macro settings) in
    ``architecture.json``'s ``diagnostics["network"]`` and sets ``model.run_dir``."""
    say = say or _printer(0)
    model = build_model(architecture, bundle.input_shape, bundle.num_classes,
                        cells=config.eval_cells, channels=config.eval_channels,
                        auxiliary=config.auxiliary, drop_path=config.drop_path,
                        mean=bundle.mean, std=bundle.std)
    if run_dir is None:
        return model
    run = run_dir if isinstance(run_dir, RunDir) else RunDir(run_dir)
    model.save(run.model)
    size = model.size()
    architecture.save(run.architecture, network={
        "cells": config.eval_cells, "channels": config.eval_channels,
        "input_shape": list(bundle.input_shape), "num_classes": int(bundle.num_classes),
        **size})
    pictures = write_run_pictures(run.path, architecture)
    say(f"pictures: {', '.join(p.name for p in pictures)}")
    say(f"derived model: {size['parameters']:,} parameters, {size['multiply_adds']:,} "
        f"multiply-adds per image (without the auxiliary head), saved to {run.model}")
    model.run_dir = str(run.path)
    return model
