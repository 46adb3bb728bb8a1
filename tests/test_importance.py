"""Channel importance scorers inside a trained supernet."""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf

from aca_keras.channels import importance
from aca_keras.errors import ArchitectureError
from aca_keras.models.supernet import SearchNetwork
from aca_keras.space.architecture import Architecture

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
    normal = keras.ops.convert_to_numpy(net.op_weights()[0])
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


def _tiny_float64_net(seed: int = 0):
    net = SearchNetwork((8, 8, 3), 3, cells=3, channels=C, nodes=1,
                        ops=["none", "max_pool_3x3", "sep_conv_3x3"])
    net.compile()
    for a in net.alpha_variables:
        a.assign(np.random.default_rng(seed).normal(size=a.shape))
    return net, Architecture.from_genotype(net.genotype(), C, net.op_names)


def _directional_derivative(net, x, y, target, direction, h=1e-6):
    """d/dt L(a + t * direction(x, a, w)) at t = 0 on one candidate, by central differences."""
    total = 0.0
    for sign in (1, -1):
        def transform(x_in, a, w, sign=sign):
            return a + sign * h * direction(x_in, a, w)

        taps = importance.replace_candidate_channel(net, target.cell, target.supernet_edge,
                                                    target.position, transform)
        total += sign * float(net.loss(y, net(x, training=False, taps=taps))) / (2 * h)
    return total


def _channel(c, values):
    mask = np.zeros(values.shape[-1])
    mask[c] = 1.0
    return tf.constant(mask, values.dtype) * values


def test_taylor_matches_a_numerical_derivative_on_one_edge(float64):
    """sum a_c dL/da_c is d/dt L(a with channel c scaled by 1 + t) at t = 0."""
    net, architecture = _tiny_float64_net()
    x, y = _data(5, 6)
    raw = importance.raw_channel_statistics(net, architecture, [(x, y)], scorer="taylor")
    target = importance._targets(net, architecture)[0]
    assert target.cell_type == "normal" and target.cell == 0
    analytic = raw[("normal", target.edge, 0)]
    numeric = np.array([_directional_derivative(net, x, y, target,
                                                lambda x_in, a, w, c=c: _channel(c, a))
                        for c in range(C)])
    np.testing.assert_allclose(analytic, np.abs(numeric), rtol=1e-5, atol=1e-10)
    assert analytic.max() > 0


@pytest.mark.parametrize("cell_type", ["normal", "reduce"])
def test_refill_matches_the_loss_change_of_swapping_a_channel_for_identity(float64, cell_type):
    """|sum (w x_c - a_c) dL/da_c| is |d/dt L(a_c -> a_c + t (w x_c - a_c))| at t = 0: the
    first-order change of the validation loss when channel c is swapped for its refill
    (the identity on stride-1 edges, the stride-2 sample on reduction edges)."""
    net, architecture = _tiny_float64_net(seed=1)
    x, y = _data(6, 6)
    raw = importance.raw_channel_statistics(net, architecture, [(x, y)], scorer="refill")
    target = next(t for t in importance._targets(net, architecture) if t.cell_type == cell_type
                  and (cell_type == "normal" or t.stride == 2))
    analytic = raw[(cell_type, target.edge, target.cell)]

    def swap(c):
        return lambda x_in, a, w: _channel(
            c, importance.refill_stand_in(x_in, w, target.stride) - a)

    numeric = np.array([_directional_derivative(net, x, y, target, swap(c))
                        for c in range(analytic.shape[0])])
    np.testing.assert_allclose(analytic, np.abs(numeric), rtol=1e-5, atol=1e-10)
    assert analytic.max() > 0


def test_refill_differs_from_removal_for_an_identity_like_operation(float64):
    """A channel equal to w * x costs nothing to refill: refill scores it zero, removal not."""
    net, architecture = _tiny_float64_net(seed=2)
    x, y = _data(7, 6)
    target = importance._targets(net, architecture)[0]
    taps = importance.replace_candidate_channel(
        net, target.cell, target.supernet_edge, target.position,
        lambda x_in, a, w: importance.refill_stand_in(x_in, w, target.stride))
    with tf.GradientTape() as tape:
        loss = net.loss(y, net(x, training=False, taps=taps))
    x_in, a, w = taps[(target.cell, target.supernet_edge)][target.position].captured[0]
    grad = tape.gradient(loss, a)
    refill = importance.get_scorer("refill").statistic(a, grad, x_in, w, target.stride)
    removal = importance.get_scorer("taylor").statistic(a, grad, x_in, w, target.stride)
    np.testing.assert_allclose(refill.numpy(), 0.0, atol=1e-12)
    assert removal.numpy().max() > 1e-6


def test_divide_weight_divides_each_edge_by_its_operation_weight(trained):
    net, architecture, batches = trained
    plain = importance.score_channels(net, architecture, batches, scorer="refill",
                                      max_batches=2, pooling="index")
    divided = importance.score_channels(net, architecture, batches, scorer="refill",
                                        max_batches=2, pooling="index", divide_weight=True)
    assert divided.divide_weight and not plain.divide_weight
    # one occurrence of the normal cell in this supernet (cells 1 and 2 are reductions),
    # normalised to sum 1: the two differ per edge by the weight, up to that constant
    for cell in ("normal",):
        raw_plain = np.stack(getattr(plain, cell))
        raw_divided = np.stack(getattr(divided, cell))
        w = np.asarray(getattr(plain, f"{cell}_weights"))[:, None]
        ratio = (raw_divided * w) / raw_plain
        np.testing.assert_allclose(ratio, ratio.flat[0], rtol=1e-6)
    with pytest.raises(ValueError, match="every score equal"):
        importance.score_channels(net, architecture, batches, scorer="alpha", divide_weight=True)


