"""Tests of aca_keras.architecture: the versioned ACA architecture spec."""

from __future__ import annotations

import copy
import json

import numpy as np
import pytest

from aca_keras.errors import ArchitectureError, SchemaVersionError, UnknownOperationError
from aca_keras.space.architecture import Architecture, CellSpec, EdgeSpec
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
