"""Study v2: a search that collapses, and ACA measured against it (issue 18).

Data: the full CIFAR-10 training set of ``../shared/data/cifar10-jpeg/train.npz`` (50,000
images, JPEG round trip), downscaled to 16x16 by 2x2 block means. The last 10,000 images
are the **test part**: no search and no training ever sees them. Searches use the first
``search_images`` of the rest (half trains the weights, half the alphas); retraining uses
the first ``train_images`` of the rest.

Searches (all first-order DARTS; 8 cells, of which cells 2 and 5 are reduction cells (DARTS's
rule), C = 8, 4 nodes, batch 64, DARTS's learning rates: alpha lr 3e-4, not 10x), each run
to ``search_epochs`` with checkpoint snapshots at 25 %, 50 % and 100 % and the collapse
monitor (Hessian eigenvalue every ``hessian_every`` epochs) in ``alphas.jsonl``:

* ``darts-s3``: DARTS on R-DARTS's S3 ``{none, skip_connect, sep_conv_3x3}``;
* ``aca-s3``: the ACA form ``{none, sep_conv_3x3}`` (``rdarts-s3-aca``);
* ``darts-full`` (pilot only, one seed, ``pilot_epochs``): DARTS on the full DARTS space.

Methods (each snapshot of a search is derived, allocated and retrained):

* ``darts``: the DARTS genotype of a ``darts-*`` search, full width (allocator ``none``);
* from each ``aca-s3`` supernet: ``taylor`` (removal Taylor + adaptive, the first default),
  ``refill`` (refill + adaptive), ``refill-w`` (refill with the op weight divided out +
  adaptive), ``alpha`` (alpha allocator), ``fixed`` (k_e = C/4) and ``none`` (skip-free, no
  refill). Scoring uses 16 batches (``refill`` pools ``sorted``, ``taylor`` keeps the first
  default ``index``); a second, disjoint set of 16 batches gives the k_e again (stability).

Every unit (a search, a retraining) writes its JSON record atomically when done and is
never rerun; searches and trainings resume from their checkpoints, so the study continues
where it stopped. Each process claims the unit it runs (``<results>/claims/``), so
several processes can share one results folder. The ``report`` phase (JSON files only, no
TensorFlow) builds the tables between the markers of ``studies/README.md`` and
``collapse-report.png``. The ``rebuild`` phase writes a run folder for ``aca-train`` from a
training record alone (the weights are not kept; see studies/README.md).

Usage (from the repository root; one TensorFlow thread per process)::

    TF_NUM_INTRAOP_THREADS=1 TF_NUM_INTEROP_THREADS=1 python studies/collapse.py search --only darts-full
    TF_NUM_INTRAOP_THREADS=1 TF_NUM_INTEROP_THREADS=1 python studies/collapse.py search --only darts-s3,aca-s3
    python studies/collapse.py train
    python studies/collapse.py report    # tables into studies/README.md, works on partial results
    python studies/collapse.py rebuild v2-train-taylor-e100-s1 --run-dir runs/taylor-s1  # from its record
    python studies/collapse.py search --config tiny --results /tmp/c   # smoke test
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import dataclasses
import os
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
if str(REPO) not in sys.path:  # run as a script from a checkout
    sys.path.insert(0, str(REPO))

from aca_keras.stats import mcnemar_exact, t_interval  # noqa: E402  (no TensorFlow; after the path above)

DEFAULT_DATA = REPO.parent / "shared" / "data" / "cifar10-jpeg" / "train.npz"
DEFAULT_RESULTS = HERE / "results" / "collapse"
FORMAT = "aca_keras.study.collapse"


@dataclass(frozen=True)
class StudyConfig:
    """Every setting of the study (one named configuration per size)."""

    name: str
    image_size: int
    test_images: int
    search_images: int
    train_images: int
    search_epochs: int
    seeds: tuple[int, ...]
    pilot_seeds: tuple[int, ...]
    pilot_epochs: int
    search: dict[str, Any] = field(default_factory=dict)
    train: dict[str, Any] = field(default_factory=dict)
    snapshot_fractions: tuple[float, ...] = (0.25, 0.5, 1.0)

    def epochs(self, kind: str) -> int:
        """Search epochs of a search kind (the full-space pilot is shorter: 8 ops cost about
        4x the S3 step)."""
        return self.pilot_epochs if kind == "darts-full" else self.search_epochs

    def snapshot_epochs(self, kind: str) -> tuple[int, ...]:
        epochs = self.epochs(kind)
        return tuple(sorted({max(1, round(f * epochs)) for f in self.snapshot_fractions}))


CONFIGS: dict[str, StudyConfig] = {
    "tiny": StudyConfig(
        name="tiny", image_size=8, test_images=200, search_images=256, train_images=256,
        search_epochs=2, seeds=(1,), pilot_seeds=(1,), pilot_epochs=2,
        search=dict(cells=3, channels=4, nodes=2, batch_size=32, score_batches=2,
                    hessian_every=1, hessian_iterations=3),
        train=dict(cells=3, channels=4, epochs=1, batch_size=64, cutout=0)),
    # sized for about 12-15 CPU-hours on the 2-core machine (see studies/README.md)
    "v2": StudyConfig(
        name="v2", image_size=16, test_images=10_000, search_images=10_000,
        train_images=20_000, search_epochs=100, seeds=(1, 2, 3), pilot_seeds=(1,),
        pilot_epochs=60,
        search=dict(cells=8, channels=8, nodes=4, batch_size=64, score_batches=16,
                    hessian_every=5, hessian_iterations=16),
        train=dict(cells=8, channels=16, epochs=30, batch_size=96, cutout=8)),
}

#: search kind -> (op set, seeds attribute of the config)
SEARCHES: dict[str, tuple[str, str]] = {
    "darts-s3": ("rdarts-s3", "seeds"),
    "aca-s3": ("rdarts-s3-aca", "seeds"),
    "darts-full": ("darts", "pilot_seeds"),
}

#: method -> (search kind, scorer, pooling, divide_weight, allocator); scorer None: no scoring
METHODS: dict[str, tuple[str, str | None, str, bool, str]] = {
    "darts-s3": ("darts-s3", None, "index", False, "none"),
    "darts-full": ("darts-full", None, "index", False, "none"),
    "taylor": ("aca-s3", "taylor", "index", False, "adaptive"),
    "refill": ("aca-s3", "refill", "sorted", False, "adaptive"),
    "refill-w": ("aca-s3", "refill", "sorted", True, "adaptive"),
    "alpha": ("aca-s3", "alpha", "index", False, "alpha"),
    "fixed": ("aca-s3", None, "index", False, "fixed"),
    "none": ("aca-s3", None, "index", False, "none"),
}
#: methods retrained at every snapshot; the others at the end of the search only
TRAJECTORY_METHODS = ("darts-s3", "darts-full", "taylor", "refill")


# ------------------------------------------------------------------------------------- data


def study_arrays(path: str | os.PathLike, config: StudyConfig) -> tuple[np.ndarray, np.ndarray]:
    """``(x, y)``: every image of ``path`` downscaled to ``config.image_size`` by block means
    (uint8), labels int32. NumPy only."""
    with np.load(path) as contents:
        x, y = contents["x"], contents["y"].astype(np.int32)
    factor = x.shape[1] // config.image_size
    if factor > 1:
        n, h, w, c = x.shape
        x = x.reshape(n, h // factor, factor, w // factor, factor, c).astype(np.float32)
        x = np.round(x.mean(axis=(2, 4))).astype(np.uint8)
    return x, y


def load_study_data(path: str | os.PathLike, config: StudyConfig):
    """``(search_bundle, train_bundle, (x_test, y_test))``: both bundles hold the same test
    part (the last ``test_images`` images), never seen by a search or a training."""
    from aca_keras.data import loading as data_lib

    x, y = study_arrays(path, config)
    test = slice(len(x) - config.test_images, len(x))
    name = f"cifar10-jpeg-{config.image_size}px"
    search = data_lib.load((x[: config.search_images], y[: config.search_images]),
                           test=(x[test], y[test]), name=name, num_classes=10, flip=True)
    train = data_lib.load((x[: config.train_images], y[: config.train_images]),
                          test=(x[test], y[test]), name=name, num_classes=10, flip=True)
    return search, train, (x[test], y[test])


def split_description(config: StudyConfig) -> dict[str, Any]:
    n = 50_000
    return {"source": "cifar10-jpeg/train.npz", "downscale": f"2x2 block mean to "
            f"{config.image_size}x{config.image_size}",
            "test": [n - config.test_images, n], "search": [0, config.search_images],
            "train": [0, config.train_images]}


# ---------------------------------------------------------------------------------- search


def search_key(config: StudyConfig, kind: str, seed: int) -> str:
    return f"{config.name}-search-{kind}-s{seed}"


def run_search(config: StudyConfig, kind: str, seed: int, bundle, results: Path, log) -> Path:
    """Run or resume one search; returns the path of its JSON record."""
    from aca_keras.callbacks import CheckpointSnapshots
    from aca_keras.io.atomic import atomic_write_json
    from aca_keras.io.run_dir import RunDir
    from aca_keras.searching.pipeline import search

    key = search_key(config, kind, seed)
    record_path = results / f"{key}.json"
    if record_path.is_file():
        return record_path
    run_dir = results / "runs" / key
    resume = RunDir(run_dir).holds_search()
    log(f"search {key} ({'resume' if resume else 'new'})")
    callback = CheckpointSnapshots(run_dir, config.snapshot_epochs(kind))
    start = time.perf_counter()
    if resume:
        search(bundle, run_dir=run_dir, resume=True, verbose=2, callbacks=[callback])
    else:
        search(bundle, run_dir=run_dir, epochs=config.epochs(kind), ops=SEARCHES[kind][0],
               seed=1000 + seed, allocator="none", eval_cells=config.train["cells"],
               eval_channels=config.train["channels"], auxiliary=False, drop_path=0.0,
               verbose=2, callbacks=[callback], **config.search)
    seconds = time.perf_counter() - start
    record = {"format": FORMAT, "version": 1, "kind": "search", "key": key,
              "search": kind, "ops": SEARCHES[kind][0], "seed": seed,
              "seconds_this_session": round(seconds, 1), "epoch_seconds": callback.seconds,
              "snapshot_epochs": list(config.snapshot_epochs(kind)),
              "split": split_description(config), "settings": config.search}
    atomic_write_json(record_path, record)
    log(f"  done in {seconds:.0f} s")
    return record_path


# ----------------------------------------------------------------------------- retraining


@dataclass(frozen=True)
class Unit:
    """One retraining: a method at a snapshot epoch of one seed's search."""

    method: str
    epoch: int
    seed: int

    def key(self, config: StudyConfig) -> str:
        return f"{config.name}-train-{self.method}-e{self.epoch}-s{self.seed}"


