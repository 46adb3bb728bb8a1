"""The derived ACA architecture: one versioned, JSON-serialisable spec.

An :class:`Architecture` holds the derived normal and reduction cells. Every kept edge
(:class:`EdgeSpec`) names its operation and ``channels`` = k_e, the number of output
channels the operation keeps, ``0 <= k_e <= reference_channels`` (the search supernet's C);
the other ``C - k_e`` channels are the edge input passed through (identity). ``k_e = C`` is a
plain DARTS edge, ``k_e = 0`` a skip connection.

Document layout (``Architecture.to_dict``)::

    {"format": "aca_keras.architecture", "version": 1, "name": null,
     "reference_channels": 16, "ops": ["none", "max_pool_3x3", ...],
     "normal": {"edges": [{"node": 0, "input": 0, "op": "sep_conv_3x3", "channels": 16}, ...],
                "concat": [2, 3, 4, 5]},
     "reduce": {...}, "provenance": {...}, "scores": null}

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
from aca_keras.space.op_sets import check_known
from aca_keras.space.validation import is_int

__all__ = ["FORMAT", "SCHEMA_VERSION", "Architecture", "CellSpec", "EdgeSpec"]

FORMAT = "aca_keras.architecture"
SCHEMA_VERSION = 1

SKIP_OP = "skip_connect"


# ------------------------------------------------------------------------------------ edges


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

    def to_dict(self) -> dict[str, Any]:
        """``{"node", "input", "op", "channels"}``."""
        return {"node": self.node, "input": self.input, "op": self.op, "channels": self.channels}


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
        """Edges that are a pure identity: ``skip_connect`` edges and edges with ``k_e = 0``."""
        return sum(e.op == SKIP_OP or e.channels == 0 for e in self.edges)

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
        """Pure-identity edges per cell type: ``skip_connect`` or ``k_e = 0``."""
        return {"normal": self.normal.effective_skip_count(),
                "reduce": self.reduce.effective_skip_count()}

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

    def to_dict(self) -> dict[str, Any]:
        """The JSON-able document (see the module docstring)."""
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
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Architecture:
        """Parse and strictly validate a document written by :meth:`to_dict`.

        Raises:
            SchemaVersionError: written by a newer aca_keras (upgrade aca_keras).
            UnknownOperationError: an operation name that is not registered.
            ArchitectureError: wrong format tag, missing or unknown key (named), bad node
                index, k_e out of range, concat out of range, ...
        """
        check_header(data, FORMAT, SCHEMA_VERSION, "architecture")
        check_keys(data, ("reference_channels", "ops", "normal", "reduce"),
                    ("name", "provenance", "scores"), "architecture document")
        ops = data["ops"]
        if not isinstance(ops, list):
            raise ArchitectureError(f"architecture 'ops' must be a list of names, got {ops!r}")
        provenance = data.get("provenance")
        if provenance is not None and not isinstance(provenance, Mapping):
            raise ArchitectureError("architecture 'provenance' must be an object")
        return cls(
            normal=CellSpec.from_dict(data["normal"], "normal"),
            reduce=CellSpec.from_dict(data["reduce"], "reduce"),
            reference_channels=data["reference_channels"],
            ops=tuple(ops),
            provenance=dict(provenance or {}),
            scores=data.get("scores"),
            name=data.get("name"),
        )

    def to_json(self, indent: int | None = 2) -> str:
        """The document as JSON text (strict JSON: no NaN or Infinity)."""
        return json.dumps(self.to_dict(), indent=indent, allow_nan=False)

    @classmethod
    def from_json(cls, text: str | bytes) -> Architecture:
        """Parse JSON text (strict, see :meth:`from_dict`)."""
        return cls.from_dict(parse_json(text, "architecture"))

    def save(self, path: str | os.PathLike) -> Path:
        """Write the JSON document atomically (temporary file, then ``os.replace``).

        The parent directory is created if needed. Returns the path written.
        """
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(path, self.to_json() + "\n")
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
