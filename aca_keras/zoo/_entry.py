"""Zoo entries on disk: the ``entry.json`` document, its checks, and its metadata dataclasses.

An entry is a folder ``<zoo_dir>/<name>/`` holding ``entry.json`` (validated against
``zoo/schema/entry-v1.json`` plus the cross-field rules in :func:`document_issues`), the
generated model card ``README.md`` and optional artifacts, each recorded in ``entry.json``
with its sha256 and byte size. Nothing here imports Keras or TensorFlow.
"""

from __future__ import annotations

import copy
import functools
import hashlib
import importlib.util
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aca_keras.errors import ArchitectureError, ZooError
from aca_keras.exporting.formats import get_format, list_formats
from aca_keras.space.architecture import Architecture
from aca_keras.space.validation import is_int
from aca_keras.zoo import _schema

__all__ = [
    "Artifact",
    "EntryInfo",
    "Metric",
    "NoWeightsWarning",
    "UnknownEntryError",
]

FORMAT = "aca_keras.zoo_entry"
SCHEMA_VERSION = 1
ENTRY_FILE = "entry.json"
CARD_FILE = "README.md"
INDEX_FILE = "index.json"
INDEX_FORMAT = "aca_keras.zoo_index"
INDEX_VERSION = 1
SCHEMA_FILE = f"schema/entry-v{SCHEMA_VERSION}.json"
#: The entry's artifact files (its own layout, not a run directory's): the weights, and the
#: exports of :func:`aca_keras.zoo.publish` (:func:`export_file`).
WEIGHTS_FILE = "model.keras"
#: The artifact kind of the weights; an export's kind is its format's name.
WEIGHTS_KIND = "keras"
#: Suffix of the zip archive that stores an export of a directory format (a SavedModel).
ARCHIVE_SUFFIX = ".zip"
RESERVED_FILES = frozenset({ENTRY_FILE, CARD_FILE})
MAX_ISSUES_SHOWN = 6

HOW_LABELS = {"paper": "paper's figure", "measured": "measured by aca_keras"}


