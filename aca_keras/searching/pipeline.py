"""``aca_keras.search``: run an ACA architecture search end to end.

A search runs the bi-level DARTS optimisation of a :class:`~aca_keras.supernet.SearchNetwork`
under ``model.fit``, derives the genotype, scores the channels of every kept edge, allocates
channels, and returns the static derived Keras model. Everything lands in a run directory:

| file | content |
| --- | --- |
| ``config.json`` | every setting, the seed, package versions (to repeat the run) |
| ``history.csv`` | Keras History, one row per epoch |
| ``alphas.jsonl`` | per epoch: alphas (logits), derived genotype, metrics |
| ``checkpoint.npz`` | written atomically every epoch: all variables, both optimiser states, epoch; ``aca-search --resume RUN_DIR`` continues from it |
| ``genotype.json`` | the final DARTS genotype (versioned JSON) |
| ``architecture.json`` | the ACA architecture: genotype plus channels per edge, scores |
| ``model.keras`` | the derived model (evaluation macro settings), untrained |
| ``*.png`` | pictures of the derived cells and of the alpha history |
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import json
import math
import os
import platform
import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from aca_keras import distribute as dist
from aca_keras.errors import NumericalError, RunDirError
from aca_keras.io import checkpoint as ckpt
from aca_keras.layers import ops as ops_lib
from aca_keras.optimizers import MomentumSGD
from aca_keras.searching.monitor import MONITOR_KEYS, CollapseMonitor

CONFIG_FILE = "config.json"
CHECKPOINT_FILE = "checkpoint.npz"
HISTORY_FILE = "history.csv"
ALPHAS_FILE = "alphas.jsonl"
GENOTYPE_FILE = "genotype.json"
ARCHITECTURE_FILE = "architecture.json"
MODEL_FILE = "model.keras"


@dataclass
class SearchConfig:
    """All settings of a search; saved as ``config.json`` and reloaded on resume.

    Defaults follow the published DARTS search setting (see ``../shared/design/ACA.md``).
    """

    dataset: str = "cifar10"
    data_dir: str | None = None
    download: bool = True
    epochs: int = 50
    ops: str | list[str] = "aca"
    order: int = 1
    variant: str = "darts"
    partial_k: int | None = None
    alpha_warmup_epochs: int | None = None
    beta_decay_weight: float | None = None
    cells: int = 8
    channels: int = 16
    nodes: int = 4
    stem_multiplier: int = 3
    batch_size: int = 64
    train_fraction: float = 0.5
    learning_rate: float = 0.025
    learning_rate_min: float = 0.001
    momentum: float = 0.9
    weight_decay: float = 3e-4
    alpha_learning_rate: float = 3e-4
    alpha_weight_decay: float = 1e-3
    grad_clip: float = 5.0
    scorer: str = "taylor"
    pooling: str = "index"
    divide_weight: bool = False
    allocator: str = "adaptive"
    score_batches: int = 16
    # collapse monitor (aca_keras.monitor): Hessian eigenvalue every N epochs (0: off)
    hessian_every: int = 1
    hessian_iterations: int = 20
    eval_cells: int = 20
    eval_channels: int = 36
    auxiliary: bool = True
    drop_path: float = 0.2
    seed: int | None = None
    jit_compile: bool = False
    # tf.distribute: the kind ("default", "mirrored", "multiworker") and replica count of the
    # last session (a resume may use other devices); the strategy object itself is not JSON
    strategy: str = "default"
    replicas: int = 1
    # BatchNorm statistics of the global batch under a multi-replica strategy (the results of
    # one device) or of each replica's share (cheaper graph, other results)
    sync_batch_norm: bool = True
    # mixed precision: the Keras dtype policy of the supernet ("float32", "mixed_bfloat16",
    # "mixed_float16"); a resume keeps it
    mixed_precision: bool = False
    dtype_policy: str = "float32"
    versions: dict[str, str] = field(default_factory=dict)

    def validate(self) -> SearchConfig:
        """Check ranges, raising ``ValueError`` with the offending setting named."""
        positive = ("epochs", "cells", "channels", "nodes", "stem_multiplier", "batch_size",
                    "score_batches", "eval_cells", "eval_channels")
        for name in positive:
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if self.order not in (1, 2):
            raise ValueError(f"order must be 1 (first order) or 2 (unrolled), got {self.order!r}")
        from aca_keras.searching.variants import resolve_settings

        resolved = resolve_settings(self.variant, self.epochs, self.partial_k,
                                    self.alpha_warmup_epochs, self.beta_decay_weight)
        if self.channels % resolved["partial_k"]:
            raise ValueError(f"channels ({self.channels}) must be a multiple of partial_k "
                             f"({resolved['partial_k']}) for variant {self.variant!r}")
        if not 0.0 < self.train_fraction < 1.0:
            raise ValueError(f"train_fraction must be in (0, 1), got {self.train_fraction}")
        if self.dtype_policy not in ("float32", "mixed_float16", "mixed_bfloat16"):
            raise ValueError(f"dtype_policy must be float32, mixed_float16 or mixed_bfloat16, "
                             f"got {self.dtype_policy!r}")
        if not 0.0 <= self.drop_path < 1.0:
            raise ValueError(f"drop_path must be in [0, 1), got {self.drop_path}")
        ops_lib.resolve_op_set(self.ops)
        from aca_keras.channels.allocation import get_allocator
        from aca_keras.channels.importance import get_pooling, get_scorer

        get_allocator(self.allocator)
        get_scorer(self.scorer)
        get_pooling(self.pooling)
        if self.divide_weight and self.scorer == "alpha":
            raise ValueError("divide_weight with scorer 'alpha' makes every channel score "
                             "equal; use scorer 'refill', 'taylor' or 'magnitude'.")
        if not isinstance(self.hessian_every, int) or self.hessian_every < 0:
            raise ValueError(f"hessian_every must be an integer >= 0 (0: off), got "
                             f"{self.hessian_every!r}")
        if not isinstance(self.hessian_iterations, int) or self.hessian_iterations < 1:
            raise ValueError(f"hessian_iterations must be a positive integer, got "
                             f"{self.hessian_iterations!r}")
        return self

    def resolve_variant(self) -> SearchConfig:
        """Fill the variant's defaults (``partial_k``, ``alpha_warmup_epochs``,
        ``beta_decay_weight``) into the settings left ``None``; returns ``self``."""
        from aca_keras.searching.variants import resolve_settings

        for key, value in resolve_settings(self.variant, self.epochs, self.partial_k,
                                           self.alpha_warmup_epochs,
                                           self.beta_decay_weight).items():
            setattr(self, key, value)
        return self

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SearchConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise RunDirError(f"config.json has unknown settings {unknown}; was it written by a "
                              "newer aca_keras? Upgrade aca_keras.")
        return cls(**data)


def package_versions() -> dict[str, str]:
    """Versions of the packages that determine a run's results."""
    import aca_keras

    return {"aca_keras": aca_keras.__version__, "tensorflow": tf.__version__,
            "keras": keras.__version__, "numpy": np.__version__,
            "python": platform.python_version(), "machine": platform.machine()}


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

    def __init__(self, run_dir: Path, network, steps_per_epoch: int):
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
        with open(self.run_dir / ALPHAS_FILE, "a", encoding="utf-8") as handle:
            handle.write(json.dumps(record) + "\n")
        ckpt.save_checkpoint(
            self.run_dir / CHECKPOINT_FILE, self.network,
            {"optimizer": self.network.optimizer, "alpha_optimizer": self.network.alpha_optimizer},
            {"epochs_done": epoch + 1, "steps_per_epoch": self.steps_per_epoch,
             "data_position": {"epoch": epoch + 1, "step": 0}})


