"""Channel importance of the derived operations, measured inside the trained supernet.

For every edge kept by the derivation, each output channel of its chosen operation gets a
score, computed on alpha-validation batches. With ``a = w * op(x)`` the operation's
weighted contribution to the mixed edge (shape ``(batch, H, W, channels)``), ``w`` its
softmax weight, ``x`` the operation's input and ``g = dL/da``:

* ``taylor``: first-order Taylor importance of removal, the mean over batches of
  ``|sum over batch and positions of a_c * g_c|``, the first-order change of the loss if
  channel c were set to zero;
* ``refill``: first-order Taylor importance of the refill ACA actually does, the mean over
  batches of ``|sum (r_c - a_c) * g_c|``, the first-order change of the loss when channel c
  of the operation is replaced by what the derived network puts there, ``r = w * x'``: the
  edge input, weighted like the operation it replaces (the supernet sums weighted
  candidates; the derived edge puts identity and operation side by side at equal weight).
  On stride-1 edges ``x' = x`` (the identity the derived network uses). On stride-2 edges
  the derived network refills with a ``FactorizedReduce`` that the skip-free supernet does
  not hold; the stand-in is the input sampled at stride 2, ``x' = x[:, ::2, ::2]``, i.e. the
  identity on the first sampling grid of ``FactorizedReduce`` (per-channel, parameter-free
  and at the scale of a BatchNorm output like the real refill), which ignores the learned
  1x1 mixing of ``FactorizedReduce``;
* ``magnitude``: the mean over batches of ``mean |a_c|``;
* ``alpha``: the operation's softmax weight alone, the same for every channel (no forward
  pass).

``divide_weight=True`` divides each edge's statistic by its operation's softmax weight ``w``,
so edges are compared by their channels rather than by their alpha (every statistic above
except ``alpha`` is proportional to ``w`` at first order).

A cell type (normal or reduction) occurs several times in the supernet, at widths
``m * C`` (m = 1, 2, 4 after reductions). A **pooling** rule (registry:
:func:`register_pooling`, :func:`list_poolings`) turns the occurrences' statistics into C
scores per kept edge:

* ``index`` (the first reading): average groups of ``m`` consecutive channels down to C,
  divide by the occurrence's sum over its kept edges (every occurrence weighs the same), and
  average the occurrences. Channel c of one occurrence is unrelated to channel c of another,
  so this mixes unrelated units;
* ``sorted``: sort each edge's channels by score first, so the average over occurrences
  compares the i-th strongest channel of an edge with the i-th strongest elsewhere, then as
  ``index``;
* ``rank``: replace each score by its quantile among all channels of its occurrence (scale
  free: every occurrence contributes ranks in (0, 1]), sort within the edge, pool to C and
  average the occurrences.

The result is a :class:`~aca_keras.channels.scores.ChannelScores` for the allocators.

**PC-DARTS supernets** (``partial_k = K > 1``, see :mod:`aca_keras.searching.variants`): a mixed edge's
operations see and produce only ``C / K`` channels (``m * C / K`` in an occurrence of width
``m * C``), while the derived edge's operation produces up to C channels from all C inputs.
We read each partial channel as standing for K derived channels: the statistic is pooled to
``C / K`` values as above and each value is then repeated K times
(``np.repeat(pooled, K)``), giving C scores and so k_e in ``0..C`` in steps of K for the
adaptive allocator. Repeating keeps the relative weight of every scored channel (all its K
copies move across Otsu's threshold together) and adds no information that was not measured;
which of the K copies is "first" has no meaning, since allocators only count channels.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

import keras
import numpy as np
import tensorflow as tf

from aca_keras.channels.scores import ChannelScores
from aca_keras.errors import ArchitectureError
from aca_keras.models.supernet import EdgeTap
from aca_keras.registry import Registry
from aca_keras.space.architecture import Architecture
from aca_keras.space.genotype import edge_index

CELL_TYPES = ("normal", "reduce")

#: ``statistic(a, grad, x, w, stride)`` -> per-channel tensor of one batch; ``a`` the weighted
#: candidate output, ``grad`` = dL/da (``None`` for scorers without gradient), ``x`` the
#: operation's input, ``w`` its softmax weight, ``stride`` the edge's stride.
Statistic = Callable[[tf.Tensor, "tf.Tensor | None", tf.Tensor, tf.Tensor, int], tf.Tensor]


@dataclass(frozen=True)
class Scorer:
    """A channel scorer: ``statistic(a, grad, x, w, stride)`` maps one batch to a
    per-channel vector (a TensorFlow tensor of shape ``(channels,)``).

    ``needs_forward`` False means the scorer uses only the softmax weight (``alpha``).
    """

    name: str
    statistic: Statistic | None
    needs_gradient: bool
    needs_forward: bool = True
    description: str = ""


def _sum_positions(t):
    return tf.reduce_sum(t, axis=(0, 1, 2))


def _taylor(a, grad, x, w, stride):
    return tf.abs(_sum_positions(a * grad))


def refill_stand_in(x, w, stride: int):
    """What the derived network puts in place of an operation's channels, as seen in the
    supernet: ``w * x`` on stride-1 edges, ``w * x[:, ::2, ::2]`` on stride-2 edges (see the
    module docstring)."""
    if stride > 1:
        x = x[:, ::stride, ::stride, :]
    return tf.cast(w, x.dtype) * x


def _refill(a, grad, x, w, stride):
    r = refill_stand_in(x, w, stride)
    return tf.abs(_sum_positions((r[..., : a.shape[-1]] - a) * grad))


def _magnitude(a, grad, x, w, stride):
    return tf.reduce_mean(tf.abs(a), axis=(0, 1, 2))


def _alpha(a, grad, x, w, stride):
    # what the alpha scorer means; score_channels reads the softmax weights directly
    # (needs_forward=False) and never runs a forward pass for it
    return tf.fill(tf.shape(a)[-1:], tf.cast(w, a.dtype))


_SCORERS: Registry[Scorer] = Registry(
    "channel scorer", hint="Register new ones with aca_keras.importance.register_scorer.")


def register_scorer(name: str | Scorer, *, needs_gradient: bool = False,
                    needs_forward: bool = True, description: str = "",
                    overwrite: bool = False) -> Callable[[Statistic], Statistic] | Scorer:
    """Decorator registering ``statistic(a, grad, x, w, stride)`` as the channel scorer
    ``name`` (see :class:`Scorer` for the other arguments)::

        @register_scorer("square", needs_gradient=False, description="mean a_c ** 2")
        def square(a, grad, x, w, stride):
            return tf.reduce_mean(tf.square(a), axis=(0, 1, 2))

    Registering a ready :class:`Scorer` (``register_scorer(Scorer(...))``, the form of
    aca_keras 0.1.0) registers it under its own name and returns it.
    """
    if isinstance(name, Scorer):
        return _SCORERS.register(name.name, name, overwrite=overwrite)

    def decorate(statistic: Statistic) -> Statistic:
        _SCORERS.register(name, Scorer(name, statistic, needs_gradient=needs_gradient,
                                       needs_forward=needs_forward, description=description),
                          overwrite=overwrite)
        return statistic

    return decorate


def unregister_scorer(name: str) -> Scorer:
    """Remove a registered scorer and return it (custom scorers in tests and notebooks)."""
    return _SCORERS.unregister(name)


def list_scorers() -> list[str]:
    """Names of the registered scorers, in registration order."""
    return _SCORERS.names()


def get_scorer(name: str) -> Scorer:
    """The scorer called ``name`` (:class:`~aca_keras.errors.UnknownNameError` listing the
    known ones)."""
    return _SCORERS.get(name)


register_scorer("taylor", needs_gradient=True,
                description="removal: mean over batches of |sum a_c * dL/da_c|")(_taylor)
register_scorer("refill", needs_gradient=True,
                description="identity refill: mean over batches of "
                            "|sum (w x_c - a_c) * dL/da_c|")(_refill)
register_scorer("magnitude", description="mean over batches of mean |a_c|")(_magnitude)
register_scorer("alpha", needs_forward=False,
                description="the operation's softmax weight, for every channel")(_alpha)


# --------------------------------------------------------------------------------- pooling

#: ``pooling(occurrences, channels, partial_k) -> (edges, channels)``: ``occurrences`` holds
#: one ``(edges, width)`` array per occurrence of the cell type (width ``m * C / K``).
Pooling = Callable[[Sequence[np.ndarray], int, int], np.ndarray]

_POOLINGS: Registry[Pooling] = Registry(
    "channel pooling", hint="Register new ones with aca_keras.importance.register_pooling.")


def register_pooling(name: str, *, overwrite: bool = False) -> Callable[[Pooling], Pooling]:
    """Decorator registering a pooling rule across the occurrences of a cell type."""
    return _POOLINGS.decorator(name, overwrite=overwrite)


def unregister_pooling(name: str) -> Pooling:
    """Remove a registered pooling rule and return it (custom rules in tests and
    notebooks)."""
    return _POOLINGS.unregister(name)


def list_poolings() -> list[str]:
    """Names of the registered pooling rules, in registration order."""
    return _POOLINGS.names()


def get_pooling(name: str) -> Pooling:
    """The pooling rule called ``name`` (:class:`~aca_keras.errors.UnknownNameError` listing
    the known ones)."""
    return _POOLINGS.get(name)


def _to_reference(vector: np.ndarray, channels: int, partial_k: int = 1) -> np.ndarray:
    """Average groups of consecutive channels down to ``channels // partial_k`` values, then
    repeat each ``partial_k`` times (PC-DARTS; see the module docstring) -> ``(channels,)``."""
    scored = channels // partial_k
    width = vector.shape[0]
    if width % scored:
        raise ArchitectureError(f"A cell of width {width} is not a multiple of C/K={scored}.")
    pooled = vector.reshape(scored, width // scored).mean(axis=1)
    return np.repeat(pooled, partial_k) if partial_k > 1 else pooled


def _normalised_mean(occurrences: Sequence[np.ndarray], channels: int, partial_k: int,
                     prepare: Callable[[np.ndarray], np.ndarray]) -> np.ndarray:
    pooled = np.zeros((occurrences[0].shape[0], channels))
    for occurrence in occurrences:
        reduced = np.stack([_to_reference(v, channels, partial_k) for v in prepare(occurrence)])
        total = reduced.sum()
        pooled += reduced / total if total > 0 else reduced
    return pooled / len(occurrences)


@register_pooling("index")
def pool_by_index(occurrences: Sequence[np.ndarray], channels: int,
                  partial_k: int = 1) -> np.ndarray:
    """Channel c of the reference width is the mean of channels ``m*c .. m*c+m-1`` of an
    occurrence of width ``m * C``; occurrences normalised to sum 1 and averaged."""
    return _normalised_mean(occurrences, channels, partial_k, lambda o: o)


@register_pooling("sorted")
def pool_sorted(occurrences: Sequence[np.ndarray], channels: int,
                partial_k: int = 1) -> np.ndarray:
    """Like ``index``, after sorting each edge's channels by score (largest first)."""
    return _normalised_mean(occurrences, channels, partial_k,
                            lambda o: -np.sort(-np.asarray(o), axis=1))


