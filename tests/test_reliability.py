"""Exact resume after SIGKILL, atomic checkpoints, determinism and numerical faults.

The killed runs happen in a child process (this file is also the child script:
``python tests/test_reliability.py search|train RUN_DIR MARKER``): it runs until the second
epoch has started, writes ``MARKER`` and waits there; the test then kills it with SIGKILL,
resumes the run in this process and compares with an uninterrupted run.
"""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import keras
import numpy as np
import pytest

from aca_keras.errors import NumericalError, RunDirError
from aca_keras.io import checkpoint as ckpt

HERE = Path(__file__).resolve()
REPO = HERE.parents[1]

SEARCH = dict(epochs=3, cells=3, channels=4, nodes=1, ops=["max_pool_3x3", "sep_conv_3x3"],
              batch_size=16, eval_cells=3, eval_channels=4, score_batches=1, seed=7,
              verbose=0)
TRAIN = dict(epochs=3, batch_size=16, seed=5, verbose=0)


def _search_arrays():
    from aca_keras.data import loading as data

    bundle = data.load("digits")
    return bundle.x_train[:96], bundle.y_train[:96]


def _train_bundle():
    from aca_keras.data import loading as data

    rng = np.random.default_rng(0)
    x = rng.integers(0, 255, (64, 8, 8, 3)).astype("uint8")
    y = (np.arange(64) % 4).astype("int32")
    return data.load((x, y))


def _train_model(seed: int = 1):
    from aca_keras.models.derived import build_model
    from aca_keras.space.architecture import Architecture, CellSpec, EdgeSpec

    ops = ("none", "max_pool_3x3", "avg_pool_3x3", "sep_conv_3x3", "sep_conv_5x5",
           "dil_conv_3x3", "dil_conv_5x5")
    cell = CellSpec((EdgeSpec(0, 0, "sep_conv_3x3", 2), EdgeSpec(0, 1, "max_pool_3x3", 4)),
                    (2,))
    keras.utils.set_random_seed(seed)
    return build_model(Architecture(cell, cell, 4, ops), (8, 8, 3), 4, cells=3, channels=4,
                       auxiliary=True, drop_path=0.2)


class _PauseInSecondEpoch(keras.callbacks.Callback):
    """Child side: in epoch 2, before its second step, write ``marker`` and wait to be killed."""

    def __init__(self, marker: Path):
        super().__init__()
        self.marker = marker
        self.epoch = 0

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch

    def on_train_batch_begin(self, batch, logs=None):
        if self.epoch == 1 and batch == 1:
            self.marker.write_text(str(os.getpid()))
            time.sleep(600)


class _PoisonWeights(keras.callbacks.Callback):
    """Sets one weight to NaN at the start of epoch ``epoch`` (1-based)."""

    def __init__(self, epoch: int):
        super().__init__()
        self.at = epoch - 1

    def on_epoch_begin(self, epoch, logs=None):
        if epoch == self.at:
            variable = self.model.trainable_variables[0]
            value = np.array(variable.numpy())
            value.flat[0] = np.nan
            variable.assign(value)


# ---------------------------------------------------------------------------- child side


def _child_main(mode: str, run_dir: Path, marker: Path) -> None:
    pause = _PauseInSecondEpoch(marker)
    if mode == "search":
        from aca_keras.searching.pipeline import search

        search(_search_arrays(), run_dir=run_dir, callbacks=[pause], **SEARCH)
    else:
        from aca_keras.training import train

        train(_train_model(), _train_bundle(), run_dir=run_dir, callbacks=[pause], **TRAIN)


# --------------------------------------------------------------------------- parent side