class _StopOnNonFinite(keras.callbacks.Callback):
    """Stops a run at the first NaN/Inf loss with an error naming the last good checkpoint."""

    def __init__(self, run_dir: Path):
        super().__init__()
        self.run_dir = run_dir

    def on_train_batch_end(self, batch, logs=None):
        for key in ("loss", "alpha_loss"):
            value = (logs or {}).get(key)
            if value is not None and not math.isfinite(float(value)):
                path = self.run_dir / CHECKPOINT_FILE
                last = (f"the last good checkpoint is {path} (epoch "
                        f"{ckpt.read_checkpoint_meta(path)['epochs_done']})" if path.is_file()
                        else "no epoch had finished, so there is no checkpoint")
                raise NumericalError(
                    f"The {key} became {value} at step {batch + 1}; {last}. Lower the learning "
                    "rates or check the input data, then resume or restart the run.")


def _history_rows(run_dir: Path) -> int:
    path = run_dir / HISTORY_FILE
    if not path.is_file():
        return 0
    return max(0, len(path.read_text().strip().splitlines()) - 1)


def _truncate_logs(run_dir: Path, epochs_done: int) -> None:
    """Drop per-epoch records written after the checkpoint (a kill between the two writes)."""
    path = run_dir / ALPHAS_FILE
    if path.is_file():
        lines = [ln for ln in path.read_text().splitlines() if ln.strip()]
        ckpt.atomic_write_text(path, "".join(ln + "\n" for ln in lines[:epochs_done]))
    path = run_dir / HISTORY_FILE
    if path.is_file():
        lines = path.read_text().splitlines()
        ckpt.atomic_write_text(path, "".join(ln + "\n" for ln in lines[: epochs_done + 1]))


