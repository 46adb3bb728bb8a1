"""Export a derived network for deployment: ONNX, TensorFlow SavedModel or TFLite.

:func:`export` writes the *inference graph* only (for a
:class:`~aca_keras.derived.DerivedNetwork`: :meth:`~aca_keras.derived.DerivedNetwork.inference_model`,
so no auxiliary head and no drop path; BatchNorm in inference mode), with one input named
``images`` (raw pixels 0-255, float32, NHWC: the model normalises itself) and one output named
``logits`` (or ``probabilities``, a softmax, with ``output="probabilities"``). The batch
dimension is dynamic unless ``batch_size`` fixes it.

Every export is written to a temporary path in the target directory, run in the runtime it
is meant for (ONNX Runtime, a fresh ``tf.saved_model.load``, ``tf.lite.Interpreter``) on random
images and on ``sample_inputs``, compared with Keras, and only then renamed into place; an
export that fails verification raises :class:`~aca_keras.errors.ExportError` and leaves
nothing behind.

Metadata (:func:`read_metadata` reads it back from any of the three formats): a JSON document
with the aca_keras, Keras and TensorFlow versions, input name / shape / value range, output
name, number of classes, class names when known and the architecture spec
(``Architecture.to_dict``) when the model is an aca_keras model. It is stored as

* ONNX: ``metadata_props`` ``aca_keras.metadata`` (the whole document) and the short keys
  ``aca_keras.version``, ``aca_keras.output``, ``aca_keras.input_shape``,
  ``aca_keras.class_names``, ``aca_keras.architecture`` (JSON strings);
* SavedModel: the asset ``assets/aca_keras.json``, tracked by the SavedModel (after
  ``tf.saved_model.load`` its path is ``loaded.aca_keras_metadata.asset_path``, and re-saving
  the loaded object keeps it);
* TFLite: a flatbuffer metadata entry named ``aca_keras`` (the same place where the converter
  keeps ``min_runtime_version``); the interpreter ignores it.

Routes, as tested on Keras 3.15 / TensorFlow 2.21 / tf2onnx 1.17:

* ONNX: ``tf2onnx.convert.from_function`` on a ``tf.function`` that returns
  ``{"logits": model(images, training=False)}``: the same converter Keras's own
  ``model.export(format="onnx")`` drives, but that route names the output ``Identity:0`` and
  turns constants captured by the traced function (the ``Normalization`` mean and variance of
  every aca_keras model) into dangling *required graph inputs*, so its file cannot be run
  with ``images`` alone. Here such inputs are dropped (unused) or turned into initializers
  (used, with the captured value), the output gets its name, the batch dimension is named
  ``batch``, and ``onnx.checker.check_model(full_check=True)`` must pass.
  (``tf2onnx.convert.from_keras`` is never used: it is broken on Keras 3.)
* SavedModel: Keras's ``keras.export.ExportArchive`` with a ``serve`` endpoint (also
  ``serving_default``) whose output dict key is ``logits``/``probabilities``.
* TFLite: ``tf.lite.TFLiteConverter.from_saved_model`` on that SavedModel (float32, builtin
  ops only).

Mixed precision: a model whose layers compute in another dtype than float32 (e.g. a
``mixed_float16`` policy) is exported as a float32 *clone* (same config, float32 policy, same
weights), with a warning; verification then compares the export with the float32 clone. A
quantized dtype policy is refused.
"""

from __future__ import annotations

import contextlib
import copy
import importlib
import importlib.util
import json
import os
import shutil
import tempfile
import uuid
import warnings
import zipfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from aca_keras.errors import ExportError, RunDirError

if TYPE_CHECKING:  # pragma: no cover
    import keras

__all__ = [
    "FORMATS",
    "OUTPUTS",
    "ExportResult",
    "UntrainedModelWarning",
    "export",
    "read_metadata",
]

#: Export formats.
FORMATS: tuple[str, ...] = ("onnx", "savedmodel", "tflite")
#: What the exported graph outputs.
OUTPUTS: tuple[str, ...] = ("logits", "probabilities")

INPUT_NAME = "images"
METADATA_FORMAT = "aca_keras.export"
METADATA_VERSION = 1
#: File name of the metadata asset in a SavedModel.
METADATA_FILE = "aca_keras.json"
#: Name of the metadata entry in a TFLite flatbuffer.
TFLITE_METADATA_NAME = "aca_keras"
#: Prefix of the ONNX ``metadata_props`` keys.
ONNX_PREFIX = "aca_keras."

_FILE_SUFFIX = {"onnx": ".onnx", "tflite": ".tflite"}
_DEFAULT_NAME = {"onnx": "model.onnx", "savedmodel": "saved_model", "tflite": "model.tflite"}
#: Batch sizes of the random verification images when the batch is dynamic (two sizes, so
#: that a file that silently fixed the batch dimension fails).
_RANDOM_BATCHES = (1, 4)
_SAMPLE_CHUNK = 64
_RUN_MODEL_FILES = ("trained.keras", "model.keras")


