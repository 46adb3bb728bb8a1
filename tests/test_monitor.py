"""Collapse monitor (Hessian eigenvalue, skip counts) and R-DARTS's robustness op sets."""

from __future__ import annotations

import json

import keras
import numpy as np
import pytest
import tensorflow as tf

from aca_keras.layers import ops
from aca_keras.models.derived import build_model, load_model
from aca_keras.models.supernet import SearchNetwork
from aca_keras.searching import monitor
from aca_keras.space.architecture import Architecture
from aca_keras.space.genotype import Genotype, derive_genotype


def _batch(seed: int, n: int = 8, shape=(8, 8, 3), classes: int = 3):
    rng = np.random.default_rng(seed)
    x = tf.constant(rng.uniform(0, 255, (n,) + shape).astype(keras.config.floatx()))
    return x, tf.constant(rng.integers(0, classes, n).astype("int32"))


@pytest.fixture
def float64():
    keras.config.set_floatx("float64")
    yield
    keras.config.set_floatx("float32")


def _explicit_hessian(net, x, y, h: float = 1e-5) -> np.ndarray:
    """The Hessian built column by column: central differences of the alpha gradient along
    each basis vector (float64; first derivatives only, see the monitor's docstring)."""
    gradient = monitor.alpha_gradient_fn(net, x, y)
    size = sum(int(np.prod(a.shape)) for a in net.alpha_variables)
    columns = []
    for i in range(size):
        e = np.zeros(size)
        e[i] = h
        columns.append((gradient(tf.constant(e)) - gradient(tf.constant(-e))).numpy() / (2 * h))
    return np.stack(columns, axis=1)


def test_alpha_gradient_matches_a_numerical_derivative_of_the_loss(float64):
    """The gradient the Hessian is built from is right: g . v equals the directional
    derivative of the loss (so the Hessian below rests on a checked first derivative)."""
    net = SearchNetwork((8, 8, 3), 3, cells=3, channels=4, nodes=1, ops="rdarts-s3")
    net.compile()
    net.ensure_built()
    x, y = _batch(1)
    gradient = monitor.alpha_gradient_fn(net, x, y)
    size = sum(int(np.prod(a.shape)) for a in net.alpha_variables)
    v = np.random.default_rng(3).normal(size=size)

    def loss_at(step):
        sizes = [int(np.prod(a.shape)) for a in net.alpha_variables]
        saved = [a.numpy().copy() for a in net.alpha_variables]
        state = [s.numpy().copy() for s in net.non_trainable_variables]
        for a, part in zip(net.alpha_variables, np.split(step, np.cumsum(sizes)[:-1])):
            a.assign(a.numpy() + part.reshape(a.shape))
        value = float(net.loss(y, net(x, training=True)))
        for a, a0 in zip(net.alpha_variables, saved):
            a.assign(a0)
        for s, s0 in zip(net.non_trainable_variables, state):
            s.assign(s0)
        return value

    h = 1e-6
    numeric = (loss_at(h * v) - loss_at(-h * v)) / (2 * h)
    analytic = float(np.dot(gradient(tf.zeros(size, tf.float64)).numpy(), v))
    assert analytic == pytest.approx(numeric, rel=1e-6)


@pytest.mark.parametrize("op_set", ["rdarts-s3", "rdarts-s4"])
def test_hessian_eigenvalue_matches_the_explicit_hessian(float64, op_set):
    keras.utils.set_random_seed(0)
    net = SearchNetwork((8, 8, 3), 3, cells=3, channels=4, nodes=1, ops=op_set)
    net.compile()
    rng = np.random.default_rng(0)
    for a in net.alpha_variables:
        a.assign(rng.normal(size=a.shape))
    x, y = _batch(1)
    net.ensure_built()
    state = [v.numpy().copy() for v in net.non_trainable_variables]
    alphas = [a.numpy().copy() for a in net.alpha_variables]
    size = sum(int(np.prod(a.shape)) for a in net.alpha_variables)
    value = monitor.hessian_eigenvalue(net, x, y, iterations=size)
    # the measurement leaves the alphas, BatchNorm statistics and random states as they were
    # (so the noise op draws the same noise in every product and in the Hessian below)
    for before, var in zip(state + alphas, net.non_trainable_variables + net.alpha_variables):
        np.testing.assert_array_equal(before, var.numpy())
    hessian = _explicit_hessian(net, x, y)
    # columns built independently agree with each other: a symmetric matrix
    np.testing.assert_allclose(hessian, hessian.T, rtol=1e-5, atol=1e-8)
    eigenvalues = np.linalg.eigvalsh((hessian + hessian.T) / 2)
    # the largest eigenvalue (R-DARTS's indicator), not the largest in magnitude
    assert value == pytest.approx(eigenvalues[-1], rel=1e-5, abs=1e-8)
    assert eigenvalues[-1] > 1e-3