def _quantiles(occurrence: np.ndarray) -> np.ndarray:
    flat = np.asarray(occurrence, dtype=np.float64).ravel()
    order = np.argsort(flat, kind="stable")
    ranks = np.empty(flat.size)
    ranks[order] = np.arange(flat.size)
    # ties share their mean rank
    values, inverse = np.unique(flat, return_inverse=True)
    if values.size < flat.size:
        ranks = np.bincount(inverse, ranks)[inverse] / np.bincount(inverse)[inverse]
    return ((ranks + 1.0) / flat.size).reshape(np.shape(occurrence))


@register_pooling("rank")
def pool_by_rank(occurrences: Sequence[np.ndarray], channels: int,
                 partial_k: int = 1) -> np.ndarray:
    """Each score becomes its quantile among all channels of its occurrence, in (0, 1];
    each edge's quantiles are sorted, pooled to C and averaged over the occurrences."""
    pooled = np.zeros((occurrences[0].shape[0], channels))
    for occurrence in occurrences:
        q = -np.sort(-_quantiles(occurrence), axis=1)
        pooled += np.stack([_to_reference(v, channels, partial_k) for v in q])
    return pooled / len(occurrences)


# --------------------------------------------------------------------------------- scoring


@dataclass(frozen=True)
class _Target:
    cell_type: str
    edge: int  # index into the architecture cell's edges
    cell: int  # index of the supernet cell
    supernet_edge: int
    position: int  # index into the edge's candidates (its op_indices)
    stride: int