class UntrainedModelWarning(UserWarning):
    """The exported model was never trained: a search run's ``model.keras`` (the derived
    network with fresh weights) without the ``trained.keras`` that training writes."""


@dataclass(frozen=True)
class ExportResult:
    """What :func:`export` wrote and how well it agrees with Keras.

    Attributes:
        path: the exported file (ONNX, TFLite) or directory (SavedModel).
        format: ``"onnx"``, ``"savedmodel"`` or ``"tflite"``.
        max_abs_diff: largest absolute difference between the exported model's outputs and
            Keras's over all verification images (``None`` when not verified).
        top1_agreement: fraction of verification images whose arg-max class agrees (``None``
            when not verified).
        verified: whether the file was run and compared.
        metadata: the metadata document embedded in the export.
        checked_images: number of images compared (random and ``sample_inputs``).
    """

    path: Path
    format: str
    max_abs_diff: float | None
    top1_agreement: float | None
    verified: bool
    metadata: dict[str, Any] = field(default_factory=dict)
    checked_images: int = 0


@dataclass
class _Source:
    """A resolved model source."""

    model: Any
    label: str
    default_dir: Path | None  # where a default output goes (None: no default)
    default_stem: str  # e.g. "model" -> model.onnx
    in_run_dir: bool = False
    class_names: list[str] | None = None


# ----------------------------------------------------------------------------------- API


def export(model_or_path: Any, path: str | os.PathLike | None = None, format: str = "onnx", *,
           opset: int | None = None, batch_size: int | None = None, output: str = "logits",
           verify: bool = True, tolerance: float = 1e-4,
           sample_inputs: Any = None, class_names: Sequence[str] | None = None,
           overwrite: bool = False) -> ExportResult:
    """Export a model's inference graph to ONNX, a SavedModel or TFLite, and verify it.

    Args:
        model_or_path: a Keras model (a :class:`~aca_keras.derived.DerivedNetwork` or any
            single-input, single-output image model), a ``.keras`` file, a search/training run
            directory (``trained.keras`` is preferred over ``model.keras``), or a zoo name
            (when :mod:`aca_keras.zoo` is installed).
        path: output file (``.onnx``/``.tflite``) or SavedModel directory. An existing
            directory given for a file format receives ``model.onnx``/``model.tflite``.
            Default: ``<run_dir>/export/model.onnx`` (``model.tflite``, ``saved_model/``) for a
            run directory, ``<name>.onnx`` (``.tflite``, ``<name>_saved_model/``) next to a
            ``.keras`` file, the current directory for a zoo name; required for a model object.
        format: ``"onnx"``, ``"savedmodel"`` or ``"tflite"``.
        opset: ONNX opset (ONNX only; default: tf2onnx's default).
        batch_size: ``None`` for a dynamic batch dimension, or a fixed batch size.
        output: ``"logits"`` or ``"probabilities"`` (softmax of the logits).
        verify: run the exported file and compare it with Keras (strongly recommended).
        tolerance: largest accepted absolute difference of the outputs (float32: 1e-4).
        sample_inputs: real images to verify on as well, ``(N, H, W, C)`` raw pixels 0-255.
        class_names: class names in index order, stored in the metadata (default: from the
            model or the run directory when known).
        overwrite: replace an existing export at ``path``.

    Returns:
        An :class:`ExportResult`.

    Raises:
        ValueError: an unknown format or output, or a bad argument.
        FileNotFoundError: ``model_or_path`` names no file, directory or zoo entry.
        FileExistsError: ``path`` exists and ``overwrite`` is false.
        RunDirError: a run directory without a model file.
        ExportError: the model cannot be loaded or exported, the output path is not writable,
            or the export does not verify (nothing is left at ``path`` then).
    """
    fmt = _check_format(format)
    _check_arguments(fmt, opset, batch_size, output, tolerance)
    source = _resolve_source(model_or_path)
    target = _target_path(source, path, fmt)
    _check_writable(target, fmt, overwrite)

    graph, info = _inference_graph(source.model, output)
    input_shape = tuple(int(d) for d in graph.input_shape[1:])
    samples = _check_samples(sample_inputs, input_shape)
    names = _class_names(class_names, source, info["num_classes"])
    metadata = _metadata(fmt, info, input_shape, batch_size, output, names, source)

    staging: list[Path] = []
    tmp = _sibling(target, "partial")
    staging.append(tmp)
    try:
        if fmt == "onnx":
            _write_onnx(graph, tmp, input_shape, batch_size, output, opset, metadata)
        elif fmt == "savedmodel":
            _write_savedmodel(graph, tmp, input_shape, batch_size, output, metadata)
        else:
            saved = _sibling(target.with_suffix(""), "savedmodel")
            staging.append(saved)
            _write_savedmodel(graph, saved, input_shape, batch_size, output, metadata)
            _write_tflite(saved, tmp, metadata)
            _remove(saved)

        max_diff = top1 = None
        checked = 0
        if verify:
            max_diff, top1, checked = _verify(fmt, tmp, graph, input_shape, batch_size, output,
                                              samples, tolerance, metadata)
        _place(tmp, target, overwrite)
    except BaseException:
        for p in staging:
            _remove(p)
        raise
    return ExportResult(path=target, format=fmt, max_abs_diff=max_diff, top1_agreement=top1,
                        verified=bool(verify), metadata=metadata, checked_images=checked)