def search(dataset: Any = "cifar10", *, epochs: int | None = None, ops: str | Sequence[str] = "aca",
           order: int = 1, cells: int = 8, channels: int = 16, nodes: int = 4,
           batch_size: int = 64, seed: int | None = None, run_dir: str | os.PathLike | None = None,
           resume: bool = False, data_dir: str | None = None, download: bool = True,
           verbose: int | str = 1, callbacks: Sequence[keras.callbacks.Callback] = (),
           strategy: str | tf.distribute.Strategy | None = None,
           mixed_precision: bool | str = False, sync_batch_norm: bool = True,
           **settings: Any) -> keras.Model:
    """Search a cell with DARTS + ACA and return the derived static Keras model.

    Args:
        dataset: a data source for :func:`aca_keras.data.load`: a TFDS name (``"cifar10"``),
            ``"digits"`` (bundled, no download), ``(x, y)`` arrays, an ``.npz`` path, a
            ``tf.data.Dataset`` or an image folder.
        epochs: search epochs (default 50, as DARTS). On resume, the run's own count unless a
            larger one is given (to extend a finished or interrupted run).
        ops: operation set, ``"aca"`` (no skip_connect, default) or ``"darts"``, or a list.
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
        **settings: any other :class:`SearchConfig` field (``learning_rate``,
            ``alpha_learning_rate``, ``train_fraction``, ``scorer``, ``allocator``,
            ``eval_cells``, ``eval_channels``, ``auxiliary``, ``drop_path``, ...). The search
            variant: ``variant``, ``"darts"`` (default), ``"pc_darts"`` or ``"beta_darts"``
            (see :mod:`aca_keras.variants`), with ``partial_k`` (PC-DARTS's K, default 4),
            ``alpha_warmup_epochs`` (epochs with frozen architecture weights, default 15 for
            PC-DARTS clipped to ``epochs - 1``, else 0) and ``beta_decay_weight`` (the
            beta-decay ramp end, default 1 for beta-DARTS, else 0). Other settings keep
            DARTS's defaults for every variant.

    Returns:
        The derived :class:`~aca_keras.derived.DerivedNetwork`, with ``model.architecture``.
    """
    # first: a multi-worker strategy must exist before TensorFlow runs anything
    strategy_obj = dist.get_strategy(strategy)
    described = dist.describe_strategy(strategy_obj)
    run_path, config = _prepare(dataset, run_dir, resume, dict(
        epochs=epochs, ops=ops if isinstance(ops, str) else list(ops), order=order, cells=cells,
        channels=channels, nodes=nodes, batch_size=batch_size, seed=seed, data_dir=data_dir,
        download=download, strategy=described["kind"], replicas=described["replicas"],
        mixed_precision=bool(mixed_precision), sync_batch_norm=bool(sync_batch_norm),
        dtype_policy=dist.precision_policy(mixed_precision), **settings))
    say = _printer(verbose)
    from aca_keras.callbacks import progress_callbacks, stdout_is_terminal
    from aca_keras.data import loading as data_lib
    from aca_keras.models.supernet import reduction_indices as supernet_reductions

    try:
        source = dataset if not isinstance(dataset, (str, os.PathLike)) else config.dataset
        bundle = data_lib.load(source, data_dir=config.data_dir, download=config.download)
        say(f"aca_keras search: {bundle.name} {bundle.input_shape} x{bundle.num_train}, "
            f"{config.epochs} epochs, variant={config.variant}, ops={config.ops}, "
            f"order={config.order}, seed={config.seed} "
            f"-> {run_path}")
        if len(supernet_reductions(config.cells)) == config.cells:
            say(f"note: with cells={config.cells} every supernet cell is a reduction cell; the "
                "normal cell's alphas get no gradient and the derived normal cell comes from "
                "their initial values (use cells >= 3 to search it)")
        # the supernet is created, compiled and trained in the strategy's scope and dtype
        # policy; the derived model is built afterwards, outside both (float32, no strategy)
        with dist.dtype_policy(config.dtype_policy), dist.strategy_scope(strategy_obj), \
                dist.batch_norm_sync(config.sync_batch_norm):
            # Keras's progress bar shows no metrics in a file: one line per epoch there,
            # and progress lines during the epoch
            fit_verbose = 2 if verbose == 1 and not stdout_is_terminal() else verbose
            network = _search_supernet(bundle, config, run_path, fit_verbose,
                                       [*callbacks, *progress_callbacks(verbose)], say)
    except BaseException:
        # a new run that failed before its first checkpoint leaves nothing behind, so the
        # same run directory can be used again
        if not resume and not (run_path / CHECKPOINT_FILE).exists():
            _remove_unstarted_run(run_path)
        raise
    return _derive_and_build(network, bundle, config, run_path, say)


