"""``aca-export``: export a derived model for deployment (ONNX, SavedModel, TFLite).

Examples::

    aca-export runs/search-cifar10-20250101-120000 --format onnx
    aca-export model.keras --format tflite --output deploy/model.tflite --batch-size 1
    aca-export RUN_DIR --format savedmodel --probabilities --samples test_images.npz

A thin front end over :func:`aca_keras.exporting.export`; errors print one line and exit 1.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from aca_keras.cli import cli_message, quiet_startup
from aca_keras.errors import AcaError

FORMATS = ("onnx", "savedmodel", "tflite")


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
    parser = argparse.ArgumentParser(
        prog="aca-export",
        description="Export a derived aca_keras model (run directory, .keras file or zoo name) "
                    "to ONNX, a TensorFlow SavedModel or TFLite, and verify it against Keras.")
    parser.add_argument("source", metavar="RUN_DIR_OR_MODEL",
                        help="a search/training run directory, a .keras file or a zoo name")
    parser.add_argument("--format", default="onnx", metavar="|".join(FORMATS),
                        help="export format (default: onnx)")
    parser.add_argument("--output", "-o", metavar="PATH",
                        help="output file or SavedModel directory (default: RUN_DIR/export/"
                             "model.onnx, model.tflite or saved_model/; next to a .keras file)")
    parser.add_argument("--opset", type=int, metavar="N", help="ONNX opset (ONNX only)")
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
    import numpy as np

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
        import warnings

        from aca_keras.exporting.exporter import export

        samples = _load_samples(args.samples) if args.samples else None
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", UserWarning)
            result = export(args.source, args.output, args.format, opset=args.opset,
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
