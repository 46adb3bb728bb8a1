"""Create the zoo entries ``aca-cifar10`` and ``darts-v2-cifar10-trained``: an ACA cell searched
on CIFAR-10 (JPEG round trip) and the DARTS V2 cell, both trained with one recipe on the same
45,000 images and measured on the same 5,000 held-out images (issue 17).

    python zoo/tools/make_cifar10_entries.py split    [--data PATH] [--work DIR] [--holdout 5000]
                                                      [--seed 0] [--epochs 15 ...: the recipe]
    python zoo/tools/make_cifar10_entries.py search   [--work DIR] [--search-epochs 16] ...
    python zoo/tools/make_cifar10_entries.py train --arch darts-v2 [--work DIR]
    python zoo/tools/make_cifar10_entries.py train --arch aca      [--work DIR]
    python zoo/tools/make_cifar10_entries.py publish  [--work DIR] [--zoo-dir zoo]
    python zoo/tools/make_cifar10_entries.py status   [--work DIR]

Every stage keeps its state in the work directory, by default ``zoo/tools/work/cifar10-entries/``,
a folder that git tracks (the package data globs of ``pyproject.toml`` reach one level below
``zoo/`` only, so nothing there is shipped). The work runs over several machine sessions, each
starting from a fresh checkout of the repository: **commit the work directory at the end of
every session** (``git add zoo/tools/work/cifar10-entries && git commit``), or its state (the
split, the recipe, the checkpoints, the time records) is lost. ``status`` warns when the work
directory is git-ignored or has uncommitted changes. Its lock files and the publish stage's
scratch copy of the zoo (``zoo-staging/``) are git-ignored; the library's checkpoints (a few MB
each) are committed, since a later session resumes from them.

Every stage is idempotent (a finished stage says so and does nothing) and resumable: a stage
that was killed, stopped (``--stop-after-epochs N``, N >= 1) or paused (``kill -STOP`` /
``kill -CONT``) continues from its last per-epoch checkpoint when the same command is run
again. Settings are recorded by the first session of a stage and reused by later ones (a
different explicit value is refused). Each process uses one TensorFlow thread (``--threads``).

Every session records the code it ran: the sha256 over the sorted contents of
``aca_keras/**/*.py``, with ``git rev-parse HEAD`` and whether ``aca_keras`` had uncommitted
changes. A stage is not resumed under a different code hash, and the two trainings are not
published as a comparison when they ran different code, unless ``--allow-code-change`` is given
(the entries' cards then say so).

The tool's own records (``stages/<stage>.json``: settings, sessions, per-epoch times) live in
``<work>/stages/``, apart from the library's run directories (``search/``, ``train-aca/``,
``train-darts-v2/``): deleting a corrupt run directory, as a library error may advise, keeps
them. The tool names exactly what to delete when the library reports a corrupt run.

Stages:

1. ``split``: ``aca_keras.data.load(DATA, test_fraction=0.1)`` holds out 5,000 of the 50,000
   images of ``../shared/data/cifar10-jpeg/train.npz``: the library's fixed hold-out rule, the
   first 5,000 positions of ``numpy.random.default_rng(0).permutation(50000)``, kept in file
   order. ``split.json`` records the rule, the file's sha256, the held-out indices' sha256 and
   the digests of both parts; ``split_indices.npz`` holds the indices. ``aca-zoo verify NAME
   --evaluate DATA`` rebuilds exactly this split from the entries' ``evaluation`` record
   (``load: {"test_fraction": 0.1}``), so no library support beyond ``load`` is needed.
   One seed (``--seed``, default 0) is fixed here for every later stage: the search's seed
   and both trainings' seed (initial weights, data order, augmentation, drop path). The
   training recipe is fixed here too (``recipe.json``, created atomically; the recipe flags
   ``--cells``, ``--channels``, ``--epochs``, ... of ``split`` change it), so that the search's
   derived network (``eval_cells``, ``eval_channels``, ``drop_path``) and both trainings use
   it; a training given other recipe values is refused.
2. ``search``: ``aca_keras.search`` (its own default operation set, order, scorer, pooling and
   allocator; none is chosen here) on a documented subset of the 45,000: the first 10,000 in
   file order, which ``search`` splits into 5,000 weight / 5,000 architecture images with
   its seeded permutation. Supernet 5 cells, C = 8, 4 nodes, batch 64, 32x32 images, 6
   epochs, the collapse monitor's Hessian every 3 epochs (after epochs 1, 3 and 6). Resumes
   from the run's ``checkpoint.npz``.
3. ``train --arch aca|darts-v2``: the one recipe of ``recipe.json``: 8 cells, C = 16, auxiliary
   head (weight 0.4), drop path 0.2 (DARTS's linear ramp), cutout 16, batch 96, SGD momentum
   0.9, learning rate 0.025 cosine to 0, weight decay 3e-4, gradient clip 5, 6 epochs, on all
   45,000 images; accuracy on the 5,000 held-out images at the end. The ACA cell is the
   search's; the DARTS V2 cell is the published one of the zoo entry ``darts-v2-cifar10``.
   ``aca_keras.training.train`` with its per-epoch checkpoint (``train_checkpoint/``) and
   ``resume``. The two trainings may run as two processes at once (``darts-v2`` needs only the
   split, so it can run beside the search).
4. ``publish``: both entries (weights, ONNX export verified against Keras), their cards stating
   the data (JPEG round trip), the exact split (and that the DARTS V2 cell's original search
   did see the held-out images, which are part of CIFAR-10's training set), the recipe, the
   unequal search budgets, hardware, wall and CPU times, parameters and multiply-adds
   (``DerivedNetwork.flops``), paired statistics of the two models on the same held-out images
   (exact McNemar test, Wilson 95 % intervals), and that the metric is validation accuracy on a
   held-out part of CIFAR-10's training set, not CIFAR-10 test accuracy. The entries are
   published into ``<work>/zoo-staging`` first and checked there (``aca_keras.zoo.verify(name,
   evaluate=DATA)`` and the accuracy re-measured with the published model, which must equal the
   card's exactly); only then are they copied into the zoo, whose entries and index are then
   verified. A failed check leaves the zoo untouched. An existing entry of the same name that
   this tool did not make (no tag ``made-by-make_cifar10_entries``) is never overwritten.
5. ``status``: what is done, epochs reached, time spent (in sessions and in completed epochs),
   measured seconds per epoch, the projected time left against the 8 CPU-hour budget, and
   warnings about the work directory's git state.

Times: a session's wall and CPU time count from its process's start (imports, data loading and
tracing included; the time after the last record of a killed process is lost); the time in
completed epochs is reported beside it.

Budget (issue 17: search plus both trainings in about 8 CPU-hours, two single-thread
processes at most). Step times measured on the machine the entries are made on (2-core AMD
EPYC, 2026-12-05; one TensorFlow thread per process, two processes on the two cores):

* search step (5-cell, C = 8 ACA supernet, batch 64 per half, 32x32, first order): 11.1 s
  (median of 8 steps; tracing about 50 s), plus scoring and the derived model (33 s on the
  2-core Intel Xeon this tool was first sized on, 2.85x faster per step: about 95 s here);
* training step (DARTS V2, 8 cells, C = 16, auxiliary head, batch 96, 32x32; 43.4 million
  multiply-adds per image): 3.19 s (median of 12 steps; tracing about 15 s), i.e. 7.7e-4 s
  per image and million multiply-adds.

The first sizing (Xeon: 3.9 s and 1.12 s per step) planned a 16-epoch search and 15-epoch
trainings; at this machine's speed that plan takes 16-19 CPU-hours, so the defaults are now
a 6-epoch search and 6-epoch trainings. Projection at the defaults:

* search: 6 epochs x 78 steps (5,000 + 5,000 images, batch 64) x 11.1 s = 5,195 s, the
  Hessian at epochs 1, 3, 6 (3 x 20 Hessian-vector products, about one step each) 666 s,
  tracing and scoring 150 s: about 6,010 s = 1.67 CPU-hours;
* training DARTS V2: 6 epochs x 468 steps (45,000 / 96) x 3.19 s = 8,960 s, plus tracing
  and the evaluations: about 2.5 CPU-hours;
* training ACA: proportional to its multiply-adds (printed when it starts, and stored so that
  ``status`` projects with them): 2.5 CPU-hours if it costs what DARTS V2 costs, 3.75 if 1.5x
  (a cell without skip connections);
* total 6.7-7.9 CPU-hours, within the 8. Wall time with two processes: search beside the
  DARTS V2 training (2.5 h), then the ACA training (started at 1.67 h): about 4.2-5.4 hours.

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
import importlib.util
import json
import math
import os
import platform
import shlex
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

_IMPORTED_AT = time.time()

REPO = Path(__file__).resolve().parents[2]
TOOL = Path(__file__).resolve()
DEFAULT_DATA = REPO.parent / "shared" / "data" / "cifar10-jpeg" / "train.npz"
DEFAULT_WORK = REPO / "zoo" / "tools" / "work" / "cifar10-entries"
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
#: The tag every entry made by this tool carries; ``publish`` overwrites only entries with it.
MARKER_TAG = "made-by-make_cifar10_entries"
#: Issue 17's budget for the search and both trainings.
BUDGET_CPU_S = 8 * 3600.0

SPLIT_DEFAULTS: dict[str, Any] = {"holdout": 5000, "seed": 0}
SEARCH_DEFAULTS: dict[str, Any] = {"images": 10_000, "epochs": 6, "cells": 5, "channels": 8,
                                   "batch_size": 64, "hessian_every": 3,
                                   "score_batches": None}
#: The search's command-line flags and the settings they set.
SEARCH_FLAGS = (("--search-images", "images"), ("--search-epochs", "epochs"),
                ("--search-cells", "cells"), ("--search-channels", "channels"),
                ("--search-batch-size", "batch_size"), ("--hessian-every", "hessian_every"),
                ("--score-batches", "score_batches"))
RECIPE_DEFAULTS: dict[str, Any] = {"cells": 8, "channels": 16, "epochs": 6, "batch_size": 96,
                                   "learning_rate": 0.025, "momentum": 0.9,
                                   "weight_decay": 3e-4, "grad_clip": 5.0, "cutout": 16,
                                   "drop_path": 0.2, "auxiliary_weight": 0.4}

# Step times measured here (see the module docstring); the projections scale them.
#: Seconds per search step: 5-cell, C = 8 supernet, batch 64 per half, 32x32 images.
SEARCH_STEP_S = 11.1
SEARCH_REFERENCE = {"cells": 5, "channels": 8, "batch_size": 64, "pixels": 32 * 32}
#: Tracing the search step, scoring the channels, building the derived model.
SEARCH_FIXED_S = 150.0
#: Training seconds per image and million multiply-adds (DARTS V2, 8 cells, C = 16: 3.19 s
#: per batch of 96 at 43.44 million multiply-adds per image).
TRAIN_S_PER_IMAGE_MMAC = 3.19 / (96 * 43.44)
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


def create_json_exclusive(path: Path, data: Mapping[str, Any]) -> bool:
    """Create ``path`` holding ``data`` atomically and exclusively: the JSON is written to a
    temporary file beside it, flushed to disk, then hard-linked into place (``os.link`` fails
    when ``path`` exists, so two processes never both create it and no reader ever sees half
    a file). ``False`` when ``path`` existed already (it is left as it is)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        with open(tmp, "w", encoding="utf-8") as handle:
            handle.write(json.dumps(dict(data), indent=2) + "\n")
            handle.flush()
            os.fsync(handle.fileno())
        try:
            os.link(tmp, path)
        except FileExistsError:
            return False
        return True
    finally:
        tmp.unlink(missing_ok=True)


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


