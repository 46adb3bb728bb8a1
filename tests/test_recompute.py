"""Gradient checkpointing per supernet cell (``SearchNetwork.compile(recompute=True)``).

Recomputing a cell's forward pass in the backward pass must change memory only: the same
loss, the same gradients for every weight and alpha, the same BatchNorm moving statistics
(the batch counted once), the same search steps."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

from aca_keras.models.supernet import SearchNetwork

TINY = dict(input_shape=(8, 8, 3), num_classes=4, cells=3, channels=8, nodes=2,
            stem_multiplier=1)


#: a zero, a parameter-free and a BatchNorm-carrying candidate, for the graph and step tests
#: (tracing the whole search step twice is the slowest part of this file); every operation's
#: recomputation is checked on its own below
STEP_OPS = ("none", "max_pool_3x3", "sep_conv_3x3")


def _batch(seed: int, n: int = 8):
    rng = np.random.default_rng(seed)
    return (tf.constant(rng.uniform(0, 255, (n, 8, 8, 3)).astype("float32")),
            tf.constant(rng.integers(0, 4, (n,)).astype("int32")))


def _numpy(variables) -> list[np.ndarray]:
    return [np.array(v.numpy()) for v in variables]


def _restore(variables, values) -> None:
    for v, value in zip(variables, values):
        v.assign(value)


def _loss_gradients_statistics(net, recompute: bool, x, y):
    """Loss, gradients of (weights + alphas) and the moving statistics after one training
    forward/backward pass, from the network's current state (restored afterwards)."""
    state = _numpy(net.non_trainable_variables)
    net.recompute = recompute
    variables = net.weight_variables + net.alpha_variables

    @tf.function(autograph=False)  # plain tracing (no control flow to convert)
    def run():
        with tf.GradientTape() as tape:
            loss, _ = net.loss_and_logits(x, y)
        return loss, tape.gradient(loss, variables)

    loss, grads = run()
    statistics = _numpy(net.non_trainable_variables)
    _restore(net.non_trainable_variables, state)
    return float(loss), [g.numpy() for g in grads], statistics


@pytest.mark.parametrize("settings", [dict(ops="aca"), dict(ops="darts", partial_k=2,
                                                            edge_normalization=True)],
                         ids=["aca", "pc-darts"])
def test_recomputed_cells_give_the_same_loss_gradients_and_statistics(settings):
    net = SearchNetwork(**TINY, **settings)
    net.compile()
    x, y = _batch(1)
    plain = _loss_gradients_statistics(net, False, x, y)
    again = _loss_gradients_statistics(net, True, x, y)
    assert again[0] == pytest.approx(plain[0], rel=1e-6)
    assert len(plain[1]) == len(net.weight_variables) + len(net.alpha_variables)
    for variable, g0, g1 in zip(net.weight_variables + net.alpha_variables, plain[1], again[1]):
        assert np.abs(g0).max() > 0, f"{variable.path} gets no gradient"
        np.testing.assert_allclose(g1, g0, rtol=2e-4, atol=1e-6, err_msg=variable.path)
    # the moving statistics moved, and by one batch only (not twice in the recompute pass)
    before = _numpy(net.non_trainable_variables)
    assert any(np.any(b != s) for b, s in zip(before, plain[2]))
    for s0, s1 in zip(plain[2], again[2]):
        np.testing.assert_allclose(s1, s0, rtol=1e-5, atol=1e-7)


def test_recomputation_really_leaves_out_the_cells_activations():
    """With recompute the step's gradient graph holds a second copy of each cell's forward
    pass (that is what the memory is traded for): counted by the BatchNorm ops in the traced
    graph. The peak memory itself is measured by benchmarks/search_memory.py, not here."""
    counts = {}
    for recompute in (False, True):
        net = SearchNetwork(**TINY, ops=STEP_OPS)
        net.compile(recompute=recompute)
        x, y = _batch(2)
        variables = net.weight_variables + net.alpha_variables

        def step(x, y, net=net, variables=variables):
            with tf.GradientTape() as tape:
                loss, _ = net.loss_and_logits(x, y)
            return tape.gradient(loss, variables)

        graph = tf.function(step).get_concrete_function(x, y).graph
        counts[recompute] = sum(op.type == "FusedBatchNormV3" for op in graph.get_operations())
    # every BatchNorm of the three cells runs twice (forward, and again in the backward)
    assert counts[True] > 1.5 * counts[False]


# second order (45 s) in the slow suite: its steps take their gradients through the same
# recomputed cells as the first-order ones
@pytest.mark.parametrize("order", [1, pytest.param(2, marks=pytest.mark.slow)])
def test_search_steps_with_recompute_equal_steps_without(order):
    results = []
    for recompute in (False, True):
        tf.keras.utils.set_random_seed(7)
        net = SearchNetwork(**TINY, ops=STEP_OPS)
        net.compile(order=order, recompute=recompute)
        data = tf.data.Dataset.from_tensor_slices((_batch(3, 16), _batch(4, 16))).batch(8)
        net.fit(data, epochs=1, verbose=0)
        results.append((_numpy(net.weight_variables), _numpy(net.alpha_variables),
                        _numpy(net.non_trainable_variables)))
    for group in range(3):
        for a, b in zip(results[0][group], results[1][group]):
            np.testing.assert_allclose(b, a, rtol=1e-4, atol=1e-6)


def test_cells_with_a_random_operation_are_not_recomputed_and_the_setting_is_saved():
    net = SearchNetwork(**TINY, ops="rdarts-s4")
    net.compile(recompute=True)
    assert all(cell.stochastic for cell in net.search_cells)
    data = tf.data.Dataset.from_tensor_slices((_batch(5, 8), _batch(6, 8))).batch(8)
    history = net.fit(data, epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"][0])
    assert net.get_compile_config()["recompute"] is True
    other = SearchNetwork(**TINY, ops="aca")
    assert not any(cell.stochastic for cell in other.search_cells)
    other.compile_from_config(net.get_compile_config())
    assert other.recompute is True


def test_search_config_and_cli_carry_recompute():
    from aca_keras.cli.search import build_parser
    from aca_keras.searching.config import SearchConfig

    assert SearchConfig().recompute is False
    assert SearchConfig.from_dict({"dataset": "digits"}).recompute is False  # old configs
    args = build_parser().parse_args(["--recompute"])
    assert args.recompute is True
    assert build_parser().parse_args([]).recompute is None  # None: the config's default
