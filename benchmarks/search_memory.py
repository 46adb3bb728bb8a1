"""Benchmark: where the memory of an end-to-end ``aca_keras.search()`` goes, phase by phase.

One fresh process runs the three public stages of :func:`aca_keras.search` on real images
(``../shared/data/cifar10-sample/train.npz``, 32x32x3) at the DARTS search setting (8 cells,
C = 16, 4 nodes, batch 64 per half) for one short epoch, while a sampling thread reads the
process's resident memory (``/proc/self/statm``) every few milliseconds. The peak resident
memory (RSS) of each phase is reported:

* ``startup``: importing TensorFlow and aca_keras, loading the data;
* ``build``: building and compiling the supernet (up to ``fit``'s ``on_train_begin``);
* ``first step``: tracing, optimising and running the first search step;
* ``steady steps``: the other steps of the epoch;
* ``epoch end``: the epoch's callbacks (collapse monitor, checkpoint, logs);
* ``scoring``: genotype, channel scoring and allocation (``derive_architecture``);
* ``derived``: building and saving the derived network (``build_derived``).

The PyTorch reference step (``../shared/bench/torch_darts_ref.py``) runs in the same
invocation, in its own process, for its peak RSS (``os.wait4``'s ``ru_maxrss``).

Usage::

    python benchmarks/search_memory.py                       # DARTS setting, 10 steps
    python benchmarks/search_memory.py --setting small --images 640 --skip-torch
    python benchmarks/search_memory.py --json memory.json

PyTorch is a benchmark-only dependency: ``pip install torch==2.13.0`` (CPU build).
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from search_step import (  # noqa: E402  (benchmark helpers of the same folder)
    DEFAULT_REFERENCE,
    REPO_ROOT,
    SETTINGS,
    SHARED,
    _measure,
    _tf_memory_info,
    _version,
    machine,
)

if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))  # the working tree's aca_keras
from aca_keras.searching.config import SearchConfig  # noqa: E402  (no TensorFlow import)

SAMPLE = SHARED / "data" / "cifar10-sample" / "train.npz"
PAGE = os.sysconf("SC_PAGE_SIZE")


class PhaseSampler:
    """Samples this process's RSS in a thread; keeps the peak of each named phase."""

    def __init__(self, interval: float = 0.005):
        self.interval = interval
        self.phase = "startup"
        self.order: list[str] = ["startup"]
        self.peaks: dict[str, float] = {"startup": 0.0}
        self.ends: dict[str, float] = {}
        self.start = time.perf_counter()
        self._stop = threading.Event()
        self._statm = open("/proc/self/statm", "rb")  # noqa: SIM115 (closed in stop)
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def rss_mib(self) -> float:
        self._statm.seek(0)
        return int(self._statm.read().split()[1]) * PAGE / 2**20

    def _sample(self) -> None:
        rss = self.rss_mib()
        phase = self.phase
        if rss > self.peaks[phase]:
            self.peaks[phase] = rss

    def _run(self) -> None:
        while not self._stop.is_set():
            self._sample()
            time.sleep(self.interval)

    def enter(self, phase: str) -> None:
        """End the current phase (one last sample) and start ``phase``."""
        self._sample()
        self.ends[self.phase] = time.perf_counter() - self.start
        if phase not in self.peaks:
            self.order.append(phase)
            self.peaks[phase] = 0.0
        self.phase = phase
        self._sample()

    def stop(self) -> dict[str, Any]:
        self.enter("done")
        self._stop.set()
        self._thread.join()
        self._statm.close()
        rows, previous = [], 0.0
        for phase in self.order[:-1]:  # the last is "done"
            end = self.ends[phase]
            rows.append({"phase": phase, "peak_rss_mib": round(self.peaks[phase], 1),
                         "seconds": round(end - previous, 2)})
            previous = end
        return {"phases": rows, "vm_hwm_mib": _vm_hwm_mib()}


