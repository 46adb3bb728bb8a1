"""Benchmark: one DARTS search step of aca_keras against the PyTorch reference, on the CPU.

A search step is one ``SearchNetwork.train_step`` as ``model.fit`` runs it: one first-order
alpha update on a validation batch plus one weight update on a training batch. The step is
run through the model's own ``make_train_function()`` on a ``tf.data`` iterator (the same
traced function and input path as ``fit``), with ``jit_compile=False``.

For every setting the script reports, for aca_keras and for the PyTorch reference
(``../shared/bench/torch_darts_ref.py``, run as a subprocess with the same threads):

* the median milliseconds per step over ``--steps`` timed steps after ``--warmup`` warm-up
  steps, and images per second (both batches counted);
* aca_keras only: the time to build and compile the supernet and the time to the first
  step (tracing + graph optimisation + the step itself);
* the peak resident memory of each process (``ru_maxrss`` of that process alone, taken with
  ``os.wait4``), and TensorFlow's own memory info where the device supports it;
* the ratio aca_keras / reference ms per step (< 1: aca_keras is faster).

Each measurement runs in a fresh process, so peak memory and thread settings do not leak from
one setting to the next. ``--breakdown`` also times the parts of a step (forward, the
gradients, the optimiser updates) separately.

Usage::

    python benchmarks/search_step.py                         # both settings, 20 steps
    python benchmarks/search_step.py --settings small --steps 3 --skip-torch
    python benchmarks/search_step.py --json results.json --breakdown

PyTorch is a benchmark-only dependency: ``pip install torch==2.13.0`` (CPU build).
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib.metadata
import json
import os
import platform
import shlex
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("ACA_SHARED_DIR", REPO_ROOT.parent / "shared"))
DEFAULT_REFERENCE = SHARED / "bench" / "torch_darts_ref.py"


@dataclass(frozen=True)
class Setting:
    """One supernet size. ``batch`` is the batch of each half (weights, alphas)."""

    name: str
    cells: int
    channels: int
    nodes: int
    batch: int
    image: int
    classes: int = 10
    ops: str = "aca"

    def reference_args(self) -> list[str]:
        """Arguments of ``torch_darts_ref.py`` for this setting (it always uses 4 nodes,
        32x32x3 images and 10 classes)."""
        return ["--ops", self.ops, "--layers", str(self.cells), "--channels",
                str(self.channels), "--batch", str(self.batch)]


SETTINGS = {
    # The published DARTS search setting.
    "darts": Setting("darts", cells=8, channels=16, nodes=4, batch=64, image=32),
    # A small supernet. The images stay 32x32 because the reference has no image-size
    # option; the ratio is only meaningful for identical work.
    "small": Setting("small", cells=5, channels=8, nodes=4, batch=32, image=32),
}


# ------------------------------------------------------------------------------------ child


def _set_tf_threads(threads: int) -> None:
    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(threads)
    tf.config.threading.set_inter_op_parallelism_threads(threads)


def _tf_memory_info() -> dict[str, Any] | str:
    import tensorflow as tf

    try:
        info = tf.config.experimental.get_memory_info("CPU:0")
    except (ValueError, RuntimeError, tf.errors.OpError) as exc:
        return f"unavailable on CPU:0 ({type(exc).__name__})"
    return {"current_mib": info["current"] / 2**20, "peak_mib": info["peak"] / 2**20}


def _median_ms(fn, steps: int, warmup: int) -> tuple[float, list[float]]:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        fn()
        times.append(1000 * (time.perf_counter() - start))
    return statistics.median(times), times


def run_child(setting: Setting, steps: int, warmup: int, threads: int,
              breakdown: bool, graph_optimizations: bool = False,
              layout: str = "grouped") -> dict[str, Any]:
    """Measure one setting in this process (called in a fresh subprocess)."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    if str(REPO_ROOT) not in sys.path:
        sys.path.insert(0, str(REPO_ROOT))  # the working tree's aca_keras
    import numpy as np
    import tensorflow as tf

    _set_tf_threads(threads)
    import keras

    from aca_keras.models.supernet import SearchNetwork

    keras.utils.set_random_seed(0)
    rng = np.random.default_rng(0)
    shape = (setting.batch, setting.image, setting.image, 3)

    def batch():
        x = tf.constant(rng.uniform(0, 255, shape).astype("float32"))
        y = tf.constant(rng.integers(0, setting.classes, (setting.batch,)).astype("int32"))
        return x, y

    data = (batch(), batch())  # ((x_w, y_w), (x_a, y_a)), as the search pipelines yield

    start = time.perf_counter()
    model = SearchNetwork((setting.image, setting.image, 3), setting.classes,
                          cells=setting.cells, channels=setting.channels, nodes=setting.nodes,
                          ops=setting.ops, layout=layout)
    # The reference's settings: SGD 0.025 / momentum 0.9 / wd 3e-4 / clip 5 on the weights,
    # Adam 3e-4 (0.5, 0.999) / wd 1e-3 on the alphas, first order.
    model.compile(keras.optimizers.SGD(0.025, momentum=0.9),
                  keras.optimizers.Adam(3e-4, beta_1=0.5, beta_2=0.999), order=1,
                  weight_decay=3e-4, alpha_weight_decay=1e-3, grad_clip=5.0,
                  jit_compile=False, graph_optimizations=graph_optimizations)
    build_s = time.perf_counter() - start

    iterator = iter(tf.data.Dataset.from_tensors(data).repeat())
    model.make_train_function()
    train_function = model.train_function

    def step() -> float:
        logs = train_function(iterator)
        return float(logs["loss"])  # waits for the step, as fit's progress bar does

    start = time.perf_counter()
    step()
    first_step_s = time.perf_counter() - start
    median, times = _median_ms(step, steps, warmup)
    result: dict[str, Any] = {
        "impl": "aca_keras", "setting": setting.name,
        "ms_per_step": round(median, 2),
        "ms_min": round(min(times), 2), "ms_max": round(max(times), 2),
        "images_per_s": round(2 * setting.batch / (median / 1000), 1),
        "build_s": round(build_s, 2), "first_step_s": round(first_step_s, 2),
        "params": int(sum(np.prod(v.shape) for v in model.weight_variables)),
        "tf_memory": _tf_memory_info(),
        "times_ms": [round(t, 2) for t in times],
        "versions": {"tensorflow": tf.__version__, "keras": keras.__version__},
    }
    if breakdown:
        result["breakdown"] = _breakdown(model, data, steps, warmup, train_function, iterator)
    return result