def _command(argv: Sequence[str]) -> str:
    """The command line of this process, as typed (the stage log's record of a session)."""
    return "python " + " ".join(shlex.quote(str(a)) for a in
                                [os.path.relpath(TOOL, REPO), *argv])


def display_path(path: str | os.PathLike) -> str:
    """``path`` relative to the repository when it lies in the repository or in the ``shared``
    folder beside it (``../shared/...``, the project's layout), else absolute: what a clean
    command shows. Symbolic links are kept as written (a ``../shared`` that is a link stays
    ``../shared``)."""
    shown = Path(os.path.abspath(Path(path).expanduser()))
    for root in (REPO, REPO.parent / "shared"):
        try:
            shown.relative_to(root)
        except ValueError:
            continue
        return os.path.relpath(shown, REPO)
    return str(shown)


def clean_command(stage: str, work: Work, settings: Mapping[str, Any] | None = None, *,
                  arch: str | None = None, data: str | None = None) -> str:
    """The command that repeats a stage with every setting explicit: no session flags
    (``--stop-after-epochs``, ``--threads``, ``--quiet``, ``--allow-code-change``) and
    repository-relative paths (the provenance's ``command``)."""
    argv = [stage] + (["--arch", arch] if arch else []) + ["--work", display_path(work.root)]
    if data is not None:
        argv += ["--data", display_path(data)]
    settings = settings or {}
    if stage == "split":
        argv += ["--holdout", str(settings["holdout"]), "--seed", str(settings["seed"])]
    if stage == "search":
        flags: Sequence[tuple[str, str]] = SEARCH_FLAGS
    elif stage in ("split", "train"):
        flags = [("--" + key.replace("_", "-"), key) for key in RECIPE_DEFAULTS]
    else:
        flags = ()
    for flag, key in flags:
        if settings.get(key) is not None:
            argv += [flag, repr(settings[key]) if isinstance(settings[key], float)
                     else str(settings[key])]
    return _command(argv)


# ------------------------------------------------------------------------------ code version


def _git(*args: str, cwd: Path = REPO) -> str | None:
    """``git ARGS`` in ``cwd``: its output, or ``None`` when git is missing or fails."""
    try:
        done = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True,
                              timeout=120)
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout.strip() if done.returncode == 0 else None


def aca_keras_dir() -> Path:
    """The folder of the ``aca_keras`` package that this process imports (not imported here)."""
    spec = importlib.util.find_spec("aca_keras")
    if spec is not None and spec.submodule_search_locations:
        return Path(list(spec.submodule_search_locations)[0]).resolve()
    return REPO / "aca_keras"


def code_version() -> dict[str, Any]:
    """The code a session runs: ``aca_keras_sha256``, the sha256 over the sorted contents of
    ``aca_keras/**/*.py`` (each file's relative path and bytes, length-prefixed, in path
    order), and where git is available ``git_commit`` (``git rev-parse HEAD``) and
    ``git_dirty`` (uncommitted changes in ``aca_keras/`` or this tool)."""
    package = aca_keras_dir()
    files = sorted(package.rglob("*.py"), key=lambda p: p.relative_to(package).as_posix())
    digest = hashlib.sha256()
    for path in files:
        name = path.relative_to(package).as_posix().encode("utf-8")
        data = path.read_bytes()
        digest.update(b"%d:%s:%d:" % (len(name), name, len(data)))
        digest.update(data)
    record: dict[str, Any] = {"aca_keras_sha256": digest.hexdigest(), "files": len(files),
                              "git_commit": None, "git_dirty": None}
    head = _git("rev-parse", "HEAD")
    if head:
        dirty = _git("status", "--porcelain", "--", str(package), str(TOOL))
        record.update(git_commit=head, git_dirty=None if dirty is None else bool(dirty))
    return record


def check_code(log: StageLog, code: Mapping[str, Any], allow: bool, what: str) -> bool:
    """Refuse (a :class:`ToolError`) to resume ``log``'s stage under another code hash than
    its earlier sessions ran, unless ``allow`` (``--allow-code-change``); ``True`` when the
    code changed and it was allowed."""
    current = code["aca_keras_sha256"]
    earlier: dict[str, list[int]] = {}
    commits: dict[str, str] = {}
    for number, session_record in enumerate(log.data["sessions"], 1):
        recorded = session_record.get("code") or {}
        digest = recorded.get("aca_keras_sha256") or "not recorded"
        if digest != current:
            earlier.setdefault(digest, []).append(number)
            if recorded.get("git_commit"):
                commits.setdefault(digest, recorded["git_commit"])
    if not earlier:
        return False
    shown = "; ".join(
        f"session(s) {', '.join(map(str, numbers))} ran aca_keras sha256 {digest}"
        + (f" (git commit {commits[digest]})" if digest in commits else "")
        for digest, numbers in earlier.items())
    if allow:
        _say(f"warning: {what} resumes under other aca_keras code than before ({shown}; now "
             f"{current}): allowed by --allow-code-change, recorded in the stage log and "
             "stated on the published entry's card")
        return True
    raise ToolError(
        f"{what} was run under other code: {shown}; this checkout has aca_keras sha256 "
        f"{current} (sha256 over aca_keras/**/*.py). Resuming would mix two code versions in "
        "one result. Check out the code the stage started with and run again, or pass "
        "--allow-code-change to resume anyway (the change is recorded in the stage log and "
        "stated on the published entry's card).")


# ------------------------------------------------------------------------------ clocks


_CLOCK_CLAIMED = False


def process_start_time() -> float:
    """When this process started (seconds since the epoch): from ``/proc`` (its start in clock
    ticks after the boot time), else the time this module was imported."""
    with contextlib.suppress(OSError, ValueError, IndexError, StopIteration):
        ticks = int(Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()[19])
        boot = next(int(line.split()[1]) for line in
                    Path("/proc/stat").read_text().splitlines() if line.startswith("btime "))
        start = boot + ticks / os.sysconf("SC_CLK_TCK")
        if 0 <= _IMPORTED_AT - start < 30 * 86400:
            return start
        if 0 <= start - _IMPORTED_AT < 2:  # the boot time has whole seconds only
            return _IMPORTED_AT
    return _IMPORTED_AT


