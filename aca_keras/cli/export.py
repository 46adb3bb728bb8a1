"""``aca-export``: export a derived model for deployment (ONNX, SavedModel, TFLite, or another
format registered in :mod:`aca_keras.exporting.formats`).

Examples::

    aca-export runs/search-cifar10-20250101-120000 --format onnx
    aca-export model.keras --format tflite --output deploy/model.tflite --batch-size 1
    aca-export RUN_DIR --format savedmodel --probabilities --samples test_images.npz

A thin front end over :func:`aca_keras.exporting.export`; errors print one line and exit 1.
A zoo name is resolved here (:func:`resolve_source`: ``aca_keras.zoo.load``), not by
:func:`~aca_keras.exporting.export`, which sits below the zoo and takes the loaded model.
"""

from __future__ import annotations

import argparse
import os
import sys
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from aca_keras import zoo
from aca_keras.cli import cli_message, quiet_startup
from aca_keras.errors import AcaError

# the format registry imports no TensorFlow (which the CLI imports only after quiet_startup(),
# and not at all for --help): the flags list the formats registered when the parser is built
from aca_keras.exporting.formats import get_format, list_formats


def formats_help() -> str:
    """``onnx: ONNX inference graph, ...; savedmodel: ...``: the registered formats with their
    descriptions, for ``--help``."""
    return "; ".join(f"{name}: {get_format(name).description}" for name in list_formats())


def _batch_size(text: str) -> int | None:
    if text.lower() in ("dynamic", "none"):
        return None
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer or 'dynamic', got {text!r}")
    return value


def _parser() -> argparse.ArgumentParser:
    labels = [get_format(name).label for name in list_formats()]
    parser = argparse.ArgumentParser(
        prog="aca-export",
        description="Export a derived aca_keras model (run directory, .keras file or zoo name) "
                    f"to {', '.join(labels[:-1]) + ' or ' if len(labels) > 1 else ''}"
                    f"{labels[-1]}, and verify it against Keras.")
    parser.add_argument("source", metavar="RUN_DIR_OR_MODEL",
                        help="a search/training run directory, a .keras file or a zoo name")
    parser.add_argument("--format", default="onnx", metavar="|".join(list_formats()),
                        help=f"export format (default: onnx). {formats_help()}")
    defaults = ", ".join(get_format(name).default_name + ("/" if get_format(name).directory
                                                          else "")
                         for name in list_formats())
    parser.add_argument("--output", "-o", metavar="PATH",
                        help=f"output file or directory (default: RUN_DIR/export/ {defaults}; "
                             "next to a .keras file)")
    takers = [get_format(name).label for name in list_formats()
              if "opset" in get_format(name).options]
    parser.add_argument("--opset", type=int, metavar="N",
                        help=f"ONNX opset ({' / '.join(takers)} only)")
    parser.add_argument("--batch-size", type=_batch_size, default=None, metavar="N|dynamic",
                        help="fixed batch size, or 'dynamic' (default)")
    parser.add_argument("--probabilities", action="store_true",
                        help="output softmax probabilities instead of logits")
    parser.add_argument("--no-verify", action="store_true",
                        help="do not run and compare the exported model (not recommended)")
    parser.add_argument("--tolerance", type=float, default=1e-4,
                        help="largest accepted absolute difference from Keras (default 1e-4)")
    parser.add_argument("--samples", metavar="FILE",
                        help="real images to verify on as well: .npy, or .npz with an 'x' or "
                             "'images' array (N, H, W, C), raw pixels 0-255")
    parser.add_argument("--class-names", metavar="NAMES",
                        help="class names stored in the export: comma-separated, or a text "
                             "file with one name per line")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing export")
    return parser