def read_metadata(path: str | os.PathLike) -> dict[str, Any]:
    """The aca_keras metadata document embedded in an export written by :func:`export`.

    Args:
        path: a ``.onnx`` file, a ``.tflite`` file or a SavedModel directory.

    Raises:
        FileNotFoundError: nothing at ``path``.
        ExportError: the file holds no aca_keras metadata or is not a known export format.
    """
    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"No export at {str(p)!r}.")
    if p.is_dir():
        for candidate in (p / "assets" / METADATA_FILE, p / "assets.extra" / METADATA_FILE):
            if candidate.is_file():
                return _parse_metadata(candidate.read_text(encoding="utf-8"), p)
        raise ExportError(f"{str(p)!r} has no assets/{METADATA_FILE}; it was not written by "
                          "aca_keras.export (or its assets were removed).")
    data = p.read_bytes()
    if p.suffix.lower() == ".onnx":
        import onnx

        try:
            props = {m.key: m.value for m in onnx.load_from_string(data).metadata_props}
        except Exception as exc:  # onnx raises DecodeError and friends
            raise ExportError(f"{str(p)!r} is not a readable ONNX file: {exc}") from None
        if ONNX_PREFIX + "metadata" not in props:
            raise ExportError(f"{str(p)!r} has no aca_keras metadata (metadata_props key "
                              f"{ONNX_PREFIX}metadata).")
        return _parse_metadata(props[ONNX_PREFIX + "metadata"], p)
    if p.suffix.lower() == ".tflite":
        text = _tflite_metadata(data, p)
        if text is None:
            raise ExportError(f"{str(p)!r} has no '{TFLITE_METADATA_NAME}' metadata entry.")
        return _parse_metadata(text, p)
    raise ExportError(f"Cannot tell the format of {str(p)!r}: expected a .onnx or .tflite "
                      "file or a SavedModel directory.")


# ------------------------------------------------------------------------ argument checks


def _check_format(format: str) -> str:
    fmt = str(format).lower().replace("-", "_")
    fmt = {"saved_model": "savedmodel", "tf_saved_model": "savedmodel"}.get(fmt, fmt)
    if fmt not in FORMATS:
        raise ValueError(f"Unknown export format {format!r}; valid formats: "
                         f"{', '.join(FORMATS)}.")
    return fmt


def _check_arguments(fmt: str, opset: int | None, batch_size: int | None, output: str,
                     tolerance: float) -> None:
    if output not in OUTPUTS:
        raise ValueError(f"Unknown output {output!r}; valid outputs: {', '.join(OUTPUTS)}.")
    if batch_size is not None and (isinstance(batch_size, bool)
                                   or not isinstance(batch_size, (int, np.integer))
                                   or batch_size < 1):
        raise ValueError(f"batch_size must be None (dynamic) or a positive integer, "
                         f"got {batch_size!r}")
    if opset is not None:
        if fmt != "onnx":
            raise ValueError(f"opset applies to ONNX exports only, not to {fmt!r}.")
        if isinstance(opset, bool) or not isinstance(opset, (int, np.integer)) or opset < 7:
            raise ValueError(f"opset must be an ONNX opset number (>= 7), got {opset!r}")
    if not (isinstance(tolerance, (int, float)) and np.isfinite(tolerance) and tolerance > 0):
        raise ValueError(f"tolerance must be a positive number, got {tolerance!r}")


def _check_samples(samples: Any, input_shape: tuple[int, ...]) -> np.ndarray | None:
    if samples is None:
        return None
    x = np.asarray(samples, dtype=np.float32)
    if x.shape == input_shape:
        x = x[None]
    if x.ndim != len(input_shape) + 1 or tuple(x.shape[1:]) != input_shape or len(x) == 0:
        raise ValueError(f"sample_inputs must be images of shape (N, {', '.join(map(str, input_shape))}) "
                         f"(the model's input), got shape {tuple(x.shape)}")
    if not np.all(np.isfinite(x)):
        raise ValueError("sample_inputs contain NaN or Inf values.")
    return x


# ------------------------------------------------------------------------ model sources


def _resolve_source(obj: Any) -> _Source:
    import keras

    if isinstance(obj, keras.Model):
        return _Source(obj, f"<{type(obj).__name__} {obj.name!r}>", None, obj.name)
    if not isinstance(obj, (str, os.PathLike)):
        raise ValueError(f"Expected a Keras model, a .keras file, a run directory or a zoo "
                         f"name, got {type(obj).__name__}.")
    p = Path(obj)
    if p.is_dir():
        return _from_run_dir(p)
    if p.is_file():
        if (p.name == "model.keras" and (p.parent / "architecture.json").is_file()
                and not (p.parent / "trained.keras").is_file()):
            _warn_untrained(p.parent)  # a search run's untrained model, named directly
        return _Source(_load_keras_file(p), str(p), p.parent, p.stem)
    text = os.fspath(obj)
    if text and not (os.sep in text or "/" in text):  # may be a zoo name
        if importlib.util.find_spec("aca_keras.zoo") is None:
            raise FileNotFoundError(
                f"No file or directory {text!r}. (Zoo names are not available: aca_keras.zoo "
                "is not part of this installation.) Give a .keras file or a run directory.")
        return _from_zoo(text)
    raise FileNotFoundError(f"No file or directory {text!r}; give a .keras file, a run "
                            "directory or a zoo name.")