def _session_clock() -> tuple[float, float]:
    """The origins (``perf_counter``, ``process_time``) of a session: the process's start for
    the first session of a process (start-up, imports and data loading count), now for a
    later one in the same process (several stages run in one process in the tests)."""
    global _CLOCK_CLAIMED
    if not _CLOCK_CLAIMED:
        _CLOCK_CLAIMED = True
        return time.perf_counter() - max(0.0, time.time() - process_start_time()), 0.0
    return time.perf_counter(), time.process_time()


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

    @property
    def stages(self) -> Path:
        """The tool's own records, apart from the library's run directories."""
        return self.root / "stages"

    @property
    def zoo_staging(self) -> Path:
        """Where ``publish`` writes and checks the entries before the real zoo (git-ignored
        scratch, removed after a successful publish)."""
        return self.root / "zoo-staging"

    def run_dir(self, stage: str) -> Path:
        """The library's run directory of a stage (``search`` or ``train:ARCH``)."""
        return self.search_dir if stage == "search" else self.train_dir(stage.split(":")[1])

    def stage_log(self, stage: str) -> Path:
        return self.stages / f"{stage.replace(':', '-')}.json"

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


def git_warnings(root: Path) -> list[str]:
    """Why the work directory's state may not reach the next session: not in a git
    repository, git-ignored, or uncommitted changes."""
    where = root
    while not where.is_dir() and where != where.parent:
        where = where.parent
    top = _git("rev-parse", "--show-toplevel", cwd=where)
    if top is None:
        return [f"{root} is not inside a git repository (or git is missing): nothing carries "
                "its state to the next session from a fresh checkout unless you copy it"]
    try:
        ignored = subprocess.run(["git", "check-ignore", "-q", str(root)], cwd=where,
                                 capture_output=True, timeout=120).returncode == 0
    except (OSError, subprocess.SubprocessError):
        ignored = False
    if ignored:
        return [f"git ignores {root}: its state is lost with this checkout. Use a tracked work "
                f"directory (the default {display_path(DEFAULT_WORK)}) and commit the work "
                "directory at the end of every session"]
    if not root.is_dir():
        return []
    changes = _git("status", "--porcelain", "--untracked-files=all", "--", str(root),
                   cwd=where)
    if changes:
        count = len(changes.splitlines())
        rel = os.path.relpath(root, top)
        return [f"{count} uncommitted change(s) in {root}: commit the work directory at the "
                f"end of every session (git add {shlex.quote(rel)} && git commit -m "
                "'cifar10 entries: session state')"]
    return []


class StageLog:
    """``stages/<stage>.json`` of a stage: its settings, its sessions (command, hardware, code
    version, wall and CPU time), the wall and CPU time of every epoch and the session it ran
    in, and ``done``.

    A session's times count from its process's start and are written after every epoch, so a
    killed session keeps what it recorded last; the part of an epoch cut off by a kill is not
    counted in the epochs (it runs again after the resume)."""

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

    def start_session(self, command: str, code: Mapping[str, Any] | None = None,
                      code_change_allowed: bool = False) -> None:
        self._wall0, self._cpu0 = _session_clock()
        record: dict[str, Any] = {
            "command": command, "hardware": hardware(), "pid": os.getpid(),
            "started": _dt.datetime.now().isoformat(timespec="seconds"),
            "wall_s": 0.0, "cpu_s": 0.0, "code": dict(code or {})}
        if code_change_allowed:
            record["code_change_allowed"] = True
        self.data["sessions"].append(record)
        self._touch()
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
        """Wall seconds spent in the sessions."""
        return float(sum(s["wall_s"] for s in self.data["sessions"]))

    @property
    def cpu_s(self) -> float:
        """CPU seconds spent in the sessions."""
        return float(sum(s["cpu_s"] for s in self.data["sessions"]))

    @property
    def epochs_wall_s(self) -> float:
        """Wall seconds of the completed epochs."""
        return float(sum(e["wall_s"] for e in self.data["epochs"].values()))

    @property
    def epochs_cpu_s(self) -> float:
        """CPU seconds of the completed epochs."""
        return float(sum(e["cpu_s"] for e in self.data["epochs"].values()))

    def code_hashes(self) -> list[str]:
        """The aca_keras code hashes its sessions ran, in order of first use."""
        out: list[str] = []
        for s in self.data["sessions"]:
            digest = (s.get("code") or {}).get("aca_keras_sha256") or "not recorded"
            if digest not in out:
                out.append(digest)
        return out

    def code_field(self, key: str) -> str:
        """One field of the sessions' code records, its distinct values joined."""
        values: list[str] = []
        for s in self.data["sessions"]:
            value = (s.get("code") or {}).get(key)
            shown = "unknown" if value is None else str(value).lower()
            if shown not in values:
                values.append(shown)
        return ", ".join(values) or "unknown"

    def time_words(self) -> str:
        """Both clocks: spent in the sessions, and in the completed epochs."""
        sessions, epochs = len(self.data["sessions"]), len(self.data["epochs"])
        return (f"spent in {sessions} session(s): {_hours(self.wall_s)} wall, "
                f"{_hours(self.cpu_s)} CPU; in the {epochs} completed epoch(s): "
                f"{_hours(self.epochs_wall_s)} wall, {_hours(self.epochs_cpu_s)} CPU")

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


@contextlib.contextmanager
def library_errors(work: Work, stage: str) -> Iterator[None]:
    """Turn the library's run-directory and checkpoint errors into advice that names exactly
    what to delete (the library's run directory of this stage, nothing else)."""
    from aca_keras.errors import RunDirError

    try:
        yield
    except RunDirError as error:
        run = work.run_dir(stage)
        name = "search" if stage == "search" else f"training of {stage.split(':')[1]}"
        command = (clean_command("search", work) if stage == "search" else
                   clean_command("train", work, arch=stage.split(":")[1]))
        raise ToolError(
            f"{error}\nIf the message says the run is corrupt or unreadable: delete the folder "
            f"{run} (the library's run directory of this stage) and nothing else: keep "
            f"{work.stage_log(stage)} (the tool's time records), split.json, recipe.json and "
            f"the other stages' folders. Then run {command}: the {name} restarts from epoch "
            "1, and the time already spent stays counted. If "
            "the message names other settings or data, run the stage with its recorded "
            "settings instead (see status).") from None


# ------------------------------------------------------------------------------------- data


def require_split(work: Work) -> dict[str, Any]:
    """``split.json``, or a :class:`ToolError` saying to run ``split`` first."""
    if not work.split.is_file():
        raise ToolError(f"no split in {work.root}: run the split stage first: "
                        f"{_command(['split', '--work', display_path(work.root)])}")
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


# ----------------------------------------------------------------------------------- recipe

RECIPE_HINT = ("The split stage fixed the one training recipe of this work directory in "
               "recipe.json, which the search's derived network and both trainings use: drop "
               "the flag, or give it to the split stage of a new --work.")


def fix_recipe(work: Work, given: Mapping[str, Any], seed: int) -> dict[str, Any]:
    """Create ``recipe.json`` (the given values over the defaults, and the split's seed)
    atomically and exclusively; when it exists (or another process created it first), the
    recorded recipe, refusing given values that differ from it."""
    if not work.recipe.is_file():
        recipe = resolve_settings("the training recipe", given, None, RECIPE_DEFAULTS, "")
        recipe["seed"] = int(seed)
        if create_json_exclusive(work.recipe, recipe):
            return recipe
    return training_recipe(work, given)


def read_recipe(work: Work) -> dict[str, Any]:
    """``recipe.json``, checked to hold every recipe setting and the seed."""
    if not work.recipe.is_file():
        raise ToolError(f"no recipe.json in {work.root}: run the split stage, which fixes the "
                        f"training recipe: "
                        f"{_command(['split', '--work', display_path(work.root)])}")
    recipe = _read_json(work.recipe)
    missing = [k for k in (*RECIPE_DEFAULTS, "seed") if k not in recipe]
    if missing:
        raise ToolError(f"{work.recipe} lacks {missing}: restore it (git checkout -- "
                        f"{display_path(work.recipe)}) or use a new --work")
    return recipe


def training_recipe(work: Work, given: Mapping[str, Any]) -> dict[str, Any]:
    """The work directory's one training recipe (``recipe.json``); given values that differ
    from it are refused."""
    return resolve_settings("the training recipe", given, read_recipe(work), RECIPE_DEFAULTS,
                            RECIPE_HINT)


