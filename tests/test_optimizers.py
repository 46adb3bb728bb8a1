"""MomentumSGD: Keras SGD's rule computed by one fused kernel per variable; momentum_of; L2SGD's
clipping."""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf

from aca_keras.optimizers import L2SGD, MomentumSGD, momentum_of


def _run(optimizer, steps: int = 4):
    rng = np.random.default_rng(0)
    variables = [keras.Variable(rng.normal(size=s).astype("float32")) for s in ((3, 4), (5,))]
    grads = [[tf.constant(rng.normal(size=v.shape).astype("float32")) for v in variables]
             for _ in range(steps)]
    optimizer.build(variables)
    for step in grads:
        optimizer.apply_gradients(zip(step, variables))
    return [v.numpy() for v in variables], [m.numpy() for m in optimizer.momentums]


@pytest.mark.parametrize("momentum", [0.9, 0.0])
def test_matches_keras_sgd(momentum):
    schedule = keras.optimizers.schedules.CosineDecay(0.1, 10, alpha=0.01)
    ours = _run(MomentumSGD(schedule, momentum=momentum))
    keras_sgd = _run(keras.optimizers.SGD(schedule, momentum=momentum))
    for a, b in zip(ours[0] + ours[1], keras_sgd[0] + keras_sgd[1]):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)


def test_rule_by_hand_and_fused_kernel_in_the_graph():
    var = keras.Variable(np.array([1.0, -2.0], "float32"))
    optimizer = MomentumSGD(learning_rate=0.5, momentum=0.9)
    optimizer.build([var])
    step = tf.function(lambda g: optimizer.apply_gradients([(g, var)]))
    step(tf.constant([0.2, 0.4]))
    step(tf.constant([0.2, 0.4]))
    m1 = -0.5 * np.array([0.2, 0.4])            # m = momentum * m - lr * g
    m2 = 0.9 * m1 - 0.5 * np.array([0.2, 0.4])
    np.testing.assert_allclose(var.numpy(), np.array([1.0, -2.0]) + m1 + m2, rtol=1e-6)
    graph = step.get_concrete_function(tf.constant([0.0, 0.0])).graph
    assert "ResourceApplyKerasMomentum" in {op.type for op in graph.get_operations()}


def test_config_round_trip():
    optimizer = MomentumSGD(learning_rate=0.025, momentum=0.9, nesterov=True)
    clone = keras.optimizers.deserialize(keras.optimizers.serialize(optimizer))
    assert isinstance(clone, MomentumSGD) and clone.nesterov and clone.momentum == 0.9


@pytest.mark.parametrize("cls", [MomentumSGD, keras.optimizers.SGD])
def test_momentum_of_finds_each_variables_buffer(cls):
    first = keras.Variable(np.array([1.0, 2.0], "float32"))
    second = keras.Variable(np.array([3.0, 4.0, 5.0], "float32"))
    optimizer = cls(learning_rate=0.5, momentum=0.9)
    optimizer.build([first, second])
    optimizer.apply_gradients([(tf.constant([0.2, 0.4]), first),
                               (tf.constant([1.0, 0.0, -1.0]), second)])
    # one step from zero: m = -lr * g
    np.testing.assert_allclose(momentum_of(optimizer, first).numpy(), [-0.1, -0.2], rtol=1e-6)
    np.testing.assert_allclose(momentum_of(optimizer, second).numpy(), [-0.5, 0.0, 0.5],
                               rtol=1e-6)
    scaled = keras.optimizers.LossScaleOptimizer(optimizer)  # looked through
    assert momentum_of(scaled, second) is momentum_of(optimizer, second)


def test_momentum_of_is_none_without_momentum():
    var = keras.Variable(np.zeros(2, "float32"))
    for optimizer in (MomentumSGD(momentum=0.0), keras.optimizers.Adam()):
        optimizer.build([var])
        assert momentum_of(optimizer, var) is None, type(optimizer).__name__


def test_l2sgd_clips_with_keras_on_one_replica():
    """Outside a multi-replica strategy L2SGD clips as Keras does: the gradient (3, 4) (norm
    5) becomes (0.6, 0.8) under global_clipnorm=1, then l2 * w is added."""
    var = keras.Variable(np.array([1.0, 1.0], "float32"))
    optimizer = L2SGD(learning_rate=1.0, l2=0.1, global_clipnorm=1.0)
    optimizer.build([var])
    optimizer.apply_gradients([(tf.constant([3.0, 4.0]), var)])
    np.testing.assert_allclose(var.numpy(), [1.0 - 0.6 - 0.1, 1.0 - 0.8 - 0.1], rtol=1e-6)