def _breakdown(model, data, steps: int, warmup: int, train_function, iterator
               ) -> dict[str, Any]:
    """Median ms of the parts of a step, each as its own ``tf.function`` (jit off)."""
    import tensorflow as tf

    (x_w, y_w), (x_a, y_a) = data
    alphas = model.alpha_variables
    weights = model.weight_variables

    def loss_on(x, y):
        return model.loss(y, model(x, training=True))

    @tf.function(jit_compile=False)
    def forward():
        return loss_on(x_a, y_a)

    @tf.function(jit_compile=False)
    def alpha_gradients():
        with tf.GradientTape() as tape:
            loss = loss_on(x_a, y_a)
        return tape.gradient(loss, alphas)

    @tf.function(jit_compile=False)
    def alpha_step():
        return model.architect.alpha_step(x_w, y_w, x_a, y_a)[0]

    @tf.function(jit_compile=False)
    def weight_gradients():
        with tf.GradientTape() as tape:
            loss = loss_on(x_w, y_w)
        return tape.gradient(loss, weights)

    @tf.function(jit_compile=False)
    def weight_step():
        return model.architect.weight_step(x_w, y_w)[0]

    parts = {"forward": forward, "alpha_gradients": alpha_gradients, "alpha_step": alpha_step,
             "weight_gradients": weight_gradients, "weight_step": weight_step}
    out: dict[str, Any] = {}
    for name, fn in parts.items():
        start = time.perf_counter()
        fn()
        trace_s = time.perf_counter() - start
        median, _ = _median_ms(lambda fn=fn: tf.nest.map_structure(lambda t: t.numpy(), fn()),
                               steps, warmup)
        out[name] = {"ms": round(median, 2), "first_call_s": round(trace_s, 2)}
    median, _ = _median_ms(lambda: float(train_function(iterator)["loss"]), steps, warmup)
    out["train_step"] = {"ms": round(median, 2)}
    out["derived_ms"] = {
        "backward_for_alphas": round(out["alpha_gradients"]["ms"] - out["forward"]["ms"], 2),
        "alpha_update": round(out["alpha_step"]["ms"] - out["alpha_gradients"]["ms"], 2),
        "backward_for_weights": round(out["weight_gradients"]["ms"] - out["forward"]["ms"], 2),
        "clip_decay_update": round(out["weight_step"]["ms"] - out["weight_gradients"]["ms"], 2),
    }
    graph = tf.function(model.train_step, jit_compile=False).get_concrete_function(data).graph
    out["train_step_graph_ops"] = len(graph.get_operations())
    out["weight_variables"] = len(weights)
    return out


# ----------------------------------------------------------------------------------- parent