def _load_samples(path: str):
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"No samples file {path!r}.")
    try:
        data = np.load(p, allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise ValueError(f"Cannot read samples from {path!r}: {exc}") from None
    if isinstance(data, np.ndarray):
        return data
    for key in ("x", "images", "x_test"):
        if key in data.files:
            return data[key]
    raise ValueError(f"{path!r} has no 'x' or 'images' array (it has: {', '.join(data.files)}).")


def _class_names(text: str | None) -> list[str] | None:
    if text is None:
        return None
    p = Path(text)
    if p.is_file():
        return [line.strip() for line in p.read_text(encoding="utf-8").splitlines()
                if line.strip()]
    return [name.strip() for name in text.split(",")]


def is_zoo_name(text: str) -> bool:
    """Whether ``text`` may name a zoo entry: no file or directory of that name exists and it
    is a bare name (no path separator)."""
    return bool(text) and not Path(text).exists() and not (os.sep in text or "/" in text)


def zoo_export_path(name: str, fmt: str, output: str | os.PathLike | None) -> Path:
    """``output``, or ``<name><suffix>`` in the current directory: ``<name>.onnx``
    (``.tflite``, ``<name>_saved_model``; the format's ``suffix``)."""
    return Path(output) if output else Path.cwd() / f"{name}{get_format(fmt).suffix}"


def resolve_source(text: str, fmt: str, output: str | None,
                   zoo_dir: Sequence[str] | None = None) -> tuple[Any, str | Path | None]:
    """What to give :func:`aca_keras.exporting.export` for the command's source argument:
    ``(source, output)``. A path stays a path (``export`` resolves files and run
    directories); a zoo name becomes the entry's model (``aca_keras.zoo.load``, class names
    included) with the default output ``NAME.onnx`` in the current directory.

    Args:
        text: the source argument.
        fmt: the export format, already checked (``aca_keras.exporting.exporter.check_format``).
        output: the ``--output`` argument.
        zoo_dir: private zoo directories searched first.

    Raises:
        FileNotFoundError: ``text`` is neither a file, a directory nor a zoo entry.
    """
    if not is_zoo_name(text):
        return text, output
    try:
        model = zoo.load(text, zoo_dir=zoo_dir)
    except LookupError as exc:  # zoo.UnknownEntryError is a KeyError
        raise FileNotFoundError(f"{text!r} is not a file or directory, nor a zoo entry: "
                                f"{exc}") from None
    return model, zoo_export_path(text, fmt, output)


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    if isinstance(exc, (AcaError, OSError, ValueError)):
        return text or type(exc).__name__
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``aca-export``; returns the exit code (0 on success, 1 on errors, 2 on bad usage)."""
    parser = _parser()
    args = parser.parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    quiet_startup()
    try:
        # imported after quiet_startup(): exporting imports TensorFlow, whose start-up lines
        # are silenced only then
        from aca_keras.exporting.exporter import check_format, export

        fmt = check_format(args.format)
        samples = _load_samples(args.samples) if args.samples else None
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", UserWarning)
            source, output = resolve_source(args.source, fmt, args.output)
            result = export(source, output, fmt, opset=args.opset,
                            batch_size=args.batch_size,
                            output="probabilities" if args.probabilities else "logits",
                            verify=not args.no_verify, tolerance=args.tolerance,
                            sample_inputs=samples, class_names=_class_names(args.class_names),
                            overwrite=args.overwrite)
        for w in caught:
            if issubclass(w.category, UserWarning):
                text = cli_message(" ".join(str(w.message).split()), parser)
                print(f"aca-export: warning: {text}", file=sys.stderr)
    except KeyboardInterrupt:
        print("aca-export: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # one clear line, no traceback
        if os.environ.get("ACA_DEBUG"):
            raise
        print(f"aca-export: error: {cli_message(_one_line(exc), parser)}", file=sys.stderr)
        return 1
    print(f"exported: {result.path}")
    print(f"format: {result.format}")
    if result.verified:
        print(f"max abs diff: {result.max_abs_diff:.3g} (tolerance {args.tolerance:g}, "
              f"{result.checked_images} images)")
        print(f"top-1 agreement: {result.top1_agreement:.1%}")
    else:
        print("not verified (--no-verify)")
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
