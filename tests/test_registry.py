"""Every registry has one shape (:mod:`aca_keras.registry`): operations, channel scorers,
pooling rules, allocators and search variants are held by a :class:`Registry` and exposed
as ``register_*`` / ``unregister_*`` / ``list_*`` / ``get_*``; an unknown name raises an
:class:`UnknownNameError` that lists the registered names and says how to register one."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest

from aca_keras.channels import allocation, importance
from aca_keras.errors import UnknownNameError, UnknownOperationError
from aca_keras.layers import ops
from aca_keras.registry import Registry
from aca_keras.searching import variants


def _factory(ci, co, s, a, sync_batch_norm=False):
    return ops.ReLUConvBN(co, 1, s, a, sync_batch_norm=sync_batch_norm)


def _statistic(a, grad, x, w, stride):
    return a


def _pooling(occurrences, channels, partial_k):
    return occurrences[0]


def _allocator(edge_scores, op_weights, channels):
    return [channels] * len(edge_scores)


@dataclass(frozen=True)
class Kind:
    """One registry and its four functions; ``add(name)`` registers a new entry the way its
    documentation says, ``callable_of`` gives back what was registered from what ``get``
    returns (``None``: the entry is data)."""

    id: str
    module: Any
    registry: str
    register: Callable
    unregister: Callable
    list: Callable
    get: Callable
    error: type[UnknownNameError]
    hint: str
    add: Callable[[str], Any]
    callable_of: Callable[[Any], Any] | None


KINDS = [
    Kind("operations", ops, "_OPERATIONS", ops.register_op, ops.unregister_op, ops.list_ops,
         ops.get_op_spec, UnknownOperationError, "aca_keras.ops.register_op",
         lambda name: ops.register_op(name, description="test")(_factory),
         lambda spec: spec.factory),
    Kind("scorers", importance, "_SCORERS", importance.register_scorer,
         importance.unregister_scorer, importance.list_scorers, importance.get_scorer,
         UnknownNameError, "aca_keras.importance.register_scorer",
         lambda name: importance.register_scorer(name, description="test")(_statistic),
         lambda scorer: scorer.statistic),
    Kind("poolings", importance, "_POOLINGS", importance.register_pooling,
         importance.unregister_pooling, importance.list_poolings, importance.get_pooling,
         UnknownNameError, "aca_keras.importance.register_pooling",
         lambda name: importance.register_pooling(name)(_pooling), lambda rule: rule),
    Kind("allocators", allocation, "_ALLOCATORS", allocation.register_allocator,
         allocation.unregister_allocator, allocation.list_allocators,
         allocation.get_allocator, allocation.UnknownAllocatorError,
         "aca_keras.allocation.register_allocator",
         lambda name: allocation.register_allocator(name)(_allocator), lambda fn: fn),
    Kind("variants", variants, "_VARIANTS", variants.register_variant,
         variants.unregister_variant, variants.list_variants, variants.get_variant,
         UnknownNameError, "aca_keras.variants.register_variant",
         lambda name: variants.register_variant(name, description="test"), None),
]
BUILT_IN = {
    "operations": ["none", "max_pool_3x3", "avg_pool_3x3", "skip_connect", "sep_conv_3x3",
                   "sep_conv_5x5", "dil_conv_3x3", "dil_conv_5x5", "noise"],
    "scorers": ["taylor", "refill", "magnitude", "alpha"],
    "poolings": ["index", "sorted", "rank"],
    "allocators": ["adaptive", "fixed", "alpha", "none"],
    "variants": ["darts", "pc_darts", "beta_darts"],
}
NEW = "test_registry_entry"


@pytest.fixture(params=KINDS, ids=[k.id for k in KINDS])
def kind(request):
    kind = request.param
    yield kind
    if NEW in kind.list():  # a failed test leaves nothing behind
        kind.unregister(NEW)


def test_each_kind_uses_the_one_registry_type(kind):
    registry = getattr(kind.module, kind.registry)
    assert type(registry) is Registry
    assert issubclass(kind.error, UnknownNameError) and registry.error is kind.error
    assert kind.hint in registry.hint


def test_list_returns_the_registered_names_in_order(kind):
    names = kind.list()
    assert names[:len(BUILT_IN[kind.id])] == BUILT_IN[kind.id]
    assert names == getattr(kind.module, kind.registry).names()
    assert len(set(names)) == len(names)
    for name in names:
        kind.get(name)
    names.append("mutated")  # a copy: the registry is not changed through it
    assert "mutated" not in kind.list()


@pytest.mark.parametrize("unknown", ["warp_drive", None, ""])
def test_an_unknown_name_raises_the_typed_error_naming_the_known_ones(kind, unknown):
    with pytest.raises(kind.error) as info:
        kind.get(unknown)
    message = str(info.value)
    assert isinstance(info.value, UnknownNameError)
    assert isinstance(info.value, KeyError) and isinstance(info.value, ValueError)
    assert repr(unknown) in message
    for name in kind.list():
        assert name in message
    assert kind.hint in message  # how to register one
    with pytest.raises(kind.error):
        kind.unregister(unknown)


def test_register_and_unregister_round_trip(kind):
    before = kind.list()
    returned = kind.add(NEW)
    assert kind.list() == [*before, NEW]
    entry = kind.get(NEW)
    if kind.callable_of is not None:  # a decorator: hands back the decorated callable
        assert callable(returned) and kind.callable_of(entry) is returned
    else:
        assert returned is entry
    with pytest.raises(ValueError, match="already registered"):
        kind.add(NEW)
    assert kind.unregister(NEW) is entry
    assert kind.list() == before
    with pytest.raises(kind.error):
        kind.get(NEW)


def test_a_name_is_replaced_only_with_overwrite(kind):
    kind.add(NEW)
    first = kind.get(NEW)
    if kind.id == "variants":
        kind.register(NEW, description="second", overwrite=True)
    else:
        kind.register(NEW, overwrite=True)(lambda *args, **kwargs: None)  # a new callable
    assert kind.get(NEW) is not first
    assert kind.list().count(NEW) == 1


def test_the_ready_entry_forms_still_register():
    scorer = importance.Scorer(NEW, _statistic, needs_gradient=False)
    assert importance.register_scorer(scorer) is scorer
    try:
        assert importance.get_scorer(NEW) is scorer
    finally:
        importance.unregister_scorer(NEW)
    spec = variants.VariantSpec(NEW, partial=True)
    assert variants.register_variant(spec) is spec
    try:
        assert variants.get_variant(NEW) is spec
        with pytest.raises(TypeError):
            variants.register_variant(spec, overwrite=True, partial=False)
    finally:
        variants.unregister_variant(NEW)
    assert NEW not in importance.list_scorers() and NEW not in variants.list_variants()


def test_the_alpha_scorer_statistic_is_the_softmax_weight():
    import tensorflow as tf

    scorer = importance.get_scorer("alpha")
    assert not scorer.needs_forward and not scorer.needs_gradient
    out = scorer.statistic(tf.zeros((2, 3, 3, 5)), None, tf.zeros((2, 3, 3, 5)),
                           tf.constant(0.25), 1)
    assert out.numpy().tolist() == [0.25] * 5
