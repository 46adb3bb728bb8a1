"""Channel importance of the derived operations, measured inside the trained supernet.

For every edge kept by the derivation, each output channel of its chosen operation gets a
score, computed on alpha-validation batches. With ``a = w_op * op(x)`` the operation's
weighted contribution to the mixed edge (shape ``(batch, H, W, channels)``):

* ``taylor`` (default): first-order Taylor importance, the mean over batches of
  ``|sum over batch and positions of a_c * dL/da_c|``, the first-order change of the loss if
  channel c were removed;
* ``magnitude``: the mean over batches of ``mean |a_c|``;
* ``alpha``: the operation's softmax weight alone, the same for every channel (no forward
  pass).

A cell type (normal or reduction) occurs several times in the supernet, at widths
``m * C`` (m = 1, 2, 4 after reductions). The statistic of each occurrence is pooled to the
reference width C by averaging groups of ``m`` consecutive channels, divided by the sum over
that occurrence's kept edges (so every occurrence weighs the same), and averaged over the
occurrences. The result is a :class:`~aca_keras.allocation.ChannelScores` for the allocators.

**PC-DARTS supernets** (``partial_k = K > 1``, see :mod:`aca_keras.variants`): a mixed edge's
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

from aca_keras.allocation import ChannelScores
from aca_keras.architecture import Architecture
from aca_keras.errors import ArchitectureError
from aca_keras.genotype import edge_index

CELL_TYPES = ("normal", "reduce")


@dataclass(frozen=True)
class Scorer:
    """A channel scorer: ``statistic(a, grad)`` maps one batch to a per-channel vector.

    ``needs_forward`` False means the scorer uses only the softmax weight (``alpha``).
    """

    name: str
    statistic: Callable[[tf.Tensor, tf.Tensor | None], np.ndarray] | None
    needs_gradient: bool
    needs_forward: bool = True
    description: str = ""


def _taylor(a, grad) -> np.ndarray:
    return np.abs(tf.reduce_sum(a * grad, axis=(0, 1, 2)).numpy().astype(np.float64))


def _magnitude(a, grad) -> np.ndarray:
    return tf.reduce_mean(tf.abs(a), axis=(0, 1, 2)).numpy().astype(np.float64)


_SCORERS: dict[str, Scorer] = {}


def register_scorer(scorer: Scorer, overwrite: bool = False) -> Scorer:
    """Add a scorer to the registry."""
    if scorer.name in _SCORERS and not overwrite:
        raise ValueError(f"Scorer {scorer.name!r} is already registered; pass overwrite=True.")
    _SCORERS[scorer.name] = scorer
    return scorer


def list_scorers() -> list[str]:
    """Names of the registered scorers."""
    return list(_SCORERS)


def get_scorer(name: str) -> Scorer:
    """The scorer called ``name`` (clear error listing the known ones)."""
    try:
        return _SCORERS[name]
    except KeyError:
        raise ValueError(f"Unknown channel scorer {name!r}; choose one of "
                         f"{', '.join(_SCORERS)}.") from None


register_scorer(Scorer("taylor", _taylor, needs_gradient=True,
                       description="mean over batches of |sum a_c * dL/da_c|"))
register_scorer(Scorer("magnitude", _magnitude, needs_gradient=False,
                       description="mean over batches of mean |a_c|"))
register_scorer(Scorer("alpha", None, needs_gradient=False, needs_forward=False,
                       description="the operation's softmax weight, for every channel"))


@dataclass(frozen=True)
class _Target:
    cell_type: str
    edge: int  # index into the architecture cell's edges
    cell: int  # index of the supernet cell
    supernet_edge: int
    position: int  # index into MixedEdge.candidates


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
                mixed = cell.edges[edge_index(edge.node, edge.input)]
                targets.append(_Target(cell_type, k, c, edge_index(edge.node, edge.input),
                                       mixed.op_indices.index(op_column)))
    return targets


def raw_channel_statistics(network, architecture: Architecture, batches: Iterable, *,
                           scorer: str | Scorer = "taylor", max_batches: int = 10,
                           verbose: bool = False) -> dict[tuple[str, int, int], np.ndarray]:
    """Per-occurrence statistics before pooling: ``{(cell_type, edge, cell): vector}``.

    ``batches`` yields ``(x, y)`` or the search pipeline's ``((x_w, y_w), (x_a, y_a))``, of
    which the alpha-validation half is used. The supernet runs eagerly in inference mode.
    """
    scorer = get_scorer(scorer) if isinstance(scorer, str) else scorer
    if not scorer.needs_forward:
        raise ValueError(f"Scorer {scorer.name!r} needs no forward pass.")
    targets = _targets(network, architecture)
    sums: dict[tuple[str, int, int], np.ndarray] = {}
    count = 0
    for batch in batches:
        if count >= max_batches:
            break
        x, y = batch[1] if isinstance(batch[0], (tuple, list)) else batch
        captured: dict[_Target, list] = {t: [] for t in targets}
        for t in targets:
            network.search_cells[t.cell].edges[t.supernet_edge].set_probe(t.position, captured[t])
        try:
            with tf.GradientTape() as tape:
                logits = network(x, training=False)
                loss = network.loss(y, logits)
            tensors = [captured[t][0] for t in targets]
            grads = tape.gradient(loss, tensors) if scorer.needs_gradient else [None] * len(tensors)
        finally:
            for t in targets:
                network.search_cells[t.cell].edges[t.supernet_edge].clear_probe()
        for t, a, g in zip(targets, tensors, grads):
            key = (t.cell_type, t.edge, t.cell)
            value = scorer.statistic(a, g)
            sums[key] = value if key not in sums else sums[key] + value
        count += 1
        if verbose:
            print(f"\r  scored batch {count}/{max_batches}", end="", file=sys.stdout, flush=True)
    if verbose:
        print(file=sys.stdout, flush=True)
    if count == 0:
        raise ValueError("No batches to score channels on; the validation split is empty.")
    return {key: value / count for key, value in sums.items()}


def _pool(vector: np.ndarray, channels: int, partial_k: int = 1) -> np.ndarray:
    """Average groups of consecutive channels down to ``channels // partial_k`` values, then
    repeat each ``partial_k`` times (PC-DARTS; see the module docstring) -> ``(channels,)``."""
    scored = channels // partial_k
    width = vector.shape[0]
    if width % scored:
        raise ArchitectureError(f"A cell of width {width} is not a multiple of C/K={scored}.")
    pooled = vector.reshape(scored, width // scored).mean(axis=1)
    return np.repeat(pooled, partial_k) if partial_k > 1 else pooled


def score_channels(network, architecture: Architecture, batches: Iterable, *,
                   scorer: str | Scorer = "taylor", max_batches: int = 10,
                   verbose: bool = False) -> ChannelScores:
    """Score every output channel of every kept edge (see the module docstring).

    Args:
        network: the trained :class:`~aca_keras.supernet.SearchNetwork`.
        architecture: the derived architecture (its edges say which operations to score).
        batches: alpha-validation batches, ``(x, y)`` or ``((x_w, y_w), (x_a, y_a))``.
        scorer: ``"taylor"``, ``"magnitude"``, ``"alpha"`` or a registered :class:`Scorer`.
        max_batches: bound on the number of batches (one pass).
        verbose: print progress.
    """
    scorer = get_scorer(scorer) if isinstance(scorer, str) else scorer
    weights = {cell_type: keras.ops.convert_to_numpy(w).astype(np.float64)
               for cell_type, w in zip(CELL_TYPES, network.edge_weights())}
    op_weights: dict[str, list[float]] = {}
    for cell_type in CELL_TYPES:
        op_weights[cell_type] = [
            float(weights[cell_type][edge_index(e.node, e.input), network.op_names.index(e.op)])
            for e in getattr(architecture, cell_type).edges]
    C = architecture.reference_channels
    partial_k = int(getattr(network, "partial_k", 1))
    if not scorer.needs_forward:
        per_edge = {cell_type: tuple(np.full(C, w) for w in op_weights[cell_type])
                    for cell_type in CELL_TYPES}
    else:
        raw = raw_channel_statistics(network, architecture, batches, scorer=scorer,
                                     max_batches=max_batches, verbose=verbose)
        per_edge = {}
        for cell_type in CELL_TYPES:
            edges = len(getattr(architecture, cell_type).edges)
            cells = sorted({cell for (t, _, cell) in raw if t == cell_type})
            pooled = np.zeros((edges, C))
            for cell in cells:
                occurrence = np.stack([_pool(raw[(cell_type, k, cell)], C, partial_k)
                                   for k in range(edges)])
                total = occurrence.sum()
                pooled += occurrence / total if total > 0 else occurrence
            if cells:
                pooled /= len(cells)
            per_edge[cell_type] = tuple(pooled)
    return ChannelScores(per_edge["normal"], per_edge["reduce"],
                         tuple(op_weights["normal"]), tuple(op_weights["reduce"]),
                         scorer=scorer.name)


def edge_scale_probe(network, cell: int, supernet_edge: int, position: int,
                     scale: Sequence[float] | np.ndarray):
    """Multiply one candidate's weighted output by a per-channel ``scale`` until cleared
    (for numerical checks of the scores). Returns the edge; call ``clear_probe()`` on it."""
    mixed = network.search_cells[cell].edges[supernet_edge]
    mixed.set_probe(position, [], tf.constant(np.asarray(scale), dtype=keras.config.floatx()))
    return mixed