def _kill_in_second_epoch(mode: str, run_dir: Path, checkpoint: Path, tmp_path: Path) -> None:
    """Run ``mode`` in a child, wait until epoch 1's checkpoint exists and epoch 2 is under
    way, then SIGKILL it."""
    marker = tmp_path / f"{mode}.marker"
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    child = subprocess.Popen([sys.executable, str(HERE), mode, str(run_dir), str(marker)],
                             env=env, cwd=REPO, stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 600
        while not marker.exists():
            if child.poll() is not None:
                pytest.fail(f"the child ended ({child.returncode}) before epoch 2:\n"
                            f"{child.stdout.read()[-3000:]}")
            if time.monotonic() > deadline:
                pytest.fail("the child did not reach epoch 2 in 600 s")
            time.sleep(0.2)
        assert checkpoint.is_file()  # epoch 1 is saved, epoch 2 is running
        os.kill(child.pid, signal.SIGKILL)
        child.wait(timeout=60)
        assert child.returncode == -signal.SIGKILL
    finally:
        if child.poll() is None:
            child.kill()
        child.stdout.close()


def _leave_interrupted_writes(checkpoint: Path) -> list[Path]:
    """What a kill during a checkpoint write leaves: the temporary file of the atomic write,
    truncated, and one holding garbage (the checkpoint itself is only ever replaced by a
    rename of a complete file)."""
    truncated = checkpoint.parent / f".{checkpoint.name}.killed01.tmp"
    truncated.write_bytes(checkpoint.read_bytes()[: checkpoint.stat().st_size // 2])
    garbage = checkpoint.parent / f".{checkpoint.name}.killed02.tmp"
    garbage.write_bytes(os.urandom(512))
    return [truncated, garbage]


def _arrays(path: Path) -> dict[str, np.ndarray]:
    with np.load(path) as data:
        return {k: data[k] for k in data.files if k != "__record__"}


def _assert_same_arrays(a: Path, b: Path) -> None:
    first, second = _arrays(a), _arrays(b)
    assert sorted(first) == sorted(second)
    for key in first:
        np.testing.assert_allclose(first[key], second[key], rtol=1e-6, atol=1e-7, err_msg=key)


def _records(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "alphas.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def uninterrupted_search(tmp_path_factory):
    from aca_keras.searching.pipeline import search

    run_dir = tmp_path_factory.mktemp("reliability") / "search"
    search(_search_arrays(), run_dir=run_dir, **SEARCH)
    return run_dir


@pytest.fixture(scope="module")
def uninterrupted_training(tmp_path_factory):
    from aca_keras.training import train

    run_dir = tmp_path_factory.mktemp("reliability") / "train"
    result = train(_train_model(), _train_bundle(), run_dir=run_dir, **TRAIN)
    return run_dir, result


def test_search_killed_mid_epoch_resumes_exactly(uninterrupted_search, tmp_path):
    from aca_keras.searching.pipeline import search

    run_dir = tmp_path / "run"
    checkpoint = run_dir / "checkpoint.npz"
    _kill_in_second_epoch("search", run_dir, checkpoint, tmp_path)
    assert ckpt.read_checkpoint_meta(checkpoint)["epochs_done"] == 1
    leftovers = _leave_interrupted_writes(checkpoint)
    search(_search_arrays(), run_dir=run_dir, resume=True, verbose=0)
    assert not any(p.exists() for p in leftovers)
    records, expected = _records(run_dir), _records(uninterrupted_search)
    assert [r["epoch"] for r in records] == [1, 2, 3]
    # epoch 1 came from the killed process, 2-3 from this one: both match one straight run
    for got, want in zip(records, expected):
        for cell in ("normal", "reduce"):
            np.testing.assert_allclose(got["alphas"][cell], want["alphas"][cell], rtol=1e-6,
                                       atol=1e-7)
    _assert_same_arrays(checkpoint, uninterrupted_search / "checkpoint.npz")
    assert (run_dir / "genotype.json").read_text() == \
        (uninterrupted_search / "genotype.json").read_text()
    assert len((run_dir / "history.csv").read_text().splitlines()) == 1 + SEARCH["epochs"]


def test_training_killed_mid_epoch_resumes_exactly(uninterrupted_training, tmp_path):
    from aca_keras.training import train

    expected_dir, expected = uninterrupted_training
    run_dir = tmp_path / "run"
    checkpoint = run_dir / "train_checkpoint" / "checkpoint.npz"
    _kill_in_second_epoch("train", run_dir, checkpoint, tmp_path)
    assert ckpt.read_checkpoint_meta(checkpoint)["epoch"] == 1
    leftovers = _leave_interrupted_writes(checkpoint)
    # a model with other initial weights: everything must come from the checkpoint
    resumed = train(_train_model(seed=99), _train_bundle(), run_dir=run_dir, resume=True,
                    **{k: v for k, v in TRAIN.items() if k != "seed"})
    assert not any(p.exists() for p in leftovers)
    assert resumed.history["epoch"] == [1, 2, 3]
    np.testing.assert_allclose(resumed.history["loss"], expected.history["loss"], rtol=1e-6)
    _assert_same_arrays(checkpoint, expected_dir / "train_checkpoint" / "checkpoint.npz")


def test_checkpoint_temporaries_and_corruption(tmp_path):
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    path = tmp_path / "checkpoint.npz"
    ckpt.save_checkpoint(path, model, {}, {"epoch": 4})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint.npz"]
    leftovers = _leave_interrupted_writes(path)
    fresh = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    assert ckpt.load_checkpoint(path, fresh, {}) == {"epoch": 4}
    assert not any(p.exists() for p in leftovers)
    for a, b in zip(fresh.variables, model.variables):
        np.testing.assert_array_equal(a.numpy(), b.numpy())
    # a truncated checkpoint (not something our writes leave, but a damaged disk can) is
    # refused with a clear error and leaves the model untouched
    path.write_bytes(path.read_bytes()[:-40])
    before = [v.numpy().copy() for v in fresh.variables]
    with pytest.raises(RunDirError, match="corrupt or unreadable"):
        ckpt.load_checkpoint(path, fresh, {})
    for a, b in zip(fresh.variables, before):
        np.testing.assert_array_equal(a.numpy(), b)


def test_atomic_writes_and_model_saves_keep_the_old_file(tmp_path):
    import errno

    from aca_keras.errors import StorageError
    from aca_keras.io import atomic

    atomic.atomic_write_json(tmp_path / "a.json", {"a": 1})
    assert atomic.read_json(tmp_path / "a.json") == {"a": 1}
    (tmp_path / "source.bin").write_bytes(b"snapshot")
    atomic.atomic_copy_file(tmp_path / "source.bin", tmp_path / "copy.bin")
    assert (tmp_path / "copy.bin").read_bytes() == b"snapshot"
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    saved = atomic.atomic_save_model(model, tmp_path / "model.keras")
    for a, b in zip(keras.saving.load_model(saved).variables, model.variables):
        np.testing.assert_array_equal(a.numpy(), b.numpy())
    before = saved.read_bytes()

    class DiskFull:
        def save(self, path, overwrite=True):
            Path(path).write_bytes(b"PK\x03\x04 part of an archive")
            raise OSError(errno.ENOSPC, "No space left on device")

    with pytest.raises(StorageError, match="previous version of the file is intact"):
        atomic.atomic_save_model(DiskFull(), saved)
    assert saved.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "a.json", "copy.bin", "model.keras", "source.bin"]  # no temporary left


def test_search_is_reproducible_and_recorded(uninterrupted_search, tmp_path):
    from aca_keras.searching.pipeline import search

    search(_search_arrays(), run_dir=tmp_path / "again", **SEARCH)
    for a, b in zip(_records(tmp_path / "again"), _records(uninterrupted_search)):
        assert a["alphas"] == b["alphas"]
    _assert_same_arrays(tmp_path / "again" / "checkpoint.npz",
                        uninterrupted_search / "checkpoint.npz")
    config = json.loads((uninterrupted_search / "config.json").read_text())
    assert config["seed"] == SEARCH["seed"]
    assert {"aca_keras", "tensorflow", "keras", "numpy", "python"} <= set(config["versions"])
    assert (config["strategy"], config["replicas"], config["dtype_policy"]) == \
        ("default", 1, "float32")


def test_training_is_reproducible_and_recorded(uninterrupted_training, tmp_path):
    from aca_keras.training import train

    expected_dir, expected = uninterrupted_training
    again = train(_train_model(), _train_bundle(), run_dir=tmp_path / "again", **TRAIN)
    assert again.history == expected.history
    for a, b in zip(again.model.variables, expected.model.variables):
        np.testing.assert_array_equal(a.numpy(), b.numpy())
    saved = json.loads((expected_dir / "train_config.json").read_text())
    assert saved["seed"] == TRAIN["seed"] and saved["epochs"] == TRAIN["epochs"]
    assert {"aca_keras", "tensorflow", "keras", "numpy"} <= set(saved["versions"])
    assert saved["model"]["cells"] == 3 and saved["model"]["architecture"]["format"]
    assert (saved["strategy"], saved["replicas"], saved["dtype_policy"]) == \
        ("default", 1, "float32")


def test_nan_stops_search_naming_the_checkpoint(tmp_path):
    from aca_keras.searching.pipeline import search

    run_dir = tmp_path / "run"
    with pytest.raises(NumericalError) as info:
        search(_search_arrays(), run_dir=run_dir, callbacks=[_PoisonWeights(epoch=2)],
               **SEARCH)
    message = str(info.value)
    assert str(run_dir / "checkpoint.npz") in message and "(epoch 1)" in message
    assert "nan" in message.lower()
    assert ckpt.read_checkpoint_meta(run_dir / "checkpoint.npz")["epochs_done"] == 1


def test_nan_stops_training_naming_the_checkpoint(tmp_path):
    from aca_keras.training import train

    run_dir = tmp_path / "run"
    with pytest.raises(NumericalError) as info:
        train(_train_model(), _train_bundle(), run_dir=run_dir,
              callbacks=[_PoisonWeights(epoch=2)], **TRAIN)
    message = str(info.value)
    checkpoint = run_dir / "train_checkpoint" / "checkpoint.npz"
    assert str(checkpoint) in message and "(epoch 1)" in message
    assert "step 1 of epoch 2" in message
    assert ckpt.read_checkpoint_meta(checkpoint)["epoch"] == 1
    # a huge learning rate diverges in the first epoch: no checkpoint to name yet
    with pytest.raises(NumericalError, match="no epoch had finished"):
        train(_train_model(), _train_bundle(), run_dir=tmp_path / "lr", learning_rate=1e35,
              grad_clip=None, **{**TRAIN, "epochs": 1})


def test_history_csv_rows_line_up_after_a_resume_that_lacks_a_figure(tmp_path):
    """A resumed run appends to ``history.csv``; its first epoch may lack a figure the
    header has (the collapse monitor skips epochs). Every row must keep the header's
    columns, with ``NA`` where the figure is missing, and later figures must still land."""
    from aca_keras.callbacks import EpochCSVLogger

    path = tmp_path / "history.csv"
    first = EpochCSVLogger(str(path), append=False)
    first.on_train_begin()
    first.on_epoch_end(0, {"loss": 2.0, "hessian_eigenvalue": 1.5, "skip_edges": 0})
    first.on_epoch_end(1, {"loss": 1.9, "skip_edges": 1})
    first.on_train_end()

    resumed = EpochCSVLogger(str(path), append=True)
    resumed.on_train_begin()
    resumed.on_epoch_end(2, {"loss": 1.8, "skip_edges": 2})
    resumed.on_epoch_end(3, {"loss": 1.7, "hessian_eigenvalue": 4.25, "skip_edges": 3})
    resumed.on_train_end()

    lines = path.read_text().splitlines()
    header = lines[0].split(",")
    assert lines.count(lines[0]) == 1                      # the header is written once
    assert all(len(line.split(",")) == len(header) for line in lines)
    rows = list(csv.DictReader(path.open()))
    assert [int(r["epoch"]) for r in rows] == [1, 2, 3, 4]
    assert [float(r["loss"]) for r in rows] == [2.0, 1.9, 1.8, 1.7]
    assert [int(r["skip_edges"]) for r in rows] == [0, 1, 2, 3]
    assert [r["hessian_eigenvalue"] for r in rows] == ["1.5", "NA", "NA", "4.25"]


if __name__ == "__main__":
    _child_main(sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3]))