@contextlib.contextmanager
def claim(results: Path, key: str):
    """Hold ``results/claims/<key>`` while this process runs unit ``key``; yields False
    when a live process already holds it. Lets several ``search``/``train`` processes share
    one results folder: each unit runs once, whatever their ``--only`` sets. A claim whose
    process is gone (killed, machine restarted) is stale and taken over."""
    folder = results / "claims"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / key
    for _ in range(2):
        try:
            handle = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            try:
                holder = int(path.read_text().strip() or "0")
            except (OSError, ValueError):
                holder = 0
            if holder and holder != os.getpid() and _process_alive(holder):
                yield False
                return
            path.unlink(missing_ok=True)  # stale: its process is gone
            continue
        os.write(handle, str(os.getpid()).encode())
        os.close(handle)
        try:
            yield True
        finally:
            path.unlink(missing_ok=True)
        return
    yield False  # another process took the stale claim between our two tries


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def training_units(config: StudyConfig) -> list[Unit]:
    """End-of-search units first (every method, every seed), then the earlier snapshots."""
    units = []
    for seed in config.seeds:
        for method, (kind, *_rest) in METHODS.items():
            if seed in getattr(config, SEARCHES[kind][1]):
                units.append(Unit(method, config.epochs(kind), seed))
    for index in range(len(config.snapshot_fractions) - 1):
        for seed in config.seeds:
            for method in TRAJECTORY_METHODS:
                kind = METHODS[method][0]
                if seed in getattr(config, SEARCHES[kind][1]):
                    units.append(Unit(method, config.snapshot_epochs(kind)[index], seed))
    return units


def architecture_for(config: StudyConfig, unit: Unit, bundle, results: Path):
    """Derive and allocate the architecture of ``unit`` from its search's snapshot."""
    from aca_keras.channels.allocation import allocate
    from aca_keras.channels.importance import score_channels
    from aca_keras.io import checkpoint as ckpt
    from aca_keras.io.atomic import read_json
    from aca_keras.io.run_dir import RunDir
    from aca_keras.searching.pipeline import SearchConfig, build_search_network
    from aca_keras.space.architecture import Architecture

    kind, scorer, pooling, divide, allocator = METHODS[unit.method]
    run = RunDir(results / "runs" / search_key(config, kind, unit.seed))
    search_config = SearchConfig.from_dict(read_json(run.config))
    pipelines = bundle.search_pipelines(
        batch_size=search_config.batch_size, train_fraction=search_config.train_fraction,
        seed=search_config.seed, epochs=1, start_epoch=0, augment=False)
    network = build_search_network(bundle, search_config, pipelines.steps_per_epoch)
    network.ensure_built()
    ckpt.load_checkpoint(run.snapshot(unit.epoch), network,
                         {"optimizer": network.optimizer,
                          "alpha_optimizer": network.alpha_optimizer})
    provenance = {"study": config.name, "method": unit.method, "search": kind,
                  "snapshot_epoch": unit.epoch, "seed": unit.seed}
    plain = Architecture.from_genotype(network.genotype(), search_config.channels,
                                       network.op_names, provenance=provenance)
    stability = None
    if scorer is None:
        scores = None
    else:
        scores = score_channels(network, plain, pipelines.dataset, scorer=scorer,
                                pooling=pooling, divide_weight=divide,
                                max_batches=config.search["score_batches"])
        if scorer != "alpha":  # k_e from a second, disjoint set of batches
            other = score_channels(network, plain, pipelines.dataset, scorer=scorer,
                                   pooling=pooling, divide_weight=divide,
                                   max_batches=config.search["score_batches"],
                                   skip_batches=config.search["score_batches"])
            second = allocate(plain, other, method=allocator)
            stability = {"normal": list(second.normal.channels),
                         "reduce": list(second.reduce.channels)}
    if scores is None:
        from aca_keras.channels.allocation import ChannelScores

        zeros = {c: tuple(np.ones(search_config.channels) for _ in getattr(plain, c).edges)
                 for c in ("normal", "reduce")}
        scores = ChannelScores(zeros["normal"], zeros["reduce"],
                               tuple(1.0 for _ in plain.normal.edges),
                               tuple(1.0 for _ in plain.reduce.edges), scorer="none")
    return allocate(plain, scores, method=allocator), stability


