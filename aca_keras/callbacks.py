"""Keras callbacks shared by the search and the training: progress lines for logs, epochs
counted from 1 in CSV histories, and a stop at the first non-finite loss.

Progress lines are what ``aca-search`` and ``aca-train`` print when their output goes to a file
or a pipe instead of a terminal.

Keras's progress bar redraws one terminal line; sent to a file it shows nothing until an
epoch ends (minutes, at the default sizes on a CPU). :class:`ProgressLogger` prints a plain
line every few percent of an epoch instead::

    epoch 1/50 step 36/351 (10%) loss 2.1034 accuracy 0.2178 alpha_loss 2.0871 alpha_accuracy 0.2317 | 1.52 steps/s, ETA 3m27s

:func:`progress_callbacks` returns it when progress output is on (``verbose``) and standard
output is not a terminal; ``ACA_PROGRESS=1`` forces it on, ``ACA_PROGRESS=0`` off. It also
returns an :class:`EpochLineLogger`, Keras's progress bar and epoch line with counts (the
collapse monitor's ``skip_edges`` ...) printed as integers: ``skip_edges: 3``, not
``skip_edges: 3.0000`` or ``0.0000e+00``.

:class:`StopOnNonFinite` stops a run at the first NaN/Inf loss with a
:class:`~aca_keras.errors.NumericalError` naming the last good checkpoint
(:func:`last_good_checkpoint` describes it).
"""

from __future__ import annotations

import csv
import math
import numbers
import os
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import IO, Any

import keras

from aca_keras.errors import NumericalError
from aca_keras.io.atomic import atomic_copy_file
from aca_keras.io.checkpoint import read_checkpoint_meta
from aca_keras.io.run_dir import RunDir

__all__ = [
    "COUNT_SUFFIXES",
    "ENV_VAR",
    "EpochCSVLogger",
    "EpochLineLogger",
    "ProgressLogger",
    "StopOnNonFinite",
    "format_duration",
    "is_count",
    "last_good_checkpoint",
    "progress_callbacks",
    "stdout_is_terminal",
    "wanted",
]

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


#: Log entries whose names end so count things (the collapse monitor's ``skip_edges``,
#: ``reduce_parameter_free_edges`` ...): :func:`is_count` takes their integral values for
#: counts.
COUNT_SUFFIXES = ("_edges", "_count")


def is_count(key: str, value: Any) -> bool:
    """Whether the log entry ``key: value`` is a count, printed as an integer: an integer
    value (Keras turns its own metrics into floats before callbacks see them, so integers
    come from callbacks that count, such as the collapse monitor), or an integral float
    under a name ending in one of :data:`COUNT_SUFFIXES`."""
    if isinstance(value, bool):
        return False
    if isinstance(value, numbers.Integral):
        return True
    return (str(key).endswith(COUNT_SUFFIXES) and isinstance(value, numbers.Real)
            and math.isfinite(float(value)) and float(value).is_integer())


class _Count(float):
    """A count in the logs given to Keras's progress bar, formatted as an integer.

    ``keras.utils.Progbar`` shows each entry as ``value / steps`` (one step at the end of an
    epoch) formatted with ``.4f`` or ``.4e``; this float keeps its type through that division
    and ignores the format when it is integral. Should a Keras release format differently,
    counts print as floats again (``tests/test_callbacks.py`` says so), never fail."""

    def __truediv__(self, other):
        return _Count(float(self) / other)

    def __format__(self, spec: str) -> str:
        return str(int(self)) if self.is_integer() else float.__format__(self, spec)


class EpochLineLogger(keras.callbacks.ProgbarLogger):
    """Keras's ``ProgbarLogger`` (the progress bar and the epoch line ``fit`` prints) with
    counts printed as integers: ``skip_edges: 3 - mean_skip_weight: 0.2500``.

    Put it after the callbacks that add counts to the logs (Keras then adds no progress bar
    of its own); it prints according to ``fit``'s ``verbose``, nothing at 0. Counts are the
    entries :func:`is_count` accepts; the logs other callbacks see are left as they are.
    """

    def on_epoch_end(self, epoch, logs=None):
        shown = {key: _Count(value) if is_count(key, value) else value
                 for key, value in (logs or {}).items()}
        super().on_epoch_end(epoch, shown)


def progress_callbacks(verbose: Any, percent: float = 5.0,
                       stream: IO[str] | None = None) -> list[keras.callbacks.Callback]:
    """``[ProgressLogger(percent), EpochLineLogger()]`` when :func:`wanted`, else
    ``[EpochLineLogger()]``: put them last, after the callbacks that add to the logs."""
    epoch_line = EpochLineLogger()
    return [ProgressLogger(percent, stream), epoch_line] if wanted(verbose, stream) \
        else [epoch_line]


