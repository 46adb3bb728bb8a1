"""keras-tuner integration on tiny settings: the evaluation-stage HyperModel and the
SearchTuner (trials record metrics, the best architecture builds, resume skips finished
trials)."""

from __future__ import annotations

import json
import math

import keras_tuner as kt
import numpy as np
import pytest
from test_case import tiny_architecture

from aca_keras import data
from aca_keras.models.derived import DerivedNetwork, build_model
from aca_keras.space.architecture import Architecture
from aca_keras.tuning import (
    OBJECTIVE,
    SEARCH_OBJECTIVE,
    DerivedHyperModel,
    SearchSpace,
    SearchTuner,
)
from aca_keras.tuning.tuner import _tuning_bundle

OPS = ("none", "max_pool_3x3", "avg_pool_3x3", "sep_conv_3x3", "sep_conv_5x5", "dil_conv_3x3",
       "dil_conv_5x5")


_architecture = tiny_architecture


@pytest.fixture(scope="module")
def digits():
    bundle = data.load("digits")
    return bundle


def _completed(tuner) -> list:
    trials = list(tuner.oracle.trials.values())
    for trial in trials:
        assert trial.status == "COMPLETED", trial.message
    return trials


# --------------------------------------------------------------------------- HyperModel


def test_hyperparameter_specs_fix_narrow_or_choose():
    hm = DerivedHyperModel(_architecture(), (8, 8, 1), 10, cells=3, channels=(4, 8, 4),
                           learning_rate=[0.01, 0.05], drop_path=(0.0, 0.2))
    hp = kt.HyperParameters()
    values = hm.settings(hp)
    assert values["cells"] == 3 and values["channels"] == 4
    space = {p.name: p for p in hp.space}
    assert isinstance(space["cells"], kt.engine.hyperparameters.Fixed)
    assert space["channels"].get_config()["max_value"] == 8
    assert list(space["learning_rate"].values) == [0.01, 0.05]
    assert space["weight_decay"].get_config()["sampling"] == "log"  # default range
    assert "auxiliary_weight" in space
    no_aux = DerivedHyperModel(_architecture(), (8, 8, 1), 10, auxiliary=False)
    hp = kt.HyperParameters()
    no_aux.settings(hp)
    assert "auxiliary_weight" not in hp.values
    for bad in ({"cells": 0}, {"channels": (8, 4)}, {"drop_path": 1.0},
                {"learning_rate": "fast"}, {"cells": [2.5]}):
        with pytest.raises(ValueError):
            DerivedHyperModel(_architecture(), (8, 8, 1), 10, **bad)


def test_hypermodel_tunes_the_evaluation_stage(digits, tmp_path):
    x, y = digits.x_train[:160], digits.y_train[:160]
    hm = DerivedHyperModel.for_data(_architecture(), digits, cells=[2, 3], channels=4)
    tuner = kt.RandomSearch(hm, objective=hm.objective, max_trials=2, seed=3,
                            directory=tmp_path, project_name="eval")
    tuner.search(x, y, validation_data=(digits.x_test[:64], digits.y_test[:64]), epochs=1,
                 batch_size=32, verbose=0)
    trials = _completed(tuner)
    assert len(trials) == 2
    for trial in trials:
        value = trial.metrics.get_last_value(OBJECTIVE)
        assert value is not None and 0.0 <= value <= 1.0
        assert math.isfinite(trial.metrics.get_last_value("loss"))
    best = tuner.get_best_hyperparameters(1)[0]
    model = hm.build(best)
    assert isinstance(model, DerivedNetwork)
    assert model.cells == best.get("cells") and model.channels == 4
    assert model.auxiliary and model.auxiliary_weight == pytest.approx(best.get("auxiliary_weight"))
    assert model.architecture == _architecture()
    trained = tuner.get_best_models(1)[0]
    assert trained.predict(x[:4].astype("float32"), verbose=0)[0].shape == (4, 10)


def test_hypermodel_without_auxiliary_head_on_datasets(digits, tmp_path):
    import tensorflow as tf

    x, y = digits.x_train[:128].astype("float32"), digits.y_train[:128]
    train = tf.data.Dataset.from_tensor_slices((x[:96], y[:96])).batch(32)
    val = tf.data.Dataset.from_tensor_slices((x[96:], y[96:])).batch(32)
    hm = DerivedHyperModel.for_data(_architecture(), digits, cells=2, channels=4,
                                    auxiliary=False, learning_rate=(0.01, 0.05))
    tuner = kt.BayesianOptimization(hm, objective=kt.Objective(OBJECTIVE, "max"), max_trials=1,
                                    directory=tmp_path, project_name="bo")
    tuner.search(train, validation_data=val, epochs=2, verbose=0)
    (trial,) = _completed(tuner)
    assert 0.0 <= trial.metrics.get_last_value(OBJECTIVE) <= 1.0  # same name as with the head
    assert not tuner.get_best_models(1)[0].auxiliary

    # fit() applies the per-epoch cosine learning rate and the drop path ramp
    hp = trial.hyperparameters
    model = hm.build(hp)
    history = hm.fit(hp, model, train, validation_data=val, epochs=2, verbose=0)
    assert sorted(history.history) == ["logits_accuracy", "loss", "val_logits_accuracy",
                                       "val_loss"]
    lr = float(model.optimizer.learning_rate.numpy())
    assert lr == pytest.approx(hp.get("learning_rate") / 2)  # cos(pi / 2) at epoch 2 of 2
    assert model.drop_path_rate == pytest.approx(hp.get("drop_path") / 2)


# -------------------------------------------------------------------------- SearchTuner

