"""Benchmark: inference latency and throughput of one derived network, per runtime, on the CPU.

One "searched-like" ACA architecture (4 nodes per cell, a mix of operations and of k_e from 0
to C, see :func:`searched_like_architecture`) is built as the DARTS evaluation-style network
at ``--cells 8 --channels 16`` on 32x32x3 images with 10 classes (the search-size network,
small enough for a shared CPU), exported with :func:`aca_keras.exporting.export` (verified),
and timed with:

* ``keras_predict``: ``inference_model().predict(x, batch_size=n)``;
* ``tf_function``: ``tf.function(lambda x: model(x, training=False))`` with a dynamic batch;
* ``savedmodel``: the exported SavedModel, ``tf.saved_model.load(...).signatures["serving_default"]``;
* ``onnxruntime``: the exported ONNX file in ONNX Runtime (``--threads`` intra-op threads,
  sequential execution, all graph optimisations), in a process that never imports TensorFlow;
* ``tflite``: the exported TFLite file in ``tf.lite.Interpreter`` (``--threads`` threads,
  XNNPACK), tensors resized once per batch size.

Every backend runs in a fresh process (so thread pools and memory do not leak from one to the
next); each call is timed end to end (numpy input in, numpy output out) with
``time.perf_counter``; the table reports the median and the 90th percentile over
``--reps`` timed calls after ``--warmup`` untimed ones, images per second (batch / median) and
the ratio to ``keras_predict`` (> 1: faster than Keras predict). With ``--rounds R`` every
backend runs R times, interleaved, and the fastest round counts (other load on a shared
machine only ever slows a round down). Peak RSS is ``ru_maxrss`` of the backend's process
alone (``os.wait4``; the parent never imports TensorFlow, so the child does not inherit a large
high-water mark at ``exec``); it includes the runtime and the model. ONNX Runtime and TFLite
use ``--threads`` intra-op threads (default 2); the TensorFlow backends keep TensorFlow's own
thread defaults unless ``--tf-threads`` is given (restricting them made them slower here).

Usage::

    python benchmarks/inference.py                    # batch 1 and 64, full repetitions
    python benchmarks/inference.py --quick            # a smoke run (few repetitions)
    python benchmarks/inference.py --json results.json --threads 2
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import os
import platform
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]
BACKENDS = ("keras_predict", "tf_function", "savedmodel", "onnxruntime", "tflite")
ARTIFACT = {"keras_predict": "model.keras", "tf_function": "model.keras",
            "savedmodel": "saved_model", "onnxruntime": "model.onnx", "tflite": "model.tflite"}


# ---------------------------------------------------------------------------- the model


def searched_like_architecture():
    """A fixed architecture shaped like an ACA search result (C = 16, 4 nodes per cell).

    Normal cell: mostly separable/dilated convolutions with k_e from 0 (pure skip) to 16
    (full DARTS edge); reduction cell: pools and convolutions, one k_e = 0 edge.
    """
    from aca_keras.layers import ops
    from aca_keras.space.architecture import Architecture, CellSpec, EdgeSpec

    normal = CellSpec(edges=(
        EdgeSpec(0, 0, "sep_conv_3x3", 16), EdgeSpec(0, 1, "sep_conv_3x3", 9),
        EdgeSpec(1, 0, "sep_conv_3x3", 16), EdgeSpec(1, 1, "dil_conv_3x3", 5),
        EdgeSpec(2, 1, "sep_conv_5x5", 12), EdgeSpec(2, 0, "max_pool_3x3", 0),
        EdgeSpec(3, 2, "dil_conv_3x3", 7), EdgeSpec(3, 0, "sep_conv_3x3", 16),
    ), concat=(2, 3, 4, 5))
    reduce = CellSpec(edges=(
        EdgeSpec(0, 0, "max_pool_3x3", 16), EdgeSpec(0, 1, "max_pool_3x3", 16),
        EdgeSpec(1, 2, "dil_conv_5x5", 4), EdgeSpec(1, 0, "max_pool_3x3", 10),
        EdgeSpec(2, 2, "sep_conv_3x3", 11), EdgeSpec(2, 1, "avg_pool_3x3", 0),
        EdgeSpec(3, 3, "dil_conv_3x3", 8), EdgeSpec(3, 2, "max_pool_3x3", 16),
    ), concat=(2, 3, 4, 5))
    return Architecture(normal, reduce, 16, ops.ACA_OPS, name="searched_like",
                        provenance={"note": "benchmark stand-in for a search result"})


def prepare(workdir: Path, cells: int, channels: int) -> dict[str, Any]:
    """Build the model, save it, export it to every format; returns facts about them."""
    import numpy as np

    from aca_keras.exporting import export
    from aca_keras.models.derived import build_model

    model = build_model(searched_like_architecture(), (32, 32, 3), 10, cells=cells,
                        channels=channels, auxiliary=True, drop_path=0.2,
                        mean=(0.4914, 0.4822, 0.4465), std=(0.2470, 0.2435, 0.2616))
    model.save(workdir / "model.keras")
    sample = np.random.default_rng(0).uniform(0, 255, (64, 32, 32, 3)).astype("float32")
    facts: dict[str, Any] = {
        "parameters": int(model.inference_model().count_params()),
        "multiply_adds_per_image": int(model.flops(batch_size=1)),
        "exports": {},
    }
    for fmt, name in (("savedmodel", "saved_model"), ("onnx", "model.onnx"),
                      ("tflite", "model.tflite")):
        start = time.perf_counter()
        result = export(model, workdir / name, fmt, sample_inputs=sample)
        size = (sum(f.stat().st_size for f in result.path.rglob("*") if f.is_file())
                if result.path.is_dir() else result.path.stat().st_size)
        facts["exports"][fmt] = {"seconds": round(time.perf_counter() - start, 2),
                                 "max_abs_diff": result.max_abs_diff,
                                 "top1_agreement": result.top1_agreement,
                                 "checked_images": result.checked_images,
                                 "bytes": size}
    return facts


# ------------------------------------------------------------------------------ workers


def _tf(tf_threads: int):
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import tensorflow as tf

    if tf_threads > 0:
        tf.config.threading.set_intra_op_parallelism_threads(tf_threads)
        tf.config.threading.set_inter_op_parallelism_threads(tf_threads)
    return tf


def _make_runner(backend: str, artifact: Path, threads: int, tf_threads: int):
    """``(load_seconds, run(x) -> numpy)`` for one backend."""
    start = time.perf_counter()
    if backend == "onnxruntime":  # no TensorFlow in this process
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        session = ort.InferenceSession(str(artifact), options,
                                       providers=["CPUExecutionProvider"])

        def run(x):
            return session.run(["logits"], {"images": x})[0]

        return time.perf_counter() - start, run

    tf = _tf(tf_threads)
    if backend in ("keras_predict", "tf_function"):
        import keras

        import aca_keras.models.derived  # noqa: F401  (registers the layers)

        model = keras.saving.load_model(artifact, compile=False).inference_model()
        if backend == "keras_predict":
            def run(x):
                return model.predict(x, batch_size=len(x), verbose=0)
        else:
            fn = tf.function(lambda x: model(x, training=False),
                             input_signature=[tf.TensorSpec((None, 32, 32, 3), tf.float32)])

            def run(x):
                return fn(tf.constant(x)).numpy()
    elif backend == "savedmodel":
        serve = tf.saved_model.load(str(artifact)).signatures["serving_default"]

        def run(x):
            return serve(images=tf.constant(x))["logits"].numpy()
    elif backend == "tflite":
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            interpreter = tf.lite.Interpreter(model_path=str(artifact), num_threads=threads)
        inp = interpreter.get_input_details()[0]["index"]
        out = interpreter.get_output_details()[0]["index"]
        current = [None]

        def run(x):
            if current[0] != x.shape:
                interpreter.resize_tensor_input(inp, x.shape)
                interpreter.allocate_tensors()
                current[0] = x.shape
            interpreter.set_tensor(inp, x)
            interpreter.invoke()
            return interpreter.get_tensor(out).copy()
    else:
        raise ValueError(f"unknown backend {backend!r}")
    return time.perf_counter() - start, run


def worker(backend: str, artifact: Path, threads: int, tf_threads: int, batches: list[int],
           reps: dict[int, int], warmup: dict[int, int]) -> dict[str, Any]:
    """Time one backend (runs in its own process); returns JSON-able results."""
    import numpy as np

    load_s, run = _make_runner(backend, artifact, threads, tf_threads)
    rng = np.random.default_rng(0)
    results: dict[str, Any] = {"backend": backend, "load_s": load_s, "batches": {}}
    for n in batches:
        x = rng.uniform(0, 255, (n, 32, 32, 3)).astype("float32")
        start = time.perf_counter()
        y = run(x)
        first = time.perf_counter() - start
        assert y.shape == (n, 10), y.shape
        for _ in range(warmup[n]):
            run(x)
        times = []
        for _ in range(reps[n]):
            start = time.perf_counter()
            run(x)
            times.append(time.perf_counter() - start)
        median = statistics.median(times)
        results["batches"][str(n)] = {
            "first_call_ms": 1e3 * first,
            "median_ms": 1e3 * median,
            "p90_ms": 1e3 * float(np.percentile(times, 90)),
            "images_per_s": n / median,
            "reps": reps[n],
            "checksum": float(np.sum(y)),
        }
    results["vm_hwm_mb"] = _vm_hwm_mb()
    return results


def _vm_hwm_mb() -> float | None:
    """Peak RSS of this process's address space (``VmHWM``), in MB."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


