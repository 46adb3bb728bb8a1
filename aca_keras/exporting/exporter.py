"""Export a derived network for deployment: ONNX, TensorFlow SavedModel or TFLite.

:func:`export` writes the *inference graph* only (:mod:`aca_keras.exporting.graph`: for a
:class:`~aca_keras.models.derived.DerivedNetwork` its ``inference_model()``, so no auxiliary
head and no drop path; BatchNorm in inference mode), with one input named ``images`` (raw
pixels 0-255, float32, NHWC: the model normalises itself) and one output named ``logits`` (or
``probabilities``, a softmax, with ``output="probabilities"``). The batch dimension is dynamic
unless ``batch_size`` fixes it.

Every export is written to a temporary path in the target directory
(:mod:`~aca_keras.exporting.placement`), run in the runtime it is meant for and compared with
Keras (:mod:`~aca_keras.exporting.verify`), and only then renamed into place; an export that
fails verification raises :class:`~aca_keras.errors.ExportError` and leaves nothing behind.

The formats are the entries of :mod:`~aca_keras.exporting.formats` (``FORMATS`` is their
names now, :func:`~aca_keras.exporting.formats.list_formats`); each names its writer and its
runner. The built-in routes, one module each, as tested on Keras 3.15 / TensorFlow 2.21 /
tf2onnx 1.17: :mod:`~aca_keras.exporting.onnx` (tf2onnx, repaired and checked),
:mod:`~aca_keras.exporting.savedmodel` (``tf.saved_model.save`` of a ``tf.Module``) and
:mod:`~aca_keras.exporting.tflite` (converted from that SavedModel). The metadata document
they embed (:func:`read_metadata` reads it back) is described in
:mod:`~aca_keras.exporting.metadata`.

Sources (:mod:`~aca_keras.exporting.sources`): a Keras model, a ``.keras`` file or a run
directory. Zoo names are resolved by the ``aca-export`` command, not here (exporting sits below
the zoo): from Python, ``export(aca_keras.zoo.load(name), path)``.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from aca_keras.exporting.formats import ExportFormat, ExportRequest, get_format, list_formats
from aca_keras.exporting.graph import inference_graph
from aca_keras.exporting.metadata import build_metadata
from aca_keras.exporting.placement import check_writable, place, remove, sibling, target_path
from aca_keras.exporting.sources import Source, resolve_source
from aca_keras.exporting.verify import verify_export
from aca_keras.space.validation import is_int

__all__ = ["OUTPUTS", "ExportResult", "export"]  # and FORMATS (module __getattr__)

#: What the exported graph outputs.
OUTPUTS: tuple[str, ...] = ("logits", "probabilities")


def __getattr__(name: str) -> Any:
    if name == "FORMATS":  # the registered formats now (aca_keras.exporting.formats)
        return tuple(list_formats())
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


@dataclass(frozen=True)
class ExportResult:
    """What :func:`export` wrote and how well it agrees with Keras.

    Attributes:
        path: the exported file (ONNX, TFLite) or directory (SavedModel).
        format: the format's name (``"onnx"``, ``"savedmodel"``, ``"tflite"``, or another
            registered one).
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


