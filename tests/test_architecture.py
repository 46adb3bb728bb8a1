"""Tests of aca_keras.architecture: the versioned ACA architecture spec."""

from __future__ import annotations

import copy
import json

import numpy as np
import pytest

from aca_keras.errors import ArchitectureError, SchemaVersionError, UnknownOperationError
from aca_keras.space import op_sets
from aca_keras.space.architecture import (
    Architecture,
    CellDiagnostics,
    CellSpec,
    ChannelCount,
    EdgeSpec,
)
from aca_keras.space.genotype import Genotype

DARTS = ("none", "max_pool_3x3", "avg_pool_3x3", "skip_connect",
         "sep_conv_3x3", "sep_conv_5x5", "dil_conv_3x3", "dil_conv_5x5")
C = 16


@pytest.fixture(autouse=True)
def _seed_and_clear():
    """Overrides conftest's fixture: no Keras objects are built here, and its per-test
    ``clear_session`` (a full garbage collection) would dominate the run time."""
    yield


def genotype() -> Genotype:
    return Genotype(
        normal=(("sep_conv_3x3", 0), ("sep_conv_5x5", 1), ("dil_conv_3x3", 0),
                ("skip_connect", 2), ("sep_conv_3x3", 1), ("max_pool_3x3", 3),
                ("avg_pool_3x3", 2), ("dil_conv_5x5", 4)),
        normal_concat=(2, 3, 4, 5),
        reduce=(("max_pool_3x3", 0), ("max_pool_3x3", 1), ("avg_pool_3x3", 1),
                ("sep_conv_3x3", 2), ("skip_connect", 0), ("dil_conv_3x3", 3),
                ("sep_conv_5x5", 1), ("max_pool_3x3", 4)),
        reduce_concat=(2, 3, 4, 5),
    )


def arch() -> Architecture:
    a = Architecture.from_genotype(genotype(), C, DARTS,
                                   provenance={"variant": "darts", "order": 1, "seed": 3},
                                   name="test")
    return a.with_channels([16, 0, 8, 16, 3, 16, 12, 1], [16] * 8)


def doc() -> dict:
    return arch().to_dict()


# ------------------------------------------------------------------------------- round trips


def test_json_round_trip_and_hash():
    a = arch()
    d = a.to_dict()
    assert d["format"] == "aca_keras.architecture" and d["version"] == 1
    assert d["normal"]["edges"][1] == {"node": 0, "input": 1, "op": "sep_conv_5x5",
                                       "channels": 0}
    b = Architecture.from_json(a.to_json())
    assert b == a and hash(b) == hash(a)
    assert Architecture.from_dict(json.loads(json.dumps(d))) == a
    assert b.normal.channels == (16, 0, 8, 16, 3, 16, 12, 1)
    assert len({a, b}) == 1


def test_save_load_atomic(tmp_path):
    a = arch()
    path = a.save(tmp_path / "sub" / "architecture.json")
    assert path.is_file()
    assert [p.name for p in path.parent.iterdir()] == ["architecture.json"]  # no temp left
    assert Architecture.load(path) == a
    a.with_channels([1] * 8, [2] * 8).save(path)  # overwrite in place
    assert Architecture.load(str(path)).normal.channels == (1,) * 8


def test_genotype_round_trip():
    g = genotype()
    a = Architecture.from_genotype(g, C, "darts")
    assert a.ops == DARTS
    assert all(e.channels == C for e in a.normal.edges + a.reduce.edges)
    assert a.to_genotype() == g
    assert a.identity_channels == {"normal": 0, "reduce": 0}
    assert a.nodes == 4 and a.normal.nodes == 4
    # edges are in (node, input) order
    assert [(e.node, e.input) for e in a.normal.edges] == [
        (0, 0), (0, 1), (1, 0), (1, 2), (2, 1), (2, 3), (3, 2), (3, 4)]