def run_training(config: StudyConfig, unit: Unit, search_bundle, train_bundle, test_arrays,
                 results: Path, log) -> Path | None:
    """Retrain one unit with the fixed recipe; returns its record path (None: its search
    has not reached the snapshot yet)."""
    import keras

    from aca_keras.io.atomic import atomic_write_json
    from aca_keras.io.run_dir import RunDir
    from aca_keras.models.derived import build_model
    from aca_keras.training import train

    key = unit.key(config)
    record_path = results / f"{key}.json"
    if record_path.is_file():
        return record_path
    kind = METHODS[unit.method][0]
    snapshot = RunDir(results / "runs" / search_key(config, kind, unit.seed)).snapshot(unit.epoch)
    if not snapshot.is_file():
        return None
    log(f"train {key}")
    start = time.perf_counter()
    architecture, stability = architecture_for(config, unit, search_bundle, results)
    keras.backend.clear_session()
    t = config.train
    keras.utils.set_random_seed(unit.seed)
    model = build_model(architecture, train_bundle.input_shape, train_bundle.num_classes,
                        cells=t["cells"], channels=t["channels"], auxiliary=False,
                        drop_path=0.0, mean=train_bundle.mean, std=train_bundle.std)
    run_dir = results / "runs" / key
    result = train(model, train_bundle, epochs=t["epochs"], batch_size=t["batch_size"],
                   cutout=t["cutout"], drop_path=0.0, seed=unit.seed, run_dir=run_dir,
                   resume=RunDir(run_dir).train_config.is_file(), verbose=0)
    x_test, y_test = test_arrays
    logits = result.model.inference_model().predict(x_test, batch_size=500, verbose=0)
    correct = np.argmax(logits, axis=-1) == y_test
    skip = architecture.skip_count
    identity = architecture.identity_channels
    record = {
        "format": FORMAT, "version": 1, "kind": "train", "key": key,
        **dataclasses.asdict(unit), "search": kind,
        "accuracy": float(correct.mean()),
        "correct": base64.b64encode(np.packbits(correct)).decode("ascii"),
        "test_images": int(correct.size),
        "k_normal": list(architecture.normal.channels),
        "k_reduce": list(architecture.reduce.channels), "k_second_batches": stability,
        "skip_connect_normal": skip["normal"], "skip_connect_reduce": skip["reduce"],
        "identity_channels_normal": identity["normal"],
        "identity_channels_reduce": identity["reduce"],
        "genotype": architecture.to_genotype().to_dict(),
        "params": int(model.inference_model().count_params()),
        "seconds": round(time.perf_counter() - start, 1),
        "split": split_description(config), "recipe": t,
    }
    atomic_write_json(record_path, record)
    log(f"  {key}: accuracy {record['accuracy']:.4f}, k_normal {record['k_normal']}, "
        f"{record['seconds']:.0f} s")
    keras.backend.clear_session()
    return record_path


# -------------------------------------------------------------------------------- rebuild
# A retrained network from its JSON record alone: the record holds the genotype, the k_e of
# both cells, the seed, the split and the recipe (the study's weights are not kept).


def read_record(results: Path, key: str) -> dict[str, Any]:
    """The training record ``<results>/<key>.json``; ``FileNotFoundError`` naming the keys
    there when it is missing."""
    import json

    path = Path(results) / f"{key}.json"
    if not path.is_file():
        known = sorted(p.stem for p in Path(results).glob("*-train-*.json"))
        raise FileNotFoundError(f"no training record {path}; records in {results}: "
                                f"{', '.join(known) or 'none'}")
    record = json.loads(path.read_text(encoding="utf-8"))
    if record.get("format") != FORMAT or record.get("kind") != "train":
        raise ValueError(f"{path} is not a training record of this study")
    return record


def architecture_from_record(record: dict[str, Any], config: StudyConfig):
    """The ``Architecture`` a training record was retrained from: its genotype (op set of its
    search kind, reference C of the search) with the recorded k_e of both cells."""
    from aca_keras.space.architecture import Architecture
    from aca_keras.space.genotype import Genotype

    plain = Architecture.from_genotype(
        Genotype.from_dict(record["genotype"]), config.search["channels"],
        SEARCHES[record["search"]][0],
        provenance={"study": config.name, "method": record["method"], "search": record["search"],
                    "snapshot_epoch": record["epoch"], "seed": record["seed"],
                    "record": record["key"]})
    return plain.with_channels(record["k_normal"], record["k_reduce"])


def train_command(record: dict[str, Any], run_dir: str | os.PathLike) -> str:
    """The ``aca-train`` command that retrains ``record``'s network in a rebuilt run folder
    (cells, channels, seed, no auxiliary head and no drop path come from its config.json)."""
    recipe = record["recipe"]
    return (f"aca-train {run_dir} --epochs {recipe['epochs']} --batch-size "
            f"{recipe['batch_size']} --cutout {recipe['cutout']} --verbose 2")


def rebuild(config: StudyConfig, record: dict[str, Any], run_dir: str | os.PathLike,
            data: str | os.PathLike = DEFAULT_DATA) -> Path:
    """Write a run folder for ``aca-train`` from a training record: ``architecture.json``,
    ``data.npz`` (the record's training images and the test part, at the study's size) and
    ``config.json`` (that data, the seed, the cells and channels of the recipe, no auxiliary
    head, no drop path). NumPy only; returns the folder."""
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    architecture_from_record(record, config).save(run_dir / "architecture.json")
    x, y = study_arrays(data, config)
    split = record["split"]
    train, test = slice(*split["train"]), slice(*split["test"])
    np.savez_compressed(run_dir / "data.npz", x=x[train], y=y[train], x_test=x[test],
                        y_test=y[test])
    import json

    recipe = record["recipe"]
    settings = {"dataset": str((run_dir / "data.npz").resolve()), "seed": record["seed"],
                "eval_cells": recipe["cells"], "eval_channels": recipe["channels"],
                "auxiliary": False, "drop_path": 0.0, "study_record": record["key"]}
    (run_dir / "config.json").write_text(json.dumps(settings, indent=2) + "\n",
                                         encoding="utf-8")
    return run_dir


def retrain_exact(config: StudyConfig, record: dict[str, Any], run_dir: Path,
                  data: str | os.PathLike, log) -> float:
    """Retrain ``record``'s network as the study did (its data bundle, horizontal flips on,
    the seed, the recipe) into ``run_dir``; returns the test-part accuracy."""
    import keras

    from aca_keras.models.derived import build_model
    from aca_keras.training import train

    _search, train_bundle, (x_test, y_test) = load_study_data(data, config)
    architecture = architecture_from_record(record, config)
    t = record["recipe"]
    keras.utils.set_random_seed(record["seed"])
    model = build_model(architecture, train_bundle.input_shape, train_bundle.num_classes,
                        cells=t["cells"], channels=t["channels"], auxiliary=False,
                        drop_path=0.0, mean=train_bundle.mean, std=train_bundle.std)
    params = int(model.inference_model().count_params())
    log(f"{record['key']}: {params} parameters (record: {record['params']})")
    result = train(model, train_bundle, epochs=t["epochs"], batch_size=t["batch_size"],
                   cutout=t["cutout"], drop_path=0.0, seed=record["seed"], run_dir=run_dir,
                   verbose=2)
    logits = result.model.inference_model().predict(x_test, batch_size=500, verbose=0)
    accuracy = float(np.mean(np.argmax(logits, axis=-1) == y_test))
    log(f"{record['key']}: test accuracy {accuracy:.4f} (record: {record['accuracy']:.4f})")
    return accuracy


# ---------------------------------------------------------------------------------- report
# Reads only JSON files (no TensorFlow); works on partial results and says what is missing.

REPORT_START = "<!-- collapse-report:start -->"
REPORT_END = "<!-- collapse-report:end -->"
DEFAULT_README = HERE / "README.md"
BOOTSTRAP_RESAMPLES = 2000
BOOTSTRAP_SEED = 0
#: normal-cell skip edges (of 8) from which a derived cell counts as collapsed
COLLAPSE_SKIP_EDGES = 4


def read_alphas(path: str | os.PathLike) -> list[dict[str, Any]]:
    """The lines of an ``alphas.jsonl``, one per epoch in epoch order (a resumed search may
    have written an epoch twice: the last line wins; a half-written last line is skipped)."""
    import json

    by_epoch: dict[int, dict[str, Any]] = {}
    with open(path, encoding="utf-8") as handle:
        for line in handle:
            line = line.strip()
            if not line:
                continue
            try:
                entry = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(entry, dict) and "epoch" in entry:
                by_epoch[int(entry["epoch"])] = entry
    return [by_epoch[e] for e in sorted(by_epoch)]


