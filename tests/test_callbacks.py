"""The epoch line prints counts as integers (aca_keras.callbacks.EpochLineLogger)."""

from __future__ import annotations

import re

import keras
import numpy as np
import pytest

from aca_keras.callbacks import EpochLineLogger, ProgressLogger, is_count, progress_callbacks


class _Counts(keras.callbacks.Callback):
    """Adds what the collapse monitor adds at the end of an epoch: counts (Python ints, an
    integral float under a count's name) and a weight."""

    def __init__(self):
        super().__init__()
        self.seen: list[dict] = []

    def on_epoch_end(self, epoch, logs=None):
        logs.update(skip_edges=3, reduce_skip_edges=0, parameter_free_edges=2.0,
                    mean_skip_weight=0.25)


class _Seen(keras.callbacks.Callback):
    """Records the logs that a callback after the epoch line sees."""

    def __init__(self):
        super().__init__()
        self.logs: list[dict] = []

    def on_epoch_end(self, epoch, logs=None):
        self.logs.append(dict(logs))


def _fit(verbose: int, callbacks) -> None:
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    model.compile(keras.optimizers.SGD(0.1), "mse")
    x = np.array([[1.0, 2.0], [3.0, 4.0]], "float32")
    model.fit(x, np.array([[1.0], [0.0]], "float32"), epochs=1, batch_size=2,
              verbose=verbose, callbacks=callbacks)


@pytest.mark.parametrize("verbose", [1, 2])
def test_epoch_line_prints_counts_as_integers(verbose, capsys, monkeypatch):
    monkeypatch.setenv("ACA_PROGRESS", "0")
    seen = _Seen()
    _fit(verbose, [_Counts(), *progress_callbacks(verbose), seen])
    out = capsys.readouterr().out
    line = [text for text in out.splitlines() if "skip_edges" in text][-1]
    assert " - skip_edges: 3" in line and " - reduce_skip_edges: 0" in line
    assert " - parameter_free_edges: 2" in line and " - mean_skip_weight: 0.2500" in line
    assert not re.search(r"_edges: [\d.]+e[+-]\d\d|_edges: \d+\.\d", line), line
    # the loss is still Keras's float, and later callbacks see the values unchanged
    assert re.search(r" - loss: \d+\.\d{4}", line)
    assert seen.logs[-1]["skip_edges"] == 3 and type(seen.logs[-1]["skip_edges"]) is int
    assert type(seen.logs[-1]["parameter_free_edges"]) is float
    # only one progress bar: Keras adds none of its own beside the epoch line logger
    assert out.count(" - skip_edges:") == 1


def test_keras_alone_prints_counts_as_floats(capsys):
    """What EpochLineLogger fixes: Keras's own epoch line shows 3.0000 and 0.0000e+00."""
    _fit(2, [_Counts()])
    line = [text for text in capsys.readouterr().out.splitlines() if "skip_edges" in text][-1]
    assert " - skip_edges: 3.0000" in line and " - reduce_skip_edges: 0.0000e+00" in line


def test_what_counts_as_a_count():
    assert is_count("skip_edges", 3) and is_count("anything", np.int64(0))
    assert is_count("parameter_free_edges", 2.0) and is_count("image_count", 7.0)
    assert not is_count("parameter_free_edges", 2.5)  # a mean is no count
    assert not is_count("loss", 2.0) and not is_count("accuracy", 1.0)
    assert not is_count("skip_edges", True) and not is_count("skip_edges", float("nan"))
    assert not is_count("skip_edges", None)


def test_progress_callbacks_end_with_the_epoch_line(monkeypatch):
    monkeypatch.setenv("ACA_PROGRESS", "1")
    kinds = [type(c) for c in progress_callbacks(1)]
    assert kinds == [ProgressLogger, EpochLineLogger]
    monkeypatch.setenv("ACA_PROGRESS", "0")
    assert [type(c) for c in progress_callbacks(1)] == [EpochLineLogger]
    assert isinstance(progress_callbacks(0)[-1], keras.callbacks.ProgbarLogger)
