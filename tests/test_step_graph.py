"""benchmarks/step_graph.py sorts the traced search step's operations into groups that add up."""

from __future__ import annotations

import json

import pytest
from conftest import script_module


@pytest.fixture(scope="module")
def step_graph():
    with script_module("benchmarks", "step_graph") as module:
        yield module


def test_composition_of_hand_made_types(step_graph):
    types = (["Const"] * 4 + ["ReadVariableOp"] * 3 + ["Conv2D", "ReluGrad"]
             + ["Softmax"])
    out = step_graph.graph_composition(types, dead_constants=2)
    assert out["total_ops"] == 10
    assert out["groups"] == {"per_weight_bookkeeping": 3, "candidate_op_compute": 2,
                             "constants": 4, "other": 1}
    assert sum(out["shares"].values()) == pytest.approx(1.0)
    assert out["shares"]["constants"] == pytest.approx(0.4)
    assert out["dead_constants"] == 2
    assert out["top_types"][0] == ("Const", 4)


@pytest.mark.slow  # 20-40 s: traces a supernet step (slow suite, with the benchmarks)
def test_tiny_supernet_step_graph(step_graph, tmp_path, capsys):
    out_json = tmp_path / "graph.json"
    code = step_graph.main(["--setting", "small", "--cells", "3", "--channels", "4",
                            "--image", "8", "--batch", "4", "--json", str(out_json)])
    assert code == 0
    printed = capsys.readouterr().out
    assert "command:" in printed and "machine:" in printed and "traced train_step" in printed
    report = json.loads(out_json.read_text())
    groups = report["groups"]
    assert sum(groups.values()) == report["total_ops"] > 1000
    # every group is present in a real step, and the dead constants are a part of the constants
    assert all(count > 0 for count in groups.values()), groups
    assert 0 < report["dead_constants"] <= groups["constants"]
    # one momentum update per weight tensor: the fused optimiser kernel
    assert report["type_counts"]["ResourceApplyKerasMomentum"] == report["weight_variables"]
    assert report["trace_s"] > 0