def _from_run_dir(run_dir: Path) -> _Source:
    model_file = next((run_dir / f for f in _RUN_MODEL_FILES if (run_dir / f).is_file()), None)
    if model_file is None:
        raise RunDirError(f"{str(run_dir)!r} holds neither trained.keras nor model.keras; give a "
                          "search or training run directory, or a .keras file.")
    if model_file.name == "model.keras":
        _warn_untrained(run_dir)
    model = _load_keras_file(model_file)
    names = None
    config_file = run_dir / "config.json"
    if config_file.is_file():
        try:
            config = json.loads(config_file.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            config = None
        if isinstance(config, dict):
            names = _names_from_config(config)
    return _Source(model, str(run_dir), run_dir / "export", "model", in_run_dir=True,
                   class_names=names)


def _warn_untrained(run_dir: Path) -> None:
    warnings.warn(
        f"{str(run_dir)!r} has no trained.keras: exporting its untrained model.keras (the "
        "derived network with freshly initialised weights; its predictions are meaningless). "
        "Train it first (aca-train RUN_DIR, or aca_keras.training.train_run), then export.",
        UntrainedModelWarning, stacklevel=4)


def _names_from_config(config: dict[str, Any]) -> list[str] | None:
    """Class names recorded in a run's config.json, or those of its known data set."""
    for holder in (config, config.get("data"), config.get("dataset")):
        if isinstance(holder, dict) and isinstance(holder.get("class_names"), list):
            return [str(c) for c in holder["class_names"]]
    dataset = config.get("dataset")
    if isinstance(dataset, str):
        from aca_keras.data import loading as data

        name = data.DATASET_ALIASES.get(dataset.lower(), dataset.lower())
        known = data.KNOWN_DATASETS.get(name)
        if known is not None and known.class_names:
            return list(known.class_names)
    return None


def _from_zoo(name: str) -> _Source:
    zoo = importlib.import_module("aca_keras.zoo")
    try:
        model = zoo.load(name)
    except LookupError as exc:  # zoo.UnknownEntryError is a KeyError
        raise FileNotFoundError(f"{name!r} is not a file or directory, nor a zoo entry: "
                                f"{exc}") from None
    return _Source(model, f"zoo:{name}", Path.cwd(), name,
                   class_names=list(getattr(model, "class_names", None) or []) or None)


def _load_keras_file(path: Path) -> Any:
    import keras

    import aca_keras.layers.ops  # noqa: F401
    import aca_keras.models.derived  # noqa: F401  (registers DerivedNetwork and its layers)

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


def _target_path(source: _Source, path: str | os.PathLike | None, fmt: str) -> Path:
    if path is None:
        if source.default_dir is None:
            raise ValueError("Exporting a model object needs an output path: pass path=... "
                             "(e.g. 'model.onnx').")
        if source.in_run_dir:
            return source.default_dir / _DEFAULT_NAME[fmt]
        name = (f"{source.default_stem}_saved_model" if fmt == "savedmodel"
                else source.default_stem + _FILE_SUFFIX[fmt])
        return source.default_dir / name
    target = Path(path)
    if fmt != "savedmodel" and target.is_dir():
        target = target / _DEFAULT_NAME[fmt]
    return target


def _check_writable(target: Path, fmt: str, overwrite: bool) -> None:
    if target.exists() or target.is_symlink():
        if not overwrite:
            raise FileExistsError(f"{str(target)!r} already exists; pass overwrite=True "
                                  "(aca-export --overwrite) to replace it.")
        if fmt == "savedmodel" and not (target / "saved_model.pb").is_file():
            raise ExportError(f"{str(target)!r} exists and is not a SavedModel directory; "
                              "refusing to replace it. Choose another output path.")
        if fmt != "savedmodel" and not target.is_file():
            raise ExportError(f"{str(target)!r} exists and is not a file; choose another "
                              "output path.")
    parent = target.parent
    try:
        parent.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".aca_keras-write-test-", dir=parent)
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise ExportError(f"Cannot write the export to {str(target)!r}: "
                          f"{exc.strerror or exc} ({str(parent)!r}); choose a writable output "
                          "path.") from None


# --------------------------------------------------------------------- the inference graph