def split_stage(args: argparse.Namespace) -> int:
    """Hold out the validation images and fix the training recipe; record both
    (idempotent)."""
    import numpy as np

    from aca_keras import data as data_lib
    from aca_keras.data.arrays import HOLDOUT_SEED, holdout

    work = Work(args.work)
    given_recipe = {k: getattr(args, k) for k in RECIPE_DEFAULTS}
    recorded = _read_json(work.split) if work.split.is_file() else None
    path = data_path(recorded, args.data)
    if recorded:
        resolve_settings("the split", {"holdout": args.holdout, "seed": args.seed},
                         {"holdout": recorded["holdout"], "seed": recorded["seed"]},
                         SPLIT_DEFAULTS, "Use a new --work for another split.")
        load_data(recorded, str(path))
        recipe = fix_recipe(work, given_recipe, recorded["seed"])
        _say(f"split: already done in {work.split} ({recorded['train_images']:,} training, "
             f"{recorded['holdout']:,} held-out images; data sha256 matches); recipe "
             f"{work.recipe}: {recipe_words(recipe)}")
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
        "created": _dt.datetime.now().isoformat(timespec="seconds"), "code": code_version(),
    }
    work.root.mkdir(parents=True, exist_ok=True)
    np.savez(work.indices, heldout=heldout_idx.astype(np.int64),
             train=train_idx.astype(np.int64))
    _write_json(work.split, record)
    recipe = fix_recipe(work, given_recipe, record["seed"])
    _say(f"split: {n:,} images of {path}: {bundle.num_train:,} for search and training, "
         f"{count:,} held out (test_fraction {fraction:g}, hold-out seed {HOLDOUT_SEED}; per "
         f"class {record['heldout_class_counts']}); seed {record['seed']} for every stage "
         f"-> {work.split}; the training recipe -> {work.recipe}: {recipe_words(recipe)}")
    return 0


def recipe_words(recipe: Mapping[str, Any]) -> str:
    """The recipe in one line, as the cards state it."""
    return (f"{recipe['cells']} cells, C = {recipe['channels']}, auxiliary head "
            f"(weight {recipe['auxiliary_weight']}), drop path {recipe['drop_path']} "
            f"(linear ramp), cutout {recipe['cutout']}, batch {recipe['batch_size']}, "
            f"SGD momentum {recipe['momentum']}, learning rate "
            f"{recipe['learning_rate']} cosine to 0, weight decay "
            f"{recipe['weight_decay']}, gradient clip {recipe['grad_clip']}, "
            f"{recipe['epochs']} epochs, seed {recipe['seed']}")


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
            _say(f"[{log.path.stem}] epoch {epoch + 1}/{total_epochs}: {wall:.0f} s "
                 f"wall; {per_epoch:.0f} s per epoch measured (projected "
                 f"{projected_epoch_s:.0f}); about {_hours(left)} left; stage total so far "
                 f"{_hours(log.wall_s)} wall, {_hours(log.cpu_s)} CPU in sessions")
            if stop_after is not None and self.finished >= stop_after \
                    and epoch + 1 < total_epochs:
                raise StopSession(f"stopped after epoch {epoch + 1} of {total_epochs} "
                                  f"(--stop-after-epochs {stop_after}); the checkpoint is "
                                  "written: run the same command again to continue")

    return [EpochTimer()]


@contextlib.contextmanager
def session(log: StageLog, command: str, code: Mapping[str, Any], code_change_allowed: bool,
            work: Work) -> Iterator[None]:
    """A session of a stage: recorded in ``log``; a ``--stop-after-epochs`` stop is a normal
    end (exit status 0), any other exception keeps the recorded time and propagates. Either
    way it ends with the reminder to commit the work directory."""
    log.start_session(command, code, code_change_allowed)
    try:
        yield
    except StopSession as stop:
        log.end_session()
        _say(str(stop))
    except BaseException:
        log.end_session()
        raise
    finally:
        _say(f"reminder: commit the work directory before this machine session ends (git add "
             f"{shlex.quote(display_path(work.root))} && git commit)")


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


#: The collapse monitor's edge counts reported on the ACA card.
COLLAPSE_COUNTS = ("skip_edges", "parameter_free_edges", "reduce_skip_edges",
                   "reduce_parameter_free_edges")


def collapse_summary(path: Path) -> dict[str, Any] | None:
    """From the search's ``alphas.jsonl``: every measured Hessian eigenvalue
    (``[[epoch, value], ...]``) and the final epoch's skip and parameter-free edge counts."""
    if not path.is_file():
        return None
    records = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()
               if line.strip()]
    if not records:
        return None
    last = records[-1]
    return {"hessian": [[int(r["epoch"]), float(r["hessian_eigenvalue"])] for r in records
                        if r.get("hessian_eigenvalue") is not None],
            "final": {"epoch": int(last["epoch"]), **{k: last.get(k) for k in COLLAPSE_COUNTS}}}


def search_stage(args: argparse.Namespace) -> int:
    """Search the ACA cell (resumable)."""
    work = Work(args.work)
    split = require_split(work)
    recipe = read_recipe(work)  # the derived network of the search is the trainings' one
    given = {key: getattr(args, flag[2:].replace("-", "_")) for flag, key in SEARCH_FLAGS}
    code = code_version()
    with stage_lock(work, "search"), library_errors(work, "search"):
        log = StageLog(work.stage_log("search"))  # read under the lock
        settings = resolve_settings("the search", given, log.settings or None,
                                    SEARCH_DEFAULTS, "A search resumes with its own settings; "
                                    "drop the flag, or use a new --work.")
        if log.done:
            _say(f"search: already done ({settings['epochs']} epochs, {_hours(log.wall_s)} "
                 f"wall) -> {work.search_dir / 'architecture.json'}")
            return 0
        changed = check_code(log, code, args.allow_code_change, "the search")
        log.data["settings"] = settings

        from aca_keras.io.checkpoint import read_checkpoint_meta
        from aca_keras.io.run_dir import RunDir
        from aca_keras.searching import pipeline

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
        with session(log, _command(args.argv), code, changed, work):
            pipeline.search(
                data, run_dir=run.path, resume=run.config.is_file(), epochs=settings["epochs"],
                cells=settings["cells"], channels=settings["channels"],
                batch_size=settings["batch_size"], seed=split["seed"],
                hessian_every=settings["hessian_every"], eval_cells=recipe["cells"],
                eval_channels=recipe["channels"], auxiliary=True,
                drop_path=recipe["drop_path"], verbose=args.verbose,
                callbacks=epoch_callbacks(log, settings["epochs"], args.stop_after_epochs,
                                          per_epoch),
                **extra)
            config = _read_json(run.config)
            log.finish(images=data.num_train, ops=config["ops"], scorer=config["scorer"],
                       pooling=config["pooling"], allocator=config["allocator"],
                       collapse=collapse_summary(run.alphas))
            _say(f"search: done; {log.time_words()} -> {run.architecture}")
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
                            f"{_command(['search', '--work', display_path(work.root)])}")
        return Architecture.load(path)
    return zoo.architecture(DARTS_V2_ENTRY)


def train_stage(args: argparse.Namespace) -> int:
    """Train one architecture with the work directory's recipe (resumable)."""
    work = Work(args.work)
    split = require_split(work)
    stage = f"train:{args.arch}"
    architecture = architecture_of(work, args.arch)
    recipe = training_recipe(work, {k: getattr(args, k) for k in RECIPE_DEFAULTS})
    code = code_version()
    with stage_lock(work, stage), library_errors(work, stage):
        log = StageLog(work.stage_log(stage))  # read under the lock
        if log.done:
            _say(f"train {args.arch}: already done (validation accuracy "
                 f"{log.data['accuracy']:.4f}) -> {work.train_dir(args.arch)}")
            return 0
        if log.settings and log.settings != recipe:
            differ = sorted(k for k in set(log.settings) | set(recipe)
                            if log.settings.get(k) != recipe.get(k))
            shown = ", ".join(f"{k}: started with {log.settings.get(k)!r}, recipe.json now "
                              f"{recipe.get(k)!r}" for k in differ)
            raise ToolError(f"train --arch {args.arch} was started with another recipe than "
                            f"{work.recipe} now holds ({shown}; the stage log {log.path}). "
                            "Restore recipe.json (git checkout -- "
                            f"{display_path(work.recipe)}) to resume, or start over in a new "
                            "--work.")
        changed = check_code(log, code, args.allow_code_change, f"train --arch {args.arch}")
        log.data["settings"] = recipe

        import keras

        from aca_keras.io.atomic import atomic_write_text
        from aca_keras.io.checkpoint import read_checkpoint_meta
        from aca_keras.io.run_dir import RunDir
        from aca_keras.models.derived import build_model
        from aca_keras.training import trainer

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
        # stored now, so that status projects this network's time left with its own cost
        log.data.update(macs=int(macs), params=trainable_params(model))
        log.save()
        done = (int(read_checkpoint_meta(run.train_checkpoint)["epoch"])
                if run.train_checkpoint.is_file() else 0)
        total, how = train_seconds(recipe, bundle.num_train, macs)
        left, _ = train_seconds(recipe, bundle.num_train, macs, recipe["epochs"] - done)
        _say(f"train {args.arch}: {bundle.num_train:,} images, {recipe['cells']} cells, "
             f"C = {recipe['channels']}, {recipe['epochs']} epochs, seed {recipe['seed']}; "
             + (f"resuming after epoch {done}; " if done else "")
             + f"projected {_hours(total)} in all ({how}), {_hours(left)} left")
        per_epoch = (total - TRAIN_FIXED_S) / recipe["epochs"]
        with session(log, _command(args.argv), code, changed, work):
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
            _say(f"train {args.arch}: done; {log.time_words()}; validation accuracy "
                 f"{result.test_accuracy:.4f} on {bundle.num_test:,} held-out images -> "
                 f"{run.trained_model}")
    return 0


