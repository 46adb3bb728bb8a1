#!/usr/bin/env python3
"""Classify image files with an aca_keras SavedModel export.

Needs only TensorFlow (no Keras model code, no aca_keras)::

    python classify_savedmodel.py saved_model/ cat.png dog.jpg --top-k 3
    python classify_savedmodel.py saved_model/ images/*.png --json > predictions.json

Images are decoded by TensorFlow, resized to the model's input size (bilinear, antialiased;
reported on standard error and in the JSON output) and fed as raw 0-255 pixels: the exported
model normalises them itself. A colour image for a grey model (or a grey one for a colour
model) is refused unless ``--convert`` is given. Class names come from the export's
``assets/aca_keras.json`` when present.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def _import_tensorflow_quietly():
    """TensorFlow, imported with standard error silenced: its C++ start-up lines are written
    before any log level applies (``ACA_DEBUG=1`` shows them)."""
    if os.environ.get("ACA_DEBUG"):
        import tensorflow
        return tensorflow
    sys.stderr.flush()
    saved, null = os.dup(2), os.open(os.devnull, os.O_WRONLY)
    os.dup2(null, 2)
    try:
        import tensorflow
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(null)
    return tensorflow


import numpy as np  # noqa: E402  (TensorFlow's own dependency)

tf = _import_tensorflow_quietly()

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


def load_image(path: str, height: int, width: int, channels: int,
               convert: bool = False) -> tuple[np.ndarray, list[str]]:
    """An image file as ``(height, width, channels)`` float32 raw pixels 0-255, and notes on
    what was done to it (resized, converted).

    Raises:
        ValueError: the image is colour and the model grey (or the reverse) and ``convert``
            is false.
    """
    if not tf.io.gfile.exists(path):
        raise FileNotFoundError(f"no such image file: {path}")
    data = tf.io.read_file(path)
    native = tf.io.decode_image(data, channels=0, dtype=tf.uint8, expand_animations=False)
    notes = []
    grey = int(native.shape[-1]) in (1, 2)
    if grey != (channels == 1):
        what = (f"{'a grey' if grey else 'a colour'} image ({int(native.shape[-1])} channels), "
                f"the model takes {channels}")
        if not convert:
            raise ValueError(f"{path} is {what}; pass --convert to convert it")
        notes.append(f"converted to {channels} channel{'s' if channels > 1 else ''} ({what})")
    img = tf.io.decode_image(data, channels=channels, dtype=tf.uint8, expand_animations=False)
    img = tf.cast(img, tf.float32)
    if tuple(img.shape[:2]) != (height, width):
        notes.append(f"resized from {img.shape[0]}x{img.shape[1]} to {height}x{width} "
                     "(bilinear, antialiased)")
        img = tf.image.resize(img, (height, width), method="bilinear", antialias=True)
        img = tf.clip_by_value(tf.round(img), 0.0, 255.0)
    return img.numpy(), notes


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
    parser.add_argument("--convert", action="store_true",
                        help="convert colour images for a grey model (and grey ones for a "
                             "colour model) instead of refusing them")
    args = parser.parse_args(argv)
    try:
        if not os.path.isdir(args.model):
            raise FileNotFoundError(f"no such SavedModel directory: {args.model} (give the "
                                    "saved_model/ directory written by aca-export)")
        model = Model(args.model)
        loaded = [load_image(p, model.height, model.width, model.channels, args.convert)
                  for p in args.images]
        x = np.stack([image for image, _ in loaded])
    except Exception as exc:  # missing files, bad images, a model TensorFlow cannot load
        message = getattr(exc, "message", None) or str(exc) or type(exc).__name__
        print(f"classify_savedmodel: error: {' '.join(message.split())}", file=sys.stderr)
        return 1
    for path, (_, notes) in zip(args.images, loaded):
        for note in notes:
            print(f"classify_savedmodel: note: {path}: {note}", file=sys.stderr)
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