def test_lanczos_finds_the_largest_eigenvalue_of_a_known_matrix():
    rng = np.random.default_rng(0)
    basis, _ = np.linalg.qr(rng.normal(size=(30, 30)))
    spectrum = np.concatenate([[-9.0, 2.5], rng.uniform(-1.0, 1.0, 28)])
    matrix = basis @ np.diag(spectrum) @ basis.T
    # power iteration would return -9 (largest magnitude); the indicator is the largest, 2.5
    assert monitor.lanczos_largest(lambda v: matrix @ v, 30, 30) == pytest.approx(2.5, rel=1e-9)
    assert monitor.lanczos_largest(lambda v: matrix @ v, 30, 12) == pytest.approx(2.5, rel=1e-3)


def test_collapse_statistics_count_the_derived_cell():
    net = SearchNetwork((8, 8, 3), 3, cells=3, channels=4, nodes=2, ops="rdarts-s3")
    net.ensure_built()
    # make skip_connect the strongest op on every normal edge, sep_conv on every reduce edge
    skip, sep = net.op_names.index("skip_connect"), net.op_names.index("sep_conv_3x3")
    normal = np.zeros(net.alpha_normal.shape)
    normal[:, skip] = 3.0
    reduce = np.zeros(net.alpha_reduce.shape)
    reduce[:, sep] = 3.0
    net.alpha_normal.assign(normal)
    net.alpha_reduce.assign(reduce)
    stats = monitor.collapse_statistics(net)
    assert stats["skip_edges"] == stats["parameter_free_edges"] == 4  # 2 nodes x 2 edges
    assert stats["reduce_skip_edges"] == stats["reduce_parameter_free_edges"] == 0
    expected = np.exp(3.0) / (np.exp(3.0) + 2.0)
    assert stats["mean_skip_weight"] == pytest.approx(expected, rel=1e-6)
    # every normal edge is at stride 1: each skip_connect is an identity
    assert stats["identity_edges"] == 4 and stats["reduce_identity_edges"] == 0
    no_skip = SearchNetwork((8, 8, 3), 3, cells=3, channels=4, nodes=2, ops="rdarts-s3-aca")
    no_skip.ensure_built()
    assert monitor.collapse_statistics(no_skip)["mean_skip_weight"] is None


def test_identity_edges_follow_the_stride_rule():
    """A skip_connect is an identity at stride 1 only: in the reduction cell, those from the
    cell inputs 0 and 1 are stride-2 FactorizedReduce edges."""
    net = SearchNetwork((8, 8, 3), 3, cells=3, channels=4, nodes=2, ops="rdarts-s3")
    genotype = Genotype(
        normal=(("skip_connect", 0), ("sep_conv_3x3", 1), ("skip_connect", 1),
                ("sep_conv_3x3", 2)), normal_concat=(2, 3),
        reduce=(("skip_connect", 0), ("sep_conv_3x3", 1), ("skip_connect", 1),
                ("skip_connect", 2)), reduce_concat=(2, 3))
    stats = monitor.collapse_statistics(net, genotype)
    assert (stats["skip_edges"], stats["identity_edges"], stats["parameter_free_edges"]) == (
        2, 2, 2)
    assert (stats["reduce_skip_edges"], stats["reduce_identity_edges"],
            stats["reduce_parameter_free_edges"]) == (3, 1, 3)
    assert {"identity_edges", "reduce_identity_edges"} <= set(monitor.MONITOR_KEYS)