class EpochCSVLogger(keras.callbacks.CSVLogger):
    """Keras's ``CSVLogger`` with epochs counted from 1 (the first epoch is epoch 1), as in
    ``alphas.jsonl``, ``train_history.csv`` and Keras's own ``Epoch 1/E`` lines.

    When it appends to a file that already has a header (a resumed run), its columns are
    that header's, so every row lines up with it: a figure the first resumed epoch lacks
    (the collapse monitor's ``hessian_eigenvalue`` on epochs it skips) is written ``NA``
    in its column. Keras's own logger takes the columns from the first epoch's logs
    instead and, not writing the header again, shifted such rows against it.
    """

    def on_train_begin(self, logs=None):
        super().on_train_begin(logs)
        if self.append and not self.append_header:
            with open(self.filename, newline="") as existing:
                header = next(csv.reader(existing, delimiter=self.sep), [])
            if header[:1] == ["epoch"] and len(header) > 1:
                self.keys = header[1:]

    def on_epoch_end(self, epoch, logs=None):
        super().on_epoch_end(epoch + 1, logs)


def last_good_checkpoint(path: str | os.PathLike | None, epoch_key: str = "epoch",
                         missing: str = "no epoch had finished, so there is no checkpoint"
                         ) -> str:
    """``"the last good checkpoint is <path> (epoch <n>)"``, read now from the checkpoint's
    ``meta[epoch_key]``; ``missing`` when there is no checkpoint file, and a sentence saying
    so when ``path`` is ``None`` (nothing is written)."""
    if path is None:
        return "no run_dir was given, so there is no checkpoint"
    path = Path(path)
    if not path.is_file():
        return missing
    return f"the last good checkpoint is {path} (epoch {read_checkpoint_meta(path).get(epoch_key)})"


class StopOnNonFinite(keras.callbacks.Callback):
    """Stops a run at the first NaN/Inf value of a watched loss (after a batch, and at the end
    of an epoch) with a :class:`~aca_keras.errors.NumericalError` that names the last good
    checkpoint. The losses Keras reports are the epoch's running means: one bad batch shows.

    Put it before the callbacks that write checkpoints, so that no checkpoint of a diverged
    epoch is written.

    Args:
        keys: the log entries to watch (``"loss"``; the search also ``"alpha_loss"``).
        checkpoint: what to say about the last good checkpoint: a sentence, or a function
            returning one when the error is raised (e.g. a ``functools.partial`` of
            :func:`last_good_checkpoint`).
        advice: the last sentence of the message: what to do now.
    """

    def __init__(self, keys: Sequence[str] = ("loss",),
                 checkpoint: str | Callable[[], str] = "there is no checkpoint",
                 advice: str = ("Lower the learning rate or check the input data, then resume "
                                "or restart the run.")):
        super().__init__()
        self.keys = tuple(keys)
        self.checkpoint = checkpoint
        self.advice = advice
        self.epoch = 0

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        self._check(logs, f"at step {batch + 1} of epoch {self.epoch + 1}")

    def on_epoch_end(self, epoch, logs=None):
        self._check(logs, f"after epoch {epoch + 1}")

    def _check(self, logs, when: str) -> None:
        for key in self.keys:
            value = (logs or {}).get(key)
            if value is not None and not math.isfinite(float(value)):
                last = self.checkpoint() if callable(self.checkpoint) else self.checkpoint
                raise NumericalError(f"The {key} became {float(value)} {when}: the run "
                                     f"diverged; {last}. {self.advice}")


class CheckpointSnapshots(keras.callbacks.Callback):
    """Times every epoch (:attr:`seconds`) and, after each epoch in ``epochs``, keeps a copy
    of the search checkpoint as ``RunDir(run_dir).snapshot(epoch)`` (studies derive and
    retrain architectures from a search at several points). Put it after the callback that
    writes the checkpoint (``search()`` adds it before the user's callbacks)."""

    def __init__(self, run_dir: str | os.PathLike, epochs: Sequence[int] = ()):
        super().__init__()
        self.run_dir = RunDir(run_dir)
        self.epochs = tuple(int(e) for e in epochs)
        self.seconds: list[float] = []
        self._start = 0.0

    def on_epoch_begin(self, epoch, logs=None):
        self._start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        self.seconds.append(round(time.perf_counter() - self._start, 2))
        if epoch + 1 in self.epochs:
            atomic_copy_file(self.run_dir.checkpoint, self.run_dir.snapshot(epoch + 1))
