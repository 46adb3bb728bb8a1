"""DARTS genotypes: the discrete cell derived from the architecture weights.

A :class:`Genotype` holds, for the normal and the reduction cell, the kept edges as
``(op_name, input_state_index)`` pairs in node order, and the states concatenated to form the
cell output. States 0 and 1 are the two cell inputs; state ``2 + j`` is intermediate node ``j``.

:func:`derive_genotype` applies the DARTS derivation rule to alpha logits. It is a pure
function of numpy arrays and an operation list; this module imports neither Keras nor
TensorFlow (the operation registry is imported lazily, only to check names on load or to
resolve a named operation set such as ``"aca"``).

Edge order (the rows of an alpha matrix) is DARTS's: node 0 has inputs 0, 1 (edges 0, 1),
node 1 has inputs 0, 1, 2 (edges 2, 3, 4), and so on; see :func:`edge_index`.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from aca_keras.errors import ArchitectureError, SchemaVersionError
from aca_keras.space.op_sets import check_known, resolve_op_set
from aca_keras.space.topology import edge_index, nodes_for_edges, num_edges_for
from aca_keras.space.validation import is_int

__all__ = [
    "FORMAT",
    "SCHEMA_VERSION",
    "Genotype",
    "derive_genotype",
    "edge_index",
    "nodes_for_edges",
    "num_edges_for",
    "softmax_rows",
]

FORMAT = "aca_keras.genotype"
SCHEMA_VERSION = 1

Edge = tuple[str, int]


def _edges_of_node(node: int, edges_per_node: int) -> int:
    """How many kept edges node ``node`` has: ``edges_per_node``, capped by its inputs."""
    return min(edges_per_node, node + 2)


# ---------------------------------------------------------------------------------- Genotype


@dataclass(frozen=True)
class Genotype:
    """A derived DARTS cell pair.

    Attributes:
        normal: kept edges of the normal cell, ``(op_name, input_state_index)``, in node order.
            Node ``j`` has ``min(edges_per_node, j + 2)`` edges; within a node the edges are
            stored sorted by input index (the constructor sorts them; order within a node has
            no meaning, so equal cells compare equal).
        normal_concat: states concatenated to form the normal cell's output.
        reduce: kept edges of the reduction cell, as ``normal``.
        reduce_concat: states concatenated to form the reduction cell's output.
        edges_per_node: kept edges per intermediate node (2 in DARTS).

    Construction checks the structure (edge counts, input indices, concat indices) and
    raises :class:`~aca_keras.errors.ArchitectureError`; operation names are checked against
    the registry by :meth:`validate` (called by :meth:`from_dict` / :meth:`from_json`).
    """

    normal: tuple[Edge, ...]
    normal_concat: tuple[int, ...]
    reduce: tuple[Edge, ...]
    reduce_concat: tuple[int, ...]
    edges_per_node: int = field(default=2, kw_only=True)

    def __post_init__(self) -> None:
        epn = self.edges_per_node
        if not is_int(epn) or epn < 1:
            raise ArchitectureError(
                f"edges_per_node must be a positive integer, got {epn!r}")
        object.__setattr__(self, "edges_per_node", int(epn))
        nodes = {}
        for cell in ("normal", "reduce"):
            edges, n = _check_cell_edges(getattr(self, cell), self.edges_per_node, cell)
            object.__setattr__(self, cell, edges)
            nodes[cell] = n
            concat = check_concat(getattr(self, f"{cell}_concat"), n, f"{cell}_concat")
            object.__setattr__(self, f"{cell}_concat", concat)
        if nodes["normal"] != nodes["reduce"]:
            raise ArchitectureError(
                f"The normal cell has {nodes['normal']} intermediate nodes and the reduction "
                f"cell {nodes['reduce']}; both cells of a genotype must have the same number.")

    @property
    def nodes(self) -> int:
        """Number of intermediate nodes per cell."""
        return _count_nodes(len(self.normal), self.edges_per_node)

    def ops(self) -> tuple[str, ...]:
        """The distinct operation names used, in first-use order (normal, then reduce)."""
        return tuple(dict.fromkeys(op for op, _ in self.normal + self.reduce))

    def validate(self) -> Genotype:
        """Check every operation name against the registry; returns ``self``.

        Raises:
            UnknownOperationError: an operation that :func:`aca_keras.ops.list_ops` lacks.
        """
        _check_registered(self.ops(), "genotype")
        return self

    # ---------------------------------------------------------------------------- JSON

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able dict: ``{"format": "aca_keras.genotype", "version": 1, ...}``."""
        return {
            "format": FORMAT,
            "version": SCHEMA_VERSION,
            "normal": [[op, i] for op, i in self.normal],
            "normal_concat": list(self.normal_concat),
            "reduce": [[op, i] for op, i in self.reduce],
            "reduce_concat": list(self.reduce_concat),
            "edges_per_node": self.edges_per_node,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Genotype:
        """Parse and strictly validate a dict written by :meth:`to_dict`.

        Raises:
            SchemaVersionError: the document was written by a newer aca_keras.
            UnknownOperationError: an operation name that is not registered.
            ArchitectureError: any other problem (format tag, missing key, bad index, ...).
        """
        check_header(data, FORMAT, SCHEMA_VERSION, "genotype")
        required = ("normal", "normal_concat", "reduce", "reduce_concat")
        optional = ("edges_per_node",)
        check_keys(data, required, optional, "genotype")
        kwargs: dict[str, Any] = {}
        for cell in ("normal", "reduce"):
            kwargs[cell] = _parse_edge_list(data[cell], cell)
            kwargs[f"{cell}_concat"] = _parse_int_list(data[f"{cell}_concat"], f"{cell}_concat")
        epn = data.get("edges_per_node", 2)
        if not is_int(epn):
            raise ArchitectureError(f"genotype 'edges_per_node' must be an integer, got {epn!r}")
        return cls(**kwargs, edges_per_node=epn).validate()

    def to_json(self, indent: int | None = 2) -> str:
        """The :meth:`to_dict` document as JSON text."""
        return json.dumps(self.to_dict(), indent=indent)

    @classmethod
    def from_json(cls, text: str | bytes) -> Genotype:
        """Parse JSON text written by :meth:`to_json` (strict, see :meth:`from_dict`)."""
        return cls.from_dict(parse_json(text, "genotype"))


# ------------------------------------------------------------------------------- derivation


def derive_genotype(
    alpha_normal: np.ndarray,
    alpha_reduce: np.ndarray,
    ops: str | Sequence[str],
    *,
    edges_per_node: int = 2,
    edge_weights_normal: np.ndarray | None = None,
    edge_weights_reduce: np.ndarray | None = None,
) -> Genotype:
    """Derive the discrete cells from alpha logits by the DARTS rule.

    For each cell type: softmax each row of the logits; for each intermediate node keep the
    ``edges_per_node`` incoming edges whose strongest non-``none`` weight is largest; on each
    kept edge take the strongest non-``none`` operation. Ties go to the lowest index (lowest
    input state for edges, first column for operations). All intermediate nodes are
    concatenated.

    Args:
        alpha_normal: logits of shape ``(num_edges, len(ops))``, rows in DARTS edge order.
        alpha_reduce: logits of the reduction cell, same shape.
        ops: the operation names of the columns, or a named set (``"aca"``, ``"darts"``).
        edges_per_node: kept edges per node (capped by the node's number of inputs).
        edge_weights_normal: optional PC-DARTS edge-normalisation weights, shape
            ``(num_edges,)``, multiplying the softmax weights before edges are ranked
            (they do not change the operation chosen on an edge).
        edge_weights_reduce: the same for the reduction cell.

    Returns:
        The :class:`Genotype`; within a node its edges are sorted by input index.

    Raises:
        ArchitectureError: shapes that do not form a DARTS cell, a column count that differs
            from ``len(ops)``, non-finite values, or an operation list with nothing but
            ``none``.
    """
    names = operation_names(ops)
    candidates = [c for c, op in enumerate(names) if op != "none"]
    if not candidates:
        raise ArchitectureError(
            f"The operation list {list(names)} has no operation other than 'none'; "
            "nothing can be derived.")
    if not is_int(edges_per_node) or edges_per_node < 1:
        raise ArchitectureError(
            f"edges_per_node must be a positive integer, got {edges_per_node!r}")
    cells = {}
    nodes = {}
    rows = {}
    for cell, alpha, beta in (("normal", alpha_normal, edge_weights_normal),
                              ("reduce", alpha_reduce, edge_weights_reduce)):
        logits = _as_matrix(alpha, len(names), f"alpha_{cell}")
        rows[cell] = logits.shape[0]
        nodes[cell] = nodes_for_edges(rows[cell])
        weights = softmax_rows(logits)
        if beta is not None:
            weights = weights * _as_edge_weights(beta, logits.shape[0], f"edge_weights_{cell}")
        cells[cell] = _derive_cell(weights, names, candidates, nodes[cell], int(edges_per_node))
    if nodes["normal"] != nodes["reduce"]:
        raise ArchitectureError(
            f"alpha_normal has {rows['normal']} rows and alpha_reduce {rows['reduce']}; both cells must have the same number of nodes.")
    concat = tuple(range(2, 2 + nodes["normal"]))
    return Genotype(cells["normal"], concat, cells["reduce"], concat,
                    edges_per_node=int(edges_per_node))


def _derive_cell(weights: np.ndarray, names: Sequence[str], candidates: list[int], nodes: int,
                 edges_per_node: int) -> tuple[Edge, ...]:
    cand = weights[:, candidates]
    # np.argmax returns the first maximum: ties go to the lowest column.
    best_col = np.argmax(cand, axis=1)
    strength = cand[np.arange(cand.shape[0]), best_col]
    edges: list[Edge] = []
    for node in range(nodes):
        start = num_edges_for(node)
        # Stable sort on -strength: equal strengths keep ascending input order.
        ranked = np.argsort(-strength[start:start + node + 2], kind="stable")
        kept = sorted(int(i) for i in ranked[:_edges_of_node(node, edges_per_node)])
        for i in kept:
            edges.append((names[candidates[int(best_col[start + i])]], i))
    return tuple(edges)


def softmax_rows(logits: Any) -> np.ndarray:
    """Softmax over the last axis (the operations of each edge) of an alpha matrix, in
    float64 and numerically stable."""
    logits = np.asarray(logits, dtype=np.float64)
    e = np.exp(logits - logits.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def _as_matrix(alpha: Any, columns: int, what: str) -> np.ndarray:
    try:
        a = np.asarray(alpha, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise ArchitectureError(f"{what} must be a numeric array: {exc}") from None
    if a.ndim != 2:
        raise ArchitectureError(
            f"{what} must have shape (num_edges, num_ops), got shape {a.shape}")
    if a.shape[1] != columns:
        raise ArchitectureError(
            f"{what} has {a.shape[1]} columns but {columns} operations were given; the columns "
            "must be the operation set in search order.")
    if not np.all(np.isfinite(a)):
        raise ArchitectureError(
            f"{what} contains NaN or Inf; the search diverged. Lower the learning rates or "
            "resume from an earlier checkpoint.")
    return a


def _as_edge_weights(beta: Any, num_edges: int, what: str) -> np.ndarray:
    try:
        b = np.asarray(beta, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise ArchitectureError(f"{what} must be a numeric array: {exc}") from None
    if b.shape != (num_edges,):
        raise ArchitectureError(f"{what} must have shape ({num_edges},), got {b.shape}")
    if not np.all(np.isfinite(b)) or np.any(b < 0):
        raise ArchitectureError(f"{what} must be finite and non-negative")
    return b[:, None]


def operation_names(ops: str | Sequence[str]) -> tuple[str, ...]:
    """A named op set or a list of operation names as a tuple (names are not checked against
    the registry here; :func:`~aca_keras.space.op_sets.check_known` does that)."""
    if isinstance(ops, str):
        return resolve_op_set(ops)
    names = tuple(ops)
    if not names or not all(isinstance(n, str) and n for n in names):
        raise ArchitectureError(f"ops must be a non-empty list of operation names, got {ops!r}")
    if len(set(names)) != len(names):
        raise ArchitectureError(f"The operation list has duplicates: {list(names)}")
    return names


# -------------------------------------------------------------------------- shared validators
# (public: aca_keras.space.architecture validates its documents with them too)




def _count_nodes(num_edges: int, edges_per_node: int) -> int:
    nodes, total = 0, 0
    while total < num_edges:
        total += _edges_of_node(nodes, edges_per_node)
        nodes += 1
    return nodes if total == num_edges else -1


def _check_cell_edges(edges: Any, edges_per_node: int, where: str) -> tuple[tuple[Edge, ...], int]:
    if isinstance(edges, (str, bytes)) or not isinstance(edges, Sequence):
        raise ArchitectureError(f"{where} must be a sequence of (op_name, input) pairs")
    pairs: list[Edge] = []
    for k, edge in enumerate(edges):
        if (isinstance(edge, (str, bytes)) or not isinstance(edge, Sequence) or len(edge) != 2
                or not isinstance(edge[0], str) or not edge[0] or not is_int(edge[1])):
            raise ArchitectureError(
                f"{where}[{k}] must be an (op_name, input_state_index) pair, got {edge!r}")
        pairs.append((edge[0], int(edge[1])))
    nodes = _count_nodes(len(pairs), edges_per_node)
    if nodes <= 0:
        counts = [_edges_of_node(j, edges_per_node) for j in range(4)]
        raise ArchitectureError(
            f"{where} has {len(pairs)} edges, which is not a whole number of nodes with "
            f"edges_per_node={edges_per_node} (node j has min(edges_per_node, j + 2) edges: "
            f"{counts} for nodes 0-3). Give exactly that many edges per node, in node order.")
    out: list[Edge] = []
    start = 0
    for node in range(nodes):
        count = _edges_of_node(node, edges_per_node)
        group = pairs[start:start + count]
        start += count
        for k, (op, i) in enumerate(group):
            if op == "none":
                raise ArchitectureError(
                    f"{where}: node {node} has a 'none' edge; a kept edge needs a real "
                    "operation (drop the edge or pick another operation).")
            if not 0 <= i < node + 2:
                raise ArchitectureError(
                    f"{where}: edge {start - count + k} ({op!r}, {i}) feeds node {node} (state "
                    f"{node + 2}) from state {i}; inputs of node {node} must satisfy "
                    f"0 <= input < {node + 2}.")
        inputs = [i for _, i in group]
        if len(set(inputs)) != len(inputs):
            raise ArchitectureError(
                f"{where}: node {node} takes input state {inputs} more than once; each kept "
                "edge of a node must come from a different state.")
        out.extend(sorted(group, key=lambda e: e[1]))
    return tuple(out), nodes


def check_concat(concat: Any, nodes: int, where: str) -> tuple[int, ...]:
    if isinstance(concat, (str, bytes)) or not isinstance(concat, Sequence) or not concat:
        raise ArchitectureError(f"{where} must be a non-empty sequence of state indices")
    out = []
    for c in concat:
        if not is_int(c) or not 0 <= c < nodes + 2:
            raise ArchitectureError(
                f"{where} index {c!r} is out of range: a cell with {nodes} intermediate nodes "
                f"has states 0..{nodes + 1}.")
        out.append(int(c))
    if len(set(out)) != len(out):
        raise ArchitectureError(f"{where} {out} lists a state more than once")
    return tuple(out)


def _check_registered(names: Sequence[str], where: str) -> None:
    check_known(names, where)


def check_header(data: Any, fmt: str, version: int, what: str) -> None:
    """Check a document's ``format`` tag and ``version`` (shared by the JSON documents)."""
    if not isinstance(data, Mapping):
        raise ArchitectureError(
            f"A {what} document must be a JSON object, got {type(data).__name__}")
    for key in ("format", "version"):
        if key not in data:
            raise ArchitectureError(
                f"The {what} document has no {key!r} key; it was not written by aca_keras "
                f"(expected {{'format': {fmt!r}, 'version': {version}, ...}}).")
    if data["format"] != fmt:
        raise ArchitectureError(
            f"The document's format is {data['format']!r}, not {fmt!r}; load it with the "
            "matching class.")
    v = data["version"]
    if not is_int(v) or v < 1:
        raise ArchitectureError(f"The {what} document's version must be a positive integer, "
                                f"got {v!r}")
    if v > version:
        raise SchemaVersionError(
            f"The {what} document has schema version {v}, newer than the version {version} "
            "this aca_keras reads; upgrade aca_keras to load it.")


def check_keys(data: Mapping[str, Any], required: Sequence[str], optional: Sequence[str],
                where: str, header: bool = True) -> None:
    """Missing required keys or unknown keys in a document -> :class:`ArchitectureError`.

    ``header``: the mapping is a whole document, so ``format`` and ``version`` are allowed.
    """
    missing = [k for k in required if k not in data]
    if missing:
        raise ArchitectureError(f"The {where} is missing the required key(s) {missing}.")
    allowed = set(required) | set(optional) | ({"format", "version"} if header else set())
    extra = sorted(str(k) for k in data if k not in allowed)
    if extra:
        raise ArchitectureError(
            f"The {where} has unknown key(s) {extra}; allowed keys are {sorted(allowed)} "
            "(check the spelling).")


def parse_json(text: str | bytes, what: str) -> Any:
    """``json.loads`` with a clear :class:`ArchitectureError` on invalid JSON."""
    try:
        return json.loads(text)
    except (json.JSONDecodeError, UnicodeDecodeError, TypeError) as exc:
        raise ArchitectureError(f"The {what} document is not valid JSON: {exc}") from None


def _parse_edge_list(value: Any, where: str) -> list[Edge]:
    if not isinstance(value, list):
        raise ArchitectureError(f"genotype {where!r} must be a list of [op, input] pairs")
    out = []
    for k, item in enumerate(value):
        if (not isinstance(item, list) or len(item) != 2 or not isinstance(item[0], str)
                or not is_int(item[1])):
            raise ArchitectureError(
                f"genotype {where}[{k}] must be an [op_name, input_index] pair, got {item!r}")
        out.append((item[0], item[1]))
    return out


def _parse_int_list(value: Any, where: str) -> list[int]:
    if not isinstance(value, list) or not all(is_int(v) for v in value):
        raise ArchitectureError(f"genotype {where!r} must be a list of integers, got {value!r}")
    return value