def test_register_op_records_the_operation_kind():
    """``register_op(parametric=...)`` writes the kind into the space-level table that the
    architecture diagnostics and the collapse monitor read; the built-in kinds stay."""
    from aca_keras.space import op_sets

    factory = lambda ci, co, s, a, sync_batch_norm=False: ops.PoolBN(  # noqa: E731
        "max", co, s, a, sync_batch_norm=sync_batch_norm)
    ops.register_op("test_free_pool", parametric=False)(factory)
    ops.register_op("test_default_kind")(factory)
    try:
        assert not ops.get_op_spec("test_free_pool").parametric
        assert op_sets.operation_kind("test_free_pool") == op_sets.PARAMETER_FREE
        assert ops.get_op_spec("test_default_kind").parametric  # undeclared: parametric
        assert op_sets.operation_kind("test_default_kind") == op_sets.PARAMETRIC
        # re-registering without a kind keeps the declared one
        ops.register_op("test_free_pool", overwrite=True)(factory)
        assert not ops.get_op_spec("test_free_pool").parametric
        assert not op_sets.is_parametric("test_free_pool")
        net = SearchNetwork((8, 8, 3), 3, cells=3, channels=4, nodes=1,
                            ops=("test_free_pool", "test_default_kind"))
        genotype = Genotype((("test_free_pool", 0), ("test_default_kind", 1)), (2,),
                            (("test_default_kind", 0), ("test_free_pool", 1)), (2,))
        stats = monitor.collapse_statistics(net, genotype)
        assert stats["parameter_free_edges"] == stats["reduce_parameter_free_edges"] == 1
        with pytest.raises(TypeError, match="parametric"):
            ops.register_op("test_bad_kind", parametric="no")(factory)
    finally:
        ops.unregister_op("test_free_pool")
        ops.unregister_op("test_default_kind")
    assert op_sets.is_parametric("test_free_pool")  # forgotten with the operation
    for name in op_sets.PARAMETER_FREE_OPS:
        assert not ops.get_op_spec(name).parametric
    assert all(ops.get_op_spec(name).parametric
               for name in ("sep_conv_3x3", "sep_conv_5x5", "dil_conv_3x3", "dil_conv_5x5"))


def test_collapse_monitor_is_a_keras_callback_for_any_fit():
    keras.utils.set_random_seed(1)
    net = SearchNetwork((8, 8, 3), 3, cells=3, channels=4, nodes=2, ops="rdarts-s3")
    net.compile(optimizer=keras.optimizers.SGD(0.05, momentum=0.9))
    train, val = _batch(2, 32), _batch(3, 32)
    callback = monitor.CollapseMonitor(net, _batch(4), every=2, iterations=3)
    history = net.fit(tf.data.Dataset.from_tensor_slices((train, val)).batch(16), epochs=3,
                      verbose=0, callbacks=[callback])
    assert [r["epoch"] for r in callback.history] == [1, 2, 3]
    measured = [r["hessian_eigenvalue"] is not None for r in callback.history]
    assert measured == [True, True, False]  # after the first epoch, then every 2nd
    assert len(history.history["hessian_eigenvalue"]) == 2
    assert all(np.isfinite(history.history["hessian_eigenvalue"]))
    assert history.history["skip_edges"][-1] == callback.history[-1]["skip_edges"]
    with pytest.raises(ValueError, match="every must be"):
        monitor.CollapseMonitor(net, _batch(4), every=-1)


