"""The search-variant object: what a DARTS search variant changes, as one object with hooks.

A search variant (``variant=`` of :func:`aca_keras.search`) is a :class:`SearchVariant`. The
search asks it, in this order:

1. **settings**: :meth:`SearchVariant.resolve` fills the variant's defaults into the settings
   left ``None`` (``partial_k``, ``alpha_warmup_epochs``, ``beta_decay_weight`` and the
   variant's own settings, :attr:`SearchVariant.own_settings`) and checks them;
   :meth:`SearchVariant.configure` returns a copy bound to one search's settings (with
   ``epochs``, ``steps_per_epoch`` and ``seed``), on which the other hooks are called;
2. **construction**: :meth:`SearchVariant.network_arguments` (the supernet's ``partial_k`` and
   ``edge_normalization``) and :meth:`SearchVariant.compile_arguments` (the warm-up switch and
   the variant itself, which ``SearchNetwork.compile(variant=)`` hands to the bi-level step);
3. **the bi-level step** (:class:`~aca_keras.models.bilevel.BilevelOptimizer`):
   :meth:`SearchVariant.alpha_transform` changes the mixing weights (the softmax of the
   alphas) a forward pass of the weight step or of the architecture step uses;
   :meth:`SearchVariant.extra_alpha_loss` adds a regulariser to the architecture step;
4. **the epoch loop**: :meth:`SearchVariant.callbacks` (the alpha warm-up,
   :class:`AlphaWarmup`, and the beta-decay ramp, :class:`BetaDecaySchedule`).

The base class implements the three built-in variants from data: ``darts`` (every hook a
no-op), ``pc_darts`` (``partial``, ``edge_normalization``, ``default_warmup``) and
``beta_darts`` (``beta_decay``: the regulariser of :func:`beta_decay_loss` as the extra
architecture loss). A variant with new behaviour subclasses it and overrides the hooks it
needs, in one module (:mod:`aca_keras.searching.sdarts` is the example); the registry, the
built-ins and their documentation are in :mod:`aca_keras.searching.variants`.

The class lives here, below :mod:`aca_keras.searching`, because the supernet and its step
call its hooks. A configured variant is saved with the supernet's compile settings (Keras
serialisation: every variant class is registered with
``keras.saving.register_keras_serializable(package="aca_keras")``); loading a supernet
compiled with a subclass needs the subclass's module imported.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

import keras
import numpy as np

from aca_keras.space.validation import is_int

__all__ = ["DEFAULT_BETA_DECAY_WEIGHT", "DEFAULT_PARTIAL_K", "PHASES", "AlphaWarmup",
           "BetaDecaySchedule", "SearchVariant", "beta_decay_loss"]

_PACKAGE = "aca_keras"

#: PC-DARTS's K: a partial-channel edge sends ``C / K`` channels through its operations
DEFAULT_PARTIAL_K = 4
#: the end of the beta-decay ramp of a variant with ``beta_decay``
DEFAULT_BETA_DECAY_WEIGHT = 1.0
#: the forward passes :meth:`SearchVariant.alpha_transform` is asked about: ``"weight"`` (the
#: weight step's forward pass) and ``"alpha"`` (every forward pass of the architecture step)
PHASES = ("weight", "alpha")

#: the settings every variant resolves (SearchConfig fields)
_COMMON_SETTINGS = ("partial_k", "alpha_warmup_epochs", "beta_decay_weight")


@keras.saving.register_keras_serializable(package=_PACKAGE)
@dataclass(frozen=True)
class SearchVariant:
    """A DARTS search variant: its data and the hooks the search calls (module docstring).

    Attributes:
        name: the variant's name (``variant=``).
        partial: mixed edges see ``C / partial_k`` channels (PC-DARTS); default ``partial_k``
            :data:`DEFAULT_PARTIAL_K`.
        edge_normalization: betas per edge (PC-DARTS).
        default_warmup: alpha warm-up epochs before clipping to ``epochs - 1``.
        beta_decay: the beta-decay regulariser is on by default (weight
            :data:`DEFAULT_BETA_DECAY_WEIGHT`).
        description: one line for help texts.
        source: the publication the variant follows.
        settings: the resolved settings of one search (:meth:`configure`); empty in the
            registry's entry.

    Class attribute :attr:`own_settings`: the variant's own settings (``SearchConfig`` field
    name -> default), resolved and checked by :meth:`resolve` (:meth:`check_settings`).
    """

    name: str
    partial: bool = False
    edge_normalization: bool = False
    default_warmup: int = 0
    beta_decay: bool = False
    description: str = ""
    source: str = ""
    settings: Mapping[str, Any] = field(default_factory=dict)

    #: the variant's own settings: ``SearchConfig`` field name -> default
    own_settings: ClassVar[Mapping[str, Any]] = {}

    # ------------------------------------------------------------------------- settings

    def setting_names(self) -> tuple[str, ...]:
        """The settings this variant resolves: the common ones, then its own."""
        return (*_COMMON_SETTINGS, *self.own_settings)

    def resolve(self, epochs: int, partial_k: int | None = None,
                alpha_warmup_epochs: int | None = None,
                beta_decay_weight: float | None = None, **own: Any) -> dict[str, Any]:
        """Fill the variant's defaults into the settings left ``None``, and check them.

        Returns ``{"partial_k", "alpha_warmup_epochs", "beta_decay_weight", *own_settings}``:
        ``partial_k`` is 1 unless the variant is partial (then default
        :data:`DEFAULT_PARTIAL_K`); the warm-up defaults to the variant's (``pc_darts``: 15)
        clipped to ``epochs - 1``; an explicit warm-up must be ``< epochs``;
        ``beta_decay_weight`` is 0 unless the variant uses it; each own setting defaults to
        :attr:`own_settings`'s value. ``own`` takes only the variant's own settings.
        """
        unknown = sorted(set(own) - set(self.own_settings))
        if unknown:
            raise ValueError(f"Variant {self.name!r} has no setting {unknown[0]!r}; its own "
                             f"settings: {', '.join(self.own_settings) or 'none'}.")
        if partial_k is None:
            partial_k = DEFAULT_PARTIAL_K if self.partial else 1
        if not is_int(partial_k) or partial_k < 1:
            raise ValueError(f"partial_k must be a positive integer, got {partial_k!r}")
        if not self.partial and partial_k != 1:
            raise ValueError(f"partial_k={partial_k} needs variant='pc_darts' (variant "
                             f"{self.name!r} uses every channel).")
        if alpha_warmup_epochs is None:
            alpha_warmup_epochs = max(0, min(self.default_warmup, epochs - 1))
        if (not is_int(alpha_warmup_epochs)
                or not 0 <= alpha_warmup_epochs < max(1, epochs)):
            raise ValueError(f"alpha_warmup_epochs must be an integer in 0..epochs-1 = "
                             f"{epochs - 1}, got {alpha_warmup_epochs!r}")
        if beta_decay_weight is None:
            beta_decay_weight = DEFAULT_BETA_DECAY_WEIGHT if self.beta_decay else 0.0
        beta_decay_weight = float(beta_decay_weight)
        if beta_decay_weight < 0 or not np.isfinite(beta_decay_weight):
            raise ValueError(f"beta_decay_weight must be finite and >= 0, got "
                             f"{beta_decay_weight}")
        resolved = {"partial_k": partial_k, "alpha_warmup_epochs": alpha_warmup_epochs,
                    "beta_decay_weight": beta_decay_weight}
        for name, default in self.own_settings.items():
            value = own.get(name)
            resolved[name] = default if value is None else value
        self.check_settings(resolved)
        return resolved

    def check_settings(self, settings: Mapping[str, Any]) -> None:
        """Check the variant's own settings in ``settings`` (resolved); raise ``ValueError``
        naming the setting. The base class has none to check."""

    def configure(self, settings: Mapping[str, Any], *, epochs: int,
                  steps_per_epoch: int | None = None, seed: int | None = None) -> SearchVariant:
        """A copy bound to one search: ``settings`` (as :meth:`resolve` returns them) plus
        ``epochs``, ``steps_per_epoch`` and ``seed``. The hooks below read them."""
        bound = {**settings, "epochs": int(epochs),
                 "steps_per_epoch": None if steps_per_epoch is None else int(steps_per_epoch),
                 "seed": None if seed is None else int(seed)}
        return dataclasses.replace(self, settings=bound)

    def setting(self, name: str, default: Any = None) -> Any:
        """One bound setting (:meth:`configure`), or ``default`` when not bound."""
        value = self.settings.get(name)
        return default if value is None else value

    # --------------------------------------------------------------------- construction

    def network_arguments(self) -> dict[str, Any]:
        """Keyword arguments of :class:`~aca_keras.models.supernet.SearchNetwork`:
        ``partial_k`` and ``edge_normalization``."""
        return {"partial_k": int(self.setting("partial_k", 1)),
                "edge_normalization": self.edge_normalization}

    def compile_arguments(self) -> dict[str, Any]:
        """Keyword arguments of ``SearchNetwork.compile``: ``alpha_warmup`` (the step checks
        the ``alpha_frozen`` flag) and ``variant`` (this object: its step hooks)."""
        return {"alpha_warmup": int(self.setting("alpha_warmup_epochs", 0)) > 0,
                "variant": self}

    def callbacks(self, network) -> list[keras.callbacks.Callback]:
        """The callbacks of the search's ``fit``: the alpha warm-up and the beta-decay ramp
        where their settings are on (none for plain DARTS)."""
        out: list[keras.callbacks.Callback] = []
        warmup = int(self.setting("alpha_warmup_epochs", 0))
        weight = float(self.setting("beta_decay_weight", 0.0))
        if warmup:
            out.append(AlphaWarmup(network, warmup))
        if weight:
            out.append(BetaDecaySchedule(network, weight, int(self.setting("epochs", 1))))
        return out

    # ------------------------------------------------------------------------ step hooks

    @property
    def transforms_alphas(self) -> bool:
        """Whether :meth:`alpha_transform` is overridden: the step passes the mixing weights
        to the forward pass only then (plain DARTS computes them inside the forward pass)."""
        return type(self).alpha_transform is not SearchVariant.alpha_transform

    def alpha_transform(self, network, op_weights: tuple, phase: str) -> tuple:
        """The mixing weights ``(normal, reduce)`` (the softmax of each alpha row, as
        ``network.op_weights()`` returns them) that a forward pass of ``phase`` (one of
        :data:`PHASES`) uses. The base class returns them unchanged."""
        return op_weights

    def extra_alpha_loss(self, network):
        """A regulariser added to the architecture step's loss (its gradient is added to the
        alphas' gradient), or ``None``. The base class: the beta-decay regulariser
        (:func:`beta_decay_loss`) when ``beta_decay_weight > 0``."""
        if float(self.setting("beta_decay_weight", 0.0)) > 0:
            return beta_decay_loss(network)
        return None

    # ---------------------------------------------------------------------- serialisation

    def get_config(self) -> dict[str, Any]:
        return {f.name: (dict(getattr(self, f.name)) if f.name == "settings"
                         else getattr(self, f.name)) for f in dataclasses.fields(self)}

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> SearchVariant:
        return cls(**config)


def beta_decay_loss(network):
    """The beta-decay regulariser of beta-DARTS (Ye et al., CVPR 2022):
    ``lambda * sum over cell types of mean over edges of logsumexp(alpha_e)`` (gradient:
    ``lambda * softmax(alpha_e) / edges``), with ``lambda = network.beta_decay_lambda``
    (ramped by :class:`BetaDecaySchedule`)."""
    total = (keras.ops.mean(keras.ops.logsumexp(network.alpha_normal, axis=-1))
             + keras.ops.mean(keras.ops.logsumexp(network.alpha_reduce, axis=-1)))
    return keras.ops.cast(network.beta_decay_lambda, total.dtype) * total


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