def _remove_unstarted_run(run_path: Path) -> None:
    """Delete what a new run wrote before its first checkpoint (config, logs, temporaries)
    and the run directory itself when that leaves it empty."""
    import contextlib

    for name in (CONFIG_FILE, HISTORY_FILE, ALPHAS_FILE, CHECKPOINT_FILE):
        ckpt.remove_stale_temporaries(run_path / name)
        with contextlib.suppress(OSError):
            (run_path / name).unlink(missing_ok=True)
    with contextlib.suppress(OSError):
        run_path.rmdir()  # only when empty


def _printer(verbose):
    def say(message: str) -> None:
        if verbose:
            print(message, flush=True)
    say.enabled = bool(verbose)
    return say


def _prepare(dataset, run_dir, resume: bool, overrides: dict[str, Any]) -> tuple[Path, SearchConfig]:
    if resume:
        if run_dir is None:
            raise RunDirError("resume=True needs run_dir, the directory of the run to continue.")
        run_path = Path(run_dir)
        if not run_path.is_dir():
            raise RunDirError(f"Cannot resume: {run_path} is not a directory.")
        config = SearchConfig.from_dict(ckpt.read_json(run_path / CONFIG_FILE, "run config"))
        if overrides.get("epochs") is not None:
            if overrides["epochs"] < config.epochs:
                raise ValueError(f"The run in {run_path} was set up for {config.epochs} epochs; "
                                 "resume can keep or raise that, not lower it.")
            config.epochs = overrides["epochs"]
        # the devices of this session (the dtype policy stays the run's own)
        config.strategy, config.replicas = overrides["strategy"], overrides["replicas"]
        if config.dataset.startswith("<") and isinstance(dataset, (str, os.PathLike)):
            raise RunDirError(
                f"The run in {run_path} searched in-memory data ({config.dataset}); pass the same "
                "data again as `dataset` to resume it.")
    else:
        if overrides.get("seed") is None:
            overrides["seed"] = random.SystemRandom().randrange(2**31)
        if overrides.get("epochs") is None:
            overrides["epochs"] = SearchConfig.epochs
        config = SearchConfig(dataset=_describe_source(dataset), **overrides)
        run_path = Path(run_dir) if run_dir is not None else _default_run_dir(config.dataset)
        if (run_path / CONFIG_FILE).exists():
            raise RunDirError(f"{run_path} already holds a run. Resume it with resume=True "
                              "(CLI: --resume), or choose another run directory.")
    config.validate()
    config.resolve_variant()
    config.versions = package_versions()
    try:
        run_path.mkdir(parents=True, exist_ok=True)
        ckpt.atomic_write_json(run_path / CONFIG_FILE, config.to_dict())
    except OSError as error:
        raise RunDirError(f"Cannot write the run directory {run_path}: {error.strerror}. Choose "
                          "a writable run_dir.") from None
    return run_path, config


