"""The derived ACA architecture: one versioned, JSON-serialisable spec.

An :class:`Architecture` holds the derived normal and reduction cells. Every kept edge
(:class:`EdgeSpec`) names its operation and ``channels`` = k_e, the number of output
channels the operation keeps, ``0 <= k_e <= reference_channels`` (the search supernet's C);
the other ``C - k_e`` channels are the edge input passed through (identity). ``k_e = C`` is a
plain DARTS edge. ``k_e = 0`` makes the edge its passthrough alone: the identity at stride 1,
a ``FactorizedReduce`` at stride 2 (the edges from the cell inputs 0 and 1 of a reduction
cell, see :meth:`EdgeSpec.stride`).

Document layout (``Architecture.to_dict``)::

    {"format": "aca_keras.architecture", "version": 1, "name": null,
     "reference_channels": 16, "ops": ["none", "max_pool_3x3", ...],
     "normal": {"edges": [{"node": 0, "input": 0, "op": "sep_conv_3x3", "channels": 16}, ...],
                "concat": [2, 3, 4, 5]},
     "reduce": {...}, "provenance": {...}, "scores": null,
     "diagnostics": {"normal": {...}, "reduce": {...}, "network": {...}}}

``diagnostics`` holds figures derived from the cells (:meth:`Architecture.diagnostics`:
identity edges, kept channels per operation kind, ...) and, in a search run's
``architecture.json``, the size of the network the search built (``network``: its macro
settings, parameters and multiply-adds). It is written for readers of the file; it is
recomputed on every save and ignored on load (documents without it, older ones included,
load the same).

Everything is validated strictly on construction and on load; nothing is evaluated. This
module imports neither Keras nor TensorFlow at import time; operation names are checked
against :func:`aca_keras.ops.list_ops`, imported when an :class:`Architecture` is validated.
"""

from __future__ import annotations

import copy
import json
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from aca_keras.errors import ArchitectureError
from aca_keras.io.atomic import atomic_write_text
from aca_keras.io.run_dir import RunDir
from aca_keras.space.genotype import (
    Genotype,
    check_concat,
    check_header,
    check_keys,
    operation_names,
    parse_json,
)
from aca_keras.space.op_sets import (
    OPERATION_KINDS,
    PARAMETER_FREE,
    PARAMETRIC,
    check_known,
    operation_kind,
)
from aca_keras.space.validation import is_int

__all__ = ["FORMAT", "SCHEMA_VERSION", "Architecture", "CellDiagnostics", "CellSpec",
           "ChannelCount", "EdgeSpec", "edge_stride"]

FORMAT = "aca_keras.architecture"
SCHEMA_VERSION = 1

SKIP_OP = "skip_connect"
ZERO_OP = "none"
_KIND_NAMES = {PARAMETER_FREE: "parameter-free", PARAMETRIC: "parametric"}


# ------------------------------------------------------------------------------------ edges


def edge_stride(input: int, reduction: bool) -> int:
    """The stride of an edge from state ``input``: 2 from a cell input (0 or 1) of a
    reduction cell, else 1."""
    return 2 if reduction and input < 2 else 1