def test_summaries_and_with_channels():
    a = arch()
    assert a.identity_channels == {"normal": 0 + 16 + 8 + 0 + 13 + 0 + 4 + 15, "reduce": 0}
    assert a.skip_count == {"normal": 1, "reduce": 1}
    # normal: skip_connect edge + the k_e = 0 edge; reduce: the skip_connect edge
    assert a.effective_skip_count == {"normal": 2, "reduce": 1}
    # the reduce skip_connect leaves input 0: stride 2, a FactorizedReduce, no identity
    assert a.identity_edges == {"normal": 2, "reduce": 0}
    assert a.normal.identity_channels(C) == a.identity_channels["normal"]
    b = a.with_channels(np.arange(8), [C] * 8)  # numpy ints are accepted
    assert b.normal.channels == tuple(range(8))
    assert type(b.normal.edges[3].channels) is int
    assert b.provenance == a.provenance and b.name == a.name
    assert a.normal.channels == (16, 0, 8, 16, 3, 16, 12, 1)  # a is unchanged
    with pytest.raises(ArchitectureError, match="one k_e per edge"):
        a.with_channels([C] * 7, [C] * 8)
    with pytest.raises(ArchitectureError, match="k_e = 17"):
        a.with_channels([C] * 7 + [17], [C] * 8)
    with pytest.raises(ArchitectureError, match=">= 0"):
        a.with_channels([C] * 8, [-1] + [C] * 7)


def test_provenance_is_plain_json_and_outside_the_hash():
    a = Architecture.from_genotype(genotype(), C, DARTS,
                                   provenance={"seed": np.int64(3), "lrs": (0.1, 0.2),
                                               "m": {"x": np.float32(0.5)}})
    assert a.provenance == {"seed": 3, "lrs": [0.1, 0.2], "m": {"x": 0.5}}
    assert type(a.provenance["seed"]) is int
    b = Architecture.from_genotype(genotype(), C, DARTS, provenance={"seed": 4})
    assert hash(a) == hash(b) and a != b
    assert Architecture.from_json(a.to_json()) == a
    with pytest.raises(ArchitectureError, match="finite"):
        Architecture.from_genotype(genotype(), C, DARTS, provenance={"loss": float("nan")})
    with pytest.raises(ArchitectureError, match="JSON-serialisable"):
        Architecture.from_genotype(genotype(), C, DARTS, provenance={"f": object()})
    with pytest.raises(ArchitectureError, match="keys must be strings"):
        Architecture.from_genotype(genotype(), C, DARTS, provenance={1: "a"})


def test_edges_are_sorted_on_construction():
    e = [EdgeSpec(1, 2, "sep_conv_3x3", 4), EdgeSpec(0, 1, "max_pool_3x3", 4),
         EdgeSpec(0, 0, "avg_pool_3x3", 4)]
    cell = CellSpec(tuple(e), (2, 3))
    assert [(x.node, x.input) for x in cell.edges] == [(0, 0), (0, 1), (1, 2)]
    assert cell.nodes == 2
    a = Architecture(cell, cell, 4, DARTS)
    # a cell whose node 0 has 2 edges and node 1 only 1 is not a genotype shape
    with pytest.raises(ArchitectureError, match="cannot be written as a Genotype"):
        a.to_genotype()


def test_a_custom_cell_shape():
    # node 0 with one edge, node 1 with three, concat of node 1 only
    cell = CellSpec((EdgeSpec(0, 1, "sep_conv_3x3", 2), EdgeSpec(1, 0, "max_pool_3x3", 0),
                     EdgeSpec(1, 1, "dil_conv_3x3", 4), EdgeSpec(1, 2, "sep_conv_5x5", 1)),
                    (3,))
    a = Architecture(cell, cell, 4, ("max_pool_3x3", "sep_conv_3x3", "sep_conv_5x5",
                                     "dil_conv_3x3"))
    assert Architecture.from_json(a.to_json()) == a
    assert a.identity_channels == {"normal": 2 + 4 + 0 + 3, "reduce": 9}


