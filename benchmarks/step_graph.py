"""Benchmark: what the traced search step is made of (why the first step takes what it takes).

The first search step traces ``SearchNetwork.train_step`` into a TensorFlow graph and
instantiates it; both cost about linearly in the number of graph operations (see
``benchmarks/README.md``, "How the figures moved"). This script traces the step of a
supernet at a named setting once (``tf.function(model.train_step).get_concrete_function``,
as ``search_step.py --breakdown`` does), times the tracing, and sorts the graph's operations
into four groups:

* **per-weight bookkeeping**: variable reads, BatchNorm moving-statistics assignments, the
  fused momentum update, weight decay, clipping (``L2Loss``) and the graph's placeholders;
* **constants**, and among them the *dead* ones (no consumer: created by TensorFlow's
  gradient and ``depthwise_conv2d`` wrappers and pruned only at instantiation);
* **candidate-op compute**: convolutions, BatchNorm, ReLU, pooling and their gradients;
* **other**: the mixed-edge contractions, slicing, the loss, the alpha step.

Usage::

    python benchmarks/step_graph.py                    # DARTS setting (8 cells, C = 16)
    python benchmarks/step_graph.py --setting small --json graph.json
    python benchmarks/step_graph.py --cells 3 --channels 4 --image 8 --batch 4   # tiny
"""

from __future__ import annotations

import argparse
import collections
import json
import shlex
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from search_step import REPO_ROOT, SETTINGS, _version, machine  # noqa: E402

if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))  # the working tree's aca_keras

#: operation types of each group (anything else is "other"; constants are their own group)
GROUPS: dict[str, tuple[str, ...]] = {
    "per_weight_bookkeeping": (
        "ReadVariableOp", "AssignVariableOp", "ResourceApplyKerasMomentum", "L2Loss",
        "Identity", "Placeholder"),
    "candidate_op_compute": (
        "Conv2D", "Conv2DBackpropInput", "Conv2DBackpropFilter", "DepthwiseConv2dNative",
        "DepthwiseConv2dNativeBackpropInput", "DepthwiseConv2dNativeBackpropFilter",
        "FusedBatchNormV3", "FusedBatchNormGradV3", "ZerosLike", "Relu", "ReluGrad",
        "SpaceToBatchND", "BatchToSpaceND", "MaxPool", "AvgPool", "MaxPoolGrad", "AvgPoolGrad",
        "ShapeN", "Pad"),
}


def graph_composition(operation_types: list[str], dead_constants: int) -> dict[str, Any]:
    """Group counts (and shares) of a graph given each operation's type; pure, tested."""
    counts = collections.Counter(operation_types)
    total = len(operation_types)
    groups = {name: sum(counts[t] for t in types) for name, types in GROUPS.items()}
    groups["constants"] = counts["Const"]
    groups["other"] = total - sum(groups.values())
    return {
        "total_ops": total,
        "groups": groups,
        "shares": {name: (n / total if total else 0.0) for name, n in groups.items()},
        "dead_constants": dead_constants,
        "top_types": counts.most_common(15),
        "type_counts": dict(counts),
    }


def trace_step(cells: int, channels: int, nodes: int, batch: int, image: int,
               ops: str, layout: str = "grouped") -> dict[str, Any]:
    """Build and compile the supernet, trace its ``train_step`` once, return the composition
    of the traced graph and the tracing time."""
    import numpy as np
    import tensorflow as tf

    from aca_keras.models.supernet import SearchNetwork

    start = time.perf_counter()
    network = SearchNetwork((image, image, 3), 10, cells=cells, channels=channels,
                            nodes=nodes, ops=ops, layout=layout)
    network.compile()
    network.ensure_built()
    build_s = time.perf_counter() - start
    rng = np.random.default_rng(0)
    x = tf.constant(rng.uniform(0, 255, (batch, image, image, 3)).astype("float32"))
    y = tf.constant(rng.integers(0, 10, batch))
    start = time.perf_counter()
    graph = tf.function(network.train_step, jit_compile=False).get_concrete_function(
        ((x, y), (x, y))).graph
    trace_s = time.perf_counter() - start
    operations = graph.get_operations()
    dead = sum(1 for op in operations if op.type == "Const" and not op.outputs[0].consumers())
    out = graph_composition([op.type for op in operations], dead)
    out.update(build_s=round(build_s, 2), trace_s=round(trace_s, 2),
               weight_variables=len(network.weight_variables),
               trace_ms_per_op=round(1000 * trace_s / max(1, len(operations)), 3))
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--setting", choices=sorted(SETTINGS), default="darts")
    parser.add_argument("--cells", type=int, help="override the setting's cells")
    parser.add_argument("--channels", type=int, help="override the setting's channels")
    parser.add_argument("--image", type=int, help="override the setting's image size")
    parser.add_argument("--batch", type=int, help="override the setting's batch")
    parser.add_argument("--ops", default="aca", help="op set (default aca, as search())")
    parser.add_argument("--layout", default="grouped", choices=("grouped", "per_edge"),
                        help="the supernet's edge layout (default grouped, as search())")
    parser.add_argument("--json", type=Path, help="also write the result to this JSON file")
    args = parser.parse_args(argv)
    setting = SETTINGS[args.setting]
    params = dict(cells=args.cells or setting.cells, channels=args.channels or setting.channels,
                  nodes=setting.nodes, batch=args.batch or setting.batch,
                  image=args.image or setting.image, ops=args.ops, layout=args.layout)
    command = shlex.join([sys.executable] + sys.argv) if argv is None else \
        shlex.join(["benchmarks/step_graph.py", *argv])
    print(f"command: {command}")
    print(f"machine: {json.dumps(machine())}")
    print(f"versions: tensorflow-cpu {_version('tensorflow-cpu')}, "
          f"tensorflow {_version('tensorflow')}, keras {_version('keras')}")
    print(f"setting: {json.dumps(params)}")
    result = trace_step(**params)
    print(f"traced train_step: {result['total_ops']:,} graph operations in "
          f"{result['trace_s']:.1f} s ({result['trace_ms_per_op']} ms per operation; "
          f"{result['weight_variables']} weight tensors)")
    for name, count in result["groups"].items():
        extra = (f", {result['dead_constants']:,} of them dead"
                 if name == "constants" else "")
        print(f"  {name:24s}{count:>8,}  {100 * result['shares'][name]:5.1f} %{extra}")
    print("most frequent types: " + ", ".join(f"{t} {n:,}" for t, n in result["top_types"]))
    if args.json:
        args.json.write_text(json.dumps({"command": command, "machine": machine(),
                                         "setting": params, **result}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
