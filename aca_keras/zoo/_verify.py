"""``verify``: check zoo entries end to end and report per check."""

from __future__ import annotations

import gc
import json
import os
import tempfile
import warnings
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from aca_keras.errors import AcaError, DataError, ZooError
from aca_keras.exporting.formats import ExportFormat, get_format, list_formats
from aca_keras.stats import wilson_interval
from aca_keras.zoo import _models, _registry
from aca_keras.zoo._card import render_card
from aca_keras.zoo._entry import (
    CARD_FILE,
    ENTRY_FILE,
    INDEX_FILE,
    EntryInfo,
    UnknownEntryError,
    artifact_problems,
    read_entry,
    sha256_file,
)
from aca_keras.zoo._publish import build_index

#: Largest accepted difference between an export artifact's logits and Keras's (relative to
#: the largest logit when that is above 1).
EXPORT_TOLERANCE = 1e-4
#: Images (random, fixed seed) each export artifact is run on.
EXPORT_CHECK_IMAGES = 3
#: Width of the accepted interval around a re-measured accuracy, in binomial standard
#: deviations (Wilson score interval).
EVALUATE_SIGMAS = 3.0
#: Metrics that ``verify(..., evaluate=...)`` re-measures: name -> (accuracy -> metric in %).
_ACCURACY_METRICS = {"top1_accuracy": lambda a: 100.0 * a,
                     "test_error": lambda a: 100.0 * (1.0 - a),
                     "top1_error": lambda a: 100.0 * (1.0 - a)}


@dataclass(frozen=True)
class Check:
    """One check of one entry: ``name``, ``ok``, and a ``detail`` line."""

    name: str
    ok: bool
    detail: str = ""


@dataclass
class EntryReport:
    """The checks of one entry folder."""

    name: str
    path: Path
    checks: list[Check] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """Whether every check passed."""
        return all(c.ok for c in self.checks)

    def add(self, name: str, ok: bool, detail: str = "") -> bool:
        self.checks.append(Check(name, ok, detail))
        return ok


@dataclass
class VerifyReport:
    """What :func:`verify` found: one :class:`EntryReport` per entry folder, and the
    ``index.json`` checks of the zoo directories that have one."""

    entries: list[EntryReport] = field(default_factory=list)
    indexes: list[Check] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """Whether every entry and index passed."""
        return all(e.ok for e in self.entries) and all(c.ok for c in self.indexes)

    @property
    def failures(self) -> list[str]:
        """``"<entry>: <check>: <detail>"`` for every failed check."""
        out = [f"{e.name}: {c.name}: {c.detail}" for e in self.entries for c in e.checks
               if not c.ok]
        return out + [f"{c.name}: {c.detail}" for c in self.indexes if not c.ok]

    def format(self) -> str:
        """A human-readable report."""
        lines = []
        for e in self.entries:
            lines.append(f"{e.name}: {'ok' if e.ok else 'FAILED'}  ({e.path})")
            for c in e.checks:
                lines.append(f"  {'ok  ' if c.ok else 'FAIL'} {c.name}"
                             + (f": {c.detail}" if c.detail else ""))
        for c in self.indexes:
            lines.append(f"{'ok  ' if c.ok else 'FAIL'} {c.name}"
                         + (f": {c.detail}" if c.detail else ""))
        passed = sum(e.ok for e in self.entries)
        lines.append(f"{passed}/{len(self.entries)} entries passed"
                     + ("" if all(c.ok for c in self.indexes) else "; an index is out of date"))
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.format()