# ------------------------------------------------------------------------------ diagnostics


def hand_made() -> Architecture:
    """C = 8, two nodes per cell. Normal (all stride 1): sep_conv_3x3 8/8, max_pool_3x3 0/8
    (identity), skip_connect 8/8 (identity), dil_conv_3x3 3/8. Reduce: sep_conv_3x3 0/8 from
    input 0 and skip_connect 8/8 from input 1 (stride 2: FactorizedReduce, no identity),
    avg_pool_3x3 0/8 from node 0 (stride 1: identity), sep_conv_5x5 5/8 from input 1."""
    normal = CellSpec((EdgeSpec(0, 0, "sep_conv_3x3", 8), EdgeSpec(0, 1, "max_pool_3x3", 0),
                       EdgeSpec(1, 0, "skip_connect", 8), EdgeSpec(1, 2, "dil_conv_3x3", 3)),
                      (2, 3))
    reduce = CellSpec((EdgeSpec(0, 0, "sep_conv_3x3", 0), EdgeSpec(0, 1, "skip_connect", 8),
                       EdgeSpec(1, 1, "sep_conv_5x5", 5), EdgeSpec(1, 2, "avg_pool_3x3", 0)),
                      (2, 3))
    return Architecture(normal, reduce, 8, DARTS, name="hand")


def test_edge_stride_identity_and_factorized_reduce():
    assert EdgeSpec(0, 0, "sep_conv_3x3", 0).stride(reduction=False) == 1
    assert EdgeSpec(0, 1, "sep_conv_3x3", 0).stride(reduction=True) == 2
    assert EdgeSpec(1, 2, "sep_conv_3x3", 0).stride(reduction=True) == 1
    # k_e = 0 at stride 1: the identity; at stride 2: a FactorizedReduce
    assert EdgeSpec(0, 0, "sep_conv_3x3", 0).is_identity(reduction=False)
    assert not EdgeSpec(0, 0, "sep_conv_3x3", 0).is_identity(reduction=True)
    assert EdgeSpec(0, 0, "sep_conv_3x3", 0).is_factorized_reduce(reduction=True)
    assert EdgeSpec(1, 2, "sep_conv_3x3", 0).is_identity(reduction=True)
    # skip_connect: identity at stride 1 whatever k_e, FactorizedReduce at stride 2
    assert EdgeSpec(0, 1, "skip_connect", 5).is_identity(reduction=False)
    assert EdgeSpec(0, 1, "skip_connect", 5).is_factorized_reduce(reduction=True)
    assert not EdgeSpec(0, 1, "sep_conv_3x3", 1).is_identity(reduction=False)
    assert not EdgeSpec(0, 1, "sep_conv_3x3", 1).is_factorized_reduce(reduction=True)