# ---------------------------------------------------------------------------- paired statistics


def paired_statistics(hits_aca: Sequence[bool], hits_darts: Sequence[bool]) -> dict[str, Any]:
    """The two models on the same images (``hits_*[i]``: image ``i`` classified right):
    the discordant counts ``b`` (ACA right, DARTS V2 wrong) and ``c`` (the reverse), the exact
    McNemar p-value and the Wilson 95 % interval of each accuracy."""
    a = [bool(h) for h in hits_aca]
    d = [bool(h) for h in hits_darts]
    if len(a) != len(d) or not a:
        raise ValueError("both models must be measured on the same, non-empty set of images")
    from aca_keras.stats import mcnemar_exact, wilson_interval  # loads no TensorFlow

    n = len(a)
    b, c, p_value = mcnemar_exact(a, d)
    correct = {"aca": sum(a), "darts-v2": sum(d)}
    return {
        "images": n, "correct": correct,
        "accuracy": {k: v / n for k, v in correct.items()},
        "wilson95": {k: list(wilson_interval(v, n)) for k, v in correct.items()},
        "both_right": sum(x and y for x, y in zip(a, d)),
        "both_wrong": sum(not x and not y for x, y in zip(a, d)),
        "b": b, "c": c, "p_value": p_value,
        "b_means": "ACA right, DARTS V2 wrong", "c_means": "ACA wrong, DARTS V2 right",
        "test": ("exact McNemar test: two-sided binomial test of b against Binomial(b + c, "
                 "1/2); Wilson score intervals with z = 1.96"),
    }


def _p_text(p: float) -> str:
    return f"{p:.3f}" if p >= 0.001 else f"{p:.1e}"


# ------------------------------------------------------------------------------------ publish


def trainable_params(model) -> int:
    """Trainable parameters of the inference model (no auxiliary head): the zoo's
    ``params.inference_trainable``."""
    return int(sum(math.prod(w.shape) for w in model.inference_model().trainable_weights))


def measure(model, x, y):
    """Which images ``model.inference_model()`` classifies right (a boolean array), measured
    the way ``aca_keras.zoo.verify(..., evaluate=...)`` measures them."""
    import numpy as np

    logits = model.inference_model().predict(x.astype("float32"), batch_size=256, verbose=0)
    return np.argmax(logits, axis=-1) == y


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
    shown = {str(k): str(v) for k, v in versions.items() if k != "machine"}
    shown.update(aca_keras_code_sha256=", ".join(log.code_hashes()),
                 git_commit=log.code_field("git_commit"), git_dirty=log.code_field("git_dirty"))
    return {
        "by": "aca_keras", "command": command, "settings": dict(settings), "seed": int(seed),
        "epochs": int(epochs), "hardware": " | ".join(machines),
        "wall_time_s": round(log.wall_s, 1), "versions": shown, "data": data,
        "note": (f"Spent in {sessions} session(s): wall time {log.wall_s:,.0f} s and CPU time "
                 f"{log.cpu_s:,.0f} s, each session counted from its process's start "
                 "(start-up, data loading and tracing included; after a kill the time since "
                 "the last record is lost; a SIGSTOP pause counts as wall time, not CPU time). "
                 f"In the {len(log.data['epochs'])} completed epochs: wall time "
                 f"{log.epochs_wall_s:,.0f} s and CPU time {log.epochs_cpu_s:,.0f} s. Code: "
                 "aca_keras_code_sha256 is the sha256 over the sorted contents of "
                 "aca_keras/**/*.py. Measured by zoo/tools/make_cifar10_entries.py; the machine "
                 "was shared with other jobs."),
    }


@dataclass
class Published:
    """What both entries are made of: the work directory, the split, the recipe, the stage
    logs and configs, the data, each trained model's measurement (``results[arch]``), the
    paired statistics, and the code hashes of the trainings."""

    work: Work
    split: dict[str, Any]
    recipe: dict[str, Any]
    names: dict[str, str]
    logs: dict[str, StageLog]
    configs: dict[str, dict[str, Any]]
    search_log: StageLog
    search_config: dict[str, Any]
    bundle: Any
    results: dict[str, dict[str, Any]] = field(default_factory=dict)
    paired: dict[str, Any] = field(default_factory=dict)
    codes: dict[str, list[str]] = field(default_factory=dict)
    code_change_allowed: bool = False


def refuse_foreign_entries(zoo_dir: Path, names: Sequence[str]) -> None:
    """Refuse to publish over anything in ``zoo_dir`` that this tool did not make (an entry
    without the tag ``MARKER_TAG``, or a folder without a readable ``entry.json``), and to hide
    a bundled entry behind a private one of the same name."""
    from aca_keras import zoo

    bundled = zoo.bundled_zoo_dir()
    for name in names:
        target = zoo_dir / name
        if (bundled is not None and bundled.resolve() != zoo_dir
                and (bundled / name / "entry.json").is_file()):
            raise ToolError(f"the bundled zoo {bundled} already has an entry {name!r}; an entry "
                            f"of that name in {zoo_dir} would hide it. Choose another name "
                            "(--aca-name / --darts-name) or publish into the bundled zoo "
                            f"(--zoo-dir {display_path(bundled)})")
        if not (target.exists() or target.is_symlink()):
            continue
        try:
            tags = json.loads((target / "entry.json").read_text(encoding="utf-8")).get("tags")
        except (OSError, ValueError, AttributeError):
            raise ToolError(f"{target} exists but holds no readable entry.json: publish does "
                            "not overwrite what this tool did not make. Move it away, or choose "
                            "another name (--aca-name / --darts-name)") from None
        if MARKER_TAG not in (tags or []):
            raise ToolError(f"the zoo entry {target} was not made by this tool (it lacks the "
                            f"tag {MARKER_TAG}): publish does not overwrite it. Choose another "
                            "name (--aca-name / --darts-name), or remove that entry yourself "
                            "if it should go")


