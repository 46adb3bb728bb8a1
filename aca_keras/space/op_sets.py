"""Operation names as data: the named operation sets and the names that exist.

The Keras layers of the operations live in :mod:`aca_keras.layers.ops`, whose registry
declares every name it registers here, so that genotypes and architectures (pure Python)
can check operation names without importing Keras.
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

_DECLARED: list[str] = []


def declare_operation(name: str) -> None:
    """Record that an operation called ``name`` exists (the layer registry calls this)."""
    if name not in _DECLARED:
        _DECLARED.append(name)


def forget_operation(name: str) -> None:
    """Undo :func:`declare_operation` (the layer registry calls this when unregistering)."""
    if name in _DECLARED:
        _DECLARED.remove(name)


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