def test_diagnostics_of_a_hand_made_architecture():
    a = hand_made()
    normal, reduce = a.diagnostics()["normal"], a.diagnostics()["reduce"]
    assert isinstance(normal, CellDiagnostics) and not normal.reduction and reduce.reduction
    assert (normal.edges, normal.identity_edges, normal.skip_edges, normal.zero_edges,
            normal.factorized_reduce_edges) == (4, 2, 1, 0, 0)
    assert (reduce.edges, reduce.identity_edges, reduce.skip_edges, reduce.zero_edges,
            reduce.factorized_reduce_edges) == (4, 1, 1, 0, 2)
    # kinds, in OPERATION_KINDS order: pools and skip_connect parameter-free, convs parametric
    assert list(normal.by_kind) == ["parameter_free", "parametric"]
    assert normal.by_kind == {"parameter_free": ChannelCount(2, 0 + 8, 16),
                              "parametric": ChannelCount(2, 8 + 3, 16)}
    assert reduce.by_kind == {"parameter_free": ChannelCount(2, 8 + 0, 16),
                              "parametric": ChannelCount(2, 0 + 5, 16)}
    assert (normal.kept_channels, normal.total_channels) == (19, 32)
    assert (reduce.kept_channels, reduce.total_channels) == (13, 32)
    assert normal.by_kind["parametric"].passthrough_channels == 5
    assert normal.kept_channels == 32 - a.identity_channels["normal"]
    assert normal.by_op == {"dil_conv_3x3": ChannelCount(1, 3, 8),
                            "max_pool_3x3": ChannelCount(1, 0, 8),
                            "sep_conv_3x3": ChannelCount(1, 8, 8),
                            "skip_connect": ChannelCount(1, 8, 8)}
    assert list(reduce.by_op) == ["avg_pool_3x3", "sep_conv_3x3", "sep_conv_5x5",
                                  "skip_connect"]
    assert reduce.by_op["sep_conv_5x5"] == ChannelCount(1, 5, 8)
    assert a.identity_edges == {"normal": 2, "reduce": 1}
    # the stride-blind count also takes the two stride-2 edges of the reduction cell
    assert a.effective_skip_count == {"normal": 2, "reduce": 3}
    # the same cell read as a normal cell: every edge at stride 1
    as_normal = a.reduce.diagnostics(8, reduction=False)
    assert (as_normal.identity_edges, as_normal.factorized_reduce_edges) == (3, 0)
    with pytest.raises(ArchitectureError, match="positive integer"):
        a.normal.diagnostics(0, reduction=False)


def test_summary_text_holds_the_numbers():
    text = hand_made().summary()
    lines = text.splitlines()
    assert lines[0].startswith("architecture 'hand': C = 8, 2 nodes")
    assert "normal cell: 4 edges: 2 identity, 1 skip_connect, 0 none" in text
    assert ("reduction cell: 4 edges: 1 identity, 1 skip_connect, 0 none, "
            "2 factorized_reduce") in text
    assert "kept channels 19/32: parameter-free 8/16, parametric 11/16" in text
    assert "kept channels 13/32: parameter-free 8/16, parametric 5/16" in text
    assert ("by operation: dil_conv_3x3 3/8, max_pool_3x3 0/8, sep_conv_3x3 8/8, "
            "skip_connect 8/8") in text
    assert len(lines) == 7


def test_operation_kinds_are_declared_in_the_space():
    assert op_sets.operation_kind("max_pool_3x3") == op_sets.PARAMETER_FREE
    assert op_sets.operation_kind("skip_connect") == op_sets.PARAMETER_FREE
    assert op_sets.operation_kind("noise") == op_sets.PARAMETER_FREE
    assert op_sets.operation_kind("sep_conv_5x5") == op_sets.PARAMETRIC
    assert op_sets.is_parametric("no_such_op")  # unknown: parametric
    op_sets.declare_operation("test_kind_pool", parametric=False)
    try:
        assert op_sets.operation_kind("test_kind_pool") == op_sets.PARAMETER_FREE
        op_sets.declare_operation("test_kind_pool")  # None keeps the declared kind
        assert not op_sets.is_parametric("test_kind_pool")
        cell = CellSpec((EdgeSpec(0, 0, "test_kind_pool", 3), EdgeSpec(0, 1, "sep_conv_3x3", 2)),
                        (2,))
        figures = Architecture(cell, cell, 4, ("test_kind_pool", "sep_conv_3x3")).diagnostics()
        assert figures["normal"].by_kind == {"parameter_free": ChannelCount(1, 3, 4),
                                             "parametric": ChannelCount(1, 2, 4)}
    finally:
        op_sets.forget_operation("test_kind_pool")
    assert op_sets.is_parametric("test_kind_pool")