# When these entries are published into the bundled zoo (zoo/), tests/test_zoo.py must be
# updated with them: test_bundled_zoo_is_found_and_lists_every_entry asserts
# `[e.name for e in zoo.list(has_weights=True)] == [ACA_NAME]` (both new entries have weights)
# and `zoo.list(pattern="darts-*") == ["darts-v1-cifar10", "darts-v2-cifar10"]`
# (darts-v2-cifar10-trained matches the pattern), around its lines 147-149.
def publish_stage(args: argparse.Namespace) -> int:
    """Publish both entries into ``<work>/zoo-staging``, verify them there (with ``evaluate``
    and the exact re-measure), then copy them into the zoo and verify all its entries and its
    index."""
    work = Work(args.work)
    split = require_split(work)
    logs = {arch: StageLog(work.stage_log(f"train:{arch}")) for arch in ARCHS}
    missing = [arch for arch in ARCHS if not logs[arch].done]
    if missing:
        raise ToolError("publish needs both trainings; not finished: "
                        + ", ".join(missing) + ". Run first: "
                        + "; ".join(_command(["train", "--arch", a, "--work",
                                              display_path(work.root)]) for a in missing))
    zoo_dir = Path(args.zoo_dir).expanduser().resolve()
    names = {"aca": args.aca_name, "darts-v2": args.darts_name}
    if names["aca"] == names["darts-v2"]:
        raise ToolError(f"--aca-name and --darts-name are both {names['aca']!r}")
    refuse_foreign_entries(zoo_dir, list(names.values()))
    codes = {arch: logs[arch].code_hashes() for arch in ARCHS}
    mixed = len(set(codes["aca"]) | set(codes["darts-v2"])) > 1
    if mixed and not args.allow_code_change:
        raise ToolError("the two trainings ran different aca_keras code (sha256 over "
                        f"aca_keras/**/*.py): aca {', '.join(codes['aca'])}; darts-v2 "
                        f"{', '.join(codes['darts-v2'])}; they are not a comparison at one code "
                        "version. Retrain at one version (a new --work), or pass "
                        "--allow-code-change to publish anyway: the cards then say so.")

    from aca_keras import zoo
    from aca_keras.io.run_dir import RunDir
    from aca_keras.models.derived import load_model

    runs = {arch: RunDir(work.train_dir(arch)) for arch in ARCHS}
    configs = {arch: _read_json(runs[arch].train_config) for arch in ARCHS}
    differ = recipe_difference(configs["aca"], configs["darts-v2"])
    if differ:
        raise ToolError(f"the two trainings did not use one recipe (they differ in {differ}); "
                        "they cannot be published as a comparison")
    ctx = Published(work=work, split=split, recipe=logs["aca"].settings, names=names,
                    logs=logs, configs=configs, search_log=StageLog(work.stage_log("search")),
                    search_config=_read_json(RunDir(work.search_dir).config),
                    bundle=load_data(split, args.data), codes=codes,
                    code_change_allowed=mixed)
    trained = {arch: runs[arch].trained_model for arch in ARCHS}
    hits = {}
    for arch in ARCHS:
        with library_errors(work, f"train:{arch}"):
            model = load_model(trained[arch], compile=False)
        hits[arch] = measure(model, ctx.bundle.x_test, ctx.bundle.y_test)
        correct, total = int(hits[arch].sum()), int(len(hits[arch]))
        ctx.results[arch] = {"correct": correct, "total": total, "accuracy": correct / total,
                             "macs": int(model.flops()), "params": trainable_params(model),
                             "trained_accuracy": float(logs[arch].data["accuracy"])}
        _say(f"publish: {arch} measures {correct}/{total} = {100 * correct / total:.2f}% on "
             "the held-out images")
    ctx.paired = paired_statistics(hits["aca"], hits["darts-v2"])
    p = ctx.paired
    _say(f"publish: paired on {p['images']} images: b = {p['b']} (ACA right, DARTS V2 wrong), "
         f"c = {p['c']}, exact McNemar p = {_p_text(p['p_value'])}")

    staging = work.zoo_staging
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    for arch in ARCHS:
        entry = zoo.publish(trained[arch], names[arch], zoo_dir=staging, overwrite=True,
                            shadow=True, date=args.date, exports=("onnx",),
                            **entry_arguments(ctx, arch))
        _say(f"publish: {entry.name} -> {entry.path} (staging)")
    record, failures = check_published(ctx, staging, data_path(split, args.data))
    record.update(zoo_dir=str(zoo_dir), staging_dir=str(staging), paired=ctx.paired,
                  code={"publish": code_version(), "trainings": codes,
                        "search": ctx.search_log.code_hashes(),
                        "code_change_allowed": ctx.code_change_allowed},
                  published=_dt.datetime.now().isoformat(timespec="seconds"))
    if failures:
        record.update(ok=False, stage="staging")
        _write_json(work.published, record)
        raise ToolError(f"the entries failed their checks in the staging zoo {staging} (kept "
                        f"for inspection); the zoo {zoo_dir} was not changed. Failures: "
                        + "; ".join(failures))

    install_entries(staging, zoo_dir, [names[arch] for arch in ARCHS])
    for arch in ARCHS:
        record["entries"][arch]["path"] = str(zoo_dir / names[arch])
    report = zoo.verify("all", zoo_dir=zoo_dir, build=False)
    index_name = f"index {zoo_dir / 'index.json'}"
    own = ([f"{e.name}: {c.name}: {c.detail}" for e in report.entries
            if e.path.parent.resolve() == zoo_dir for c in e.checks if not c.ok]
           + [f"{c.name}: {c.detail}" for c in report.indexes
              if c.name == index_name and not c.ok])
    others = [f for f in report.failures if f not in own]
    if others:
        _say("publish: warning: other zoo directories on the search path fail checks: "
             + "; ".join(others))
    record.update(stage="zoo", ok=not own,
                  verify_all={"ok": not own, "entries": sum(e.path.parent.resolve() == zoo_dir
                                                            for e in report.entries),
                              "failures": own})
    _write_json(work.published, record)
    if own:
        raise ToolError(f"published into {zoo_dir}, but zoo.verify over its entries and index "
                        "failed: " + "; ".join(own))
    shutil.rmtree(staging, ignore_errors=True)
    _say(f"publish: both entries verified (with --evaluate, in the staging zoo) and copied into "
         f"{zoo_dir}; zoo.verify over its {record['verify_all']['entries']} entries and its "
         f"index passed; summary -> {work.published}. Commit the work directory and the zoo.")
    return 0


def install_entries(staging: Path, zoo_dir: Path, names: Sequence[str]) -> None:
    """Copy the checked entries of the staging zoo into ``zoo_dir``, each replacing the entry
    of its name as a whole (both are copied beside the zoo's entries first, then renamed into
    place), and rebuild ``zoo_dir``'s ``index.json``."""
    from aca_keras import zoo
    from aca_keras.zoo import _publish, _registry

    zoo_dir.mkdir(parents=True, exist_ok=True)
    incoming: dict[str, Path] = {}
    try:
        for name in names:
            incoming[name] = zoo_dir / f".{name}.incoming-{uuid.uuid4().hex[:8]}"
            shutil.copytree(staging / name, incoming[name])
        for name, tmp in incoming.items():
            _publish._place(tmp, zoo_dir / name)  # an existing entry is replaced as a whole
    finally:
        for tmp in incoming.values():
            shutil.rmtree(tmp, ignore_errors=True)
    _registry.clear_cache()
    zoo.build_index(zoo_dir, strict=False)


def heldout_text(ctx: Published, arch: str) -> str:
    """The metric's ``split``: which images, and what saw them (per architecture)."""
    split, n_val = ctx.split, ctx.bundle.num_test
    base = (f"validation: the {n_val:,} images held out from CIFAR-10's training set "
            f"({split['data_display']}, JPEG round trip) by "
            f"aca_keras.data.load(test_fraction={split['test_fraction']!r})")
    if arch == "aca":
        return (base + ", seen neither by the ACA search nor by the training here; not "
                "CIFAR-10's test set")
    return (base + ", not seen by the training here; but the DARTS V2 cell was searched by "
            "Liu et al. (2019) on CIFAR-10's training set, which includes these images, so the "
            "cell's search did see them; not CIFAR-10's test set")


def search_budget_note(ctx: Published) -> str:
    """The unequal searches of the two cells."""
    from aca_keras import zoo

    darts = dict(zoo.info(DARTS_V2_ENTRY).document["provenance"]["search"])
    st = dict(darts.get("settings") or {})
    sc, log, n_val = ctx.search_config, ctx.search_log, ctx.bundle.num_test
    images = log.data.get("images", log.settings.get("images"))
    order = {1: "first order", 2: "second order (unrolled)"}.get(sc.get("order"),
                                                                  f"order {sc.get('order')}")
    machines = sorted({s["hardware"].split("; load")[0] for s in log.data["sessions"]})
    return (f"Unequal search budgets. DARTS V2: {st.get('variant', 'DARTS, second order')}; "
            f"supernet of {st.get('supernet_cells', 8)} cells, C = "
            f"{st.get('supernet_channels', 16)}, {darts.get('epochs', 50)} epochs, batch "
            f"{st.get('batch_size', 64)}, on CIFAR-10's 50,000 training images "
            f"({st.get('data', 'CIFAR-10 training set')}; the {n_val:,} held-out images here "
            f"among them); cost {darts.get('cost', 'about 4 GPU-days, the paper says')}, as "
            f"recorded in the zoo entry {DARTS_V2_ENTRY} (Liu et al., 2019). ACA here: {order}; "
            f"supernet of {sc['cells']} cells, C = {sc['channels']}, {sc['epochs']} epochs, "
            f"batch {sc.get('batch_size')}, on {images:,} images of this split's training part "
            f"(not the held-out ones), {log.cpu_s / 3600:.2f} CPU-hours ({log.wall_s / 3600:.2f} "
            f"h wall) spent in its sessions ({log.epochs_cpu_s / 3600:.2f} CPU-hours in its "
            f"completed epochs) on {' | '.join(machines)}. The ACA cell had a far smaller "
            "search.")