@dataclass(frozen=True)
class EdgeSpec:
    """One kept edge of a derived cell.

    Attributes:
        node: the intermediate node this edge feeds, 0-based (node ``j`` is state ``2 + j``).
        input: the input state index, ``0 <= input < node + 2``.
        op: a registered operation name, never ``"none"``.
        channels: k_e, output channels of the operation (``0 <= k_e <= reference_channels``,
            the upper bound is checked by :class:`Architecture`); the rest is identity.
    """

    node: int
    input: int
    op: str
    channels: int

    def __post_init__(self) -> None:
        if not is_int(self.node) or self.node < 0:
            raise ArchitectureError(f"edge node must be a non-negative integer, got {self.node!r}")
        if not is_int(self.input) or not 0 <= self.input < self.node + 2:
            raise ArchitectureError(
                f"edge input {self.input!r} is out of range for node {self.node} (state "
                f"{self.node + 2}): inputs must satisfy 0 <= input < {self.node + 2}.")
        if not isinstance(self.op, str) or not self.op:
            raise ArchitectureError(f"edge op must be an operation name, got {self.op!r}")
        if self.op == "none":
            raise ArchitectureError(
                f"edge {self.input} -> node {self.node} has op 'none'; a kept edge needs a "
                "real operation (drop the edge instead).")
        if not is_int(self.channels) or self.channels < 0:
            raise ArchitectureError(
                f"edge {self.input} -> node {self.node}: channels (k_e) must be an integer "
                f">= 0, got {self.channels!r}")
        # numpy integers -> int, so that equality, hashing and JSON are plain.
        object.__setattr__(self, "node", int(self.node))
        object.__setattr__(self, "input", int(self.input))
        object.__setattr__(self, "channels", int(self.channels))

    def stride(self, reduction: bool) -> int:
        """The edge's stride (:func:`edge_stride`)."""
        return edge_stride(self.input, reduction)

    def is_identity(self, reduction: bool) -> bool:
        """Whether the edge outputs its input unchanged: stride 1 and ``k_e = 0`` (all
        channels pass through) or ``skip_connect`` (an identity on the kept channels too).
        At stride 2 neither is an identity but a ``FactorizedReduce``."""
        return self.stride(reduction) == 1 and (self.channels == 0 or self.op == SKIP_OP)

    def is_factorized_reduce(self, reduction: bool) -> bool:
        """Whether the whole edge is a ``FactorizedReduce``: stride 2 and ``k_e = 0`` or
        ``skip_connect`` (the stride-2 counterpart of :meth:`is_identity`)."""
        return self.stride(reduction) == 2 and (self.channels == 0 or self.op == SKIP_OP)

    def to_dict(self) -> dict[str, Any]:
        """``{"node", "input", "op", "channels"}``."""
        return {"node": self.node, "input": self.input, "op": self.op, "channels": self.channels}


# ------------------------------------------------------------------------------ diagnostics


@dataclass(frozen=True)
class ChannelCount:
    """Edges and channels of a group of edges (one operation kind, or one operation).

    Attributes:
        edges: the number of edges.
        kept_channels: the sum of their k_e (channels through the operation).
        total_channels: ``edges * reference_channels``.
    """

    edges: int = 0
    kept_channels: int = 0
    total_channels: int = 0

    @property
    def passthrough_channels(self) -> int:
        """``total_channels - kept_channels``: the channels passed through."""
        return self.total_channels - self.kept_channels

    def add(self, kept: int, total: int) -> ChannelCount:
        """This count with one more edge of ``kept`` of ``total`` channels."""
        return ChannelCount(self.edges + 1, self.kept_channels + kept, self.total_channels + total)

    def to_dict(self) -> dict[str, int]:
        """``{"edges", "kept_channels", "total_channels"}``."""
        return {"edges": self.edges, "kept_channels": self.kept_channels,
                "total_channels": self.total_channels}

    def fraction(self) -> str:
        """``"kept/total"``, e.g. ``"35/48"``."""
        return f"{self.kept_channels}/{self.total_channels}"