def test_disjoint_batch_sets_via_skip_batches(trained):
    net, architecture, batches = trained
    first = importance.raw_channel_statistics(net, architecture, batches, max_batches=1)
    second = importance.raw_channel_statistics(net, architecture, batches, max_batches=1,
                                               skip_batches=1)
    only_second = importance.raw_channel_statistics(net, architecture, batches[1:2])
    for key in first:
        np.testing.assert_allclose(second[key], only_second[key], rtol=1e-6)
        assert not np.allclose(first[key], second[key])
    with pytest.raises(ValueError, match="after skipping 5"):
        importance.raw_channel_statistics(net, architecture, batches, skip_batches=5)


# ------------------------------------------------------------------------------ pooling rules


def test_index_pooling_on_hand_made_scores():
    # two occurrences (widths 2 and 4 for C = 2), two edges
    occ1 = np.array([[1.0, 3.0], [2.0, 2.0]])            # sum 8
    occ2 = np.array([[4.0, 0.0, 0.0, 4.0], [1.0, 1.0, 3.0, 3.0]])  # pooled [[2,2],[1,3]]: 8
    pooled = importance.pool_by_index([occ1, occ2], 2)
    expected = (occ1 / 8 + np.array([[2.0, 2.0], [1.0, 3.0]]) / 8) / 2
    np.testing.assert_allclose(pooled, expected)


def test_sorted_pooling_compares_the_strongest_channels_with_each_other():
    # the same profile (one strong channel per edge) at different positions in two
    # occurrences: index pooling smears it, sorted pooling keeps it
    occ1 = np.array([[9.0, 1.0], [1.0, 1.0]])
    occ2 = np.array([[1.0, 9.0], [1.0, 1.0]])
    np.testing.assert_allclose(importance.pool_by_index([occ1, occ2], 2)[0], [5 / 12, 5 / 12])
    np.testing.assert_allclose(importance.pool_sorted([occ1, occ2], 2),
                               [[9 / 12, 1 / 12], [1 / 12, 1 / 12]])
    # wider occurrence: sorted, then groups of m = 2 averaged
    wide = np.array([[1.0, 5.0, 2.0, 0.0], [1.0, 1.0, 1.0, 1.0]])
    np.testing.assert_allclose(importance.pool_sorted([wide], 2),
                               [[3.5 / 6, 0.5 / 6], [1 / 6, 1 / 6]])


def test_rank_pooling_is_scale_free_and_handles_ties():
    occ = np.array([[4.0, 1.0], [2.0, 2.0]])
    ranks = importance.pool_by_rank([occ], 2)
    # quantiles: 1.0 -> 1/4, the two 2.0s share ranks 2,3 -> 2.5/4, 4.0 -> 1
    np.testing.assert_allclose(ranks, [[1.0, 0.25], [0.625, 0.625]])
    scaled = importance.pool_by_rank([occ * 1000.0], 2)
    np.testing.assert_allclose(scaled, ranks)
    # an occurrence ten times larger does not dominate the average under rank pooling
    a = np.array([[3.0, 1.0], [2.0, 0.5]])
    b = np.array([[0.5, 2.0], [1.0, 3.0]]) * 10
    np.testing.assert_allclose(importance.pool_by_rank([a, b], 2),
                               (importance.pool_by_rank([a], 2)
                                + importance.pool_by_rank([b / 10], 2)) / 2)


@pytest.mark.parametrize("pooling", importance.list_poolings())
def test_every_pooling_runs_on_a_supernet(trained, pooling):
    net, architecture, batches = trained
    scores = importance.score_channels(net, architecture, batches, scorer="refill",
                                       pooling=pooling, max_batches=2)
    assert scores.pooling == pooling
    for vector in scores.normal + scores.reduce:
        assert vector.shape == (C,) and np.all(np.isfinite(vector)) and np.all(vector >= 0)
    with pytest.raises(ValueError, match="Unknown channel pooling"):
        importance.get_pooling("median")


def test_architecture_must_match_the_supernet(trained):
    net, architecture, batches = trained
    other = Architecture.from_genotype(architecture.to_genotype(), C * 2, net.op_names)
    with pytest.raises(ArchitectureError, match="C=8"):
        importance.score_channels(net, other, batches)
    with pytest.raises(ValueError, match="Unknown channel scorer"):
        importance.get_scorer("fisher")


def test_progress_counts_the_batches_that_exist(trained, capsys):
    """Verbose scoring shows the number of batches it will really use: a split with fewer
    batches than requested is not reported as ``n/16``."""
    net, architecture, batches = trained
    importance.raw_channel_statistics(net, architecture, batches[:3], max_batches=16,
                                      verbose=True)
    printed = capsys.readouterr().out
    assert "scored batch 3/3" in printed and "/16" not in printed


def test_expected_batches_of_lists_datasets_and_iterators():
    expected = importance._expected_batches
    assert expected([0] * 3, 16, 0) == 3
    assert expected([0] * 3, 16, 1) == 2
    assert expected([0] * 30, 16, 0) == 16
    assert expected([0] * 3, 16, 5) == 0
    assert expected(tf.data.Dataset.range(5).batch(2), 16, 0) == 3
    assert expected(tf.data.Dataset.range(5).repeat(), 16, 0) == 16  # infinite
    assert expected(iter([0] * 3), 2, 0) == 2  # unknown length: the requested bound