def _vm_hwm_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def run_child(setting_name: str, images: int, threads: int, hessian_every: int,
              score_batches: int, release: bool = True, recompute: bool = False,
              layout: str = "grouped") -> dict[str, Any]:
    """The end-to-end search in this (fresh) process, with per-phase peaks."""
    sampler = PhaseSampler()
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    if str(REPO_ROOT) not in sys.path:
        sys.path.insert(0, str(REPO_ROOT))
    import numpy as np
    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(threads)
    tf.config.threading.set_inter_op_parallelism_threads(threads)
    import keras

    from aca_keras import data as data_lib
    from aca_keras.searching.pipeline import build_derived, derive_architecture, search_supernet

    setting = SETTINGS[setting_name]
    with np.load(SAMPLE) as arrays:
        x, y = arrays["x"][:images], arrays["y"][:images]
    bundle = data_lib.load((x, y))

    class Phases(keras.callbacks.Callback):
        def __init__(self):
            super().__init__()
            self.batches = 0
            self.times: list[float] = []

        def on_train_begin(self, logs=None):
            sampler.enter("first step")

        def on_train_batch_end(self, batch, logs=None):
            self.batches += 1
            self.times.append(time.perf_counter())
            if self.batches == 1:
                sampler.enter("steady steps")

    phases = Phases()
    config = SearchConfig(dataset="<arrays>", epochs=1, ops=setting.ops, cells=setting.cells,
                          channels=setting.channels, nodes=setting.nodes,
                          batch_size=setting.batch, seed=0, hessian_every=hessian_every,
                          score_batches=score_batches, recompute=recompute, layout=layout)
    config.validate()
    config.resolve_variant()
    sampler.enter("build")
    with tempfile.TemporaryDirectory() as tmp:
        # the monitor and the checkpoint run in on_epoch_end before the user's callbacks:
        # the epoch end starts at the last batch's on_train_batch_end
        class LastBatch(keras.callbacks.Callback):
            def __init__(self, steps):
                super().__init__()
                self.steps, self.seen = steps, 0

            def on_train_batch_end(self, batch, logs=None):
                self.seen += 1
                if self.seen == self.steps:
                    sampler.enter("epoch end")

        steps = bundle.search_pipelines(batch_size=config.batch_size,
                                        train_fraction=config.train_fraction, seed=0,
                                        epochs=1, start_epoch=0).steps_per_epoch
        network = search_supernet(bundle, config, tmp, verbose=0,
                                  callbacks=[phases, LastBatch(steps)])
        sampler.enter("scoring")
        if release:  # what search() does between its stages
            network.release_traced_functions()
        architecture = derive_architecture(network, bundle, config, tmp)
        del network
        sampler.enter("derived")
        model = build_derived(architecture, bundle, config, tmp)
        params = model.count_params()
    result = sampler.stop()
    gaps = np.diff(phases.times)
    result.update(setting=setting_name, images=images, steps=steps, derived_params=params,
                  step_s_median=float(np.median(gaps)) if len(gaps) else None,
                  hessian_every=hessian_every, score_batches=score_batches, release=release,
                  recompute=recompute, layout=layout,
                  tf_allocator=_tf_memory_info())
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--setting", choices=sorted(SETTINGS), default="darts")
    parser.add_argument("--images", type=int, default=1280,
                        help="images of the CIFAR-10 sample used (half weights, half alphas; "
                             "default 1280 = 10 steps of 64 + 64)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--hessian-every", type=int, default=SearchConfig.hessian_every,
                        help="collapse monitor every N epochs (0: off; default: the "
                             "search default)")
    parser.add_argument("--score-batches", type=int, default=SearchConfig.score_batches)
    parser.add_argument("--recompute", action="store_true",
                        help="search with recompute=True (gradient checkpointing per cell)")
    parser.add_argument("--layout", choices=("grouped", "per_edge"), default="grouped",
                        help="the supernet's edge layout (default grouped, as search())")
    parser.add_argument("--keep-step-graph", action="store_true",
                        help="do not release the search step's traced function before scoring "
                             "(search() releases it; this shows what that saves)")
    parser.add_argument("--torch-steps", type=int, default=5,
                        help="timed steps of the PyTorch reference (peak RSS only)")
    parser.add_argument("--skip-torch", action="store_true")
    parser.add_argument("--reference", type=Path, default=DEFAULT_REFERENCE)
    parser.add_argument("--json", type=Path)
    parser.add_argument("--timeout", type=float, default=3600)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.child:
        print(json.dumps(run_child(args.setting, args.images, args.threads,
                                   args.hessian_every, args.score_batches,
                                   release=not args.keep_step_graph,
                                   recompute=args.recompute, layout=args.layout)))
        return 0
    if not SAMPLE.is_file():
        parser.error(f"the CIFAR-10 sample is missing: {SAMPLE} (put ../shared beside the "
                     "repository or set ACA_SHARED_DIR)")
    command = [sys.executable, *sys.argv] if argv is None else [sys.executable, __file__, *argv]
    print("command:", shlex.join(command))
    info = machine()
    print("machine:", json.dumps(info))
    print("versions:", json.dumps({d: _version(d) for d in
                                   ("tensorflow", "tensorflow-cpu", "keras", "torch")}))
    child = [sys.executable, __file__, "--child", "--setting", args.setting, "--images",
             str(args.images), "--threads", str(args.threads), "--hessian-every",
             str(args.hessian_every), "--score-batches", str(args.score_batches),
             *(["--keep-step-graph"] if args.keep_step_graph else []),
             *(["--recompute"] if args.recompute else []), "--layout", args.layout]
    ours = _measure(child, "aca_keras search()", args.timeout)
    print(f"\naca_keras search() at the {args.setting} setting, {ours['steps']} steps "
          f"({args.images} images), collapse monitor every {args.hessian_every} epoch(s), "
          f"{args.score_batches} scoring batches"
          f"{', step graph kept' if args.keep_step_graph else ''}"
          f"{', recompute=True' if args.recompute else ''}, layout {args.layout}:")
    print(f"{'phase':<14} {'peak RSS MiB':>12} {'seconds':>9}")
    for row in ours["phases"]:
        print(f"{row['phase']:<14} {row['peak_rss_mib']:>12.0f} {row['seconds']:>9.1f}")
    print(f"{'whole process':<14} {ours['peak_rss_mib']:>12.0f}   (ru_maxrss; VmHWM "
          f"{ours['vm_hwm_mib']:.0f})")
    print(f"TensorFlow allocator: {ours['tf_allocator']}")
    if ours.get("step_s_median") is not None:
        first = next(r["seconds"] for r in ours["phases"] if r["phase"] == "first step")
        print(f"first step {first:.1f} s, later steps {ours['step_s_median']:.2f} s (median of "
              f"{ours['steps'] - 1})")
    out: dict[str, Any] = {"command": shlex.join(command), "machine": info, "aca_keras": ours}
    if not args.skip_torch:
        setting = SETTINGS[args.setting]
        reference = [sys.executable, str(args.reference), *setting.reference_args(),
                     "--steps", str(args.torch_steps), "--warmup", "1",
                     "--threads", str(args.threads)]
        theirs = _measure(reference, "PyTorch reference", args.timeout)
        out["reference"] = theirs
        steady = next(r["peak_rss_mib"] for r in ours["phases"] if r["phase"] == "steady steps")
        print(f"PyTorch reference step: {theirs.get('ms_per_step', float('nan')):.0f} ms/step "
              f"(median of {args.torch_steps}), peak RSS {theirs['peak_rss_mib']:.0f} MiB; "
              f"aca_keras steady steps / reference = {steady / theirs['peak_rss_mib']:.2f}, "
              f"whole search() / reference = "
              f"{ours['peak_rss_mib'] / theirs['peak_rss_mib']:.2f}")
    print(f"load average at the end: {os.getloadavg()}")
    if args.json:
        args.json.write_text(json.dumps(out, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