def collapse_rows(lines: Sequence[dict[str, Any]],
                  snapshot_epochs: Sequence[int]) -> list[dict[str, Any]]:
    """One row per snapshot epoch reached and for the last epoch reached: skip and
    parameter-free edges of the derived normal cell, the latest Hessian eigenvalue measured
    at or before that epoch (with the epoch it was measured at), the supernet's accuracy on
    its weights half and on its alpha half."""
    if not lines:
        return []
    last = lines[-1]["epoch"]
    wanted = sorted({e for e in snapshot_epochs if e <= last} | {last})
    by_epoch = {line["epoch"]: line for line in lines}
    rows = []
    for epoch in wanted:
        line = by_epoch.get(epoch)
        if line is None:  # an epoch missing from the file: nothing to show
            continue
        eigen, eigen_epoch = None, None
        for other in lines:
            if other["epoch"] > epoch:
                break
            if other.get("hessian_eigenvalue") is not None:
                eigen, eigen_epoch = float(other["hessian_eigenvalue"]), other["epoch"]
        metrics = line.get("metrics") or {}
        rows.append({"epoch": epoch, "snapshot": epoch in snapshot_epochs,
                     "skip_edges": line.get("skip_edges"),
                     "parameter_free_edges": line.get("parameter_free_edges"),
                     "hessian_eigenvalue": eigen, "hessian_epoch": eigen_epoch,
                     "accuracy": metrics.get("accuracy"),
                     "alpha_accuracy": metrics.get("alpha_accuracy")})
    return rows


def collapse_first_half(lines: Sequence[dict[str, Any]],
                        threshold: int = COLLAPSE_SKIP_EDGES) -> dict[str, Any]:
    """The collapse criterion's first half: at least ``threshold`` of the 8 normal-cell edges
    ``skip_connect`` at the last epoch reached; also the first epoch at which it held
    (``first_epoch``: early epochs count, when near-uniform alphas can pick skip by chance)
    and the epoch from which it held without a break to the last one (``held_from``)."""
    if not lines:
        return {"met": False, "first_epoch": None, "held_from": None, "last_epoch": None,
                "last_skip": None}
    first = next((line["epoch"] for line in lines
                  if (line.get("skip_edges") or 0) >= threshold), None)
    last_skip = lines[-1].get("skip_edges") or 0
    held_from = None
    for line in reversed(lines):
        if (line.get("skip_edges") or 0) < threshold:
            break
        held_from = line["epoch"]
    return {"met": last_skip >= threshold, "first_epoch": first, "held_from": held_from,
            "last_epoch": lines[-1]["epoch"], "last_skip": last_skip}


def decode_correct(record: dict[str, Any]) -> np.ndarray:
    """The per-image boolean correctness of a training record (``correct``, bit-packed)."""
    bits = np.unpackbits(np.frombuffer(base64.b64decode(record["correct"]), dtype=np.uint8))
    return bits[: int(record["test_images"])].astype(bool)