def test_the_monitor_leaves_every_variable_of_the_search_as_it_was():
    """The Hessian products move the alphas and run training-mode passes (BatchNorm moving
    statistics, the ``noise`` op's random-generator state): all of it is restored, bit for
    bit, so a search with the monitor is the search without it (most search tests switch it
    off with ``hessian_every=0`` for speed and rely on this)."""
    keras.utils.set_random_seed(3)
    net = SearchNetwork((8, 8, 3), 3, cells=3, channels=4, nodes=2, ops="rdarts-s4")
    net.compile(optimizer=keras.optimizers.SGD(0.05, momentum=0.9))
    net.ensure_built()
    variables = net.variables
    assert any("seed" in v.path for v in net.non_trainable_variables)  # noise's generator
    before = [np.array(v.numpy(), copy=True) for v in variables]
    logs: dict = {}
    monitor.CollapseMonitor(net, _batch(7, 16), iterations=3).on_epoch_end(0, logs)
    assert np.isfinite(logs["hessian_eigenvalue"]) and logs["hessian_eigenvalue"] != 0.0
    for variable, value in zip(variables, before):
        np.testing.assert_array_equal(variable.numpy(), value, err_msg=variable.path)


# ------------------------------------------------------------------------------ op sets


def test_robustness_op_sets_are_r_darts_spaces_and_their_aca_forms():
    assert ops.resolve_op_set("rdarts-s2") == ("skip_connect", "sep_conv_3x3")
    assert ops.resolve_op_set("rdarts-s3") == ("none", "skip_connect", "sep_conv_3x3")
    assert ops.resolve_op_set("rdarts-s4") == ("noise", "sep_conv_3x3")
    assert ops.resolve_op_set("rdarts-s2-aca") == ("sep_conv_3x3",)
    assert ops.resolve_op_set("rdarts-s3-aca") == ("none", "sep_conv_3x3")
    assert ops.resolve_op_set("rdarts-s4-aca") == ops.resolve_op_set("rdarts-s4")
    for name in ("rdarts-s2-aca", "rdarts-s3-aca", "rdarts-s4-aca", "aca"):
        assert "skip_connect" not in ops.resolve_op_set(name)


def test_noise_is_standard_normal_in_training_and_zero_in_inference():
    layer = ops.create_op("noise", 8, 6, stride=2)
    x = tf.ones((64, 9, 9, 8)) * 5.0
    out = keras.ops.convert_to_numpy(layer(x, training=True))
    assert out.shape == (64, 5, 5, 6)
    assert abs(out.mean()) < 0.05 and out.std() == pytest.approx(1.0, abs=0.05)
    again = keras.ops.convert_to_numpy(layer(x, training=True))
    assert not np.allclose(out, again)  # fresh noise on every call
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(layer(x, training=False)), 0.0)
    assert not ops.get_op_spec("noise").parametric


@pytest.mark.parametrize("op_set", [
    # S3 and its ACA form in the default suite, the other four in the slow suite
    "rdarts-s3", "rdarts-s3-aca",
    *(pytest.param(name, marks=pytest.mark.slow)
      for name in ("rdarts-s2", "rdarts-s4", "rdarts-s2-aca", "rdarts-s4-aca"))])
def test_every_robustness_op_set_searches_derives_and_builds(op_set):
    keras.utils.set_random_seed(2)
    net = SearchNetwork((8, 8, 3), 3, cells=3, channels=4, nodes=2, ops=op_set)
    net.compile(optimizer=keras.optimizers.SGD(0.05, momentum=0.9))
    before = [a.numpy().copy() for a in net.alpha_variables] if net.built else None
    train, val = _batch(5, 16), _batch(6, 16)
    history = net.fit(tf.data.Dataset.from_tensor_slices((train, val)).batch(8), epochs=1,
                      verbose=0)
    assert np.isfinite(history.history["loss"][-1])
    if before is not None and len(net.op_names) > 1:
        assert any(not np.allclose(b, a.numpy())
                   for b, a in zip(before, net.alpha_variables))
    genotype = net.genotype()
    chosen = [op for op, _ in genotype.normal + genotype.reduce]
    assert "none" not in chosen
    if op_set.endswith("-aca"):
        assert "skip_connect" not in chosen
    architecture = Architecture.from_genotype(genotype, 4, net.op_names)
    model = build_model(architecture, (8, 8, 3), 3, cells=3, channels=4, auxiliary=False)
    logits = model.inference_model()(train[0][:2], training=False)
    assert logits.shape == (2, 3) and np.all(np.isfinite(keras.ops.convert_to_numpy(logits)))


