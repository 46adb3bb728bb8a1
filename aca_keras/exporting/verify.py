"""Verification: run an export in the runtime it is meant for (its format's runner in
:mod:`~aca_keras.exporting.formats`: ONNX Runtime, a fresh ``tf.saved_model.load``,
``tf.lite.Interpreter`` for the built-ins) on random images and on the caller's sample images,
and compare it with Keras."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import keras
import numpy as np

from aca_keras.errors import ExportError
from aca_keras.exporting.formats import get_format
from aca_keras.exporting.metadata import metadata_json, read_metadata

#: Batch sizes of the random verification images when the batch is dynamic (two sizes, so
#: that a file that silently fixed the batch dimension fails).
RANDOM_BATCHES = (1, 4)
#: Sample images are compared in chunks of this many (dynamic batch).
SAMPLE_CHUNK = 64


def run_exported(fmt: str, path: Path, batches: list[np.ndarray], output: str
                 ) -> list[np.ndarray]:
    """Outputs of the exported file on each batch, run in its own runtime (the format's
    runner)."""
    return get_format(fmt).runner()(path, batches, output)


def verify_export(fmt: str, tmp: Path, graph: keras.Model, input_shape: tuple[int, ...],
                  batch_size: int | None, output: str, samples: np.ndarray | None,
                  tolerance: float, metadata: dict[str, Any]) -> tuple[float, float, int]:
    """Run the export and Keras on the same images; raise ExportError above ``tolerance`` or
    when the metadata read back differs. Returns ``(max_abs_diff, top1_agreement, images)``."""
    rng = np.random.default_rng(0)
    sizes = RANDOM_BATCHES if batch_size is None else (batch_size,)
    batches = [rng.uniform(0.0, 255.0, (n, *input_shape)).astype(np.float32) for n in sizes]
    counts = list(sizes)  # images of each batch that are compared (a fixed batch is padded)
    if samples is not None:
        chunk = batch_size or SAMPLE_CHUNK
        for start in range(0, len(samples), chunk):
            part = samples[start:start + chunk]
            counts.append(len(part))
            if batch_size is not None and len(part) < batch_size:
                pad = np.zeros((batch_size - len(part), *input_shape), np.float32)
                part = np.concatenate([part, pad])
            batches.append(part)
    try:
        got = run_exported(fmt, tmp, batches, output)
        stored = read_metadata(tmp)
    except ExportError:
        raise
    except Exception as exc:
        raise ExportError(f"The exported {fmt} model could not be run: {exc}") from exc
    if stored != json.loads(metadata_json(metadata)):
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
