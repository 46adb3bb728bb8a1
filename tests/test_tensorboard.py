"""TensorBoard event files (``aca_keras.tensorboard``), read back: a search with the callback
writes history.csv's figures, the learning rates and the alphas' softmax as images; a
training with ``tensorboard=`` writes train_history.csv's figures and the test accuracy."""

from __future__ import annotations

import csv
import json
import math
from collections import defaultdict
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf
from test_case import tiny_architecture

from aca_keras.data import loading as data
from aca_keras.models.derived import build_model
from aca_keras.searching.pipeline import search
from aca_keras.tensorboard import TensorBoardLogger, alpha_heat_map, alpha_weights, edge_labels
from aca_keras.training import train

TINY = dict(epochs=2, cells=3, channels=4, nodes=2, batch_size=16, eval_cells=3,
            eval_channels=4, score_batches=2, seed=11, verbose=0, hessian_every=0)
SCALE = 16  # TensorBoardLogger's default: search(tensorboard=DIR) uses it


def _events(log_dir: Path) -> tuple[dict, dict, dict]:
    """``(scalars, images, texts)``: ``{tag: {step: value}}`` of every event file in
    ``log_dir``; an image is its decoded pixels."""
    scalars, images, texts = defaultdict(dict), defaultdict(dict), defaultdict(dict)
    files = sorted(log_dir.glob("events.out.tfevents.*"))
    assert files, f"no event file in {log_dir}"
    for path in files:
        for event in tf.compat.v1.train.summary_iterator(str(path)):
            for value in event.summary.value:
                plugin = value.metadata.plugin_data.plugin_name
                tensor = tf.make_ndarray(value.tensor)
                if plugin == "scalars":
                    assert event.step not in scalars[value.tag], (value.tag, event.step)
                    scalars[value.tag][event.step] = float(tensor)
                elif plugin == "images":
                    width, height, png = tensor[0], tensor[1], tensor[2]
                    pixels = tf.io.decode_png(png).numpy()
                    assert pixels.shape[:2] == (int(height), int(width))
                    images[value.tag][event.step] = pixels
                elif plugin == "text":
                    texts[value.tag][event.step] = tensor.item().decode()
    return dict(scalars), dict(images), dict(texts)


def _history(path: Path) -> dict[str, dict[int, float]]:
    """``{column: {epoch: value}}`` of a CSV history, without empty (``NA``) cells."""
    out: dict[str, dict[int, float]] = defaultdict(dict)
    with open(path) as handle:
        for row in csv.DictReader(handle):
            for key, value in row.items():
                if key != "epoch" and value not in ("", "NA"):
                    out[key][int(row["epoch"])] = float(value)
    return dict(out)


def _softmax(logits) -> np.ndarray:
    logits = np.asarray(logits, dtype=np.float64)
    e = np.exp(logits - logits.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


# ------------------------------------------------------------------------------ pieces


def test_heat_map_pixels_are_the_weights_times_255_in_blocks():
    weights = np.array([[0.0, 1.0, 0.5], [0.25, 0.75, 0.1]])
    picture = alpha_heat_map(weights, scale=2)
    assert picture.dtype == np.uint8 and picture.shape == (4, 6, 1)
    # 0.5 * 255 = 127.5 -> 128, 0.25 * 255 = 63.75 -> 64, 0.75 -> 191.25 -> 191, 0.1 -> 25.5 -> 26
    expected = np.array([[0, 255, 128], [64, 191, 26]], dtype=np.uint8)
    np.testing.assert_array_equal(picture[..., 0], np.kron(expected, np.ones((2, 2), np.uint8)))
    with pytest.raises(ValueError, match="scale"):
        alpha_heat_map(weights, scale=0)
    with pytest.raises(ValueError, match="matrix"):
        alpha_heat_map(np.zeros(3))


def test_edge_labels_follow_the_darts_edge_order():
    assert edge_labels(5) == ["2 <- 0", "2 <- 1", "3 <- 0", "3 <- 1", "3 <- 2"]
    assert len(edge_labels(14)) == 14 and edge_labels(14)[-1] == "5 <- 4"


def test_alpha_weights_are_the_softmax_over_operations():
    class Net:
        alpha_normal = keras.Variable(np.array([[0.0, math.log(3.0)], [1.0, 1.0]]))
        alpha_reduce = keras.Variable(np.zeros((2, 4)))

    weights = alpha_weights(Net())
    np.testing.assert_allclose(weights["normal"], [[0.25, 0.75], [0.5, 0.5]], rtol=1e-6)
    np.testing.assert_allclose(weights["reduce"], np.full((2, 4), 0.25))
    assert alpha_weights(object()) == {}


def test_logger_writes_numbers_and_skips_the_rest(tmp_path):
    logger = TensorBoardLogger(tmp_path, rename={"a": "b"}, values=lambda: {"c": 3})
    logger.set_model(keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)]))
    logger.on_train_begin()
    logger.on_epoch_end(0, {"a": 1.5, "none": None, "text": "x", "vector": np.ones(2),
                            "flag": True})
    logger.on_epoch_end(1, {"a": np.float32(2.5)})
    logger.on_train_end()
    scalars, images, _ = _events(tmp_path)
    # no optimiser (not compiled): no learning rate; no alphas: no images
    assert scalars == {"b": {1: 1.5, 2: 2.5}, "c": {1: 3.0, 2: 3.0}, "flag": {1: 1.0}}
    assert images == {}


