"""Training an architecture by name or path (``aca-train RUN_DIR --architecture NAME_OR_PATH``,
``train_run(run_dir, architecture=...)``): the run directory is created and records the
architecture and the settings, the test accuracy is measured on exactly the held-out images,
``--resume`` continues from the directory alone, and wrong uses are refused."""

from __future__ import annotations

import json

import keras
import numpy as np
import pytest
from test_case import tiny_architecture

from aca_keras import zoo
from aca_keras.cli.train import main as cli_main
from aca_keras.data import loading as data
from aca_keras.data import split_digest
from aca_keras.errors import RunDirError
from aca_keras.models.derived import load_model
from aca_keras.space.architecture import Architecture
from aca_keras.training.trainer import train_run

FRACTION = 0.25
TINY = dict(cells=3, channels=4, batch_size=32, verbose=0)


def _architecture() -> Architecture:
    return tiny_architecture(name="tiny-test")


@pytest.fixture(scope="module")
def npz_path(tmp_path_factory):
    """The first 200 images of the bundled digits (8x8, grey, 10 classes) as an .npz with no
    test split: test_fraction 0.25 holds out 50 of them."""
    bundle = data.load("digits")
    x = np.concatenate([bundle.x_train, bundle.x_test])[:200]
    y = np.concatenate([bundle.y_train, bundle.y_test])[:200]
    path = tmp_path_factory.mktemp("data") / "digits200.npz"
    np.savez(path, x=x, y=y)
    return path


def _held_out_accuracy(model, path) -> float:
    held = data.load(str(path), test_fraction=FRACTION)
    assert len(held.y_test) == 50
    logits = model.inference_model().predict(held.x_test.astype("float32"), verbose=0)
    return float(np.mean(np.argmax(logits, axis=-1) == held.y_test))


class _Interrupt(Exception):
    pass


class _StopAfterFirstEpoch(keras.callbacks.Callback):
    def on_epoch_end(self, epoch, logs=None):
        raise _Interrupt(f"stopped after epoch {epoch + 1}")


def test_an_architecture_file_trains_in_a_new_directory_and_resumes_from_it(
        npz_path, tmp_path, capsys):
    arch_file = _architecture().save(tmp_path / "arch.json")
    run = tmp_path / "new" / "run"  # created, parents too
    with pytest.raises(_Interrupt):
        train_run(run, architecture=arch_file, dataset=str(npz_path), test_fraction=FRACTION,
                  epochs=2, seed=7, callbacks=[_StopAfterFirstEpoch()], **TINY)
    assert Architecture.load(run / "architecture.json") == _architecture()
    config = json.loads((run / "config.json").read_text())
    assert config["dataset"] == str(npz_path.resolve())
    assert config["architecture_source"] == f"file:{arch_file.resolve()}"
    assert {k: config[k] for k in ("data_dir", "test_fraction", "seed", "eval_cells",
                                   "eval_channels", "auxiliary", "drop_path")} == {
        "data_dir": None, "test_fraction": FRACTION, "seed": 7, "eval_cells": 3,
        "eval_channels": 4, "auxiliary": True, "drop_path": 0.2}
    assert not (run / "trained.keras").exists()

    # a resume on another split is refused (the checkpoint records the split)
    with pytest.raises(RunDirError, match="other data: the run trained on 150 images"):
        train_run(run, resume=True, test_fraction=0.5, verbose=0)
    # the directory alone: architecture, data, hold-out, macro settings, epochs, batch size
    assert cli_main([str(run), "--resume", "--verbose", "0"]) == 0
    result = json.loads((run / "train_result.json").read_text())
    settings = json.loads((run / "train_config.json").read_text())
    assert settings["epochs"] == 2 and settings["batch_size"] == 32 and settings["seed"] == 7
    # trained on the 150 images outside the hold-out, evaluated on the 50 held out
    held = data.load(str(npz_path), test_fraction=FRACTION)
    assert (settings["test_fraction"], settings["train_images"],
            settings["test_images"]) == (FRACTION, 150, 50)
    assert settings["test_split_sha256"] == split_digest(held.x_test, held.y_test)
    assert settings["architecture_source"] == config["architecture_source"]
    history = (run / "train_history.csv").read_text().splitlines()
    assert [line.split(",")[0] for line in history[1:]] == ["1", "2"]
    trained = load_model(run / "trained.keras", compile=False)
    assert trained.architecture == _architecture() and trained.cells == 3
    assert result["test_accuracy"] == pytest.approx(_held_out_accuracy(trained, npz_path),
                                                    abs=1e-6)

    # the same architecture again: the directory is a run; a second training is refused
    with pytest.raises(RunDirError, match="already holds a training run"):
        train_run(run, architecture=_architecture(), epochs=2, **TINY)