# ------------------------------------------------------------------------------- driver


def _child(args: list[str]) -> tuple[dict[str, Any], float]:
    """Run this script with ``args`` in a fresh process: (its last JSON line, its peak RSS MB).

    The peak RSS is ``ru_maxrss`` from ``os.wait4``; this parent never imports TensorFlow, so
    what the child inherits at ``exec`` (a few tens of MB) does not hide its own peak.
    """
    cmd = [sys.executable, str(Path(__file__).resolve()), *args]
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    with tempfile.TemporaryFile() as err:
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=err, env=env)
        out = proc.stdout.read()
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
        if proc.returncode != 0:
            err.seek(0)
            raise RuntimeError(f"{shlex.join(args[:2])} failed:\n{err.read().decode()[-3000:]}")
    return json.loads(out.decode().strip().splitlines()[-1]), usage.ru_maxrss / 1024  # KB


def _run_worker(backend: str, workdir: Path, args: argparse.Namespace) -> dict[str, Any]:
    result, peak = _child(["--worker", backend, "--artifact", str(workdir / ARTIFACT[backend]),
                           "--threads", str(args.threads), "--tf-threads", str(args.tf_threads),
                           "--reps-1", str(args.reps_1), "--reps-64", str(args.reps_64),
                           "--warmup", str(args.warmup)])
    result["peak_rss_mb"] = peak
    return result


