"""SDARTS-RS (``variant="sdarts_rs"``, :mod:`aca_keras.searching.sdarts`) against its paper's
rule on a tiny supernet: the weight step's forward pass sees ``softmax(alpha) + delta`` with
``|delta| <= epsilon``, ``delta != 0`` (renormalised as the authors' code does), drawn anew each
step; the architecture step is DARTS's on the unperturbed alphas; inference and the derivation
are unperturbed; epsilon ramps per epoch from 0.03 as in the authors' code."""

from __future__ import annotations

import json
from types import SimpleNamespace

import keras
import numpy as np
import pytest
import tensorflow as tf

from aca_keras.models.supernet import SearchNetwork
from aca_keras.searching import variants
from aca_keras.searching.pipeline import SearchConfig, search
from aca_keras.searching.sdarts import SDARTSRandomSmoothing, smoothing_clip

TINY = dict(input_shape=(8, 8, 3), num_classes=4, cells=3, channels=4, nodes=2)
SEED = 7


class SpyNetwork(SearchNetwork):
    """Records the mixing weights every eager forward pass used (its own softmax when none
    given)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.seen: list[tuple[bool, np.ndarray]] = []

    def call(self, inputs, training=None, taps=None, op_weights=None):
        if tf.executing_eagerly():
            used = self.op_weights() if op_weights is None else op_weights
            self.seen.append((bool(training), np.stack([np.asarray(w) for w in used])))
        return super().call(inputs, training=training, taps=taps, op_weights=op_weights)


def _variant(epsilon: float = 0.03, epochs: int = 1, steps: int = 10, seed: int = SEED):
    settings = variants.resolve_settings("sdarts_rs", epochs, perturbation_epsilon=epsilon)
    return variants.get_variant("sdarts_rs").configure(settings, epochs=epochs,
                                                       steps_per_epoch=steps, seed=seed)


def _net(cls=SearchNetwork, variant=None, order: int = 1):
    keras.utils.set_random_seed(3)  # the same initial state for every network built here
    net = cls(**TINY)
    net.compile(order=order, variant=variant)
    return net


def _batch(seed: int, n: int = 8):
    rng = np.random.default_rng(seed)
    return (tf.constant(rng.uniform(0, 255, (n, 8, 8, 3)).astype("float32")),
            tf.constant(rng.integers(0, 4, n).astype("int32")))


def _softmax(net) -> np.ndarray:
    return np.stack([w.numpy() for w in net.op_weights()])


def _expected(p: np.ndarray, epsilon: float, iteration: int, seed: int = SEED):
    """The documented rule, computed here: ``delta = epsilon * U``, ``U`` the stateless
    uniform draw on [-1, 1] from ``(seed, iteration)``; the authors' clip of ``p + delta``."""
    u = tf.random.stateless_uniform(p.shape, seed=tf.constant([seed, iteration], tf.int64),
                                    minval=-1.0, maxval=1.0).numpy()
    delta = epsilon * u
    clipped = np.clip(p + delta, 0.0, 1.0)
    return delta, clipped / clipped.sum(axis=-1, keepdims=True)


def _is_renormalised_perturbation(w: np.ndarray, p: np.ndarray, epsilon: float) -> bool:
    """Whether every row of ``w`` is ``(p + delta) / s`` for some ``s > 0`` and some
    ``|delta| <= epsilon`` (no clamping): the scale intervals of the entries intersect."""
    low = np.max((p - epsilon) / w, axis=-1)
    high = np.min((p + epsilon) / w, axis=-1)
    return bool(np.all(low <= high * (1 + 1e-5)))


def test_weight_step_forward_sees_alphas_perturbed_within_epsilon():
    epsilon = 0.03
    net = _net(SpyNetwork, _variant(epsilon))
    net.alpha_normal.assign(0.3 * np.random.default_rng(0).normal(size=net.alpha_normal.shape))
    p = _softmax(net)
    assert p.min() > epsilon  # (no entry is clamped at 0: the renormalisation check holds)
    net.architect.weight_step(*_batch(0))
    training, w = net.seen[-1]
    assert training
    # the rule itself: renormalised softmax(alpha) + delta with |delta| <= epsilon, delta != 0
    np.testing.assert_allclose(w.sum(axis=-1), 1.0, rtol=1e-6)
    assert w.min() >= 0
    assert np.abs(w - p).max() > 1e-3
    assert _is_renormalised_perturbation(w, p, epsilon)
    assert not _is_renormalised_perturbation(w, p, epsilon / 100)  # a real perturbation
    # exactly the documented draw (iteration 0 of the weight optimiser)
    delta, expected = _expected(p, epsilon, 0)
    assert np.abs(delta).max() <= epsilon and np.abs(delta).min() > 0
    assert np.abs(delta).max() > epsilon / 2  # spread over the interval, not a tiny value
    np.testing.assert_allclose(w, expected, rtol=1e-5, atol=1e-7)
    # the next step draws new noise (iteration 1), from the updated softmax
    net.architect.weight_step(*_batch(1))
    _, w1 = net.seen[-1]
    np.testing.assert_allclose(w1, _expected(_softmax(net), epsilon, 1)[1], rtol=1e-5,
                               atol=1e-7)
    assert np.abs(w1 - w).max() > 1e-3