def test_cli_trains_a_zoo_entry_by_name(npz_path, tmp_path, capsys):
    run = tmp_path / "zoo-run"
    status = cli_main([str(run), "--architecture", "darts-v2-cifar10", "--dataset",
                       str(npz_path), "--test-fraction", str(FRACTION), "--cells", "3",
                       "--channels", "4", "--epochs", "1", "--batch-size", "64", "--seed", "3",
                       "--no-auxiliary", "--verbose", "0"])
    assert status == 0, capsys.readouterr().err
    expected = zoo.architecture("darts-v2-cifar10")
    written = Architecture.load(run / "architecture.json")
    assert written == expected
    assert json.loads((run / "architecture.json").read_text()) == expected.to_dict()
    config = json.loads((run / "config.json").read_text())
    assert config["architecture_source"] == "zoo:darts-v2-cifar10"
    assert config["auxiliary"] is False and config["test_fraction"] == FRACTION
    trained = load_model(run / "trained.keras", compile=False)
    assert trained.architecture == expected and not trained.auxiliary
    result = json.loads((run / "train_result.json").read_text())
    assert result["test_split"]["images"] == 50
    assert result["test_accuracy"] == pytest.approx(_held_out_accuracy(trained, npz_path),
                                                    abs=1e-6)


def test_an_explicit_test_fraction_overrides_the_runs(npz_path, tmp_path):
    run = tmp_path / "search-run"
    run.mkdir()
    _architecture().save(run / "architecture.json")
    (run / "config.json").write_text(json.dumps(
        {"dataset": str(npz_path), "seed": 5, "eval_cells": 3, "eval_channels": 4,
         "auxiliary": False, "test_fraction": FRACTION}))
    result = train_run(run, test_fraction=0.5, epochs=1, **TINY)
    settings = json.loads((run / "train_config.json").read_text())
    assert (settings["test_fraction"], settings["train_images"],
            settings["test_images"]) == (0.5, 100, 100)
    held = data.load(str(npz_path), test_fraction=0.5)
    logits = result.model.inference_model().predict(held.x_test.astype("float32"), verbose=0)
    assert result.test_accuracy == pytest.approx(
        float(np.mean(np.argmax(logits, axis=-1) == held.y_test)), abs=1e-6)
    # the search's own record is left as it was
    assert json.loads((run / "config.json").read_text())["test_fraction"] == FRACTION


def test_wrong_uses_are_refused(npz_path, tmp_path, capsys):
    dataset = ["--dataset", str(npz_path), "--verbose", "0"]
    # a directory holding another architecture
    other = tmp_path / "other"
    _architecture().save(other / "architecture.json")
    assert cli_main([str(other), "--architecture", "darts-v2-cifar10", *dataset]) == 1
    err = capsys.readouterr().err
    assert "already holds a different architecture.json ('tiny-test'" in err
    assert "leave out --architecture" in err and "choose a new run directory" in err
    with pytest.raises(RunDirError, match="leave out architecture="):
        train_run(other, architecture=zoo.architecture("darts-v1-cifar10"),
                  dataset=str(npz_path))
    assert sorted(p.name for p in other.iterdir()) == ["architecture.json"]

    # an unknown zoo name: the known ones are listed
    fresh = tmp_path / "fresh"
    assert cli_main([str(fresh), "--architecture", "darts-v9", *dataset]) == 1
    err = capsys.readouterr().err
    assert "No zoo entry named 'darts-v9'" in err
    for name in ("darts-v1-cifar10", "darts-v2-cifar10", "pc-darts-cifar10"):
        assert name in err
    # a path with no file is not taken for a zoo name
    assert cli_main([str(fresh), "--architecture", "runs/x/architecture.json",
                     *dataset]) == 1
    assert "no such file" in capsys.readouterr().err

    # a new directory without --dataset: nothing is created
    assert cli_main([str(fresh), "--architecture", "darts-v2-cifar10", "--verbose", "0"]) == 1
    err = capsys.readouterr().err
    assert "needs --dataset NAME_OR_PATH" in err
    with pytest.raises(RunDirError, match=r"needs dataset= \(CLI: --dataset"):
        train_run(fresh, architecture=_architecture())
    assert not fresh.exists()

    # an unfinished search (config.json, no architecture.json) is not written into
    unfinished = tmp_path / "unfinished"
    unfinished.mkdir()
    (unfinished / "config.json").write_text(json.dumps({"dataset": str(npz_path)}))
    with pytest.raises(RunDirError, match="without architecture.json: a search that has not "
                                          "finished"):
        train_run(unfinished, architecture=_architecture())
    assert sorted(p.name for p in unfinished.iterdir()) == ["config.json"]