def _run_measured(command: list[str], timeout: float) -> tuple[int, str, str, float]:
    """Run ``command``; returns (exit code, stdout, stderr, that process's peak RSS in MiB).

    The child is reaped with ``os.wait4``, which gives the resource usage of that one
    process (``RUSAGE_CHILDREN`` would mix all children). It is killed after ``timeout``.
    """
    with tempfile.TemporaryFile(mode="w+") as err:
        proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=err, text=True,
                                cwd=REPO_ROOT)
        timer = threading.Timer(timeout, proc.kill)
        timer.start()
        try:
            assert proc.stdout is not None
            stdout = proc.stdout.read()
            _, status, usage = os.wait4(proc.pid, 0)
            proc.returncode = os.waitstatus_to_exitcode(status)
        except BaseException:
            proc.kill()
            raise
        finally:
            timer.cancel()
            if proc.stdout is not None:
                proc.stdout.close()
        err.seek(0)
        stderr = err.read()
    if proc.returncode == -9:
        stderr += f"\n(killed: it ran longer than --timeout {timeout:g} s)"
    # ru_maxrss is in KiB on Linux.
    return proc.returncode, stdout, stderr, usage.ru_maxrss / 1024


def _last_json(stdout: str) -> dict[str, Any] | None:
    for line in reversed(stdout.strip().splitlines()):
        line = line.strip()
        if line.startswith("{"):
            try:
                return json.loads(line)
            except json.JSONDecodeError:
                return None
    return None


def _measure(command: list[str], what: str, timeout: float) -> dict[str, Any]:
    code, stdout, stderr, rss = _run_measured(command, timeout)
    result = _last_json(stdout)
    if code != 0 or result is None:
        tail = "\n".join(stderr.strip().splitlines()[-15:])
        raise RuntimeError(f"{what} failed (exit code {code}): {shlex.join(command)}\n{tail}")
    result["peak_rss_mib"] = round(rss, 1)
    return result


def machine() -> dict[str, Any]:
    """CPU model, core counts and load average (the machine may be shared)."""
    model = platform.processor() or "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:
        usable = os.cpu_count()
    load = [round(x, 2) for x in os.getloadavg()] if hasattr(os, "getloadavg") else None
    return {"cpu": model, "logical_cpus": os.cpu_count(), "usable_cpus": usable,
            "load_average": load, "platform": platform.platform(),
            "python": platform.python_version()}


def _version(distribution: str) -> str | None:
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return None


