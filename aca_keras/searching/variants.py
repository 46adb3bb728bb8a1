"""DARTS search variants: ``darts``, ``pc_darts`` and ``beta_darts``, behind one ``variant=``.

A variant changes how the supernet is searched, never the derivation rule (the DARTS rule,
:func:`aca_keras.space.genotype.derive_genotype`) nor the channel allocation that follows it, so
every variant works with the ``"aca"`` op set (skip-free, with allocation) and with the
``"darts"`` op set (the baseline).

``darts``
    The plain DARTS mixed edge over all C channels; first or second order (``order=``).

``pc_darts`` (Xu et al., ICLR 2020, "Partial Channel Connections")
    * **Partial channels.** Each mixed edge sends only its first ``C / K`` input channels
      (``partial_k = K``, default 4) through the candidate operations; the other
      ``C - C / K`` channels bypass them unchanged. The edge output is
      ``shuffle(concat([sum_o w_o * o(x[:C/K]), bypass(x[C/K:])]))``.
    * **Bypass at stride 2.** The bypassed channels must be halved spatially. We use a
      parameter-free 2x2 max pool, stride 2, ``"same"`` padding (``ceil(H / 2)``, as the
      operations give), not a ``FactorizedReduce``. Reasoning from first principles: the
      bypass stands for "this edge did not process these channels"; it must add no weights
      (weights on the bypass would be trained by the weight step and compete with the
      candidate operations for the same signal, and would cost the memory PC-DARTS saves),
      and a max pool keeps each channel's strongest local response rather than a quarter of
      its positions (strided subsampling) or a blur (average). It is also what the authors'
      code does. The derived network is unaffected: there, pass-through channels of a
      stride-2 edge use ``FactorizedReduce`` as documented in :mod:`aca_keras.derived`.
    * **Channel shuffle** with ``groups = K`` after the concatenation
      (:class:`~aca_keras.layers.channels.ChannelShuffle`), so that the next edge's first ``C / K`` channels mix
      processed and bypassed channels. It is a fixed permutation of the channels.
    * **Edge normalisation.** One weight ``beta`` per edge and cell type, owned by the
      :class:`~aca_keras.models.supernet.SearchNetwork` (``beta_normal``, ``beta_reduce``, created
      with ``add_weight``, part of ``alpha_variables`` so the architecture step trains them).
      Each node's incoming edges are weighted by the softmax of their betas
      (:func:`~aca_keras.models.supernet.node_softmax`); the weights multiply the edge outputs in the node sum and, at
      derivation, the operation weights when the edges of a node are ranked
      (``edge_weights_normal`` / ``edge_weights_reduce`` of ``derive_genotype``).
    * **Warm-up.** The architecture weights (alphas and betas) stay frozen for the first
      ``alpha_warmup_epochs`` epochs (PC-DARTS: 15 of 50). Default here: 15, clipped to
      ``epochs - 1`` so that at least one epoch trains them. The flag is the supernet's
      non-trainable ``alpha_frozen`` variable, set at the start of every epoch by
      :class:`AlphaWarmup`; ``train_step`` skips the architecture update (it still runs the
      validation forward pass for the ``alpha_*`` metrics) while it is set.
    * The other PC-DARTS hyper-parameters (batch 256, lr 0.1, alpha lr 6e-4) are **not**
      made defaults: ``search`` keeps DARTS's settings for every variant so that variants
      differ in one thing only; pass them explicitly to reproduce the paper's setting.

``beta_darts`` (Ye et al., CVPR 2022, "beta-DARTS: Beta-Decay Regularization")
    DARTS plus a regulariser on the architecture step:
    ``lambda_t * sum over cell types of mean over edges of logsumexp(alpha_e)``, whose gradient
    is ``lambda_t * softmax(alpha_e) / edges``: it decays the softmaxed alphas towards
    uniform and keeps them from saturating. ``lambda_t`` ramps linearly per epoch from 0 to
    ``beta_decay_weight`` (default 1.0; set by :class:`BetaDecaySchedule` through the
    supernet's non-trainable ``beta_decay_lambda`` variable). This is our reading of the
    method; the ramp end value is a setting, not a tuned number.

Channel importance under ``pc_darts`` is documented in :mod:`aca_keras.importance`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import keras
import numpy as np

from aca_keras.registry import Registry
from aca_keras.space.validation import is_int

__all__ = [
    "DEFAULT_PARTIAL_K",
    "PC_DARTS_WARMUP_EPOCHS",
    "AlphaWarmup",
    "BetaDecaySchedule",
    "VariantSpec",
    "get_variant",
    "list_variants",
    "register_variant",
    "resolve_settings",
    "unregister_variant",
]

_PACKAGE = "aca_keras"

DEFAULT_PARTIAL_K = 4
PC_DARTS_WARMUP_EPOCHS = 15
DEFAULT_BETA_DECAY_WEIGHT = 1.0


@dataclass(frozen=True)
class VariantSpec:
    """What a variant changes in the search.

    Attributes:
        name: the variant's name (``variant=``).
        partial: mixed edges see ``C / partial_k`` channels (PC-DARTS).
        edge_normalization: betas per edge (PC-DARTS).
        default_warmup: alpha warm-up epochs before clipping to ``epochs - 1``.
        beta_decay: adds the beta-decay regulariser to the architecture step.
        description: one line for help texts.
    """

    name: str
    partial: bool = False
    edge_normalization: bool = False
    default_warmup: int = 0
    beta_decay: bool = False
    description: str = ""


_VARIANTS: Registry[VariantSpec] = Registry(
    "search variant", hint="Register new ones with aca_keras.variants.register_variant.")


def register_variant(name: str | VariantSpec, *, overwrite: bool = False,
                     **fields: Any) -> VariantSpec:
    """Register the search variant ``name`` with the :class:`VariantSpec` ``fields``
    (``partial``, ``edge_normalization``, ``default_warmup``, ``beta_decay``,
    ``description``) and return its spec.

    A variant is data (what the search switches on), not a function, so this registers
    directly instead of decorating. A ready :class:`VariantSpec`
    (``register_variant(VariantSpec(...))``, the form of aca_keras 0.1.0) is registered under
    its own name.
    """
    if isinstance(name, VariantSpec):
        if fields:
            raise TypeError("register_variant(spec) takes no fields; they are the spec's")
        spec = name
    else:
        spec = VariantSpec(name, **fields)
    return _VARIANTS.register(spec.name, spec, overwrite=overwrite)


def unregister_variant(name: str) -> VariantSpec:
    """Remove a registered search variant and return its spec (custom variants in tests)."""
    return _VARIANTS.unregister(name)


register_variant("darts", description="DARTS (first or second order)")
register_variant("pc_darts", partial=True, edge_normalization=True,
                 default_warmup=PC_DARTS_WARMUP_EPOCHS,
                 description="PC-DARTS: partial channels, shuffle, edge normalisation, "
                             "alpha warm-up")
register_variant("beta_darts", beta_decay=True,
                 description="DARTS with beta-decay regularisation of the alphas")


def list_variants() -> list[str]:
    """Names of the registered search variants, in registration order."""
    return _VARIANTS.names()


def get_variant(name: str) -> VariantSpec:
    """The :class:`VariantSpec` called ``name`` (:class:`~aca_keras.errors.UnknownNameError`,
    a ``ValueError``, naming the known ones)."""
    return _VARIANTS.get(name)


def resolve_settings(variant: str, epochs: int, partial_k: int | None,
                     alpha_warmup_epochs: int | None,
                     beta_decay_weight: float | None) -> dict[str, Any]:
    """Fill the variant's defaults into the settings left ``None``, and check them.

    Returns ``{"partial_k", "alpha_warmup_epochs", "beta_decay_weight"}``: ``partial_k`` is 1
    unless the variant is partial (then default :data:`DEFAULT_PARTIAL_K`); the warm-up
    defaults to the variant's (``pc_darts``: 15) clipped to ``epochs - 1``; an explicit
    warm-up must be ``< epochs``; ``beta_decay_weight`` is 0 unless the variant uses it.
    """
    spec = get_variant(variant)
    if partial_k is None:
        partial_k = DEFAULT_PARTIAL_K if spec.partial else 1
    if not is_int(partial_k) or partial_k < 1:
        raise ValueError(f"partial_k must be a positive integer, got {partial_k!r}")
    if not spec.partial and partial_k != 1:
        raise ValueError(f"partial_k={partial_k} needs variant='pc_darts' (variant "
                         f"{variant!r} uses every channel).")
    if alpha_warmup_epochs is None:
        alpha_warmup_epochs = max(0, min(spec.default_warmup, epochs - 1))
    if (not is_int(alpha_warmup_epochs)
            or not 0 <= alpha_warmup_epochs < max(1, epochs)):
        raise ValueError(f"alpha_warmup_epochs must be an integer in 0..epochs-1 = "
                         f"{epochs - 1}, got {alpha_warmup_epochs!r}")
    if beta_decay_weight is None:
        beta_decay_weight = DEFAULT_BETA_DECAY_WEIGHT if spec.beta_decay else 0.0
    beta_decay_weight = float(beta_decay_weight)
    if beta_decay_weight < 0 or not np.isfinite(beta_decay_weight):
        raise ValueError(f"beta_decay_weight must be finite and >= 0, got {beta_decay_weight}")
    return {"partial_k": partial_k, "alpha_warmup_epochs": alpha_warmup_epochs,
            "beta_decay_weight": beta_decay_weight}


# ------------------------------------------------------------------------------- callbacks


class AlphaWarmup(keras.callbacks.Callback):
    """Freezes the architecture weights for the first ``warmup_epochs`` epochs.

    At the start of epoch ``e`` (0-based) it sets the supernet's ``alpha_frozen`` flag to
    ``e < warmup_epochs``; a resumed run gets the right value from its epoch index.
    """

    def __init__(self, network, warmup_epochs: int):
        super().__init__()
        self.network = network
        self.warmup_epochs = int(warmup_epochs)

    def on_epoch_begin(self, epoch, logs=None):
        self.network.alpha_frozen.assign(1.0 if epoch < self.warmup_epochs else 0.0)


class BetaDecaySchedule(keras.callbacks.Callback):
    """Ramps the beta-decay weight linearly: ``lambda = weight * epoch / max(1, epochs - 1)``
    at the start of epoch ``epoch`` (0-based), from 0 to ``weight`` at the last epoch."""

    def __init__(self, network, weight: float, epochs: int):
        super().__init__()
        self.network = network
        self.weight = float(weight)
        self.epochs = int(epochs)

    def on_epoch_begin(self, epoch, logs=None):
        value = self.weight * epoch / max(1, self.epochs - 1)
        self.network.beta_decay_lambda.assign(value)