@dataclass(frozen=True)
class CellDiagnostics:
    """Figures of one derived cell (:meth:`CellSpec.diagnostics`).

    Attributes:
        reduction: the cell is a reduction cell (edges from inputs 0 and 1 have stride 2).
        reference_channels: C, the channels of every edge.
        edges: the number of edges.
        identity_edges: edges that are the identity (:meth:`EdgeSpec.is_identity`: stride 1
            and ``k_e = 0`` or ``skip_connect``).
        skip_edges: ``skip_connect`` edges, at any stride.
        zero_edges: ``none`` edges (a kept :class:`EdgeSpec` never is one, so 0 for every
            valid cell; counted so that the figures read the same for every op set).
        factorized_reduce_edges: edges that are one ``FactorizedReduce``
            (:meth:`EdgeSpec.is_factorized_reduce`: stride 2 and ``k_e = 0`` or
            ``skip_connect``); 0 in a normal cell.
        by_kind: a :class:`ChannelCount` per operation kind (:data:`OPERATION_KINDS`, every
            kind present, in that order): ``parameter_free`` and ``parametric``.
        by_op: a :class:`ChannelCount` per operation name used in the cell, by name.
    """

    reduction: bool
    reference_channels: int
    edges: int
    identity_edges: int
    skip_edges: int
    zero_edges: int
    factorized_reduce_edges: int
    by_kind: dict[str, ChannelCount] = field(hash=False)
    by_op: dict[str, ChannelCount] = field(hash=False)

    @property
    def kept_channels(self) -> int:
        """Channels through the operations, all edges together (sum of k_e)."""
        return sum(c.kept_channels for c in self.by_kind.values())

    @property
    def total_channels(self) -> int:
        """``edges * reference_channels``."""
        return sum(c.total_channels for c in self.by_kind.values())

    def to_dict(self) -> dict[str, Any]:
        """The JSON form (written into ``architecture.json``'s ``diagnostics``)."""
        return {
            "reduction": self.reduction, "edges": self.edges,
            "identity_edges": self.identity_edges, "skip_edges": self.skip_edges,
            "zero_edges": self.zero_edges,
            "factorized_reduce_edges": self.factorized_reduce_edges,
            "kept_channels": self.kept_channels, "total_channels": self.total_channels,
            "by_kind": {k: c.to_dict() for k, c in self.by_kind.items()},
            "by_op": {op: c.to_dict() for op, c in self.by_op.items()},
        }

    def summary(self) -> str:
        """Two or three lines: the edge counts, kept channels by kind, then by operation."""
        name = "reduction cell" if self.reduction else "normal cell"
        counts = (f"{name}: {self.edges} edges: {self.identity_edges} identity, "
                  f"{self.skip_edges} skip_connect, {self.zero_edges} none")
        if self.reduction:
            counts += f", {self.factorized_reduce_edges} factorized_reduce"
        kinds = ", ".join(f"{_KIND_NAMES.get(k, k)} {c.fraction()}"
                          for k, c in self.by_kind.items())
        ops = ", ".join(f"{op} {c.fraction()}" for op, c in self.by_op.items())
        return (f"{counts}\n  kept channels {self.kept_channels}/{self.total_channels}: "
                f"{kinds}\n  by operation: {ops}")


# ------------------------------------------------------------------------------------ cells


