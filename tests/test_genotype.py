"""Tests of aca_keras.genotype: edge indexing, the DARTS derivation rule, strict JSON."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from aca_keras.errors import ArchitectureError, SchemaVersionError, UnknownOperationError
from aca_keras.space.genotype import (
    Genotype,
    derive_genotype,
    edge_index,
    nodes_for_edges,
    num_edges_for,
)

DARTS = ("none", "max_pool_3x3", "avg_pool_3x3", "skip_connect",
         "sep_conv_3x3", "sep_conv_5x5", "dil_conv_3x3", "dil_conv_5x5")
ACA = tuple(op for op in DARTS if op != "skip_connect")
COL = {op: i for i, op in enumerate(DARTS)}


@pytest.fixture(autouse=True)
def _seed_and_clear():
    """Overrides conftest's fixture: these tests build no Keras objects, and its per-test
    ``clear_session`` (a full garbage collection) would dominate their run time."""
    yield


def logits(entries: dict[tuple[int, int], dict[str, float]], nodes: int = 4,
           ops: tuple[str, ...] = DARTS) -> np.ndarray:
    """Zero logits with ``entries[(node, input)] = {op: value}`` set."""
    a = np.zeros((num_edges_for(nodes), len(ops)))
    for (node, i), row in entries.items():
        for op, value in row.items():
            a[edge_index(node, i), ops.index(op)] = value
    return a


def good_genotype() -> Genotype:
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


# ----------------------------------------------------------------------------- edge indexing


def test_edge_indexing_follows_darts_order():
    assert [num_edges_for(n) for n in range(6)] == [0, 2, 5, 9, 14, 20]
    order = [(node, i) for node in range(4) for i in range(node + 2)]
    assert [edge_index(node, i) for node, i in order] == list(range(14))
    assert (edge_index(0, 0), edge_index(0, 1)) == (0, 1)
    assert (edge_index(1, 0), edge_index(1, 2)) == (2, 4)
    assert edge_index(3, 4) == 13
    assert [nodes_for_edges(num_edges_for(n)) for n in range(1, 7)] == list(range(1, 7))
    with pytest.raises(ArchitectureError):
        edge_index(1, 3)  # node 1 has inputs 0, 1, 2
    with pytest.raises(ArchitectureError):
        edge_index(-1, 0)
    for bad in (0, 3, 13, 15):
        with pytest.raises(ArchitectureError, match="do not form a DARTS cell"):
            nodes_for_edges(bad)


# -------------------------------------------------------------------------------- derivation


def test_derivation_hand_made_alphas():
    normal = logits({
        (0, 0): {"sep_conv_3x3": 2.0},
        (0, 1): {"dil_conv_5x5": 1.0},
        # node 1: input 2 strongest, then input 0; input 1 weakest
        (1, 0): {"max_pool_3x3": 1.5},
        (1, 1): {"avg_pool_3x3": 0.5},
        (1, 2): {"sep_conv_5x5": 3.0},
        # node 2: inputs 1 and 3
        (2, 1): {"skip_connect": 2.0},
        (2, 3): {"dil_conv_3x3": 2.5},
        # node 3: inputs 4 and 0
        (3, 0): {"sep_conv_3x3": 1.0},
        (3, 4): {"sep_conv_5x5": 1.2},
        (3, 2): {"avg_pool_3x3": 0.1},
    })
    reduce = logits({(0, 0): {"max_pool_3x3": 1.0}, (0, 1): {"max_pool_3x3": 1.0},
                     (1, 2): {"skip_connect": 1.0}, (1, 1): {"avg_pool_3x3": 1.0},
                     (2, 3): {"dil_conv_5x5": 1.0}, (2, 0): {"sep_conv_3x3": 1.0},
                     (3, 1): {"max_pool_3x3": 1.0}, (3, 3): {"dil_conv_3x3": 1.0}})
    g = derive_genotype(normal, reduce, DARTS)
    assert g.normal == (("sep_conv_3x3", 0), ("dil_conv_5x5", 1),
                        ("max_pool_3x3", 0), ("sep_conv_5x5", 2),
                        ("skip_connect", 1), ("dil_conv_3x3", 3),
                        ("sep_conv_3x3", 0), ("sep_conv_5x5", 4))
    assert g.reduce == (("max_pool_3x3", 0), ("max_pool_3x3", 1),
                        ("avg_pool_3x3", 1), ("skip_connect", 2),
                        ("sep_conv_3x3", 0), ("dil_conv_5x5", 3),
                        ("max_pool_3x3", 1), ("dil_conv_3x3", 3))
    assert g.normal_concat == g.reduce_concat == (2, 3, 4, 5)
    assert g.nodes == 4


def test_none_with_largest_weight_is_skipped_and_weakens_its_edge():
    # node 1, input 0: 'none' dominates, so its best real op has a tiny softmax weight even
    # though that op's logit (1.0) is higher than the logits on the other edges.
    normal = logits({
        (0, 0): {"none": 10.0, "avg_pool_3x3": 1.0},   # kept anyway (node 0 has 2 inputs)
        (1, 0): {"none": 10.0, "sep_conv_3x3": 1.0},
        (1, 1): {"sep_conv_5x5": 0.6},
        (1, 2): {"dil_conv_3x3": 0.5},
    })
    g = derive_genotype(normal, normal, DARTS)
    node0, node1 = g.normal[0:2], g.normal[2:4]
    assert node0[0] == ("avg_pool_3x3", 0)                       # never 'none'
    assert node1 == (("sep_conv_5x5", 1), ("dil_conv_3x3", 2))   # input 0 dropped
    assert all(op != "none" for op, _ in g.normal + g.reduce)


def test_none_everywhere_still_picks_real_operations():
    a = logits({(n, i): {"none": 5.0} for n in range(4) for i in range(n + 2)})
    a[edge_index(2, 3), COL["sep_conv_3x3"]] = 0.3
    g = derive_genotype(a, a, DARTS)
    assert all(op != "none" for op, _ in g.normal)
    assert ("sep_conv_3x3", 3) in g.normal[4:6]


def test_ties_are_broken_by_lowest_index():
    zero = np.zeros((14, len(DARTS)))
    g = derive_genotype(zero, zero, DARTS)
    # equal edges: the lowest inputs 0, 1; equal ops: the first non-none column
    assert g.normal == tuple(("max_pool_3x3", i) for _ in range(4) for i in (0, 1))
    # two ops tied on an edge -> lower column; two edges tied for second place -> lower input
    a = logits({(1, 2): {"dil_conv_5x5": 2.0, "sep_conv_5x5": 2.0},
                (1, 0): {"avg_pool_3x3": 1.0}, (1, 1): {"avg_pool_3x3": 1.0}})
    g = derive_genotype(a, a, DARTS)
    assert g.normal[2:4] == (("avg_pool_3x3", 0), ("sep_conv_5x5", 2))


def test_aca_op_set_never_yields_skip_connect():
    rng = np.random.default_rng(0)
    for _ in range(20):
        an, ar = rng.normal(size=(2, 14, len(ACA))) * 3
        g = derive_genotype(an, ar, "aca")
        assert "skip_connect" not in g.ops()
        assert set(g.ops()) <= set(ACA) - {"none"}
    # the same logits with a dominant skip column in the DARTS set do yield skip_connect
    a = np.zeros((14, len(DARTS)))
    a[:, COL["skip_connect"]] = 5.0
    assert set(derive_genotype(a, a, "darts").ops()) == {"skip_connect"}


def test_edge_weights_rerank_edges_but_not_ops():
    a = logits({(1, 0): {"sep_conv_3x3": 1.0}, (1, 1): {"sep_conv_5x5": 1.0},
                (1, 2): {"dil_conv_3x3": 1.0}})
    plain = derive_genotype(a, a, DARTS)
    assert plain.normal[2:4] == (("sep_conv_3x3", 0), ("sep_conv_5x5", 1))
    beta = np.ones(14)
    beta[[2, 3, 4]] = [0.1, 0.3, 0.6]
    g = derive_genotype(a, a, DARTS, edge_weights_normal=beta)
    assert g.normal[2:4] == (("sep_conv_5x5", 1), ("dil_conv_3x3", 2))
    assert g.reduce == plain.reduce
    with pytest.raises(ArchitectureError, match="shape"):
        derive_genotype(a, a, DARTS, edge_weights_reduce=np.ones(5))


def test_edges_per_node_one():
    a = logits({(1, 2): {"sep_conv_3x3": 1.0}, (2, 0): {"dil_conv_3x3": 1.0},
                (3, 4): {"max_pool_3x3": 1.0}, (0, 1): {"avg_pool_3x3": 1.0}})
    g = derive_genotype(a, a, DARTS, edges_per_node=1)
    assert g.normal == (("avg_pool_3x3", 1), ("sep_conv_3x3", 2), ("dil_conv_3x3", 0),
                        ("max_pool_3x3", 4))
    assert g.nodes == 4 and g.edges_per_node == 1
    assert Genotype.from_json(g.to_json()) == g


def test_derivation_is_pure_and_accepts_any_names():
    a = np.array([[0.0, 1.0, 2.0], [0.0, 3.0, 1.0]])
    before = a.copy()
    g = derive_genotype(a, a, ["none", "x", "y"])
    assert g.normal == (("y", 0), ("x", 1))
    np.testing.assert_array_equal(a, before)


@pytest.mark.parametrize("normal, reduce, ops, match", [
    (np.zeros((13, 8)), np.zeros((13, 8)), DARTS, "do not form a DARTS cell"),
    (np.zeros((14, 7)), np.zeros((14, 7)), DARTS, "7 columns but 8 operations"),
    (np.zeros(14), np.zeros(14), DARTS, "shape"),
    (np.full((14, 8), np.nan), np.zeros((14, 8)), DARTS, "NaN"),
    (np.zeros((14, 8)), np.zeros((9, 8)), DARTS, "same number of nodes"),
    (np.zeros((2, 1)), np.zeros((2, 1)), ("none",), "other than 'none'"),
    (np.zeros((2, 2)), np.zeros((2, 2)), ("x", "x"), "duplicates"),
])
def test_derivation_rejects_bad_input(normal, reduce, ops, match):
    with pytest.raises(ArchitectureError, match=match):
        derive_genotype(normal, reduce, ops)


def test_unknown_named_op_set():
    with pytest.raises(UnknownOperationError):
        derive_genotype(np.zeros((14, 7)), np.zeros((14, 7)), "nope")


# ---------------------------------------------------------------------------- Genotype / JSON


def test_json_round_trip():
    g = good_genotype()
    doc = g.to_dict()
    assert doc["format"] == "aca_keras.genotype" and doc["version"] == 1
    assert doc["normal"][0] == ["sep_conv_3x3", 0]
    assert Genotype.from_dict(doc) == g
    assert Genotype.from_json(g.to_json()) == g
    assert Genotype.from_json(json.dumps(doc).encode()) == g
    assert hash(Genotype.from_json(g.to_json())) == hash(g)
    # documents without the optional key use edges_per_node = 2
    del doc["edges_per_node"]
    assert Genotype.from_dict(doc) == g


def test_edges_within_a_node_are_canonicalised():
    g = good_genotype()
    swapped = list(g.normal)
    swapped[2], swapped[3] = swapped[3], swapped[2]
    h = Genotype(list(swapped), [2, 3, 4, 5], list(g.reduce), [2, 3, 4, 5])
    assert h == g
    assert h.normal[2:4] == (("dil_conv_3x3", 0), ("skip_connect", 2))


def normal_with(index: int, edge: list) -> list:
    """The good normal cell's edge list with edge ``index`` replaced."""
    edges = [list(e) for e in good_genotype().normal]
    edges[index] = edge
    return edges


