"""Benchmark: one search step on one device against ``MirroredStrategy`` over logical CPUs.

Both measurements use the protocol of ``search_step.py`` (one ``SearchNetwork.train_step`` as
``fit`` runs it: the model's own ``make_train_function()`` on an iterator, first order,
``jit_compile=False``, DARTS's optimiser settings), the same setting, the same *global* batch
and the same threads, each in a fresh process:

* ``single``: no strategy, one CPU device;
* ``mirrored``: the CPU split into ``--devices`` logical devices
  (``tf.config.set_logical_device_configuration``) under ``MirroredStrategy``; the global batch
  is split over the replicas (``experimental_distribute_dataset``), BatchNorm statistics are
  synchronised across replicas (as ``aca_keras.search(strategy=...)`` builds the supernet),
  and gradients are all-reduced.

Logical CPU devices share the same cores, so this measures the overhead of the replicated
step (the all-reduces, the synchronised BatchNorm, the larger graph), not a speed-up: on one
machine's CPU a strategy cannot be faster. Real speed-ups need several GPUs or machines.

Usage::

    python benchmarks/search_step_strategy.py                    # small setting, 2 devices
    python benchmarks/search_step_strategy.py --settings tiny --steps 5 --json out.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]

# name: (cells, channels, nodes, batch of each half, image side); "small" is search_step.py's
SETTINGS = {
    "small": (5, 8, 4, 32, 32),
    "tiny": (3, 8, 2, 32, 16),
}


def run_child(mode: str, setting: str, devices: int, steps: int, warmup: int,
              threads: int, local_bn: bool = False) -> dict[str, Any]:
    """Measure one mode in this (fresh) process."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    if str(REPO_ROOT) not in sys.path:
        sys.path.insert(0, str(REPO_ROOT))
    import numpy as np
    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(threads)
    tf.config.threading.set_inter_op_parallelism_threads(threads)
    if mode == "mirrored":
        cpu = tf.config.list_physical_devices("CPU")[0]
        tf.config.set_logical_device_configuration(
            cpu, [tf.config.LogicalDeviceConfiguration()] * devices)
    import keras

    from aca_keras import distribute as dist
    from aca_keras.models.supernet import SearchNetwork

    cells, channels, nodes, batch, image = SETTINGS[setting]
    strategy = dist.get_strategy("mirrored" if mode == "mirrored" else None)
    keras.utils.set_random_seed(0)
    rng = np.random.default_rng(0)

    def half():
        return (rng.uniform(0, 255, (batch, image, image, 3)).astype("float32"),
                rng.integers(0, 10, (batch,)).astype("int32"))

    dataset = tf.data.Dataset.from_tensors((half(), half())).repeat()
    start = time.perf_counter()
    # local_bn: per-replica BatchNorm statistics, as search(sync_batch_norm=False) builds
    with dist.strategy_scope(strategy):
        model = SearchNetwork((image, image, 3), 10, cells=cells, channels=channels,
                              nodes=nodes, ops="aca",
                              sync_batch_norm=dist.synchronize_batch_norm(strategy, not local_bn))
        model.compile(keras.optimizers.SGD(0.025, momentum=0.9),
                      keras.optimizers.Adam(3e-4, beta_1=0.5, beta_2=0.999), order=1,
                      weight_decay=3e-4, alpha_weight_decay=1e-3, grad_clip=5.0)
    build_s = time.perf_counter() - start
    if strategy is not None:
        dataset = strategy.experimental_distribute_dataset(dataset)
    iterator = iter(dataset)
    model.make_train_function()
    train_function = model.train_function

    def step() -> float:
        return float(train_function(iterator)["loss"])  # waits for the step

    start = time.perf_counter()
    step()
    first_step_s = time.perf_counter() - start
    start = time.perf_counter()
    step()
    second_step_s = time.perf_counter() - start  # the graph optimiser runs on this call
    for _ in range(warmup):
        step()
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        step()
        times.append(1000 * (time.perf_counter() - start))
    median = statistics.median(times)
    return {"mode": mode + ("-local-bn" if local_bn else ""), "setting": setting,
            "replicas": 1 if strategy is None else int(strategy.num_replicas_in_sync),
            "ms_per_step": round(median, 1), "ms_min": round(min(times), 1),
            "ms_max": round(max(times), 1),
            "images_per_s": round(2 * batch / (median / 1000), 1),
            "build_s": round(build_s, 1), "first_step_s": round(first_step_s, 1),
            "second_step_s": round(second_step_s, 1),
            "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
            "times_ms": [round(t, 1) for t in times],
            "versions": {"tensorflow": tf.__version__, "keras": keras.__version__}}


