"""GPU check: the DARTS search step, a real search epoch and derived-network training, in one
command (about 8 minutes on one H100), with the PyTorch reference on the same device.

Measured, each in a fresh process (so that TensorFlow and PyTorch do not share the GPU's
memory and every peak is the measurement's own):

* **search step** of the DARTS setting (8 cells, C = 16, 4 nodes, batch 64 per half,
  32x32x3, op set ``aca``), built and compiled as ``aca_keras.search`` does
  (``searching.pipeline.build_search_network``: ``MomentumSGD`` with the cosine schedule, Adam on the
  alphas, first order), run through the model's own ``make_train_function()`` on a
  ``tf.data`` iterator (what ``fit`` runs), in four modes: ``float32``, ``float32_xla``
  (``jit_compile=True``), ``mixed`` (``mixed_precision=True``: the policy
  ``aca_keras.distribute.precision_policy(True)`` picks, ``mixed_float16`` on a GPU,
  ``mixed_bfloat16`` on a CPU) and ``mixed_xla``. Reported: build s, first step s (tracing,
  XLA compilation), the median ms per step over the timed steps and images/s (both halves),
  peak device memory (``tf.config.experimental.get_memory_info``);
* **the PyTorch reference** (``../shared/bench/torch_darts_ref.py``: its ``Network`` and its
  step, moved to the same device), median ms per step and ``torch.cuda.max_memory_allocated``;
  the ratio aca_keras / reference per mode (< 1: aca_keras faster);
* **projected search time**: one epoch of a 50-epoch CIFAR-10 search (25,000 + 25,000 images,
  batch 64: 391 steps as DARTS counts them) = 391 x the median step, and 50 epochs;
* **one real epoch** (``float32`` mode, same process): ``model.fit`` on
  ``DataBundle.search_pipelines`` of ``../shared/data/cifar10-jpeg/train.npz`` (50,000
  images), with the data pipeline's own cost; ``--epoch-steps N`` caps it at N steps (the full
  epoch is then projected from them);
* **derived-network training**: images/s of one training step of the derived network (DARTS's
  evaluation setting: 20 cells, C = 36, batch 96, auxiliary head, drop path; the
  architecture ``benchmarks/inference.py`` uses), compiled as ``aca_keras.training`` does.

It prints the command, the machine (GPU name, CPU, versions) and the medians, and writes
everything to ``--json PATH``. ``--smoke`` runs tiny settings on whatever device there is
(the CPU here), in this process, modes ``float32`` and ``mixed`` (add the XLA modes with
``--modes``), in under a minute (tests/test_gpu_check.py runs it). Every measurement has a
time limit (``--child-timeout``) within an overall budget (``--budget``, 460 s): a failed or
timed-out measurement is recorded as such and the rest still runs; the XLA modes run last.

Usage::

    python benchmarks/gpu_check.py --json gpu_check.json            # on a GPU machine
    python benchmarks/gpu_check.py --smoke --json /tmp/smoke.json   # anywhere

PyTorch is a benchmark-only dependency: ``pip install torch==2.13.0`` (a CUDA build on a GPU
machine); without it the reference is skipped and reported as such.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

BENCHMARKS = Path(__file__).resolve().parent
REPO_ROOT = BENCHMARKS.parent
if str(BENCHMARKS) not in sys.path:
    sys.path.insert(0, str(BENCHMARKS))

import search_step  # noqa: E402  (stdlib only at import: no TensorFlow in the parent)

SHARED = search_step.SHARED
DEFAULT_REFERENCE = search_step.DEFAULT_REFERENCE
DEFAULT_DATA = SHARED / "data" / "cifar10-jpeg" / "train.npz"

DARTS_STEPS_PER_EPOCH = math.ceil(25_000 / 64)  # 391, as DARTS's data loader counts
SEARCH_EPOCHS = 50

SETTINGS = {
    "full": {
        "search": {"cells": 8, "channels": 16, "nodes": 4, "batch": 64, "image": 32,
                   "classes": 10, "ops": "aca"},
        "derived": {"cells": 20, "channels": 36, "batch": 96, "image": 32, "classes": 10},
    },
    "smoke": {
        "search": {"cells": 3, "channels": 4, "nodes": 2, "batch": 4, "image": 16,
                   "classes": 10, "ops": "aca"},
        "derived": {"cells": 3, "channels": 4, "batch": 4, "image": 16, "classes": 10},
    },
}
MODES = {"float32": (False, False), "float32_xla": (False, True), "mixed": (True, False),
         "mixed_xla": (True, True)}


# ------------------------------------------------------------------------------ helpers


def _median_ms(fn, steps: int, warmup: int) -> tuple[float, list[float]]:
    return search_step._median_ms(fn, steps, warmup)


def _tf_setup(threads: int = 0) -> None:
    """Memory growth on every GPU (a peak that means something; PyTorch can run after);
    ``threads`` TensorFlow threads when there is no GPU (0: TensorFlow's default)."""
    import tensorflow as tf

    gpus = tf.config.list_physical_devices("GPU")
    if threads and not gpus:
        try:
            tf.config.threading.set_intra_op_parallelism_threads(threads)
            tf.config.threading.set_inter_op_parallelism_threads(threads)
        except RuntimeError:  # already initialised (in-process runs)
            pass
    for gpu in gpus:
        try:
            tf.config.experimental.set_memory_growth(gpu, True)
        except RuntimeError:  # already initialised (in-process runs)
            pass


def _tf_device() -> str:
    import tensorflow as tf

    return "GPU:0" if tf.config.list_logical_devices("GPU") else "CPU:0"


def _tf_reset_peak(device: str) -> None:
    import tensorflow as tf

    try:
        tf.config.experimental.reset_memory_stats(device)
    except (ValueError, RuntimeError, tf.errors.OpError):
        pass


def _tf_peak_mib(device: str) -> float | None:
    import tensorflow as tf

    try:
        return round(tf.config.experimental.get_memory_info(device)["peak"] / 2**20, 1)
    except (ValueError, RuntimeError, tf.errors.OpError):
        return None


def _synthetic_batch(rng, batch: int, image: int, classes: int):
    import tensorflow as tf

    x = tf.constant(rng.uniform(0, 255, (batch, image, image, 3)).astype("float32"))
    y = tf.constant(rng.integers(0, classes, (batch,)).astype("int32"))
    return x, y


# ------------------------------------------------------------------------------- children


def child_search(setting: dict[str, Any], mode: str, steps: int, warmup: int,
                 epoch: dict[str, Any] | None, threads: int = 0) -> dict[str, Any]:
    """One search-step measurement (and optionally one real epoch) in this process."""
    _tf_setup(threads)
    import keras
    import numpy as np
    import tensorflow as tf

    from aca_keras import distribute as dist
    from aca_keras.searching.pipeline import SearchConfig, build_search_network

    mixed, jit = MODES[mode]
    device = _tf_device()
    policy = dist.precision_policy(mixed)
    keras.utils.set_random_seed(0)
    rng = np.random.default_rng(0)
    data = (_synthetic_batch(rng, setting["batch"], setting["image"], setting["classes"]),
            _synthetic_batch(rng, setting["batch"], setting["image"], setting["classes"]))
    bundle = SimpleNamespace(input_shape=(setting["image"], setting["image"], 3),
                             num_classes=setting["classes"], mean=(0.49, 0.48, 0.45),
                             std=(0.25, 0.24, 0.26))
    config = SearchConfig(cells=setting["cells"], channels=setting["channels"],
                          nodes=setting["nodes"], ops=setting["ops"],
                          batch_size=setting["batch"], epochs=SEARCH_EPOCHS, seed=0,
                          jit_compile=jit, mixed_precision=mixed, dtype_policy=policy)
    _tf_reset_peak(device)
    start = time.perf_counter()
    with dist.dtype_policy(policy):
        model = build_search_network(bundle, config, DARTS_STEPS_PER_EPOCH)
    build_s = time.perf_counter() - start
    iterator = iter(tf.data.Dataset.from_tensors(data).repeat())
    model.make_train_function()
    train_function = model.train_function

    def step() -> float:
        return float(train_function(iterator)["loss"])  # waits for the step

    start = time.perf_counter()
    step()
    first_step_s = time.perf_counter() - start
    median, times = _median_ms(step, steps, warmup)
    result: dict[str, Any] = {
        "mode": mode, "policy": policy, "jit_compile": jit, "device": device,
        "ms_per_step": round(median, 3), "ms_min": round(min(times), 3),
        "ms_max": round(max(times), 3),
        "images_per_s": round(2 * setting["batch"] / (median / 1000), 1),
        "build_s": round(build_s, 2), "first_step_s": round(first_step_s, 2),
        "peak_memory_mib": _tf_peak_mib(device),
        "times_ms": [round(t, 3) for t in times],
        "params": int(sum(np.prod(v.shape) for v in model.weight_variables)),
    }
    if epoch is not None:
        result["epoch"] = _real_epoch(model, setting, epoch)
    return result


def _real_epoch(model, setting: dict[str, Any], epoch: dict[str, Any]) -> dict[str, Any]:
    """``model.fit`` over one search epoch of the real data (capped at ``max_steps``)."""
    from aca_keras.data import loading as data_lib

    start = time.perf_counter()
    images = int(epoch.get("images") or 0)
    size = setting["image"]
    if not images and size == 32:
        bundle = data_lib.load(epoch["path"])
    else:  # a subset, and/or images resized to the setting (smoke)
        import numpy as np
        import tensorflow as tf

        with np.load(epoch["path"]) as contents:
            x, y = contents["x"], contents["y"]
        if images:
            x, y = x[:images], y[:images]
        if x.shape[1:3] != (size, size):
            x = tf.image.resize(x, (size, size)).numpy().round().clip(0, 255).astype("uint8")
        bundle = data_lib.load((x, y))
    load_s = time.perf_counter() - start
    search = bundle.search_pipelines(batch_size=setting["batch"], seed=0, epochs=1)
    steps = search.steps_per_epoch
    run = steps if not epoch.get("max_steps") else min(steps, int(epoch["max_steps"]))
    # one step first, untimed in the epoch figure: the pipeline's batches may have another
    # shape signature than the synthetic ones (a retrace); fit restarts the pipeline after
    start = time.perf_counter()
    model.fit(search.dataset, epochs=1, steps_per_epoch=1, verbose=0, shuffle=False)
    first_fit_s = time.perf_counter() - start
    start = time.perf_counter()
    model.fit(search.dataset, epochs=1, steps_per_epoch=run, verbose=0, shuffle=False)
    wall = time.perf_counter() - start
    return {"data": str(epoch["path"]), "images": int(len(bundle.y_train)),
            "load_s": round(load_s, 2), "first_fit_step_s": round(first_fit_s, 2),
            "steps_per_epoch": steps, "steps_run": run,
            "measured_s": round(wall, 2), "s_per_step": round(wall / run, 4),
            "epoch_s": round(wall / run * steps, 1), "capped": run < steps}


def child_torch(setting: dict[str, Any], steps: int, warmup: int,
                reference: str, threads: int = 0) -> dict[str, Any]:
    """The reference's supernet and step (torch_darts_ref.py), on the GPU when there is one."""
    import importlib.util

    import torch
    import torch.nn.functional as F

    spec = importlib.util.spec_from_file_location("_gpu_check_torch_ref", reference)
    ref = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(ref)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    threads_before = torch.get_num_threads()
    if device.type == "cpu" and threads:
        torch.set_num_threads(threads)
    torch.manual_seed(0)
    ops = ref.ACA_OPS if setting["ops"] == "aca" else ref.DARTS_OPS
    start = time.perf_counter()
    net = ref.Network(ops, setting["channels"], classes=setting["classes"],
                      layers=setting["cells"], steps=setting["nodes"]).to(device)
    # the reference's optimisers and step (its main())
    w_opt = torch.optim.SGD(net.weights(), lr=0.025, momentum=0.9, weight_decay=3e-4)
    a_opt = torch.optim.Adam(net.alphas(), lr=3e-4, betas=(0.5, 0.999), weight_decay=1e-3)
    shape = (setting["batch"], 3, setting["image"], setting["image"])
    x_train, x_val = torch.randn(shape, device=device), torch.randn(shape, device=device)
    y_train = torch.randint(0, setting["classes"], (setting["batch"],), device=device)
    y_val = torch.randint(0, setting["classes"], (setting["batch"],), device=device)
    build_s = time.perf_counter() - start

    def step() -> float:
        a_opt.zero_grad()
        F.cross_entropy(net(x_val), y_val).backward()
        a_opt.step()
        w_opt.zero_grad()
        loss = F.cross_entropy(net(x_train), y_train)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(net.weights(), 5.0)
        w_opt.step()
        return loss.item()  # synchronises

    net.train()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    median, times = _median_ms(step, steps, warmup)
    peak = (round(torch.cuda.max_memory_allocated() / 2**20, 1) if device.type == "cuda"
            else None)
    torch.set_num_threads(threads_before)
    return {"impl": "pytorch-reference", "device": str(device), "torch": torch.__version__,
            "ms_per_step": round(median, 3), "ms_min": round(min(times), 3),
            "ms_max": round(max(times), 3),
            "images_per_s": round(2 * setting["batch"] / (median / 1000), 1),
            "build_s": round(build_s, 2), "peak_memory_mib": peak,
            "times_ms": [round(t, 3) for t in times],
            "gpu_name": torch.cuda.get_device_name(0) if device.type == "cuda" else None}


def child_derived(setting: dict[str, Any], mode: str, steps: int, warmup: int,
                  threads: int = 0) -> dict[str, Any]:
    """Training step of the derived network, compiled as ``aca_keras.training`` does."""
    _tf_setup(threads)
    import keras
    import numpy as np
    import tensorflow as tf
    from inference import searched_like_architecture

    from aca_keras import distribute as dist
    from aca_keras.models.derived import build_model
    from aca_keras.optimizers import L2SGD

    mixed, jit = MODES[mode]
    device = _tf_device()
    policy = dist.precision_policy(mixed)
    keras.utils.set_random_seed(0)
    _tf_reset_peak(device)
    start = time.perf_counter()
    with dist.dtype_policy(policy):
        model = build_model(searched_like_architecture(),
                            (setting["image"], setting["image"], 3), setting["classes"],
                            cells=setting["cells"], channels=setting["channels"],
                            auxiliary=True, drop_path=0.2)
        optimizer = L2SGD(learning_rate=keras.optimizers.schedules.CosineDecay(
            0.025, decay_steps=600 * 521, alpha=0.0), momentum=0.9, l2=3e-4,
            global_clipnorm=5.0)
        loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
        model.compile(optimizer=optimizer, loss={"logits": loss, "aux_logits": loss},
                      loss_weights={"logits": 1.0, "aux_logits": 0.4},
                      metrics={"logits": ["accuracy"]}, jit_compile=jit)
    build_s = time.perf_counter() - start
    x, y = _synthetic_batch(np.random.default_rng(0), setting["batch"], setting["image"],
                            setting["classes"])
    iterator = iter(tf.data.Dataset.from_tensors((x, {"logits": y, "aux_logits": y})).repeat())
    model.make_train_function()
    train_function = model.train_function

    def step() -> float:
        return float(train_function(iterator)["loss"])

    start = time.perf_counter()
    step()
    first_step_s = time.perf_counter() - start
    median, times = _median_ms(step, steps, warmup)
    return {"mode": mode, "policy": policy, "jit_compile": jit, "device": device,
            "ms_per_step": round(median, 3),
            "images_per_s": round(setting["batch"] / (median / 1000), 1),
            "build_s": round(build_s, 2), "first_step_s": round(first_step_s, 2),
            "peak_memory_mib": _tf_peak_mib(device),
            "params": int(model.inference_model().count_params()),
            "times_ms": [round(t, 3) for t in times]}


CHILDREN = {"search": child_search, "torch": child_torch, "derived": child_derived}


# -------------------------------------------------------------------------------- parent


def _gpu_info() -> dict[str, Any] | None:
    """``nvidia-smi``'s view of the GPUs (no TensorFlow in the parent); None without one."""
    try:
        out = subprocess.run(
            ["nvidia-smi", "--query-gpu=name,memory.total,driver_version",
             "--format=csv,noheader"], capture_output=True, text=True, timeout=30, check=True)
    except (OSError, subprocess.SubprocessError):
        return None
    gpus = [dict(zip(("name", "memory_total", "driver"), (p.strip() for p in line.split(","))))
            for line in out.stdout.strip().splitlines() if line.strip()]
    return {"gpus": gpus} if gpus else None


def _run(kind: str, kwargs: dict[str, Any], in_process: bool, timeout: float
         ) -> dict[str, Any]:
    """Run one child measurement; errors are recorded, not raised (a partial report is
    still a report)."""
    start = time.perf_counter()
    try:
        if in_process:
            result = CHILDREN[kind](**kwargs)
            result["peak_rss_mib"] = None
        else:
            command = [sys.executable, str(Path(__file__).resolve()), "--child",
                       json.dumps({"kind": kind, "kwargs": kwargs})]
            result = search_step._measure(command, f"{kind} {kwargs.get('mode', '')}",
                                          timeout)
    except Exception as error:  # noqa: BLE001  (recorded in the report)
        message = str(error).strip().splitlines()
        result = {"error": f"{type(error).__name__}: " + " | ".join(message[-6:])}
    result["wall_s"] = round(time.perf_counter() - start, 1)
    return result


def _print_row(name: str, r: dict[str, Any]) -> None:
    if "error" in r:
        print(f"  {name:<22} ERROR {r['error']}", flush=True)
        return
    if "skipped" in r:
        print(f"  {name:<22} skipped: {r['skipped']}", flush=True)
        return
    extra = "".join(f", {k} {r[k]}" for k in ("first_step_s", "build_s", "peak_memory_mib",
                                              "peak_rss_mib") if r.get(k) is not None)
    print(f"  {name:<22} {r['ms_per_step']:>10.2f} ms/step (median), "
          f"{r['images_per_s']:>9.1f} images/s{extra}", flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true",
                        help="tiny settings, in this process, few steps (CPU, seconds)")
    parser.add_argument("--json", type=Path, help="write every result to this JSON file")
    parser.add_argument("--steps", type=int, help="timed steps per measurement (default 20; "
                        "smoke 2)")
    parser.add_argument("--warmup", type=int, help="warm-up steps (default 3; smoke 1)")
    parser.add_argument("--modes",
                        help=f"search modes, from {', '.join(MODES)} (default all; smoke: "
                             "float32,mixed, as XLA compilation alone takes ~40 s a mode on "
                             "a CPU)")
    parser.add_argument("--derived-modes", default="float32",
                        help="derived-network training modes (default float32)")
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA,
                        help="the real epoch's data (default ../shared/data/cifar10-jpeg/"
                             "train.npz)")
    parser.add_argument("--epoch-steps", type=int, default=0,
                        help="cap the real epoch at N steps and project the rest (default 0: "
                             "the whole epoch; smoke: 2)")
    parser.add_argument("--epoch-images", type=int, default=0,
                        help="use only the first N images for the real epoch (smoke: 64)")
    parser.add_argument("--skip-epoch", action="store_true", help="no real epoch")
    parser.add_argument("--skip-torch", action="store_true", help="no PyTorch reference")
    parser.add_argument("--skip-derived", action="store_true", help="no derived network")
    parser.add_argument("--reference", type=Path, default=DEFAULT_REFERENCE,
                        help="the PyTorch reference script")
    parser.add_argument("--threads", type=int,
                        help="CPU only: TensorFlow intra/inter-op threads and "
                             "torch.set_num_threads (default 2, as search_step.py; smoke 1); "
                             "ignored on a GPU")
    parser.add_argument("--child-timeout", type=float, default=240,
                        help="seconds allowed per measurement process (default 240; 120 more "
                             "for the one that also runs the real epoch)")
    parser.add_argument("--budget", type=float, default=460,
                        help="seconds for all measurements; each child gets what is left, and "
                             "later ones are skipped when it is spent (default 460)")
    parser.add_argument("--in-process", action="store_true",
                        help="measure in this process (default with --smoke)")
    parser.add_argument("--subprocesses", action="store_true",
                        help="one fresh process per measurement, also with --smoke")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.child:
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
        if str(REPO_ROOT) not in sys.path:
            sys.path.insert(0, str(REPO_ROOT))
        spec = json.loads(args.child)
        print(json.dumps(CHILDREN[spec["kind"]](**spec["kwargs"])), flush=True)
        return 0

    smoke = args.smoke
    steps = args.steps if args.steps is not None else (2 if smoke else 20)
    warmup = args.warmup if args.warmup is not None else (1 if smoke else 3)
    epoch_steps = args.epoch_steps or (2 if smoke else 0)
    epoch_images = args.epoch_images or (64 if smoke else 0)
    in_process = args.in_process or (smoke and not args.subprocesses)
    args.threads = args.threads if args.threads is not None else (1 if smoke else 2)
    # in process, TensorFlow's threads stay as they are (a caller's process, e.g. pytest)
    tf_threads = 0 if in_process else args.threads
    if steps < 1 or warmup < 0:
        parser.error("--steps must be >= 1 and --warmup >= 0")
    chosen = args.modes or ("float32,mixed" if smoke else ",".join(MODES))
    modes = [m.strip() for m in chosen.split(",") if m.strip()]
    derived_modes = [m.strip() for m in args.derived_modes.split(",") if m.strip()]
    unknown = [m for m in modes + derived_modes if m not in MODES]
    if unknown or not modes:
        parser.error(f"unknown mode(s) {unknown}; choose from {', '.join(MODES)}")
    settings = SETTINGS["smoke" if smoke else "full"]
    if in_process:
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
        if str(REPO_ROOT) not in sys.path:
            sys.path.insert(0, str(REPO_ROOT))

    began = time.perf_counter()
    info = search_step.machine()
    gpu = _gpu_info()
    command = shlex.join([Path(sys.executable).name, *(sys.argv if argv is None
                                                        else [sys.argv[0], *argv])])
    versions = {"python": info["python"],
                "tensorflow": search_step._version("tensorflow")
                or search_step._version("tensorflow-cpu"),
                "keras": search_step._version("keras"), "torch": search_step._version("torch"),
                "aca_keras": search_step._version("aca-keras")}
    print(f"command:  {command}")
    print(f"machine:  GPU {', '.join(g['name'] for g in gpu['gpus']) if gpu else 'none'}; "
          f"{info['cpu']}; {info['logical_cpus']} logical CPUs; load average "
          f"{info['load_average']}")
    print("versions: " + ", ".join(f"{k} {v}" for k, v in versions.items()))
    print(f"protocol: {'SMOKE (tiny settings) ' if smoke else ''}{warmup} warm-up + {steps} "
          f"timed steps, median; search {settings['search']}; derived {settings['derived']}; "
          f"{'in process' if in_process else 'one process per measurement'}", flush=True)

    def remaining() -> float:
        return args.budget - (time.perf_counter() - began)

    def run(kind: str, kwargs: dict[str, Any]) -> dict[str, Any]:
        if remaining() <= 5 and not in_process:
            return {"skipped": f"budget of {args.budget:g} s spent"}
        limit = args.child_timeout + (120 if kwargs.get("epoch") else 0)
        return _run(kind, kwargs, in_process, min(max(remaining(), 5), limit))

    results: dict[str, Any] = {"search": {}, "derived": {}}
    epoch = None
    if not args.skip_epoch:
        if args.data.is_file():
            epoch = {"path": str(args.data), "max_steps": epoch_steps,
                     "images": epoch_images}
        else:
            results["epoch"] = {"skipped": f"no data at {args.data}"}
    print("search step (aca_keras):", flush=True)
    # XLA modes last (their compilation is the least predictable part of the budget), the
    # reference right after the first mode, the derived network before the XLA modes
    plain = [m for m in modes if not MODES[m][1]]
    ordered = plain + [m for m in modes if MODES[m][1]]
    for mode in ordered:
        if len(plain) < len(ordered) and mode == ordered[len(plain)]:
            _derived(args, settings, derived_modes, steps, warmup, run, results, tf_threads)
            print("search step (aca_keras), XLA:", flush=True)
        with_epoch = epoch if mode == "float32" or (mode == ordered[0] and
                                                    "float32" not in modes) else None
        r = run("search", {"setting": settings["search"], "mode": mode, "steps": steps,
                           "warmup": warmup, "epoch": with_epoch, "threads": tf_threads})
        results["search"][mode] = r
        _print_row(mode, r)
        if with_epoch is not None:
            results["epoch"] = r.pop("epoch", None) or {"skipped": "search step failed"}
        if mode == ordered[0] and not args.skip_torch:  # the reference early: the ratio
            results["torch_reference"] = _torch(args, settings, steps, warmup, run)
            _print_row("PyTorch reference", results["torch_reference"])
    if args.skip_torch:
        results["torch_reference"] = {"skipped": "--skip-torch"}
    if len(plain) == len(ordered):
        _derived(args, settings, derived_modes, steps, warmup, run, results, tf_threads)

    reference_ms = results.get("torch_reference", {}).get("ms_per_step")
    ratios, projection = {}, {}
    for mode, r in results["search"].items():
        if "ms_per_step" not in r:
            continue
        if reference_ms:
            ratios[mode] = round(r["ms_per_step"] / reference_ms, 3)
        epoch_s = DARTS_STEPS_PER_EPOCH * r["ms_per_step"] / 1000
        projection[mode] = {"epoch_s": round(epoch_s, 1),
                            "search_50_epochs_h": round(SEARCH_EPOCHS * epoch_s / 3600, 3)}
    if reference_ms:
        epoch_s = DARTS_STEPS_PER_EPOCH * reference_ms / 1000
        projection["pytorch_reference"] = {
            "epoch_s": round(epoch_s, 1),
            "search_50_epochs_h": round(SEARCH_EPOCHS * epoch_s / 3600, 3)}
    peaks = {f"search_{m}": r.get("peak_memory_mib") for m, r in results["search"].items()}
    peaks.update({f"derived_{m}": r.get("peak_memory_mib")
                  for m, r in results["derived"].items()})
    peaks["pytorch_reference"] = results.get("torch_reference", {}).get("peak_memory_mib")

    print()
    if ratios:
        print("ratio aca_keras / PyTorch reference, ms per step (< 1: aca_keras faster): "
              + ", ".join(f"{m} {v:.2f}" for m, v in ratios.items()))
    for mode, p in projection.items():
        print(f"projected 50-epoch search ({DARTS_STEPS_PER_EPOCH} steps/epoch), {mode}: "
              f"{p['epoch_s']:.1f} s/epoch, {p['search_50_epochs_h']:.2f} h")
    e = results.get("epoch") or {}
    if "epoch_s" in e:
        print(f"real epoch on {e['data']} ({e['images']} images, {e['steps_per_epoch']} "
              f"steps): {e['measured_s']:.1f} s for {e['steps_run']} steps -> "
              f"{e['epoch_s']:.1f} s/epoch{' (projected from the capped run)' if e['capped'] else ''}")
    elif e:
        print(f"real epoch: {e}")
    print("peak device memory MiB: " + ", ".join(f"{k} {v}" for k, v in peaks.items()))
    total = round(time.perf_counter() - began, 1)
    print(f"total wall time: {total} s")

    if args.json:
        document = {"command": command, "machine": {**info, "gpu": gpu},
                    "versions": versions, "smoke": smoke, "steps": steps, "warmup": warmup,
                    "settings": settings, "darts_steps_per_epoch": DARTS_STEPS_PER_EPOCH,
                    "results": results, "ratios": ratios, "projection": projection,
                    "peak_memory_mib": peaks, "total_s": total}
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(document, indent=2) + "\n")
        print(f"results written to {args.json}")
    failed = [k for k, v in results["search"].items() if "error" in v]
    return 1 if failed and len(failed) == len(results["search"]) else 0


def _derived(args, settings, modes, steps: int, warmup: int, run, results,
             tf_threads: int) -> None:
    if args.skip_derived:
        return
    print("derived network training (aca_keras):", flush=True)
    for mode in modes:
        r = run("derived", {"setting": settings["derived"], "mode": mode, "steps": steps,
                            "warmup": warmup, "threads": tf_threads})
        results["derived"][mode] = r
        _print_row(mode, r)


def _torch(args, settings, steps: int, warmup: int, run) -> dict[str, Any]:
    if search_step._version("torch") is None:
        return {"skipped": "PyTorch is not installed (pip install torch==2.13.0)"}
    if not args.reference.is_file():
        return {"skipped": f"no reference at {args.reference}"}
    return run("torch", {"setting": settings["search"], "steps": steps, "warmup": warmup,
                         "reference": str(args.reference), "threads": args.threads})


if __name__ == "__main__":
    sys.exit(main())