def test_diagnostics_in_the_document_are_recomputed_and_ignored_on_load(tmp_path):
    a = hand_made()
    d = a.to_dict()
    assert d["diagnostics"]["normal"] == a.diagnostics()["normal"].to_dict()
    assert d["diagnostics"]["reduce"]["identity_edges"] == 1
    assert d["diagnostics"]["reduce"]["by_kind"]["parametric"] == {
        "edges": 2, "kept_channels": 5, "total_channels": 16}
    assert "network" not in d["diagnostics"]
    assert Architecture.from_dict(json.loads(json.dumps(d))) == a
    # an old document (no diagnostics) loads the same
    old = copy.deepcopy(d)
    del old["diagnostics"]
    assert Architecture.from_dict(old) == a
    # stale figures are ignored (derived data) and rewritten on save
    stale = copy.deepcopy(d)
    stale["diagnostics"]["normal"]["identity_edges"] = 99
    assert Architecture.from_dict(stale).to_dict()["diagnostics"] == d["diagnostics"]
    # the search adds the derived network's size
    network = {"cells": 3, "channels": 4, "parameters": np.int64(1895), "multiply_adds": 42288}
    path = a.save(tmp_path / "architecture.json", network=network)
    written = json.loads(path.read_text())
    assert written["diagnostics"]["network"] == {"cells": 3, "channels": 4,
                                                 "parameters": 1895, "multiply_adds": 42288}
    assert written["diagnostics"]["normal"] == d["diagnostics"]["normal"]
    assert Architecture.load(path) == a
    old_file = tmp_path / "old.json"
    old_file.write_text(json.dumps(old), encoding="utf-8")
    assert Architecture.load(old_file) == a
    with pytest.raises(ArchitectureError, match="network must be a dict"):
        a.to_dict(network=[1])


# ------------------------------------------------------------------------------ bad documents


def edited(path: str, value) -> dict:
    """The good document with the item at ``path`` (dotted, ints index lists) replaced;
    ``value`` KeyError deletes it."""
    d = copy.deepcopy(doc())
    keys = [int(k) if k.isdigit() else k for k in path.split(".")]
    target = d
    for k in keys[:-1]:
        target = target[k]
    if value is KeyError:
        del target[keys[-1]]
    else:
        target[keys[-1]] = value
    return d


@pytest.mark.parametrize("path, value, error, match", [
    # unknown operation names, listing the known ones
    ("normal.edges.3.op", "warp_drive", UnknownOperationError, "warp_drive.*sep_conv_3x3"),
    ("ops", list(DARTS) + ["warp_drive"], UnknownOperationError, "warp_drive"),
    # an edge op outside the searched set
    ("ops", [op for op in DARTS if op != "skip_connect"], ArchitectureError,
     "not in the searched operation set"),
    ("normal.edges.3.op", "none", ArchitectureError, "'none'"),
    ("normal.edges.3.op", 3, ArchitectureError, "operation name"),
    # node indices
    ("normal.edges.3.input", 3, ArchitectureError, r"normal\.edges\[3\].*0 <= input < 3"),
    ("normal.edges.3.input", -1, ArchitectureError, "0 <= input < 3"),
    ("normal.edges.3.node", -1, ArchitectureError, "node must be a non-negative"),
    ("normal.edges.0.input", 1, ArchitectureError, "appear once"),
    # k_e range
    ("normal.edges.2.channels", -1, ArchitectureError, r"normal\.edges\[2\].*>= 0"),
    ("normal.edges.2.channels", 17, ArchitectureError, "k_e = 17 > reference_channels = 16"),
    ("normal.edges.2.channels", 16.0, ArchitectureError, "integer"),
    ("normal.edges.2.channels", True, ArchitectureError, "integer"),
    ("reference_channels", 0, ArchitectureError, "positive integer"),
    ("reference_channels", 8, ArchitectureError, "k_e = 16 > reference_channels = 8"),
    # concat
    ("reduce.concat", [2, 3, 4, 6], ArchitectureError, r"reduce.*out of range.*0\.\.5"),
    ("reduce.concat", [], ArchitectureError, "non-empty"),
    ("reduce.concat", 5, ArchitectureError, "list"),
    # header
    ("version", 2, SchemaVersionError, "upgrade aca_keras"),
    ("version", "1", ArchitectureError, "version"),
    ("format", "aca_keras.genotype", ArchitectureError, "format"),
    ("format", KeyError, ArchitectureError, "'format'"),
    # missing / unknown keys, named
    ("reference_channels", KeyError, ArchitectureError, "reference_channels"),
    ("ops", KeyError, ArchitectureError, "'ops'"),
    ("reduce", KeyError, ArchitectureError, "'reduce'"),
    ("normal.concat", KeyError, ArchitectureError, "'concat'"),
    ("normal.edges.4.channels", KeyError, ArchitectureError, r"normal\.edges\[4\].*'channels'"),
    ("normal.edges", [], ArchitectureError, "non-empty"),
    ("provenence", {}, ArchitectureError, "unknown key.*provenence"),
    ("normal.edges.4.k", 3, ArchitectureError, "unknown key.*'k'"),
    ("provenance", [1], ArchitectureError, "provenance"),
    ("scores", "high", ArchitectureError, "scores"),
    ("diagnostics", [1], ArchitectureError, "'diagnostics' must be an object"),
    ("name", 7, ArchitectureError, "name"),
])
def test_bad_documents_are_rejected(path, value, error, match):
    with pytest.raises(error, match=match):
        Architecture.from_dict(edited(path, value))