def _rss_gib(pid: int) -> float:
    try:
        with open(f"/proc/{pid}/status", encoding="ascii") as handle:
            for line in handle:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 2**20
    except OSError:
        pass
    return 0.0


def _measure(args: argparse.Namespace, mode: str, setting: str) -> dict[str, Any]:
    command = [sys.executable, str(Path(__file__).resolve()), "--child", mode,
               "--settings", setting, "--devices", str(args.devices), "--steps",
               str(args.steps), "--warmup", str(args.warmup), "--threads", str(args.threads)]
    if mode.endswith("-local-bn"):
        command[3] = mode.removesuffix("-local-bn")
        command.append("--local-bn")
    start = time.perf_counter()
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True)
    peak = [0.0]

    def watch() -> None:  # a shared machine: stop a child that grows past --max-rss-gib
        while process.poll() is None:
            peak[0] = max(peak[0], _rss_gib(process.pid))
            if peak[0] > args.max_rss_gib:
                process.kill()
                return
            time.sleep(0.5)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    try:
        out, err = process.communicate(timeout=args.timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        out, err = process.communicate()
        return {"mode": mode, "setting": setting, "error": f"timeout after {args.timeout} s"}
    watcher.join()
    if peak[0] > args.max_rss_gib:
        return {"mode": mode, "setting": setting,
                "error": f"stopped at {peak[0]:.1f} GiB resident (--max-rss-gib "
                         f"{args.max_rss_gib}) after {time.perf_counter() - start:.0f} s"}
    wall = time.perf_counter() - start
    lines = [ln for ln in out.splitlines() if ln.startswith("{")]
    if process.returncode != 0 or not lines:
        return {"mode": mode, "setting": setting,
                "error": f"exit {process.returncode}: {err.strip().splitlines()[-1:]}"}
    result = json.loads(lines[-1])
    result["process_wall_s"] = round(wall, 1)
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--settings", default="small",
                        help=f"comma-separated settings ({', '.join(SETTINGS)}; default small)")
    parser.add_argument("--strategy", default="mirrored", choices=("mirrored",),
                        help="the strategy compared with one device (default mirrored)")
    parser.add_argument("--devices", type=int, default=2, help="logical CPU devices (2)")
    parser.add_argument("--steps", type=int, default=10, help="timed steps (10)")
    parser.add_argument("--warmup", type=int, default=2, help="warm-up steps (2)")
    parser.add_argument("--threads", type=int, default=2, help="TF intra/inter-op threads (2)")
    parser.add_argument("--timeout", type=float, default=3600, help="per process, seconds")
    parser.add_argument("--max-rss-gib", type=float, default=12.0,
                        help="stop a measurement whose process grows past this (12 GiB)")
    parser.add_argument("--json", type=Path, help="also write the results here")
    parser.add_argument("--local-bn", action="store_true",
                        help="also measure the strategy with per-replica BatchNorm statistics "
                             "(diagnostic: the cost of synchronised BatchNorm)")
    parser.add_argument("--modes", default=None,
                        help="measure only these, comma-separated: single, mirrored, "
                             "mirrored-local-bn (default: single and the strategy)")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(run_child(args.child, args.settings, args.devices, args.steps,
                                   args.warmup, args.threads, args.local_bn)), flush=True)
        return 0

    print(f"$ python {' '.join([Path(__file__).name, *(argv or sys.argv[1:])])}")
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
          f"load average at start {os.getloadavg()[0]:.2f}")
    results = []
    for setting in args.settings.split(","):
        modes = args.modes.split(",") if args.modes else (
            ["single", args.strategy] + ([f"{args.strategy}-local-bn"] if args.local_bn
                                         else []))
        for mode in modes:
            result = _measure(args, mode, setting)
            results.append(result)
            print(json.dumps({k: v for k, v in result.items() if k != "times_ms"}), flush=True)
    print(f"load average at end {os.getloadavg()[0]:.2f}")
    print("\n| setting | mode | replicas | ms/step (median) | images/s | build s | "
          "first step s | second step s | peak RSS MiB |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for r in results:
        if "error" in r:
            print(f"| {r['setting']} | {r['mode']} | - | {r['error']} | | | | | |")
        else:
            print(f"| {r['setting']} | {r['mode']} | {r['replicas']} | {r['ms_per_step']} | "
                  f"{r['images_per_s']} | {r['build_s']} | {r['first_step_s']} | "
                  f"{r['second_step_s']} | {r['peak_rss_mib']} |")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
