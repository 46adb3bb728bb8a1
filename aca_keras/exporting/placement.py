"""Where an export goes and how it gets there: the default output path (from the format's
``suffix`` and ``default_name`` in :mod:`~aca_keras.exporting.formats`), the checks that it may
be written, hidden staging paths beside it, and the rename into place that replaces an old
export only after the new one has verified."""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import uuid
from pathlib import Path

from aca_keras.errors import ExportError
from aca_keras.exporting.formats import get_format
from aca_keras.exporting.sources import Source


def target_path(source: Source, path: str | os.PathLike | None, fmt: str) -> Path:
    """The export's path: ``path`` (a directory given for a file format receives the
    format's default name, ``model.onnx``/``model.tflite``) or the source's default: the
    default name in a run directory's ``export/`` folder, ``<stem><suffix>`` next to a
    ``.keras`` file (:class:`~aca_keras.exporting.formats.ExportFormat`)."""
    spec = get_format(fmt)
    if path is None:
        if source.default_dir is None:
            raise ValueError("Exporting a model object needs an output path: pass path=... "
                             "(e.g. 'model.onnx').")
        if source.in_run_dir:
            return source.default_dir / spec.default_name
        return source.default_dir / (source.default_stem + spec.suffix)
    target = Path(path)
    if not spec.directory and target.is_dir():
        target = target / spec.default_name
    return target


def check_writable(target: Path, fmt: str, overwrite: bool) -> None:
    """Refuse an existing target without ``overwrite`` (or one of another kind), and an
    unwritable folder; creates the target's folder."""
    spec = get_format(fmt)
    if target.exists() or target.is_symlink():
        if not overwrite:
            raise FileExistsError(f"{str(target)!r} already exists; pass overwrite=True "
                                  "(aca-export --overwrite) to replace it.")
        if spec.directory and not spec.matches(target):
            raise ExportError(f"{str(target)!r} exists and is not a {spec.label} directory; "
                              "refusing to replace it. Choose another output path.")
        if not spec.directory and not target.is_file():
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


def sibling(target: Path, kind: str) -> Path:
    """A hidden temporary path beside ``target`` that keeps its suffix."""
    return target.parent / f".{target.stem}.{kind}-{uuid.uuid4().hex[:8]}{target.suffix}"


def remove(path: Path) -> None:
    """Delete a file or directory tree; nothing there is fine."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


def place(tmp: Path, target: Path, overwrite: bool) -> None:
    """Move the verified export into place (replacing an old one only with ``overwrite``)."""
    if not (target.exists() or target.is_symlink()):
        os.replace(tmp, target)
        return
    if not overwrite:  # appeared while exporting
        raise FileExistsError(f"{str(target)!r} already exists; pass overwrite=True.")
    if tmp.is_dir() or target.is_dir():
        old = sibling(target, "old")
        os.replace(target, old)
        try:
            os.replace(tmp, target)
        except OSError:
            os.replace(old, target)
            raise
        remove(old)
    else:
        os.replace(tmp, target)