@pytest.mark.parametrize("order", [1, 2])
def test_architecture_step_is_the_unperturbed_darts_step(order):
    sdarts = _net(SpyNetwork, _variant(0.3), order)
    darts = _net(SearchNetwork, None, order)
    for a, b in zip(sdarts.weights, darts.weights):
        np.testing.assert_array_equal(a.numpy(), b.numpy())
    data = (_batch(2), _batch(3))
    initial = [a.numpy().copy() for a in sdarts.alpha_variables]
    sdarts.seen.clear()  # (the build's pass)
    sdarts.train_step(data)
    darts.train_step(data)
    # every architecture-step forward pass (validation; second order: also the virtual step
    # and the finite differences) used the unperturbed softmax; the last one, the weight step's,
    # a perturbed one
    *alpha_passes, (_, weight_pass) = sdarts.seen
    assert len(alpha_passes) == (1 if order == 1 else 4)
    for _, used in alpha_passes:
        np.testing.assert_array_equal(used, alpha_passes[0][1])
    assert np.abs(weight_pass - alpha_passes[0][1]).max() > 1e-3
    # the same alpha update as DARTS on the same state ...
    for a, b in zip(sdarts.alpha_variables, darts.alpha_variables):
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-6, atol=1e-9)
    assert np.abs(sdarts.alpha_normal.numpy() - initial[0]).max() > 0  # (the step moved them)
    # ... and a different weight update (the perturbed forward pass)
    moved = [np.abs(a.numpy() - b.numpy()).max()
             for a, b in zip(sdarts.weight_variables, darts.weight_variables)]
    assert max(moved) > 1e-6


def test_inference_evaluation_and_derivation_are_unperturbed():
    net = _net(SpyNetwork, _variant(0.3))
    x, y = _batch(4)
    net.architect.weight_step(x, y)
    twin = _net(SearchNetwork)
    twin.set_weights(net.get_weights())
    net.seen.clear()
    np.testing.assert_array_equal(net(x, training=False).numpy(),
                                  twin(x, training=False).numpy())
    np.testing.assert_array_equal(net.seen[-1][1], _softmax(net))
    assert float(net.test_step((x, y))["loss"]) == float(twin.test_step((x, y))["loss"])
    assert net.genotype() == twin.genotype()


def test_the_traced_fit_step_takes_the_eager_step():
    """``model.fit``'s traced step computes what the eager steps above compute: the same
    noise (drawn statelessly from the seed and the iteration), so the same variables."""
    traced, eager = _net(SearchNetwork, _variant(0.3)), _net(SearchNetwork, _variant(0.3))
    data = (_batch(5), _batch(6))
    traced.fit(tf.data.Dataset.from_tensors(data).repeat(), epochs=1, steps_per_epoch=1,
               verbose=0, shuffle=False)
    eager.train_step(data)
    assert int(traced.optimizer.iterations.numpy()) == 1
    for a, b in zip(traced.weights, eager.weights):
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-4, atol=1e-6)


def _fake_network(iteration: int):
    """What ``alpha_transform`` reads from the network: the weight optimiser's iterations."""
    counter = tf.Variable(iteration, dtype=tf.int64)
    return SimpleNamespace(optimizer=SimpleNamespace(iterations=counter))