def build_search_network(bundle, config: SearchConfig, steps_per_epoch: int):
    """The compiled supernet for ``config`` with DARTS's optimisers and cosine schedule."""
    from aca_keras.models.supernet import SearchNetwork
    from aca_keras.searching.variants import get_variant

    config.resolve_variant()
    keras.utils.set_random_seed(config.seed)
    network = SearchNetwork(
        bundle.input_shape, bundle.num_classes, cells=config.cells, channels=config.channels,
        nodes=config.nodes, stem_multiplier=config.stem_multiplier, ops=config.ops,
        mean=bundle.mean, std=bundle.std, partial_k=config.partial_k,
        edge_normalization=get_variant(config.variant).edge_normalization)
    schedule = keras.optimizers.schedules.CosineDecay(
        config.learning_rate, decay_steps=max(1, config.epochs * steps_per_epoch),
        alpha=config.learning_rate_min / config.learning_rate)
    network.compile(
        optimizer=MomentumSGD(schedule, momentum=config.momentum),
        alpha_optimizer=keras.optimizers.Adam(config.alpha_learning_rate, beta_1=0.5,
                                              beta_2=0.999),
        order=config.order, weight_decay=config.weight_decay,
        alpha_weight_decay=config.alpha_weight_decay, grad_clip=config.grad_clip,
        jit_compile=config.jit_compile, alpha_warmup=config.alpha_warmup_epochs > 0,
        beta_decay=config.beta_decay_weight > 0)
    return network


def _variant_callbacks(network, config: SearchConfig) -> list[keras.callbacks.Callback]:
    """The alpha warm-up and beta-decay schedules the variant needs (none for DARTS)."""
    from aca_keras.searching.variants import AlphaWarmup, BetaDecaySchedule

    out: list[keras.callbacks.Callback] = []
    if config.alpha_warmup_epochs:
        out.append(AlphaWarmup(network, config.alpha_warmup_epochs))
    if config.beta_decay_weight:
        out.append(BetaDecaySchedule(network, config.beta_decay_weight, config.epochs))
    return out


