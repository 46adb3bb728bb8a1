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
where it stopped. ``--report`` (later) builds the tables of ``studies/README.md``.

Usage (from the repository root; one TensorFlow thread per process)::

    TF_NUM_INTRAOP_THREADS=1 TF_NUM_INTEROP_THREADS=1 python studies/collapse.py search --only darts-full
    TF_NUM_INTRAOP_THREADS=1 TF_NUM_INTEROP_THREADS=1 python studies/collapse.py search --only darts-s3,aca-s3
    python studies/collapse.py train
    python studies/collapse.py search --config tiny --results /tmp/c   # smoke test
"""

from __future__ import annotations

import argparse
import base64
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


def load_study_data(path: str | os.PathLike, config: StudyConfig):
    """``(search_bundle, train_bundle, (x_test, y_test))``: both bundles hold the same test
    part (the last ``test_images`` images), never seen by a search or a training."""
    from aca_keras.data import loading as data_lib

    with np.load(path) as contents:
        x, y = contents["x"], contents["y"].astype(np.int32)
    factor = x.shape[1] // config.image_size
    if factor > 1:
        n, h, w, c = x.shape
        x = x.reshape(n, h // factor, factor, w // factor, factor, c).astype(np.float32)
        x = np.round(x.mean(axis=(2, 4))).astype(np.uint8)
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


# ------------------------------------------------------------------------------------ main


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("phase", choices=("search", "train"))
    parser.add_argument("--config", default="v2", choices=sorted(CONFIGS))
    parser.add_argument("--only", default=None,
                        help="comma-separated search kinds (search) or methods (train)")
    parser.add_argument("--data", default=str(DEFAULT_DATA))
    parser.add_argument("--results", default=None,
                        help=f"results folder (default {DEFAULT_RESULTS})")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    config = CONFIGS[args.config]
    results = Path(args.results) if args.results else DEFAULT_RESULTS
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
            run_search(config, kind, seed, search_bundle, results, log)
    else:
        units = [u for u in training_units(config) if only is None or u.method in only]
        log(f"{len(units)} trainings")
        for unit in units:
            run_training(config, unit, search_bundle, train_bundle, test_arrays, results, log)
    return 0


if __name__ == "__main__":
    sys.exit(main())