@dataclass(frozen=True)
class CellSpec:
    """A derived cell.

    Attributes:
        edges: the kept edges, ordered by node then input (the constructor sorts them; each
            ``(node, input)`` pair appears once and every node ``0..nodes-1`` has an edge).
        concat: state indices concatenated, in this order, to form the cell output.
    """

    edges: tuple[EdgeSpec, ...]
    concat: tuple[int, ...]

    def __post_init__(self) -> None:
        edges = self.edges
        if isinstance(edges, (str, bytes)) or not isinstance(edges, Sequence) or not edges:
            raise ArchitectureError("a cell needs a non-empty sequence of EdgeSpec edges")
        if not all(isinstance(e, EdgeSpec) for e in edges):
            raise ArchitectureError("cell edges must be EdgeSpec instances")
        ordered = tuple(sorted(edges, key=lambda e: (e.node, e.input)))
        seen = set()
        for e in ordered:
            if (e.node, e.input) in seen:
                raise ArchitectureError(
                    f"the cell has two edges from state {e.input} to node {e.node}; each "
                    "(node, input) pair may appear once.")
            seen.add((e.node, e.input))
        nodes = ordered[-1].node + 1
        missing = sorted(set(range(nodes)) - {e.node for e in ordered})
        if missing:
            raise ArchitectureError(
                f"intermediate node(s) {missing} have no incoming edge; every node "
                f"0..{nodes - 1} needs at least one (renumber the nodes or add edges).")
        object.__setattr__(self, "edges", ordered)
        object.__setattr__(self, "concat", check_concat(self.concat, nodes, "concat"))

    @property
    def nodes(self) -> int:
        """Number of intermediate nodes."""
        return self.edges[-1].node + 1

    @property
    def channels(self) -> tuple[int, ...]:
        """k_e of every edge, in edge order."""
        return tuple(e.channels for e in self.edges)

    def identity_channels(self, reference_channels: int) -> int:
        """Total identity (pass-through) channels: sum over edges of ``C - k_e``."""
        return sum(reference_channels - e.channels for e in self.edges)

    def skip_count(self) -> int:
        """Number of ``skip_connect`` edges."""
        return sum(e.op == SKIP_OP for e in self.edges)

    def effective_skip_count(self) -> int:
        """``skip_connect`` edges and edges with ``k_e = 0``, at any stride.

        Stride-blind (the count the robustness study recorded): in a reduction cell it also
        counts the stride-2 edges that are a ``FactorizedReduce``, not an identity. The
        identity edges are :attr:`CellDiagnostics.identity_edges` (:meth:`diagnostics`).
        """
        return sum(e.op == SKIP_OP or e.channels == 0 for e in self.edges)

    def diagnostics(self, reference_channels: int, reduction: bool) -> CellDiagnostics:
        """Identity, skip and zero edges, kept channels per operation kind and per operation.

        Args:
            reference_channels: C, the channels of every edge (``Architecture
                .reference_channels``).
            reduction: the cell is a reduction cell: its edges from inputs 0 and 1 have
                stride 2 (a ``k_e = 0`` edge there is a ``FactorizedReduce``, no identity).
        """
        if not is_int(reference_channels) or reference_channels < 1:
            raise ArchitectureError(
                f"reference_channels must be a positive integer, got {reference_channels!r}")
        c = int(reference_channels)
        by_kind = {kind: ChannelCount() for kind in OPERATION_KINDS}
        by_op: dict[str, ChannelCount] = {}
        for e in self.edges:
            kind = operation_kind(e.op)
            by_kind[kind] = by_kind[kind].add(e.channels, c)
            by_op[e.op] = by_op.get(e.op, ChannelCount()).add(e.channels, c)
        reduction = bool(reduction)
        return CellDiagnostics(
            reduction=reduction, reference_channels=c, edges=len(self.edges),
            identity_edges=sum(e.is_identity(reduction) for e in self.edges),
            skip_edges=self.skip_count(),
            zero_edges=sum(e.op == ZERO_OP for e in self.edges),
            factorized_reduce_edges=sum(e.is_factorized_reduce(reduction) for e in self.edges),
            by_kind=by_kind, by_op=dict(sorted(by_op.items())))

    def with_channels(self, channels: Sequence[int]) -> CellSpec:
        """A copy with new k_e, one per edge in edge order."""
        channels = list(channels)
        if len(channels) != len(self.edges):
            raise ArchitectureError(
                f"got {len(channels)} channel counts for a cell with {len(self.edges)} edges; "
                "give one k_e per edge, in edge order (node, then input).")
        return CellSpec(tuple(replace(e, channels=k) for e, k in zip(self.edges, channels)),
                        self.concat)

    def to_dict(self) -> dict[str, Any]:
        """``{"edges": [...], "concat": [...]}``."""
        return {"edges": [e.to_dict() for e in self.edges], "concat": list(self.concat)}

    @classmethod
    def from_dict(cls, data: Any, where: str = "cell") -> CellSpec:
        """Parse a cell dict; errors name the location, e.g. ``normal.edges[3]``."""
        if not isinstance(data, Mapping):
            raise ArchitectureError(f"{where} must be an object with 'edges' and 'concat'")
        check_keys(data, ("edges", "concat"), (), f"'{where}' cell", header=False)
        raw_edges = data["edges"]
        if not isinstance(raw_edges, list):
            raise ArchitectureError(f"{where}.edges must be a list of edge objects")
        edges = []
        for k, raw in enumerate(raw_edges):
            loc = f"{where}.edges[{k}]"
            if not isinstance(raw, Mapping):
                raise ArchitectureError(f"{loc} must be an object with node, input, op, channels")
            check_keys(raw, ("node", "input", "op", "channels"), (), f"edge {loc}",
                        header=False)
            edges.append(_located(loc, EdgeSpec, raw["node"], raw["input"], raw["op"],
                                  raw["channels"]))
        if not isinstance(data["concat"], list):
            raise ArchitectureError(f"{where}.concat must be a list of state indices")
        return _located(where, cls, tuple(edges), tuple(data["concat"]))


