"""DARTS search variants: ``darts``, ``pc_darts``, ``beta_darts`` and ``sdarts_rs``, behind one
``variant=``.

A variant changes how the supernet is searched, never the derivation rule (the DARTS rule,
:func:`aca_keras.space.genotype.derive_genotype`) nor the channel allocation that follows it, so
every variant works with the ``"aca"`` op set (skip-free, with allocation) and with the
``"darts"`` op set (the baseline).

Each variant is one object, a :class:`~aca_keras.models.variant.SearchVariant`, registered here
by name (:func:`register_variant`, :func:`list_variants`, :func:`get_variant`). The object
resolves its settings, says how the supernet is built and compiled, and carries the hooks the
search calls: the alpha transform and the extra architecture loss of the bi-level step, and
the epoch callbacks (warm-up, schedules); see :mod:`aca_keras.models.variant`. A variant with
new behaviour is one module holding a subclass that overrides the hooks it needs, plus its
test (``sdarts_rs``: :mod:`aca_keras.searching.sdarts`, ``tests/test_sdarts.py``); it is
registered with one line in this module's list of built-ins, or by
``register_variant(MyVariant())`` in your own code. A setting of its own is a
``SearchConfig`` field (the single home of the search defaults) named in the subclass's
``own_settings``, and an ``aca-search`` flag.

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

``sdarts_rs`` (Chen & Hsieh, ICML 2020, "Stabilizing Differentiable Architecture Search via
Perturbation-based Regularization", SDARTS-RS)
    DARTS whose weight step sees randomly perturbed architecture weights, which smooths the
    validation loss landscape in the alphas (the paper: an implicit regulariser of the
    Hessian norm). The weight step's forward pass uses the mixing weights
    ``clip(softmax(alpha) + delta)``, ``delta ~ U[-epsilon, epsilon]`` drawn anew per step;
    the architecture step, inference and the derivation use the unperturbed alphas.
    ``epsilon`` ramps linearly per epoch from 0.03 towards ``perturbation_epsilon`` (default
    0.3; epoch e of E uses 0.03 + (eps - 0.03) e / E, so the last is just below it), as the
    authors' code does. Exactly what is implemented, and where it follows the authors' code
    rather than the paper's text: :mod:`aca_keras.searching.sdarts`.

Channel importance under ``pc_darts`` is documented in :mod:`aca_keras.importance`.
"""

from __future__ import annotations

from typing import Any

from aca_keras.models.variant import (
    DEFAULT_BETA_DECAY_WEIGHT,
    DEFAULT_PARTIAL_K,
    AlphaWarmup,
    BetaDecaySchedule,
    SearchVariant,
)
from aca_keras.registry import Registry
from aca_keras.searching.sdarts import SDARTSRandomSmoothing

__all__ = [
    "DEFAULT_BETA_DECAY_WEIGHT",
    "DEFAULT_PARTIAL_K",
    "PC_DARTS_WARMUP_EPOCHS",
    "AlphaWarmup",
    "BetaDecaySchedule",
    "SearchVariant",
    "VariantSpec",
    "get_variant",
    "list_variants",
    "own_settings",
    "register_variant",
    "resolve_settings",
    "unregister_variant",
]

PC_DARTS_WARMUP_EPOCHS = 15

#: the name of :class:`SearchVariant` in aca_keras 0.1.0 (a variant was its data only)
VariantSpec = SearchVariant

_VARIANTS: Registry[SearchVariant] = Registry(
    "search variant", hint="Register new ones with aca_keras.variants.register_variant.")


def register_variant(name: str | SearchVariant, *, overwrite: bool = False,
                     **fields: Any) -> SearchVariant:
    """Register a search variant and return it.

    ``register_variant(MyVariant())`` registers a ready
    :class:`~aca_keras.models.variant.SearchVariant` (a subclass with new hooks, or the
    ``VariantSpec`` of aca_keras 0.1.0) under its own name;
    ``register_variant(name, **fields)`` registers a plain ``SearchVariant`` with the fields
    ``partial``, ``edge_normalization``, ``default_warmup``, ``beta_decay``, ``description``,
    ``source`` (a variant that only changes those defaults). A variant is an object, not a
    function, so this registers directly instead of decorating.
    """
    if isinstance(name, SearchVariant):
        if fields:
            raise TypeError("register_variant(variant) takes no fields; they are the "
                            "variant's")
        variant = name
    else:
        variant = SearchVariant(name, **fields)
    return _VARIANTS.register(variant.name, variant, overwrite=overwrite)


def unregister_variant(name: str) -> SearchVariant:
    """Remove a registered search variant and return it (custom variants in tests)."""
    return _VARIANTS.unregister(name)


# The built-in variants, in the order list_variants() gives them (and aca-search's help,
# aca_keras/cli/search.py VARIANTS, checked against it by tests/test_variants.py).
register_variant("darts", description="DARTS (first or second order)",
                 source="Liu et al., ICLR 2019")
register_variant("pc_darts", partial=True, edge_normalization=True,
                 default_warmup=PC_DARTS_WARMUP_EPOCHS,
                 description="PC-DARTS: partial channels, shuffle, edge normalisation, "
                             "alpha warm-up",
                 source="Xu et al., ICLR 2020")
register_variant("beta_darts", beta_decay=True,
                 description="DARTS with beta-decay regularisation of the alphas",
                 source="Ye et al., CVPR 2022")
register_variant(SDARTSRandomSmoothing())


def list_variants() -> list[str]:
    """Names of the registered search variants, in registration order."""
    return _VARIANTS.names()


def get_variant(name: str) -> SearchVariant:
    """The :class:`~aca_keras.models.variant.SearchVariant` called ``name``
    (:class:`~aca_keras.errors.UnknownNameError`, a ``ValueError``, naming the known
    ones)."""
    return _VARIANTS.get(name)


def own_settings() -> dict[str, list[str]]:
    """``{setting: [variants]}``: each variant-owned setting (a ``SearchConfig`` field) and
    the registered variants that own it."""
    owners: dict[str, list[str]] = {}
    for name in _VARIANTS:
        for setting in _VARIANTS.get(name).own_settings:
            owners.setdefault(setting, []).append(name)
    return owners


def resolve_settings(variant: str, epochs: int, partial_k: int | None = None,
                     alpha_warmup_epochs: int | None = None,
                     beta_decay_weight: float | None = None, **own: Any) -> dict[str, Any]:
    """Fill the variant's defaults into the settings left ``None``, and check them
    (:meth:`~aca_keras.models.variant.SearchVariant.resolve`).

    Returns ``{"partial_k", "alpha_warmup_epochs", "beta_decay_weight"}`` and the variant's
    own settings. ``own`` may name any variant's own setting (:func:`own_settings`); one
    given for a variant that does not have it is refused, naming the variants that do.
    """
    spec = get_variant(variant)
    owners = own_settings()
    for setting, value in own.items():
        if setting not in owners:
            raise ValueError(f"No search variant has the setting {setting!r}; variant "
                             f"settings: {', '.join(owners) or 'none'}.")
        if value is not None and setting not in spec.own_settings:
            needed = " or ".join(f"variant={o!r}" for o in owners[setting])
            raise ValueError(f"{setting}={value!r} needs {needed} (variant {variant!r} has no "
                             f"such setting).")
    mine = {k: v for k, v in own.items() if k in spec.own_settings}
    return spec.resolve(epochs, partial_k, alpha_warmup_epochs, beta_decay_weight, **mine)
