"""Evaluation-stage training: the optimiser, the recipe, checkpoint/resume, the CLI."""

from __future__ import annotations

import csv
import functools
import json

import keras
import numpy as np
import pytest
from test_case import tiny_architecture

from aca_keras.callbacks import StopOnNonFinite, last_good_checkpoint
from aca_keras.cli.train import main as cli_main
from aca_keras.data import loading as data
from aca_keras.errors import NumericalError, RunDirError
from aca_keras.io import checkpoint as ckpt
from aca_keras.models.cloning import clone_model
from aca_keras.models.derived import DerivedNetwork, build_model, load_model
from aca_keras.space.validation import is_int
from aca_keras.training import L2SGD, effective_cutout, train, train_run

C = 4
EPOCHS = 2
BATCH = 16


_architecture = tiny_architecture


def _arrays(n: int = 64, seed: int = 0):
    """Tiny 8x8x3, 4-class images whose class is visible (a brighter channel)."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 4, n).astype("int32")
    x = rng.integers(0, 128, (n, 8, 8, 3)).astype("float32")
    x[..., 0] += 30.0 * y[:, None, None]
    return x.astype("uint8"), y


def _bundle():
    x, y = _arrays()
    xt, yt = _arrays(16, seed=1)
    return data.load((x, y), test=(xt, yt))


def _model(seed: int, bundle, auxiliary: bool = True) -> DerivedNetwork:
    keras.utils.set_random_seed(seed)
    return build_model(_architecture(), bundle.input_shape, bundle.num_classes, cells=3,
                       channels=C, auxiliary=auxiliary, drop_path=0.2, mean=bundle.mean,
                       std=bundle.std)


def _values(model) -> list[np.ndarray]:
    return [np.array(v.numpy()) for v in model.variables]


class _Interrupt(Exception):
    pass


class _StopAfterFirstEpoch(keras.callbacks.Callback):
    def on_epoch_end(self, epoch, logs=None):
        raise _Interrupt(f"stopped after epoch {epoch + 1}")


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    """A 2-epoch run with a run directory (shared by the tests below)."""
    run_dir = tmp_path_factory.mktemp("uninterrupted")
    bundle = _bundle()
    result = train(_model(0, bundle), bundle, epochs=EPOCHS, batch_size=BATCH, seed=11,
                   run_dir=run_dir, verbose=0)
    return result, run_dir, _values(result.model)


def test_l2sgd_is_pytorch_sgd_with_coupled_weight_decay():
    w0 = np.array([1.0, -2.0], dtype="float32")
    grads = [np.array([3.0, 4.0], "float32"), np.array([-1.0, 0.5], "float32")]
    lr, mu, wd, clip = 0.1, 0.9, 0.01, 1.0
    var = keras.Variable(w0)
    opt = L2SGD(learning_rate=lr, momentum=mu, l2=wd, global_clipnorm=clip)
    w, buf = w0.astype("float64"), np.zeros(2)
    for g in grads:
        opt.apply_gradients([(keras.ops.convert_to_tensor(g), var)])
        g = g * min(1.0, clip / np.linalg.norm(g))  # torch: clip_grad_norm_, then step
        d = g + wd * w
        buf = mu * buf + d
        w = w - lr * buf
    np.testing.assert_allclose(var.numpy(), w, rtol=1e-6)
    assert L2SGD.from_config(opt.get_config()).l2 == wd


def test_is_int_counts_integers_not_bools():
    assert is_int(3) and is_int(np.int64(3))
    assert not any(is_int(v) for v in (True, np.bool_(True), 3.0, "3", None))


def test_stop_on_non_finite_names_the_last_good_checkpoint(tmp_path):
    path = tmp_path / "checkpoint.npz"
    stop = StopOnNonFinite(("loss", "alpha_loss"), checkpoint=functools.partial(
        last_good_checkpoint, path, "epochs_done"), advice="Resume.")
    stop.on_epoch_begin(1)
    stop.on_train_batch_end(0, {"loss": 1.0, "alpha_loss": 2.0})
    with pytest.raises(NumericalError, match="alpha_loss became nan at step 3 of epoch 2: "
                       "the run diverged; no epoch had finished"):
        stop.on_train_batch_end(2, {"loss": 1.0, "alpha_loss": float("nan")})
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    ckpt.save_checkpoint(path, model, {}, {"epochs_done": 1})
    with pytest.raises(NumericalError, match=r"loss became inf after epoch 2: .*checkpoint is "
                       r".*checkpoint.npz \(epoch 1\)\. Resume\.$"):
        stop.on_epoch_end(1, {"loss": float("inf")})


def test_clone_model_copies_every_variable():
    bundle = _bundle()
    model = _model(0, bundle)
    for v in model.non_trainable_variables:  # BatchNorm statistics and random states too
        v.assign(v.numpy() + 1)
    copy = clone_model(model)
    assert type(copy) is DerivedNetwork and copy is not model
    for a, b in zip(copy.variables, model.variables):
        np.testing.assert_array_equal(a.numpy(), b.numpy())


def test_effective_cutout():
    assert effective_cutout(16, (32, 32, 3)) == 16
    assert effective_cutout(16, (8, 8, 3)) == 4
    assert effective_cutout(0, (32, 32, 3)) == 0


def test_training_records_history_and_checkpoints(uninterrupted):
    result, run_dir, _ = uninterrupted
    history = result.history
    assert history["epoch"] == [1, 2]
    assert all(np.isfinite(history["loss"])) and len(history["loss"]) == EPOCHS
    assert history["loss"][-1] < history["loss"][0] * 1.5
    for key in ("logits_loss", "aux_logits_loss", "accuracy"):
        assert len(history[key]) == EPOCHS
    # total loss = main loss + 0.4 * auxiliary loss
    np.testing.assert_allclose(history["loss"],
                               np.add(history["logits_loss"],
                                      np.multiply(0.4, history["aux_logits_loss"])), rtol=1e-4)
    assert history["drop_path_rate"] == pytest.approx([0.0, 0.1])  # 0.2 * epoch / epochs
    assert history["learning_rate"][-1] == pytest.approx(0.0, abs=1e-7)  # cosine to 0
    assert 0.0 <= result.test_accuracy <= 1.0
    assert (run_dir / "train_checkpoint" / "checkpoint.npz").is_file()
    with open(run_dir / "train_history.csv") as f:
        rows = list(csv.DictReader(f))
    assert [int(r["epoch"]) for r in rows] == [1, 2]
    saved = json.loads((run_dir / "train_result.json").read_text())
    assert saved["test_accuracy"] == result.test_accuracy and saved["seed"] == 11
    assert json.loads((run_dir / "train_config.json").read_text())["cutout"] == 4
    trained = load_model(run_dir / "trained.keras", compile=False)
    x = _bundle().x_test.astype("float32")
    np.testing.assert_allclose(trained.inference_model().predict(x, verbose=0),
                               result.model.inference_model().predict(x, verbose=0),
                               rtol=1e-5, atol=1e-6)
    with pytest.raises(RunDirError, match="already holds a training run"):
        train(_model(0, _bundle()), _bundle(), epochs=EPOCHS, batch_size=BATCH, seed=11,
              run_dir=run_dir, verbose=0)


def test_resume_repeats_the_uninterrupted_run(uninterrupted, tmp_path):
    expected_result, _, expected = uninterrupted
    bundle = _bundle()
    with pytest.raises(_Interrupt):
        train(_model(0, bundle), bundle, epochs=EPOCHS, batch_size=BATCH, seed=11,
              run_dir=tmp_path, verbose=0, callbacks=[_StopAfterFirstEpoch()])
    assert not (tmp_path / "trained.keras").exists()
    # a model with other initial weights: everything must come from the checkpoint
    resumed = train(_model(99, bundle), bundle, epochs=EPOCHS, batch_size=BATCH,
                    run_dir=tmp_path, resume=True, verbose=0)
    assert resumed.history["epoch"] == [1, 2]
    np.testing.assert_allclose(resumed.history["loss"], expected_result.history["loss"],
                               rtol=1e-5)
    got = _values(resumed.model)
    assert len(got) == len(expected)
    for a, b in zip(got, expected):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    assert (tmp_path / "trained.keras").is_file()


def _run_dir(tmp_path, dataset: str | None) -> None:
    x, y = _arrays()
    xt, yt = _arrays(16, seed=1)
    np.savez(tmp_path / "tiny.npz", x=x, y=y, x_test=xt, y_test=yt)
    run = tmp_path / "run"
    run.mkdir()
    _architecture().save(run / "architecture.json")
    config = {"dataset": dataset if dataset is not None else str(tmp_path / "tiny.npz"),
              "data_dir": None, "seed": 5, "eval_cells": 3, "eval_channels": C}
    (run / "config.json").write_text(json.dumps(config))
    return run


def test_cli_trains_a_run_directory(tmp_path, capsys):
    run = _run_dir(tmp_path, None)
    status = cli_main([str(run), "--epochs", "1", "--batch-size", str(BATCH),
                       "--no-auxiliary", "--verbose", "0"])
    assert status == 0
    trained = load_model(run / "trained.keras", compile=False)
    assert trained.cells == 3 and trained.channels == C and not trained.auxiliary
    assert trained.architecture == _architecture()
    settings = json.loads((run / "train_config.json").read_text())
    assert settings["seed"] == 5 and settings["epochs"] == 1
    with open(run / "train_history.csv") as f:
        assert len(list(csv.DictReader(f))) == 1


def test_cli_and_train_run_errors(tmp_path, capsys):
    missing = tmp_path / "nope"
    assert cli_main([str(missing), "--verbose", "0"]) == 1
    assert "does not exist" in capsys.readouterr().err
    empty = tmp_path / "empty"
    empty.mkdir()
    assert cli_main([str(empty), "--verbose", "0"]) == 1
    assert "architecture.json" in capsys.readouterr().err
    with pytest.raises(RunDirError, match="architecture.json"):
        train_run(empty)
    run = _run_dir(tmp_path, "<tuple>")
    with pytest.raises(RunDirError, match="--dataset"):
        train_run(run)
    (run / "config.json").unlink()
    with pytest.raises(RunDirError, match="config.json"):
        train_run(run)


def test_cli_help_documents_every_option(capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli_main(["--help"])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    for option in ("--epochs", "--batch-size", "--cells", "--channels", "--dataset", "--seed",
                   "--resume", "--no-auxiliary", "--drop-path", "--learning-rate",
                   "--weight-decay", "--grad-clip", "--cutout", "--data-dir"):
        assert option in text
    from aca_keras.cli.train import build_parser

    for action in build_parser()._actions:
        assert action.help, action.dest