def _located(where: str, factory, *args):
    """Call ``factory(*args)``, prefixing an :class:`ArchitectureError` with the location."""
    try:
        return factory(*args)
    except ArchitectureError as exc:
        raise type(exc)(f"{where}: {exc}") from None


# ------------------------------------------------------------------------------ architecture


@dataclass(frozen=True)
class Architecture:
    """A derived ACA architecture (both cells, k_e per edge, provenance).

    Construction validates everything (see :meth:`validate`), so an ``Architecture`` that
    exists is valid. It is frozen and hashable; ``provenance`` and ``scores`` take part in
    equality but not in the hash.

    Attributes:
        normal: the normal cell.
        reduce: the reduction cell.
        reference_channels: C of the search supernet that the k_e refer to.
        ops: the operation set searched over (every edge op must be in it).
        provenance: JSON-able dict (variant, order, scorer, allocator, search settings, seed,
            ...). Stored as a deep copy with tuples turned into lists and numpy scalars and
            arrays into Python values.
        scores: JSON-able summary of the channel scores, or ``None``.
        name: an optional name.
    """

    normal: CellSpec
    reduce: CellSpec
    reference_channels: int
    ops: tuple[str, ...]
    provenance: dict[str, Any] = field(default_factory=dict, hash=False)
    scores: dict[str, Any] | None = field(default=None, hash=False)
    name: str | None = None

    def __post_init__(self) -> None:
        if isinstance(self.ops, str) or not isinstance(self.ops, Sequence):
            raise ArchitectureError(
                f"ops must be a sequence of operation names, got {self.ops!r}; use "
                "Architecture.from_genotype(..., ops='aca') to resolve a named set.")
        object.__setattr__(self, "ops", tuple(self.ops))
        provenance = {} if self.provenance is None else self.provenance
        if not isinstance(provenance, Mapping):
            raise ArchitectureError(f"provenance must be a dict, got {type(provenance).__name__}")
        object.__setattr__(self, "provenance", _jsonable(provenance, "provenance"))
        if self.scores is not None:
            if not isinstance(self.scores, Mapping):
                raise ArchitectureError(
                    f"scores must be a dict or None, got {type(self.scores).__name__}")
            object.__setattr__(self, "scores", _jsonable(self.scores, "scores"))
        self.validate()

    def validate(self) -> Architecture:
        """Check the whole spec; returns ``self``. Called on construction and load.

        Raises:
            UnknownOperationError: an operation name that is not registered.
            ArchitectureError: anything else (k_e out of range, an edge op not in ``ops``, ...).
        """
        c = self.reference_channels
        if not is_int(c) or c < 1:
            raise ArchitectureError(f"reference_channels must be a positive integer, got {c!r}")
        object.__setattr__(self, "reference_channels", int(c))
        if not self.ops or not all(isinstance(op, str) and op for op in self.ops):
            raise ArchitectureError(f"ops must be a non-empty list of operation names, "
                                    f"got {list(self.ops)}")
        if len(set(self.ops)) != len(self.ops):
            raise ArchitectureError(f"ops has duplicates: {list(self.ops)}")
        if self.name is not None and not isinstance(self.name, str):
            raise ArchitectureError(f"name must be a string or None, got {self.name!r}")
        for cell_name in ("normal", "reduce"):
            cell = getattr(self, cell_name)
            if not isinstance(cell, CellSpec):
                raise ArchitectureError(f"{cell_name} must be a CellSpec, got {cell!r}")
        edge_ops = [e.op for cell in (self.normal, self.reduce) for e in cell.edges]
        check_known(tuple(dict.fromkeys(list(self.ops) + edge_ops)), "architecture")
        for cell_name in ("normal", "reduce"):
            for k, e in enumerate(getattr(self, cell_name).edges):
                if e.op not in self.ops:
                    raise ArchitectureError(
                        f"{cell_name}.edges[{k}] uses {e.op!r}, which is not in the searched "
                        f"operation set {list(self.ops)}; add it to ops or change the edge.")
                if e.channels > c:
                    raise ArchitectureError(
                        f"{cell_name}.edges[{k}] ({e.input} -> node {e.node}, {e.op}) has "
                        f"k_e = {e.channels} > reference_channels = {c}; k_e must lie in "
                        f"0..{c}.")
        return self

    # ------------------------------------------------------------------------ summaries

    @property
    def nodes(self) -> int:
        """Number of intermediate nodes of the normal cell."""
        return self.normal.nodes

    @property
    def identity_channels(self) -> dict[str, int]:
        """Total identity channels (sum of ``C - k_e``) per cell type."""
        return {"normal": self.normal.identity_channels(self.reference_channels),
                "reduce": self.reduce.identity_channels(self.reference_channels)}

    @property
    def skip_count(self) -> dict[str, int]:
        """Number of ``skip_connect`` edges per cell type (for DARTS baselines)."""
        return {"normal": self.normal.skip_count(), "reduce": self.reduce.skip_count()}

    @property
    def effective_skip_count(self) -> dict[str, int]:
        """``skip_connect`` or ``k_e = 0`` edges per cell type, at any stride (see
        :meth:`CellSpec.effective_skip_count`; the identity edges are :attr:`identity_edges`)."""
        return {"normal": self.normal.effective_skip_count(),
                "reduce": self.reduce.effective_skip_count()}

    @property
    def identity_edges(self) -> dict[str, int]:
        """Edges that are the identity per cell type (stride 1 and ``k_e = 0`` or
        ``skip_connect``; see :meth:`EdgeSpec.is_identity`)."""
        return {cell: d.identity_edges for cell, d in self.diagnostics().items()}

    def diagnostics(self) -> dict[str, CellDiagnostics]:
        """``{"normal": ..., "reduce": ...}``: :meth:`CellSpec.diagnostics` of both cells."""
        return {"normal": self.normal.diagnostics(self.reference_channels, reduction=False),
                "reduce": self.reduce.diagnostics(self.reference_channels, reduction=True)}

    def summary(self) -> str:
        """A short human-readable text: per cell, the identity, skip_connect and none edges
        and the kept channels by operation kind and by operation (what ``aca-search`` prints
        after the allocation)."""
        head = (f"architecture{f' {self.name!r}' if self.name else ''}: C = "
                f"{self.reference_channels}, {self.nodes} nodes (an identity edge: stride 1 "
                "with k_e = 0 or skip_connect)")
        return "\n".join([head, *(d.summary() for d in self.diagnostics().values())])

    def with_channels(self, normal_k: Sequence[int], reduce_k: Sequence[int]) -> Architecture:
        """A copy with new k_e (one per edge, in ``normal.edges`` / ``reduce.edges`` order).

        ``provenance``, ``scores`` and ``name`` are kept as they are.
        """
        return replace(self, normal=self.normal.with_channels(normal_k),
                       reduce=self.reduce.with_channels(reduce_k))

    # ----------------------------------------------------------------------- genotypes

    @classmethod
    def from_genotype(cls, genotype: Genotype, reference_channels: int,
                      ops: str | Sequence[str],
                      provenance: Mapping[str, Any] | None = None,
                      *, name: str | None = None) -> Architecture:
        """The plain DARTS derivation: every k_e = ``reference_channels``.

        Args:
            genotype: the derived genotype.
            reference_channels: C of the search supernet.
            ops: the searched operation set (names, or ``"aca"`` / ``"darts"``).
            provenance: optional JSON-able provenance.
            name: optional name.
        """
        if not isinstance(genotype, Genotype):
            raise ArchitectureError(f"expected a Genotype, got {type(genotype).__name__}")
        if not is_int(reference_channels) or reference_channels < 1:
            raise ArchitectureError(
                f"reference_channels must be a positive integer, got {reference_channels!r}")
        names = operation_names(ops)
        cells = {}
        for cell in ("normal", "reduce"):
            edges = getattr(genotype, cell)
            specs = []
            start = 0
            for node in range(genotype.nodes):
                count = min(genotype.edges_per_node, node + 2)
                for op, i in edges[start:start + count]:
                    specs.append(EdgeSpec(node, i, op, reference_channels))
                start += count
            cells[cell] = CellSpec(tuple(specs), getattr(genotype, f"{cell}_concat"))
        return cls(cells["normal"], cells["reduce"], reference_channels, names,
                   dict(provenance or {}), None, name)

    def to_genotype(self) -> Genotype:
        """The cells' topology and operations as a :class:`Genotype` (k_e are dropped).

        Raises:
            ArchitectureError: the cells do not have the genotype shape (the same number of
                nodes in both cells, ``min(n, j + 2)`` edges on node ``j`` for one ``n``).
        """
        counts = [sum(e.node == j for e in cell.edges)
                  for cell in (self.normal, self.reduce) for j in range(cell.nodes)]
        epn = max(counts)
        for cell_name in ("normal", "reduce"):
            cell = getattr(self, cell_name)
            for j in range(cell.nodes):
                have = sum(e.node == j for e in cell.edges)
                if have != min(epn, j + 2):
                    raise ArchitectureError(
                        f"{cell_name} node {j} has {have} edges but a genotype with "
                        f"{epn} edges per node needs {min(epn, j + 2)}; this architecture "
                        "cannot be written as a Genotype.")
        return Genotype(tuple((e.op, e.input) for e in self.normal.edges), self.normal.concat,
                        tuple((e.op, e.input) for e in self.reduce.edges), self.reduce.concat,
                        edges_per_node=epn)

    # ---------------------------------------------------------------------------- JSON

    def to_dict(self, *, network: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """The JSON-able document (see the module docstring).

        Args:
            network: optional JSON-able figures of a network built from this architecture
                (the search gives its macro settings and ``DerivedNetwork.size()``), written
                as ``diagnostics["network"]``.
        """
        diagnostics: dict[str, Any] = {cell: d.to_dict()
                                       for cell, d in self.diagnostics().items()}
        if network is not None:
            if not isinstance(network, Mapping):
                raise ArchitectureError(
                    f"network must be a dict of figures, got {type(network).__name__}")
            diagnostics["network"] = _jsonable(network, "network")
        return {
            "format": FORMAT,
            "version": SCHEMA_VERSION,
            "name": self.name,
            "reference_channels": self.reference_channels,
            "ops": list(self.ops),
            "normal": self.normal.to_dict(),
            "reduce": self.reduce.to_dict(),
            "provenance": copy.deepcopy(self.provenance),
            "scores": copy.deepcopy(self.scores),
            "diagnostics": diagnostics,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Architecture:
        """Parse and strictly validate a document written by :meth:`to_dict`.

        ``diagnostics`` is optional and ignored (it is derived from the cells and recomputed
        by :meth:`to_dict`); when present it must be an object.

        Raises:
            SchemaVersionError: written by a newer aca_keras (upgrade aca_keras).
            UnknownOperationError: an operation name that is not registered.
            ArchitectureError: wrong format tag, missing or unknown key (named), bad node
                index, k_e out of range, concat out of range, ...
        """
        check_header(data, FORMAT, SCHEMA_VERSION, "architecture")
        check_keys(data, ("reference_channels", "ops", "normal", "reduce"),
                    ("name", "provenance", "scores", "diagnostics"), "architecture document")
        ops = data["ops"]
        if not isinstance(ops, list):
            raise ArchitectureError(f"architecture 'ops' must be a list of names, got {ops!r}")
        provenance = data.get("provenance")
        if provenance is not None and not isinstance(provenance, Mapping):
            raise ArchitectureError("architecture 'provenance' must be an object")
        if not isinstance(data.get("diagnostics", {}), Mapping):
            raise ArchitectureError(
                "architecture 'diagnostics' must be an object (it is recomputed on save: "
                "remove the key to load the file)")
        return cls(
            normal=CellSpec.from_dict(data["normal"], "normal"),
            reduce=CellSpec.from_dict(data["reduce"], "reduce"),
            reference_channels=data["reference_channels"],
            ops=tuple(ops),
            provenance=dict(provenance or {}),
            scores=data.get("scores"),
            name=data.get("name"),
        )

    def to_json(self, indent: int | None = 2, *,
                network: Mapping[str, Any] | None = None) -> str:
        """The document as JSON text (strict JSON: no NaN or Infinity); ``network``: see
        :meth:`to_dict`."""
        return json.dumps(self.to_dict(network=network), indent=indent, allow_nan=False)

    @classmethod
    def from_json(cls, text: str | bytes) -> Architecture:
        """Parse JSON text (strict, see :meth:`from_dict`)."""
        return cls.from_dict(parse_json(text, "architecture"))

    def save(self, path: str | os.PathLike, *,
             network: Mapping[str, Any] | None = None) -> Path:
        """Write the JSON document atomically (temporary file, then ``os.replace``).

        The parent directory is created if needed. ``network``: figures of a network built
        from this architecture, written as ``diagnostics["network"]`` (see :meth:`to_dict`).
        Returns the path written.
        """
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(path, self.to_json(network=network) + "\n")
        return path

    @classmethod
    def load(cls, path: str | os.PathLike) -> Architecture:
        """Read a document written by :meth:`save`.

        Raises:
            FileNotFoundError: no file at ``path``.
            ArchitectureError: the file is not valid JSON or not a valid architecture.
        """
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(
                f"No architecture file at {str(path)!r}; give the path of an "
                f"{RunDir.ARCHITECTURE} written by Architecture.save (a search run directory "
                "holds one).")
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            raise ArchitectureError(f"{str(path)!r} is not a UTF-8 JSON text file") from None
        try:
            return cls.from_json(text)
        except ArchitectureError as exc:
            raise type(exc)(f"{path}: {exc}") from None


# ---------------------------------------------------------------------------------- helpers


def _jsonable(value: Any, where: str) -> Any:
    """A deep copy of ``value`` in plain JSON types (dict with str keys, list, str, int,
    float, bool, None); tuples become lists, numpy scalars and arrays Python values."""
    if isinstance(value, Mapping):
        out = {}
        for k, v in value.items():
            if not isinstance(k, str):
                raise ArchitectureError(
                    f"{where} keys must be strings (JSON object keys), got {k!r}")
            out[k] = _jsonable(v, f"{where}.{k}")
        return out
    if isinstance(value, (list, tuple)):
        return [_jsonable(v, f"{where}[{i}]") for i, v in enumerate(value)]
    if isinstance(value, np.ndarray):
        return _jsonable(value.tolist(), where)
    if isinstance(value, np.generic):
        return _jsonable(value.item(), where)
    if value is None or isinstance(value, (str, bool, int)):
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ArchitectureError(f"{where} is {value}; JSON documents hold finite numbers only")
        return value
    raise ArchitectureError(
        f"{where} has a value of type {type(value).__name__}, which is not JSON-serialisable; "
        "store strings, numbers, booleans, lists and dicts only.")
