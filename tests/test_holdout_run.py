"""A search run with a fixed hold-out (``test_fraction``) and a cut search set
(``search_images``): the search never reads the held-out images, ``aca-train`` on the run
trains on the rest and evaluates on exactly them."""

from __future__ import annotations

import json

import numpy as np
import pytest

from aca_keras.data import loading as data
from aca_keras.errors import DataError
from aca_keras.searching.config import SearchConfig
from aca_keras.searching.pipeline import load_search_data, search
from aca_keras.training.trainer import train_run

TINY = dict(epochs=1, cells=3, channels=4, nodes=2, batch_size=16, eval_cells=3,
            eval_channels=4, score_batches=1, seed=5, verbose=0, hessian_every=0)


@pytest.fixture(scope="module")
def npz_path(tmp_path_factory):
    bundle = data.load("digits")
    x = np.concatenate([bundle.x_train, bundle.x_test])[:240]
    y = np.concatenate([bundle.y_train, bundle.y_test])[:240]
    path = tmp_path_factory.mktemp("data") / "digits.npz"
    np.savez(path, x=x, y=y)
    return path, x, y


def test_search_data_holds_out_then_cuts(npz_path):
    path, x, y = npz_path
    config = SearchConfig(dataset=str(path), test_fraction=0.25, search_images=100)
    bundle = load_search_data(str(path), config)
    assert bundle.num_train == 100 and bundle.num_test == 60
    # the held-out part is data.load's own rule, and none of its images reaches the search
    full = data.load(str(path), test_fraction=0.25)
    np.testing.assert_array_equal(bundle.x_test, full.x_test)
    np.testing.assert_array_equal(bundle.x_train, full.x_train[:100])
    np.testing.assert_array_equal(bundle.y_train, full.y_train[:100])
    seen = {row.tobytes() for row in bundle.x_train.reshape(100, -1)}
    held = {row.tobytes() for row in full.x_test.reshape(60, -1)}
    assert not seen & held
    # the channel statistics are those of the whole training part (what retraining uses)
    assert bundle.mean == full.mean and bundle.std == full.std


def test_bad_settings_are_refused(npz_path):
    with pytest.raises(ValueError, match="test_fraction"):
        SearchConfig(test_fraction=1.5).validate()
    with pytest.raises(ValueError, match="search_images"):
        SearchConfig(search_images=1).validate()
    path = str(npz_path[0])
    with pytest.raises(DataError, match="between 1 and 180"):
        load_search_data(path, SearchConfig(dataset=path, test_fraction=0.25,
                                            search_images=500))


def test_run_records_the_holdout_and_training_evaluates_on_it(npz_path, tmp_path):
    path, _, _ = npz_path
    run = tmp_path / "run"
    search(str(path), run_dir=run, test_fraction=0.25, search_images=96, **TINY)
    config = json.loads((run / "config.json").read_text())
    assert config["test_fraction"] == 0.25 and config["search_images"] == 96
    result = train_run(run, epochs=1, batch_size=32, verbose=0, cells=3, channels=4)
    # trained on the 180 images outside the hold-out, evaluated on the 60 held out
    full = data.load(str(path), test_fraction=0.25)
    model = result.model.inference_model()
    predicted = np.argmax(model.predict(full.x_test.astype("float32"), verbose=0), axis=-1)
    assert result.test_accuracy == pytest.approx(float(np.mean(predicted == full.y_test)),
                                                 abs=1e-6)