def verify(name: str = "all", *, zoo_dir=None, build: bool = True,
           check_exports: bool = True, evaluate: Any = None, data_dir: Any = None,
           sigmas: float = EVALUATE_SIGMAS, check_onnx: bool | None = None) -> VerifyReport:
    """Check zoo entries: schema, model card, artifact checksums, architecture, the built (or
    loaded) model against the recorded settings and parameter counts, and the parity of each
    export artifact (ONNX, SavedModel, TFLite or another registered format) with Keras.

    Args:
        name: an entry name, or ``"all"`` for every entry folder on the search path
            (shadowed ones included) plus each zoo directory's ``index.json``.
        zoo_dir: extra zoo directories searched first.
        build: build (or load) each model and check it (the slow part).
        check_exports: run each export artifact in its runtime (its format's runner in
            :mod:`aca_keras.exporting.formats`: ONNX Runtime for ONNX) and compare it with
            Keras; an artifact of a format not registered here is reported as not run.
        evaluate: a data source for :func:`aca_keras.data.load` (a name, the path of the
            file or folder the entry's metric was measured on, or a ``DataBundle``): load the
            entry's trained model, measure its top-1 accuracy on the split the metric
            records (its ``evaluation`` block: ``load`` arguments, ``split``, image count and
            checksums; without one, on the data's test split) and fail when the claim lies
            outside the ``sigmas``-sigma Wilson score interval of the measurement for that
            many images. Needs one entry ``name``. Architecture-only entries are skipped
            (nothing to measure).
        data_dir: TFDS data directory for a named ``evaluate`` data set.
        sigmas: width of the accepted interval, in binomial standard deviations (3).
        check_onnx: the former name of ``check_exports`` (given, it wins).

    Returns:
        A :class:`VerifyReport` (``report.ok``; ``print(report)`` for details). Problems are
        reported, not raised.

    Raises:
        UnknownEntryError: ``name`` is neither ``"all"`` nor an entry on the search path.
    """
    report = VerifyReport()
    if check_onnx is not None:
        check_exports = check_onnx
    if evaluate is not None and name == "all":
        raise ZooError("evaluate= measures one entry's metric on one data set; give the "
                       "entry's name as well.")
    locations = _registry.search_path(zoo_dir)
    if name == "all":
        targets = [(d, loc) for loc in locations for d in _registry.entry_dirs(loc)]
        for loc in locations:
            if (loc.path / INDEX_FILE).is_file():
                report.indexes.append(_check_index(loc.path))
    else:
        found = next(((loc.path / name, loc) for loc in locations
                      if (loc.path / name / ENTRY_FILE).is_file()), None)
        if found is None:
            _registry.find(name, zoo_dir)  # raises UnknownEntryError with suggestions
            raise UnknownEntryError(f"No zoo entry named {name!r}.")  # pragma: no cover
        targets = [found]
    for entry_dir, location in targets:
        rep = _verify_entry(entry_dir, location, build, check_exports)
        if evaluate is not None and rep.ok:
            _check_metric(rep, read_entry(entry_dir, location.path, location.bundled),
                          evaluate, data_dir, sigmas)
        elif evaluate is not None:
            rep.add("evaluate", False, "not measured: the entry failed the checks above")
        report.entries.append(rep)
    return report


def _verify_entry(entry_dir: Path, location, build: bool, check_exports: bool) -> EntryReport:
    rep = EntryReport(entry_dir.name, entry_dir)
    try:
        entry = read_entry(entry_dir, location.path, location.bundled)
    except ZooError as exc:
        rep.add("schema", False, str(exc))
        return rep
    rep.add("schema", True, "entry.json is valid (schema v1 and cross-field rules)")
    card = entry_dir / CARD_FILE
    expected = render_card(entry.document)
    if not card.is_file():
        rep.add("card", False, f"{card} is missing; regenerate it with "
                               "aca_keras.zoo.write_card")
    else:
        same = card.read_text(encoding="utf-8") == expected
        rep.add("card", same, "README.md matches entry.json" if same else
                f"{card} differs from the card generated from entry.json; regenerate it "
                "with aca_keras.zoo.write_card")
    problems = artifact_problems(entry)
    if not rep.add("artifacts", not problems, "; ".join(problems) or
                   f"{len(entry.artifacts)} artifact(s), sha256 and sizes match"):
        return rep
    try:
        entry.architecture()
    except ZooError as exc:
        rep.add("architecture", False, str(exc))
        return rep
    rep.add("architecture", True, "a valid aca_keras architecture")
    if build:
        _check_model(rep, entry, check_exports)
    return rep


