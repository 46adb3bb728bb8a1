"""Study v3 (issue 35): allocations of one searched supernet, retrained and compared.

The design and the decision rule are fixed in ``studies/README.md`` ("Study v3"), written
before any retraining result existed; this script applies them and changes neither.

Sub-commands (run from the repository root):

* ``prepare``: the six allocations of the study's one supernet (:data:`ALLOCATIONS`, by
  :func:`aca_keras.searching.reallocate.reallocate`) into ``<out>/alloc-<name>`` (a finished
  one, holding its ``config.json``, is kept), allocations equal to an earlier one in both
  cells (operations and k_e) marked ``duplicate_of`` it (trained once), and
  ``allocations.json`` / ``allocations.md``: k_e by operation kind, identity edges,
  parameters and multiply-adds of each derived network.
* ``record RUN_DIR``: the held-out evaluation of a finished retraining (``aca-train``) into
  ``<results>/records/<name>.json``: accuracy, per-image correctness, the split's sha256,
  size and architecture. The accuracy must equal the run's own ``train_result.json``.
  ``--delete-weights`` then deletes the run's weights and checkpoints and its
  ``IN_PROGRESS`` marker (configs, histories and pictures stay).
* ``report``: every allocation against ``default`` (exact McNemar, paired bootstrap, Holm
  over the candidates trained) and every network against ``darts-v2``, the recipe check and
  the decision by the pre-registered rule, into ``<results>/report.md`` (also printed). JSON
  files only, no TensorFlow.

A record's ``correct`` is a string of ``"0"`` and ``"1"``, one character per held-out image in
the split's order (``aca_keras.data.load(dataset, test_fraction=0.1)``'s ``x_test``): ``"1"``
where the network's top-1 class is the label.

Usage::

    python studies/allocation.py prepare --search studies/results/allocation/search \\
        --out studies/results/allocation
    python studies/allocation.py record studies/results/allocation/alloc-default --delete-weights
    python studies/allocation.py record studies/results/allocation/train-darts-v2
    python studies/allocation.py report --results studies/results/allocation
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import shutil
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
if str(REPO) not in sys.path:  # run as a script from a checkout
    sys.path.insert(0, str(REPO))

# no TensorFlow below (after the path above); prepare and record import it when they run
from aca_keras.io.atomic import atomic_write_json, atomic_write_text  # noqa: E402
from aca_keras.io.run_dir import RunDir  # noqa: E402
from aca_keras.space.architecture import Architecture  # noqa: E402
from aca_keras.stats import holm, mcnemar_exact  # noqa: E402

DEFAULT_RESULTS = HERE / "results" / "allocation"
FORMAT = "aca_keras.study.allocation"
#: name -> reallocation settings, in the design's order (the default first)
ALLOCATIONS: dict[str, dict[str, str]] = {
    "default": {"scorer": "taylor", "pooling": "index", "allocator": "adaptive"},
    "refill-sorted": {"scorer": "refill", "pooling": "sorted", "allocator": "adaptive"},
    "alpha": {"scorer": "taylor", "pooling": "index", "allocator": "alpha"},
    "typed": {"scorer": "taylor", "pooling": "index", "allocator": "adaptive-typed"},
    # uniform's budget defaults to the total adaptive keeps on the same (default) scores
    "uniform": {"scorer": "taylor", "pooling": "index", "allocator": "uniform"},
    "none": {"scorer": "taylor", "pooling": "index", "allocator": "none"},
}
DEFAULT, REFERENCE = "default", "darts-v2"
RECIPE_THRESHOLD = 0.88  # DARTS V2's held-out accuracy the recipe must reach
LEVEL = 0.05  # family-wise, Holm
TEST_FRACTION = 0.1
#: the network the study builds from an architecture (when architecture.json lacks its size)
NETWORK = {"cells": 8, "channels": 16, "input_shape": [32, 32, 3], "num_classes": 10}
BOOTSTRAP_RESAMPLES, BOOTSTRAP_SEED = 10_000, 35
WEIGHT_FILES = (RunDir.TRAINED_MODEL, RunDir.MODEL, "IN_PROGRESS")  # plus checkpoint*.npz


# ------------------------------------------------------------------------------ prepare


def find_duplicates(architectures: Mapping[str, Architecture]) -> dict[str, str | None]:
    """``name -> the first earlier name with equal cells (operations, inputs, k_e, concat in
    both cells)``, or ``None``: a duplicate is trained once, under the earlier name."""
    seen: list[str] = []
    duplicates: dict[str, str | None] = {}
    for name, arch in architectures.items():
        duplicates[name] = next((s for s in seen if architectures[s].normal == arch.normal
                                 and architectures[s].reduce == arch.reduce), None)
        seen.append(name)
    return duplicates


def network_size(architecture: Architecture) -> dict[str, Any]:
    """The study's derived network (:data:`NETWORK`) built from ``architecture``: its macro
    settings, parameters and multiply-adds (as ``build_derived`` writes them)."""
    from aca_keras.models.derived import build_model  # TensorFlow: only when needed

    model = build_model(architecture, NETWORK["input_shape"], NETWORK["num_classes"],
                        cells=NETWORK["cells"], channels=NETWORK["channels"])
    return {**NETWORK, **model.size()}


def describe(settings: Mapping[str, str], architecture: Architecture,
             network: Mapping[str, Any], duplicate_of: str | None,
             run_dir: str) -> dict[str, Any]:
    """One ``allocations.json`` entry."""
    return {"settings": dict(settings), "run_dir": run_dir, "duplicate_of": duplicate_of,
            "k": {"normal": list(architecture.normal.channels),
                  "reduce": list(architecture.reduce.channels)},
            "ops": {"normal": [e.op for e in architecture.normal.edges],
                    "reduce": [e.op for e in architecture.reduce.edges]},
            "diagnostics": {cell: d.to_dict()
                            for cell, d in architecture.diagnostics().items()},
            "network": dict(network)}


def allocation_table(entries: Mapping[str, Mapping[str, Any]]) -> str:
    """``allocations.md``: kept / total channels by operation kind, identity edges, size."""
    lines = ["# Study v3: allocations of one supernet", "",
             "Kept / total channels of the parameter-free (pool) and parametric (convolution)"
             " edges per cell, identity edges (stride 1, k_e = 0 or skip_connect), and the"
             " derived network's parameters and multiply-adds per image (inference graph,"
             " no auxiliary head).", "",
             "| allocation | scorer / pooling / allocator | normal: pools | normal: convs "
             "| reduce: pools | reduce: convs | identity edges (normal, reduce) | parameters "
             "| multiply-adds | trained |", "| " + " | ".join(["---"] * 10) + " |"]
    for name, e in entries.items():
        d, s, net = e["diagnostics"], e["settings"], e["network"]
        kinds = [d[c]["by_kind"][k] for c in ("normal", "reduce")
                 for k in ("parameter_free", "parametric")]
        lines.append("| " + " | ".join([
            f"`{name}`", f"{s['scorer']} / {s['pooling']} / {s['allocator']}",
            *(f"{k['kept_channels']}/{k['total_channels']}" for k in kinds),
            f"{d['normal']['identity_edges']}, {d['reduce']['identity_edges']}",
            f"{net['parameters']:,}", f"{net['multiply_adds']:,}",
            "yes" if e["duplicate_of"] is None else f"as `{e['duplicate_of']}`"]) + " |")
    lines += ["", "k_e per edge (operation: k_e), in edge order:", "",
              "| allocation | normal cell | reduction cell |", "| --- | --- | --- |"]
    for name, e in entries.items():
        cells = [", ".join(f"{op} {k}" for op, k in zip(e["ops"][c], e["k"][c]))
                 for c in ("normal", "reduce")]
        lines.append(f"| `{name}` | {cells[0]} | {cells[1]} |")
    if DEFAULT in entries and "uniform" in entries:
        kept = {n: [entries[n]["diagnostics"][c]["kept_channels"] for c in ("normal", "reduce")]
                for n in (DEFAULT, "uniform")}
        lines += ["", f"Budget check: `uniform` keeps {kept['uniform']} channels (normal, "
                  f"reduce), `default` {kept[DEFAULT]}: "
                  + ("equal." if kept["uniform"] == kept[DEFAULT] else "**not equal**.")]
    return "\n".join(lines) + "\n"


def prepare(search: str | os.PathLike, out: str | os.PathLike, verbose: int = 1) -> dict:
    """Reallocate the supernet of ``search`` six ways into ``out`` and describe them."""
    from aca_keras.searching.reallocate import reallocate  # TensorFlow

    out = Path(out)
    architectures, networks, dirs = {}, {}, {}
    for name, settings in ALLOCATIONS.items():
        run = RunDir(out / f"alloc-{name}")
        # config.json is reallocate's last file: without it the directory is redone
        if run.config.is_file():
            print(f"{name}: {run.path} already done", flush=True)
        else:
            print(f"{name}: reallocating into {run.path}", flush=True)
            reallocate(search, run.path, verbose=verbose, **settings)
        document = json.loads(run.architecture.read_text())
        architectures[name] = Architecture.from_dict(document)
        network = document.get("diagnostics", {}).get("network")
        networks[name] = network or network_size(architectures[name])
        dirs[name] = os.path.relpath(run.path, out)
    duplicates = find_duplicates(architectures)
    entries = {name: describe(ALLOCATIONS[name], architectures[name], networks[name],
                              duplicates[name], dirs[name]) for name in ALLOCATIONS}
    atomic_write_json(out / "allocations.json", entries)
    atomic_write_text(out / "allocations.md", allocation_table(entries))
    return entries


# ------------------------------------------------------------------------------- record


def _dataset_path(dataset: str) -> str:
    """A relative data path is taken from the working directory, else from the repository
    root (the study's configs name ``../shared/...`` from there)."""
    if not os.path.isabs(dataset) and not Path(dataset).exists() and (REPO / dataset).exists():
        return str(REPO / dataset)
    return dataset


def weight_files(run_dir: str | os.PathLike) -> list[Path]:
    """What ``--delete-weights`` deletes: trained and untrained models, search checkpoints,
    ``train_checkpoint/`` and the ``IN_PROGRESS`` marker."""
    run = RunDir(run_dir)
    found = [run.path / name for name in WEIGHT_FILES if (run.path / name).is_file()]
    found += sorted(run.path.glob("checkpoint*.npz"))
    return found + ([run.train_checkpoint_dir] if run.train_checkpoint_dir.is_dir() else [])


def record(run_dir: str | os.PathLike, name: str | None = None,
           results: str | os.PathLike = DEFAULT_RESULTS, delete_weights: bool = False,
           train_seconds: float | None = None) -> Path:
    """Evaluate the trained network of ``run_dir`` on the held-out images into
    ``<results>/records/<name>.json``; refuses when the accuracy differs from the run's
    ``train_result.json`` by more than 1e-6 or the split is not the run's."""
    from aca_keras.data import load, split_digest  # TensorFlow
    from aca_keras.models.derived import load_model

    run = RunDir(run_dir)
    name = name or run.path.resolve().name.removeprefix("train-").removeprefix("alloc-")
    if not (run.train_result.is_file() and run.trained_model.is_file()):
        raise SystemExit(f"{run.path} holds no finished training ({RunDir.TRAIN_RESULT} and "
                         f"{RunDir.TRAINED_MODEL}); record it when aca-train has finished.")
    result = json.loads(run.train_result.read_text())
    config = json.loads(run.config.read_text())
    fraction = config.get("test_fraction") or TEST_FRACTION
    bundle = load(_dataset_path(config["dataset"]), test_fraction=fraction)
    digest = split_digest(bundle.x_test, bundle.y_test)
    recorded = (result.get("test_split") or {}).get("split_sha256")
    if recorded is not None and recorded != digest:
        raise SystemExit(f"{run.path}: the held-out split loaded now ({digest[:12]}) is not "
                         f"the one the run was evaluated on ({recorded[:12]}); check the data.")
    model = load_model(run.trained_model, compile=False)
    images = bundle.test_pipeline(256).map(lambda x, y: x)  # as the trainer evaluates
    logits = model.inference_model().predict(images, verbose=0)
    correct = np.argmax(logits, axis=-1) == bundle.y_test
    accuracy = float(correct.mean())
    if result.get("test_accuracy") is None or abs(accuracy - result["test_accuracy"]) > 1e-6:
        raise SystemExit(f"{run.path}: held-out accuracy {accuracy:.6f} recomputed, "
                         f"{result.get('test_accuracy')} in {RunDir.TRAIN_RESULT}; not "
                         "recorded (is the trained model the one evaluated?).")
    rows = (list(csv.DictReader(run.train_history.read_text().splitlines()))
            if run.train_history.is_file() else [])
    if train_seconds is None and rows and "seconds" in rows[0]:
        train_seconds = sum(float(r["seconds"]) for r in rows if r["seconds"])
    document = {
        "format": FORMAT, "version": 1, "name": name, "run_dir": str(run.path),
        "dataset": config["dataset"], "test_fraction": fraction,
        "held_out_accuracy": accuracy, "train_result_accuracy": result["test_accuracy"],
        "test_images": int(correct.size), "split_sha256": digest,
        "correct": "".join("1" if c else "0" for c in correct),
        **model.size(), "architecture": model.architecture.to_dict(),
        "epochs": len(rows) or result.get("epochs"),
        "train_seconds": train_seconds}
    path = atomic_write_json(Path(results) / "records" / f"{name}.json", document)
    print(f"{name}: held-out accuracy {accuracy:.4f} on {correct.size} images -> {path}")
    if delete_weights:
        for item in weight_files(run.path):
            shutil.rmtree(item) if item.is_dir() else item.unlink()
            print(f"  deleted {item}")
    return path


# ------------------------------------------------------------------------------- report


def decode_correct(document: Mapping[str, Any]) -> np.ndarray:
    """The per-image correctness of a record (its ``"0"``/``"1"`` string) as booleans."""
    return np.frombuffer(document["correct"].encode("ascii"), dtype=np.uint8) == ord("1")


def paired_bootstrap(a, b, resamples: int = BOOTSTRAP_RESAMPLES,
                     seed: int = BOOTSTRAP_SEED) -> tuple[float, float, float]:
    """``(difference, low, high)``: accuracy of A minus B and the 95 % percentile interval
    over ``resamples`` resamplings of the images with replacement (the same for A and B)."""
    diff = np.asarray(a, np.float64) - np.asarray(b, np.float64)
    rng = np.random.default_rng(seed)
    means = np.empty(resamples)
    chunk = max(1, 1_000_000 // diff.size)
    for start in range(0, resamples, chunk):
        stop = min(resamples, start + chunk)
        means[start:stop] = diff[rng.integers(0, diff.size, (stop - start, diff.size))].mean(1)
    low, high = np.percentile(means, [2.5, 97.5])
    return float(diff.mean()), float(low), float(high)


def compare(a: Mapping[str, Any], b: Mapping[str, Any]) -> dict[str, Any]:
    """A against B on the same images: difference, bootstrap interval, McNemar."""
    if a["split_sha256"] != b["split_sha256"]:
        raise SystemExit(f"{a['name']} and {b['name']} were evaluated on different splits; "
                         "record both on the study's held-out images.")
    ca, cb = decode_correct(a), decode_correct(b)
    test = mcnemar_exact(ca, cb)
    diff, low, high = paired_bootstrap(ca, cb)
    return {"a": a["name"], "b": b["name"], "difference": diff, "low": low, "high": high,
            "b_only_a": test.b, "c_only_b": test.c, "p": test.p_value}


def decide(records: Mapping[str, Mapping[str, Any]],
           duplicates: Mapping[str, str | None] | None = None) -> dict[str, Any]:
    """The pre-registered rule applied to the records present (see studies/README.md)."""
    duplicates = duplicates or {}
    missing = [n for n in [*ALLOCATIONS, REFERENCE]
               if n not in records and duplicates.get(n) is None]
    reference = records.get(REFERENCE)
    recipe = ("pending" if reference is None else
              "passed" if reference["held_out_accuracy"] >= RECIPE_THRESHOLD else "failed")
    family = [n for n in ALLOCATIONS if n != DEFAULT and n in records
              and duplicates.get(n) is None]
    comparisons = ([compare(records[n], records[DEFAULT]) for n in family]
                   if DEFAULT in records else [])
    for row, adjusted in zip(comparisons, holm([r["p"] for r in comparisons])):
        row["holm"] = adjusted
        row["beats"] = adjusted < LEVEL and row["difference"] > 0
    beating = [r["a"] for r in comparisons if r["beats"]]
    # the highest held-out accuracy among those that beat the default (ties: design order)
    best = max(beating, key=lambda n: records[n]["held_out_accuracy"], default=None)
    if recipe == "failed":
        status, winner = "withheld", None
    elif DEFAULT not in records:
        status, winner = "pending", None
    else:
        status, winner = ("changes" if best else "stays"), best
    return {"recipe": recipe, "reference_accuracy": None if reference is None
            else reference["held_out_accuracy"], "comparisons": comparisons,
            "beating": beating, "winner": winner, "status": status, "missing": missing,
            "sizes": {n: (records[n]["parameters"], records[n]["multiply_adds"])
                      for n in (DEFAULT, winner) if n in records},
            "final": not missing and recipe == "passed"}


def _points(value: float) -> str:
    return f"{100 * value:+.2f}"


def _p(value: float) -> str:
    return f"{value:.4f}" if value >= 1e-4 else f"{value:.1e}"


def decision_text(decision: Mapping[str, Any]) -> str:
    """The decision in words, by the rule as written."""
    accuracy = decision["reference_accuracy"]
    if decision["recipe"] == "pending":
        recipe = "pending (no `darts-v2` record yet)"
    elif decision["recipe"] == "passed":
        recipe = f"passed: `darts-v2` {accuracy:.4f} >= {RECIPE_THRESHOLD}"
    else:
        recipe = (f"**failed**: `darts-v2` {accuracy:.4f} < {RECIPE_THRESHOLD}; the recipe is "
                  "too weak to rank cells: by the design the recipe changes (longer), every "
                  "network is retrained with it and the rule stays")
    status = decision["status"]
    if status == "withheld":
        text = "No decision: the recipe check failed."
    elif status == "pending":
        text = "No decision yet: no `default` record."
    elif status == "stays":
        text = ("No candidate beats `default` (Holm-adjusted McNemar p < 0.05 and a higher "
                "held-out accuracy): the default `taylor` / `index` / `adaptive` stays.")
    else:
        winner = decision["winner"]
        beating = ", ".join(f"`{n}`" for n in decision["beating"])
        size = {n: f"{p:,} parameters, {m:,} multiply-adds"
                for n, (p, m) in decision["sizes"].items()}
        text = (f"`{winner}` becomes the default ({beating} beat `default`; `{winner}` has the "
                "highest held-out accuracy of them): scorer / pooling / allocator "
                f"{' / '.join(ALLOCATIONS[winner].values())}; {size[winner]} (`default`: "
                f"{size[DEFAULT]}).")
        if winner == "none":
            text += " The channel allocation did not help on this op set."
    if not decision["final"]:
        text += (" Provisional: " + ("missing records: " + ", ".join(
            f"`{n}`" for n in decision["missing"]) if decision["missing"]
            else "the recipe check has not passed") + ".")
    return f"Recipe check: {recipe}.\n\n**Decision:** {text}\n"


def report_text(records: Mapping[str, Mapping[str, Any]],
                allocations: Mapping[str, Mapping[str, Any]] | None = None) -> str:
    """``report.md``: networks, comparisons with `default` and `darts-v2`, the decision."""
    allocations = allocations or {}
    duplicates = {n: e.get("duplicate_of") for n, e in allocations.items()}
    decision = decide(records, duplicates)
    first = next(iter(records.values()), None)
    lines = ["# Study v3: allocations retrained (generated by `studies/allocation.py report`)",
             "", f"Held-out images: {first['test_images'] if first else '—'} (split sha256 "
             f"`{first['split_sha256'][:16] if first else '—'}`). Differences in points "
             "(A - B), 95 % paired bootstrap interval (10,000 resamples), exact McNemar p "
             "(b: only A right, c: only B right).", "", "## Networks", "",
             "| network | held-out accuracy | parameters | multiply-adds | epochs | training "
             "time (h) |", "| --- | --- | --- | --- | --- | --- |"]
    for name in [*ALLOCATIONS, REFERENCE]:
        r = records.get(name)
        if r is None:
            dup = duplicates.get(name)
            lines.append(f"| `{name}` | " + (f"= `{dup}` (same cells)" if dup else "missing")
                         + " | | | | |")
            continue
        hours = "—" if r.get("train_seconds") is None else f"{r['train_seconds'] / 3600:.1f}"
        lines.append(f"| `{name}` | {r['held_out_accuracy']:.4f} | {r['parameters']:,} | "
                     f"{r['multiply_adds']:,} | {r.get('epochs') or '—'} | {hours} |")
    lines += ["", "## Against `default` (the rule's family; Holm over the candidates trained)",
              "", "| candidate | difference | 95 % CI | b | c | McNemar p | Holm p | beats "
              "`default` |", "| " + " | ".join(["---"] * 8) + " |"]
    for c in decision["comparisons"]:
        lines.append(f"| `{c['a']}` | {_points(c['difference'])} | [{_points(c['low'])}, "
                     f"{_points(c['high'])}] | {c['b_only_a']} | {c['c_only_b']} | "
                     f"{_p(c['p'])} | {_p(c['holm'])} | {'yes' if c['beats'] else 'no'} |")
    lines += ["", "## Against `darts-v2` (reported, not part of the rule)", "",
              "| network | difference | 95 % CI | b | c | McNemar p |",
              "| --- | --- | --- | --- | --- | --- |"]
    if REFERENCE in records:
        for name in [n for n in ALLOCATIONS if n in records]:
            c = compare(records[name], records[REFERENCE])
            lines.append(f"| `{name}` | {_points(c['difference'])} | [{_points(c['low'])}, "
                         f"{_points(c['high'])}] | {c['b_only_a']} | {c['c_only_b']} | "
                         f"{_p(c['p'])} |")
    lines += ["", "## Decision", "", decision_text(decision)]
    return "\n".join(lines)


def read_records(results: str | os.PathLike) -> dict[str, dict[str, Any]]:
    """``name -> record`` of ``<results>/records/*.json``."""
    records = {}
    for path in sorted((Path(results) / "records").glob("*.json")):
        document = json.loads(path.read_text())
        if document.get("format") != FORMAT:
            raise SystemExit(f"{path} is not a study v3 record (format {FORMAT!r}).")
        records[document["name"]] = document
    return records


def report(results: str | os.PathLike = DEFAULT_RESULTS) -> str:
    """Write ``<results>/report.md`` from the records and ``allocations.json``."""
    results = Path(results)
    allocations = (json.loads((results / "allocations.json").read_text())
                   if (results / "allocations.json").is_file() else None)
    text = report_text(read_records(results), allocations)
    atomic_write_text(results / "report.md", text)
    return text


# --------------------------------------------------------------------------------- main


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("prepare", help="the six allocations, allocations.json/.md")
    p.add_argument("--search", default=str(DEFAULT_RESULTS / "search"))
    p.add_argument("--out", default=str(DEFAULT_RESULTS))
    p.add_argument("--verbose", type=int, default=1)
    r = sub.add_parser("record", help="a finished retraining's held-out evaluation")
    r.add_argument("run_dir")
    r.add_argument("--name", default=None,
                   help="record name (default: the run folder's, less train-/alloc-)")
    r.add_argument("--results", default=str(DEFAULT_RESULTS))
    r.add_argument("--delete-weights", action="store_true",
                   help="then delete the run's weights, checkpoints and IN_PROGRESS")
    r.add_argument("--train-seconds", type=float, default=None,
                   help="training time, when the run's history does not hold it")
    q = sub.add_parser("report", help="comparisons and the decision into report.md")
    q.add_argument("--results", default=str(DEFAULT_RESULTS))
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "prepare":
        prepare(args.search, args.out, verbose=args.verbose)
        print((Path(args.out) / "allocations.md").read_text(), end="")
    elif args.command == "record":
        record(args.run_dir, args.name, args.results, args.delete_weights, args.train_seconds)
    else:
        print(report(args.results), end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())
