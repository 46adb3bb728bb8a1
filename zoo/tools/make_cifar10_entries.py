"""Create the zoo entries ``aca-cifar10`` and ``darts-v2-cifar10-trained``: an ACA cell searched
on CIFAR-10 (JPEG round trip) and the DARTS V2 cell, both trained with one recipe on the same
45,000 images and measured on the same 5,000 held-out images (issue 17).

    python zoo/tools/make_cifar10_entries.py split    [--data PATH] [--work DIR] [--holdout 5000] [--seed 0]
    python zoo/tools/make_cifar10_entries.py search   [--work DIR] [--search-epochs 16] ...
    python zoo/tools/make_cifar10_entries.py train --arch darts-v2 [--work DIR] [--epochs 15] ...
    python zoo/tools/make_cifar10_entries.py train --arch aca      [--work DIR]
    python zoo/tools/make_cifar10_entries.py publish  [--work DIR] [--zoo-dir zoo]
    python zoo/tools/make_cifar10_entries.py status   [--work DIR]

Every stage keeps its state in the work directory (default ``runs/cifar10-entries``, which git
ignores), is idempotent (a finished stage says so and does nothing) and resumable: a stage that
was killed, stopped (``--stop-after-epochs N``) or paused (``kill -STOP`` / ``kill -CONT``)
continues from its last per-epoch checkpoint when the same command is run again. Settings are
recorded by the first session of a stage and reused by later ones (a different explicit value
is refused). Each process uses one TensorFlow thread (``--threads``).

Stages:

1. ``split``: ``aca_keras.data.load(DATA, test_fraction=0.1)`` holds out 5,000 of the 50,000
   images of ``../shared/data/cifar10-jpeg/train.npz``: the library's fixed hold-out rule, the
   first 5,000 positions of ``numpy.random.default_rng(0).permutation(50000)``, kept in file
   order. ``split.json`` records the rule, the file's sha256, the held-out indices' sha256 and
   the digests of both parts; ``split_indices.npz`` holds the indices. ``aca-zoo verify NAME
   --evaluate DATA`` rebuilds exactly this split from the entries' ``evaluation`` record
   (``load: {"test_fraction": 0.1}``), so no library support beyond ``load`` is needed.
   One seed (``--seed``, default 0) is fixed here for every later stage: the search's seed
   and both trainings' seed (initial weights, data order, augmentation, drop path).
2. ``search``: ``aca_keras.search`` (its own default operation set, order, scorer, pooling and
   allocator; none is chosen here) on a documented subset of the 45,000: the first 10,000 in
   file order, which ``search`` splits into 5,000 weight / 5,000 architecture images with
   its seeded permutation. Supernet 5 cells, C = 8, 4 nodes, batch 64, 32x32 images, 16
   epochs, the collapse monitor's Hessian every 4 epochs. Resumes from the run's
   ``checkpoint.npz``.
3. ``train --arch aca|darts-v2``: one recipe for both (``recipe.json``, fixed by whichever
   training starts first): 8 cells, C = 16, auxiliary head (weight 0.4), drop path 0.2
   (DARTS's linear ramp), cutout 16, batch 96, SGD momentum 0.9, learning rate 0.025 cosine
   to 0, weight decay 3e-4, gradient clip 5, 15 epochs, on all 45,000 images; accuracy on
   the 5,000 held-out images at the end. The ACA cell is the search's; the DARTS V2 cell is the
   published one of the zoo entry ``darts-v2-cifar10``. ``aca_keras.training.train`` with its
   per-epoch checkpoint (``train_checkpoint/``) and ``resume``. The two trainings may run as
   two processes at once (``darts-v2`` needs only the split, so it can run beside the search).
4. ``publish``: both entries (weights, ONNX export verified against Keras), their cards stating
   the data (JPEG round trip), the exact split, the recipe, hardware, wall and CPU times,
   parameters and multiply-adds (``DerivedNetwork.flops``), and that the metric is
   validation accuracy on a held-out part of CIFAR-10's training set, not CIFAR-10 test
   accuracy. Then ``aca_keras.zoo.verify(name, evaluate=DATA)`` must pass for both, and the
   accuracy re-measured with the published model must equal the card's exactly.
5. ``status``: what is done, epochs reached, time spent, measured seconds per epoch, and the
   projected time left.

Budget (issue 17: search plus both trainings in about 8 CPU-hours, two single-thread
processes at most). Step times measured while preparing this tool on this machine (2-core
Intel Xeon, one TensorFlow thread per process, three processes sharing the two cores):

* search step (5-cell, C = 8 ACA supernet, batch 64 per half, 32x32, first order): 3.9 s
  (tracing 55 s, scoring and the derived model 33 s);
* training step (DARTS V2, 8 cells, C = 16, auxiliary head, batch 96, 32x32; 43.4 million
  multiply-adds per image): 1.12 s, i.e. 2.7e-4 s per image and million multiply-adds.

Projection at the defaults:

* search: 16 epochs x 78 steps (5,000 + 5,000 images, batch 64) x 3.9 s = 4,870 s, the
  Hessian at epochs 1, 4, 8, 12, 16 (5 x 20 Hessian-vector products, about one step each)
  390 s, tracing and scoring 90 s: about 5,350 s = 1.5 CPU-hours;
* training DARTS V2: 15 epochs x 468 steps (45,000 / 96) x 1.12 s = 7,860 s, plus tracing
  and the evaluations: about 2.2 CPU-hours;
* training ACA: proportional to its multiply-adds (printed when it starts): 2.2 CPU-hours if
  it costs what DARTS V2 costs, 3.3 if 1.5x (a cell without skip connections);
* total 5.9-7.0 CPU-hours, within the 8. Wall time with two processes: search beside the
  DARTS V2 training (2.2 h), then the ACA training (started at 1.5 h): about 3.7-4.8 hours.

Each stage prints its projection when it starts and its measured seconds per epoch and time
left after every epoch. Publishing (two ONNX exports, four evaluations of 5,000 images) takes
a few minutes.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as _dt
import fcntl
import hashlib
import json
import math
import os
import platform
import shlex
import sys
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
DEFAULT_DATA = REPO.parent / "shared" / "data" / "cifar10-jpeg" / "train.npz"
DEFAULT_WORK = REPO / "runs" / "cifar10-entries"
DEFAULT_ZOO = REPO / "zoo"
#: The architectures trained, and the zoo names they are published under.
ARCHS = ("aca", "darts-v2")
DEFAULT_NAMES = {"aca": "aca-cifar10", "darts-v2": "darts-v2-cifar10-trained"}
#: The zoo entry holding the published DARTS V2 cell (architecture only).
DARTS_V2_ENTRY = "darts-v2-cifar10"
DATA_NAME = "cifar10-jpeg"
DATA_DESCRIPTION = (
    "CIFAR-10 training set, all 50,000 images, decoded from a public copy of CIFAR-10 whose "
    "images were stored as JPEG files: the JPEG round trip moves pixel values by 3 to 8 grey "
    "levels on average against the original release. 32x32 RGB, 10 classes, 5,000 per class, "
    "shuffled once with a fixed seed (../shared/data/cifar10-jpeg/train.npz).")

SPLIT_DEFAULTS: dict[str, Any] = {"holdout": 5000, "seed": 0}
SEARCH_DEFAULTS: dict[str, Any] = {"images": 10_000, "epochs": 16, "cells": 5, "channels": 8,
                                   "batch_size": 64, "hessian_every": 4,
                                   "score_batches": None}
RECIPE_DEFAULTS: dict[str, Any] = {"cells": 8, "channels": 16, "epochs": 15, "batch_size": 96,
                                   "learning_rate": 0.025, "momentum": 0.9,
                                   "weight_decay": 3e-4, "grad_clip": 5.0, "cutout": 16,
                                   "drop_path": 0.2, "auxiliary_weight": 0.4}

# Step times measured here (see the module docstring); the projections scale them.
#: Seconds per search step: 5-cell, C = 8 supernet, batch 64 per half, 32x32 images.
SEARCH_STEP_S = 3.9
SEARCH_REFERENCE = {"cells": 5, "channels": 8, "batch_size": 64, "pixels": 32 * 32}
#: Tracing the search step, scoring the channels, building the derived model.
SEARCH_FIXED_S = 90.0
#: Training seconds per image and million multiply-adds (DARTS V2, 8 cells, C = 16: 1.12 s
#: per batch of 96 at 43.44 million multiply-adds per image).
TRAIN_S_PER_IMAGE_MMAC = 1.12 / (96 * 43.44)
#: Multiply-adds per image of DARTS V2 at 8 cells, C = 16, 32x32 (the reference network).
REFERENCE_MACS = 43.44e6
#: Tracing the training step (once per session).
TRAIN_FIXED_S = 20.0

FORMAT = "make_cifar10_entries"


class ToolError(Exception):
    """A problem the user can fix; printed as one line, exit status 2."""


class StopSession(Exception):
    """Raised after ``--stop-after-epochs`` epochs (the epoch's checkpoint is written)."""


# ------------------------------------------------------------------------------ small helpers


def _say(message: str) -> None:
    print(message, flush=True)


def _hours(seconds: float) -> str:
    return f"{seconds / 3600:.2f} h ({seconds / 60:.0f} min)"


def _sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise ToolError(f"cannot read {path}: {error}") from None
    if not isinstance(data, dict):
        raise ToolError(f"{path} does not hold a JSON object")
    return data


def _write_json(path: Path, data: Mapping[str, Any]) -> None:
    from aca_keras.io.atomic import atomic_write_json  # NumPy only, no TensorFlow

    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_json(path, dict(data))


def hardware() -> str:
    """CPU model, cores, TensorFlow threads and load average of this session."""
    model = platform.processor() or platform.machine()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    load = (", ".join(f"{v:.1f}" for v in os.getloadavg()) if hasattr(os, "getloadavg")
            else "?")
    threads = os.environ.get("TF_NUM_INTRAOP_THREADS", "default")
    return (f"CPU only: {os.cpu_count()} cores ({model}), {platform.system()} "
            f"{platform.machine()}; {threads} TensorFlow thread(s) per process; load average "
            f"{load} at the start")


def _command(argv: list[str]) -> str:
    return "python " + " ".join(shlex.quote(a) for a in
                                [os.path.relpath(__file__, REPO), *argv])


# ------------------------------------------------------------------------------ work directory


class Work:
    """The paths of a work directory (nothing is created here)."""

    def __init__(self, root: str | os.PathLike) -> None:
        self.root = Path(root).expanduser().resolve()

    @property
    def split(self) -> Path:
        return self.root / "split.json"

    @property
    def indices(self) -> Path:
        return self.root / "split_indices.npz"

    @property
    def recipe(self) -> Path:
        return self.root / "recipe.json"

    @property
    def search_dir(self) -> Path:
        return self.root / "search"

    def train_dir(self, arch: str) -> Path:
        return self.root / f"train-{arch}"

    @property
    def published(self) -> Path:
        return self.root / "published.json"

    def stage_dir(self, stage: str) -> Path:
        return self.search_dir if stage == "search" else self.train_dir(stage.split(":")[1])

    def stage_log(self, stage: str) -> Path:
        return self.stage_dir(stage) / "stage.json"

    def lock(self, stage: str) -> Path:
        return self.root / f".{stage.replace(':', '-')}.lock"


@contextlib.contextmanager
def stage_lock(work: Work, stage: str) -> Iterator[None]:
    """One process per stage: a second one is refused while the first runs (even paused)."""
    path = work.lock(stage)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            pid = handle.read().strip() or "?"
            raise ToolError(f"stage {stage} is already running in another process (pid {pid}); "
                            "wait for it, or stop it (its checkpoint is kept) and run this "
                            "again") from None
        handle.seek(0)
        handle.truncate()
        handle.write(str(os.getpid()))
        handle.flush()
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def stage_running(work: Work, stage: str) -> str | None:
    """``"running"`` or ``"paused"`` (stopped by SIGSTOP) while another process holds the
    stage's lock, else ``None``."""
    path = work.lock(stage)
    if not path.is_file():
        return None
    with open(path) as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            pid = handle.read().strip()
            with contextlib.suppress(OSError, IndexError):
                # /proc/PID/stat: "pid (name) state ..."; T is stopped
                if Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "T":
                    return "paused"
            return "running"
        fcntl.flock(handle, fcntl.LOCK_UN)
    return None


class StageLog:
    """``stage.json`` of a stage: its settings, its sessions (command, hardware, wall and CPU
    time), the wall and CPU time of every epoch and the session it ran in, and ``done``.

    Times are written after every epoch, so a killed session keeps what it finished; the part
    of an epoch cut off by a kill is not counted (it runs again after the resume)."""

    def __init__(self, path: Path, settings: Mapping[str, Any] | None = None) -> None:
        self.path = path
        if path.is_file():
            self.data = _read_json(path)
        else:
            self.data = {"format": FORMAT, "settings": dict(settings or {}), "sessions": [],
                         "epochs": {}, "done": False}
        self._wall0 = self._cpu0 = 0.0

    @property
    def settings(self) -> dict[str, Any]:
        return self.data["settings"]

    @property
    def done(self) -> bool:
        return bool(self.data.get("done"))

    def start_session(self, command: str) -> None:
        self._wall0, self._cpu0 = time.perf_counter(), time.process_time()
        self.data["sessions"].append({
            "command": command, "hardware": hardware(), "pid": os.getpid(),
            "started": _dt.datetime.now().isoformat(timespec="seconds"),
            "wall_s": 0.0, "cpu_s": 0.0})
        self.save()

    def _touch(self) -> None:
        session = self.data["sessions"][-1]
        session["wall_s"] = round(time.perf_counter() - self._wall0, 1)
        session["cpu_s"] = round(time.process_time() - self._cpu0, 1)

    def epoch(self, epoch: int, wall_s: float, cpu_s: float) -> None:
        self.data["epochs"][str(epoch)] = {"wall_s": round(wall_s, 1), "cpu_s": round(cpu_s, 1),
                                           "session": len(self.data["sessions"])}
        self._touch()
        self.save()

    def finish(self, **record: Any) -> None:
        self._touch()
        self.data["done"] = True
        self.data.update(record)
        self.save()

    def end_session(self) -> None:
        """Record the session's time when it stops without finishing the stage."""
        if self.data["sessions"]:
            self._touch()
            self.save()

    def save(self) -> None:
        _write_json(self.path, self.data)

    @property
    def wall_s(self) -> float:
        return float(sum(s["wall_s"] for s in self.data["sessions"]))

    @property
    def cpu_s(self) -> float:
        return float(sum(s["cpu_s"] for s in self.data["sessions"]))

    def epoch_seconds(self) -> float | None:
        """Median wall seconds of the epochs that were not a session's first (tracing)."""
        firsts, rest = set(), []
        for key in sorted(self.data["epochs"], key=int):
            record = self.data["epochs"][key]
            if record["session"] in firsts:
                rest.append(record["wall_s"])
            firsts.add(record["session"])
        if not rest:
            rest = [r["wall_s"] for r in self.data["epochs"].values()]
        if not rest:
            return None
        rest.sort()
        return float(rest[len(rest) // 2])


def resolve_settings(what: str, given: Mapping[str, Any], recorded: Mapping[str, Any] | None,
                     defaults: Mapping[str, Any], hint: str) -> dict[str, Any]:
    """Settings of a stage: the recorded ones when there are any (an explicit different value
    is refused), else the given ones over the defaults."""
    if recorded:
        clash = {k: (v, recorded.get(k)) for k, v in given.items()
                 if v is not None and recorded.get(k) != v}
        if clash:
            shown = ", ".join(f"{k}={v!r} (recorded {r!r})" for k, (v, r) in clash.items())
            raise ToolError(f"{what} was started with other settings: {shown}. {hint}")
        return dict(recorded)
    return {k: (given.get(k) if given.get(k) is not None else v) for k, v in defaults.items()}


# ------------------------------------------------------------------------------------- data


def require_split(work: Work) -> dict[str, Any]:
    """``split.json``, or a :class:`ToolError` saying to run ``split`` first."""
    if not work.split.is_file():
        raise ToolError(f"no split in {work.root}: run the split stage first: "
                        f"{_command(['split', '--work', str(work.root)])}")
    return _read_json(work.split)


def data_path(record: Mapping[str, Any] | None, given: str | None) -> Path:
    """The data file to read: ``--data`` when given, else the split's, checked to exist."""
    path = Path(given if given is not None else
                (record["data"] if record else DEFAULT_DATA)).expanduser()
    if not path.is_file():
        raise ToolError(f"data file not found: {path}. Pass --data PATH, the CIFAR-10 .npz with "
                        "keys x (N, 32, 32, 3) uint8 and y (N,) (default "
                        f"{DEFAULT_DATA}; see ../shared/data/cifar10-jpeg/README.md)")
    return path.resolve()


def load_data(record: Mapping[str, Any], given: str | None):
    """The ``DataBundle`` of the split: 45,000 training images, 5,000 held out as its test
    part, rebuilt with ``aca_keras.data.load`` and checked against the split's digests."""
    from aca_keras import data as data_lib

    path = data_path(record, given)
    digest = _sha256_file(path)
    if digest != record["data_sha256"]:
        raise ToolError(f"{path} is not the file this work directory was split from (sha256 "
                        f"{digest}, recorded {record['data_sha256']} for {record['data']})")
    bundle = data_lib.load(path, test_fraction=record["test_fraction"],
                           class_names=data_lib.CIFAR10_CLASS_NAMES, flip=True, name=DATA_NAME)
    if (data_lib.split_digest(bundle.x_test, bundle.y_test) != record["heldout_split_sha256"]
            or data_lib.split_digest(bundle.x_train, bundle.y_train)
            != record["train_split_sha256"]):
        raise ToolError(f"the split rebuilt from {path} differs from {record['data']}'s "
                        "recorded split (another aca_keras hold-out rule?)")
    return bundle


def split_stage(args: argparse.Namespace) -> int:
    """Hold out the validation images; record the split (idempotent)."""
    import numpy as np

    from aca_keras import data as data_lib
    from aca_keras.data.arrays import HOLDOUT_SEED, holdout

    work = Work(args.work)
    recorded = _read_json(work.split) if work.split.is_file() else None
    path = data_path(recorded, args.data)
    if recorded:
        resolve_settings("the split", {"holdout": args.holdout, "seed": args.seed},
                         {"holdout": recorded["holdout"], "seed": recorded["seed"]},
                         SPLIT_DEFAULTS, "Use a new --work for another split.")
        load_data(recorded, str(path))
        _say(f"split: already done in {work.split} ({recorded['train_images']:,} training, "
             f"{recorded['holdout']:,} held-out images; data sha256 matches)")
        return 0
    settings = resolve_settings("the split", {"holdout": args.holdout, "seed": args.seed},
                                None, SPLIT_DEFAULTS, "")
    with np.load(path) as archive:
        if "x" not in archive.files or "y" not in archive.files:
            raise ToolError(f"{path} has no arrays x and y (keys: {sorted(archive.files)})")
        n = len(archive["y"])
    count = int(settings["holdout"])
    if not 0 < count < n:
        raise ToolError(f"--holdout {count} must lie between 1 and {n - 1} ({path} holds {n} "
                        "images)")
    fraction = count / n
    positions = np.arange(n)
    train_idx, _, heldout_idx, _ = holdout(positions, positions, fraction)
    if len(heldout_idx) != count:
        raise ToolError(f"test_fraction {fraction!r} holds out {len(heldout_idx)} images, not "
                        f"{count}; choose another --holdout")
    bundle = data_lib.load(path, test_fraction=fraction, class_names=data_lib.CIFAR10_CLASS_NAMES,
                           flip=True, name=DATA_NAME)
    counts = np.bincount(bundle.y_test, minlength=bundle.num_classes)
    record = {
        "format": FORMAT, "data": str(path),
        "data_display": f"{path.parent.name}/{path.name}", "data_sha256": _sha256_file(path),
        "images": n, "image_shape": list(bundle.input_shape), "holdout": count,
        "test_fraction": fraction, "holdout_seed": HOLDOUT_SEED, "seed": int(settings["seed"]),
        "rule": (f"aca_keras.data.load(DATA, test_fraction={fraction!r}): the first {count:,} "
                 f"positions of numpy.random.default_rng({HOLDOUT_SEED}).permutation({n}), kept "
                 f"in file order, are held out; the other {n - count:,} images, in file "
                 "order, are the training part"),
        "heldout_indices_sha256": hashlib.sha256(
            np.ascontiguousarray(heldout_idx, dtype=np.int64).tobytes()).hexdigest(),
        "heldout_first_indices": [int(i) for i in heldout_idx[:10]],
        "heldout_split_sha256": data_lib.split_digest(bundle.x_test, bundle.y_test),
        "heldout_class_counts": [int(c) for c in counts],
        "train_images": int(bundle.num_train),
        "train_split_sha256": data_lib.split_digest(bundle.x_train, bundle.y_train),
        "mean": list(bundle.mean), "std": list(bundle.std),
        "created": _dt.datetime.now().isoformat(timespec="seconds"),
    }
    work.root.mkdir(parents=True, exist_ok=True)
    np.savez(work.indices, heldout=heldout_idx.astype(np.int64),
             train=train_idx.astype(np.int64))
    _write_json(work.split, record)
    _say(f"split: {n:,} images of {path}: {bundle.num_train:,} for search and training, "
         f"{count:,} held out (test_fraction {fraction:g}, hold-out seed {HOLDOUT_SEED}; per "
         f"class {record['heldout_class_counts']}); seed {record['seed']} for every stage "
         f"-> {work.split}")
    return 0


# ------------------------------------------------------------------------------- projections


def search_seconds(settings: Mapping[str, Any], image_shape: tuple[int, ...],
                   epochs: int | None = None) -> tuple[float, str]:
    """Projected seconds of ``epochs`` search epochs (all by default) and how they add up."""
    ref = SEARCH_REFERENCE
    step = (SEARCH_STEP_S * settings["cells"] / ref["cells"] * settings["channels"]
            / ref["channels"] * settings["batch_size"] / ref["batch_size"]
            * image_shape[0] * image_shape[1] / ref["pixels"])
    half = settings["images"] // 2
    steps = max(1, half // min(settings["batch_size"], half))
    epochs = settings["epochs"] if epochs is None else epochs
    every = settings["hessian_every"]
    hessians = (0 if not every else
                len([e for e in range(settings["epochs"] - epochs, settings["epochs"])
                     if e == 0 or (e + 1) % every == 0]))
    total = epochs * steps * step + hessians * 20 * step + SEARCH_FIXED_S
    how = (f"{epochs} epochs x {steps} steps x {step:.2f} s + {hessians} Hessian measurements "
           f"x 20 x {step:.2f} s + {SEARCH_FIXED_S:.0f} s tracing and scoring")
    return total, how


def train_seconds(recipe: Mapping[str, Any], train_images: int, macs: float,
                  epochs: int | None = None) -> tuple[float, str]:
    """Projected seconds of ``epochs`` training epochs (all by default) for a network with
    ``macs`` multiply-adds per image."""
    batch = recipe["batch_size"]
    steps = train_images // min(batch, train_images)
    step = TRAIN_S_PER_IMAGE_MMAC * batch * macs / 1e6
    epochs = recipe["epochs"] if epochs is None else epochs
    total = epochs * steps * step + TRAIN_FIXED_S
    return total, (f"{epochs} epochs x {steps} steps x {step:.2f} s ({macs / 1e6:.1f} M "
                   f"multiply-adds per image) + {TRAIN_FIXED_S:.0f} s tracing")


def estimated_macs(recipe: Mapping[str, Any], image_shape: tuple[int, ...]) -> float:
    """Multiply-adds per image of a network not built yet, scaled from DARTS V2 at 8 cells,
    C = 16, 32x32 (cells, C squared, pixels)."""
    return (REFERENCE_MACS * recipe["cells"] / 8 * (recipe["channels"] / 16) ** 2
            * image_shape[0] * image_shape[1] / 1024)


# ------------------------------------------------------------------------------- callbacks


def epoch_callbacks(log: StageLog, total_epochs: int, stop_after: int | None,
                    projected_epoch_s: float) -> list[Any]:
    """Keras callbacks: time every epoch into ``log``, print the time left, and stop the
    session after ``stop_after`` epochs (after the library's checkpoint of that epoch: these
    run after the library's own callbacks)."""
    import keras

    class EpochTimer(keras.callbacks.Callback):
        def __init__(self) -> None:
            super().__init__()
            self.finished = 0

        def on_epoch_begin(self, epoch, logs=None):
            self.wall0, self.cpu0 = time.perf_counter(), time.process_time()

        def on_epoch_end(self, epoch, logs=None):
            wall = time.perf_counter() - self.wall0
            log.epoch(epoch + 1, wall, time.process_time() - self.cpu0)
            self.finished += 1
            per_epoch = log.epoch_seconds() or projected_epoch_s
            left = (total_epochs - epoch - 1) * per_epoch
            _say(f"[{log.path.parent.name}] epoch {epoch + 1}/{total_epochs}: {wall:.0f} s "
                 f"wall; {per_epoch:.0f} s per epoch measured (projected "
                 f"{projected_epoch_s:.0f}); about {_hours(left)} left; stage total so far "
                 f"{_hours(log.wall_s)} wall, {_hours(log.cpu_s)} CPU")
            if stop_after is not None and self.finished >= stop_after \
                    and epoch + 1 < total_epochs:
                raise StopSession(f"stopped after epoch {epoch + 1} of {total_epochs} "
                                  f"(--stop-after-epochs {stop_after}); the checkpoint is "
                                  "written: run the same command again to continue")

    return [EpochTimer()]


@contextlib.contextmanager
def session(log: StageLog, command: str) -> Iterator[None]:
    """A session of a stage: recorded in ``log``; a ``--stop-after-epochs`` stop is a normal
    end (exit status 0), any other exception keeps the recorded time and propagates."""
    log.start_session(command)
    try:
        yield
    except StopSession as stop:
        log.end_session()
        _say(str(stop))
    except BaseException:
        log.end_session()
        raise


# ------------------------------------------------------------------------------------ search


def search_subset(bundle, count: int):
    """The search's data: the first ``count`` training images of the split, in file order
    (never the held-out ones), as a bundle without a test part."""
    from aca_keras import data as data_lib

    if not 2 <= count <= bundle.num_train:
        raise ToolError(f"--search-images {count} must lie between 2 and {bundle.num_train} "
                        "(the training part of the split)")
    return data_lib.load((bundle.x_train[:count], bundle.y_train[:count]),
                         class_names=bundle.class_names, flip=bundle.flip,
                         name=f"{DATA_NAME}-search")


def search_stage(args: argparse.Namespace) -> int:
    """Search the ACA cell (resumable)."""
    work = Work(args.work)
    split = require_split(work)
    log = StageLog(work.stage_log("search"))
    given = {"images": args.search_images, "epochs": args.search_epochs,
             "cells": args.search_cells, "channels": args.search_channels,
             "batch_size": args.search_batch_size, "hessian_every": args.hessian_every,
             "score_batches": args.score_batches}
    settings = resolve_settings("the search", given, log.settings or None, SEARCH_DEFAULTS,
                                "A search resumes with its own settings; drop the flag, or use "
                                "a new --work.")
    if log.done:
        _say(f"search: already done ({settings['epochs']} epochs, {_hours(log.wall_s)} "
             f"wall) -> {work.search_dir / 'architecture.json'}")
        return 0
    log.data["settings"] = settings
    recipe = _read_json(work.recipe) if work.recipe.is_file() else None
    eval_macro = dict(recipe or RECIPE_DEFAULTS)

    from aca_keras.io.checkpoint import read_checkpoint_meta
    from aca_keras.io.run_dir import RunDir
    from aca_keras.searching import pipeline

    with stage_lock(work, "search"):
        bundle = load_data(split, args.data)
        data = search_subset(bundle, settings["images"])
        del bundle
        run = RunDir(work.search_dir)
        done = (int(read_checkpoint_meta(run.checkpoint)["epochs_done"])
                if run.checkpoint.is_file() else 0)
        total, how = search_seconds(settings, data.input_shape)
        left, _ = search_seconds(settings, data.input_shape, settings["epochs"] - done)
        _say(f"search: {data.num_train:,} images (first of the split's training part; "
             f"{data.num_train // 2:,} weights / {data.num_train - data.num_train // 2:,} "
             f"architecture), supernet {settings['cells']} cells, C = {settings['channels']}, "
             f"{settings['epochs']} epochs, seed {split['seed']}; "
             + (f"resuming after epoch {done}; " if done else "")
             + f"projected {_hours(total)} in all ({how}), {_hours(left)} left")
        per_epoch = (total - SEARCH_FIXED_S) / settings["epochs"]
        extra = {k: settings[k] for k in ("score_batches",) if settings[k] is not None}
        with session(log, _command(args.argv)):
            pipeline.search(
                data, run_dir=run.path, resume=run.config.is_file(), epochs=settings["epochs"],
                cells=settings["cells"], channels=settings["channels"],
                batch_size=settings["batch_size"], seed=split["seed"],
                hessian_every=settings["hessian_every"], eval_cells=eval_macro["cells"],
                eval_channels=eval_macro["channels"], auxiliary=True,
                drop_path=eval_macro["drop_path"], verbose=args.verbose,
                callbacks=epoch_callbacks(log, settings["epochs"], args.stop_after_epochs,
                                          per_epoch),
                **extra)
            config = _read_json(run.config)
            log.finish(images=data.num_train, ops=config["ops"], scorer=config["scorer"],
                       pooling=config["pooling"], allocator=config["allocator"])
            _say(f"search: done in {_hours(log.wall_s)} wall, {_hours(log.cpu_s)} CPU -> "
                 f"{run.architecture}")
    return 0


# ----------------------------------------------------------------------------------- training


def architecture_of(work: Work, arch: str):
    """The cell to train: the search's (``aca``) or DARTS V2's from the zoo."""
    from aca_keras import zoo
    from aca_keras.io.run_dir import RunDir
    from aca_keras.space.architecture import Architecture

    if arch == "aca":
        path = RunDir(work.search_dir).architecture
        if not StageLog(work.stage_log("search")).done or not path.is_file():
            raise ToolError(f"the ACA cell comes from the search, which is not finished in "
                            f"{work.root}: run the search stage first: "
                            f"{_command(['search', '--work', str(work.root)])}")
        return Architecture.load(path)
    return zoo.architecture(DARTS_V2_ENTRY)


def training_recipe(work: Work, given: Mapping[str, Any], seed: int) -> dict[str, Any]:
    """The work directory's one training recipe: ``recipe.json``, created by the first
    training that starts (exclusively: two trainings starting at once agree on one)."""
    hint = ("Both trainings use the one recipe in recipe.json (set by the first training); "
            "drop the flag, or use a new --work.")
    if not work.recipe.is_file():
        recipe = resolve_settings("the training recipe", given, None, RECIPE_DEFAULTS, hint)
        recipe["seed"] = int(seed)
        work.root.mkdir(parents=True, exist_ok=True)
        with contextlib.suppress(FileExistsError):
            with open(work.recipe, "x", encoding="utf-8") as handle:
                handle.write(json.dumps(recipe, indent=2) + "\n")
    return resolve_settings("the training recipe", given, _read_json(work.recipe),
                            RECIPE_DEFAULTS, hint)


def train_stage(args: argparse.Namespace) -> int:
    """Train one architecture with the work directory's recipe (resumable)."""
    work = Work(args.work)
    split = require_split(work)
    stage = f"train:{args.arch}"
    log = StageLog(work.stage_log(stage))
    architecture = architecture_of(work, args.arch)
    recipe = training_recipe(work, {k: getattr(args, k) for k in RECIPE_DEFAULTS},
                             split["seed"])
    if log.done:
        _say(f"train {args.arch}: already done (validation accuracy "
             f"{log.data['accuracy']:.4f}) -> {work.train_dir(args.arch)}")
        return 0
    log.data["settings"] = recipe

    import keras

    from aca_keras.io.atomic import atomic_write_text
    from aca_keras.io.checkpoint import read_checkpoint_meta
    from aca_keras.io.run_dir import RunDir
    from aca_keras.models.derived import build_model
    from aca_keras.training import trainer

    with stage_lock(work, stage):
        bundle = load_data(split, args.data)
        run = RunDir(work.train_dir(args.arch))
        run.path.mkdir(parents=True, exist_ok=True)
        atomic_write_text(run.architecture, architecture.to_json() + "\n")
        keras.utils.set_random_seed(recipe["seed"])
        model = build_model(architecture, bundle.input_shape, bundle.num_classes,
                            cells=recipe["cells"], channels=recipe["channels"], auxiliary=True,
                            auxiliary_weight=recipe["auxiliary_weight"],
                            drop_path=recipe["drop_path"], mean=bundle.mean, std=bundle.std)
        macs = float(model.flops())
        done = (int(read_checkpoint_meta(run.train_checkpoint)["epoch"])
                if run.train_checkpoint.is_file() else 0)
        total, how = train_seconds(recipe, bundle.num_train, macs)
        left, _ = train_seconds(recipe, bundle.num_train, macs, recipe["epochs"] - done)
        _say(f"train {args.arch}: {bundle.num_train:,} images, {recipe['cells']} cells, "
             f"C = {recipe['channels']}, {recipe['epochs']} epochs, seed {recipe['seed']}; "
             + (f"resuming after epoch {done}; " if done else "")
             + f"projected {_hours(total)} in all ({how}), {_hours(left)} left")
        per_epoch = (total - TRAIN_FIXED_S) / recipe["epochs"]
        with session(log, _command(args.argv)):
            result = trainer.train(
                model, bundle, epochs=recipe["epochs"], batch_size=recipe["batch_size"],
                learning_rate=recipe["learning_rate"], momentum=recipe["momentum"],
                weight_decay=recipe["weight_decay"], grad_clip=recipe["grad_clip"],
                cutout=recipe["cutout"], drop_path=recipe["drop_path"],
                auxiliary_weight=recipe["auxiliary_weight"], seed=recipe["seed"],
                run_dir=run.path, resume=True, verbose=args.verbose,
                callbacks=epoch_callbacks(log, recipe["epochs"], args.stop_after_epochs,
                                          per_epoch))
            log.finish(accuracy=float(result.test_accuracy), macs=int(macs),
                       params=trainable_params(model))
            _say(f"train {args.arch}: done in {_hours(log.wall_s)} wall, {_hours(log.cpu_s)} "
                 f"CPU; validation accuracy {result.test_accuracy:.4f} on "
                 f"{bundle.num_test:,} held-out images -> {run.trained_model}")
    return 0


# ------------------------------------------------------------------------------------ publish


def trainable_params(model) -> int:
    """Trainable parameters of the inference model (no auxiliary head): the zoo's
    ``params.inference_trainable``."""
    return int(sum(math.prod(w.shape) for w in model.inference_model().trainable_weights))


def measure(model, x, y) -> tuple[int, int]:
    """Correct predictions of ``model.inference_model()`` on ``(x, y)``, the way
    ``aca_keras.zoo.verify(..., evaluate=...)`` measures them."""
    import numpy as np

    logits = model.inference_model().predict(x.astype("float32"), batch_size=256, verbose=0)
    return int(np.sum(np.argmax(logits, axis=-1) == y)), int(len(y))


def _training_settings(config: Mapping[str, Any]) -> dict[str, Any]:
    """``train_config.json`` without what the entry records elsewhere (the architecture, the
    versions)."""
    out = {k: v for k, v in config.items() if k not in ("versions", "model")}
    out["model"] = {k: v for k, v in config["model"].items() if k != "architecture"}
    return out


def recipe_difference(a: Mapping[str, Any], b: Mapping[str, Any]) -> list[str]:
    """Settings in which two ``train_config.json`` differ, apart from the cell trained."""
    one, two = _training_settings(a), _training_settings(b)
    keys = sorted(set(one) | set(two))
    return [k for k in keys if one.get(k) != two.get(k)]


def _stage_provenance(log: StageLog, command: str, settings: Mapping[str, Any], seed: int,
                      epochs: int, versions: Mapping[str, Any], data: str) -> dict[str, Any]:
    machines = sorted({s["hardware"].split("; load")[0] for s in log.data["sessions"]})
    sessions = len(log.data["sessions"])
    return {
        "by": "aca_keras", "command": command, "settings": dict(settings), "seed": int(seed),
        "epochs": int(epochs), "hardware": " | ".join(machines),
        "wall_time_s": round(log.wall_s, 1),
        "versions": {str(k): str(v) for k, v in versions.items() if k != "machine"},
        "data": data,
        "note": (f"{sessions} session(s); wall time {log.wall_s:,.0f} s and CPU time "
                 f"{log.cpu_s:,.0f} s summed over them (time lost to an interrupted epoch "
                 "not counted; a SIGSTOP pause counts as wall time, not CPU time). Measured "
                 "by zoo/tools/make_cifar10_entries.py; the machine was shared with other "
                 "jobs."),
    }


@dataclass
class Published:
    """What both entries are made of: the split, the recipe, the stage logs and configs, the
    data, and each trained model's measurement (``results[arch]``)."""

    split: dict[str, Any]
    recipe: dict[str, Any]
    names: dict[str, str]
    logs: dict[str, StageLog]
    configs: dict[str, dict[str, Any]]
    search_log: StageLog
    search_config: dict[str, Any]
    bundle: Any
    results: dict[str, dict[str, Any]] = field(default_factory=dict)


def publish_stage(args: argparse.Namespace) -> int:
    """Publish both entries, verify them (with ``evaluate``) and re-measure exactly."""
    work = Work(args.work)
    split = require_split(work)
    logs = {arch: StageLog(work.stage_log(f"train:{arch}")) for arch in ARCHS}
    missing = [arch for arch in ARCHS if not logs[arch].done]
    if missing:
        raise ToolError("publish needs both trainings; not finished: "
                        + ", ".join(missing) + ". Run first: "
                        + "; ".join(_command(["train", "--arch", a, "--work", str(work.root)])
                                    for a in missing))
    zoo_dir = Path(args.zoo_dir).expanduser().resolve()

    from aca_keras import zoo
    from aca_keras.io.run_dir import RunDir
    from aca_keras.models.derived import load_model

    runs = {arch: RunDir(work.train_dir(arch)) for arch in ARCHS}
    configs = {arch: _read_json(runs[arch].train_config) for arch in ARCHS}
    differ = recipe_difference(configs["aca"], configs["darts-v2"])
    if differ:
        raise ToolError(f"the two trainings did not use one recipe (they differ in {differ}); "
                        "they cannot be published as a comparison")
    ctx = Published(split=split, recipe=logs["aca"].settings,
                    names={"aca": args.aca_name, "darts-v2": args.darts_name}, logs=logs,
                    configs=configs, search_log=StageLog(work.stage_log("search")),
                    search_config=_read_json(RunDir(work.search_dir).config),
                    bundle=load_data(split, args.data))
    trained = {arch: runs[arch].trained_model for arch in ARCHS}
    for arch in ARCHS:
        model = load_model(trained[arch], compile=False)
        correct, total = measure(model, ctx.bundle.x_test, ctx.bundle.y_test)
        ctx.results[arch] = {"correct": correct, "total": total, "accuracy": correct / total,
                             "macs": int(model.flops()), "params": trainable_params(model),
                             "trained_accuracy": float(logs[arch].data["accuracy"])}
        _say(f"publish: {arch} measures {correct}/{total} = {100 * correct / total:.2f}% on "
             "the held-out images")
    for arch in ARCHS:
        entry = zoo.publish(trained[arch], ctx.names[arch], zoo_dir=zoo_dir, overwrite=True,
                            date=args.date, exports=("onnx",), **entry_arguments(ctx, arch))
        _say(f"publish: {entry.name} -> {entry.path}")

    record, failures = check_published(ctx, zoo_dir, data_path(split, args.data))
    _write_json(work.published, record)
    if failures:
        raise ToolError("published, but the checks failed: " + "; ".join(failures))
    _say(f"publish: both entries verified (with --evaluate) in {zoo_dir}; summary -> "
         f"{work.published}")
    return 0


def entry_arguments(ctx: Published, arch: str) -> dict[str, Any]:
    """``aca_keras.zoo.publish`` arguments of one entry: title, summary, data, metrics with
    the evaluation record of the split, provenance, tags, notes, citation."""
    from aca_keras import zoo

    split, recipe, names, r = ctx.split, ctx.recipe, ctx.names, ctx.results[arch]
    n_val, n_train = ctx.bundle.num_test, ctx.bundle.num_train
    not_test = ("The accuracy is validation accuracy on a held-out part of CIFAR-10's training "
                "set, not CIFAR-10 test accuracy.")
    recipe_words = (f"{recipe['cells']} cells, C = {recipe['channels']}, auxiliary head "
                    f"(weight {recipe['auxiliary_weight']}), drop path {recipe['drop_path']} "
                    f"(linear ramp), cutout {recipe['cutout']}, batch {recipe['batch_size']}, "
                    f"SGD momentum {recipe['momentum']}, learning rate "
                    f"{recipe['learning_rate']} cosine to 0, weight decay "
                    f"{recipe['weight_decay']}, gradient clip {recipe['grad_clip']}, "
                    f"{recipe['epochs']} epochs, seed {recipe['seed']}")
    evaluation = {"data": split["data_display"], "data_sha256": split["data_sha256"],
                  "load": {"test_fraction": split["test_fraction"]}, "split": "test",
                  "indices": (f"{split['rule']} (sha256 of the held-out indices as int64: "
                              f"{split['heldout_indices_sha256']})"),
                  "seed": int(split["holdout_seed"]), "images": n_val,
                  "split_sha256": split["heldout_split_sha256"]}
    metrics = [
        {"name": "top1_accuracy", "value": round(100 * r["accuracy"], 2), "unit": "%",
         "split": (f"validation: the {n_val:,} images held out from CIFAR-10's training set "
                   f"({split['data_display']}, JPEG round trip) by "
                   f"aca_keras.data.load(test_fraction={split['test_fraction']!r}), never "
                   "seen by the search or the training; not CIFAR-10's test set"),
         "how": "measured",
         "source": ("the published model's inference_model().predict on the held-out images "
                    f"after {recipe['epochs']} training epochs (as aca-zoo verify --evaluate "
                    "measures it)"),
         "note": (f"{r['correct']} of {r['total']} images. {not_test} One run, one seed: no "
                  "spread is known."),
         "evaluation": evaluation},
        {"name": "multiply_adds", "value": round(r["macs"] / 1e6, 2), "unit": "M",
         "split": "n/a", "how": "measured",
         "source": ("aca_keras DerivedNetwork.flops(): multiply-adds of one "
                    f"{'x'.join(map(str, ctx.bundle.input_shape))} image through the "
                    "inference model (no auxiliary head)")}]
    dataset = {"name": DATA_NAME, "description": DATA_DESCRIPTION,
               "class_names": list(ctx.bundle.class_names), "train_images": n_train,
               "test_images": n_val,
               "notes": (f"The {n_val:,} 'test' images are the validation part held out from "
                         f"CIFAR-10's training set ({split['rule']}); CIFAR-10's own test set "
                         "was not used. The normalisation statistics were computed by "
                         f"aca_keras on the {n_train:,} training images. Every image went "
                         "through the JPEG round trip.")}
    config = ctx.configs[arch]
    training = _stage_provenance(
        ctx.logs[arch], ctx.logs[arch].data["sessions"][0]["command"],
        _training_settings(config), config["seed"], config["epochs"],
        config.get("versions", {}),
        f"the {n_train:,} training images of the split ({split['data_display']} without the "
        f"{n_val:,} held-out images)")
    aca, darts = ctx.results["aca"], ctx.results["darts-v2"]
    comparison = (f"Compared at equal recipe ({recipe_words}), on the same {n_train:,} "
                  f"training and {n_val:,} held-out images: ACA {100 * aca['accuracy']:.2f}% "
                  f"with {aca['params']:,} trainable parameters and {aca['macs'] / 1e6:.1f} M "
                  f"multiply-adds per image, DARTS V2 {100 * darts['accuracy']:.2f}% with "
                  f"{darts['params']:,} trainable parameters and {darts['macs'] / 1e6:.1f} M "
                  f"multiply-adds (entries {names['aca']} and {names['darts-v2']}). One run, "
                  "one seed each: no spread is known.")
    notes = [not_test, comparison,
             f"Split: {split['rule']}. Re-measure: aca-zoo verify {names[arch]} --evaluate "
             f"{split['data_display']} (the path of that file).",
             f"Recipe: {recipe_words}; DARTS's evaluation recipe shortened from 20 cells, "
             "C = 36 and 600 epochs to fit about 8 CPU-hours for the search and both "
             "trainings; the accuracy is far below a full training's.",
             "Made by zoo/tools/make_cifar10_entries.py, stages split, search, train --arch "
             "aca, train --arch darts-v2 and publish (the command of each stage's first "
             "session is in the provenance)."]
    if r["trained_accuracy"] != r["accuracy"]:
        notes.append(f"At the end of the training aca_keras.training measured "
                     f"{100 * r['trained_accuracy']:.2f}% through its test pipeline; the metric "
                     "is the published model's own measurement.")
    common = {"dataset": dataset, "metrics": metrics, "notes": notes}
    if arch == "darts-v2":
        darts_entry = zoo.info(DARTS_V2_ENTRY)
        search = dict(darts_entry.document["provenance"]["search"])
        search["note"] = (f"Not searched here: the cell is DARTS V2's published genotype, taken "
                          f"from the zoo entry {DARTS_V2_ENTRY}.")
        return {**common,
                "title": (f"DARTS V2 cell trained on CIFAR-10 (JPEG round trip) beside "
                          f"{names['aca']}, {recipe['cells']} cells, C = {recipe['channels']}, "
                          f"{recipe['epochs']} epochs"),
                "summary": (f"The published DARTS V2 cell (second-order DARTS), trained by "
                            f"aca_keras in a {recipe['cells']}-cell, C = {recipe['channels']} "
                            f"network for {recipe['epochs']} epochs on {n_train:,} CIFAR-10 "
                            "training images with exactly the recipe, data, split and seed of "
                            f"{names['aca']}, as its baseline. {not_test}"),
                "provenance": {"search": search, "training": training},
                "citation": darts_entry.document["citation"],
                "tags": ["darts", "second-order", DATA_NAME, "trained", "validation-split"]}
    sc, log = ctx.search_config, ctx.search_log
    images = log.data.get("images", log.settings["images"])
    search = _stage_provenance(
        log, log.data["sessions"][0]["command"],
        {k: v for k, v in sc.items() if k not in ("versions", "data_dir")}, sc["seed"],
        sc["epochs"], sc.get("versions", {}),
        f"the first {images:,} of the {n_train:,} training images of the split "
        f"({split['data_display']}, file order), split by aca_keras.search into "
        f"{images // 2:,} weight and {images - images // 2:,} architecture images (its seeded "
        "permutation); the held-out images were not used")
    return {**common,
            "title": (f"ACA cell searched and trained on CIFAR-10 (JPEG round trip), "
                      f"{recipe['cells']} cells, C = {recipe['channels']}, "
                      f"{recipe['epochs']} epochs"),
            "summary": (f"An ACA cell pair searched by aca_keras.search with its default scorer "
                        f"({sc['scorer']}), pooling ({sc['pooling']}) and allocator "
                        f"({sc['allocator']}), ops {sc['ops']!r}, on {images:,} CIFAR-10 "
                        f"training images (a {sc['cells']}-cell, C = {sc['channels']} supernet, "
                        f"{sc['epochs']} epochs), then trained in a {recipe['cells']}-cell, "
                        f"C = {recipe['channels']} network for {recipe['epochs']} epochs on "
                        f"{n_train:,} images; DARTS V2 was trained beside it with the identical "
                        f"recipe ({names['darts-v2']}). {not_test}"),
            "provenance": {"search": search, "training": training},
            "tags": ["aca", DATA_NAME, "trained", "validation-split"]}


def check_published(ctx: Published, zoo_dir: Path, path: Path
                    ) -> tuple[dict[str, Any], list[str]]:
    """``aca_keras.zoo.verify(name, evaluate=path)`` of both entries, and the accuracy measured
    again with each published model, which must equal the card's exactly: the summary record
    and the failures."""
    from aca_keras import zoo

    record: dict[str, Any] = {"zoo_dir": str(zoo_dir), "entries": {},
                              "search_wall_s": ctx.search_log.wall_s,
                              "search_cpu_s": ctx.search_log.cpu_s}
    failures = []
    for arch in ARCHS:
        name = ctx.names[arch]
        report = zoo.verify(name, zoo_dir=zoo_dir, evaluate=path)
        _say(report.format())
        entry = zoo.info(name, zoo_dir=zoo_dir)
        correct, total = measure(zoo.load(name, zoo_dir=zoo_dir), ctx.bundle.x_test,
                                 ctx.bundle.y_test)
        card = next(m.value for m in entry.metrics if m.name == "top1_accuracy")
        again = round(100 * correct / total, 2)
        _say(f"publish: {name}: re-measured {again:.2f}% ({correct}/{total}), card "
             f"{card:.2f}%: {'equal' if again == card else 'DIFFERENT'}")
        failures += report.failures
        if again != card:
            failures.append(f"{name}: re-measured {again}% but the card says {card}%")
        record["entries"][arch] = {
            "name": name, "path": str(entry.path), "accuracy_percent": card,
            "remeasured_percent": again, "correct": correct, "images": total,
            "params": entry.params, "multiply_adds": ctx.results[arch]["macs"],
            "verify_ok": report.ok, "train_wall_s": ctx.logs[arch].wall_s,
            "train_cpu_s": ctx.logs[arch].cpu_s}
    record["ok"] = not failures
    return record, failures


# ------------------------------------------------------------------------------------- status


def _epochs_done(path: Path, key: str) -> int:
    from aca_keras.io.checkpoint import read_checkpoint_meta  # NumPy only

    return int(read_checkpoint_meta(path)[key]) if path.is_file() else 0


def status_stage(args: argparse.Namespace) -> int:
    """What is done, epochs reached, time spent, and the projected time left."""
    from aca_keras.io.run_dir import RunDir  # the standard library only

    work = Work(args.work)
    _say(f"work directory: {work.root}")
    if not work.split.is_file():
        _say(f"split:          not done; next: {_command(['split', '--work', str(work.root)])}")
        return 0
    split = _read_json(work.split)
    shape = tuple(split["image_shape"])
    _say(f"split:          done: {split['train_images']:,} training, {split['holdout']:,} "
         f"held out ({split['data_display']}, test_fraction {split['test_fraction']:g}), "
         f"seed {split['seed']}")
    left_total = 0.0

    search_log = StageLog(work.stage_log("search"))
    search_settings = search_log.settings or dict(SEARCH_DEFAULTS)
    done = _epochs_done(RunDir(work.search_dir).checkpoint, "epochs_done")
    left = 0.0
    if not search_log.done:
        projected, _ = search_seconds(search_settings, shape, search_settings["epochs"] - done)
        measured = search_log.epoch_seconds()
        left = (projected if measured is None
                else (search_settings["epochs"] - done) * measured + SEARCH_FIXED_S)
        left_total += left
    _say("search:         " + _stage_line(search_log, done, search_settings["epochs"], left,
                                          stage_running(work, "search")))

    recipe = (_read_json(work.recipe) if work.recipe.is_file() else dict(RECIPE_DEFAULTS))
    for arch in ARCHS:
        log = StageLog(work.stage_log(f"train:{arch}"))
        done = _epochs_done(RunDir(work.train_dir(arch)).train_checkpoint, "epoch")
        left = 0.0
        if not log.done:
            macs = float(log.data.get("macs") or estimated_macs(recipe, shape))
            projected, _ = train_seconds(recipe, split["train_images"], macs,
                                         recipe["epochs"] - done)
            measured = log.epoch_seconds()
            left = (projected if measured is None
                    else (recipe["epochs"] - done) * measured + TRAIN_FIXED_S)
            left_total += left
        line = _stage_line(log, done, recipe["epochs"], left,
                           stage_running(work, f"train:{arch}"))
        if log.done:
            line += f"; validation accuracy {log.data['accuracy']:.4f}"
        elif arch == "aca" and not search_log.done:
            line += " (waits for the search)"
        _say(f"train {arch:9s} " + line)
    if work.published.is_file():
        record = _read_json(work.published)
        shown = ", ".join(f"{e['name']} {e['accuracy_percent']:.2f}%"
                          for e in record["entries"].values())
        _say(f"publish:        {'done' if record['ok'] else 'FAILED checks'}: {shown} in "
             f"{record['zoo_dir']}")
    else:
        _say("publish:        not done")
    _say(f"projected time left: {_hours(left_total)} of CPU (one thread per process)")
    return 0


def _stage_line(log: StageLog, done: int, total: int, left: float, running: str | None
                ) -> str:
    if not log.data["sessions"]:
        return f"not started ({total} epochs; projected {_hours(left)})"
    state = "done" if log.done else (running or "stopped")
    measured = log.epoch_seconds()
    text = (f"{state}: epoch {done}/{total}, {_hours(log.wall_s)} wall, {_hours(log.cpu_s)} "
            f"CPU over {len(log.data['sessions'])} session(s)")
    if measured is not None:
        text += f", {measured:.0f} s per epoch"
    if not log.done:
        text += f", about {_hours(left)} left"
    return text


# ---------------------------------------------------------------------------------------- CLI


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="Stages: split, search, train --arch aca|darts-v2, publish, status. See the "
               "module docstring for the budget.")
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--work", default=str(DEFAULT_WORK),
                        help=f"work directory holding every stage's state (default {DEFAULT_WORK})")
    common.add_argument("--data", default=None,
                        help=f"the CIFAR-10 .npz (default: the split's, else {DEFAULT_DATA})")
    common.add_argument("--threads", type=int, default=1,
                        help="TensorFlow threads of this process (default 1)")
    common.add_argument("--quiet", dest="verbose", action="store_const", const=0, default=1,
                        help="no progress lines from the library")
    common.add_argument("--stop-after-epochs", type=int, default=None, metavar="N",
                        help="stop this session after N epochs (resumable; search and train)")
    sub = parser.add_subparsers(dest="stage", required=True, metavar="STAGE")

    p = sub.add_parser("split", parents=[common], help="hold out the validation images")
    p.add_argument("--holdout", type=int, default=None,
                   help=f"held-out images (default {SPLIT_DEFAULTS['holdout']})")
    p.add_argument("--seed", type=int, default=None,
                   help=f"seed of the search and both trainings (default {SPLIT_DEFAULTS['seed']})")

    p = sub.add_parser("search", parents=[common], help="search the ACA cell")
    for flag, key, kind in (("--search-images", "images", int), ("--search-epochs", "epochs", int),
                            ("--search-cells", "cells", int),
                            ("--search-channels", "channels", int),
                            ("--search-batch-size", "batch_size", int),
                            ("--hessian-every", "hessian_every", int),
                            ("--score-batches", "score_batches", int)):
        default = SEARCH_DEFAULTS[key]
        p.add_argument(flag, type=kind, default=None,
                       help=f"default {default if default is not None else 'aca_keras.search'}")

    p = sub.add_parser("train", parents=[common], help="train one architecture")
    p.add_argument("--arch", required=True, choices=ARCHS)
    for key, value in RECIPE_DEFAULTS.items():
        p.add_argument("--" + key.replace("_", "-"), type=type(value), default=None,
                       help=f"default {value}")

    p = sub.add_parser("publish", parents=[common], help="publish and verify both entries")
    p.add_argument("--zoo-dir", default=str(DEFAULT_ZOO), help=f"default {DEFAULT_ZOO}")
    p.add_argument("--aca-name", default=DEFAULT_NAMES["aca"])
    p.add_argument("--darts-name", default=DEFAULT_NAMES["darts-v2"])
    p.add_argument("--date", default=None, help="publication date YYYY-MM-DD (default today)")

    sub.add_parser("status", parents=[common], help="what is done and what is left")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run one stage; 0 on success (or a ``--stop-after-epochs`` stop), 2 on a clear error."""
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    args.argv = argv
    if args.threads < 1:
        print("error: --threads must be at least 1", file=sys.stderr)
        return 2
    # before TensorFlow starts (it reads them once)
    os.environ["TF_NUM_INTRAOP_THREADS"] = str(args.threads)
    os.environ["TF_NUM_INTEROP_THREADS"] = str(args.threads)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    stages = {"split": split_stage, "search": search_stage, "train": train_stage,
              "publish": publish_stage, "status": status_stage}
    try:
        return stages[args.stage](args)
    except ToolError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except Exception as error:
        from aca_keras.errors import AcaError  # no TensorFlow

        if not isinstance(error, AcaError):
            raise
        print(f"error: {type(error).__name__}: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