def _check_model(rep: EntryReport, entry: EntryInfo, check_exports: bool) -> None:
    try:
        if entry.has_weights:
            model = _models.load_weights_file(entry)
            what = "weights load and match entry.json"
        else:
            model = _models.build(entry, seed=0)
            what = "builds"
    except (ZooError, AcaError, ValueError, OSError) as exc:
        rep.add("model", False, str(exc))
        return
    mismatch = _models.params_mismatch(model, entry)
    rep.add("model", mismatch is None, mismatch or
            f"{what}; parameters {entry.params['inference_trainable']:,} trainable "
            f"(inference), {entry.params['total']:,} total")
    if check_exports and mismatch is None:
        for artifact in entry.artifacts:
            if artifact.kind in list_formats():
                rep.add(artifact.kind, *_export_parity(
                    model, get_format(artifact.kind), entry.artifact_path(artifact),
                    entry.input_shape))
            elif artifact.kind != "keras":
                rep.add(artifact.kind, True, f"{artifact.path}: not run (no export format "
                                             f"{artifact.kind!r} is registered here)")
    del model
    gc.collect()


def _export_parity(model: Any, spec: ExportFormat, path: Path, input_shape: tuple[int, ...]
                   ) -> tuple[bool, str]:
    """Run the export artifact at ``path`` (a zip archive for a directory format) with its
    format's runner and compare its logits with the model's on a few random images."""
    rng = np.random.default_rng(0)
    images = rng.uniform(0, 255, size=(EXPORT_CHECK_IMAGES, *input_shape)).astype(np.float32)
    expected = np.asarray(model.inference_model()(images, training=False))
    try:
        with tempfile.TemporaryDirectory(prefix="aca_keras-zoo-verify-") as unpacked:
            runnable = path
            if spec.directory:
                with zipfile.ZipFile(path) as archive:
                    archive.extractall(unpacked)
                runnable = Path(unpacked)
            actual = np.asarray(spec.runner()(runnable, [images], "logits")[0])
    except Exception as exc:  # each runtime raises its own exception types
        return False, f"{path.name} does not run ({spec.label}): {exc}"
    if actual.shape != expected.shape:
        return False, f"{path.name} outputs shape {actual.shape}, Keras {expected.shape}"
    diff = float(np.max(np.abs(actual - expected)))
    ok = diff <= EXPORT_TOLERANCE * max(1.0, float(np.max(np.abs(expected))))
    return ok, (f"{path.name} agrees with Keras (max |difference| {diff:.2g} on "
                f"{EXPORT_CHECK_IMAGES} images)" if ok else
                f"{path.name} differs from Keras by up to {diff:.3g}")


def _check_index(root: Path) -> Check:
    path = root / INDEX_FILE
    try:
        expected = build_index(root, write=False, strict=True)
        actual = json.loads(path.read_text(encoding="utf-8"))
    except (ZooError, ValueError) as exc:
        return Check(f"index {path}", False, str(exc))
    same = actual == expected
    return Check(f"index {path}", same, "up to date" if same else
                 "out of date; rebuild it with aca_keras.zoo.build_index(zoo_dir)")