class UnknownEntryError(ZooError, KeyError):
    """No zoo entry has the requested name."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


class NoWeightsWarning(UserWarning):
    """A zoo model was built with freshly initialised weights (architecture-only entry)."""


def export_kinds() -> list[str]:
    """The artifact kinds :func:`aca_keras.zoo.publish` can export: the registered export
    formats (:func:`aca_keras.exporting.formats.list_formats`)."""
    return list_formats()


def export_file(kind: str) -> str:
    """The file name of an export artifact of ``kind`` in an entry folder: the format's
    ``default_name`` (``model.onnx``, ``model.tflite``), with ``.zip`` for a directory format
    (``saved_model.zip``).

    Raises:
        ZooError: ``kind`` is no registered export format.
    """
    try:
        spec = get_format(kind)
    except KeyError:
        raise ZooError(f"Unknown export format {kind!r}; choose from "
                       f"{', '.join(export_kinds())}.") from None
    return spec.default_name + (ARCHIVE_SUFFIX if spec.directory else "")


# ------------------------------------------------------------------------------ dataclasses


@dataclass(frozen=True)
class Metric:
    """One metric of an entry.

    Attributes:
        name: e.g. ``"test_error"``, ``"top1_accuracy"``, ``"params"``.
        value: the figure, in ``unit``.
        split: what it was measured on (e.g. ``"CIFAR-10 test set (10,000 images)"``).
        how: ``"paper"`` (the cited paper's figure) or ``"measured"`` (measured by aca_keras).
        source: the paper and table, or the function and settings that measured it.
        std: spread (``value ± std``) when reported.
        unit: ``"%"``, ``"M"``, ... or ``None``.
        note: free text.
        evaluation: the exact split a measured metric was computed on (``data``, ``load``
            keyword arguments of :func:`aca_keras.data.load`, ``split``, ``images``, and
            optionally ``data_sha256``, ``indices``, ``seed``, ``split_sha256``), so that
            ``verify(name, evaluate=DATA)`` can rebuild it; ``None`` when not recorded.
    """

    name: str
    value: float
    split: str
    how: str
    source: str
    std: float | None = None
    unit: str | None = None
    note: str | None = None
    evaluation: Mapping[str, Any] | None = None

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Metric:
        """From an ``entry.json`` metric object (already schema-checked)."""
        return cls(name=data["name"], value=data["value"], split=data["split"],
                   how=data["how"], source=data["source"], std=data.get("std"),
                   unit=data.get("unit"), note=data.get("note"),
                   evaluation=data.get("evaluation"))

    def to_dict(self) -> dict[str, Any]:
        """The ``entry.json`` metric object (``None`` fields left out)."""
        out: dict[str, Any] = {"name": self.name, "value": self.value}
        if self.std is not None:
            out["std"] = self.std
        if self.unit is not None:
            out["unit"] = self.unit
        out.update(split=self.split, how=self.how, source=self.source)
        if self.note is not None:
            out["note"] = self.note
        if self.evaluation is not None:
            out["evaluation"] = dict(self.evaluation)
        return out

    @property
    def how_label(self) -> str:
        """``"paper's figure"`` or ``"measured by aca_keras"``."""
        return HOW_LABELS.get(self.how, self.how)

    def formatted(self) -> str:
        """``"2.76 ± 0.09 %"``-style text (value and spread with the same decimals)."""
        places = max(_decimals(self.value), _decimals(self.std))
        text = _number(self.value, places)
        if self.std is not None:
            text += f" ± {_number(self.std, places)}"
        if self.unit:
            text += f" {self.unit}" if self.unit != "%" else " %"
        return text


@dataclass(frozen=True)
class Artifact:
    """A file of an entry, recorded with its checksum.

    Attributes:
        kind: ``"keras"`` (the whole model with weights) or an export format's name
            (:mod:`aca_keras.exporting.formats`): ``"onnx"``, ``"savedmodel"`` (a zip archive
            of a SavedModel directory), ``"tflite"``.
        path: file name inside the entry folder.
        sha256: hex digest of the file.
        bytes: size of the file.
        description: optional text.
    """

    kind: str
    path: str
    sha256: str
    bytes: int
    description: str | None = None

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Artifact:
        """From an ``entry.json`` artifact object (already schema-checked)."""
        return cls(kind=data["kind"], path=data["path"], sha256=data["sha256"],
                   bytes=data["bytes"], description=data.get("description"))

    def to_dict(self) -> dict[str, Any]:
        """The ``entry.json`` artifact object."""
        out: dict[str, Any] = {"kind": self.kind, "path": self.path, "sha256": self.sha256,
                               "bytes": self.bytes}
        if self.description is not None:
            out["description"] = self.description
        return out


@dataclass(frozen=True)
class EntryInfo:
    """Metadata of one zoo entry (timm-style: one dataclass per registered entry).

    Attributes:
        name: registry name (the entry folder's name).
        version: entry version (``MAJOR.MINOR.PATCH``).
        title: one-line title.
        summary: a paragraph.
        dataset: name of the data set the model is meant for.
        input_shape: ``(H, W, C)`` of the raw images.
        num_classes: number of classes.
        class_names: class names in index order.
        macro: the ``build_model`` settings (cells, channels, nodes, stem_multiplier,
            auxiliary, auxiliary_weight, drop_path).
        params: recorded parameter counts (``total``, ``inference``, ``inference_trainable``).
        metrics: the metrics, each labelled with how it was obtained.
        artifacts: the recorded files.
        license: SPDX identifier.
        tags: free tags.
        path: the entry folder.
        zoo_dir: the zoo directory that holds the entry.
        bundled: whether the entry ships with aca_keras.
        document: the whole ``entry.json`` document (a copy).
    """

    name: str
    version: str
    title: str
    summary: str
    dataset: str
    input_shape: tuple[int, int, int]
    num_classes: int
    class_names: tuple[str, ...]
    macro: dict[str, Any]
    params: dict[str, int]
    metrics: tuple[Metric, ...]
    artifacts: tuple[Artifact, ...]
    license: str
    tags: tuple[str, ...]
    path: Path
    zoo_dir: Path
    bundled: bool
    document: dict[str, Any] = field(repr=False, compare=False, hash=False)

    def __hash__(self) -> int:
        return hash((self.name, self.version, str(self.path)))

    @property
    def has_weights(self) -> bool:
        """Whether the entry has trained weights (a ``keras`` artifact)."""
        return self.artifact("keras") is not None

    @property
    def mean(self) -> tuple[float, ...]:
        """Per-channel normalisation mean (0-1 scale)."""
        return tuple(self.document["dataset"]["mean"])

    @property
    def std(self) -> tuple[float, ...]:
        """Per-channel normalisation standard deviation (0-1 scale)."""
        return tuple(self.document["dataset"]["std"])

    def artifact(self, kind: str) -> Artifact | None:
        """The first artifact of ``kind``, or ``None``."""
        return next((a for a in self.artifacts if a.kind == kind), None)

    def artifact_path(self, artifact: Artifact | str) -> Path:
        """Path of an artifact (or of the first artifact of a kind) on disk."""
        if isinstance(artifact, str):
            found = self.artifact(artifact)
            if found is None:
                raise ZooError(f"The zoo entry {self.name!r} has no {artifact!r} artifact; it "
                               f"records {[a.kind for a in self.artifacts] or 'none'}.")
            artifact = found
        return self.path / artifact.path

    def metric(self, name: str, how: str | None = None) -> Metric | None:
        """The first metric called ``name`` (optionally with ``how``), or ``None``."""
        return next((m for m in self.metrics if m.name == name and how in (None, m.how)), None)

    def architecture(self):
        """The entry's :class:`~aca_keras.space.architecture.Architecture` (strictly validated).

        Raises:
            ZooError: the architecture document is invalid.
        """
        try:
            return Architecture.from_dict(self.document["architecture"])
        except ArchitectureError as exc:
            raise ZooError(f"The zoo entry {self.name!r} ({self.path / ENTRY_FILE}) has an "
                           f"invalid architecture: {exc}") from None

    def build_kwargs(self) -> dict[str, Any]:
        """Keyword arguments of :func:`aca_keras.models.derived.build_model` (after the
        architecture), from ``macro`` and ``dataset``."""
        macro = self.macro
        return {"input_shape": self.input_shape, "num_classes": self.num_classes,
                "cells": macro["cells"], "channels": macro["channels"],
                "nodes": macro["nodes"], "stem_multiplier": macro["stem_multiplier"],
                "auxiliary": macro["auxiliary"], "auxiliary_weight": macro["auxiliary_weight"],
                "drop_path": macro["drop_path"], "mean": self.mean, "std": self.std}


# ------------------------------------------------------------------------------ locations


def bundled_zoo_dir() -> Path | None:
    """The zoo shipped with aca_keras, or ``None`` when this installation has none.

    A wheel installs the repository's top-level ``zoo/`` folder as the data package
    ``aca_keras.zoo_data``; a source checkout (editable install) reads ``zoo/`` beside the
    package directly.
    """
    candidates = []
    try:
        spec = importlib.util.find_spec("aca_keras.zoo_data")
    except (ImportError, ValueError):
        spec = None
    if spec is not None and spec.submodule_search_locations:
        candidates.extend(Path(p) for p in spec.submodule_search_locations)
    candidates.append(Path(__file__).resolve().parents[2] / "zoo")
    for candidate in candidates:
        if (candidate / SCHEMA_FILE).is_file():
            return candidate
    return None


@functools.lru_cache(maxsize=4)
def load_schema(version: int = SCHEMA_VERSION) -> dict[str, Any]:
    """The entry JSON schema document of ``version`` (from the bundled zoo).

    Raises:
        ZooError: the schema file is missing (a broken installation) or invalid.
    """
    root = bundled_zoo_dir()
    path = None if root is None else root / f"schema/entry-v{version}.json"
    if path is None or not path.is_file():
        raise ZooError(f"The zoo entry schema schema/entry-v{version}.json is not installed "
                       "(aca_keras.zoo_data is missing); reinstall aca_keras.")
    schema = json.loads(path.read_text(encoding="utf-8"))
    try:
        _schema.check_schema(schema)
    except _schema.SchemaDocumentError as exc:
        raise ZooError(f"The zoo schema {path} is invalid: {exc}") from None
    return schema


# ------------------------------------------------------------------------------- checking


def read_json_strict(path: Path, what: str) -> Any:
    """Parse a JSON file, refusing NaN/Infinity and duplicate keys, with a :class:`ZooError`
    naming the file."""
    def no_constants(token: str) -> Any:
        raise ValueError(f"{token} is not valid JSON")

    def no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for key, value in pairs:
            if key in out:
                raise ValueError(f"duplicate key {key!r}")
            out[key] = value
        return out

    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ZooError(f"The {what} {path} does not exist.") from None
    except UnicodeDecodeError:
        raise ZooError(f"The {what} {path} is not UTF-8 text.") from None
    try:
        return json.loads(text, parse_constant=no_constants, object_pairs_hook=no_duplicates)
    except ValueError as exc:
        raise ZooError(f"The {what} {path} is not valid JSON: {exc}") from None


def document_issues(doc: Any, folder_name: str | None = None) -> list[str]:
    """Every problem of an ``entry.json`` document: schema errors first (JSON pointer and
    message), then the cross-field rules. Empty when the document is valid."""
    if isinstance(doc, Mapping):
        version = doc.get("schema_version")
        if is_int(version) and \
                version > SCHEMA_VERSION:
            return [f"/schema_version: {version} is newer than the version {SCHEMA_VERSION} "
                    "this aca_keras reads; upgrade aca_keras"]
    issues = [str(i) for i in _schema.validate(doc, load_schema())]
    if issues:
        return issues
    return _cross_field_issues(doc, folder_name)


def _cross_field_issues(doc: Mapping[str, Any], folder_name: str | None) -> list[str]:
    issues = []
    if folder_name is not None and doc["name"] != folder_name:
        issues.append(f"/name: {doc['name']!r} differs from the entry folder's name "
                      f"{folder_name!r}; they must be equal")
    data = doc["dataset"]
    if len(data["class_names"]) != data["num_classes"]:
        issues.append(f"/dataset/class_names: {len(data['class_names'])} names for "
                      f"num_classes = {data['num_classes']}")
    channels = data["input_shape"][2]
    for key in ("mean", "std"):
        if len(data[key]) != channels:
            issues.append(f"/dataset/{key}: {len(data[key])} values for {channels} image "
                          "channel(s)")
    nodes = doc["macro"]["nodes"]
    for cell in ("normal", "reduce"):
        edges = doc["architecture"][cell]["edges"]
        cell_nodes = max(e["node"] for e in edges) + 1
        if cell_nodes != nodes:
            issues.append(f"/macro/nodes: {nodes}, but the {cell} cell has {cell_nodes} "
                          "intermediate nodes")
    paths = [a["path"] for a in doc["artifacts"]]
    for i, path in enumerate(paths):
        if path in RESERVED_FILES:
            issues.append(f"/artifacts/{i}/path: {path!r} is reserved for the entry itself")
        if path in paths[:i]:
            issues.append(f"/artifacts/{i}/path: {path!r} is recorded twice")
    if sum(a["kind"] == "keras" for a in doc["artifacts"]) > 1:
        issues.append("/artifacts: more than one artifact of kind 'keras'")
    params = doc["params"]
    if not params["inference_trainable"] <= params["inference"] <= params["total"]:
        issues.append("/params: expected inference_trainable <= inference <= total, got "
                      f"{params}")
    return issues


def check_document(doc: Any, where: Path | str, folder_name: str | None = None) -> None:
    """Raise a :class:`ZooError` naming ``where`` and the problems when ``doc`` is invalid."""
    issues = document_issues(doc, folder_name)
    if issues:
        shown = "; ".join(issues[:MAX_ISSUES_SHOWN])
        more = (f" (and {len(issues) - MAX_ISSUES_SHOWN} more)"
                if len(issues) > MAX_ISSUES_SHOWN else "")
        raise ZooError(f"Malformed zoo entry {where}: {shown}{more}. The format is "
                       f"{SCHEMA_FILE} in the zoo (JSON Schema draft 2020-12).")


def read_entry(entry_dir: Path, zoo_dir: Path, bundled: bool) -> EntryInfo:
    """Read and validate ``entry_dir/entry.json`` (schema and cross-field rules; artifacts
    are checked separately by :func:`artifact_problems`)."""
    path = entry_dir / ENTRY_FILE
    doc = read_json_strict(path, "zoo entry")
    check_document(doc, path, entry_dir.name)
    return info_from_document(doc, entry_dir, zoo_dir, bundled)


def info_from_document(doc: Mapping[str, Any], entry_dir: Path, zoo_dir: Path,
                       bundled: bool) -> EntryInfo:
    """An :class:`EntryInfo` of a valid document."""
    data = doc["dataset"]
    return EntryInfo(
        name=doc["name"], version=doc["version"], title=doc["title"], summary=doc["summary"],
        dataset=data["name"], input_shape=tuple(data["input_shape"]),
        num_classes=data["num_classes"], class_names=tuple(data["class_names"]),
        macro=dict(doc["macro"]), params=dict(doc["params"]),
        metrics=tuple(Metric.from_dict(m) for m in doc["metrics"]),
        artifacts=tuple(Artifact.from_dict(a) for a in doc["artifacts"]),
        license=doc["license"], tags=tuple(doc.get("tags", ())), path=entry_dir,
        zoo_dir=zoo_dir, bundled=bundled, document=copy.deepcopy(dict(doc)))


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    """Hex sha256 of a file."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def artifact_problems(entry: EntryInfo) -> list[str]:
    """Missing files, wrong sizes and checksum mismatches of an entry's artifacts."""
    problems = []
    for artifact in entry.artifacts:
        path = entry.path / artifact.path
        if not path.is_file():
            problems.append(f"artifact {artifact.path} ({artifact.kind}) is missing from "
                            f"{entry.path}")
            continue
        size = path.stat().st_size
        actual = sha256_file(path)
        if actual != artifact.sha256:
            problems.append(
                f"artifact {path} fails its checksum: expected sha256 {artifact.sha256}, "
                f"actual {actual} ({size} bytes, {artifact.bytes} recorded); the file was "
                "changed or corrupted after publishing")
        elif size != artifact.bytes:
            problems.append(f"artifact {path} has {size} bytes, {artifact.bytes} recorded")
    return problems


def check_artifacts(entry: EntryInfo) -> None:
    """Raise a :class:`ZooError` when an artifact is missing or fails its checksum."""
    problems = artifact_problems(entry)
    if problems:
        raise ZooError(f"Refusing the zoo entry {entry.name!r}: " + "; ".join(problems) + ".")


def _decimals(value: float | None) -> int:
    """Decimal places of a number as written in JSON (``2.76`` -> 2, ``3`` -> 0)."""
    if value is None or isinstance(value, int) or float(value).is_integer():
        return 0
    text = repr(float(value))
    return 0 if "e" in text else len(text.split(".")[1])


def _number(value: float, places: int) -> str:
    if isinstance(value, int) or (float(value).is_integer() and places == 0):
        return f"{int(value):,}"
    return f"{value:,.{places}f}"