def _inference_graph(model: Any, output: str) -> tuple[keras.Model, dict[str, Any]]:
    """The float32 ``images -> logits|probabilities`` graph to export, and facts about it."""
    import keras

    info: dict[str, Any] = {"model_class": type(model).__name__, "architecture": None,
                            "model_config": None, "original_dtype_policy": None}
    policy = _non_float32_policy(model)
    if policy is not None:
        if "int" in policy or "float8" in policy or "quant" in policy:
            raise ExportError(
                f"The model uses the quantized dtype policy {policy!r}; aca_keras exports "
                "float32 graphs. Export the float model before quantizing it.")
        warnings.warn(
            f"The model computes with dtype policy {policy!r}; exporting a float32 clone of it "
            "(same weights). Outputs differ from the original by the mixed-precision rounding.",
            stacklevel=3)
        info["original_dtype_policy"] = policy
        model = _float32_clone(model)

    if callable(getattr(model, "inference_model", None)) and hasattr(model, "architecture"):
        arch = model.architecture
        info["architecture"] = arch.to_dict() if hasattr(arch, "to_dict") else None
        try:  # the macro settings (cells, channels, mean, std, ...); the spec is stored once
            config = json.loads(json.dumps(model.get_config()))
            config.pop("architecture", None)
            info["model_config"] = config
        except (TypeError, ValueError, NotImplementedError, AttributeError):
            info["model_config"] = None
        inner = model.inference_model()
    else:
        warnings.warn(
            f"{type(model).__name__} {getattr(model, 'name', '')!r} is not an aca_keras model "
            "(no inference_model()/architecture); exporting it as a plain Keras model, "
            "without architecture metadata.", stacklevel=3)
        inner = model

    inputs = getattr(inner, "inputs", None)
    outputs = getattr(inner, "outputs", None)
    if not getattr(inner, "built", False) or not inputs:
        raise ExportError(f"{type(inner).__name__} has not been built; call it on data or "
                          "build it with an input shape before exporting.")
    if len(inputs) != 1 or (outputs is not None and len(outputs) != 1):
        raise ExportError(f"aca_keras exports models with one image input and one output; "
                          f"this model has {len(inputs)} input(s) and "
                          f"{len(outputs or [])} output(s).")
    shape = tuple(inputs[0].shape)
    if any(d is None for d in shape[1:]):
        raise ExportError(f"The model's input shape {shape} has unknown dimensions; build it "
                          "with a fixed input shape (H, W, C).")
    if str(inputs[0].dtype) != "float32":
        raise ExportError(f"The model's input dtype is {inputs[0].dtype}; aca_keras exports "
                          "float32 image inputs.")
    images = keras.Input(shape=shape[1:], name=INPUT_NAME, dtype="float32")
    y = inner(images)
    if output == "probabilities":
        y = keras.layers.Softmax(name="probabilities")(y)
    graph = keras.Model(images, y, name="aca_keras_export")
    out_shape = tuple(graph.output_shape)
    if len(out_shape) != 2 or out_shape[1] is None:
        raise ExportError(f"The model's output shape {out_shape} is not (batch, classes).")
    info["num_classes"] = int(out_shape[1])
    return graph, info


def _layers(model: Any) -> Iterator[Any]:
    flatten = getattr(model, "_flatten_layers", None)
    if flatten is not None:
        yield from flatten(include_self=True, recursive=True)
    else:  # pragma: no cover - older Keras
        yield model
        yield from getattr(model, "layers", [])


def _non_float32_policy(model: Any) -> str | None:
    for layer in _layers(model):
        policy = getattr(layer, "dtype_policy", None)
        name = getattr(policy, "name", None)
        if name is not None and name != "float32":
            return str(name)
    return None


@contextlib.contextmanager
def _global_policy(name: str) -> Iterator[None]:
    import keras

    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy(name)
    try:
        yield
    finally:
        keras.config.set_dtype_policy(previous)


def _float32_policies(config: Any) -> Any:
    """A copy of a serialized model with every dtype policy replaced by float32."""
    mixed = {"float16", "bfloat16", "mixed_float16", "mixed_bfloat16"}
    if isinstance(config, dict):
        out = {}
        for k, v in config.items():
            if k == "dtype" and isinstance(v, dict) and "Policy" in str(v.get("class_name", "")):
                v = {**v, "config": {**v.get("config", {}), "name": "float32"}}
            elif k == "dtype" and isinstance(v, str) and v in mixed:
                v = "float32"
            else:
                v = _float32_policies(v)
            out[k] = v
        return out
    if isinstance(config, list):
        return [_float32_policies(v) for v in config]
    return config


def _float32_clone(model: Any) -> Any:
    import keras

    try:
        config = _float32_policies(copy.deepcopy(keras.saving.serialize_keras_object(model)))
        with _global_policy("float32"):
            clone = keras.saving.deserialize_keras_object(config)
        clone.set_weights([np.asarray(w, dtype=np.float32) for w in model.get_weights()])
    except Exception as exc:
        raise ExportError(
            f"Could not make a float32 clone of the mixed-precision model ({exc}). Rebuild it "
            "under keras.config.set_dtype_policy('float32'), copy the weights with "
            "set_weights(model.get_weights()), and export that.") from exc
    return clone


# ------------------------------------------------------------------------------ metadata


