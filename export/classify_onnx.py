#!/usr/bin/env python3
"""Classify image files with an aca_keras ONNX export.

Needs only onnxruntime, numpy and Pillow (no TensorFlow, no Keras, no aca_keras)::

    python classify_onnx.py model.onnx cat.png dog.jpg --top-k 3
    python classify_onnx.py model.onnx images/*.png --json > predictions.json

Images are resized to the model's input size (bilinear) and fed as raw 0-255 pixels: the
exported model normalises them itself. Each resize is reported on standard error (and in the
JSON output). A colour image for a grey model (or a grey one for a colour model) is refused:
the answer would be about a different picture; ``--convert`` converts it (and says so). Class
names come from the export's metadata (``aca_keras.class_names``) when present, else the class
indices are shown.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import onnxruntime as ort
from PIL import Image

_MODES = {1: "L", 3: "RGB", 4: "RGBA"}
_CHUNK = 32


class Model:
    """An ONNX export: its session, input size, output kind and class names."""

    def __init__(self, path: str, threads: int = 0):
        options = ort.SessionOptions()
        if threads > 0:
            options.intra_op_num_threads = threads
        self.session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
        meta = self.session.get_modelmeta().custom_metadata_map
        doc = json.loads(meta["aca_keras.metadata"]) if "aca_keras.metadata" in meta else {}
        model_input = self.session.get_inputs()[0]
        self.input_name = model_input.name
        shape = list(model_input.shape)
        if all(isinstance(d, int) and d > 0 for d in shape[1:]):
            self.height, self.width, self.channels = shape[1:]
        elif "input_shape" in doc:
            self.height, self.width, self.channels = doc["input_shape"]
        else:
            raise SystemExit(f"cannot tell the input size of {path}: shape {shape}, no metadata")
        self.batch_size = shape[0] if isinstance(shape[0], int) and shape[0] > 0 else None
        self.output_name = self.session.get_outputs()[0].name
        self.outputs_probabilities = (doc.get("output") or self.output_name) == "probabilities"
        self.class_names = doc.get("class_names")

    def probabilities(self, images: np.ndarray) -> np.ndarray:
        """Class probabilities of ``(N, H, W, C)`` raw-pixel images."""
        chunk = self.batch_size or _CHUNK
        out = []
        for start in range(0, len(images), chunk):
            part = images[start:start + chunk]
            n = len(part)
            if self.batch_size is not None and n < chunk:  # a fixed batch: pad
                part = np.concatenate([part, np.zeros((chunk - n, *part.shape[1:]), part.dtype)])
            y = self.session.run([self.output_name], {self.input_name: part})[0][:n]
            out.append(y if self.outputs_probabilities else softmax(y))
        return np.concatenate(out)


def softmax(z: np.ndarray) -> np.ndarray:
    """Row-wise softmax."""
    z = z - z.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)


_GREY_MODES = {"1", "L", "LA", "I", "I;16", "F"}


def load_image(path: str, height: int, width: int, channels: int,
               convert: bool = False) -> tuple[np.ndarray, list[str]]:
    """An image file as ``(height, width, channels)`` float32 raw pixels 0-255, and notes on
    what was done to it (resized, converted).

    Raises:
        ValueError: the image is colour and the model grey (or the reverse) and ``convert``
            is false.
    """
    if not Path(path).is_file():
        raise FileNotFoundError(f"no such image file: {path}")
    notes = []
    with Image.open(path) as img:
        grey = img.mode in _GREY_MODES
        if grey != (channels == 1):
            what = (f"{'a grey' if grey else 'a colour'} image ({img.mode}), the model takes "
                    f"{channels} channel{'s' if channels > 1 else ''}")
            if not convert:
                raise ValueError(f"{path} is {what}; pass --convert to convert it to "
                                 f"{_MODES[channels]}")
            notes.append(f"converted from {img.mode} to {_MODES[channels]} ({what})")
        img = img.convert(_MODES[channels])
        if img.size != (width, height):
            notes.append(f"resized from {img.size[1]}x{img.size[0]} to {height}x{width} "
                         "(bilinear)")
            img = img.resize((width, height), Image.Resampling.BILINEAR)
        x = np.asarray(img, dtype=np.float32)
    return x.reshape(height, width, channels), notes


def top_k(probs: np.ndarray, k: int, names: Sequence[str] | None) -> list[dict]:
    """The ``k`` most probable classes of one image."""
    order = np.argsort(-probs, kind="stable")[:k]
    return [{"rank": r + 1, "class_index": int(i),
             "label": names[i] if names else str(int(i)),
             "probability": float(probs[i])} for r, i in enumerate(order)]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Classify images with an aca_keras ONNX export.")
    parser.add_argument("model", help="the .onnx file written by aca-export")
    parser.add_argument("images", nargs="+", help="image files (PNG, JPEG, ...)")
    parser.add_argument("--top-k", type=int, default=5, help="classes to show per image")
    parser.add_argument("--json", action="store_true", help="print JSON instead of text")
    parser.add_argument("--threads", type=int, default=0,
                        help="ONNX Runtime intra-op threads (0: its default)")
    parser.add_argument("--convert", action="store_true",
                        help="convert colour images for a grey model (and grey ones for a "
                             "colour model) instead of refusing them")
    args = parser.parse_args(argv)
    try:
        if not Path(args.model).is_file():
            raise FileNotFoundError(f"no such model file: {args.model} (give the .onnx file "
                                    "written by aca-export)")
        model = Model(args.model, args.threads)
        loaded = [load_image(p, model.height, model.width, model.channels, args.convert)
                  for p in args.images]
        x = np.stack([image for image, _ in loaded])
    except Exception as exc:  # missing files, bad images, a model onnxruntime cannot load
        text = " ".join(str(exc).split()) or type(exc).__name__
        print(f"classify_onnx: error: {text}", file=sys.stderr)
        return 1
    for path, (_, notes) in zip(args.images, loaded):
        for note in notes:
            print(f"classify_onnx: note: {path}: {note}", file=sys.stderr)
    probs = model.probabilities(x)
    k = max(1, min(args.top_k, probs.shape[1]))
    results = [{"image": path, "preprocessing": notes, "top_k": top_k(p, k, model.class_names)}
               for path, p, (_, notes) in zip(args.images, probs, loaded)]
    if args.json:
        print(json.dumps({"model": args.model, "results": results}, indent=2))
    else:
        for r in results:
            print(r["image"])
            for t in r["top_k"]:
                print(f"  {t['rank']}. {t['label']:<20} {t['probability']:.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
