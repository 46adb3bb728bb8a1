"""The aca_keras model zoo: publish, list, load and verify derived architectures.

An entry is a folder ``<zoo_dir>/<name>/`` with ``entry.json`` (the contract is the JSON
Schema ``zoo/schema/entry-v1.json``: architecture spec, macro settings, data set and
preprocessing statistics, parameter counts, metrics labelled with how they were obtained,
search and training provenance, artifacts with sha256 and size, license, citation), a
generated model card ``README.md`` and optional artifacts (``model.keras`` with trained
weights, ``model.onnx``, ``saved_model.zip``). Each zoo directory has an ``index.json``
manifest built from its entries (:func:`build_index`).

Entries are registered timm-style, one :class:`EntryInfo` dataclass each, from the zoo bundled
with aca_keras and from private zoos: a ``zoo_dir=`` argument, the ``ACA_ZOO_PATH``
environment variable (``os.pathsep``-separated) or :func:`register_zoo_dir`; the first entry
of a name on that search path wins. Directories are scanned lazily, on first use.

>>> from aca_keras import zoo
>>> [e.name for e in zoo.list(dataset="cifar10")]            # doctest: +SKIP
>>> model = zoo.load("darts-v2-cifar10", weights=False)       # doctest: +SKIP
>>> zoo.verify("all").ok                                      # doctest: +SKIP

:func:`load` checks the schema, every artifact's sha256 (a tampered file is refused with a
:class:`~aca_keras.errors.ZooError` naming it and both digests) and that the model has the
recorded parameter counts.
"""

from __future__ import annotations

import builtins
import fnmatch
import os
from collections.abc import Sequence
from typing import Any

from aca_keras.errors import ZooError
from aca_keras.zoo._card import render_card
from aca_keras.zoo._entry import (
    Artifact,
    EntryInfo,
    Metric,
    NoWeightsWarning,
    UnknownEntryError,
    bundled_zoo_dir,
)
from aca_keras.zoo._models import load_entry_model
from aca_keras.zoo._publish import build_index, publish, write_card
from aca_keras.zoo._registry import ENV_VAR, find, iter_entries, register_zoo_dir, search_path
from aca_keras.zoo._verify import Check, EntryReport, VerifyReport, verify

__all__ = [
    "ENV_VAR",
    "Artifact",
    "Check",
    "EntryInfo",
    "EntryReport",
    "Metric",
    "NoWeightsWarning",
    "UnknownEntryError",
    "VerifyReport",
    "ZooError",
    "architecture",
    "build_index",
    "bundled_zoo_dir",
    "info",
    "list_entries",
    "load",
    "publish",
    "register_zoo_dir",
    "render_card",
    "search_path",
    "verify",
    "write_card",
]


def list_entries(dataset: str | None = None, has_weights: bool | None = None,
                 zoo_dir: str | os.PathLike | Sequence[str | os.PathLike] | None = None, *,
                 pattern: str | None = None) -> builtins.list[EntryInfo]:
    """The entries on the zoo search path, sorted by name (also available as ``zoo.list``).

    Args:
        dataset: keep entries for this data set (e.g. ``"cifar10"``).
        has_weights: keep entries with (``True``) or without (``False``) trained weights.
        zoo_dir: a private zoo directory (or several) searched before ``ACA_ZOO_PATH`` and the
            bundled zoo.
        pattern: keep names matching this ``fnmatch`` pattern (e.g. ``"darts*"``).

    A malformed entry is skipped with a warning (``info``/``load`` on it raise the error).
    """
    out = []
    for entry in iter_entries(zoo_dir):
        if dataset is not None and entry.dataset != dataset:
            continue
        if has_weights is not None and entry.has_weights != bool(has_weights):
            continue
        if pattern is not None and not fnmatch.fnmatchcase(entry.name, pattern):
            continue
        out.append(entry)
    return sorted(out, key=lambda e: e.name)


def info(name: str, *, zoo_dir: str | os.PathLike | None = None) -> EntryInfo:
    """The metadata of entry ``name`` (schema-checked; artifacts are checked by ``load``).

    Raises:
        UnknownEntryError: no such entry (``KeyError`` and ``ZooError``).
        ZooError: the entry is malformed.
    """
    return find(name, zoo_dir)


def architecture(name: str, *, zoo_dir: str | os.PathLike | None = None):
    """The :class:`~aca_keras.space.architecture.Architecture` of entry ``name``."""
    return info(name, zoo_dir=zoo_dir).architecture()


def load(name: str, weights: bool = True, *, zoo_dir: str | os.PathLike | None = None,
         inference: bool = False, compile: bool = False, seed: int | None = None) -> Any:
    """Build the Keras model of entry ``name``.

    The model is a :class:`~aca_keras.models.derived.DerivedNetwork` (with the auxiliary head when
    the entry's macro settings have it) carrying ``model.class_names`` and
    ``model.zoo_entry``. With ``weights=True`` and a ``keras`` artifact the trained weights
    are loaded; an architecture-only entry is freshly initialised and a
    :class:`NoWeightsWarning` says so.

    Args:
        name: the entry name.
        weights: load trained weights when the entry has them.
        zoo_dir: a private zoo directory searched first.
        inference: return ``model.inference_model()`` (images -> logits) instead.
        compile: compile a loaded model with its saved training configuration.
        seed: seed of the initial weights of a freshly built model.

    Raises:
        UnknownEntryError: no such entry.
        ZooError: the entry is malformed, an artifact is missing or fails its sha256, the
            weights do not match the entry, or the model's parameter counts differ from the
            recorded ones.
    """
    entry = info(name, zoo_dir=zoo_dir)
    model = load_entry_model(entry, weights, compile=compile, seed=seed)
    if inference:
        model = model.inference_model()
        model.class_names = tuple(entry.class_names)
        model.zoo_entry = entry
    return model


# ``zoo.list`` is the documented name. It is left out of ``__all__`` so that a star import
# does not shadow the builtin ``list``.
list = list_entries  # noqa: A001