def comparison_note(ctx: Published) -> str:
    """Both accuracies with their Wilson intervals and the paired test."""
    aca, darts, p, names = (ctx.results["aca"], ctx.results["darts-v2"], ctx.paired,
                            ctx.names)
    n_val, n_train = ctx.bundle.num_test, ctx.bundle.num_train

    def interval(arch: str) -> str:
        lo, hi = p["wilson95"][arch]
        return f"Wilson 95 % interval {100 * lo:.2f}-{100 * hi:.2f} %"

    return (f"Compared at equal recipe ({recipe_words(ctx.recipe)}), on the same {n_train:,} "
            f"training and {n_val:,} held-out images: ACA {100 * aca['accuracy']:.2f}% "
            f"({interval('aca')}) with {aca['params']:,} trainable parameters and "
            f"{aca['macs'] / 1e6:.1f} M multiply-adds per image, DARTS V2 "
            f"{100 * darts['accuracy']:.2f}% ({interval('darts-v2')}) with "
            f"{darts['params']:,} trainable parameters and {darts['macs'] / 1e6:.1f} M "
            f"multiply-adds (entries {names['aca']} and {names['darts-v2']}). Paired on the "
            f"same {p['images']:,} images: ACA right and DARTS V2 wrong on b = {p['b']}, the "
            f"reverse on c = {p['c']} (both right {p['both_right']}, both wrong "
            f"{p['both_wrong']}); exact McNemar test p = {_p_text(p['p_value'])}. One run and "
            "one seed per network: the spread over seeds is not known; the intervals and the "
            f"test account only for the sampling of the {n_val:,} held-out images.")


def time_note(ctx: Published) -> str:
    """The time of the three stages on both clocks, against the budget."""
    parts = [("the search", ctx.search_log), ("the ACA training", ctx.logs["aca"]),
             ("the DARTS V2 training", ctx.logs["darts-v2"])]
    spent = sum(log.cpu_s for _, log in parts)
    return ("Time (CPU only, one TensorFlow thread per process): "
            + "; ".join(f"{what} {log.cpu_s / 3600:.2f} CPU-hours ({log.wall_s / 3600:.2f} h "
                        f"wall) spent in {len(log.data['sessions'])} session(s), "
                        f"{log.epochs_cpu_s / 3600:.2f} CPU-hours ({log.epochs_wall_s / 3600:.2f}"
                        " h wall) in its completed epochs" for what, log in parts)
            + f"; {spent / 3600:.2f} of the {BUDGET_CPU_S / 3600:.0f} CPU-hour budget spent in "
            "all.")


def collapse_note(ctx: Published) -> str:
    """The search's collapse monitor: the Hessian eigenvalues and the final edge counts."""
    from aca_keras.io.run_dir import RunDir

    summary = (ctx.search_log.data.get("collapse")
               or collapse_summary(RunDir(ctx.work.search_dir).alphas))
    if not summary:
        return "The search's collapse monitor left no record (alphas.jsonl is missing)."
    every = ctx.search_config.get("hessian_every", ctx.search_log.settings.get("hessian_every"))
    if summary["hessian"]:
        hessian = ("largest eigenvalue of the Hessian of the architecture loss with respect "
                   "to the alphas (Lanczos, one fixed architecture batch) "
                   + ", ".join(f"{value:.4g} after epoch {epoch}"
                               for epoch, value in summary["hessian"]))
    else:
        hessian = f"the Hessian eigenvalue was not measured (hessian_every {every})"
    f = summary["final"]
    return (f"Collapse monitor of the ACA search (alphas.jsonl): {hessian}. After the final "
            f"epoch ({f['epoch']}) the derived normal cell has {f['skip_edges']} skip and "
            f"{f['parameter_free_edges']} parameter-free edge(s), the reduction cell "
            f"{f['reduce_skip_edges']} skip and {f['reduce_parameter_free_edges']} "
            "parameter-free edge(s).")


def entry_arguments(ctx: Published, arch: str) -> dict[str, Any]:
    """``aca_keras.zoo.publish`` arguments of one entry: title, summary, data, metrics with
    the evaluation record of the split, provenance, tags, notes, citation."""
    from aca_keras import zoo

    split, recipe, names, r, p = ctx.split, ctx.recipe, ctx.names, ctx.results[arch], ctx.paired
    n_val, n_train = ctx.bundle.num_test, ctx.bundle.num_train
    other = "darts-v2" if arch == "aca" else "aca"
    not_test = ("The accuracy is validation accuracy on a held-out part of CIFAR-10's training "
                "set, not CIFAR-10 test accuracy.")
    evaluation = {"data": split["data_display"], "data_sha256": split["data_sha256"],
                  "load": {"test_fraction": split["test_fraction"]}, "split": "test",
                  "indices": (f"{split['rule']} (sha256 of the held-out indices as int64: "
                              f"{split['heldout_indices_sha256']})"),
                  "seed": int(split["holdout_seed"]), "images": n_val,
                  "split_sha256": split["heldout_split_sha256"]}
    lo, hi = p["wilson95"][arch]
    metrics = [
        {"name": "top1_accuracy", "value": round(100 * r["accuracy"], 2), "unit": "%",
         "split": heldout_text(ctx, arch), "how": "measured",
         "source": ("the published model's inference_model().predict on the held-out images "
                    f"after {recipe['epochs']} training epochs (as aca-zoo verify --evaluate "
                    "measures it)"),
         "note": (f"{r['correct']} of {r['total']} images; Wilson 95 % interval "
                  f"{100 * lo:.2f}-{100 * hi:.2f} %. {not_test} One run, one seed: the spread "
                  f"over seeds is not known. Paired with {names[other]} on the same images: "
                  f"exact McNemar test b = {p['b']} (ACA right, DARTS V2 wrong), c = {p['c']} "
                  f"(the reverse), p = {_p_text(p['p_value'])}."),
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
        ctx.logs[arch], clean_command("train", ctx.work, recipe, arch=arch),
        _training_settings(config), config["seed"], config["epochs"],
        config.get("versions", {}),
        f"the {n_train:,} training images of the split ({split['data_display']} without the "
        f"{n_val:,} held-out images)")
    split_command = clean_command("split", ctx.work, {**recipe, "holdout": split["holdout"],
                                                      "seed": split["seed"]},
                                  data=split["data"])
    notes = [not_test, heldout_text(ctx, arch)[0].upper() + heldout_text(ctx, arch)[1:] + ".",
             comparison_note(ctx), search_budget_note(ctx), time_note(ctx),
             f"Split: {split['rule']}. Re-measure: aca-zoo verify {names[arch]} --evaluate "
             f"{split['data_display']} (the path of that file).",
             f"Recipe: {recipe_words(recipe)}; DARTS's evaluation recipe shortened from 20 "
             "cells, C = 36 and 600 epochs to fit about 8 CPU-hours for the search and both "
             "trainings; the accuracy is far below a full training's.",
             f"Made by zoo/tools/make_cifar10_entries.py: `{split_command}` (the split and the "
             "recipe), then the stages search, train --arch aca, train --arch darts-v2 and "
             "publish (each stage's command, with its settings explicit, is in the "
             "provenance)."]
    if arch == "aca":
        notes.append(collapse_note(ctx))
    if ctx.code_change_allowed:
        notes.append("Published with --allow-code-change: the training sessions ran different "
                     "aca_keras code (sha256 over aca_keras/**/*.py): ACA training "
                     f"{', '.join(ctx.codes['aca'])}; DARTS V2 training "
                     f"{', '.join(ctx.codes['darts-v2'])}. The comparison is not at one code "
                     "version.")
    if r["trained_accuracy"] != r["accuracy"]:
        notes.append(f"At the end of the training aca_keras.training measured "
                     f"{100 * r['trained_accuracy']:.2f}% through its test pipeline; the metric "
                     "is the published model's own measurement.")
    common = {"dataset": dataset, "metrics": metrics, "notes": notes}
    if arch == "darts-v2":
        darts_entry = zoo.info(DARTS_V2_ENTRY)
        search = dict(darts_entry.document["provenance"]["search"])
        search["note"] = (f"Not searched here: the cell is DARTS V2's published genotype, taken "
                          f"from the zoo entry {DARTS_V2_ENTRY}. Liu et al. (2019) searched it "
                          "on CIFAR-10's training set, which includes the held-out images of "
                          "this entry's metric.")
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
                "tags": ["darts", "second-order", DATA_NAME, "trained", "validation-split",
                         MARKER_TAG]}
    sc, log = ctx.search_config, ctx.search_log
    images = log.data.get("images", log.settings["images"])
    settings = {k: v for k, v in sc.items() if k not in ("versions", "data_dir")}
    settings["dataset"] = (f"{DATA_NAME}: the first {images:,} training images of the split, "
                           "passed in memory")
    search = _stage_provenance(
        log, clean_command("search", ctx.work, log.settings), settings, sc["seed"],
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
            "tags": ["aca", DATA_NAME, "trained", "validation-split", MARKER_TAG]}


