"""The search supernet: gradients, the two bi-level steps, the second-order hypergradient."""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf

from aca_keras.models.supernet import SearchNetwork
from aca_keras.space.topology import num_edges_for as num_edges
from aca_keras.space.topology import reduction_indices

TINY = dict(input_shape=(8, 8, 3), num_classes=4, cells=3, channels=4, nodes=2)
#: for tests of the step's mechanics (bilevel updates, tracing, release, graph options), not
#: of the ops: a zero, a parameter-free and a weighted candidate, a sixth of the ops to trace
MECHANICS = dict(nodes=1, ops=("none", "max_pool_3x3", "sep_conv_3x3"))


def _batch(seed: int, n: int = 8, shape=(8, 8, 3), classes: int = 4):
    rng = np.random.default_rng(seed)
    x = rng.uniform(0, 255, (n,) + tuple(shape)).astype(keras.config.floatx())
    y = rng.integers(0, classes, n).astype("int32")
    return tf.constant(x), tf.constant(y)


def _net(**overrides) -> SearchNetwork:
    net = SearchNetwork(**{**TINY, **overrides})
    net.compile()
    return net


def _snapshot(variables) -> list[np.ndarray]:
    return [np.array(v.numpy()) for v in variables]


def test_structure_follows_darts_rules():
    assert num_edges(4) == 14 and num_edges(2) == 5
    assert reduction_indices(8) == (2, 5)
    net = _net()
    assert net.alpha_normal.shape == (num_edges(2), 7)  # the "aca" set has 7 ops
    assert "skip_connect" not in net.op_names
    assert [c.reduction for c in net.search_cells] == [False, True, True]
    # the alphas are the model's weights, not the cells'
    for cell in net.search_cells:
        assert all("alpha" not in v.path for v in cell.weights)
    # search BatchNorms carry no affine parameters (the stem's does, as in DARTS)
    for cell in net.search_cells:
        assert not any(v.path.endswith(("gamma", "beta")) for v in cell.trainable_weights)


def test_softmax_weights_sum_to_one():
    net = _net()
    net.alpha_normal.assign(np.random.default_rng(0).normal(size=net.alpha_normal.shape))
    normal, reduce = (w.numpy() for w in net.op_weights())
    np.testing.assert_allclose(normal.sum(axis=-1), 1.0, rtol=1e-6)
    np.testing.assert_allclose(reduce.sum(axis=-1), 1.0, rtol=1e-6)
    a = net.alpha_normal.numpy()
    expected = np.exp(a) / np.exp(a).sum(axis=-1, keepdims=True)
    np.testing.assert_allclose(normal, expected, rtol=1e-5)


def test_every_weight_and_alpha_gets_a_gradient():
    net = _net(ops="darts")
    x, y = _batch(0)
    with tf.GradientTape() as tape:
        loss = net.loss(y, net(x, training=True))
    variables = net.trainable_variables
    grads = tape.gradient(loss, variables)
    missing = [v.path for v, g in zip(variables, grads) if g is None]
    assert not missing, f"no gradient for {missing}"
    zero = [v.path for v, g in zip(variables, grads) if not np.any(g.numpy())]
    assert not zero, f"all-zero gradient for {zero}"
    assert len(net.alpha_variables) == 2
    assert len(net.weight_variables) == len(variables) - 2


def test_alpha_step_changes_only_alphas_and_uses_only_validation_batch():
    x_w1, y_w1 = _batch(1)
    x_w2, y_w2 = _batch(2)
    x_a, y_a = _batch(3)
    results = []
    for x_w, y_w in ((x_w1, y_w1), (x_w2, y_w2)):
        keras.utils.set_random_seed(7)
        net = _net(**MECHANICS)
        weights_before = _snapshot(net.weight_variables)
        alphas_before = _snapshot(net.alpha_variables)
        net.architect.alpha_step(x_w, y_w, x_a, y_a)
        for before, v in zip(weights_before, net.weight_variables):
            np.testing.assert_array_equal(before, v.numpy())
        changed = [np.abs(b - v.numpy()).max() for b, v in zip(alphas_before, net.alpha_variables)]
        assert min(changed) > 0
        results.append(_snapshot(net.alpha_variables))
    # a different weight-train batch gives exactly the same alpha update (first order)
    for a1, a2 in zip(*results):
        np.testing.assert_array_equal(a1, a2)


def test_weight_step_changes_weights_not_alphas():
    net = _net()
    x, y = _batch(4)
    alphas_before = _snapshot(net.alpha_variables)
    weights_before = _snapshot(net.weight_variables)
    net.architect.weight_step(x, y)
    for before, v in zip(alphas_before, net.alpha_variables):
        np.testing.assert_array_equal(before, v.numpy())
    moved = sum(np.any(b != v.numpy()) for b, v in zip(weights_before, net.weight_variables))
    assert moved == len(weights_before)


def test_fit_runs_bilevel_search_and_reports_both_losses():
    net = _net(**MECHANICS)
    (x_w, y_w), (x_a, y_a) = _batch(5, 16), _batch(6, 16)
    data = tf.data.Dataset.from_tensor_slices(((x_w, y_w), (x_a, y_a))).batch(8)
    alphas_before = _snapshot(net.alpha_variables)
    history = net.fit(data, epochs=2, verbose=0)
    for key in ("loss", "accuracy", "alpha_loss", "alpha_accuracy"):
        assert len(history.history[key]) == 2
        assert np.all(np.isfinite(history.history[key]))
    assert net.optimizer.iterations.numpy() == 4
    assert net.alpha_optimizer.iterations.numpy() == 4
    assert any(np.any(b != v.numpy()) for b, v in zip(alphas_before, net.alpha_variables))
    genotype = net.genotype()
    assert len(genotype.normal) == 2 * MECHANICS["nodes"]
    assert all(op not in ("none", "skip_connect") for op, _ in genotype.normal + genotype.reduce)