def _class_names(given: Sequence[str] | None, source: _Source, num_classes: int
                 ) -> list[str] | None:
    if given is not None:
        names = [str(c) for c in given]
        if len(names) != num_classes:
            raise ValueError(f"{len(names)} class names given for a model with {num_classes} "
                             "classes.")
        return names
    names = list(getattr(source.model, "class_names", None) or []) or source.class_names
    if names and len(names) == num_classes:
        return [str(c) for c in names]
    return None


def _metadata(fmt: str, info: dict[str, Any], input_shape: tuple[int, ...],
              batch_size: int | None, output: str, class_names: list[str] | None,
              source: _Source) -> dict[str, Any]:
    import keras
    import tensorflow as tf

    import aca_keras

    return {
        "format": METADATA_FORMAT,
        "version": METADATA_VERSION,
        "aca_keras_version": aca_keras.__version__,
        "keras_version": keras.__version__,
        "tensorflow_version": tf.__version__,
        "export_format": fmt,
        "input_name": INPUT_NAME,
        "input_shape": list(input_shape),
        "input_dtype": "float32",
        "input_range": [0.0, 255.0],
        "input_layout": "NHWC",
        "batch_size": None if batch_size is None else int(batch_size),
        "output_name": output,
        "output": output,
        "num_classes": info["num_classes"],
        "class_names": class_names,
        "model_class": info["model_class"],
        "source": source.label,
        "dtype": "float32",
        "original_dtype_policy": info["original_dtype_policy"],
        "architecture": info["architecture"],
        "model_config": info["model_config"],
    }


def _parse_metadata(text: str, where: Path) -> dict[str, Any]:
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise ExportError(f"The aca_keras metadata of {str(where)!r} is not valid JSON: "
                          f"{exc}") from None
    if not isinstance(data, dict) or data.get("format") != METADATA_FORMAT:
        raise ExportError(f"The metadata of {str(where)!r} is not an aca_keras export "
                          "document.")
    return data


def _metadata_json(metadata: dict[str, Any]) -> str:
    return json.dumps(metadata, sort_keys=True, allow_nan=False)


# --------------------------------------------------------------------------------- writers


def _signature(input_shape: tuple[int, ...], batch_size: int | None):
    import tensorflow as tf

    return [tf.TensorSpec((batch_size, *input_shape), tf.float32, name=INPUT_NAME)]


def _serving_fn(graph: keras.Model, output: str):
    def serve(images):
        return {output: graph(images, training=False)}

    return serve


def _write_onnx(graph: keras.Model, tmp: Path, input_shape: tuple[int, ...],
                batch_size: int | None, output: str, opset: int | None,
                metadata: dict[str, Any]) -> None:
    """Convert with tf2onnx, repair captured constants and names, check, save; records the
    opset used as ``metadata["onnx_opset"]``."""
    import onnx
    import tensorflow as tf
    import tf2onnx

    _patch_tf2onnx()
    signature = _signature(input_shape, batch_size)
    fn = tf.function(_serving_fn(graph, output), input_signature=signature, autograph=False)
    concrete = fn.get_concrete_function(*signature)
    captured = {internal.name: external for external, internal in concrete.graph.captures
                if external.dtype != tf.resource}
    try:
        with _quiet_tf2onnx():
            proto, _ = tf2onnx.convert.from_function(fn, input_signature=signature, opset=opset)
    except Exception as exc:
        raise ExportError(f"tf2onnx could not convert the model to ONNX: {exc}") from exc
    _repair_onnx(proto, captured, output, batch_size)
    metadata["onnx_opset"] = next(
        (int(o.version) for o in proto.opset_import if o.domain in ("", "ai.onnx")), opset)
    props = {
        "metadata": _metadata_json(metadata),
        "version": metadata["aca_keras_version"],
        "output": output,
        "input_shape": json.dumps(metadata["input_shape"]),
    }
    if metadata["class_names"] is not None:
        props["class_names"] = json.dumps(metadata["class_names"])
    if metadata["architecture"] is not None:
        props["architecture"] = json.dumps(metadata["architecture"], sort_keys=True)
    kept = [p for p in proto.metadata_props if not p.key.startswith(ONNX_PREFIX)]
    del proto.metadata_props[:]
    proto.metadata_props.extend(kept)
    for key, value in props.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = ONNX_PREFIX + key, value
    proto.doc_string = (f"aca_keras {metadata['aca_keras_version']} export: {INPUT_NAME} "
                        f"(raw pixels 0-255, NHWC float32) -> {output}")
    try:
        onnx.checker.check_model(proto, full_check=True)
    except Exception as exc:
        raise ExportError(f"The converted ONNX model does not pass onnx.checker: {exc}") from exc
    onnx.save(proto, os.fspath(tmp))


