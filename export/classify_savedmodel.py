#!/usr/bin/env python3
"""Classify image files with an aca_keras SavedModel export.

Needs only TensorFlow (no Keras model code, no aca_keras)::

    python classify_savedmodel.py saved_model/ cat.png dog.jpg --top-k 3
    python classify_savedmodel.py saved_model/ images/*.png --json > predictions.json

Images are decoded by TensorFlow, converted to the model's channel count, resized to its input
size (bilinear, antialiased) and fed as raw 0-255 pixels: the exported model normalises them
itself. Class names come from the export's ``assets/aca_keras.json`` when present.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402  (TensorFlow's own dependency)
import tensorflow as tf  # noqa: E402

_CHUNK = 32


class Model:
    """A SavedModel export: its serving signature, input size, output kind and class names."""

    def __init__(self, path: str):
        self.loaded = tf.saved_model.load(path)
        self.serve = self.loaded.signatures["serving_default"]
        _, inputs = self.serve.structured_input_signature
        (self.input_name, spec), = inputs.items()
        (self.output_name,) = self.serve.structured_outputs.keys()
        doc = self._metadata(path)
        shape = spec.shape.as_list()
        if all(d is not None for d in shape[1:]):
            self.height, self.width, self.channels = shape[1:]
        else:
            self.height, self.width, self.channels = doc["input_shape"]
        self.batch_size = shape[0]
        self.outputs_probabilities = (doc.get("output") or self.output_name) == "probabilities"
        self.class_names = doc.get("class_names")

    def _metadata(self, path: str) -> dict:
        asset = getattr(self.loaded, "aca_keras_metadata", None)
        files = [asset.asset_path.numpy().decode()] if asset is not None else []
        files += [os.path.join(path, d, "aca_keras.json") for d in ("assets", "assets.extra")]
        for f in files:
            if tf.io.gfile.exists(f):
                with tf.io.gfile.GFile(f) as fh:
                    return json.load(fh)
        return {}

    def probabilities(self, images: np.ndarray) -> np.ndarray:
        """Class probabilities of ``(N, H, W, C)`` raw-pixel images."""
        chunk = self.batch_size or _CHUNK
        out = []
        for start in range(0, len(images), chunk):
            part = images[start:start + chunk]
            n = len(part)
            if self.batch_size is not None and n < chunk:  # a fixed batch: pad
                part = np.concatenate([part, np.zeros((chunk - n, *part.shape[1:]), part.dtype)])
            y = self.serve(**{self.input_name: tf.constant(part)})[self.output_name][:n]
            out.append((y if self.outputs_probabilities else tf.nn.softmax(y)).numpy())
        return np.concatenate(out)


def load_image(path: str, height: int, width: int, channels: int) -> np.ndarray:
    """An image file as ``(height, width, channels)`` float32 raw pixels 0-255."""
    if not tf.io.gfile.exists(path):
        raise FileNotFoundError(f"no such image file: {path}")
    data = tf.io.read_file(path)
    img = tf.io.decode_image(data, channels=channels, dtype=tf.uint8, expand_animations=False)
    img = tf.cast(img, tf.float32)
    if tuple(img.shape[:2]) != (height, width):
        img = tf.image.resize(img, (height, width), method="bilinear", antialias=True)
        img = tf.clip_by_value(tf.round(img), 0.0, 255.0)
    return img.numpy()


def top_k(probs: np.ndarray, k: int, names: Sequence[str] | None) -> list[dict]:
    """The ``k`` most probable classes of one image."""
    order = np.argsort(-probs, kind="stable")[:k]
    return [{"rank": r + 1, "class_index": int(i),
             "label": names[i] if names else str(int(i)),
             "probability": float(probs[i])} for r, i in enumerate(order)]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="Classify images with an aca_keras SavedModel export.")
    parser.add_argument("model", help="the SavedModel directory written by aca-export")
    parser.add_argument("images", nargs="+", help="image files (PNG, JPEG, BMP, GIF)")
    parser.add_argument("--top-k", type=int, default=5, help="classes to show per image")
    parser.add_argument("--json", action="store_true", help="print JSON instead of text")
    args = parser.parse_args(argv)
    try:
        model = Model(args.model)
        x = np.stack([load_image(p, model.height, model.width, model.channels)
                      for p in args.images])
    except (OSError, ValueError, tf.errors.OpError) as exc:
        message = getattr(exc, "message", None) or str(exc)
        print(f"classify_savedmodel: error: {' '.join(message.split())}", file=sys.stderr)
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
