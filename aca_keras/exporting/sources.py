"""What :func:`aca_keras.exporting.export` exports: a Keras model, a ``.keras`` file or a
search/training run directory, resolved into a model with a label, a default output folder and
the class names it knows.

Zoo names are not resolved here (exporting sits below the zoo): ``aca-export NAME`` resolves
them in the CLI; from Python, load the entry first (``export(aca_keras.zoo.load(name), path)``).
"""

from __future__ import annotations

import json
import os
import warnings
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import keras

# imported for their side effect: they register the aca_keras layers and DerivedNetwork
# with Keras, so that keras.saving.load_model can rebuild a .keras file of them
import aca_keras.layers.ops  # noqa: F401
import aca_keras.models.derived  # noqa: F401
from aca_keras import data as data_lib
from aca_keras.errors import ExportError, RunDirError
from aca_keras.io.run_dir import RunDir


class UntrainedModelWarning(UserWarning):
    """The exported model was never trained: a search run's ``model.keras`` (the derived
    network with fresh weights) without the ``trained.keras`` that training writes."""


@dataclass
class Source:
    """A resolved model source."""

    model: Any
    label: str  # recorded as the metadata's "source"
    default_dir: Path | None  # where a default output goes (None: no default)
    default_stem: str  # e.g. "model" -> model.onnx
    in_run_dir: bool = False
    class_names: list[str] | None = None


def resolve_source(obj: Any) -> Source:
    """The :class:`Source` of a Keras model, a ``.keras`` file or a run directory.

    Raises:
        ValueError: ``obj`` is neither a model nor a path.
        FileNotFoundError: no such file or directory (a bare name gets a hint about the zoo).
        RunDirError: a run directory without a model file.
        ExportError: the file cannot be loaded as a Keras model.
    """
    if isinstance(obj, keras.Model):
        return Source(obj, _model_label(obj), None, obj.name)
    if not isinstance(obj, (str, os.PathLike)):
        raise ValueError(f"Expected a Keras model, a .keras file or a run directory, got "
                         f"{type(obj).__name__}.")
    p = Path(obj)
    if p.is_dir():
        return _from_run_dir(RunDir(p))
    if p.is_file():
        run = RunDir(p.parent)
        if (p.name == RunDir.MODEL and run.architecture.is_file()
                and not run.trained_model.is_file()):
            _warn_untrained(run)  # a search run's untrained model, named directly
        return Source(load_keras_file(p), str(p), p.parent, p.stem)
    text = os.fspath(obj)
    if text and not (os.sep in text or "/" in text):  # may be a zoo name
        raise FileNotFoundError(
            f"No file or directory {text!r}. To export the zoo entry {text!r}, load it first: "
            f"aca_keras.export(aca_keras.zoo.load({text!r}), 'model.onnx') (the aca-export "
            "command resolves zoo names itself).")
    raise FileNotFoundError(f"No file or directory {text!r}; give a .keras file or a run "
                            "directory.")


def _model_label(model: keras.Model) -> str:
    """``zoo:<name>`` for a model from ``aca_keras.zoo.load`` (it carries ``zoo_entry``),
    else the model's class and name."""
    entry_name = getattr(getattr(model, "zoo_entry", None), "name", None)
    if isinstance(entry_name, str):
        return f"zoo:{entry_name}"
    return f"<{type(model).__name__} {model.name!r}>"


def _from_run_dir(run: RunDir) -> Source:
    model_file = run.best_model()
    if model_file is None:
        raise RunDirError(f"{str(run.path)!r} holds neither {RunDir.TRAINED_MODEL} nor "
                          f"{RunDir.MODEL}; give a search or training run directory, or a "
                          ".keras file.")
    if model_file == run.model:
        _warn_untrained(run)
    model = load_keras_file(model_file)
    names = None
    if run.config.is_file():
        try:
            config = json.loads(run.config.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            config = None
        if isinstance(config, dict):
            names = _names_from_config(config)
    return Source(model, str(run.path), run.export_dir, "model", in_run_dir=True,
                  class_names=names)


def _warn_untrained(run: RunDir) -> None:
    warnings.warn(
        f"{str(run.path)!r} has no {RunDir.TRAINED_MODEL}: exporting its untrained "
        f"{RunDir.MODEL} (the derived network with freshly initialised weights; its "
        "predictions are meaningless). Train it first (aca-train RUN_DIR, or "
        "aca_keras.training.train_run), then export.",
        UntrainedModelWarning, stacklevel=4)


def _names_from_config(config: dict[str, Any]) -> list[str] | None:
    """Class names recorded in a run's search config, or those of its known data set."""
    for holder in (config, config.get("data"), config.get("dataset")):
        if isinstance(holder, dict) and isinstance(holder.get("class_names"), list):
            return [str(c) for c in holder["class_names"]]
    dataset = config.get("dataset")
    if isinstance(dataset, str):
        name = data_lib.DATASET_ALIASES.get(dataset.lower(), dataset.lower())
        known = data_lib.KNOWN_DATASETS.get(name)
        if known is not None and known.class_names:
            return list(known.class_names)
    return None


def load_keras_file(path: Path) -> keras.Model:
    """The model in a ``.keras`` (or ``.h5``) file, or ExportError saying why not."""
    if path.suffix.lower() not in (".keras", ".h5"):
        raise ExportError(f"{str(path)!r} is not a .keras model file; give a .keras file "
                          "written by model.save(...) or a run directory.")
    if path.suffix.lower() == ".keras" and not zipfile.is_zipfile(path):
        raise ExportError(f"{str(path)!r} is not a valid .keras file (not a zip archive: corrupt "
                          "or truncated); re-save the model with model.save('model.keras').")
    try:
        model = keras.saving.load_model(path, compile=False)
    except Exception as exc:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ExportError(f"Could not load a Keras model from {str(path)!r} (corrupt, truncated "
                          f"or not a Keras file): {reason}") from exc
    if not isinstance(model, keras.Model):
        raise ExportError(f"{str(path)!r} holds a {type(model).__name__}, not a Keras model.")
    return model