TINY_SEARCH = dict(epochs=1, cells=3, channels=4, nodes=2, batch_size=32, eval_cells=2,
                   eval_channels=4, score_batches=1, hessian_every=0)
TINY_TRAIN = dict(epochs=1, batch_size=32)


def _search_tuner(directory, max_trials: int, overwrite: bool) -> SearchTuner:
    return SearchTuner(max_trials=max_trials, oracle_seed=7, ops="aca", variant="darts",
                       allocator=["adaptive", "fixed"], alpha_learning_rate=(1e-4, 1e-3),
                       seed=(0, 99), search_settings=TINY_SEARCH, train_settings=TINY_TRAIN,
                       directory=directory, project_name="aca", overwrite=overwrite)


def test_search_space_declares_the_search_settings():
    hp = kt.HyperParameters()
    settings = SearchSpace(ops=["aca", "darts"], seed=5).build(hp)
    assert settings["ops"] in ("aca", "darts") and settings["seed"] == 5
    assert {"alpha_learning_rate", "ops", "allocator", "seed"} <= set(hp.values)
    custom = SearchSpace(ops="none,max_pool_3x3,sep_conv_3x3").build(kt.HyperParameters())
    assert custom["ops"] == ["none", "max_pool_3x3", "sep_conv_3x3"]
    with pytest.raises(Exception, match="ops|operation"):
        SearchSpace(ops="no_such_set")
    with pytest.raises(Exception, match="allocator"):
        SearchSpace(allocator="otsu-ish")
    with pytest.raises(ValueError, match="search_settings"):
        SearchTuner(search_settings={"seed": 1}, directory="/nonexistent-unused")


@pytest.mark.slow  # 46 s: two search trials and a resumed tuner
def test_search_tuner_runs_trials_and_resumes(digits, tmp_path, monkeypatch):
    x, y = digits.x_train[:240], digits.y_train[:240]
    tuner = _search_tuner(tmp_path, max_trials=2, overwrite=True)
    tuner.search((x, y), verbose=0)
    trials = _completed(tuner)
    assert len(trials) == 2
    for trial in trials:
        value = trial.metrics.get_last_value(SEARCH_OBJECTIVE)
        assert 0.0 <= value <= 1.0
        assert trial.metrics.get_last_value("params") > 0
        assert trial.metrics.get_last_value("flops") > 0
        run_dir = tuner.search_run_dir(trial)
        config = json.loads((run_dir / "config.json").read_text())
        assert config["seed"] == trial.hyperparameters.get("seed")
        assert config["allocator"] == trial.hyperparameters.get("allocator")
        assert config["variant"] == "darts" and config["ops"] == "aca"
        assert config["alpha_learning_rate"] == pytest.approx(
            trial.hyperparameters.get("alpha_learning_rate"))
        assert (run_dir / "architecture.json").is_file()
        assert (run_dir / "cell_normal.png").is_file()
        assert (tuner.trial_dir(trial) / "train" / "trained.keras").is_file()
    # the score is the trained network's accuracy on the held-out validation split
    held_out = _tuning_bundle(data.load((x, y)), None, 0.2)
    assert held_out.num_train == 192 and held_out.num_test == 48
    first = trials[0]
    logits = tuner.load_model(first).inference_model().predict(
        held_out.x_test.astype("float32"), verbose=0)
    assert first.metrics.get_last_value(SEARCH_OBJECTIVE) == pytest.approx(
        float(np.mean(np.argmax(logits, axis=-1) == held_out.y_test)))

    best = tuner.get_best_architecture()
    assert best == Architecture.load(tuner.get_best_run_dir() / "architecture.json")
    model = build_model(best, digits.input_shape, digits.num_classes, cells=2, channels=4)
    assert model.predict(x[:2].astype("float32"), verbose=0)[0].shape == (2, 10)

    # Resume: a new tuner on the same project reloads the oracle and skips finished trials.
    calls = []
    original = SearchTuner.run_trial

    def counting(self, trial, *args, **kwargs):
        calls.append(trial.trial_id)
        return original(self, trial, *args, **kwargs)

    monkeypatch.setattr(SearchTuner, "run_trial", counting)
    again = _search_tuner(tmp_path, max_trials=2, overwrite=False)
    assert len(again.oracle.trials) == 2 and again.remaining_trials == 0
    again.search((x, y), verbose=0)
    assert calls == []
    assert again.get_best_architecture() == best


@pytest.mark.slow
def test_interrupted_trial_is_rerun_on_reload(digits, tmp_path, monkeypatch):
    """A trial interrupted mid-way (here: before scoring) is retried by a reloaded tuner, and
    its search resumes from the run directory instead of starting again."""
    from aca_keras.training import trainer as training

    x, y = digits.x_train[:240], digits.y_train[:240]
    tuner = _search_tuner(tmp_path, max_trials=1, overwrite=True)

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(training, "train", interrupted)
    with pytest.raises(KeyboardInterrupt):
        tuner.search((x, y), verbose=0)
    monkeypatch.undo()
    (trial,) = tuner.oracle.trials.values()
    run_dir = tuner.search_run_dir(trial)
    assert (run_dir / "architecture.json").is_file()
    stamp = (run_dir / "checkpoint.npz").stat().st_mtime_ns

    again = _search_tuner(tmp_path, max_trials=1, overwrite=False)
    again.search((x, y), verbose=0)
    (done,) = _completed(again)
    assert done.trial_id == trial.trial_id
    assert done.metrics.get_last_value(SEARCH_OBJECTIVE) is not None
    assert (run_dir / "checkpoint.npz").stat().st_mtime_ns == stamp  # no epoch was rerun
    assert np.isfinite(done.metrics.get_last_value("params"))