def _format_row(setting: str, r: dict[str, Any]) -> str:
    first = f"{r['first_step_s']:.1f}" if "first_step_s" in r else "-"
    build = f"{r['build_s']:.1f}" if "build_s" in r else "-"
    spread = (f"[{r['ms_min']:.0f}-{r['ms_max']:.0f}]" if "ms_min" in r else "")
    return (f"{setting:<7} {r['impl']:<18} {r['ms_per_step']:>9.1f} {spread:>13} "
            f"{r['images_per_s']:>9.1f} {build:>7} {first:>8} {r['peak_rss_mib']:>9.0f}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="Median ms per DARTS search step: aca_keras vs the PyTorch reference.")
    parser.add_argument("--steps", type=int, default=20, help="timed steps (default 20)")
    parser.add_argument("--warmup", type=int, default=3,
                        help="warm-up steps before timing (default 3); aca_keras also runs "
                             "its first (tracing) step before these")
    parser.add_argument("--settings", default="darts,small",
                        help=f"comma-separated, from {', '.join(SETTINGS)} (default darts,small)")
    parser.add_argument("--threads", type=int, default=2,
                        help="TF intra- and inter-op threads; torch.set_num_threads (default 2)")
    parser.add_argument("--json", type=Path, help="also write all results to this JSON file")
    parser.add_argument("--graph-optimizations", action="store_true",
                        help="run TensorFlow's graph optimiser on the step "
                             "(SearchNetwork.compile(graph_optimizations=True)); off by "
                             "default, as in the package")
    parser.add_argument("--skip-torch", action="store_true",
                        help="do not run the PyTorch reference")
    parser.add_argument("--reference", type=Path, default=DEFAULT_REFERENCE,
                        help="the PyTorch reference script (default ../shared/bench/"
                             "torch_darts_ref.py)")
    parser.add_argument("--breakdown", action="store_true",
                        help="also time forward / gradients / optimiser updates separately")
    parser.add_argument("--timeout", type=float, default=3600,
                        help="seconds allowed per measurement process (default 3600)")
    parser.add_argument("--layout", choices=("grouped", "per_edge"), default="grouped",
                        help="the supernet's edge layout (default grouped, as search(); "
                        "per_edge: the layout before it, for A/B runs)")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.steps < 1 or args.warmup < 0 or args.threads < 1:
        parser.error("--steps and --threads must be >= 1, --warmup >= 0")
    if args.child:
        setting = Setting(**json.loads(args.child))
        result = run_child(setting, args.steps, args.warmup, args.threads, args.breakdown,
                           args.graph_optimizations, args.layout)
        print(json.dumps(result), flush=True)
        return 0

    names = [s.strip() for s in args.settings.split(",") if s.strip()]
    unknown = [s for s in names if s not in SETTINGS]
    if unknown or not names:
        parser.error(f"unknown setting(s) {unknown}; choose from {', '.join(SETTINGS)}")
    if not args.skip_torch and not args.reference.is_file():
        parser.error(f"the PyTorch reference {args.reference} does not exist; pass "
                     "--reference PATH or --skip-torch")
    if not args.skip_torch and _version("torch") is None:
        parser.error("PyTorch is not installed (pip install torch==2.13.0), or pass --skip-torch")

    info = machine()
    command = shlex.join([Path(sys.executable).name, *sys.argv])
    print(f"command:  {command}")
    print(f"machine:  {info['cpu']}; {info['logical_cpus']} logical CPUs "
          f"({info['usable_cpus']} usable); load average {info['load_average']} at start")
    tf_version = _version("tensorflow-cpu") or _version("tensorflow")
    versions = {"python": info["python"], "tensorflow": tf_version,
                "keras": _version("keras"), "torch": _version("torch")}
    print("versions: " + ", ".join(f"{k} {v}" for k, v in versions.items()))
    print(f"protocol: {args.warmup} warm-up + {args.steps} timed steps per process, median; "
          f"threads {args.threads} (TF intra/inter-op, torch.set_num_threads); aca_keras "
          "runs 1 first (tracing) step before the warm-up; jit_compile=False; first order; "
          f"op set aca; graph optimiser {'on' if args.graph_optimizations else 'off'}; "
          f"supernet layout {args.layout}")
    print(flush=True)

    results: list[dict[str, Any]] = []
    for name in names:
        setting = SETTINGS[name]
        print(f"[{name}] {dataclasses.asdict(setting)}", flush=True)
        child = [sys.executable, str(Path(__file__).resolve()), "--child",
                 json.dumps(dataclasses.asdict(setting)), "--steps", str(args.steps),
                 "--warmup", str(args.warmup), "--threads", str(args.threads),
                 "--layout", args.layout]
        if args.graph_optimizations:
            child.append("--graph-optimizations")
        if args.breakdown:
            child.append("--breakdown")
        ours = _measure(child, f"aca_keras ({name})", args.timeout)
        ours["setting"] = name
        results.append(ours)
        if not args.skip_torch:
            reference = [sys.executable, str(args.reference), *setting.reference_args(),
                         "--steps", str(args.steps), "--warmup", str(args.warmup),
                         "--threads", str(args.threads)]
            print(f"  reference: {shlex.join(reference)}", flush=True)
            theirs = _measure(reference, f"PyTorch reference ({name})", args.timeout)
            theirs["setting"] = name
            results.append(theirs)

    print()
    print(f"{'setting':<7} {'impl':<18} {'ms/step':>9} {'[min-max]':>13} {'images/s':>9} "
          f"{'build s':>7} {'1st step':>8} {'peak RSS':>9}")
    print(f"{'':<7} {'':<18} {'median':>9} {'':>13} {'':>9} {'':>7} {'s':>8} {'MiB':>9}")
    for r in results:
        print(_format_row(r["setting"], r))
    ratios = {}
    for name in names:
        ours = next(r for r in results if r["setting"] == name and r["impl"] == "aca_keras")
        theirs = [r for r in results if r["setting"] == name and r["impl"] != "aca_keras"]
        if theirs:
            ratios[name] = round(ours["ms_per_step"] / theirs[0]["ms_per_step"], 3)
    if ratios:
        print("ratio aca_keras / reference ms per step (< 1: aca_keras faster): "
              + ", ".join(f"{k} {v:.2f}" for k, v in ratios.items()))
    for r in results:
        if r["impl"] == "aca_keras":
            print(f"TF memory info ({r['setting']}): {r['tf_memory']}")
        if "breakdown" in r:
            print(f"breakdown ({r['setting']}), median ms: "
                  + json.dumps({k: v for k, v in r["breakdown"].items()}))
    load = [round(x, 2) for x in os.getloadavg()] if hasattr(os, "getloadavg") else None
    print(f"load average at end: {load}")

    if args.json:
        document = {"command": command, "machine": info, "load_average_end": load,
                    "versions": versions, "steps": args.steps, "warmup": args.warmup,
                    "threads": args.threads,
                    "settings": {n: dataclasses.asdict(SETTINGS[n]) for n in names},
                    "results": results, "ratios": ratios}
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(document, indent=2) + "\n")
        print(f"results written to {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