def check_published(ctx: Published, zoo_dir: Path, path: Path
                    ) -> tuple[dict[str, Any], list[str]]:
    """``aca_keras.zoo.verify(name, evaluate=path)`` of both entries in ``zoo_dir``, and the
    accuracy measured again with each published model, which must equal the card's exactly:
    the summary record and the failures."""
    from aca_keras import zoo

    log = ctx.search_log
    record: dict[str, Any] = {"format": FORMAT, "zoo_dir": str(zoo_dir), "entries": {},
                              "search_wall_s": log.wall_s, "search_cpu_s": log.cpu_s,
                              "search_epochs_wall_s": log.epochs_wall_s,
                              "search_epochs_cpu_s": log.epochs_cpu_s}
    failures = []
    for arch in ARCHS:
        name = ctx.names[arch]
        report = zoo.verify(name, zoo_dir=zoo_dir, evaluate=path)
        _say(report.format())
        failures += report.failures
        entry = zoo.info(name, zoo_dir=zoo_dir)
        card = next(m.value for m in entry.metrics if m.name == "top1_accuracy")
        hits = measure(zoo.load(name, zoo_dir=zoo_dir), ctx.bundle.x_test, ctx.bundle.y_test)
        correct, total = int(hits.sum()), int(len(hits))
        again = round(100 * correct / total, 2)
        _say(f"publish: {name}: re-measured {again:.2f}% ({correct}/{total}), card "
             f"{card:.2f}%: {'equal' if again == card else 'DIFFERENT'}")
        if again != card:
            failures.append(f"{name}: re-measured {again}% but the card says {card}%")
        train_log = ctx.logs[arch]
        record["entries"][arch] = {
            "name": name, "path": str(entry.path), "accuracy_percent": card,
            "remeasured_percent": again, "correct": correct, "images": total,
            "wilson95_percent": [round(100 * v, 2) for v in ctx.paired["wilson95"][arch]],
            "params": entry.params, "multiply_adds": ctx.results[arch]["macs"],
            "verify_ok": report.ok, "train_wall_s": train_log.wall_s,
            "train_cpu_s": train_log.cpu_s, "train_epochs_wall_s": train_log.epochs_wall_s,
            "train_epochs_cpu_s": train_log.epochs_cpu_s}
    record["ok"] = not failures
    return record, failures


# ------------------------------------------------------------------------------------- status


def _epochs_done(path: Path, key: str) -> tuple[int, str | None]:
    """Epochs done by a run's checkpoint, and a problem reading it (``None`` when fine)."""
    from aca_keras.errors import AcaError
    from aca_keras.io.checkpoint import read_checkpoint_meta  # NumPy only

    if not path.is_file():
        return 0, None
    try:
        return int(read_checkpoint_meta(path)[key]), None
    except (AcaError, KeyError, ValueError) as error:
        return 0, str(error)


def status_stage(args: argparse.Namespace) -> int:
    """What is done, epochs reached, time spent, and the projected time left."""
    from aca_keras.io.run_dir import RunDir  # the standard library only

    work = Work(args.work)
    _say(f"work directory: {work.root}")
    for warning in git_warnings(work.root):
        _say(f"warning: {warning}")
    if not work.split.is_file():
        _say(f"split:          not done; next: "
             f"{_command(['split', '--work', display_path(work.root)])}")
        return 0
    split = _read_json(work.split)
    shape = tuple(split["image_shape"])
    _say(f"split:          done: {split['train_images']:,} training, {split['holdout']:,} "
         f"held out ({split['data_display']}, test_fraction {split['test_fraction']:g}), "
         f"seed {split['seed']}")
    if work.recipe.is_file():
        recipe = _read_json(work.recipe)
        _say(f"recipe:         {recipe_words(recipe)} (recipe.json, fixed by the split)")
    else:
        recipe = {**RECIPE_DEFAULTS, "seed": split["seed"]}
        _say("recipe:         no recipe.json: run the split stage again to fix it")
    left_total, spent_total = 0.0, 0.0
    problems: list[str] = []

    search_log = StageLog(work.stage_log("search"))
    spent_total += search_log.cpu_s
    search_settings = search_log.settings or dict(SEARCH_DEFAULTS)
    done, problem = _epochs_done(RunDir(work.search_dir).checkpoint, "epochs_done")
    if problem:
        problems.append(f"search: {problem} Delete the folder {work.search_dir} (only it) and "
                        "run the search again; it restarts from epoch 1")
    left = 0.0
    if not search_log.done:
        projected, _ = search_seconds(search_settings, shape, search_settings["epochs"] - done)
        measured = search_log.epoch_seconds()
        left = (projected if measured is None
                else (search_settings["epochs"] - done) * measured + SEARCH_FIXED_S)
        left_total += left
    _say("search:         " + _stage_line(search_log, done, search_settings["epochs"], left,
                                          stage_running(work, "search")))

    for arch in ARCHS:
        log = StageLog(work.stage_log(f"train:{arch}"))
        spent_total += log.cpu_s
        done, problem = _epochs_done(RunDir(work.train_dir(arch)).train_checkpoint, "epoch")
        if problem:
            problems.append(f"train {arch}: {problem} Delete the folder {work.train_dir(arch)} "
                            "(only it) and run the training again; it restarts from epoch 1")
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
            line += (" (waits for the search; projected with an estimate of its multiply-adds "
                     "until it starts)")
        _say(f"train {arch:9s} " + line)
    if work.published.is_file():
        record = _read_json(work.published)
        shown = ", ".join(f"{e['name']} {e['accuracy_percent']:.2f}%"
                          for e in record["entries"].values())
        where = (record["zoo_dir"] if record.get("stage", "zoo") == "zoo"
                 else f"the staging zoo {record.get('staging_dir')}; the zoo is unchanged")
        _say(f"publish:        {'done' if record['ok'] else 'FAILED checks'}: {shown} in "
             f"{where}")
    else:
        _say("publish:        not done")
    for problem in problems:
        _say(f"problem: {problem}")
    _say(f"projected time left: {_hours(left_total)} of CPU (one thread per process)")
    total = spent_total + left_total
    _say(f"budget: {spent_total / 3600:.2f} CPU-hours spent + {left_total / 3600:.2f} "
         f"projected left = {total / 3600:.2f} vs the {BUDGET_CPU_S / 3600:.0f} CPU-hour budget "
         f"({'within it' if total <= BUDGET_CPU_S else 'OVER it'})")
    return 0


def _stage_line(log: StageLog, done: int, total: int, left: float, running: str | None
                ) -> str:
    if not log.data["sessions"]:
        return f"not started ({total} epochs; projected {_hours(left)})"
    state = "done" if log.done else (running or "stopped")
    measured = log.epoch_seconds()
    text = f"{state}: epoch {done}/{total}; {log.time_words()}"
    if measured is not None:
        text += f"; {measured:.0f} s per epoch"
    if not log.done:
        text += f"; about {_hours(left)} left"
    return text


# ---------------------------------------------------------------------------------------- CLI


def _at_least_one(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _add_recipe_flags(parser: argparse.ArgumentParser, where: str) -> None:
    for key, value in RECIPE_DEFAULTS.items():
        parser.add_argument("--" + key.replace("_", "-"), type=type(value), default=None,
                            help=f"{where} (default {value})")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="Stages: split, search, train --arch aca|darts-v2, publish, status. See the "
               "module docstring for the budget. Commit the work directory at the end of "
               "every session.")
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--work", default=str(DEFAULT_WORK),
                        help=f"work directory holding every stage's state, tracked by git: "
                             f"commit it at the end of every session (default "
                             f"{display_path(DEFAULT_WORK)})")
    common.add_argument("--data", default=None,
                        help=f"the CIFAR-10 .npz (default: the split's, else {DEFAULT_DATA})")
    common.add_argument("--threads", type=int, default=1,
                        help="TensorFlow threads of this process (default 1)")
    common.add_argument("--quiet", dest="verbose", action="store_const", const=0, default=1,
                        help="no progress lines from the library")
    common.add_argument("--stop-after-epochs", type=_at_least_one, default=None, metavar="N",
                        help="stop this session after N >= 1 epochs (resumable; search and "
                             "train)")
    common.add_argument("--allow-code-change", action="store_true",
                        help="resume a stage whose earlier sessions ran other aca_keras code, "
                             "or publish trainings that ran different code (recorded, and "
                             "stated on the cards)")
    sub = parser.add_subparsers(dest="stage", required=True, metavar="STAGE")

    p = sub.add_parser("split", parents=[common],
                       help="hold out the validation images; fix the training recipe")
    p.add_argument("--holdout", type=int, default=None,
                   help=f"held-out images (default {SPLIT_DEFAULTS['holdout']})")
    p.add_argument("--seed", type=int, default=None,
                   help=f"seed of the search and both trainings (default {SPLIT_DEFAULTS['seed']})")
    _add_recipe_flags(p, "training recipe, fixed in recipe.json")

    p = sub.add_parser("search", parents=[common], help="search the ACA cell")
    for flag, key in SEARCH_FLAGS:
        default = SEARCH_DEFAULTS[key]
        p.add_argument(flag, type=int, default=None,
                       help=f"default {default if default is not None else 'aca_keras.search'}")

    p = sub.add_parser("train", parents=[common], help="train one architecture")
    p.add_argument("--arch", required=True, choices=ARCHS)
    _add_recipe_flags(p, "must equal recipe.json's value (fixed by the split)")

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
