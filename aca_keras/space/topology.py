"""Cell and network topology of the DARTS search space: edges, nodes, reduction cells."""

from __future__ import annotations

import numpy as np

from aca_keras.errors import ArchitectureError
from aca_keras.space.validation import is_int

__all__ = ["edge_index", "node_slices", "node_softmax_numpy", "nodes_for_edges", "num_edges_for",
           "reduction_indices"]




def num_edges_for(nodes: int) -> int:
    """Number of edges of a cell with ``nodes`` intermediate nodes (node j has 2 + j inputs)."""
    if not is_int(nodes) or nodes < 0:
        raise ArchitectureError(f"nodes must be a non-negative integer, got {nodes!r}")
    return nodes * (nodes + 3) // 2


def edge_index(node: int, input: int) -> int:
    """Row of the edge ``input -> node`` in an alpha matrix (DARTS edge order).

    Args:
        node: intermediate node, 0-based (node ``j`` is state ``2 + j``).
        input: input state index, ``0 <= input < node + 2``.
    """
    if not is_int(node) or node < 0:
        raise ArchitectureError(f"node must be a non-negative integer, got {node!r}")
    if not is_int(input) or not 0 <= input < node + 2:
        raise ArchitectureError(
            f"input must be an integer with 0 <= input < node + 2 = {node + 2}, got {input!r}")
    return num_edges_for(node) + input


def nodes_for_edges(num_edges: int) -> int:
    """Inverse of :func:`num_edges_for`; raises :class:`ArchitectureError` if there is none."""
    nodes = 0
    while num_edges_for(nodes) < num_edges:
        nodes += 1
    if num_edges_for(nodes) != num_edges or nodes == 0:
        valid = ", ".join(str(num_edges_for(n)) for n in range(1, 7))
        raise ArchitectureError(
            f"{num_edges} edges do not form a DARTS cell: a cell with n intermediate nodes has "
            f"n * (n + 3) / 2 edges ({valid}, ... for n = 1, 2, ...). Check the alpha shape.")
    return nodes



def reduction_indices(cells: int) -> tuple[int, ...]:
    """Indices of the reduction cells: at 1/3 and 2/3 of the depth (DARTS's rule)."""
    return tuple(sorted({cells // 3, 2 * cells // 3}))


def node_slices(nodes: int) -> list[tuple[int, int]]:
    """``(start, stop)`` of each intermediate node's incoming edges in DARTS edge order."""
    slices, start = [], 0
    for node in range(nodes):
        slices.append((start, start + node + 2))
        start += node + 2
    return slices


def node_softmax_numpy(beta: np.ndarray, nodes: int) -> np.ndarray:
    """Softmax of edge logits ``beta`` over each node's incoming edges (float64)."""
    beta = np.asarray(beta, dtype=np.float64)
    out = np.empty_like(beta)
    for a, b in node_slices(nodes):
        z = np.exp(beta[a:b] - beta[a:b].max())
        out[a:b] = z / z.sum()
    return out
