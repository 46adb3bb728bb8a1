"""The export formats: one registry of :class:`ExportFormat` entries, each holding all that
exporting, placing, verifying, reading back, the commands and the zoo need to know about a
format (its writer, its runner, its metadata reader, its suffix, its description).

Built in: ``onnx``, ``savedmodel`` (aliases ``saved_model``, ``tf_saved_model``) and
``tflite``. A new format is one module plus its test: the module defines its three functions
and registers them::

    from aca_keras.exporting.formats import ExportRequest, register_format

    def write(graph, path, request: ExportRequest) -> None: ...   # the graph -> a file at path
    def run(path, batches, output) -> list: ...                   # the file's outputs, per batch
    def read(path) -> str: ...                                    # the metadata JSON it embeds

    register_format("myformat", suffix=".my", label="MyFormat",
                    description="MyFormat file (float32)", write=write, run=run,
                    read_metadata=read)

From then on :func:`aca_keras.exporting.export` writes it, verifies it with ``run`` and places
it, :func:`aca_keras.exporting.read_metadata` reads it, ``aca-export --format`` and
``aca-zoo publish --export`` / ``aca-zoo export --format`` offer it (their help lists
:func:`list_formats`), and :func:`aca_keras.zoo.publish` can export it as an artifact
(``model<suffix>``; a directory format is stored as a zip archive).

This module imports no TensorFlow (the commands list the formats in ``--help`` without it): the
built-in formats name their functions as ``"module:function"`` strings, imported when first
used (:meth:`ExportFormat.writer`, :meth:`~ExportFormat.runner`,
:meth:`~ExportFormat.metadata_reader`); a format registered from its own module passes the
functions themselves.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aca_keras.errors import UnknownNameError
from aca_keras.registry import Registry

__all__ = [
    "ExportFormat",
    "ExportRequest",
    "UnknownFormatError",
    "format_for_path",
    "get_format",
    "list_formats",
    "register_format",
    "unregister_format",
]

#: A format's function, or its ``"module:function"`` name (imported when first used).
FunctionRef = Callable[..., Any] | str


class UnknownFormatError(UnknownNameError):
    """An export format name that is not registered; the message lists the registered ones."""


@dataclass(frozen=True)
class ExportRequest:
    """What a format's writer gets besides the graph and the path to write.

    Attributes:
        input_shape: the graph's image shape ``(H, W, C)``.
        batch_size: a fixed batch size, or ``None`` for a dynamic batch dimension.
        output: the output's name, ``"logits"`` or ``"probabilities"``.
        metadata: the metadata document to embed (:mod:`~aca_keras.exporting.metadata`); a
            writer may add what it alone knows (ONNX: ``onnx_opset``) before embedding it.
        options: the format's own options given to ``export()`` (ONNX: ``{"opset": 13}``),
            those named in :attr:`ExportFormat.options` only.
        scratch: ``scratch(kind)`` returns a fresh hidden path beside the target for an
            intermediate file or directory (TFLite: the SavedModel it converts); every such
            path is removed once the writer returns or fails.
    """

    input_shape: tuple[int, ...]
    batch_size: int | None
    output: str
    metadata: dict[str, Any]
    options: Mapping[str, Any] = field(default_factory=dict)
    scratch: Callable[[str], Path] | None = None


@dataclass(frozen=True)
class ExportFormat:
    """One export format.

    Attributes:
        name: the registry name (``"onnx"``), as ``export(format=...)`` and the commands
            take it; also the ``kind`` of a zoo artifact of this format.
        suffix: what is appended to a model's stem for its default path: ``".onnx"``; a
            directory format's ends the directory name (``"_saved_model"``).
        label: the format's name in messages (``"ONNX"``).
        description: a short phrase for ``--help`` and zoo artifacts, no parentheses
            (``"ONNX inference graph, run with ONNX Runtime"``).
        write: ``write(graph, path, request)`` writes the float32 inference graph (a Keras
            model ``images -> output``) to ``path`` (:class:`ExportRequest`); raises
            :class:`~aca_keras.errors.ExportError` when it cannot.
        run: ``run(path, batches, output)`` runs the written file in the runtime it is meant
            for and returns its ``output`` on each batch (numpy arrays): the verification.
        read_metadata: ``read_metadata(path)`` returns the metadata document embedded by
            ``write`` as JSON text; raises ``ExportError`` when there is none.
        directory: whether an export is a directory (a SavedModel) rather than a file.
        default_name: its name in a run directory's ``export/`` folder, or inside a directory
            given as the output path of a file format (default ``"model" + suffix``).
        marker: a directory format's file that every export of it holds
            (``saved_model.pb``): an existing directory without it is never replaced.
        aliases: other accepted spellings of ``name`` (``"saved_model"``).
        options: the ``export()`` arguments that apply to this format only (``"opset"``).
    """

    name: str
    suffix: str
    label: str
    description: str
    write: FunctionRef
    run: FunctionRef
    read_metadata: FunctionRef
    directory: bool = False
    default_name: str = ""
    marker: str = ""
    aliases: tuple[str, ...] = ()
    options: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if not self.default_name:
            object.__setattr__(self, "default_name", "model" + self.suffix)
        object.__setattr__(self, "aliases", tuple(_normal(a) for a in self.aliases))
        object.__setattr__(self, "options", tuple(self.options))
        if not self.suffix or any(sep in self.suffix for sep in ("/", "\\")):
            raise ValueError(f"The export format {self.name!r} needs a suffix without path "
                             f"separators (e.g. '.onnx'), got {self.suffix!r}.")
        if not self.directory and not self.suffix.startswith("."):
            raise ValueError(f"A file format's suffix starts with '.', got {self.suffix!r} "
                             f"for {self.name!r}.")
        for what in ("write", "run", "read_metadata"):
            ref = getattr(self, what)
            if not (callable(ref) or (isinstance(ref, str) and ":" in ref)):
                raise ValueError(f"{what} of the export format {self.name!r} must be a "
                                 f"function or a 'module:function' name, got {ref!r}.")

    def writer(self) -> Callable[..., None]:
        """The ``write`` function (imported on first use when given by name)."""
        return _resolve(self.write)

    def runner(self) -> Callable[..., list]:
        """The ``run`` function (imported on first use when given by name)."""
        return _resolve(self.run)

    def metadata_reader(self) -> Callable[[Path], str]:
        """The ``read_metadata`` function (imported on first use when given by name)."""
        return _resolve(self.read_metadata)

    def matches(self, path: Path) -> bool:
        """Whether ``path`` (existing) looks like an export of this format: a directory with
        the marker for a directory format, a file with the suffix otherwise."""
        if self.directory:
            return path.is_dir() and (not self.marker or (path / self.marker).is_file())
        return path.is_file() and path.name.lower().endswith(self.suffix.lower())


_REGISTRY: Registry[ExportFormat] = Registry(
    "export format", UnknownFormatError,
    hint="Register one with aca_keras.exporting.formats.register_format.")
#: alias -> registered name
_ALIASES: dict[str, str] = {}


def _normal(name: Any) -> str:
    return str(name).strip().lower().replace("-", "_")


def _resolve(ref: FunctionRef) -> Callable[..., Any]:
    if callable(ref):
        return ref
    module, _, attribute = ref.partition(":")
    return getattr(importlib.import_module(module), attribute)


def register_format(name: str | ExportFormat, *, overwrite: bool = False,
                    **fields: Any) -> ExportFormat:
    """Register an export format: ``register_format(name, suffix=..., label=...,
    description=..., write=..., run=..., read_metadata=..., ...)`` (the fields of
    :class:`ExportFormat`), or a ready ``ExportFormat``. Returns the entry.

    Raises:
        ValueError: the name (or an alias) is taken and ``overwrite`` is false, or a field is
            invalid.
    """
    if isinstance(name, ExportFormat) and fields:
        raise TypeError("register_format takes an ExportFormat or its fields, not both.")
    spec = name if isinstance(name, ExportFormat) else ExportFormat(name=name, **fields)
    if _normal(spec.name) != spec.name:
        raise ValueError(f"An export format name is lower-case with '_' (no '-'), got "
                         f"{spec.name!r}.")
    for alias in spec.aliases:
        owner = _ALIASES.get(alias, alias if alias in _REGISTRY else None)
        if owner is not None and owner != spec.name and not overwrite:
            raise ValueError(f"The export format name {alias!r} is already taken by "
                             f"{owner!r}; pass overwrite=True to replace it.")
    if spec.name in _ALIASES and not overwrite:
        raise ValueError(f"{spec.name!r} is an alias of the export format "
                         f"{_ALIASES[spec.name]!r}; pass overwrite=True to replace it.")
    if spec.name in _REGISTRY and overwrite:
        _drop_aliases(spec.name)
    _REGISTRY.register(spec.name, spec, overwrite=overwrite)
    _ALIASES.pop(spec.name, None)
    for alias in spec.aliases:
        _ALIASES[alias] = spec.name
    return spec


def _drop_aliases(name: str) -> None:
    for alias in [a for a, owner in _ALIASES.items() if owner == name]:
        del _ALIASES[alias]


def unregister_format(name: str) -> ExportFormat:
    """Remove a registered format (and its aliases); returns its entry."""
    spec = get_format(name)
    _drop_aliases(spec.name)
    return _REGISTRY.unregister(spec.name)


def list_formats() -> list[str]:
    """The registered format names, in registration order (the built-ins first)."""
    return _REGISTRY.names()


def get_format(name: str | ExportFormat) -> ExportFormat:
    """The format called ``name`` (any case, ``-`` or ``_``, or an alias such as
    ``"saved_model"``).

    Raises:
        UnknownFormatError: (a ``ValueError`` and ``KeyError``) no such format; the message
            lists the registered ones.
    """
    if isinstance(name, ExportFormat):
        return name
    key = _normal(name)
    key = _ALIASES.get(key, key)
    if key not in _REGISTRY:
        raise UnknownFormatError(f"Unknown export format {name!r}; valid formats: "
                                 f"{', '.join(list_formats())}. {_REGISTRY.hint}")
    return _REGISTRY.get(key)


def format_for_path(path: str | Path) -> ExportFormat | None:
    """The format of an existing export at ``path`` (:meth:`ExportFormat.matches`, the first
    registered that matches), or ``None``; a directory no directory format's marker names
    is taken for the only directory format, when there is one."""
    p = Path(path)
    specs = [get_format(n) for n in list_formats()]
    found = next((s for s in specs if s.matches(p)), None)
    if found is None and p.is_dir():
        folders = [s for s in specs if s.directory]
        found = folders[0] if len(folders) == 1 else None
    return found


# ------------------------------------------------------------------------- the built-ins

register_format(
    "onnx", suffix=".onnx", label="ONNX",
    description="ONNX inference graph, run with ONNX Runtime",
    write="aca_keras.exporting.onnx:export_onnx",
    run="aca_keras.exporting.onnx:run_onnx",
    read_metadata="aca_keras.exporting.metadata:onnx_metadata_text",
    options=("opset",))
register_format(
    "savedmodel", suffix="_saved_model", label="SavedModel",
    description="TensorFlow SavedModel directory, endpoint serve",
    write="aca_keras.exporting.savedmodel:export_savedmodel",
    run="aca_keras.exporting.savedmodel:run_savedmodel",
    read_metadata="aca_keras.exporting.metadata:savedmodel_metadata_text",
    directory=True, default_name="saved_model", marker="saved_model.pb",
    aliases=("saved_model", "tf_saved_model"))
register_format(
    "tflite", suffix=".tflite", label="TFLite",
    description="TFLite flatbuffer, float32 builtin ops",
    write="aca_keras.exporting.tflite:export_tflite",
    run="aca_keras.exporting.tflite:run_tflite",
    read_metadata="aca_keras.exporting.metadata:tflite_metadata_text")