def paired_bootstrap(correct_a: np.ndarray, correct_b: np.ndarray,
                     resamples: int = BOOTSTRAP_RESAMPLES, seed: int = BOOTSTRAP_SEED,
                     level: float = 0.95) -> tuple[float, float, float]:
    """``(difference, low, high)``: accuracy of A minus B and a percentile bootstrap interval
    from resampling the test images with replacement (the same images for A and B). 2-D
    inputs (seeds x images) resample the same images for every seed and average the seeds."""
    a = np.asarray(correct_a, dtype=np.float64)
    b = np.asarray(correct_b, dtype=np.float64)
    if a.shape != b.shape:
        raise ValueError(f"unpaired correctness vectors: {a.shape} vs {b.shape}")
    diff = a - b
    if diff.ndim == 2:
        diff = diff.mean(axis=0)
    n = diff.size
    rng = np.random.default_rng(seed)
    means = np.empty(resamples)
    chunk = max(1, 1_000_000 // max(n, 1))
    for start in range(0, resamples, chunk):
        stop = min(resamples, start + chunk)
        index = rng.integers(0, n, size=(stop - start, n))
        means[start:stop] = diff[index].mean(axis=1)
    tail = (1 - level) / 2 * 100
    low, high = np.percentile(means, [tail, 100 - tail])
    return float(diff.mean()), float(low), float(high)


def load_training_records(results: Path, config: StudyConfig) -> dict[tuple[str, int, int], dict]:
    """``(method, epoch, seed) -> record`` of every training record in ``results``."""
    from json import JSONDecodeError, loads

    records = {}
    for path in sorted(Path(results).glob(f"{config.name}-train-*.json")):
        try:
            record = loads(path.read_text(encoding="utf-8"))
        except (OSError, JSONDecodeError):
            continue
        if record.get("format") != FORMAT or record.get("kind") != "train":
            continue
        records[(record["method"], int(record["epoch"]), int(record["seed"]))] = record
    return records


SKIP_OP = "skip_connect"


def identity_edges(record: dict[str, Any]) -> dict[str, int]:
    """The pure-identity edges of a training record's derived normal cell: ``skip`` (its
    ``skip_connect`` edges), ``zero_k`` (other edges with k_e = 0, which the builder wires as
    their input: every normal-cell edge has stride 1) and ``identity``, their sum (the
    package's ``Architecture.effective_skip_count``); ``edges``: the cell's edge count.

    The genotype's pairs are listed node by node (``min(edges_per_node, node + 2)`` per
    node); ``k_normal`` follows the architecture's edge order (node, then input)."""
    genotype = record["genotype"]
    pairs = [tuple(pair) for pair in genotype["normal"]]
    per_node = int(genotype.get("edges_per_node", 2))
    edges, start, node = [], 0, 0
    while start < len(pairs):
        count = min(per_node, node + 2)
        edges += [(node, int(i), op) for op, i in pairs[start:start + count]]
        start += count
        node += 1
    edges.sort(key=lambda e: (e[0], e[1]))
    k = [int(x) for x in record["k_normal"]]
    if len(k) != len(edges):
        raise ValueError(f"record {record.get('key')!r}: {len(k)} k_normal values for "
                         f"{len(edges)} normal-cell edges")
    skip = sum(op == SKIP_OP for _n, _i, op in edges)
    zero = sum(op != SKIP_OP and ke == 0 for (_n, _i, op), ke in zip(edges, k))
    return {"skip": skip, "zero_k": zero, "identity": skip + zero, "edges": len(edges)}


def identity_section(config: StudyConfig, records: dict) -> list[str]:
    """Markdown: skip_connect and k_e = 0 edges of every retrained network's normal cell
    (per network and per method), measured against the collapse criterion's 4 of 8."""
    out = ["#### Identity edges of the derived normal cells (every retrained network)", "",
           "An edge with k_e = 0 at stride 1 (every normal-cell edge) is built as its input, "
           "as a `skip_connect` edge is: both are pure identities. Each cell: `skip_connect` "
           "edges + k_e = 0 edges = identity edges, of 8. The collapse criterion's first "
           f"half counts `skip_connect` alone ({COLLAPSE_SKIP_EDGES}+ of 8); the last column "
           f"counts the networks with {COLLAPSE_SKIP_EDGES}+ identity edges of 8.", ""]
    seeds = sorted(set(config.seeds) | {k[2] for k in records})
    order = {method: index for index, method in enumerate(METHODS)}
    groups = sorted({k[:2] for k in records}, key=lambda k: (order.get(k[0], len(order)), k[1]))
    rows, listed = [], []
    for method, epoch in groups:
        present = {s: identity_edges(records[(method, epoch, s)]) for s in seeds
                   if (method, epoch, s) in records}
        cells = []
        for s in seeds:
            if s not in present:
                cells.append("—")
                continue
            e = present[s]
            cells.append(f"{e['skip']} + {e['zero_k']} = {e['identity']}")
        over = [s for s, e in present.items() if e["identity"] >= COLLAPSE_SKIP_EDGES]
        rows.append([f"`{method}`", f"{epoch}"] + cells + [f"{len(over)} of {len(present)}"])
        for s in over:
            e = present[s]
            kinds = [x for x, n in (("skip_connect", e["skip"]), ("k_e = 0", e["zero_k"])) if n]
            listed.append(f"`{method}` e{epoch} s{s} ({e['identity']}: {', '.join(kinds)})")
    if not rows:
        return out + ["No training record yet."]
    out += _table(["method", "snapshot epoch"] + [f"s{s}" for s in seeds]
                  + [f"{COLLAPSE_SKIP_EDGES}+ identity edges"], rows)
    out += ["", f"Networks with {COLLAPSE_SKIP_EDGES}+ of 8 identity edges: "
            + ("; ".join(listed) if listed else "none") + "."]
    return out


def k_stability(record: dict[str, Any]) -> float | None:
    """Mean absolute difference between the k_e of a record and the k_e from the second,
    disjoint set of scoring batches (over the normal and reduction edges); None without."""
    second = record.get("k_second_batches")
    if not second:
        return None
    first = list(record["k_normal"]) + list(record["k_reduce"])
    other = list(second["normal"]) + list(second["reduce"])
    if len(first) != len(other) or not first:
        return None
    return float(np.mean(np.abs(np.asarray(first, float) - np.asarray(other, float))))


def _fmt(value, digits: int = 4, dash: str = "—") -> str:
    if value is None:
        return dash
    if isinstance(value, (int, np.integer)):
        return str(int(value))
    return f"{value:.{digits}f}"


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    out = ["| " + " | ".join(header) + " |", "| " + " | ".join("---" for _ in header) + " |"]
    out += ["| " + " | ".join(row) + " |" for row in rows]
    return out


def search_runs(config: StudyConfig) -> list[tuple[str, int]]:
    """``(kind, seed)`` of every search of the study, in report order."""
    return [(kind, seed) for kind, (_ops, seeds) in SEARCHES.items()
            for seed in getattr(config, seeds)]


def collapse_section(config: StudyConfig, results: Path) -> tuple[list[str], dict]:
    """Markdown of the collapse table, and the alphas lines per search run read."""
    out = ["#### Collapse monitor per search run", "",
           "Derived normal cell at the snapshot epochs and at the last epoch reached; "
           "Hessian: largest eigenvalue of the validation loss w.r.t. the alphas, the latest "
           "measured at or before that epoch (its epoch in brackets when earlier); "
           "accuracies of the supernet on its weights half (train) and its alpha half.", ""]
    rows, notes, runs = [], [], {}
    for kind, seed in search_runs(config):
        key = search_key(config, kind, seed)
        path = Path(results) / "runs" / key / "alphas.jsonl"
        total = config.epochs(kind)
        if not path.is_file():
            notes.append(f"* `{key}`: not started (no `alphas.jsonl`).")
            continue
        lines = read_alphas(path)
        runs[(kind, seed)] = lines
        if not lines:
            notes.append(f"* `{key}`: `alphas.jsonl` holds no epoch yet.")
            continue
        snapshots = config.snapshot_epochs(kind)
        for row in collapse_rows(lines, snapshots):
            eigen = _fmt(row["hessian_eigenvalue"], 2)
            if row["hessian_epoch"] is not None and row["hessian_epoch"] != row["epoch"]:
                eigen += f" (e{row['hessian_epoch']})"
            label = f"{row['epoch']}" + (f" ({round(100 * row['epoch'] / total)} %)"
                                         if row["snapshot"] else " (last)")
            rows.append([f"`{kind}` s{seed}", label, f"{_fmt(row['skip_edges'])} / 8",
                         _fmt(row["parameter_free_edges"]), eigen, _fmt(row["accuracy"], 3),
                         _fmt(row["alpha_accuracy"], 3)])
        half = collapse_first_half(lines)
        done = (Path(results) / f"{key}.json").is_file()
        state = "finished" if done else f"running or stopped, {half['last_epoch']} of {total} epochs"
        missing = [e for e in snapshots if e > half["last_epoch"]]
        verdict = ("**met**" if half["met"] else "not met")
        if kind.startswith("aca"):  # its op sets hold no skip_connect
            note = (f"* `{key}` ({state}): no skip_connect in its op set (criterion not "
                    f"applicable); {lines[-1].get('parameter_free_edges')} parameter-free "
                    f"edges at epoch {half['last_epoch']}")
        else:
            note = (f"* `{key}` ({state}): {COLLAPSE_SKIP_EDGES}+ of 8 normal edges "
                    f"skip_connect {verdict} ({half['last_skip']} at epoch "
                    f"{half['last_epoch']}")
            note += (f"; held from epoch {half['held_from']} on, first reached at epoch "
                     f"{half['first_epoch']})" if half["held_from"]
                     else f"; first reached at epoch {half['first_epoch']}, not held)"
                     if half["first_epoch"] else "; never reached)")
        if missing:
            note += f"; snapshots not reached yet: {', '.join(map(str, missing))}"
        notes.append(note + ".")
    if rows:
        out += _table(["search", "epoch", "skip edges", "param.-free edges", "Hessian eig.",
                       "train acc.", "alpha-half acc."], rows)
        out.append("")
    out += ["Collapse criterion, first half (at the last epoch reached):", ""] + notes
    return out, runs


def _mean_sd_se(values) -> tuple[float, float | None, float | None]:
    """Mean, sample standard deviation and standard error of ``values`` (sd and se None for
    a single value)."""
    values = np.asarray(values, dtype=float)
    if values.size < 2:
        return float(values.mean()), None, None
    sd = float(values.std(ddof=1))
    return float(values.mean()), sd, sd / float(np.sqrt(values.size))


def retraining_section(config: StudyConfig, records: dict) -> list[str]:
    units = training_units(config)
    out = ["#### Retraining (test part, 10,000 images)" if config.test_images == 10_000
           else "#### Retraining (test part)", ""]
    missing = [u for u in units if (u.method, u.epoch, u.seed) not in records]
    if not records:
        out.append(f"Retraining results missing: none of the {len(units)} training records "
                   "exists yet.")
        return out
    groups: dict[tuple[str, int], list] = {}
    for unit in units:
        groups.setdefault((unit.method, unit.epoch), [])
    for key in records:
        groups.setdefault(key[:2], [])
    seeds = sorted(set(config.seeds) | {k[2] for k in records})
    order = {method: index for index, method in enumerate(METHODS)}
    rows = []
    for method, epoch in sorted(groups, key=lambda k: (order.get(k[0], len(order)), k[1])):
        present = {s: records[(method, epoch, s)] for s in seeds if (method, epoch, s) in records}
        if not present:
            continue
        acc = np.array([r["accuracy"] for r in present.values()])
        mean, sd, se = _mean_sd_se(acc)
        params = sorted({int(r["params"]) for r in present.values()})
        stab = [k_stability(r) for r in present.values()]
        stab = [v for v in stab if v is not None]
        skips = [r.get("skip_connect_normal") for r in present.values()]
        kind = METHODS[method][0] if method in METHODS else "?"
        total = config.epochs(kind) if method in METHODS else None
        label = f"{epoch}" + (f" ({round(100 * epoch / total)} %)" if total else "")
        rows.append([f"`{method}`", label]
                    + [_fmt(present[s]["accuracy"]) if s in present else "—" for s in seeds]
                    + [_fmt(mean), _fmt(sd), _fmt(se), str(acc.size),
                       (str(params[0]) if len(params) == 1 else f"{params[0]}-{params[-1]}"),
                       ", ".join("—" if v is None else str(v) for v in skips),
                       _fmt(float(np.mean(stab)), 2) if stab else "—"])
    out += _table(["method", "snapshot epoch"] + [f"s{s}" for s in seeds]
                  + ["mean", "sd", "se", "n", "params", "skip edges (normal)",
                     "k_e stability"], rows)
    out += ["", "k_e stability: mean |k_e - k_e'| over the edges of both cells, k_e' from a "
            "second, disjoint set of scoring batches (— where the method scores nothing or "
            "uses alpha)."]
    if missing:
        grouped: dict[tuple[str, int], list[int]] = {}
        for u in missing:
            grouped.setdefault((u.method, u.epoch), []).append(u.seed)
        listing = "; ".join(f"`{m}` e{e} s{','.join(map(str, s))}"
                            for (m, e), s in grouped.items())
        out += ["", f"Retraining results missing: {len(missing)} of {len(units)} units "
                f"({listing})."]
    return out


def comparison_pairs(config: StudyConfig) -> list[tuple[tuple[str, int], tuple[str, int]]]:
    """``((method, epoch), (method, epoch))`` pairs compared image by image: every ACA
    method against ``darts-s3`` at the end of the search; every allocating ACA method
    against ``taylor`` (today's default scorer, what the defaults decision compares against)
    and against ``none`` (the same skip-free cell at full width: the capacity control);
    ``refill-w`` against ``refill`` (the effect of dividing out the op weight); each
    trajectory method's network at 100 % against its earlier snapshots (for the DARTS
    searches the collapse criterion's second half; for ``taylor`` and ``refill`` whether a
    longer search still helps ACA); and ``taylor`` and ``refill`` against ``darts-s3`` at the
    earlier snapshots too (does ACA's lead hold along the search?); last, ``taylor`` at 100 %
    against DARTS stopped early (:func:`early_stop_pair`)."""
    end = config.epochs("darts-s3")
    aca = [m for m, (kind, *_r) in METHODS.items() if kind == "aca-s3"]
    aca_end = config.epochs("aca-s3")
    pairs = [((m, aca_end), ("darts-s3", end)) for m in aca]
    pairs += [((m, aca_end), ("taylor", aca_end)) for m in aca if m not in ("taylor", "none")]
    pairs += [((m, aca_end), ("none", aca_end)) for m in aca if m != "none"]
    pairs.append((("refill-w", aca_end), ("refill", aca_end)))
    for method in TRAJECTORY_METHODS:
        snaps = config.snapshot_epochs(METHODS[method][0])
        pairs += [((method, snaps[-1]), (method, e)) for e in snaps[:-1]]
    darts_snaps = config.snapshot_epochs("darts-s3")
    for method in TRAJECTORY_METHODS:
        if METHODS[method][0] == "aca-s3":
            pairs += [((method, e), ("darts-s3", e))
                      for e in config.snapshot_epochs("aca-s3")[:-1] if e in darts_snaps]
    pairs.append(early_stop_pair(config))
    return pairs


def early_stop_pair(config: StudyConfig) -> tuple[tuple[str, int], tuple[str, int]]:
    """``taylor`` at the end of its search against ``darts-s3`` at its 50 % snapshot: ACA
    against DARTS stopped early (R-DARTS's remedy). The 50 % snapshot is DARTS's best by its
    seed-mean test accuracy, so the stop was chosen on the test part: an oracle."""
    return ((DEFAULT_METHOD, config.epochs("aca-s3")),
            ("darts-s3", config.snapshot_epochs("darts-s3")[1]))


def preregistered_pairs(config: StudyConfig) -> list[tuple[tuple[str, int], tuple[str, int]]]:
    """The pairs whose reading a rule fixed before their results: the collapse criterion's
    second half (issue 18: each DARTS network at the end against its earlier snapshots) and
    the defaults rule of ``studies/README.md`` (the candidates against ``taylor`` at 100 %)."""
    pairs = []
    for method in METHODS:
        if is_darts(method):
            snaps = config.snapshot_epochs(METHODS[method][0])
            pairs += [((method, snaps[-1]), (method, e)) for e in snaps[:-1]]
    end = config.epochs("aca-s3")
    pairs += [((m, end), (DEFAULT_METHOD, end)) for m in CANDIDATE_METHODS]
    return pairs


def is_darts(method: str) -> bool:
    """Whether ``method`` is a plain DARTS search (skip_connect searched, no allocation)."""
    return METHODS[method][0].startswith("darts")


def seed_interval(per_seed: Sequence[float], level: float = 0.95) -> tuple[float, float] | None:
    """The between-seed interval of a pooled difference: the Student-t interval of the mean
    of the per-seed differences (t with n - 1 degrees of freedom; None for one seed). Unlike
    the bootstrap and McNemar, which treat every seed's test images as independent, it takes
    the seeds as the sample: two networks' per-image correctness correlates, so the images
    of three seeds are not 3 x 10,000 independent draws."""
    if len(per_seed) < 2:
        return None
    _mean, low, high = t_interval(per_seed, level)
    return low, high


def _pair_name(a_key: tuple[str, int], b_key: tuple[str, int]) -> str:
    return f"`{a_key[0]}` e{a_key[1]} vs `{b_key[0]}` e{b_key[1]}"


def comparisons_section(config: StudyConfig, records: dict) -> list[str]:
    out = ["#### Paired comparisons on the same test images", "",
           "Difference = accuracy of A minus B. McNemar: exact two-sided binomial test on the "
           "discordant images (b: only A right, c: only B right). CI: 95 % paired bootstrap "
           f"over the test images ({BOOTSTRAP_RESAMPLES} resamples, seed {BOOTSTRAP_SEED}); "
           "the `all` row pools the seeds present for both (same images resampled for every "
           "seed, differences averaged over seeds; McNemar on the summed counts). Seeds: the "
           "between-seed 95 % t-interval of the `all` row's difference (the mean of the "
           "per-seed differences, t with n - 1 degrees of freedom), which takes the seeds, "
           "not the images, as the sample.", ""]
    rows, skipped, verdicts, pooled = [], [], {}, []
    compared = []
    for a_key, b_key in comparison_pairs(config):
        seeds = [s for s in sorted({k[2] for k in records})
                 if (*a_key, s) in records and (*b_key, s) in records]
        name = _pair_name(a_key, b_key)
        if not seeds:
            skipped.append(name)
            continue
        compared.append((a_key, b_key))
        a_all, b_all, per_seed = [], [], []
        for seed in seeds:
            ra, rb = records[(*a_key, seed)], records[(*b_key, seed)]
            ca, cb = decode_correct(ra), decode_correct(rb)
            if ca.shape != cb.shape:
                continue
            a_all.append(ca)
            b_all.append(cb)
            b, c, p = mcnemar_exact(ca, cb)
            diff, low, high = paired_bootstrap(ca, cb)
            per_seed.append(diff)
            rows.append([name, f"s{seed}", _fmt(float(ca.mean())), _fmt(float(cb.mean())),
                         f"{diff:+.4f}", f"[{low:+.4f}, {high:+.4f}]", "", str(b), str(c),
                         _fmt_p(p)])
            if a_key[0] == b_key[0] and is_darts(a_key[0]):  # collapse's second half
                verdicts.setdefault((a_key, seed), []).append(
                    f"{'lower' if diff < 0 else 'not lower'} than e{b_key[1]} "
                    f"({diff:+.4f}, p = {_fmt_p(p)})")
        if len(a_all) > 1 and len({x.shape for x in a_all}) == 1:
            ca, cb = np.stack(a_all), np.stack(b_all)
            b, c, p = mcnemar_exact(ca, cb)  # every seed's discordant images together
            diff, low, high = paired_bootstrap(ca, cb)
            seed_low, seed_high = seed_interval(per_seed)
            rows.append([name, "all", _fmt(float(ca.mean())), _fmt(float(cb.mean())),
                         f"{diff:+.4f}", f"[{low:+.4f}, {high:+.4f}]",
                         f"[{seed_low:+.4f}, {seed_high:+.4f}]", str(b), str(c), _fmt_p(p)])
            pooled.append({"pair": (a_key, b_key), "name": name, "difference": diff,
                           "bootstrap": (low, high), "seeds": (seed_low, seed_high),
                           "n": len(per_seed)})
    if rows:
        out += _table(["A vs B", "seed", "acc. A", "acc. B", "difference", "95 % CI",
                       "seeds: 95 % t-interval", "b", "c", "McNemar p"], rows)
    else:
        out.append("No pair has both records yet.")
    if pooled:
        out += [""] + seed_interval_summary(pooled)
    if compared:
        out += [""] + comparisons_count(config, records, compared, len(pooled))
    if verdicts:
        out += ["", "Collapse criterion, second half (the derived network at the end of the "
                "search against its earlier snapshots, same seed):", ""]
        out += [f"* `{key[0]}` e{key[1]} s{seed}: " + "; ".join(parts) + "."
                for (key, seed), parts in verdicts.items()]
    if skipped and rows:
        out += ["", f"Not yet comparable (a record missing): {'; '.join(skipped)}."]
    return out


def _excludes_zero(interval: tuple[float, float]) -> bool:
    return interval[0] > 0 or interval[1] < 0


def seed_interval_summary(pooled: Sequence[dict[str, Any]]) -> list[str]:
    """Which pooled differences exclude zero by the between-seed interval, and which only by
    the bootstrap over the images."""
    both = [r for r in pooled if _excludes_zero(r["seeds"])]
    images_only = [r for r in pooled if _excludes_zero(r["bootstrap"])
                   and not _excludes_zero(r["seeds"])]

    def item(r):
        return (f"{r['name']} {r['difference']:+.4f} [{r['seeds'][0]:+.4f}, "
                f"{r['seeds'][1]:+.4f}]")

    out = [f"Between seeds: of the {len(pooled)} differences pooled over seeds, "
           f"{len(both)} exclude zero by the between-seed t-interval: "
           + ("; ".join(item(r) for r in both) if both else "none") + "."]
    if images_only:
        out += ["", f"{len(images_only)} exclude zero by the bootstrap over the images but not "
                "between seeds: " + "; ".join(item(r) for r in images_only) + "."]
    return out


def comparisons_count(config: StudyConfig, records: dict, compared: Sequence,
                      pooled_rows: int) -> list[str]:
    """How many comparisons the table makes, which a rule fixed before the results, and
    which snapshot the early-stopped DARTS comparison uses and why."""
    prereg = [pair for pair in preregistered_pairs(config) if pair in compared]
    seed_rows = sum(sum((*a, s) in records and (*b, s) in records
                        for s in {k[2] for k in records}) for a, b in compared)
    out = [f"Comparisons: {len(compared)} pairs ({seed_rows} per-seed rows, {pooled_rows} "
           "pooled over seeds), with no correction for multiple comparisons. Decided before "
           f"their results ({len(prereg)} pairs): the collapse criterion's second half "
           "(issue 18: each DARTS network at the end against its earlier snapshots) and the "
           "defaults rule of this README (the scorer candidates against "
           f"`{DEFAULT_METHOD}` at 100 %); every other pair is exploratory."]
    a_key, b_key = early_stop_pair(config)
    if (a_key, b_key) in compared:
        means = {}
        for (method, epoch, _seed), record in records.items():
            if method == b_key[0]:
                means.setdefault(epoch, []).append(record["accuracy"])
        best = max(means, key=lambda e: float(np.mean(means[e])))
        out += ["", f"Early-stopped DARTS: {_pair_name(a_key, b_key)} compares ACA at the end "
                f"of its search with DARTS stopped at e{b_key[1]}. DARTS's best snapshot by its "
                f"seed-mean test accuracy is e{best} ({float(np.mean(means[best])):.4f}); "
                "choosing the stop by test accuracy is an oracle no user has, so this favours "
                "DARTS."]
    return out


DEFAULT_METHOD = "taylor"
CANDIDATE_METHODS = ("refill", "refill-w")
DECISION_MIN_SEEDS_AHEAD = 2


def defaults_decision(config: StudyConfig, records: dict) -> dict[str, Any]:
    """Apply the decision rule written in the README before the ACA networks of seeds 2 and
    3 were retrained: a candidate replaces ``taylor`` only if, at 100 % of the search, (a)
    the paired bootstrap over the test images with the seeds averaged gives a 95 % CI of its
    difference to ``taylor`` entirely above 0 and (b) it is ahead (strictly) on at least 2
    seeds; of several, the larger mean difference wins, and on an exact tie ``taylor``
    stays. Decided only once every seed of the config has both records (of the same test
    images); until then ``winner`` is None and ``final`` False."""
    end = config.epochs("aca-s3")
    seeds = tuple(config.seeds)
    out: dict[str, Any] = {"default": DEFAULT_METHOD, "candidates": {}, "winner": None,
                           "final": False, "tie": False}
    complete = True
    for method in CANDIDATE_METHODS:
        have = [s for s in seeds if (method, end, s) in records
                and (DEFAULT_METHOD, end, s) in records
                and records[(method, end, s)]["test_images"]
                == records[(DEFAULT_METHOD, end, s)]["test_images"]]
        complete &= len(have) == len(seeds)
        if not have:
            out["candidates"][method] = {"seeds": [], "qualifies": False}
            continue
        a = np.stack([decode_correct(records[(method, end, s)]) for s in have])
        b = np.stack([decode_correct(records[(DEFAULT_METHOD, end, s)]) for s in have])
        diff, low, high = paired_bootstrap(a, b)
        per_seed = [float(x) for x in (a.mean(axis=1) - b.mean(axis=1))]
        ahead = sum(d > 0 for d in per_seed)
        out["candidates"][method] = {
            "seeds": list(have), "difference": diff, "ci": [low, high],
            "per_seed": per_seed, "seeds_ahead": ahead,
            "qualifies": bool(low > 0 and ahead >= DECISION_MIN_SEEDS_AHEAD)}
    out["final"] = complete
    qualified = [(c["difference"], m) for m, c in out["candidates"].items() if c["qualifies"]]
    if complete:
        best = max(qualified, default=None)
        tied = best is not None and sum(d == best[0] for d, _ in qualified) > 1
        out["tie"] = tied
        out["winner"] = best[1] if best is not None and not tied else DEFAULT_METHOD
    return out


def decision_section(config: StudyConfig, records: dict) -> list[str]:
    """The defaults decision (issue 18, item 6) as the README's rule gives it."""
    decision = defaults_decision(config, records)
    out = ["#### Defaults decision (the rule written before the ACA results of seeds 2 and 3)",
           ""]
    for method, c in decision["candidates"].items():
        if not c["seeds"]:
            out.append(f"* `{method}` vs `{DEFAULT_METHOD}`: no paired record yet.")
            continue
        seeds = ", ".join(f"s{s} {d:+.4f}" for s, d in zip(c["seeds"], c["per_seed"]))
        out.append(f"* `{method}` vs `{DEFAULT_METHOD}` over seeds {seeds}: mean "
                   f"{c['difference']:+.4f}, 95 % CI [{c['ci'][0]:+.4f}, {c['ci'][1]:+.4f}], "
                   f"ahead on {c['seeds_ahead']} of {len(c['seeds'])} seeds: "
                   f"{'meets' if c['qualifies'] else 'does not meet'} the rule"
                   f"{'' if len(c['seeds']) == len(config.seeds) else ' so far'}.")
    if decision["final"]:
        winner = decision["winner"]
        out += ["", f"**Decision: `{winner}`**" + (
            (" stays the default (candidates tied)." if decision.get("tie") else
             " stays the default (no candidate meets the rule).") if winner == DEFAULT_METHOD
            else f" becomes the default ({METHODS[winner][1]} scores, {METHODS[winner][2]} "
                 f"pooling{', op weight divided out' if METHODS[winner][3] else ''}).")]
    else:
        out += ["", "Not decided yet: every seed needs both records at 100 %."]
    return out


def _fmt_p(p: float) -> str:
    return f"{p:.4f}" if p >= 1e-3 else f"{p:.1e}"


def report_figure(config: StudyConfig, runs: dict, records: dict, path: Path) -> Path | None:
    """Skip edges and Hessian eigenvalue against the search epoch (one line per search run),
    and the retrained accuracy at the snapshots (one line per method: mean +/- standard error
    over its seeds). None where matplotlib is missing."""
    try:
        import matplotlib  # optional: only the figure needs it

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    fig, axes = plt.subplots(3, 1, figsize=(8, 10), sharex=True)
    colours = {"darts-s3": "tab:red", "aca-s3": "tab:blue", "darts-full": "tab:orange"}
    styles = ["-", "--", ":", "-."]
    for (kind, seed), lines in runs.items():
        if not lines:
            continue
        colour, style = colours.get(kind), styles[(seed - 1) % len(styles)]
        label = f"{kind} s{seed}"
        epochs = [line["epoch"] for line in lines]
        axes[0].plot(epochs, [line.get("skip_edges") for line in lines], style, color=colour,
                     label=label)
        measured = [(line["epoch"], line["hessian_eigenvalue"]) for line in lines
                    if line.get("hessian_eigenvalue") is not None]
        if measured:
            axes[1].plot(*zip(*measured), style, marker="o", ms=3, color=colour, label=label)
    # one colour per method (DARTS in its search's colour), mean +/- standard error over the
    # seeds at each snapshot, methods side by side around the snapshot epoch
    method_colours = {"darts-s3": colours["darts-s3"], "darts-full": colours["darts-full"],
                      "taylor": "tab:blue", "refill": "tab:green", "refill-w": "tab:olive",
                      "alpha": "tab:purple", "fixed": "tab:brown", "none": "tab:gray"}
    markers = ["o", "s", "^", "v", "D", "P", "X", "*"]
    present = [method for method in METHODS if any(k[0] == method for k in records)]
    for index, method in enumerate(present):
        by_epoch: dict[int, list[float]] = {}
        seeds = set()
        for (m, epoch, seed), record in records.items():
            if m == method:
                by_epoch.setdefault(epoch, []).append(record["accuracy"])
                seeds.add(seed)
        epochs = sorted(by_epoch)
        stats = [_mean_sd_se(by_epoch[e]) for e in epochs]
        offset = (index - (len(present) - 1) / 2) * 0.8
        axes[2].errorbar([e + offset for e in epochs], [m for m, _sd, _se in stats],
                         yerr=[se or 0.0 for _m, _sd, se in stats], capsize=3,
                         marker=markers[index % len(markers)], ms=5,
                         color=method_colours.get(method),
                         label=f"{method} (seeds {','.join(map(str, sorted(seeds)))})")
    axes[0].axhline(COLLAPSE_SKIP_EDGES, color="grey", lw=0.8, ls=":")
    axes[0].set_ylabel("skip_connect edges\n(normal cell, of 8)")
    axes[1].set_ylabel("largest Hessian eigenvalue\n(val. loss w.r.t. alphas)")
    axes[2].set_ylabel("retrained test accuracy\n(mean ± s.e. over seeds)")
    axes[2].set_xlabel("search epoch (snapshot)")
    if not records:
        axes[2].text(0.5, 0.5, "no retraining results yet", ha="center", va="center",
                     transform=axes[2].transAxes)
    for ax in axes:
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7, ncol=2)
        ax.grid(alpha=0.3)
    fig.suptitle(f"Study {config.name}: collapse monitor and retrained accuracy")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def update_readme(readme: Path, block: str) -> None:
    """Write ``block`` between the report markers of ``readme``; insert the markers at the
    end of the "Study v2" section (before the ``---`` preceding "# Study v1") if missing."""
    text = Path(readme).read_text(encoding="utf-8")
    content = f"{REPORT_START}\n{block.rstrip()}\n{REPORT_END}"
    if REPORT_START in text and REPORT_END in text:
        head, rest = text.split(REPORT_START, 1)
        _old, tail = rest.split(REPORT_END, 1)
        text = head + content + tail
    else:
        lines = text.split("\n")
        index = next((i for i, line in enumerate(lines) if line.startswith("# Study v1")),
                     len(lines))
        rule = next((i for i in range(index - 1, -1, -1) if lines[i].strip() == "---"), None)
        at = rule if rule is not None else index
        lines[at:at] = [content, ""]
        text = "\n".join(lines)
    Path(readme).write_text(text, encoding="utf-8")