def _targets(network, architecture: Architecture) -> list[_Target]:
    if architecture.reference_channels != network.channels:
        raise ArchitectureError(
            f"The architecture refers to C={architecture.reference_channels} but the supernet "
            f"has C={network.channels}; score with the supernet the architecture came from.")
    targets = []
    for cell_type in CELL_TYPES:
        spec = getattr(architecture, cell_type)
        for k, edge in enumerate(spec.edges):
            if edge.op not in network.op_names:
                raise ArchitectureError(f"Operation {edge.op!r} was not in the searched set "
                                        f"{list(network.op_names)}.")
            op_column = network.op_names.index(edge.op)
            for c, cell in enumerate(network.search_cells):
                if cell.reduction != (cell_type == "reduce"):
                    continue
                mixed = cell.edge(edge_index(edge.node, edge.input))
                targets.append(_Target(cell_type, k, c, edge_index(edge.node, edge.input),
                                       mixed.op_indices.index(op_column), mixed.stride))
    return targets


def tap_targets(targets: Sequence[_Target], transform: Callable | None = None) -> dict:
    """``taps`` for :meth:`SearchNetwork.call` observing every target; returns
    ``(taps, {target: EdgeTap})``."""
    by_target = {t: EdgeTap(transform=transform) for t in targets}
    taps: dict = {}
    for t, tap in by_target.items():
        taps.setdefault((t.cell, t.supernet_edge), {})[t.position] = tap
    return taps, by_target


