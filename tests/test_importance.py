"""Channel importance scorers inside a trained supernet."""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf

from aca_keras import importance
from aca_keras.architecture import Architecture
from aca_keras.errors import ArchitectureError
from aca_keras.supernet import SearchNetwork

C = 4


def _data(seed: int, n: int, shape=(8, 8, 3), classes: int = 3):
    rng = np.random.default_rng(seed)
    x = rng.uniform(0, 255, (n,) + shape).astype(keras.config.floatx())
    return tf.constant(x), tf.constant(rng.integers(0, classes, n).astype("int32"))


@pytest.fixture(scope="module")
def trained():
    keras.utils.set_random_seed(3)
    net = SearchNetwork((8, 8, 3), 3, cells=3, channels=C, nodes=2)
    net.compile(optimizer=keras.optimizers.SGD(0.05, momentum=0.9))
    train, val = _data(0, 32), _data(1, 32)
    net.fit(tf.data.Dataset.from_tensor_slices((train, val)).batch(16), epochs=2, verbose=0)
    architecture = Architecture.from_genotype(net.genotype(), C, net.op_names)
    batches = [_data(10 + i, 16) for i in range(3)]
    return net, architecture, batches


@pytest.mark.parametrize("scorer", importance.list_scorers())
def test_scores_are_finite_non_negative_and_shaped(trained, scorer):
    net, architecture, batches = trained
    scores = importance.score_channels(net, architecture, batches, scorer=scorer, max_batches=2)
    assert scores.scorer == scorer
    for cell in ("normal", "reduce"):
        per_edge = getattr(scores, cell)
        assert len(per_edge) == len(getattr(architecture, cell).edges) == 4
        for vector in per_edge:
            assert vector.shape == (C,)
            assert np.all(np.isfinite(vector)) and np.all(vector >= 0)
    if scorer != "alpha":
        # every occurrence is normalised to sum 1 over its kept edges, then averaged
        np.testing.assert_allclose(sum(v.sum() for v in scores.normal), 1.0, rtol=1e-6)
        assert np.ptp(np.concatenate(scores.normal)) > 0  # channels are told apart


def test_alpha_scorer_is_the_softmax_weight_of_the_chosen_op(trained):
    net, architecture, batches = trained
    scores = importance.score_channels(net, architecture, batches, scorer="alpha")
    normal = keras.ops.convert_to_numpy(net.edge_weights()[0])
    for edge, vector, weight in zip(architecture.normal.edges, scores.normal,
                                    scores.normal_weights):
        row = sum(2 + j for j in range(edge.node)) + edge.input
        assert weight == pytest.approx(normal[row, net.op_names.index(edge.op)])
        np.testing.assert_allclose(vector, weight)


def test_scoring_uses_a_bounded_number_of_batches(trained):
    net, architecture, batches = trained
    one = importance.raw_channel_statistics(net, architecture, batches[:1], max_batches=1)
    bounded = importance.raw_channel_statistics(net, architecture, batches + batches,
                                                max_batches=1)
    for key in one:
        np.testing.assert_array_equal(one[key], bounded[key])


@pytest.fixture
def float64():
    keras.config.set_floatx("float64")
    yield
    keras.config.set_floatx("float32")


def test_taylor_matches_a_numerical_derivative_on_one_edge(float64):
    """sum a_c dL/da_c is d/dt L(a with channel c scaled by 1 + t) at t = 0."""
    net = SearchNetwork((8, 8, 3), 3, cells=3, channels=C, nodes=1,
                        ops=["none", "max_pool_3x3", "sep_conv_3x3"])
    net.compile()
    for a in net.alpha_variables:
        a.assign(np.random.default_rng(0).normal(size=a.shape))
    architecture = Architecture.from_genotype(net.genotype(), C, net.op_names)
    x, y = _data(5, 6)
    raw = importance.raw_channel_statistics(net, architecture, [(x, y)], scorer="taylor")
    target = importance._targets(net, architecture)[0]
    assert target.cell_type == "normal" and target.cell == 0
    analytic = raw[("normal", target.edge, 0)]
    h = 1e-6
    numeric = np.zeros(C)
    for c in range(C):
        for sign in (1, -1):
            scale = np.ones(C)
            scale[c] += sign * h
            edge = importance.edge_scale_probe(net, 0, target.supernet_edge, target.position, scale)
            try:
                loss = float(net.loss(y, net(x, training=False)))
            finally:
                edge.clear_probe()
            numeric[c] += sign * loss / (2 * h)
    np.testing.assert_allclose(analytic, np.abs(numeric), rtol=1e-5, atol=1e-10)
    assert analytic.max() > 0


def test_architecture_must_match_the_supernet(trained):
    net, architecture, batches = trained
    other = Architecture.from_genotype(architecture.to_genotype(), C * 2, net.op_names)
    with pytest.raises(ArchitectureError, match="C=8"):
        importance.score_channels(net, other, batches)
    with pytest.raises(ValueError, match="Unknown channel scorer"):
        importance.get_scorer("fisher")