def report(results: str | os.PathLike = DEFAULT_RESULTS,
           readme: str | os.PathLike | None = DEFAULT_README,
           config: StudyConfig | None = None, figure: bool = True) -> str:
    """Build the study's tables from ``results`` (markdown), write them between the markers
    of ``readme`` (None: not written) and draw ``collapse-report.png`` into ``results``."""
    config = config or CONFIGS["v2"]
    results = Path(results)
    collapse, runs = collapse_section(config, results)
    records = load_training_records(results, config)
    out = ["### Report (generated by `python studies/collapse.py report`)", ""]
    out += collapse + [""] + retraining_section(config, records) + [""]
    if records:
        out += identity_section(config, records) + [""]
        out += comparisons_section(config, records) + [""]
        out += decision_section(config, records) + [""]
    else:
        out += ["Paired comparisons: none yet (no training record).", ""]
    if figure:
        path = report_figure(config, runs, records, results / "collapse-report.png")
        try:
            shown = path.relative_to(HERE) if path else None
        except ValueError:
            shown = path
        out.append(f"Figure: `{shown}`." if path else "Figure: not drawn (no matplotlib).")
    block = "\n".join(out).rstrip() + "\n"
    if readme is not None:
        update_readme(Path(readme), block)
    return block


# ------------------------------------------------------------------------------------ main


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("phase", choices=("search", "train", "report", "rebuild"))
    parser.add_argument("key", nargs="?", default=None,
                        help="rebuild: the training record's key, e.g. v2-train-taylor-e100-s1")
    parser.add_argument("--run-dir", default=None,
                        help="rebuild: the run folder to write (default: runs/<key> here)")
    parser.add_argument("--train", action="store_true",
                        help="rebuild: also retrain at once as the study did (flips on)")
    parser.add_argument("--config", default="v2", choices=sorted(CONFIGS))
    parser.add_argument("--only", default=None,
                        help="comma-separated search kinds (search) or methods (train)")
    parser.add_argument("--data", default=str(DEFAULT_DATA))
    parser.add_argument("--results", default=None,
                        help=f"results folder (default {DEFAULT_RESULTS})")
    parser.add_argument("--readme", default=str(DEFAULT_README),
                        help="report: the README whose marked block receives the tables")
    parser.add_argument("--no-readme", action="store_true",
                        help="report: print the tables only")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    config = CONFIGS[args.config]
    results = Path(args.results) if args.results else DEFAULT_RESULTS
    if args.phase == "report":  # JSON files only: no TensorFlow, no data
        print(report(results, None if args.no_readme else args.readme, config), end="")
        return 0
    if args.phase == "rebuild":
        if not args.key:
            build_parser().error("rebuild needs the record's key, e.g. v2-train-taylor-e100-s1")
        record = read_record(results, args.key)
        run_dir = rebuild(config, record, Path(args.run_dir or Path("runs") / args.key),
                          args.data)
        print(f"wrote {run_dir} (architecture.json, config.json, data.npz)")
        if args.train:
            retrain_exact(config, record, run_dir, args.data, print)
        else:
            print("retrain with (no horizontal flips: aca-train does not flip an .npz; "
                  "--train retrains with them, as the study did):")
            print(train_command(record, run_dir))
        return 0
    results.mkdir(parents=True, exist_ok=True)
    only = set(args.only.split(",")) if args.only else None

    def log(message: str) -> None:
        print(time.strftime("%H:%M:%S"), message, flush=True)

    search_bundle, train_bundle, test_arrays = load_study_data(args.data, config)
    if args.phase == "search":
        plan = [(kind, seed) for seed in config.seeds + config.pilot_seeds
                for kind in SEARCHES if (only is None or kind in only)
                and seed in getattr(config, SEARCHES[kind][1])]
        plan = list(dict.fromkeys(plan))
        log(f"{len(plan)} searches: {plan}")
        for kind, seed in plan:
            with claim(results, search_key(config, kind, seed)) as mine:
                if mine:
                    run_search(config, kind, seed, search_bundle, results, log)
                else:
                    log(f"skip {search_key(config, kind, seed)}: another process runs it")
    else:
        units = [u for u in training_units(config) if only is None or u.method in only]
        log(f"{len(units)} trainings")
        for unit in units:
            with claim(results, unit.key(config)) as mine:
                if mine:
                    run_training(config, unit, search_bundle, train_bundle, test_arrays,
                                 results, log)
                else:
                    log(f"skip {unit.key(config)}: another process runs it")
    return 0


if __name__ == "__main__":
    sys.exit(main())