def _check_metric(rep: EntryReport, entry: EntryInfo, evaluate: Any, data_dir: Any,
                  sigmas: float) -> None:
    """Re-measure the entry's accuracy metric on ``evaluate`` (see :func:`verify`)."""
    # lazy: the data module imports TensorFlow, and importing aca_keras.zoo must not
    from aca_keras import data as data_lib

    metric = next((m for m in entry.metrics if m.name in _ACCURACY_METRICS
                   and m.how == "measured"), None)
    if not entry.has_weights:
        rep.add("evaluate", True, "skipped: an architecture-only entry (no trained weights); "
                                  "its figures are the paper's and cannot be re-measured here")
        return
    if metric is None:
        rep.add("evaluate", True, "skipped: the entry records no measured accuracy metric "
                                  f"({', '.join(_ACCURACY_METRICS)})")
        return
    record = dict(metric.evaluation or {})
    shown = (os.fspath(evaluate) if isinstance(evaluate, (str, os.PathLike))
             else f"<{type(evaluate).__name__}>")
    if record.get("data_sha256") and isinstance(evaluate, (str, os.PathLike)):
        path = os.path.expanduser(os.fspath(evaluate))
        if os.path.isfile(path) and sha256_file(path) != record["data_sha256"]:
            rep.add("evaluate", False, f"{shown} is not the file the metric was measured on "
                                       f"({record['data']}: sha256 {record['data_sha256']}, "
                                       f"given {sha256_file(path)})")
            return
    kwargs = dict(record.get("load") or {})
    if data_dir is not None and isinstance(evaluate, str):
        kwargs.setdefault("data_dir", data_dir)
    part = record.get("split", "test")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            bundle = data_lib.load(evaluate, **kwargs)
    except (DataError, OSError, TypeError) as exc:
        rep.add("evaluate", False, f"cannot load {shown} with {kwargs or 'no arguments'}: {exc}")
        return
    x, y = (bundle.x_test, bundle.y_test) if part == "test" else (bundle.x_train,
                                                                   bundle.y_train)
    if x is None:
        rep.add("evaluate", False, f"{shown} has no {part} split to measure on (the entry's "
                                   f"metric was measured on {metric.split})")
        return
    where = (f"the {part} split of {shown}" + (f" loaded with {kwargs}" if kwargs else ""))
    if record.get("images") is not None and len(y) != record["images"]:
        rep.add("evaluate", False, f"{where} has {len(y)} images; the metric was measured on "
                                   f"{record['images']} ({metric.split}): not the same split")
        return
    if record.get("split_sha256") and data_lib.split_digest(x, y) != record["split_sha256"]:
        rep.add("evaluate", False, f"{where} has the recorded {len(y)} images but not the same "
                                   "ones (its split_sha256 differs): not the same split")
        return
    if tuple(x.shape[1:]) != tuple(entry.input_shape) or int(y.max()) >= entry.num_classes:
        rep.add("evaluate", False, f"{where} holds {tuple(x.shape[1:])} images with labels up "
                                   f"to {int(y.max())}; the entry takes "
                                   f"{tuple(entry.input_shape)} and {entry.num_classes} classes")
        return
    model = _models.load_entry_model(entry, weights=True)
    logits = model.inference_model().predict(x.astype("float32"), batch_size=256, verbose=0)
    correct = int(np.sum(np.argmax(logits, axis=-1) == y))
    total = int(len(y))
    low, high = wilson_interval(correct, total, sigmas)
    to_metric = _ACCURACY_METRICS[metric.name]
    measured = to_metric(correct / total)
    bounds = sorted((to_metric(low), to_metric(high)))
    ok = bounds[0] - 1e-9 <= float(metric.value) <= bounds[1] + 1e-9
    basis = ("" if record else " (the entry records no evaluation split: measured on the "
             "data's own split)")
    rep.add("evaluate", ok,
            f"{metric.name} measured {measured:.2f}% ({correct}/{total} correct on {where})"
            f"{basis}; the entry claims {float(metric.value):.2f}%, "
            f"{'inside' if ok else 'OUTSIDE'} the {sigmas:g}-sigma Wilson score interval "
            f"[{bounds[0]:.2f}%, {bounds[1]:.2f}%] of the measurement for {total} images")
    del model
    gc.collect()
