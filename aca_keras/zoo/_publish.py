"""Publishing zoo entries, model cards and the zoo index."""

from __future__ import annotations

import copy
import datetime as _dt
import json
import os
import re
import shutil
import uuid
import warnings
import zipfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aca_keras.errors import AcaError, ArchitectureError, ZooError
from aca_keras.exporting.formats import get_format
from aca_keras.io import atomic
from aca_keras.io.run_dir import RunDir
from aca_keras.space.architecture import Architecture
from aca_keras.space.validation import is_int
from aca_keras.zoo import _registry
from aca_keras.zoo._card import render_card
from aca_keras.zoo._entry import (
    CARD_FILE,
    ENTRY_FILE,
    FORMAT,
    INDEX_FILE,
    INDEX_FORMAT,
    INDEX_VERSION,
    SCHEMA_FILE,
    SCHEMA_VERSION,
    WEIGHTS_FILE,
    WEIGHTS_KIND,
    EntryInfo,
    Metric,
    bundled_zoo_dir,
    check_document,
    export_file,
    export_kinds,
    read_entry,
    sha256_file,
)
from aca_keras.zoo._models import count_params

# Keras, TensorFlow and the modules that import them (models, data, exporting but its format
# registry, searching) are imported inside the functions that need them: importing
# aca_keras.zoo loads no TensorFlow,
# so that aca-zoo list/info/verify --no-build start fast (tests/test_zoo.py checks it).

#: The model configuration inside a ``.keras`` archive (Keras's format, not a run directory).
_KERAS_CONFIG = "config.json"

NAME_RE = re.compile(r"^[a-z0-9]+([-_][a-z0-9]+)*$")

#: DARTS's CIFAR-10 evaluation network, the default macro settings of an architecture.
DEFAULT_MACRO: dict[str, Any] = {"cells": 20, "channels": 36, "stem_multiplier": 3,
                                 "auxiliary": True, "auxiliary_weight": 0.4, "drop_path": 0.2}

_ZIP_TIME = (1980, 1, 1, 0, 0, 0)

ACA_CITATION = {
    "text": ("Searched with aca_keras, which implements DARTS (H. Liu, K. Simonyan, Y. Yang: "
             "DARTS: Differentiable Architecture Search, ICLR 2019, arXiv:1806.09055) with "
             "Adaptive Channel Allocation (Li, Ning, Hu, He: Adaptive Channel Allocation for "
             "Robust Differentiable Architecture Search, arXiv:2204.04681)."),
    "url": "https://arxiv.org/abs/2204.04681",
    "bibtex": ("@inproceedings{liu2019darts,\n"
               "  title = {{DARTS}: Differentiable Architecture Search},\n"
               "  author = {Liu, Hanxiao and Simonyan, Karen and Yang, Yiming},\n"
               "  booktitle = {International Conference on Learning Representations (ICLR)},\n"
               "  year = {2019}\n}"),
}


@dataclass
class _Resolved:
    """What a publish source provides."""

    architecture: Any  # Architecture
    macro: dict[str, Any]
    dataset: dict[str, Any]
    model: Any  # a DerivedNetwork with trained weights, or None
    search: dict[str, Any]
    training: dict[str, Any]
    metrics: list[dict[str, Any]]
    source: str


# --------------------------------------------------------------------------------- publish