def test_node_without_incoming_edges():
    d = doc()
    d["normal"]["edges"] = [e for e in d["normal"]["edges"] if e["node"] != 2]
    with pytest.raises(ArchitectureError, match=r"node\(s\) \[2\] have no incoming edge"):
        Architecture.from_dict(d)


def test_bad_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="No architecture file"):
        Architecture.load(tmp_path / "missing.json")
    bad = tmp_path / "bad.json"
    bad.write_text("{not json", encoding="utf-8")
    with pytest.raises(ArchitectureError, match="not valid JSON"):
        Architecture.load(bad)
    bad.write_bytes(b"\xff\xfe\x00")
    with pytest.raises(ArchitectureError):
        Architecture.load(bad)
    bad.write_text("[]", encoding="utf-8")
    with pytest.raises(ArchitectureError, match="JSON object"):
        Architecture.load(bad)
    newer = tmp_path / "newer.json"
    newer.write_text(json.dumps(edited("version", 99)), encoding="utf-8")
    with pytest.raises(SchemaVersionError, match="upgrade aca_keras"):
        Architecture.load(newer)


def test_construction_is_validated():
    with pytest.raises(ArchitectureError, match="0 <= input < 2"):
        EdgeSpec(0, 2, "sep_conv_3x3", 4)
    with pytest.raises(ArchitectureError, match="'none'"):
        EdgeSpec(0, 0, "none", 4)
    cell = CellSpec((EdgeSpec(0, 0, "sep_conv_3x3", 4),), (2,))
    with pytest.raises(UnknownOperationError, match="Registered operations"):
        Architecture(cell, cell, 4, ("sep_conv_3x3", "bogus"))
    with pytest.raises(ArchitectureError, match="k_e = 4 > reference_channels = 3"):
        Architecture(cell, cell, 3, ("sep_conv_3x3",))
    with pytest.raises(ArchitectureError, match="named set"):
        Architecture(cell, cell, 4, "aca")
    with pytest.raises(ArchitectureError, match="duplicates"):
        Architecture(cell, cell, 4, ("sep_conv_3x3", "sep_conv_3x3"))
    with pytest.raises(ArchitectureError, match="positive integer"):
        Architecture.from_genotype(genotype(), 0, DARTS)
    with pytest.raises(UnknownOperationError):
        Architecture.from_genotype(genotype(), C, "nope")
    # the 'aca' set lacks skip_connect, which this genotype uses
    with pytest.raises(ArchitectureError, match="not in the searched operation set"):
        Architecture.from_genotype(genotype(), C, "aca")