def _machine() -> dict[str, Any]:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return {"cpu": cpu, "logical_cores_available": cores, "cpu_count": os.cpu_count(),
            "platform": platform.platform(), "load_average": _load()}


def _load() -> list[float] | None:
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except OSError:
        return None


def _versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for dist in ("aca-keras", "tensorflow-cpu", "tensorflow", "keras", "onnxruntime", "onnx",
                 "tf2onnx", "numpy"):
        try:
            out[dist] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            pass
    return out


def _best(rounds: list[dict[str, Any]], batches: list[int]) -> dict[str, Any]:
    """Per batch size, the round with the lowest median; the highest peak RSS of all."""
    best = dict(rounds[0])
    best["batches"] = {str(n): min((r["batches"][str(n)] for r in rounds),
                                   key=lambda b: b["median_ms"]) for n in batches}
    best["peak_rss_mb"] = max(r["peak_rss_mb"] for r in rounds)
    best["load_s"] = min(r["load_s"] for r in rounds)
    best["rounds"] = rounds
    return best


def _table(results: dict[str, dict[str, Any]], batches: list[int]) -> str:
    base = results.get("keras_predict")
    head = "| backend |"
    rule = "| --- |"
    for n in batches:
        head += f" batch {n}: median ms (p90) | images/s | x predict |"
        rule += " ---: | ---: | ---: |"
    head += " peak RSS MB | load s |"
    rule += " ---: | ---: |"
    lines = [head, rule]
    for name, r in results.items():
        row = f"| {name} |"
        for n in batches:
            b = r["batches"][str(n)]
            ratio = (base["batches"][str(n)]["median_ms"] / b["median_ms"]) if base else float("nan")
            row += (f" {b['median_ms']:.2f} ({b['p90_ms']:.2f}) | {b['images_per_s']:.0f} |"
                    f" {ratio:.2f} |")
        row += f" {r['peak_rss_mb']:.0f} | {r['load_s']:.2f} |"
        lines.append(row)
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="few repetitions (smoke run)")
    parser.add_argument("--threads", type=int, default=2,
                        help="intra-op threads of ONNX Runtime and TFLite (default 2)")
    parser.add_argument("--tf-threads", type=int, default=0,
                        help="intra- and inter-op threads of the TensorFlow backends "
                             "(default 0: TensorFlow's own defaults)")
    parser.add_argument("--rounds", type=int, default=2,
                        help="run every backend this many times, interleaved, and keep each "
                             "backend's fastest round (less noise from other load)")
    parser.add_argument("--cells", type=int, default=8)
    parser.add_argument("--channels", type=int, default=16)
    parser.add_argument("--reps-1", type=int, default=200, help="timed calls at batch 1")
    parser.add_argument("--reps-64", type=int, default=30, help="timed calls at batch 64")
    parser.add_argument("--warmup", type=int, default=10, help="untimed calls per batch size")
    parser.add_argument("--backends", default=",".join(BACKENDS),
                        help=f"comma-separated subset of {','.join(BACKENDS)}")
    parser.add_argument("--json", metavar="PATH", help="also write all results as JSON")
    parser.add_argument("--worker", choices=BACKENDS, help=argparse.SUPPRESS)
    parser.add_argument("--prepare", metavar="DIR", help=argparse.SUPPRESS)
    parser.add_argument("--artifact", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.quick:
        args.reps_1, args.reps_64, args.warmup, args.rounds = 20, 5, 3, 1
    batches = [1, 64]
    if args.worker:
        result = worker(args.worker, Path(args.artifact), args.threads, args.tf_threads,
                        batches, {1: args.reps_1, 64: args.reps_64},
                        {1: args.warmup, 64: max(1, args.warmup // 3)})
        print(json.dumps(result))
        return 0
    if args.prepare:
        print(json.dumps(prepare(Path(args.prepare), args.cells, args.channels)))
        return 0

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    backends = [b.strip() for b in args.backends.split(",") if b.strip()]
    unknown = sorted(set(backends) - set(BACKENDS))
    if unknown:
        parser.error(f"unknown backends {unknown}; choose from {', '.join(BACKENDS)}")
    command = shlex.join([Path(sys.executable).name, *sys.argv])
    machine = _machine()
    print(f"command: {command}")
    print(f"machine: {machine['cpu']}, {machine['logical_cores_available']} logical cores "
          f"available, load average at start {machine['load_average']}")
    print(f"versions: {json.dumps(_versions())}")
    print(f"repetitions: batch 1: {args.warmup} warm-up + {args.reps_1} timed; batch 64: "
          f"{max(1, args.warmup // 3)} warm-up + {args.reps_64} timed; best of {args.rounds} "
          f"round(s); ONNX Runtime / TFLite threads: {args.threads}; TensorFlow threads: "
          f"{args.tf_threads or 'default'}")
    with tempfile.TemporaryDirectory(prefix="aca_inference_bench-") as tmp:
        workdir = Path(tmp)
        facts, _ = _child(["--prepare", str(workdir), "--cells", str(args.cells),
                           "--channels", str(args.channels)])
        print(f"model: searched-like ACA architecture, cells={args.cells}, "
              f"channels={args.channels}, 32x32x3, 10 classes; "
              f"{facts['parameters']:,} parameters, "
              f"{facts['multiply_adds_per_image'] / 1e6:.1f} M multiply-adds per image")
        for fmt, e in facts["exports"].items():
            print(f"export {fmt}: {e['seconds']} s, {e['bytes'] / 1e6:.2f} MB, max abs diff "
                  f"{e['max_abs_diff']:.2g} on {e['checked_images']} images, top-1 agreement "
                  f"{e['top1_agreement']:.0%}")
        rounds: dict[str, list[dict[str, Any]]] = {b: [] for b in backends}
        for r in range(args.rounds):
            for backend in backends:
                result = _run_worker(backend, workdir, args)
                rounds[backend].append(result)
                print(f"  round {r + 1} {backend}: median "
                      + ", ".join(f"batch {n} {result['batches'][str(n)]['median_ms']:.2f} ms"
                                  for n in batches), flush=True)
        results = {b: _best(rs, batches) for b, rs in rounds.items()}
    machine["load_average_end"] = _load()
    print()
    print(_table(results, batches))
    print(f"\nload average at end: {machine['load_average_end']}")
    if args.json:
        Path(args.json).write_text(json.dumps(
            {"command": command, "machine": machine, "versions": _versions(), "facts": facts,
             "results": results, "threads": args.threads, "tf_threads": args.tf_threads,
             "rounds": args.rounds}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