def _repair_onnx(proto: Any, captured: dict[str, Any], output: str,
                 batch_size: int | None) -> None:
    """Captured constants -> initializers; name the batch dimension; name the output."""
    from onnx import numpy_helper

    graph = proto.graph
    initialized = {t.name for t in graph.initializer}
    used = {name for node in graph.node for name in node.input}
    keep = []
    for value in graph.input:
        if value.name == INPUT_NAME:
            keep.append(value)
        elif value.name in initialized or value.name not in used:
            continue
        elif value.name in captured:
            array = np.asarray(captured[value.name].numpy())
            graph.initializer.append(numpy_helper.from_array(array, value.name))
        else:
            raise ExportError(f"The ONNX graph has an unexpected input {value.name!r} besides "
                              f"{INPUT_NAME!r}; the model cannot be exported as one image input.")
    if len(keep) != 1:
        raise ExportError(f"The ONNX graph has no input named {INPUT_NAME!r}.")
    del graph.input[:]
    graph.input.extend(keep)
    if len(graph.output) != 1:
        raise ExportError(f"The ONNX graph has {len(graph.output)} outputs; expected one.")
    old = graph.output[0].name
    if old != output:
        for node in graph.node:
            for i, name in enumerate(node.output):
                if name == old:
                    node.output[i] = output
            for i, name in enumerate(node.input):
                if name == old:
                    node.input[i] = output
        graph.output[0].name = output
    if batch_size is None:  # tf2onnx calls the batch dimension unk__N: name it "batch"
        symbols = {v.type.tensor_type.shape.dim[0].dim_param
                   for v in (graph.input[0], graph.output[0])
                   if v.type.tensor_type.shape.dim}
        symbols.discard("")
        for value in (*graph.input, *graph.output, *graph.value_info):
            for dim in value.type.tensor_type.shape.dim:
                if dim.dim_param in symbols:
                    dim.dim_param = "batch"


def _patch_tf2onnx() -> None:
    """Keras's own numpy-2 patch of tf2onnx (what ``model.export(format="onnx")`` applies)."""
    try:
        from keras.src.export.tf2onnx_lib import patch_tf2onnx
    except ImportError:  # pragma: no cover - a Keras without it
        return
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        patch_tf2onnx()


@contextlib.contextmanager
def _quiet_tf2onnx() -> Iterator[None]:
    import logging

    logger = logging.getLogger("tf2onnx")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


def _write_savedmodel(graph: keras.Model, tmp: Path, input_shape: tuple[int, ...],
                      batch_size: int | None, output: str, metadata: dict[str, Any]) -> None:
    import keras
    import tensorflow as tf

    with tempfile.TemporaryDirectory(prefix="aca_keras-meta-") as meta_dir:
        meta_file = Path(meta_dir) / METADATA_FILE
        meta_file.write_text(json.dumps(metadata, indent=2, sort_keys=True) + "\n",
                             encoding="utf-8")
        archive = keras.export.ExportArchive()
        archive.track(graph)
        archive.add_endpoint("serve", _serving_fn(graph, output),
                             input_signature=_signature(input_shape, batch_size))
        trackable = getattr(archive, "_tf_trackable", None)
        if trackable is not None:
            # A tracked asset: copied to assets/ and revived by tf.saved_model.load.
            trackable.aca_keras_metadata = tf.saved_model.Asset(os.fspath(meta_file))
        try:
            archive.write_out(os.fspath(tmp), verbose=False)
        except Exception as exc:
            raise ExportError(f"Writing the SavedModel failed: {exc}") from exc
        if trackable is None:  # pragma: no cover - a Keras whose archive we cannot extend
            extra = tmp / "assets.extra"
            extra.mkdir(exist_ok=True)
            shutil.copyfile(meta_file, extra / METADATA_FILE)


def _write_tflite(saved_model: Path, tmp: Path, metadata: dict[str, Any]) -> None:
    import tensorflow as tf

    try:
        converter = tf.lite.TFLiteConverter.from_saved_model(os.fspath(saved_model))
        flatbuffer = converter.convert()
    except Exception as exc:
        raise ExportError(f"The TFLite converter failed: {exc}") from exc
    tmp.write_bytes(_tflite_with_metadata(flatbuffer, _metadata_json(metadata).encode()))


def _tflite_with_metadata(flatbuffer: bytes, payload: bytes) -> bytes:
    """The flatbuffer with a metadata entry ``aca_keras`` holding ``payload``."""
    from tensorflow.lite.python import schema_py_generated as schema
    from tensorflow.lite.tools import flatbuffer_utils

    model = flatbuffer_utils.read_model_from_bytearray(bytearray(flatbuffer))
    model.metadata = [m for m in (model.metadata or [])
                      if _decode(m.name) != TFLITE_METADATA_NAME]
    buffer = schema.BufferT()
    buffer.data = np.frombuffer(payload, dtype=np.uint8)
    model.buffers.append(buffer)
    entry = schema.MetadataT()
    entry.name = TFLITE_METADATA_NAME
    entry.buffer = len(model.buffers) - 1
    model.metadata.append(entry)
    return bytes(flatbuffer_utils.convert_object_to_bytearray(model))


def _decode(name: Any) -> str:
    return name.decode() if isinstance(name, bytes) else str(name)


