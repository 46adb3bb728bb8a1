#!/usr/bin/env python3
"""Classify image files with an aca_keras ONNX export.

Needs only onnxruntime, numpy and Pillow (no TensorFlow, no Keras, no aca_keras)::

    python classify_onnx.py model.onnx cat.png dog.jpg --top-k 3
    python classify_onnx.py model.onnx images/*.png --json > predictions.json

Images are converted to the model's channel count, resized to its input size (bilinear) and
fed as raw 0-255 pixels: the exported model normalises them itself. Class names come from the
export's metadata (``aca_keras.class_names``) when present, else the class indices are shown.
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


def load_image(path: str, height: int, width: int, channels: int) -> np.ndarray:
    """An image file as ``(height, width, channels)`` float32 raw pixels 0-255."""
    if not Path(path).is_file():
        raise FileNotFoundError(f"no such image file: {path}")
    with Image.open(path) as img:
        img = img.convert(_MODES[channels])
        if img.size != (width, height):
            img = img.resize((width, height), Image.Resampling.BILINEAR)
        x = np.asarray(img, dtype=np.float32)
    return x.reshape(height, width, channels)


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
    args = parser.parse_args(argv)
    try:
        model = Model(args.model, args.threads)
        x = np.stack([load_image(p, model.height, model.width, model.channels)
                      for p in args.images])
    except (OSError, ValueError, RuntimeError) as exc:  # missing files, bad images or model
        print(f"classify_onnx: error: {' '.join(str(exc).split())}", file=sys.stderr)
        return 1
    probs = model.probabilities(x)
    k = max(1, min(args.top_k, probs.shape[1]))
    results = [{"image": path, "top_k": top_k(p, k, model.class_names)}
               for path, p in zip(args.images, probs)]
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