# ---------------------------------------------------------------------------- a search


@pytest.fixture(scope="module")
def searched(tmp_path_factory):
    bundle = data.load("digits")
    root = tmp_path_factory.mktemp("tb-search")
    run_dir, log_dir = root / "run", root / "tb"
    search((bundle.x_train[:192], bundle.y_train[:192]), run_dir=run_dir,
           tensorboard=log_dir, **TINY)
    return run_dir, log_dir


def test_search_scalars_are_the_history(searched):
    run_dir, log_dir = searched
    scalars, _, _ = _events(log_dir)
    history = _history(run_dir / "history.csv")
    assert {"loss", "alpha_loss", "accuracy", "alpha_accuracy", "skip_edges",
            "parameter_free_edges"} <= set(history)
    for key, column in history.items():
        assert scalars[key] == pytest.approx(column, rel=1e-6), key
    # besides the history: the learning rates at the end of each epoch
    assert set(scalars) == set(history) | {"learning_rate", "alpha_learning_rate"}
    # alphas: Adam at a constant 3e-4; weights: cosine from 0.025 to 0.001 over both epochs
    assert scalars["alpha_learning_rate"] == pytest.approx({1: 3e-4, 2: 3e-4})
    assert scalars["learning_rate"] == pytest.approx({1: 0.013, 2: 0.001}, rel=1e-5)


def test_search_alpha_images_are_the_softmax_of_the_alphas(searched):
    run_dir, log_dir = searched
    _, images, texts = _events(log_dir)
    records = [json.loads(line) for line in (run_dir / "alphas.jsonl").read_text().splitlines()]
    assert set(images) == {"alphas/normal", "alphas/reduce"}
    for cell in ("normal", "reduce"):
        assert sorted(images[f"alphas/{cell}"]) == [1, 2]  # one per epoch
        for record in records:
            pixels = images[f"alphas/{cell}"][record["epoch"]]
            expected = _softmax(record["alphas"][cell])
            assert expected.shape == (5, 7)
            assert pixels.shape == (5 * SCALE, 7 * SCALE, 1)
            blocks = pixels[..., 0].reshape(5, SCALE, 7, SCALE)
            assert (blocks == blocks[:, :1, :, :1]).all()  # uniform blocks
            np.testing.assert_allclose(blocks[:, 0, :, 0], 255 * expected, atol=0.5 + 1e-6)
        # the last line of alphas.jsonl is the last image, and the images changed
        assert not np.array_equal(images[f"alphas/{cell}"][1], images[f"alphas/{cell}"][2])
    legend = texts["alphas/legend"][1]
    assert "row 0: 2 <- 0" in legend and "row 4: 3 <- 2" in legend
    assert "column 0: none" in legend and "column 6: dil_conv_5x5" in legend


# -------------------------------------------------------------------------- a training


_architecture = tiny_architecture


def test_training_scalars_are_the_train_history(tmp_path):
    rng = np.random.default_rng(0)
    y = rng.integers(0, 4, 80).astype("int32")
    x = rng.integers(0, 128, (80, 8, 8, 3)).astype("float32")
    x[..., 0] += 30.0 * y[:, None, None]
    bundle = data.load((x[:64].astype("uint8"), y[:64]), test=(x[64:].astype("uint8"), y[64:]))
    keras.utils.set_random_seed(0)
    model = build_model(_architecture(), bundle.input_shape, bundle.num_classes, cells=3,
                        channels=4, auxiliary=True, drop_path=0.2, mean=bundle.mean,
                        std=bundle.std)
    run_dir, log_dir = tmp_path / "run", tmp_path / "tb"
    result = train(model, bundle, epochs=2, batch_size=16, seed=11, run_dir=run_dir,
                   verbose=0, tensorboard=log_dir)
    scalars, images, _ = _events(log_dir)
    history = _history(run_dir / "train_history.csv")
    assert set(history) == {"loss", "logits_loss", "aux_logits_loss", "accuracy",
                            "learning_rate", "drop_path_rate"}
    for key, column in history.items():
        assert scalars[key] == pytest.approx(column, rel=1e-6, abs=1e-9), key
    assert scalars["drop_path_rate"] == pytest.approx({1: 0.0, 2: 0.1})
    assert scalars["learning_rate"][2] == pytest.approx(0.0, abs=1e-7)  # cosine to 0
    # the test accuracy at the last epoch, as train_result.json
    saved = json.loads((run_dir / "train_result.json").read_text())
    assert scalars["test_accuracy"] == {2: pytest.approx(saved["test_accuracy"])}
    assert saved["test_accuracy"] == result.test_accuracy
    assert set(scalars) == set(history) | {"test_accuracy"} and images == {}
    # one event file: the writer stays open from the first epoch to the test accuracy
    assert len(list(log_dir.glob("events.out.tfevents.*"))) == 1