def bad_doc(**changes):
    doc = good_genotype().to_dict()
    for key, value in changes.items():
        if value is KeyError:
            del doc[key]
        else:
            doc[key] = value
    return doc


@pytest.mark.parametrize("changes, error, match", [
    ({"format": "aca_keras.architecture"}, ArchitectureError, "format"),
    ({"format": KeyError}, ArchitectureError, "'format'"),
    ({"version": 2}, SchemaVersionError, "upgrade aca_keras"),
    ({"version": 0}, ArchitectureError, "version"),
    ({"normal_concat": KeyError}, ArchitectureError, "normal_concat"),
    ({"extra": 1}, ArchitectureError, "unknown key"),
    ({"normal": normal_with(5, ["warp_drive", 3])}, UnknownOperationError, "warp_drive"),
    ({"normal": normal_with(5, ["none", 3])}, ArchitectureError, "'none'"),
    ({"normal": normal_with(1, ["sep_conv_3x3", 2])}, ArchitectureError, "0 <= input < 2"),
    ({"normal": normal_with(1, ["sep_conv_3x3", -1])}, ArchitectureError, "0 <= input < 2"),
    ({"normal": normal_with(7, ["sep_conv_3x3", 5])}, ArchitectureError, "0 <= input < 5"),
    ({"normal": [["sep_conv_3x3", 0], ["sep_conv_3x3", 1]] * 3 + [["sep_conv_3x3", 0]]},
     ArchitectureError, "not a whole number of nodes"),
    ({"normal": [["sep_conv_3x3", 0], ["sep_conv_3x3", 0]] * 4},
     ArchitectureError, "more than once"),
    ({"normal": [["sep_conv_3x3", 0], ["sep_conv_3x3", 1]] * 3, "normal_concat": [2, 3, 4]},
     ArchitectureError, "same number"),
    ({"normal": [["sep_conv_3x3", 0.0], ["sep_conv_3x3", 1]] * 4},
     ArchitectureError, "pair"),
    ({"normal": [["sep_conv_3x3", True], ["sep_conv_3x3", 1]] * 4},
     ArchitectureError, "pair"),
    ({"normal": "sep_conv_3x3"}, ArchitectureError, "list"),
    ({"reduce_concat": [2, 3, 4, 6]}, ArchitectureError, "out of range"),
    ({"reduce_concat": [-1]}, ArchitectureError, "out of range"),
    ({"reduce_concat": []}, ArchitectureError, "non-empty"),
    ({"reduce_concat": [2, 2]}, ArchitectureError, "more than once"),
    ({"edges_per_node": 0}, ArchitectureError, "edges_per_node"),
])
def test_bad_documents_are_rejected(changes, error, match):
    with pytest.raises(error, match=match):
        Genotype.from_dict(bad_doc(**changes))


def test_bad_json_text():
    with pytest.raises(ArchitectureError, match="not valid JSON"):
        Genotype.from_json("{'normal': []}")
    with pytest.raises(ArchitectureError, match="JSON object"):
        Genotype.from_json("[1, 2]")


def test_construction_checks_structure():
    with pytest.raises(ArchitectureError, match="0 <= input < 3"):
        Genotype((("a", 0), ("a", 1), ("a", 3), ("a", 0)), (2, 3),
                 (("a", 0), ("a", 1), ("a", 0), ("a", 1)), (2, 3))
    g = Genotype((("a", 0), ("b", 1)), [2], (("c", 0), ("d", 1)), [2])
    assert g.nodes == 1 and g.normal_concat == (2,)
    with pytest.raises(UnknownOperationError):
        g.validate()  # names are checked against the registry on demand / on load


def test_cheap_import():
    code = ("import sys, aca_keras.space.genotype, aca_keras.space.architecture, aca_keras.channels.allocation; "
            "print(sorted(m for m in ('keras', 'tensorflow') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout.strip()
    assert out == "[]"