def _batch_statistics_fn(network, targets: Sequence[_Target], scorer: Scorer):
    """A ``tf.function(x, y) -> [statistic per target]`` (one forward/backward pass)."""

    def statistics(x, y):
        taps, by_target = tap_targets(targets)
        with tf.GradientTape() as tape:
            logits = network(x, training=False, taps=taps)
            loss = network.loss(y, logits)
        captured = [by_target[t].captured[0] for t in targets]
        terms = [a for _, a, _ in captured]
        grads = (tape.gradient(loss, terms) if scorer.needs_gradient
                 else [None] * len(terms))
        return [scorer.statistic(a, g, x_in, w, t.stride)
                for t, (x_in, a, w), g in zip(targets, captured, grads)]

    return tf.function(statistics, reduce_retracing=True)


def raw_channel_statistics(network, architecture: Architecture, batches: Iterable, *,
                           scorer: str | Scorer = "taylor", max_batches: int = 16,
                           skip_batches: int = 0,
                           verbose: bool = False) -> dict[tuple[str, int, int], np.ndarray]:
    """Per-occurrence statistics before pooling: ``{(cell_type, edge, cell): vector}``.

    ``batches`` yields ``(x, y)`` or the search pipeline's ``((x_w, y_w), (x_a, y_a))``, of
    which the alpha-validation half is used. The first ``skip_batches`` are passed over (a
    second, disjoint set of batches). The supernet runs in inference mode in a traced
    function that returns only the per-channel statistics.
    """
    scorer = get_scorer(scorer) if isinstance(scorer, str) else scorer
    if not scorer.needs_forward:
        raise ValueError(f"Scorer {scorer.name!r} needs no forward pass.")
    targets = _targets(network, architecture)
    step = _batch_statistics_fn(network, targets, scorer)
    sums: dict[tuple[str, int, int], np.ndarray] = {}
    count = seen = 0
    expected = _expected_batches(batches, max_batches, skip_batches)
    for batch in batches:
        if count >= max_batches:
            break
        seen += 1
        if seen <= skip_batches:
            continue
        x, y = batch[1] if isinstance(batch[0], (tuple, list)) else batch
        values = step(x, y)
        for t, value in zip(targets, values):
            key = (t.cell_type, t.edge, t.cell)
            value = value.numpy().astype(np.float64)
            sums[key] = value if key not in sums else sums[key] + value
        count += 1
        if verbose:
            print(f"\r  scored batch {count}/{expected}", end="", file=sys.stdout, flush=True)
    if verbose:
        print(file=sys.stdout, flush=True)
    if count == 0:
        raise ValueError("No batches to score channels on; the validation split is empty"
                         + (f" after skipping {skip_batches} batches." if skip_batches else "."))
    return {key: value / count for key, value in sums.items()}