def test_epsilon_ramps_per_epoch_from_0_03_as_the_authors_code():
    epochs, steps = 4, 3
    variant = _variant(0.3, epochs, steps)
    expected = [0.03 + 0.27 * e / epochs for e in range(epochs)]
    np.testing.assert_allclose([variant.epsilon(e) for e in range(epochs)], expected)
    p = np.full((2, 5, 7), 1 / 7, dtype="float32")
    for iteration in (0, 2, 3, 11):  # epochs 0, 0, 1, 3
        weights = variant.alpha_transform(_fake_network(iteration), (p[0], p[1]), "weight")
        eps = expected[iteration // steps]
        np.testing.assert_allclose(np.stack(weights), _expected(p, eps, iteration)[1],
                                   rtol=1e-5, atol=1e-7)
    # the architecture step's forward passes are not transformed at all
    given = (p[0], p[1])
    same = variant.alpha_transform(_fake_network(0), given, "alpha")
    assert same is given
    # an end value below 0.03 is a constant
    small = _variant(0.01, epochs, steps)
    assert [small.epsilon(e) for e in range(epochs)] == [0.01] * epochs
    # the same seed and step give the same noise, another seed other noise
    a = variant.alpha_transform(_fake_network(5), (p[0], p[1]), "weight")
    b = variant.alpha_transform(_fake_network(5), (p[0], p[1]), "weight")
    c = _variant(0.3, epochs, steps, seed=SEED + 1).alpha_transform(
        _fake_network(5), (p[0], p[1]), "weight")
    np.testing.assert_array_equal(np.stack(a), np.stack(b))
    assert np.abs(np.stack(a) - np.stack(c)).max() > 1e-3


def test_the_clip_is_the_authors():
    rows = tf.constant([[0.5, -0.2, 0.9], [-0.1, -0.3, -0.05], [0.2, 0.2, 0.2]])
    out = smoothing_clip(rows).numpy()
    np.testing.assert_allclose(out[0], [0.5 / 1.4, 0.0, 0.9 / 1.4], rtol=1e-6)
    np.testing.assert_array_equal(out[1], [0.0, 0.0, 1.0])  # all clamped: one-hot at the max
    np.testing.assert_allclose(out[2], [1 / 3] * 3, rtol=1e-6)


def test_settings_resolve_validate_and_need_the_variant():
    config = SearchConfig(variant="sdarts_rs", epochs=3).validate().resolve_variant()
    assert config.perturbation_epsilon == 0.3 and config.partial_k == 1
    assert config.alpha_warmup_epochs == 0 and config.beta_decay_weight == 0.0
    assert SearchConfig(variant="sdarts_rs", perturbation_epsilon=0.1).resolve_variant() \
        .perturbation_epsilon == 0.1
    assert SearchConfig().resolve_variant().perturbation_epsilon is None  # darts has none
    with pytest.raises(ValueError, match="needs variant='sdarts_rs'"):
        SearchConfig(perturbation_epsilon=0.1).validate()
    for bad in (0, -0.1, 1.5, float("nan"), "0.1", True):
        with pytest.raises(ValueError, match="perturbation_epsilon must be a number"):
            SearchConfig(variant="sdarts_rs", perturbation_epsilon=bad).validate()
    with pytest.raises(ValueError, match="no setting 'perturbation_epsilon'"):
        variants.get_variant("darts").resolve(3, perturbation_epsilon=0.1)


def test_compile_settings_keep_the_configured_variant():
    variant = _variant(0.2, epochs=5, steps=4, seed=11)
    net = _net(SearchNetwork, variant)
    config = net.get_compile_config()
    assert config["variant"]["registered_name"] == "aca_keras>SDARTSRandomSmoothing"
    json.dumps(config["variant"])  # plain data
    other = SearchNetwork(**TINY)
    other.compile_from_config(config)
    assert isinstance(other.architect.variant, SDARTSRandomSmoothing)
    assert other.architect.variant == variant
    assert other.architect.variant.settings["perturbation_epsilon"] == 0.2
    assert other.architect.settings() == net.architect.settings()


def test_sdarts_search_end_to_end(tmp_path):
    from aca_keras.data import loading as data

    bundle = data.load("digits")
    arrays = bundle.x_train[:64], bundle.y_train[:64]
    model = search(arrays, run_dir=tmp_path / "run", variant="sdarts_rs", ops="aca", epochs=2,
                   cells=3, channels=4, nodes=1, batch_size=16, eval_cells=3,
                   eval_channels=4, score_batches=1, seed=5, verbose=0, allocator="none",
                   hessian_every=0, perturbation_epsilon=0.1)
    assert model.architecture.provenance["variant"] == "sdarts_rs"
    assert model.architecture.provenance["perturbation_epsilon"] == 0.1
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert config["variant"] == "sdarts_rs" and config["perturbation_epsilon"] == 0.1
    records = [json.loads(line)
               for line in (tmp_path / "run" / "alphas.jsonl").read_text().splitlines()]
    assert len(records) == 2 and records[1]["alphas"] != records[0]["alphas"]
    assert all(np.isfinite(r["metrics"]["loss"]) for r in records)
