"""Channel allocation: how many channels k_e each kept edge's operation keeps.

For every kept edge of one cell type an allocator returns k_e, ``0 <= k_e <= C``; the
operation then produces k_e channels and the other ``C - k_e`` are the edge input passed
through (identity). Allocators live in a small registry (:func:`register_allocator`,
:func:`unregister_allocator`, :func:`list_allocators`, :func:`get_allocator`); each is a
function

``allocator(edge_scores, op_weights, channels, **options) -> list[int]``

for ONE cell type: ``edge_scores`` holds one array of shape ``(C,)`` of non-negative
channel scores per kept edge, ``op_weights`` the chosen operation's softmax weight per kept
edge, ``channels`` is C. An allocator that also takes a keyword ``ops`` is given the kept
edges' operation names (in edge order) by :func:`allocate`.

Built-in allocators:

* ``adaptive`` (default, no hyper-parameter): Otsu's threshold on the log scores of all
  channels of the cell type; k_e = number of channels of edge e above it.
* ``fixed``: k_e = C // k (option ``k=4``), the v1-style partial refill.
* ``alpha``: k_e = round(C * w_e / max w), proportional to the operation's softmax weight.
* ``none``: k_e = C (plain DARTS derivation).
* ``uniform``: the same k_e on every edge (within one channel), at a total budget that
  defaults to the total ``adaptive`` keeps on the same scores: the capacity-matched control.
* ``adaptive-typed``: ``adaptive`` within each operation kind (parameter-free operations
  and convolutions), one Otsu threshold per kind (see :func:`adaptive_typed`).

:func:`allocate` applies an allocator to both cells of an :class:`Architecture`. Pure numpy;
no Keras or TensorFlow import.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Collection, Sequence
from typing import Any

import numpy as np

from aca_keras.channels.scores import ChannelScores, check_weight
from aca_keras.errors import ArchitectureError, UnknownNameError
from aca_keras.registry import Registry
from aca_keras.space.architecture import Architecture
from aca_keras.space.op_sets import (
    OPERATION_KINDS,
    PARAMETER_FREE,
    PARAMETER_FREE_OPS,
    PARAMETRIC,
    operation_kind,
)
from aca_keras.space.validation import is_int

__all__ = [
    "LOG_EPS_RELATIVE",
    "OPERATION_KINDS",
    "PARAMETER_FREE",
    "PARAMETER_FREE_OPS",
    "PARAMETRIC",
    "Allocator",
    "ChannelScores",
    "UnknownAllocatorError",
    "accepts_ops",
    "adaptive_threshold",
    "allocate",
    "call_allocator",
    "get_allocator",
    "list_allocators",
    "log_scores",
    "operation_kinds",
    "otsu_threshold",
    "register_allocator",
    "typed_thresholds",
    "unregister_allocator",
]

Allocator = Callable[..., list[int]]

#: ``log(s + eps)`` with ``eps = LOG_EPS_RELATIVE * max(s)`` over the pooled scores of a cell
#: type: far below any score that matters (float64 keeps 16 digits), it only keeps exact
#: zeros finite. An exact zero then lies about 27.6 nats below the largest score.
LOG_EPS_RELATIVE = 1e-12

# Operation kinds (parameter-free pools, identity, zero vs parametric convolutions) are
# declared once, in aca_keras.space.op_sets (register_op(parametric=...) adds new ones);
# re-exported here for the allocators that use them.


class UnknownAllocatorError(UnknownNameError, ArchitectureError):
    """An allocator name that is not registered."""


# -------------------------------------------------------------------------------- registry

_ALLOCATORS: Registry[Allocator] = Registry(
    "allocator", UnknownAllocatorError,
    "Register new ones with aca_keras.allocation.register_allocator.")


def register_allocator(name: str, *, overwrite: bool = False) -> Callable[[Allocator], Allocator]:
    """Decorator registering ``allocator(edge_scores, op_weights, channels, **options)``.

    The allocator decides k_e for every kept edge of ONE cell type and returns a list of
    ints in ``0..channels``, one per edge.
    """
    return _ALLOCATORS.decorator(name, overwrite=overwrite)


def unregister_allocator(name: str) -> Allocator:
    """Remove a registered allocator and return it (custom allocators in tests and
    notebooks)."""
    return _ALLOCATORS.unregister(name)


def list_allocators() -> list[str]:
    """Names of the registered allocators, in registration order."""
    return _ALLOCATORS.names()


def get_allocator(name: str) -> Allocator:
    """The allocator registered as ``name``.

    Raises:
        UnknownAllocatorError: no such allocator (the message lists the registered ones).
    """
    return _ALLOCATORS.get(name)


# ------------------------------------------------------------------------------------ Otsu


def otsu_threshold(values: Any) -> float:
    """Otsu's threshold of a set of values: the cut that maximises between-class variance.

    Every cut between two consecutive distinct sorted values is tried (exact, O(n log n)).
    The returned threshold is the midpoint of the best cut, so values ``> threshold`` form the
    upper class and values ``< threshold`` the lower one. Among cuts with the same
    between-class variance the lowest is taken.

    Raises:
        ValueError: fewer than two distinct values, or non-finite values.
    """
    v = np.sort(np.asarray(values, dtype=np.float64).ravel())
    if not np.all(np.isfinite(v)):
        raise ValueError("otsu_threshold needs finite values")
    n = v.size
    # cut after position k-1 (lower class v[:k]) where v[k-1] < v[k]
    ks = np.nonzero(v[1:] > v[:-1])[0] + 1
    if ks.size == 0:
        raise ValueError("otsu_threshold needs at least two distinct values")
    centred = v - v.mean()  # shifting does not change the variance; improves precision
    csum = np.cumsum(centred)
    total = csum[-1]
    low = csum[ks - 1]
    mu0 = low / ks
    mu1 = (total - low) / (n - ks)
    between = (ks / n) * ((n - ks) / n) * (mu0 - mu1) ** 2
    best = int(ks[int(np.argmax(between))])
    return float((v[best - 1] + v[best]) / 2.0)


def log_scores(edge_scores: Sequence[np.ndarray]) -> list[np.ndarray]:
    """``log(s + eps)`` of each edge's scores, ``eps = LOG_EPS_RELATIVE * max`` over all
    edges (scores must be >= 0). All-zero scores give all-zero logs."""
    arrays = [np.asarray(s, dtype=np.float64) for s in edge_scores]
    if any(np.any(a < 0) for a in arrays):
        raise ArchitectureError(
            "channel scores must be >= 0 for the adaptive allocator (it ranks log scores); "
            "use a non-negative scorer such as 'taylor' or 'magnitude'.")
    peak = max((float(a.max()) for a in arrays if a.size), default=0.0)
    if peak == 0.0:
        return [np.zeros_like(a) for a in arrays]
    eps = LOG_EPS_RELATIVE * peak
    return [np.log(a + eps) for a in arrays]


def adaptive_threshold(edge_scores: Sequence[np.ndarray]) -> float | None:
    """Otsu's threshold (in log space) of the pooled scores of one cell type, or ``None``
    when the scores have fewer than two distinct values (then every channel is important)."""
    logs = log_scores(edge_scores)
    pooled = np.concatenate(logs) if logs else np.zeros(0)
    if np.unique(pooled).size < 2:
        return None
    return otsu_threshold(pooled)


def operation_kinds(ops: Sequence[str],
                    parameter_free: Collection[str] | None = None) -> list[str]:
    """The kind of each operation name: :data:`PARAMETER_FREE` for the names in
    ``parameter_free``, else :data:`PARAMETRIC`; by default the kinds declared in
    :mod:`aca_keras.space.op_sets` (:func:`~aca_keras.space.op_sets.operation_kind`)."""
    if isinstance(ops, str) or not all(isinstance(op, str) for op in ops):
        raise ArchitectureError(f"ops must be a sequence of operation names, got {ops!r}")
    if parameter_free is None:
        return [operation_kind(op) for op in ops]
    free = frozenset(parameter_free)
    return [PARAMETER_FREE if op in free else PARAMETRIC for op in ops]


def typed_thresholds(edge_scores: Sequence[np.ndarray], ops: Sequence[str],
                     parameter_free: Collection[str] | None = None) -> dict[str, float | None]:
    """The log-space Otsu threshold of each operation kind present among the edges
    (:func:`adaptive_threshold` of that kind's edges alone; ``None`` where the kind's scores
    have fewer than two distinct values)."""
    kinds = operation_kinds(ops, parameter_free)
    if len(kinds) != len(edge_scores):
        raise ArchitectureError(
            f"{len(edge_scores)} score arrays but {len(kinds)} operation names; give one "
            "operation per kept edge.")
    return {kind: adaptive_threshold([s for s, k in zip(edge_scores, kinds) if k == kind])
            for kind in OPERATION_KINDS if kind in kinds}


# ------------------------------------------------------------------------------ allocators


def _check_inputs(edge_scores: Sequence[Any], op_weights: Sequence[float], channels: int,
                  name: str) -> None:
    if not is_int(channels) or channels < 1:
        raise ArchitectureError(f"{name}: channels must be a positive integer, got {channels!r}")
    if len(op_weights) != len(edge_scores):
        raise ArchitectureError(
            f"{name}: {len(edge_scores)} score arrays but {len(op_weights)} operation weights")
    if not edge_scores:
        raise ArchitectureError(f"{name}: a cell needs at least one kept edge")


@register_allocator("adaptive")
def adaptive(edge_scores: Sequence[np.ndarray], op_weights: Sequence[float],
             channels: int) -> list[int]:
    """ACA's adaptive allocation (no hyper-parameter).

    Pools the channel scores of all kept edges of the cell type, takes log scores (see
    :func:`log_scores`), splits them with Otsu's threshold (:func:`otsu_threshold`), and
    gives each edge k_e = the number of its channels above the threshold. With fewer than two
    distinct scores nothing separates the channels, so all are important (k_e = C).

    Otsu's split is sensitive to extreme low outliers in log space: an exact-zero score sits
    about 27.6 nats below the largest one (see :data:`LOG_EPS_RELATIVE`), and a handful of
    such channels can form the whole unimportant class, leaving every other channel
    important. Scorers should not produce exact zeros for live channels.
    """
    _check_inputs(edge_scores, op_weights, channels, "adaptive")
    _check_lengths(edge_scores, channels, "adaptive")
    threshold = adaptive_threshold(edge_scores)
    if threshold is None:
        return [channels] * len(edge_scores)
    return [int(np.count_nonzero(s > threshold)) for s in log_scores(edge_scores)]


@register_allocator("fixed")
def fixed(edge_scores: Sequence[np.ndarray], op_weights: Sequence[float], channels: int, *,
          k: int = 4) -> list[int]:
    """k_e = C // k on every edge (the v1-style partial refill; ``k=4`` keeps a quarter)."""
    _check_inputs(edge_scores, op_weights, channels, "fixed")
    if not is_int(k) or k < 1:
        raise ArchitectureError(f"fixed: k must be a positive integer, got {k!r}")
    return [channels // int(k)] * len(edge_scores)


@register_allocator("alpha")
def alpha(edge_scores: Sequence[np.ndarray], op_weights: Sequence[float],
          channels: int) -> list[int]:
    """k_e = round(C * w_e / max_e w_e) (half up), clamped to [0, C]: the strongest edge of
    the cell type keeps every channel, the others in proportion to their operation weight."""
    _check_inputs(edge_scores, op_weights, channels, "alpha")
    w = np.array([check_weight(x, f"alpha: op_weights[{i}]") for i, x in enumerate(op_weights)])
    top = float(w.max())
    if top <= 0:
        raise ArchitectureError("alpha: every operation weight is 0; nothing to be proportional to")
    k = np.floor(channels * (w / top) + 0.5)
    return [int(x) for x in np.clip(k, 0, channels)]


@register_allocator("none")
def no_allocation(edge_scores: Sequence[np.ndarray], op_weights: Sequence[float],
                  channels: int) -> list[int]:
    """k_e = C everywhere: the plain DARTS derivation (no identity refill)."""
    _check_inputs(edge_scores, op_weights, channels, "none")
    return [channels] * len(edge_scores)


@register_allocator("uniform")
def uniform(edge_scores: Sequence[np.ndarray], op_weights: Sequence[float], channels: int, *,
            ops: Sequence[str] | None = None, budget: int | None = None,
            match: str = "adaptive") -> list[int]:
    """The same k_e on every edge of the cell type, at a total budget: the capacity-matched
    control for a score-driven allocator.

    ``budget`` B (kept channels over the cell type's E edges, ``0 <= B <= E * C``) defaults
    to the total that the allocator ``match`` (default ``adaptive``) keeps on the same
    scores, so the control keeps exactly as many operation channels as the allocation it is
    compared with and only their spread differs. Each edge gets ``B // E``; the remaining
    ``B % E`` channels go one each to the first edges in edge order (a rule that reads no
    score, so the control carries no signal of its own). The total is exactly B.

    ``ops`` (the kept edges' operations, passed by :func:`allocate`) is only handed on to
    ``match`` when that allocator takes it.
    """
    _check_inputs(edge_scores, op_weights, channels, "uniform")
    edges = len(edge_scores)
    if budget is None:
        if match == "uniform":
            raise ArchitectureError("uniform: match='uniform' has no budget of its own; name "
                                    "a score-driven allocator such as 'adaptive'.")
        reference = call_allocator(get_allocator(match), edge_scores, op_weights, channels,
                                   ops)
        budget = sum(_check_result(reference, edges, channels, match, "matched"))
    elif not is_int(budget) or not 0 <= budget <= edges * channels:
        raise ArchitectureError(
            f"uniform: budget must be an integer in 0..{edges * channels} (kept channels over "
            f"{edges} edges of {channels}), got {budget!r}")
    share, extra = divmod(int(budget), edges)
    return [share + 1 if e < extra else share for e in range(edges)]


@register_allocator("adaptive-typed")
def adaptive_typed(edge_scores: Sequence[np.ndarray], op_weights: Sequence[float],
                   channels: int, *, ops: Sequence[str] | None = None,
                   parameter_free: Collection[str] | None = None) -> list[int]:
    """``adaptive`` within each operation kind: one Otsu threshold per kind.

    ACA ranks the channels of one cell type and splits important from unimportant with a
    rule free of hyper-parameters (``../shared/design/ACA.md``, reading step 4); the
    unimportant channels are refilled with the edge input. ``adaptive`` puts every channel
    of the cell type on one scale, yet nothing makes a parameter-free operation's scores
    comparable with a convolution's (ACA.md, "Allocation across operation types"): a pool
    has no weights, its output looks like its input, so the removal score credits it for a
    signal an identity would carry as well, and refilling a pool's channel with identity
    costs little where refilling a convolution's gives up a learned transform. On the
    ``aca`` set this keeps pools whole and refills whole convolutions. This allocator
    compares like with like: the kept edges are split by kind (:data:`PARAMETER_FREE`:
    pools, ``skip_connect``, ``none``, ``noise``; :data:`PARAMETRIC`: the convolutions), and
    each kind gets its own Otsu threshold on its own log scores (:func:`typed_thresholds`).
    It adds no hyper-parameter: the kind is a property of the operation.

    What it gives up: within a kind whose scores take two or more distinct values Otsu
    always makes two classes, so each kind keeps some channels and refills others; whether a
    kind as a whole should be refilled is no longer decided by the scores. A kind with one
    edge splits that edge's channels. A kind whose scores are all equal keeps every channel.

    Args:
        ops: the kept edges' operation names, in edge order (:func:`allocate` passes them).
        parameter_free: names counted as parameter-free (default
            :data:`PARAMETER_FREE_OPS`), for operations registered outside that table.
    """
    _check_inputs(edge_scores, op_weights, channels, "adaptive-typed")
    _check_lengths(edge_scores, channels, "adaptive-typed")
    if ops is None:
        raise ArchitectureError(
            "adaptive-typed needs the kept edges' operation names (ops=...); allocate() "
            "passes them from the architecture.")
    thresholds = typed_thresholds(edge_scores, ops, parameter_free)
    kinds = operation_kinds(ops, parameter_free)
    k = [channels] * len(edge_scores)
    for kind, threshold in thresholds.items():
        group = [e for e, x in enumerate(kinds) if x == kind]
        if threshold is None:  # nothing separates this kind's channels: all important
            continue
        for e, s in zip(group, log_scores([edge_scores[e] for e in group])):
            k[e] = int(np.count_nonzero(s > threshold))
    return k


def accepts_ops(allocator: Allocator) -> bool:
    """Whether ``allocator`` takes the keyword ``ops`` (the kept edges' operation names)."""
    try:
        parameters = inspect.signature(allocator).parameters
    except (TypeError, ValueError):  # a callable without a signature
        return False
    p = parameters.get("ops")
    return p is not None and p.kind in (inspect.Parameter.POSITIONAL_OR_KEYWORD,
                                        inspect.Parameter.KEYWORD_ONLY)


def call_allocator(allocator: Allocator, edge_scores: Sequence[np.ndarray],
                   op_weights: Sequence[float], channels: int,
                   ops: Sequence[str] | None = None, **options: Any) -> Any:
    """Call ``allocator`` on one cell type, handing it ``ops`` when it takes them
    (:func:`accepts_ops`); allocators with the plain signature are called without."""
    if ops is not None and accepts_ops(allocator):
        return allocator(edge_scores, op_weights, channels, ops=list(ops), **options)
    return allocator(edge_scores, op_weights, channels, **options)


def _check_lengths(edge_scores: Sequence[Any], channels: int, name: str) -> None:
    for i, s in enumerate(edge_scores):
        if np.shape(s) != (channels,):
            raise ArchitectureError(
                f"{name}: scores of edge {i} have shape {np.shape(s)}, expected ({channels},)")


# -------------------------------------------------------------------------------- allocate


def allocate(architecture: Architecture, scores: ChannelScores, method: str = "adaptive",
             **options: Any) -> Architecture:
    """Set k_e on every kept edge of both cells with the allocator ``method``.

    Args:
        architecture: the derived architecture (its k_e are replaced).
        scores: channel scores of its kept edges, in edge order, each of length
            ``architecture.reference_channels``.
        method: a registered allocator name (see :func:`list_allocators`).
        **options: passed to the allocator (e.g. ``k=4`` for ``fixed``, ``budget=`` for
            ``uniform``). An allocator that takes ``ops`` is given the cell's operation
            names here, so ``ops`` is not an option.

    Returns:
        A new :class:`Architecture` whose ``provenance`` gains ``allocator``,
        ``allocator_options``, ``scorer``, ``pooling`` and ``divide_weight``, and whose
        ``scores`` is a summary::

            {"scorer": ..., "pooling": ..., "divide_weight": ..., "allocator": ...,
             "normal": {"threshold": <log-space Otsu threshold, adaptive only, or None>,
                        "k": [k_e, ...], "mean": [...], "min": [...], "max": [...],
                        "op_weight": [...]},
             "reduce": {...}}

        ``adaptive-typed`` adds ``"thresholds": {kind: threshold}`` to each cell's entry,
        ``uniform`` its ``"budget"``.

    Raises:
        UnknownAllocatorError: ``method`` is not registered.
        ArchitectureError: scores that do not match the architecture, or an allocator that
            returned invalid k_e.
    """
    if not isinstance(architecture, Architecture):
        raise ArchitectureError(f"expected an Architecture, got {type(architecture).__name__}")
    if not isinstance(scores, ChannelScores):
        raise ArchitectureError(f"expected ChannelScores, got {type(scores).__name__}")
    fn = get_allocator(method)
    if "ops" in options:
        raise ArchitectureError(
            "allocate() passes the kept edges' operation names from the architecture to "
            "allocators that take `ops`; do not give ops as an option.")
    c = architecture.reference_channels
    ks: dict[str, list[int]] = {}
    summary: dict[str, Any] = {"scorer": scores.scorer, "pooling": scores.pooling,
                               "divide_weight": scores.divide_weight, "allocator": method}
    for cell in ("normal", "reduce"):
        edges = getattr(architecture, cell).edges
        cell_scores = getattr(scores, cell)
        weights = getattr(scores, f"{cell}_weights")
        if len(cell_scores) != len(edges):
            raise ArchitectureError(
                f"ChannelScores has {len(cell_scores)} {cell} score arrays but the "
                f"architecture's {cell} cell has {len(edges)} kept edges; score every kept "
                "edge, in edge order.")
        for i, s in enumerate(cell_scores):
            if s.shape != (c,):
                raise ArchitectureError(
                    f"{cell} edge {i} ({edges[i].input} -> node {edges[i].node}, {edges[i].op}) "
                    f"has {s.shape[0]} channel scores but reference_channels is {c}; score "
                    "the reference width (one score per channel of the search cell).")
        ops = [e.op for e in edges]
        k = call_allocator(fn, cell_scores, weights, c, ops, **options)
        ks[cell] = _check_result(k, len(edges), c, method, cell)
        threshold = adaptive_threshold(cell_scores) if method == "adaptive" else None
        summary[cell] = {
            "threshold": threshold,
            "k": ks[cell],
            "mean": [float(s.mean()) for s in cell_scores],
            "min": [float(s.min()) for s in cell_scores],
            "max": [float(s.max()) for s in cell_scores],
            "op_weight": [float(w) for w in weights],
        }
        if method == "adaptive-typed":
            summary[cell]["thresholds"] = typed_thresholds(
                cell_scores, ops, options.get("parameter_free"))
        elif method == "uniform":
            summary[cell]["budget"] = sum(ks[cell])
    result = architecture.with_channels(ks["normal"], ks["reduce"])
    provenance = dict(result.provenance)
    # JSON-ready: a set of names (parameter_free=) is recorded as a sorted list
    recorded = {key: sorted(value) if isinstance(value, (set, frozenset)) else value
                for key, value in options.items()}
    provenance.update(allocator=method, allocator_options=recorded, scorer=scores.scorer,
                      pooling=scores.pooling, divide_weight=scores.divide_weight)
    return Architecture(result.normal, result.reduce, result.reference_channels, result.ops,
                        provenance, summary, result.name)


def _check_result(k: Any, edges: int, channels: int, method: str, cell: str) -> list[int]:
    if isinstance(k, np.ndarray):
        k = k.tolist()
    if not isinstance(k, Sequence) or len(k) != edges:
        raise ArchitectureError(
            f"allocator {method!r} returned {k!r} for the {cell} cell; it must return a list "
            f"of {edges} integers (one k_e per kept edge).")
    out = []
    for x in k:
        if not is_int(x) or not 0 <= x <= channels:
            raise ArchitectureError(
                f"allocator {method!r} returned k_e = {x!r} for the {cell} cell; every k_e must "
                f"be an integer in 0..{channels}.")
        out.append(int(x))
    return out