def export(model_or_path: Any, path: str | os.PathLike | None = None, format: str = "onnx", *,
           opset: int | None = None, batch_size: int | None = None, output: str = "logits",
           verify: bool = True, tolerance: float = 1e-4,
           sample_inputs: Any = None, class_names: Sequence[str] | None = None,
           overwrite: bool = False) -> ExportResult:
    """Export a model's inference graph to ONNX, a SavedModel, TFLite or another registered
    format (:mod:`~aca_keras.exporting.formats`), and verify it.

    Args:
        model_or_path: a Keras model (a :class:`~aca_keras.models.derived.DerivedNetwork`,
            e.g. from :func:`aca_keras.zoo.load`, or any single-input, single-output image
            model), a ``.keras`` file or a search/training run directory (``trained.keras`` is
            preferred over ``model.keras``). A zoo name is not accepted here: load the entry
            first, ``export(aca_keras.zoo.load(name), path)`` (``aca-export NAME`` does that).
        path: output file (``.onnx``/``.tflite``) or SavedModel directory. An existing
            directory given for a file format receives ``model.onnx``/``model.tflite`` (the
            format's ``default_name``). Default: ``<run_dir>/export/model.onnx``
            (``model.tflite``, ``saved_model/``) for a run directory, ``<name>.onnx``
            (``.tflite``, ``<name>_saved_model/``: the format's ``suffix``) next to a
            ``.keras`` file; required for a model object.
        format: a registered format: ``"onnx"``, ``"savedmodel"`` (also ``"saved_model"``),
            ``"tflite"`` built in (:func:`~aca_keras.exporting.formats.list_formats`).
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
        FileNotFoundError: ``model_or_path`` names no file or directory (a bare name that may
            be a zoo entry gets a message saying to load it with ``aca_keras.zoo.load``).
        FileExistsError: ``path`` exists and ``overwrite`` is false.
        RunDirError: a run directory without a model file.
        ExportError: the model cannot be loaded or exported, the output path is not writable,
            or the export does not verify (nothing is left at ``path`` then).
    """
    spec = get_format(format)  # a ValueError listing the valid formats when unknown
    fmt = spec.name
    check_arguments(fmt, opset, batch_size, output, tolerance)
    source = resolve_source(model_or_path)
    target = target_path(source, path, fmt)
    check_writable(target, fmt, overwrite)

    graph, info = inference_graph(source.model, output)
    input_shape = tuple(int(d) for d in graph.input_shape[1:])
    samples = check_samples(sample_inputs, input_shape)
    names = _class_names(class_names, source, info["num_classes"])
    metadata = build_metadata(fmt, info, input_shape, batch_size, output, names,
                              source.label)

    tmp = sibling(target, "partial")
    staging: list[Path] = [tmp]
    scratch: list[Path] = []

    def scratch_path(kind: str) -> Path:
        scratch.append(sibling(target.with_suffix(""), kind))
        return scratch[-1]

    options = {"opset": opset} if opset is not None else {}
    request = ExportRequest(input_shape=input_shape, batch_size=batch_size, output=output,
                            metadata=metadata, options=options, scratch=scratch_path)
    try:
        try:
            spec.writer()(graph, tmp, request)
        finally:
            for p in scratch:
                remove(p)

        max_diff = top1 = None
        checked = 0
        if verify:
            max_diff, top1, checked = verify_export(fmt, tmp, graph, input_shape, batch_size,
                                                     output, samples, tolerance, metadata)
        place(tmp, target, overwrite)
    except BaseException:
        for p in staging + scratch:
            remove(p)
        raise
    return ExportResult(path=target, format=fmt, max_abs_diff=max_diff, top1_agreement=top1,
                        verified=bool(verify), metadata=metadata, checked_images=checked)


# ------------------------------------------------------------------------ argument checks


def check_format(format: str | ExportFormat) -> str:
    """The registered name of ``format`` (any case, ``-`` for ``_``, or an alias such as
    ``"saved_model"``); a ``ValueError`` (:class:`~aca_keras.exporting.formats.UnknownFormatError`)
    listing the valid formats otherwise."""
    return get_format(format).name


def check_arguments(fmt: str, opset: int | None, batch_size: int | None, output: str,
                     tolerance: float) -> None:
    if output not in OUTPUTS:
        raise ValueError(f"Unknown output {output!r}; valid outputs: {', '.join(OUTPUTS)}.")
    if batch_size is not None and (not is_int(batch_size) or batch_size < 1):
        raise ValueError(f"batch_size must be None (dynamic) or a positive integer, "
                         f"got {batch_size!r}")
    if opset is not None:
        if "opset" not in get_format(fmt).options:
            takers = [get_format(name).label for name in list_formats()
                      if "opset" in get_format(name).options]
            raise ValueError(f"opset applies to {' / '.join(takers)} exports only, not to "
                             f"{fmt!r}.")
        if not is_int(opset) or opset < 7:
            raise ValueError(f"opset must be an ONNX opset number (>= 7), got {opset!r}")
    if not (isinstance(tolerance, (int, float)) and np.isfinite(tolerance) and tolerance > 0):
        raise ValueError(f"tolerance must be a positive number, got {tolerance!r}")


def check_samples(samples: Any, input_shape: tuple[int, ...]) -> np.ndarray | None:
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


def _class_names(given: Sequence[str] | None, source: Source, num_classes: int
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