def test_a_noise_genotype_derives_builds_trains_and_exports(tmp_path):
    """S4's noise op in a derived network: builds, trains, and exports to ONNX equal to Keras
    (inference outputs zero in place of noise)."""
    pytest.importorskip("onnxruntime")
    from aca_keras.exporting.exporter import export

    alphas = np.zeros((5, 2))
    alphas[:, 0] = 1.0  # noise strongest everywhere
    genotype = derive_genotype(alphas, alphas, ops="rdarts-s4")
    assert {op for op, _ in genotype.normal} == {"noise"}
    assert isinstance(genotype, Genotype)
    architecture = Architecture.from_genotype(genotype, 4, ops.resolve_op_set("rdarts-s4"))
    model = build_model(architecture, (8, 8, 3), 3, cells=3, channels=4, auxiliary=False)
    x, y = _batch(7, 16)
    model.compile(optimizer="sgd", loss=keras.losses.SparseCategoricalCrossentropy(
        from_logits=True))
    model.fit(x, y, epochs=1, verbose=0)
    result = export(model, tmp_path / "noise.onnx", format="onnx")
    assert result.verified and result.max_abs_diff < 1e-4
    import onnxruntime as ort

    session = ort.InferenceSession(str(result.path), providers=["CPUExecutionProvider"])
    feed = {session.get_inputs()[0].name: x.numpy()[:4]}
    onnx_out = session.run(None, feed)[0]
    keras_out = keras.ops.convert_to_numpy(model.inference_model()(x[:4], training=False))
    np.testing.assert_allclose(onnx_out, keras_out, rtol=1e-4, atol=1e-4)


def test_cli_search_with_a_robustness_op_set_writes_the_monitor(tmp_path):
    """The issue's command, at test size: --ops rdarts-s3-aca --scorer refill; every line of
    alphas.jsonl carries hessian_eigenvalue and the skip counts."""
    from aca_keras.cli.search import main

    run_dir = tmp_path / "run"
    code = main(["--dataset", "digits", "--epochs", "2", "--cells", "3", "--channels", "4",
                 "--nodes", "2", "--batch-size", "32", "--ops", "rdarts-s3-aca",
                 "--scorer", "refill", "--pooling", "sorted", "--score-batches", "2",
                 "--hessian-iterations", "3", "--eval-cells", "3", "--eval-channels", "4",
                 "--seed", "0", "--run-dir", str(run_dir), "--quiet"])
    assert code == 0
    lines = [json.loads(line) for line in (run_dir / "alphas.jsonl").read_text().splitlines()]
    assert len(lines) == 2
    for line in lines:
        assert isinstance(line["hessian_eigenvalue"], float)
        assert np.isfinite(line["hessian_eigenvalue"])
        assert line["skip_edges"] == 0 and line["mean_skip_weight"] is None
        assert line["identity_edges"] == line["reduce_identity_edges"] == 0
        assert "hessian_eigenvalue" not in line["metrics"]
    architecture = json.loads((run_dir / "architecture.json").read_text())
    # the diagnostics: the cells' figures and the size of the derived network built
    loaded = Architecture.load(run_dir / "architecture.json")
    diagnostics = architecture["diagnostics"]
    assert diagnostics["normal"] == loaded.diagnostics()["normal"].to_dict()
    assert diagnostics["reduce"]["identity_edges"] == loaded.identity_edges["reduce"]
    model = load_model(run_dir / "model.keras", compile=False)
    assert diagnostics["network"] == {"cells": 3, "channels": 4, "input_shape": [8, 8, 1],
                                      "num_classes": 10, **model.size()}
    assert diagnostics["network"]["parameters"] > 0
    provenance = architecture["provenance"]
    assert provenance["scorer"] == "refill" and provenance["pooling"] == "sorted"
    assert (run_dir / "collapse.png").is_file()
    config = json.loads((run_dir / "config.json").read_text())
    assert config["hessian_every"] == 1 and config["ops"] == "rdarts-s3-aca"