def _expected_batches(batches: Iterable, max_batches: int, skip_batches: int) -> int:
    """How many batches scoring will use: ``max_batches``, or fewer where ``batches`` has a
    known, smaller length (a ``tf.data.Dataset`` of known cardinality, a list)."""
    try:
        available = len(batches)  # type: ignore[arg-type]
    except TypeError:  # unknown or infinite length
        return max_batches
    return max(0, min(max_batches, available - skip_batches))


def _op_weights(network, architecture: Architecture) -> dict[str, list[float]]:
    weights = {cell_type: keras.ops.convert_to_numpy(w).astype(np.float64)
               for cell_type, w in zip(CELL_TYPES, network.op_weights())}
    return {cell_type: [float(weights[cell_type][edge_index(e.node, e.input),
                                                 network.op_names.index(e.op)])
                        for e in getattr(architecture, cell_type).edges]
            for cell_type in CELL_TYPES}


def score_channels(network, architecture: Architecture, batches: Iterable, *,
                   scorer: str | Scorer = "taylor", pooling: str = "index",
                   divide_weight: bool = False, max_batches: int = 16, skip_batches: int = 0,
                   verbose: bool = False) -> ChannelScores:
    """Score every output channel of every kept edge (see the module docstring).

    Args:
        network: the trained :class:`~aca_keras.models.supernet.SearchNetwork`.
        architecture: the derived architecture (its edges say which operations to score).
        batches: alpha-validation batches, ``(x, y)`` or ``((x_w, y_w), (x_a, y_a))``.
        scorer: ``"taylor"``, ``"refill"``, ``"magnitude"``, ``"alpha"`` or a registered
            :class:`Scorer`.
        pooling: how the occurrences of a cell type are combined: ``"index"``, ``"sorted"``,
            ``"rank"`` or a registered rule.
        divide_weight: divide each edge's statistic by its operation's softmax weight.
        max_batches: bound on the number of batches (one pass).
        skip_batches: batches passed over first (score on a disjoint set).
        verbose: print progress.
    """
    scorer = get_scorer(scorer) if isinstance(scorer, str) else scorer
    pool = get_pooling(pooling)
    op_weights = _op_weights(network, architecture)
    C = architecture.reference_channels
    partial_k = int(getattr(network, "partial_k", 1))
    if not scorer.needs_forward:
        if divide_weight:
            raise ValueError("divide_weight=True with the 'alpha' scorer makes every score "
                             "equal; use a scorer with a forward pass (refill, taylor, "
                             "magnitude).")
        per_edge = {cell_type: tuple(np.full(C, w) for w in op_weights[cell_type])
                    for cell_type in CELL_TYPES}
    else:
        raw = raw_channel_statistics(network, architecture, batches, scorer=scorer,
                                     max_batches=max_batches, skip_batches=skip_batches,
                                     verbose=verbose)
        per_edge = {}
        for cell_type in CELL_TYPES:
            edges = len(getattr(architecture, cell_type).edges)
            cells = sorted({cell for (t, _, cell) in raw if t == cell_type})
            if not cells:  # no occurrence of this cell type in the supernet
                per_edge[cell_type] = tuple(np.zeros(C) for _ in range(edges))
                continue
            divisor = (np.maximum(np.asarray(op_weights[cell_type])[:, None], 1e-30)
                       if divide_weight else 1.0)
            occurrences = [np.stack([raw[(cell_type, k, cell)] for k in range(edges)]) / divisor
                           for cell in cells]
            per_edge[cell_type] = tuple(pool(occurrences, C, partial_k))
    return ChannelScores(per_edge["normal"], per_edge["reduce"],
                         tuple(op_weights["normal"]), tuple(op_weights["reduce"]),
                         scorer=scorer.name, pooling=pooling, divide_weight=bool(divide_weight))


def replace_candidate_channel(network, cell: int, supernet_edge: int, position: int,
                              transform: Callable) -> dict:
    """``taps`` for ``network(x, taps=...)`` that replace one candidate's weighted output
    ``a`` by ``transform(x, a, w)`` (for numerical checks of the scores)."""
    return {(cell, supernet_edge): {position: EdgeTap(transform=transform)}}
