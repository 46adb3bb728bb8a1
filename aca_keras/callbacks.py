"""Progress lines for logs: what ``aca-search`` and ``aca-train`` print when their output goes
to a file or a pipe instead of a terminal.

Keras's progress bar redraws one terminal line; sent to a file it shows nothing until an
epoch ends (minutes, at the default sizes on a CPU). :class:`ProgressLogger` prints a plain
line every few percent of an epoch instead::

    epoch 1/50 step 36/351 (10%) loss 2.1034 accuracy 0.2178 alpha_loss 2.0871 alpha_accuracy 0.2317 | 1.52 steps/s, ETA 3m27s

:func:`progress_callbacks` returns it when progress output is on (``verbose``) and standard
output is not a terminal; ``ACA_PROGRESS=1`` forces it on, ``ACA_PROGRESS=0`` off.
"""

from __future__ import annotations

import math
import os
import sys
import time
from typing import IO, Any

import keras

#: Environment variable: "1" always prints progress lines, "0" never.
ENV_VAR = "ACA_PROGRESS"

#: Metrics shown, in this order, when the logs hold them.
_SHOWN = ("loss", "accuracy", "logits_accuracy", "alpha_loss", "alpha_accuracy")


def stdout_is_terminal(stream: Any = None) -> bool:
    """Whether ``stream`` (default ``sys.stdout``) is an interactive terminal."""
    stream = sys.stdout if stream is None else stream
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):  # closed or replaced streams
        return False


def wanted(verbose: Any, stream: Any = None) -> bool:
    """Whether progress lines should be printed: ``ACA_PROGRESS`` if set, else ``verbose``
    and a non-terminal ``stream``."""
    forced = os.environ.get(ENV_VAR, "").strip()
    if forced in ("0", "1"):
        return forced == "1"
    return bool(verbose) and not stdout_is_terminal(stream)


def format_duration(seconds: float) -> str:
    """``"45s"``, ``"3m27s"``, ``"2h05m"``."""
    if not math.isfinite(seconds) or seconds < 0:
        return "?"
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


class ProgressLogger(keras.callbacks.Callback):
    """Prints ``epoch e/E step s/S (p%) <metrics> | <rate> steps/s, ETA <time>`` every
    ``percent`` percent of each epoch (and at its last step), flushing each line.

    Args:
        percent: how often, in percent of an epoch's steps (at least every step).
        stream: where to write (default ``sys.stdout`` at each line).
    """

    def __init__(self, percent: float = 5.0, stream: IO[str] | None = None):
        super().__init__()
        if not 0 < percent <= 100:
            raise ValueError(f"percent must be in (0, 100], got {percent}")
        self.percent = float(percent)
        self.stream = stream
        self._epoch = 0
        self._start = 0.0
        self._next = 1

    def _steps(self) -> int | None:
        steps = (self.params or {}).get("steps")
        return int(steps) if steps else None

    def _interval(self) -> int:
        steps = self._steps()
        return max(1, int(steps * self.percent / 100)) if steps else 1

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch = epoch
        self._start = time.perf_counter()
        self._next = self._interval()

    def on_train_batch_end(self, batch, logs=None):
        step = batch + 1
        steps = self._steps()
        if step < self._next and step != steps:
            return
        self._next = step + self._interval()
        elapsed = time.perf_counter() - self._start
        rate = step / elapsed if elapsed > 0 else float("nan")
        parts = [f"epoch {self._epoch + 1}/{(self.params or {}).get('epochs', '?')}"]
        if steps:
            parts.append(f"step {step}/{steps} ({100 * step / steps:.0f}%)")
        else:
            parts.append(f"step {step}")
        logs = logs or {}
        for key in _SHOWN:
            if key in logs:
                try:
                    parts.append(f"{key} {float(logs[key]):.4f}")
                except (TypeError, ValueError):
                    continue
        line = " ".join(parts) + f" | {rate:.2f} steps/s"
        if steps and rate > 0 and math.isfinite(rate):
            line += f", ETA {format_duration((steps - step) / rate)}"
        stream = self.stream if self.stream is not None else sys.stdout
        print(line, file=stream, flush=True)


def progress_callbacks(verbose: Any, percent: float = 5.0,
                       stream: IO[str] | None = None) -> list[keras.callbacks.Callback]:
    """``[ProgressLogger(percent)]`` when :func:`wanted`, else ``[]``."""
    return [ProgressLogger(percent, stream)] if wanted(verbose, stream) else []


class EpochCSVLogger(keras.callbacks.CSVLogger):
    """Keras's ``CSVLogger`` with epochs counted from 1 (the first epoch is epoch 1), as in
    ``alphas.jsonl``, ``train_history.csv`` and Keras's own ``Epoch 1/E`` lines."""

    def on_epoch_end(self, epoch, logs=None):
        super().on_epoch_end(epoch + 1, logs)
