"""The search settings a :class:`~aca_keras.tuning.SearchTuner` tunes: :class:`SearchSpace`,
a keras-tuner ``HyperModel`` that builds a dict of :func:`aca_keras.search` keyword arguments
instead of a model."""

from __future__ import annotations

import dataclasses
from typing import Any

import keras_tuner as kt

from aca_keras.channels.allocation import get_allocator, list_allocators
from aca_keras.layers import ops as ops_lib
from aca_keras.searching.pipeline import SearchConfig
from aca_keras.searching.variants import list_variants
from aca_keras.tuning.hyperparameters import Spec, choice_param, float_param, int_param

__all__ = ["SearchSpace", "available_variants"]


def available_variants() -> tuple[str, ...]:
    """The search variants :func:`aca_keras.search` accepts
    (:func:`aca_keras.searching.variants.list_variants`), or ``()`` when
    :class:`~aca_keras.searching.pipeline.SearchConfig` has no ``variant`` setting."""
    if "variant" not in {f.name for f in dataclasses.fields(SearchConfig)}:
        return ()
    return tuple(str(v) for v in list_variants())


class SearchSpace(kt.HyperModel):
    """The search settings a :class:`SearchTuner` tunes (a ``HyperModel`` that builds a dict
    of :func:`aca_keras.search` keyword arguments instead of a model).

    Defaults (each narrowed or fixed by the argument of the same name):

    | setting | default range |
    | --- | --- |
    | ``alpha_learning_rate`` | 1e-4 to 1e-3, log scale (DARTS: 3e-4) |
    | ``ops`` | every named operation set (``"aca"``, ``"darts"``); a comma-separated string is a custom list of operations |
    | ``variant`` | every search variant (:func:`available_variants`); not tuned when the search has no variant setting |
    | ``allocator`` | every registered allocator (``adaptive``, ``fixed``, ``alpha``, ``none``) |
    | ``seed`` | 0 to 9999; fix it to compare settings on one seed |
    """

    def __init__(self, *, alpha_learning_rate: Spec = None, ops: Spec = None,
                 variant: Spec = None, allocator: Spec = None, seed: Spec = None,
                 name: str | None = None, tunable: bool = True):
        super().__init__(name=name, tunable=tunable)
        self.alpha_learning_rate = alpha_learning_rate
        self.ops = ops
        self.variant = variant
        self.allocator = allocator
        self.seed = seed
        self.variants = available_variants()
        if variant is not None and not self.variants:
            raise ValueError("This aca_keras search has no variant setting (plain DARTS only); "
                             "leave variant=None.")
        self.build(kt.HyperParameters())  # check every setting now

    def build(self, hp: kt.HyperParameters) -> dict[str, Any]:
        """Declare the hyperparameters in ``hp`` and return the search keyword arguments."""
        def check_ops(value: str) -> None:
            ops_lib.resolve_op_set(ops_argument(value))

        def check_variant(value: str) -> None:
            if value not in self.variants:
                raise ValueError(f"Unknown search variant {value!r}; available: "
                                 f"{', '.join(self.variants)}")

        settings: dict[str, Any] = {
            "alpha_learning_rate": float_param(
                hp, "alpha_learning_rate", self.alpha_learning_rate, (1e-4, 1e-3, "log", None),
                low_limit=1e-12),
            "ops": ops_argument(choice_param(hp, "ops", self.ops, list(ops_lib.OP_SETS),
                                               check_ops)),
        }
        if self.variants:
            settings["variant"] = choice_param(hp, "variant", self.variant, self.variants,
                                                check_variant)
        settings["allocator"] = choice_param(hp, "allocator", self.allocator,
                                              list_allocators(), get_allocator)
        settings["seed"] = int_param(hp, "seed", self.seed, (0, 9999, 1), minimum=0)
        return settings


def ops_argument(value: str) -> str | list[str]:
    """A named op set stays a name; ``"a,b,c"`` is a custom list of operations."""
    if "," in value:
        return [name.strip() for name in value.split(",") if name.strip()]
    return value