def publish(source: Any, name: str, *, zoo_dir: str | os.PathLike, version: str = "1.0.0",
            title: str | None = None, summary: str | None = None,
            dataset: Mapping[str, Any] | None = None, macro: Mapping[str, Any] | None = None,
            metrics: Sequence[Mapping[str, Any] | Metric] = (),
            provenance: Mapping[str, Mapping[str, Any]] | None = None,
            license: str = "Apache-2.0", citation: Mapping[str, Any] | None = None,
            tags: Sequence[str] = (), notes: Sequence[str] = (),
            exports: Sequence[str] = (), overwrite: bool = False,
            date: str | None = None, shadow: bool = False) -> EntryInfo:
    """Create (or replace) a zoo entry ``<zoo_dir>/<name>/`` and update ``<zoo_dir>/index.json``.

    Args:
        source: a search run directory (``architecture.json`` + ``config.json``; with
            ``trained.keras`` from :func:`aca_keras.training.train_run` the entry gets its
            weights, training provenance and test accuracy), a ``.keras`` file or a trained
            :class:`~aca_keras.models.derived.DerivedNetwork` (weights), or an
            :class:`~aca_keras.space.architecture.Architecture` (architecture only; give
            ``dataset`` with ``input_shape``, ``num_classes``, ``mean``, ``std``).
        name: the entry name (lower-case letters and digits joined by ``-`` or ``_``).
        zoo_dir: the zoo directory to write into (created if needed).
        version: the entry version (``MAJOR.MINOR.PATCH``).
        title: the card's title (default: describes the source).
        summary: the card's paragraph (default: describes the source).
        dataset: overrides of the ``dataset`` block (``name``, ``description``,
            ``class_names``, ``train_images``, ``test_images``, ``notes``, ...).
        macro: overrides of the macro settings (architecture sources only; a model's own
            settings are what it is).
        metrics: extra metrics (dicts with ``name``, ``value``, ``split``, ``how``,
            ``source``, optional ``std``, ``unit``, ``note``). A metric with the same
            ``name`` and ``how`` as one found in the source replaces it.
        provenance: ``{"search": {...}, "training": {...}}`` entries merged into what the
            source records (e.g. ``command``, ``hardware``, ``wall_time_s``).
        license: SPDX identifier.
        citation: ``{"text", "bibtex", "url"}`` (default: DARTS and ACA).
        tags: free tags.
        notes: free remarks, shown in the card.
        exports: extra artifacts exported from the trained model and verified, by
            registered export format (:mod:`aca_keras.exporting.formats`): ``"onnx"``,
            ``"savedmodel"`` (a directory format: stored as a zip archive), ``"tflite"``.
        overwrite: replace an existing entry of the same name in ``zoo_dir``.
        date: publication date ``YYYY-MM-DD`` (default: today).
        shadow: allow a name that the bundled zoo already has. The private entry then hides
            the bundled one wherever this zoo is searched first (``list``, ``info``,
            ``load``); refused by default.

    Returns:
        The new entry's :class:`EntryInfo`.

    Raises:
        ZooError: a bad name, an existing entry without ``overwrite``, a source that lacks
            what an entry needs, or a document that does not validate.
    """
    if not isinstance(name, str) or not NAME_RE.match(name) or len(name) > 64:
        raise ZooError(f"Invalid zoo entry name {name!r}: use lower-case letters and digits "
                       "in groups joined by '-' or '_' (at most 64 characters), e.g. "
                       "'aca-darts-cifar10'.")
    root = Path(zoo_dir).expanduser()
    target = root / name
    if (target.exists() or target.is_symlink()) and not overwrite:
        raise ZooError(f"The zoo entry {target} already exists; pass overwrite=True "
                       "(aca-zoo publish --overwrite) to replace it, or choose another name.")
    bundled = bundled_zoo_dir()
    if (not shadow and bundled is not None and not _is_bundled(root)
            and (bundled / name / ENTRY_FILE).is_file()):
        raise ZooError(f"The bundled zoo already has an entry named {name!r}; a private entry "
                       "of that name would hide it wherever this zoo is searched first. Choose "
                       "another name, or pass shadow=True to hide the bundled entry on "
                       "purpose.")
    bad = [f for f in exports if f not in export_kinds()]
    if bad:
        raise ZooError(f"Unknown export format(s) {bad}; choose from {export_kinds()}.")

    resolved = _resolve(source, dataset, macro)
    if exports and resolved.model is None:
        raise ZooError("exports need trained weights; this source has the architecture only "
                       "(an export would hold random weights).")
    root.mkdir(parents=True, exist_ok=True)
    staging = root / f".{name}.staging-{uuid.uuid4().hex[:8]}"
    staging.mkdir()
    try:
        model = resolved.model
        artifacts = []
        if model is not None:
            weights_path = staging / WEIGHTS_FILE
            _without_optimizer(model).save(weights_path)
            artifacts.append(_artifact(weights_path, WEIGHTS_KIND,
                                       "The whole model (DerivedNetwork) with trained weights, "
                                       "without optimizer state; aca_keras.zoo.load reads it."))
        for fmt in exports:
            artifacts.append(_export(model, staging, fmt, resolved.dataset["class_names"]))

        if model is None:
            from aca_keras.models.derived import build_model  # imports Keras: see the top

            model = build_model(resolved.architecture, **_build_kwargs(resolved))
        params = count_params(model)

        doc = _document(name, version, title, summary, resolved, params, metrics, provenance,
                        license, citation, tags, notes, artifacts, date)
        check_document(doc, f"(new entry {name!r})", name)
        atomic.atomic_write_json(staging / ENTRY_FILE, doc)
        atomic.atomic_write_text(staging / CARD_FILE, render_card(doc))
        for path in staging.iterdir():
            path.chmod(0o644)  # temporary files are private; entries are meant to be shared
        staging.chmod(0o755)
        _place(staging, target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    _registry.clear_cache()
    build_index(root, strict=False)
    return read_entry(target, root, _is_bundled(root))


def _without_optimizer(model: Any) -> Any:
    """The model itself when it has no optimizer, else an uncompiled copy with the same
    weights (a published .keras file holds no optimizer state)."""
    if getattr(model, "optimizer", None) is None:
        return model
    from aca_keras.models.cloning import clone_model  # imports Keras: see the module's note

    return clone_model(model)


def _is_bundled(root: Path) -> bool:
    bundled = bundled_zoo_dir()
    return bundled is not None and bundled.resolve() == root.resolve()


def _place(staging: Path, target: Path) -> None:
    """Move the finished entry into place; an existing one is replaced as a whole."""
    old = None
    if target.exists() or target.is_symlink():
        old = target.with_name(f".{target.name}.old-{uuid.uuid4().hex[:8]}")
        os.replace(target, old)
    try:
        os.replace(staging, target)
    except BaseException:
        if old is not None:
            os.replace(old, target)
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def _artifact(path: Path, kind: str, description: str) -> dict[str, Any]:
    return {"kind": kind, "path": path.name, "sha256": sha256_file(path),
            "bytes": path.stat().st_size, "description": description}


def _export(model: Any, staging: Path, fmt: str, class_names: Sequence[str]) -> dict[str, Any]:
    """Export ``model`` in the registered format ``fmt`` into the staging folder (a
    directory format as a zip archive) and describe the artifact."""
    from aca_keras.exporting import export  # imports TensorFlow: see the top

    spec = get_format(fmt)
    out = staging / export_file(fmt)
    tmp = staging / f".{fmt}-export"
    result = export(model, tmp if spec.directory else out, format=fmt,
                    class_names=list(class_names))
    if spec.directory:
        _zip_dir(tmp, out)
        shutil.rmtree(tmp)
    diff = result.max_abs_diff
    what = (f"{'zip archive of a ' if spec.directory else ''}{spec.description}; input images "
            "raw pixels 0-255, output logits")
    return _artifact(out, fmt, f"{what}; verified against Keras at export "
                               f"(max |difference| {diff:.2g} on {result.checked_images} "
                               "images)." if diff is not None else f"{what}.")


def _zip_dir(directory: Path, archive: Path) -> None:
    """A deterministic zip (sorted names, fixed times) of a directory."""
    with zipfile.ZipFile(archive, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for path in sorted(p for p in directory.rglob("*") if p.is_file()):
            info = zipfile.ZipInfo(path.relative_to(directory).as_posix(), _ZIP_TIME)
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = 0o644 << 16
            zf.writestr(info, path.read_bytes())


# ---------------------------------------------------------------------------- the document


def _document(name, version, title, summary, r: _Resolved, params, metrics, provenance,
              license, citation, tags, notes, artifacts, date) -> dict[str, Any]:
    from aca_keras.versions import package_versions  # imports TensorFlow: see the top

    all_metrics = list(r.metrics)
    for extra in metrics:
        m = extra.to_dict() if isinstance(extra, Metric) else dict(extra)
        all_metrics = [x for x in all_metrics
                       if (x["name"], x["how"]) != (m.get("name"), m.get("how"))]
        all_metrics.append(m)
    if not any((m.get("name"), m.get("how")) == ("params", "measured") for m in all_metrics):
        all_metrics.append({
            "name": "params", "value": round(params["inference_trainable"] / 1e6, 3),
            "unit": "M", "split": "n/a", "how": "measured",
            "source": "aca_keras: trainable weights of the inference model (no auxiliary "
                      "head) built by aca_keras.derived.build_model"})
    search, training = copy.deepcopy(r.search), copy.deepcopy(r.training)
    for stage, base in (("search", search), ("training", training)):
        override = (provenance or {}).get(stage)
        if override:
            if override.get("by") not in (None, base.get("by")):
                base.clear()
            base.update(copy.deepcopy(dict(override)))
    unknown = sorted(set(provenance or {}) - {"search", "training"})
    if unknown:
        raise ZooError(f"provenance may hold 'search' and 'training', got {unknown}")
    versions = {k: v for k, v in package_versions().items() if k != "machine"}
    arch = r.architecture
    k_total = sum(e.channels for c in (arch.normal, arch.reduce) for e in c.edges)
    k_full = arch.reference_channels * (len(arch.normal.edges) + len(arch.reduce.edges))
    default_title = (f"{name}: {'ACA' if k_total < k_full else 'DARTS'} cell on "
                     f"{r.dataset['name']}")
    default_summary = (f"A derived cell pair ({len(arch.normal.edges)} + {len(arch.reduce.edges)}"
                       f" edges, operation set of {len(arch.ops)}) in a {r.macro['cells']}-cell,"
                       f" C = {r.macro['channels']} network for {r.dataset['name']}; "
                       f"{'with trained weights' if artifacts else 'architecture only'}.")
    doc: dict[str, Any] = {
        "format": FORMAT,
        "schema_version": SCHEMA_VERSION,
        "name": name,
        "version": version,
        "title": title or default_title,
        "summary": summary or default_summary,
        "architecture": arch.to_dict(),
        "macro": r.macro,
        "dataset": r.dataset,
        "params": params,
        "metrics": all_metrics,
        "provenance": {
            "search": search, "training": training,
            "published": {"by": "aca_keras.zoo.publish",
                          "date": date or _dt.date.today().isoformat(),
                          "source": r.source, "versions": versions},
        },
        "artifacts": [a for a in artifacts if a is not None],
        "license": license,
        "citation": dict(citation) if citation is not None else copy.deepcopy(ACA_CITATION),
    }
    if tags:
        doc["tags"] = list(tags)
    if notes:
        doc["notes"] = list(notes)
    return json.loads(json.dumps(doc, allow_nan=False))  # plain JSON types only


def _build_kwargs(r: _Resolved) -> dict[str, Any]:
    d, m = r.dataset, r.macro
    return {"input_shape": d["input_shape"], "num_classes": d["num_classes"],
            "cells": m["cells"], "channels": m["channels"], "nodes": m["nodes"],
            "stem_multiplier": m["stem_multiplier"], "auxiliary": m["auxiliary"],
            "auxiliary_weight": m["auxiliary_weight"], "drop_path": m["drop_path"],
            "mean": d["mean"], "std": d["std"]}


# -------------------------------------------------------------------------------- sources


def _resolve(source: Any, dataset: Mapping[str, Any] | None,
             macro: Mapping[str, Any] | None) -> _Resolved:
    if isinstance(source, Architecture):
        return _from_architecture(source, dataset, macro)
    if isinstance(source, (str, os.PathLike)):
        path = Path(source)
        if path.is_dir():
            return _from_run_dir(path, dataset, macro)
        if path.is_file():
            from aca_keras.models.derived import load_model  # imports Keras: see the top

            try:
                model = load_model(path, compile=False)
            except AcaError as exc:
                raise ZooError(f"Cannot publish {path}: {exc}") from exc
            return _from_model(model, dataset, macro, label=f".keras file {path.name}")
        raise ZooError(f"Nothing to publish at {str(path)!r}: give a search run directory, a "
                       ".keras file, a trained model or an Architecture.")
    import keras  # lazy: see the top

    if isinstance(source, keras.Model):
        return _from_model(source, dataset, macro, label="a model object")
    raise ZooError(f"Cannot publish a {type(source).__name__}: give a search run directory, a "
                   ".keras file, a trained DerivedNetwork or an Architecture.")


def _macro_of(architecture: Any, settings: Mapping[str, Any]) -> dict[str, Any]:
    macro = {**DEFAULT_MACRO, "nodes": architecture.nodes}
    macro.update({k: v for k, v in settings.items() if v is not None})
    unknown = sorted(set(macro) - set(DEFAULT_MACRO) - {"nodes"})
    if unknown:
        raise ZooError(f"Unknown macro setting(s) {unknown}; allowed: "
                       f"{sorted(set(DEFAULT_MACRO) | {'nodes'})}.")
    return {k: macro[k] for k in ("cells", "channels", "nodes", "stem_multiplier", "auxiliary",
                                  "auxiliary_weight", "drop_path")}


def _dataset_block(base: Mapping[str, Any], overrides: Mapping[str, Any] | None
                   ) -> dict[str, Any]:
    from aca_keras import data as data_lib  # imports TensorFlow: see the top

    block = {k: v for k, v in base.items() if v is not None}
    block.update({k: v for k, v in (overrides or {}).items() if v is not None})
    for key in ("input_shape", "num_classes", "mean", "std"):
        if key not in block:
            raise ZooError(f"The dataset block needs {key!r}; pass dataset={{{key!r}: ...}} "
                           "(an architecture has no data of its own).")
    name = str(block.get("name") or "unknown")
    known = data_lib.KNOWN_DATASETS.get(data_lib.DATASET_ALIASES.get(name.lower(),
                                                                     name.lower()))
    if "class_names" not in block:
        if known is not None and known.class_names and \
                len(known.class_names) == block["num_classes"]:
            block["class_names"] = list(known.class_names)
        else:
            block["class_names"] = [str(i) for i in range(int(block["num_classes"]))]
    if "description" not in block:
        block["description"] = known.description if known is not None else f"data set {name}"
    block["name"] = name
    order = ("name", "description", "input_shape", "num_classes", "class_names", "mean", "std",
             "train_images", "test_images", "notes")
    extra = sorted(set(block) - set(order))
    if extra:
        raise ZooError(f"Unknown dataset field(s) {extra}; allowed: {list(order)}.")
    out = {k: block[k] for k in order if k in block}
    out["input_shape"] = [int(d) for d in out["input_shape"]]
    out["class_names"] = [str(c) for c in out["class_names"]]
    out["mean"] = [float(v) for v in out["mean"]]
    out["std"] = [float(v) for v in out["std"]]
    return out


def _from_architecture(architecture, dataset, macro) -> _Resolved:
    none = {"by": "none", "note": "architecture only: no weights were trained for this entry"}
    unknown = {"by": "unknown", "note": "published from an Architecture object; its search "
                                        "was not recorded"}
    return _Resolved(architecture=architecture, macro=_macro_of(architecture, macro or {}),
                     dataset=_dataset_block({}, dataset), model=None,
                     search=unknown, training=none, metrics=[],
                     source="an Architecture object")


def _from_model(model, dataset, macro, label: str) -> _Resolved:
    from aca_keras.models.derived import DerivedNetwork  # imports Keras: see the top

    if not isinstance(model, DerivedNetwork):
        raise ZooError(f"Only aca_keras DerivedNetwork models can be published (got "
                       f"{type(model).__name__}); build them with aca_keras.build_model.")
    if macro:
        raise ZooError("macro= applies to architecture sources; a model's settings are its own.")
    settings = {"cells": model.cells, "channels": model.channels, "nodes": model.nodes,
                "stem_multiplier": model.stem_multiplier, "auxiliary": model.auxiliary,
                "auxiliary_weight": model.auxiliary_weight, "drop_path": model.drop_path}
    base = {"input_shape": list(model.image_shape), "num_classes": model.num_classes,
            "mean": list(model.mean), "std": list(model.std)}
    names = getattr(model, "class_names", None)
    if names:
        base["class_names"] = list(names)
    return _Resolved(
        architecture=model.architecture, macro=_macro_of(model.architecture, settings),
        dataset=_dataset_block(base, dataset), model=model,
        search={"by": "unknown", "note": f"published from {label}; the search was not "
                                         "recorded"},
        training={"by": "unknown", "note": f"published from {label}; the training was not "
                                           "recorded"},
        metrics=[], source=label)


def _keras_config(path: Path) -> dict[str, Any]:
    """The DerivedNetwork config stored in a ``.keras`` file (read without building)."""
    try:
        with zipfile.ZipFile(path) as zf:
            config = json.loads(zf.read(_KERAS_CONFIG))
    except (OSError, KeyError, ValueError, zipfile.BadZipFile) as exc:
        raise ZooError(f"{path} is not a readable .keras file: {exc}") from None
    inner = config.get("config") if isinstance(config, dict) else None
    if not isinstance(inner, dict) or "architecture" not in inner:
        raise ZooError(f"{path} does not hold an aca_keras DerivedNetwork.")
    return inner


def _from_run_dir(run_dir: Path, dataset, macro) -> _Resolved:
    run = RunDir(run_dir)
    if not run.architecture.is_file():
        raise ZooError(f"{run_dir} is not a finished search run: it has no "
                       f"{RunDir.ARCHITECTURE}.")
    try:
        architecture = Architecture.load(run.architecture)
        config = atomic.read_json(run.config, "run config")
    except (ArchitectureError, AcaError) as exc:
        raise ZooError(f"Cannot publish the run {run_dir}: {exc}") from None
    if not isinstance(config, dict):
        raise ZooError(f"{run.config} must hold a JSON object.")
    versions = {str(k): str(v) for k, v in (config.get("versions") or {}).items()}
    settings = {k: v for k, v in config.items() if k not in ("versions", "data_dir")}
    data_source = str(config.get("dataset", "unknown"))
    data_name = dataset_display_name(data_source)
    search = {"by": "aca_keras",
              "command": f"aca_keras.search({data_source!r}, **settings)  # settings as listed",
              "settings": settings, "seed": _int_field(config, "seed", run.config),
              "epochs": _int_field(config, "epochs", run.config),
              "hardware": "not recorded by the run", "wall_time_s": None,
              "versions": versions, "data": data_name}

    trained = run.trained_model
    metrics: list[dict[str, Any]] = []
    training: dict[str, Any] = {"by": "none", "note": "the run was not trained (no "
                                                      f"{RunDir.TRAINED_MODEL}); architecture "
                                                      "only"}
    model = None
    if trained.is_file():
        from aca_keras.models.derived import load_model  # imports Keras: see the top

        try:
            model = load_model(trained, compile=False)
        except AcaError as exc:
            raise ZooError(f"Cannot publish the run {run_dir}: {exc}") from exc
        resolved = _from_model(model, {"name": data_name, **(dataset or {})}, macro,
                               "search run directory")
        train_config = _optional_json(run.train_config)
        result = _optional_json(run.train_result)
        if train_config:
            training = {"by": "aca_keras",
                        "command": "aca_keras.training.train_run(run_dir, **settings)  # "
                                   "settings as listed",
                        "settings": train_config,
                        "seed": _int_field(train_config, "seed", run.train_config),
                        "epochs": _int_field(train_config, "epochs", run.train_config),
                        "hardware": "not recorded by the run", "wall_time_s": None,
                        "versions": versions,
                        "data": str(train_config.get("dataset", data_name))}
        else:
            training = {"by": "unknown", "note": f"the run holds {RunDir.TRAINED_MODEL} but no "
                                                 f"{RunDir.TRAIN_CONFIG}; the training was not "
                                                 "recorded"}
        if train_config and result.get("test_accuracy") is not None:
            metric = {
                "name": "top1_accuracy", "value": round(100 * float(result["test_accuracy"]), 2),
                "unit": "%", "split": f"the test split of {training['data']}",
                "how": "measured",
                "source": f"aca_keras.training.train: accuracy of the inference model after "
                          f"{training['epochs']} epochs ({RunDir.TRAIN_RESULT})"}
            evaluation = _evaluation_record(data_source, result.get("test_split"))
            if evaluation is not None:
                metric["evaluation"] = evaluation
            metrics.append(metric)
        resolved.search, resolved.training, resolved.metrics = search, training, metrics
        resolved.source = (f"search run directory ({RunDir.ARCHITECTURE}, {RunDir.CONFIG}, "
                           f"{RunDir.TRAINED_MODEL}, {RunDir.TRAIN_CONFIG}, "
                           f"{RunDir.TRAIN_RESULT})")
        return resolved

    model_file = run.model
    base: dict[str, Any] = {"name": data_name}
    settings_macro: dict[str, Any] = {"cells": config.get("eval_cells"),
                                      "channels": config.get("eval_channels"),
                                      "auxiliary": config.get("auxiliary"),
                                      "drop_path": config.get("drop_path")}
    if model_file.is_file():
        cfg = _keras_config(model_file)
        base.update(input_shape=cfg["input_shape"], num_classes=cfg["num_classes"],
                    mean=cfg["mean"], std=cfg["std"])
        settings_macro.update({k: cfg.get(k) for k in ("cells", "channels", "stem_multiplier",
                                                       "auxiliary", "auxiliary_weight",
                                                       "drop_path")})
    settings_macro.update(macro or {})
    return _Resolved(architecture=architecture, macro=_macro_of(architecture, settings_macro),
                     dataset=_dataset_block(base, dataset), model=model,
                     search=search, training=training,
                     metrics=metrics,
                     source=f"search run directory ({RunDir.ARCHITECTURE}, {RunDir.CONFIG}, "
                            f"{RunDir.MODEL}; no trained weights)")


def dataset_display_name(source: str) -> str:
    """A data set name for listings: a known name as it is; for a path, the file or folder
    name (``.../cifar10-sample/train.npz`` -> ``cifar10-sample``, as
    :func:`aca_keras.data.load` names it), never an absolute path."""
    if not ("/" in source or os.sep in source or Path(source).suffix):
        return source
    path = Path(source)
    if path.suffix.lower() == ".npz":
        from aca_keras.data.readers import npz_name  # imports TensorFlow: see the top

        return npz_name(path)
    return path.name or source


def _evaluation_record(source: str, test_split: Any) -> dict[str, Any] | None:
    """The metric's ``evaluation`` block for a run trained on ``source`` (the search's data
    source) whose ``train_result.json`` recorded ``test_split``; ``None`` for in-memory
    data or an older run."""
    if (not isinstance(test_split, Mapping) or source.startswith("<")
            or not isinstance(test_split.get("images"), int)):
        return None
    record: dict[str, Any] = {"data": source, "load": {}, "split": "test",
                              "images": test_split["images"]}
    path = Path(source).expanduser()
    if path.is_file():
        record["data"] = (f"{path.parent.name}/{path.name}" if path.parent.name
                          else path.name)
        record["data_sha256"] = sha256_file(path)
    elif path.is_dir():
        record["data"] = path.name
    digest = test_split.get("split_sha256")
    if isinstance(digest, str):
        record["split_sha256"] = digest
    return record


def _int_field(data: Mapping[str, Any], key: str, where: Path) -> int:
    value = data.get(key)
    if not is_int(value):
        raise ZooError(f"{where} records no integer {key!r} (got {value!r}); it was not "
                       "written by aca_keras, or is damaged.")
    return value


def _optional_json(path: Path) -> dict[str, Any]:
    if not path.is_file():
        return {}
    data = atomic.read_json(path, "file")
    return data if isinstance(data, dict) else {}


# ------------------------------------------------------------------------- index and cards


def build_index(zoo_dir: str | os.PathLike | None = None, *, write: bool = True,
                strict: bool = True) -> dict[str, Any]:
    """The ``index.json`` manifest of a zoo directory, built from its entries.

    Args:
        zoo_dir: the zoo directory (default: the bundled zoo).
        write: write ``<zoo_dir>/index.json`` (atomically) when it changed.
        strict: raise on a malformed entry (``False``: leave it out with a warning).

    Returns:
        The index document: ``{"format", "version", "schema", "entries": [...]}`` with one
        summary per entry, sorted by name.
    """
    root = Path(zoo_dir) if zoo_dir is not None else bundled_zoo_dir()
    if root is None or not root.is_dir():
        raise ZooError(f"No zoo directory at {root}.")
    location = _registry.ZooLocation(root, "argument")
    entries = []
    for entry_dir in _registry.entry_dirs(location):
        try:
            entry = read_entry(entry_dir, root, False)
        except ZooError as exc:
            if strict:
                raise
            warnings.warn(f"index.json leaves out a malformed entry: {exc}", stacklevel=2)
            continue
        entries.append({
            "name": entry.name, "version": entry.version, "title": entry.title,
            "dataset": entry.dataset, "input_shape": list(entry.input_shape),
            "num_classes": entry.num_classes, "has_weights": entry.has_weights,
            "params": entry.params,
            "metrics": [{k: v for k, v in m.to_dict().items()
                         if k in ("name", "value", "std", "unit", "how")}
                        for m in entry.metrics],
            "artifacts": [a.kind for a in entry.artifacts],
            "tags": list(entry.tags), "license": entry.license,
            "path": f"{entry.name}/{ENTRY_FILE}",
            "entry_sha256": sha256_file(entry_dir / ENTRY_FILE),
        })
    index = {"format": INDEX_FORMAT, "version": INDEX_VERSION, "schema": SCHEMA_FILE,
             "entries": entries}
    if write:
        path = root / INDEX_FILE
        text = json.dumps(index, indent=2) + "\n"
        if not path.is_file() or path.read_text(encoding="utf-8") != text:
            atomic.atomic_write_text(path, text)
            path.chmod(0o644)
    return index


def write_card(entry_dir: str | os.PathLike) -> Path:
    """Regenerate an entry's ``README.md`` from its ``entry.json`` (after a hand edit).

    Raises:
        ZooError: the entry is malformed.
    """
    entry_dir = Path(entry_dir)
    entry = read_entry(entry_dir, entry_dir.parent, False)
    path = atomic.atomic_write_text(entry_dir / CARD_FILE, render_card(entry.document))
    path.chmod(0o644)
    return path
