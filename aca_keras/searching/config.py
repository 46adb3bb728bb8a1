"""``SearchConfig``: every setting of a search, the single home of their defaults.

:func:`aca_keras.search` takes these settings as keyword arguments (``None`` leaves the
default), ``aca-search`` derives its flags from them, and ``config.json`` stores them, so a
default is written once, here. The defaults follow the published DARTS search setting (see
``../shared/design/ACA.md``).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from aca_keras.channels.allocation import get_allocator
from aca_keras.errors import RunDirError
from aca_keras.io.run_dir import RunDir
from aca_keras.space.op_sets import resolve_op_set
from aca_keras.space.validation import is_int

# The registries of channel scorers and pooling rules (channels.importance) and of search
# variants (searching.variants) import Keras and TensorFlow; validate() and resolve_variant()
# import them on use so that this module, the home of the defaults, stays free of TensorFlow:
# aca-search builds its flags and --help from it before TensorFlow starts (and silences
# TensorFlow's start-up lines first). tests/test_structure.py checks that importing it loads
# neither Keras nor TensorFlow.

__all__ = ["SearchConfig", "defaults"]


@dataclass
class SearchConfig:
    """All settings of a search; saved as ``config.json`` and reloaded on resume.

    Defaults follow the published DARTS search setting (see ``../shared/design/ACA.md``).
    """

    dataset: str = "cifar10"
    data_dir: str | None = None
    download: bool = True
    # hold out this share of the training data (data.load's fixed-seed rule) before the
    # search: neither the search nor aca-train on this run sees it, aca-train evaluates on it
    test_fraction: float | None = None
    # search on the first N images of the (remaining) training data only; None: all of them
    search_images: int | None = None
    epochs: int = 50
    ops: str | list[str] = "aca"
    order: int = 1
    variant: str = "darts"
    partial_k: int | None = None
    alpha_warmup_epochs: int | None = None
    beta_decay_weight: float | None = None
    # sdarts_rs (aca_keras.searching.sdarts): the end of the per-epoch ramp of the uniform
    # perturbation of the softmaxed alphas in the weight step (default 0.3 for sdarts_rs)
    perturbation_epsilon: float | None = None
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
    # gradient checkpointing per supernet cell: less tensor memory, one more forward pass
    # per step (SearchNetwork.compile's recompute; benchmarks/README.md has the figures)
    recompute: bool = False
    # how the supernet stores and computes its mixed edges (SearchNetwork's layout):
    # "grouped", or "per_edge" for runs written before the grouped layout (their config.json
    # has no such key, and their checkpoints hold per-edge weights)
    layout: str = "grouped"
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
            if not is_int(value) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if self.order not in (1, 2):
            raise ValueError(f"order must be 1 (first order) or 2 (unrolled), got {self.order!r}")
        resolved = self._resolved_variant_settings()
        if self.channels % resolved["partial_k"]:
            raise ValueError(f"channels ({self.channels}) must be a multiple of partial_k "
                             f"({resolved['partial_k']}) for variant {self.variant!r}")
        if self.test_fraction is not None and not 0.0 < float(self.test_fraction) < 1.0:
            raise ValueError(f"test_fraction must be in (0, 1) or None, got {self.test_fraction!r}")
        if self.search_images is not None and (not is_int(self.search_images)
                                               or self.search_images < 2):
            raise ValueError(f"search_images must be an integer >= 2 or None (all images), got "
                             f"{self.search_images!r}")
        if not 0.0 < self.train_fraction < 1.0:
            raise ValueError(f"train_fraction must be in (0, 1), got {self.train_fraction}")
        if self.dtype_policy not in ("float32", "mixed_float16", "mixed_bfloat16"):
            raise ValueError(f"dtype_policy must be float32, mixed_float16 or mixed_bfloat16, "
                             f"got {self.dtype_policy!r}")
        if self.layout not in ("grouped", "per_edge"):
            raise ValueError(f"layout must be 'grouped' or 'per_edge', got {self.layout!r}")
        if not 0.0 <= self.drop_path < 1.0:
            raise ValueError(f"drop_path must be in [0, 1), got {self.drop_path}")
        resolve_op_set(self.ops)
        from aca_keras.channels.importance import get_pooling, get_scorer  # TF: see the top

        get_allocator(self.allocator)
        get_scorer(self.scorer)
        get_pooling(self.pooling)
        if self.divide_weight and self.scorer == "alpha":
            raise ValueError("divide_weight with scorer 'alpha' makes every channel score "
                             "equal; use scorer 'refill', 'taylor' or 'magnitude'.")
        if not is_int(self.hessian_every) or self.hessian_every < 0:
            raise ValueError(f"hessian_every must be an integer >= 0 (0: off), got "
                             f"{self.hessian_every!r}")
        if not is_int(self.hessian_iterations) or self.hessian_iterations < 1:
            raise ValueError(f"hessian_iterations must be a positive integer, got "
                             f"{self.hessian_iterations!r}")
        return self

    def resolve_variant(self) -> SearchConfig:
        """Fill the variant's defaults (``partial_k``, ``alpha_warmup_epochs``,
        ``beta_decay_weight`` and the variant's own settings, such as ``sdarts_rs``'s
        ``perturbation_epsilon``) into the settings left ``None``; returns ``self``."""
        for key, value in self._resolved_variant_settings().items():
            setattr(self, key, value)
        return self

    def _resolved_variant_settings(self) -> dict[str, Any]:
        """The variant's settings, resolved and checked by the variant
        (:func:`aca_keras.searching.variants.resolve_settings`); every variant-owned setting
        of this config is passed, so one set for another variant is refused."""
        from aca_keras.searching import variants  # Keras: see the top

        fields = {f.name for f in dataclasses.fields(self)}
        missing = [name for name in variants.get_variant(self.variant).own_settings
                   if name not in fields]
        if missing:
            raise ValueError(f"Variant {self.variant!r} has the setting {missing[0]!r}, which "
                             "SearchConfig does not hold; add it as a SearchConfig field.")
        own = {name: getattr(self, name) for name in variants.own_settings() if name in fields}
        return variants.resolve_settings(self.variant, self.epochs, self.partial_k,
                                         self.alpha_warmup_epochs, self.beta_decay_weight,
                                         **own)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SearchConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise RunDirError(f"{RunDir.CONFIG} has unknown settings {unknown}; was it written by a "
                              "newer aca_keras? Upgrade aca_keras.")
        # a run written before the grouped layout resumes with its own (per-edge) weights
        return cls(**{"layout": "per_edge", **data})


def defaults() -> dict[str, Any]:
    """Every setting's default (``{name: value}``), from :class:`SearchConfig`."""
    return {f.name: (f.default if f.default is not dataclasses.MISSING else f.default_factory())
            for f in dataclasses.fields(SearchConfig)}