def _tflite_metadata(data: bytes, where: Path) -> str | None:
    from tensorflow.lite.python import schema_py_generated as schema

    try:
        model = schema.Model.GetRootAs(data, 0)
        for i in range(model.MetadataLength()):
            entry = model.Metadata(i)
            if _decode(entry.Name()) == TFLITE_METADATA_NAME:
                return model.Buffers(entry.Buffer()).DataAsNumpy().tobytes().decode("utf-8")
    except Exception as exc:  # a corrupt flatbuffer raises anything
        raise ExportError(f"{str(where)!r} is not a readable TFLite file: {exc}") from None
    return None


# ---------------------------------------------------------------------------- verification


def _verify(fmt: str, tmp: Path, graph: keras.Model, input_shape: tuple[int, ...],
            batch_size: int | None, output: str, samples: np.ndarray | None,
            tolerance: float, metadata: dict[str, Any]) -> tuple[float, float, int]:
    """Run the export and Keras on the same images; raise ExportError above ``tolerance``."""
    rng = np.random.default_rng(0)
    sizes = _RANDOM_BATCHES if batch_size is None else (batch_size,)
    batches = [rng.uniform(0.0, 255.0, (n, *input_shape)).astype(np.float32) for n in sizes]
    counts = list(sizes)  # images of each batch that are compared (a fixed batch is padded)
    if samples is not None:
        chunk = batch_size or _SAMPLE_CHUNK
        for start in range(0, len(samples), chunk):
            part = samples[start:start + chunk]
            counts.append(len(part))
            if batch_size is not None and len(part) < batch_size:
                pad = np.zeros((batch_size - len(part), *input_shape), np.float32)
                part = np.concatenate([part, pad])
            batches.append(part)
    try:
        got = _run_exported(fmt, tmp, batches, output)
        stored = read_metadata(tmp)
    except ExportError:
        raise
    except Exception as exc:
        raise ExportError(f"The exported {fmt} model could not be run: {exc}") from exc
    if stored != json.loads(_metadata_json(metadata)):
        raise ExportError("The metadata read back from the export differs from what was "
                          "written.")
    expected = [np.asarray(graph(b, training=False)) for b in batches]
    diffs, agree, total = [], 0, 0
    for e, g, n in zip(expected, got, counts):
        g = np.asarray(g)
        if g.shape != e.shape:
            raise ExportError(f"The exported {fmt} model returned shape {g.shape}, Keras "
                              f"{e.shape}.")
        e, g = e[:n], g[:n]
        diffs.append(float(np.max(np.abs(e - g))) if np.all(np.isfinite(g)) else float("inf"))
        agree += int(np.sum(np.argmax(e, axis=-1) == np.argmax(g, axis=-1)))
        total += n
    max_diff = max(diffs)
    top1 = agree / total
    if not max_diff <= tolerance:
        raise ExportError(
            f"The exported {fmt} model does not match Keras: max abs difference {max_diff:.3g} "
            f"> tolerance {tolerance:g} (top-1 agreement {top1:.1%} on {total} images); "
            "nothing was written.")
    return max_diff, top1, total


def _run_exported(fmt: str, path: Path, batches: list[np.ndarray], output: str
                  ) -> list[np.ndarray]:
    """Outputs of the exported file on each batch, run in its own runtime."""
    if fmt == "onnx":
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = 1
        session = ort.InferenceSession(os.fspath(path), options,
                                       providers=["CPUExecutionProvider"])
        if [i.name for i in session.get_inputs()] != [INPUT_NAME]:
            raise ExportError(f"The ONNX model's inputs are "
                              f"{[i.name for i in session.get_inputs()]}, not [{INPUT_NAME!r}].")
        return [session.run([output], {INPUT_NAME: b})[0] for b in batches]
    if fmt == "savedmodel":
        import tensorflow as tf

        loaded = tf.saved_model.load(os.fspath(path))
        serve = loaded.signatures["serving_default"]
        return [serve(**{INPUT_NAME: tf.constant(b)})[output].numpy() for b in batches]
    import tensorflow as tf

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tf.lite.Interpreter's deprecation notice
        interpreter = tf.lite.Interpreter(model_path=os.fspath(path), num_threads=1)
    runner = interpreter.get_signature_runner("serving_default")
    return [runner(**{INPUT_NAME: b})[output] for b in batches]


# ------------------------------------------------------------------------- file placement


def _sibling(target: Path, kind: str) -> Path:
    """A hidden temporary path beside ``target`` that keeps its suffix."""
    return target.parent / f".{target.stem}.{kind}-{uuid.uuid4().hex[:8]}{target.suffix}"


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


def _place(tmp: Path, target: Path, overwrite: bool) -> None:
    """Move the verified export into place (replacing an old one only with ``overwrite``)."""
    if not (target.exists() or target.is_symlink()):
        os.replace(tmp, target)
        return
    if not overwrite:  # appeared while exporting
        raise FileExistsError(f"{str(target)!r} already exists; pass overwrite=True.")
    if tmp.is_dir() or target.is_dir():
        old = _sibling(target, "old")
        os.replace(target, old)
        try:
            os.replace(tmp, target)
        except OSError:
            os.replace(old, target)
            raise
        _remove(old)
    else:
        os.replace(tmp, target)