def _search_supernet(bundle, config: SearchConfig, run_path: Path, verbose, callbacks, say):
    tf.config.experimental.enable_op_determinism()
    probe = bundle.search_pipelines(batch_size=config.batch_size,
                                    train_fraction=config.train_fraction, seed=config.seed,
                                    epochs=config.epochs, start_epoch=0)
    steps = probe.steps_per_epoch
    dist.check_global_batch(probe.batch_size, dist.num_replicas())
    network = build_search_network(bundle, config, steps)
    optimizers = {"optimizer": network.optimizer, "alpha_optimizer": network.alpha_optimizer}
    start_epoch = 0
    checkpoint_path = run_path / CHECKPOINT_FILE
    if checkpoint_path.is_file():
        meta = ckpt.load_checkpoint(checkpoint_path, network, optimizers)
        start_epoch = int(meta["epochs_done"])
        if meta.get("steps_per_epoch") != steps:
            raise RunDirError(f"The checkpoint in {run_path} was written with "
                              f"{meta.get('steps_per_epoch')} steps per epoch, this data gives "
                              f"{steps}; resume with the same data.")
        _truncate_logs(run_path, start_epoch)
        say(f"resuming after epoch {start_epoch} of {config.epochs}")
    if start_epoch < config.epochs:
        pipelines = bundle.search_pipelines(
            batch_size=config.batch_size, train_fraction=config.train_fraction,
            seed=config.seed, epochs=config.epochs, start_epoch=start_epoch)
        from aca_keras.callbacks import EpochCSVLogger  # history.csv counts epochs from 1

        network.fit(
            dist.data_options(pipelines.dataset), epochs=config.epochs, initial_epoch=start_epoch,
            steps_per_epoch=steps, verbose=verbose, shuffle=False,
            callbacks=[*_variant_callbacks(network, config), _StopOnNonFinite(run_path),
                       _collapse_monitor(network, bundle, config, say),
                       _RunDirWriter(run_path, network, steps),
                       EpochCSVLogger(str(run_path / HISTORY_FILE),
                                                 append=_history_rows(run_path) > 0),
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


def _derive_and_build(network, bundle, config: SearchConfig, run_path: Path, say):
    from aca_keras.channels.allocation import allocate
    from aca_keras.channels.importance import score_channels
    from aca_keras.models.derived import build_model
    from aca_keras.space.architecture import Architecture

    genotype = network.genotype()
    ckpt.atomic_write_text(run_path / GENOTYPE_FILE, genotype.to_json() + "\n")
    provenance = {
        "variant": config.variant, "partial_k": config.partial_k,
        "alpha_warmup_epochs": config.alpha_warmup_epochs,
        "beta_decay_weight": config.beta_decay_weight,
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
    say(f"scoring channels ({config.scorer}, pooling {config.pooling}"
        f"{', divided by the op weight' if config.divide_weight else ''}) on up to "
        f"{config.score_batches} validation batches")
    scores = score_channels(network, architecture, alpha_batches.dataset, scorer=config.scorer,
                            pooling=config.pooling, divide_weight=config.divide_weight,
                            max_batches=config.score_batches, verbose=say.enabled)
    architecture = allocate(architecture, scores, method=config.allocator)
    architecture.save(run_path / ARCHITECTURE_FILE)
    say(f"allocation ({config.allocator}): normal k_e={list(architecture.normal.channels)}, "
        f"reduce k_e={list(architecture.reduce.channels)} of C={config.channels}")
    model = build_model(architecture, bundle.input_shape, bundle.num_classes,
                        cells=config.eval_cells, channels=config.eval_channels,
                        auxiliary=config.auxiliary, drop_path=config.drop_path,
                        mean=bundle.mean, std=bundle.std)
    model.save(run_path / MODEL_FILE)
    from aca_keras import plots

    pictures = plots.write_run_pictures(run_path, architecture)
    say(f"pictures: {', '.join(p.name for p in pictures)}")
    say(f"derived model: {model.count_params():,} parameters, saved to {run_path / MODEL_FILE}")
    model.run_dir = str(run_path)
    return model
