"""Operation names as data: the named operation sets, the names that exist and their kinds.

The Keras layers of the operations live in :mod:`aca_keras.layers.ops`, whose registry
declares every name it registers here, so that genotypes and architectures (pure Python)
can check operation names without importing Keras.

Every operation is of one *kind* (:func:`operation_kind`): :data:`PARAMETER_FREE` (no
weights of its own beyond a BatchNorm: pools, ``skip_connect``, ``none``, ``noise``; the
built-in ones are :data:`PARAMETER_FREE_OPS`, declared here and nowhere else) or
:data:`PARAMETRIC` (convolutions). An operation registered later states its kind with
``register_op(..., parametric=...)``; an operation whose kind was never declared, a name
that is not registered included, counts as parametric.
"""

from __future__ import annotations

from collections.abc import Sequence

from aca_keras.errors import UnknownOperationError

DARTS_OPS: tuple[str, ...] = ("none", "max_pool_3x3", "avg_pool_3x3", "skip_connect",
                              "sep_conv_3x3", "sep_conv_5x5", "dil_conv_3x3", "dil_conv_5x5")
ACA_OPS: tuple[str, ...] = tuple(op for op in DARTS_OPS if op != "skip_connect")
#: R-DARTS's reduced search spaces (Zela et al., "Understanding and Robustifying
#: Differentiable Architecture Search", ICLR 2020), in which DARTS collapses reliably, and
#: their ACA forms (``-aca``: skip_connect removed). ``rdarts-s2-aca`` holds a single
#: operation, so its search has nothing to choose and ACA nothing to rank; ``rdarts-s4`` has
#: no skip_connect, so ``rdarts-s4-aca`` equals it.
RDARTS_OPS: dict[str, tuple[str, ...]] = {
    "rdarts-s2": ("skip_connect", "sep_conv_3x3"),
    "rdarts-s3": ("none", "skip_connect", "sep_conv_3x3"),
    "rdarts-s4": ("noise", "sep_conv_3x3"),
}
OP_SETS: dict[str, tuple[str, ...]] = {
    "aca": ACA_OPS, "darts": DARTS_OPS, **RDARTS_OPS,
    **{f"{name}-aca": tuple(op for op in ops if op != "skip_connect")
       for name, ops in RDARTS_OPS.items()},
}

#: the operation kinds (:func:`operation_kind`), in the order summaries show them
PARAMETER_FREE = "parameter_free"
PARAMETRIC = "parametric"
OPERATION_KINDS: tuple[str, ...] = (PARAMETER_FREE, PARAMETRIC)
#: the built-in operations without weights of their own (beyond a BatchNorm); every other
#: built-in operation is a convolution (parametric)
PARAMETER_FREE_OPS: tuple[str, ...] = ("none", "max_pool_3x3", "avg_pool_3x3",
                                       "skip_connect", "noise")

_DECLARED: list[str] = []
_KINDS: dict[str, str] = {}  # kinds stated at declaration (overriding the built-in table)


def declare_operation(name: str, parametric: bool | None = None) -> None:
    """Record that an operation called ``name`` exists (the layer registry calls this).

    Args:
        name: the operation name.
        parametric: its kind: ``True`` for an operation with weights (a convolution),
            ``False`` for a parameter-free one; ``None`` keeps the kind known for the name
            (:data:`PARAMETER_FREE_OPS` for the built-in ones, else parametric).
    """
    if name not in _DECLARED:
        _DECLARED.append(name)
    if parametric is not None:
        _KINDS[name] = PARAMETRIC if parametric else PARAMETER_FREE


def forget_operation(name: str) -> None:
    """Undo :func:`declare_operation` (the layer registry calls this when unregistering)."""
    if name in _DECLARED:
        _DECLARED.remove(name)
    _KINDS.pop(name, None)


def operation_kind(name: str) -> str:
    """:data:`PARAMETER_FREE` or :data:`PARAMETRIC`: the kind declared for ``name`` (see
    :func:`declare_operation`), else the built-in table (:data:`PARAMETER_FREE_OPS`); any
    other name, an unknown one included, is :data:`PARAMETRIC`."""
    if name in _KINDS:
        return _KINDS[name]
    return PARAMETER_FREE if name in PARAMETER_FREE_OPS else PARAMETRIC


def is_parametric(name: str) -> bool:
    """Whether operation ``name`` has weights of its own (see :func:`operation_kind`)."""
    return operation_kind(name) == PARAMETRIC


def known_operations() -> list[str]:
    """Names of the declared operations, in declaration order."""
    return list(_DECLARED)


def check_known(names: Sequence[str], where: str) -> None:
    """Raise :class:`UnknownOperationError` for names that were never declared."""
    unknown = [n for n in names if n not in _DECLARED]
    if unknown:
        raise UnknownOperationError(
            f"Unknown operation(s) {unknown} in the {where}. Registered operations: "
            f"{', '.join(_DECLARED)}. Register custom operations with aca_keras.ops.register_op "
            "before loading.")


def resolve_op_set(ops: str | Sequence[str]) -> tuple[str, ...]:
    """A named op set (see :data:`OP_SETS`) or a list of declared names, as a tuple."""
    if isinstance(ops, str):
        try:
            return OP_SETS[ops]
        except KeyError:
            raise UnknownOperationError(
                f"Unknown operation set {ops!r}. Named sets: {', '.join(OP_SETS)}; or pass a "
                f"list of registered operations ({', '.join(_DECLARED)}).") from None
    names = tuple(ops)
    if not names:
        raise ValueError("The operation set is empty; give at least one operation.")
    if len(set(names)) != len(names):
        raise ValueError(f"The operation set has duplicates: {list(names)}")
    check_known(names, "operation set")
    if all(op == "none" for op in names):
        raise ValueError("The operation set needs at least one operation other than 'none'.")
    return names


# the built-in operations (their layers: aca_keras.layers.ops)
for _name in (*DARTS_OPS, "noise"):
    declare_operation(_name)
del _name
