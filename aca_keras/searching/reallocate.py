"""``reallocate``: score and allocate the channels of a searched supernet again, with other
settings, into a new run directory.

A search (:func:`aca_keras.search`) spends nearly all its time training the supernet; the
channel scores and the allocation (``scorer``, ``pooling``, ``divide_weight``, ``allocator``)
cost a few validation batches. :func:`reallocate` rebuilds the supernet of a finished or
checkpointed run from its ``config.json`` and ``checkpoint.npz`` (with the pipeline's own
:func:`~aca_keras.searching.pipeline.build_search_network` and
:func:`~aca_keras.io.checkpoint.load_checkpoint`, as a resumed search does), derives the same
genotype, and scores and allocates with the given settings
(:func:`~aca_keras.searching.pipeline.derive_architecture`). So several allocations can be
set side by side on one supernet. The new run directory holds what ``aca-train`` needs:

| file | content |
| --- | --- |
| ``config.json`` | the source run's settings with the new scoring and allocation settings |
| ``genotype.json`` | the genotype (the source run's, from the same supernet) |
| ``architecture.json`` | the new allocation; ``provenance["reallocated_from"]`` names the source run, its checkpoint's epoch and its own settings and k_e |
| ``alphas.jsonl``, ``history.csv`` | the source run's records up to the checkpoint's epoch |
| ``model.keras``, ``*.png`` | the derived model (untrained) and the pictures, as a search writes them |

With no setting changed the result is the source run's own allocation (the scores are
computed again on the same batches of the same supernet).

The source note lives in ``architecture.json``'s provenance, not in ``config.json``:
``config.json`` stays a plain :class:`~aca_keras.searching.config.SearchConfig` document,
readable wherever a search's settings are read.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any

import tensorflow as tf

from aca_keras import distribute as dist
from aca_keras.errors import RunDirError
from aca_keras.io.atomic import atomic_write_json, atomic_write_text, read_json
from aca_keras.io.checkpoint import load_checkpoint, read_checkpoint_meta
from aca_keras.io.run_dir import RunDir
from aca_keras.models.derived import DerivedNetwork
from aca_keras.searching.config import SearchConfig
from aca_keras.searching.pipeline import (
    build_derived,
    build_search_network,
    derive_architecture,
    load_search_data,
)
from aca_keras.space.architecture import Architecture

__all__ = ["REALLOCATION_SETTINGS", "reallocate"]

#: the settings a reallocation may change: how channels are scored and allocated
REALLOCATION_SETTINGS = ("scorer", "pooling", "divide_weight", "allocator")


def _printer(verbose: int | str):
    def say(message: str) -> None:
        if verbose:
            print(message, flush=True)
    say.enabled = bool(verbose)
    return say


def _check_paths(source: RunDir, out: RunDir) -> None:
    if not source.path.is_dir():
        raise RunDirError(f"Cannot reallocate: {str(source.path)!r} is not a directory; give "
                          "the directory of a search run.")
    if not source.config.is_file():
        raise RunDirError(f"Cannot reallocate: {str(source.path)!r} holds no search run (no "
                          f"{RunDir.CONFIG}).")
    if not source.checkpoint.is_file():
        raise RunDirError(
            f"Cannot reallocate {str(source.path)!r}: it has no {RunDir.CHECKPOINT} (the "
            "trained supernet). The search has not finished an epoch yet, or the directory "
            "was itself written by a reallocation; give the original search run.")
    if out.path.exists() and out.path.resolve() == source.path.resolve():
        raise RunDirError("Cannot reallocate into the source run directory; choose another "
                          "run_dir for the new allocation.")
    if out.holds_search():
        raise RunDirError(f"{str(out.path)!r} already holds a run ({RunDir.CONFIG}); choose "
                          "another run_dir for the new allocation.")


def _source_config(source: RunDir) -> SearchConfig:
    data = read_json(source.config, "run config")
    if not isinstance(data, dict):
        raise RunDirError(f"{source.config} must hold a JSON object.")
    return SearchConfig.from_dict(data)


def _copy_records(source: RunDir, out: RunDir, epochs_done: int) -> None:
    """The source run's per-epoch records up to the checkpoint's epoch (a run still
    searching may have written more)."""
    if source.alphas.is_file():
        lines = [ln for ln in source.alphas.read_text().splitlines() if ln.strip()]
        atomic_write_text(out.alphas, "".join(ln + "\n" for ln in lines[:epochs_done]))
    if source.history.is_file():
        lines = source.history.read_text().splitlines()
        atomic_write_text(out.history, "".join(ln + "\n" for ln in lines[:epochs_done + 1]))


def reallocate(run_dir: str | os.PathLike, out_dir: str | os.PathLike, *,
               scorer: str | None = None, pooling: str | None = None,
               allocator: str | None = None, divide_weight: bool | None = None,
               dataset: Any = None, verbose: int | str = 1) -> DerivedNetwork:
    """Score and allocate the channels of the supernet of ``run_dir`` again, into ``out_dir``.

    Args:
        run_dir: a search run directory with ``config.json`` and ``checkpoint.npz`` (a
            finished run, or one still searching: its last checkpoint is used).
        out_dir: the new run directory (created; it must not hold a run yet).
        scorer: channel scorer (``"taylor"``, ``"refill"``, ``"magnitude"``, ``"alpha"``,
            or a registered one); ``None`` keeps the run's own.
        pooling: how a cell type's occurrences are combined (``"index"``, ``"sorted"``,
            ``"rank"``); ``None`` keeps the run's own.
        allocator: channel allocator (see
            :func:`~aca_keras.channels.allocation.list_allocators`); ``None`` keeps the run's
            own.
        divide_weight: divide each edge's scores by its operation's weight; ``None`` keeps
            the run's own.
        dataset: the data the run searched; needed only when it searched in-memory data
            (then pass the same data again). Default: the run's own ``dataset``.
        verbose: 0 silences progress output.

    Returns:
        The derived :class:`~aca_keras.models.derived.DerivedNetwork` (untrained) with
        ``model.architecture`` and ``model.run_dir``.

    Raises:
        RunDirError: ``run_dir`` has no search run or no checkpoint; ``out_dir`` already
            holds a run or is ``run_dir``; the data do not match the checkpoint.
        UnknownNameError: an unknown scorer, pooling rule or allocator (the message lists
            the registered names).
    """
    source, out = RunDir(run_dir), RunDir(out_dir)
    say = _printer(verbose)
    _check_paths(source, out)
    settings = {name: value for name, value in
                (("scorer", scorer), ("pooling", pooling), ("allocator", allocator),
                 ("divide_weight", divide_weight)) if value is not None}
    own = _source_config(source)
    # unknown scorer, pooling or allocator names raise UnknownNameError listing the known ones
    config = dataclasses.replace(own, **settings).validate()
    meta = read_checkpoint_meta(source.checkpoint)
    epochs_done = int(meta.get("epochs_done", 0))
    if dataset is None:
        if config.dataset.startswith("<"):
            raise RunDirError(
                f"The run in {source.path} searched in-memory data ({config.dataset}); pass the "
                "same data again as `dataset` (CLI: --dataset).")
        dataset = config.dataset
    bundle = load_search_data(dataset, config)
    say(f"aca_keras reallocate: {source.path} (after epoch {epochs_done} of {config.epochs}) "
        f"-> {out.path}; scorer={config.scorer}, pooling={config.pooling}, divide_weight="
        f"{config.divide_weight}, allocator={config.allocator}")

    with dist.dtype_policy(config.dtype_policy):
        tf.config.experimental.enable_op_determinism()  # as the search scored
        probe = bundle.search_pipelines(
            batch_size=config.batch_size, train_fraction=config.train_fraction,
            seed=config.seed, epochs=1, start_epoch=0, augment=False)
        if meta.get("steps_per_epoch") != probe.steps_per_epoch:
            raise RunDirError(
                f"The checkpoint in {source.path} was written with {meta.get('steps_per_epoch')} "
                f"steps per epoch, this data gives {probe.steps_per_epoch}; reallocate with the "
                "data the run searched.")
        network = build_search_network(bundle, config, probe.steps_per_epoch)
        load_checkpoint(source.checkpoint, network,
                        {"optimizer": network.optimizer,
                         "alpha_optimizer": network.alpha_optimizer})
    architecture = derive_architecture(network, bundle, config, None, say=say)
    genotype = network.genotype()
    del network

    note: dict[str, Any] = {"run": str(source.path.resolve()), "epochs_done": epochs_done,
                            "settings": {k: getattr(own, k) for k in REALLOCATION_SETTINGS}}
    if source.architecture.is_file():
        previous = Architecture.load(source.architecture)
        note["k"] = {"normal": list(previous.normal.channels),
                     "reduce": list(previous.reduce.channels)}
        say(f"the run's own allocation ({note['settings']['allocator']}): normal k_e="
            f"{note['k']['normal']}, reduce k_e={note['k']['reduce']}")
    architecture = Architecture(
        architecture.normal, architecture.reduce, architecture.reference_channels,
        architecture.ops, {**architecture.provenance, "reallocated_from": note},
        architecture.scores, architecture.name)

    try:
        out.path.mkdir(parents=True, exist_ok=True)
        atomic_write_text(out.genotype, genotype.to_json() + "\n")
        architecture.save(out.architecture)
        _copy_records(source, out, epochs_done)
    except OSError as error:
        raise RunDirError(f"Cannot write the run directory {out.path}: {error.strerror}. "
                          "Choose a writable run_dir.") from None
    model = build_derived(architecture, bundle, config, out, say=say)
    # last: a directory holds a run once its config.json exists (RunDir.holds_search), so
    # a reallocation that failed above can be repeated into the same out_dir
    atomic_write_json(out.config, config.to_dict())
    say(f"run directory: {out.path}")
    return model