def test_released_step_function_is_freed_and_traced_again_by_the_next_fit():
    """search() drops the step's traced function before scoring (its graph is most of a
    search's memory): the function object is really freed, and a later fit traces a new
    step that continues the same optimisation."""
    import gc
    import weakref

    net = _net(**MECHANICS)
    data = tf.data.Dataset.from_tensor_slices((_batch(5, 16), _batch(6, 16))).batch(8)
    net.fit(data, epochs=1, verbose=0)
    step = weakref.ref(net.train_function)
    net.release_traced_functions()
    gc.collect()
    assert net.train_function is None
    assert step() is None, "the traced step is still referenced after release"
    before = _snapshot(net.weight_variables)
    net.fit(data, epochs=1, verbose=0)
    assert net.optimizer.iterations.numpy() == 4
    assert any(np.any(b != v.numpy()) for b, v in zip(before, net.weight_variables))


@pytest.mark.parametrize("graph_optimizations", [False, True])
def test_step_runs_without_grappler_on_every_call(monkeypatch, graph_optimizations):
    """By default every call of the step (not only the first, see make_train_function) runs
    with TensorFlow's graph optimiser off; the process-wide setting is restored after."""
    from aca_keras.models import supernet

    calls = []
    disabled = supernet._grappler_disabled

    def counting():
        calls.append(1)
        return disabled()

    monkeypatch.setattr(supernet, "_grappler_disabled", counting)
    before = tf.config.optimizer.get_experimental_options()
    net = SearchNetwork(**{**TINY, **MECHANICS})
    net.compile(graph_optimizations=graph_optimizations)
    assert net.graph_optimizations is graph_optimizations
    data = tf.data.Dataset.from_tensor_slices((_batch(1, 12), _batch(2, 12))).batch(4)
    net.fit(data, epochs=2, verbose=0)
    assert len(calls) == (0 if graph_optimizations else 6)  # 3 steps x 2 epochs
    assert tf.config.optimizer.get_experimental_options() == before


@pytest.fixture
def float64():
    keras.config.set_floatx("float64")
    yield
    keras.config.set_floatx("float32")


def test_second_order_hypergradient_matches_finite_differences(float64):
    """The unrolled DARTS hypergradient equals d/d alpha of L_val(w - xi * dL_train/dw, alpha)."""
    ops = ["none", "max_pool_3x3", "sep_conv_3x3", "dil_conv_3x3"]
    net = SearchNetwork(input_shape=(4, 4, 2), num_classes=3, cells=3, channels=2, nodes=1,
                        ops=ops, stem_multiplier=1)
    lr, wd = 0.1, 3e-4
    net.compile(optimizer=keras.optimizers.SGD(learning_rate=lr, momentum=0.9), order=2,
                weight_decay=wd, unrolled_eps=1e-5)
    rng = np.random.default_rng(0)
    for a in net.alpha_variables:
        a.assign(rng.normal(scale=0.5, size=a.shape))
    x_w, y_w = _batch(10, 6, (4, 4, 2), 3)
    x_a, y_a = _batch(11, 6, (4, 4, 2), 3)
    weights = net.weight_variables

    def unrolled_val_loss() -> float:
        backup = [tf.identity(v) for v in weights]
        with tf.GradientTape() as tape:
            loss_w = net.loss(y_w, net(x_w, training=True))
        grads = tape.gradient(loss_w, weights)
        for v, g in zip(weights, grads):
            v.assign(v - lr * (g + wd * v))  # momentum buffers are still zero
        loss_a = float(net.loss(y_a, net(x_a, training=True)))
        for v, b in zip(weights, backup):
            v.assign(b)
        return loss_a

    hyper, _, _ = net.architect.alpha_gradients(x_w, y_w, x_a, y_a)
    h = 1e-5
    for alpha, grad in zip(net.alpha_variables, hyper):
        base = alpha.numpy().copy()
        numeric = np.zeros_like(base)
        for index in np.ndindex(base.shape):
            for sign in (1, -1):
                shifted = base.copy()
                shifted[index] += sign * h
                alpha.assign(shifted)
                numeric[index] += sign * unrolled_val_loss() / (2 * h)
        alpha.assign(base)
        grad = grad.numpy()
        rel = np.linalg.norm(grad - numeric) / np.linalg.norm(numeric)
        assert rel < 1e-4, f"relative error {rel:.2e}"
        # and the second-order term matters: first order alone is measurably different
    with tf.GradientTape() as tape:
        first = tape.gradient(net.loss(y_a, net(x_a, training=True)), net.alpha_variables)
    assert np.linalg.norm(first[0].numpy() - hyper[0].numpy()) > 1e-3 * np.linalg.norm(hyper[0])


def test_search_model_saves_and_reloads_with_identical_outputs(tmp_path):
    net = _net()
    x, _ = _batch(12)
    for a in net.alpha_variables:
        a.assign(np.random.default_rng(1).normal(size=a.shape))
    path = tmp_path / "search.keras"
    net.save(path)
    restored = keras.saving.load_model(path)
    np.testing.assert_array_equal(net(x, training=False).numpy(),
                                  restored(x, training=False).numpy())
    np.testing.assert_array_equal(net.alpha_normal.numpy(), restored.alpha_normal.numpy())
    assert restored.op_names == net.op_names
    # the bi-level compile settings come back too
    assert restored.architect.settings() == net.architect.settings()
    assert isinstance(restored.alpha_optimizer, keras.optimizers.Adam)
