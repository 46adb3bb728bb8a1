"""Search variants: PC-DARTS partial channels, shuffle, edge normalisation, alpha warm-up;
beta-DARTS regulariser; variant settings through ``search``."""

from __future__ import annotations

import json

import keras
import numpy as np
import pytest
import tensorflow as tf

from aca_keras.channels.importance import score_channels
from aca_keras.layers import channels
from aca_keras.models.bilevel import BilevelOptimizer
from aca_keras.models.supernet import MixedEdge, SearchNetwork
from aca_keras.searching import variants
from aca_keras.searching.pipeline import SearchConfig, search
from aca_keras.space.architecture import Architecture
from aca_keras.space.genotype import derive_genotype

C, K = 8, 4
OPS = ("none", "max_pool_3x3", "avg_pool_3x3", "sep_conv_3x3", "sep_conv_5x5", "dil_conv_3x3",
       "dil_conv_5x5")
PC_TINY = dict(input_shape=(8, 8, 3), num_classes=4, cells=3, channels=C, nodes=2,
               partial_k=K, edge_normalization=True)


def _edge(stride: int = 1) -> MixedEdge:
    edge = MixedEdge(OPS, C, stride, partial_k=K)
    edge.build((None, 6, 6, C))
    return edge


def _weights() -> list:
    w = np.random.default_rng(0).dirichlet(np.ones(len(OPS))).astype("float32")
    return [tf.constant(v) for v in w]


def _batch(seed: int, n: int = 8):
    rng = np.random.default_rng(seed)
    return (tf.constant(rng.uniform(0, 255, (n, 8, 8, 3)).astype("float32")),
            tf.constant(rng.integers(0, 4, n).astype("int32")))


def test_channel_shuffle_is_the_documented_permutation():
    perm = channels.shuffle_permutation(C, K)
    assert sorted(perm.tolist()) == list(range(C))
    assert perm.tolist() == [0, 2, 4, 6, 1, 3, 5, 7]
    x = np.random.default_rng(1).normal(size=(2, 3, 3, C)).astype("float32")
    out = channels.ChannelShuffle(K)(x).numpy()
    np.testing.assert_array_equal(out, x[..., perm])
    # the inverse permutation restores the input
    np.testing.assert_array_equal(out[..., np.argsort(perm)], x)
    restored = channels.ChannelShuffle.from_config(channels.ChannelShuffle(K).get_config())
    assert restored.groups == K


def test_partial_edge_operations_see_exactly_c_over_k_channels():
    edge = _edge()
    assert edge.op_channels == C // K
    kernels = [v for layer in edge.candidates for v in layer.weights if "kernel" in v.path]
    assert kernels, "the conv candidates have kernels"
    for v in kernels:  # depthwise (k, k, in, 1) and pointwise (1, 1, in, out)
        assert v.shape[2] == C // K, v.path
        if v.shape[0] == 1:
            assert v.shape[3] == C // K, v.path
    assert edge.compute_output_shape((None, 6, 6, C)) == (None, 6, 6, C)
    assert edge.get_config()["partial_k"] == K


@pytest.mark.parametrize("stride", [1, 2])
def test_bypass_channels_reach_only_their_shuffled_positions(stride):
    edge = _edge(stride)
    weights = _weights()
    x = np.random.default_rng(2).normal(size=(2, 6, 6, C)).astype("float32")
    base = edge(tf.constant(x), weights, training=False).numpy()
    perm = channels.shuffle_permutation(C, K)
    position = np.argsort(perm)  # concat channel c lands at output position position[c]
    assert base.shape == (2, 6 // stride, 6 // stride, C)
    for c in range(C):
        bumped = x.copy()
        bumped[..., c] += 3.0
        diff = np.abs(edge(tf.constant(bumped), weights, training=False).numpy() - base)
        changed = {int(i) for i in np.nonzero(diff.max(axis=(0, 1, 2)) > 1e-6)[0]}
        if c >= C // K:  # bypass: exactly its own position, moved by exactly +3 (identity/max)
            assert changed == {int(position[c])}
            np.testing.assert_allclose(diff[..., position[c]], 3.0, atol=1e-5)
        else:  # an operation channel: only the positions of the operations' outputs move
            assert changed and changed <= {int(position[j]) for j in range(C // K)}
    if stride == 2:  # the bypass is a parameter-free 2x2 max pool
        pooled = tf.nn.max_pool2d(x[..., C // K:], 2, 2, "SAME").numpy()
        np.testing.assert_allclose(base[..., position[C // K:]], pooled, rtol=1e-6)


def test_betas_are_architecture_weights_and_get_gradients():
    net = SearchNetwork(**PC_TINY)
    net.compile()
    assert len(net.alpha_variables) == 4
    assert net.beta_normal.shape == (5,) and net.beta_reduce.shape == (5,)
    assert not any(v is net.beta_normal for v in net.weight_variables)
    net.beta_normal.assign(np.random.default_rng(3).normal(size=5))
    normal, _ = net.betas().values()
    np.testing.assert_allclose([normal[:2].sum(), normal[2:].sum()], [1.0, 1.0], rtol=1e-6)
    x, y = _batch(0)
    with tf.GradientTape() as tape:
        loss = net.loss(y, net(x, training=True))
    grads = tape.gradient(loss, [net.beta_normal, net.beta_reduce])
    for g in grads:
        assert g is not None and np.all(np.isfinite(g.numpy())) and np.abs(g.numpy()).max() > 0
    # the betas really scale the node sums: changing them changes the output
    before = net(x, training=False).numpy()
    net.beta_reduce.assign([5.0, -5.0, 0.0, 0.0, 0.0])
    assert np.abs(net(x, training=False).numpy() - before).max() > 1e-6


def test_edge_weights_change_which_edges_are_kept():
    ops = list(OPS)
    alpha = np.zeros((5, len(ops)))
    alpha[:, ops.index("sep_conv_3x3")] = [1.0, 1.0, 2.0, 1.5, 0.2]  # node 1 keeps 0, 1
    plain = derive_genotype(alpha, alpha, ops)
    assert [i for _, i in plain.normal[2:]] == [0, 1]
    beta = np.array([0.5, 0.5, 0.05, 0.15, 0.8])  # node 1 now prefers input 2, then 1
    flipped = derive_genotype(alpha, alpha, ops, edge_weights_normal=beta,
                              edge_weights_reduce=beta)
    assert [i for _, i in flipped.normal[2:]] == [1, 2]
    # the supernet passes its own (softmaxed) betas to the derivation
    net = SearchNetwork(**PC_TINY)
    net.alpha_normal.assign(alpha)
    net.alpha_reduce.assign(alpha)
    assert [i for _, i in net.genotype().normal[2:]] == [0, 1]
    logits = np.log(beta)
    net.beta_normal.assign(logits)
    net.beta_reduce.assign(logits)
    assert [i for _, i in net.genotype().normal[2:]] == [1, 2]


class _Recorder(keras.callbacks.Callback):
    def __init__(self, net):
        super().__init__()
        self.net = net
        self.snapshots = []

    def on_epoch_end(self, epoch, logs=None):
        self.snapshots.append([np.array(v.numpy()) for v in self.net.alpha_variables])


def test_warmup_keeps_alphas_and_betas_frozen_then_trains_them():
    net = SearchNetwork(**{**PC_TINY, "nodes": 1, "channels": 4})
    # eager steps (no tracing: fast); the traced tf.cond path runs in the end-to-end search
    net.compile(alpha_warmup=True, run_eagerly=True)
    initial = [np.array(v.numpy()) for v in net.alpha_variables]
    weight = net.weight_variables[0]
    weight_before = np.array(weight.numpy())
    batches = [(_batch(2 * i), _batch(2 * i + 1)) for i in range(4)]
    dataset = tf.data.Dataset.from_generator(
        lambda: iter(batches),
        output_signature=(((tf.TensorSpec((8, 8, 8, 3)), tf.TensorSpec((8,), tf.int32)),) * 2))
    recorder = _Recorder(net)
    net.fit(dataset.repeat(), epochs=3, steps_per_epoch=2, verbose=0, shuffle=False,
            callbacks=[variants.AlphaWarmup(net, 2), recorder])
    for epoch in (0, 1):  # frozen during the two warm-up epochs ...
        for before, after in zip(initial, recorder.snapshots[epoch]):
            np.testing.assert_array_equal(before, after)
    for before, after in zip(initial, recorder.snapshots[2]):  # ... and trained after
        assert np.abs(after - before).max() > 0
    assert np.abs(weight.numpy() - weight_before).max() > 0  # weights trained throughout
    assert float(net.alpha_frozen.numpy()) == 0.0


def test_partial_scores_repeat_each_scored_channel_k_times():
    net = SearchNetwork(**PC_TINY)
    net.compile()
    architecture = Architecture.from_genotype(net.genotype(), C, net.op_names)
    batches = [_batch(5)]
    scores = score_channels(net, architecture, batches, scorer="magnitude", max_batches=1)
    for s in scores.normal + scores.reduce:
        assert s.shape == (C,)
        blocks = s.reshape(C // K, K)
        np.testing.assert_array_equal(blocks, np.repeat(blocks[:, :1], K, axis=1))
        assert np.unique(s).size > 1


def test_beta_decay_gradient_is_lambda_times_softmax_over_edges():
    net = SearchNetwork(input_shape=(8, 8, 3), num_classes=4, cells=3, channels=4, nodes=2)
    net.alpha_normal.assign(np.random.default_rng(4).normal(size=net.alpha_normal.shape))
    net.beta_decay_lambda.assign(0.7)
    with tf.GradientTape() as tape:
        reg = BilevelOptimizer(net).beta_decay_loss()
    grad = tape.gradient(reg, net.alpha_normal).numpy()
    a = net.alpha_normal.numpy()
    softmax = np.exp(a) / np.exp(a).sum(axis=1, keepdims=True)
    np.testing.assert_allclose(grad, 0.7 * softmax / a.shape[0], rtol=1e-5)


def test_variant_settings_resolve_and_validate():
    assert variants.resolve_settings("pc_darts", 50, None, None, None) == {
        "partial_k": 4, "alpha_warmup_epochs": 15, "beta_decay_weight": 0.0}
    assert variants.resolve_settings("pc_darts", 3, None, None, None)["alpha_warmup_epochs"] == 2
    assert variants.resolve_settings("darts", 3, None, None, None)["alpha_warmup_epochs"] == 0
    assert variants.resolve_settings("beta_darts", 3, None, None, None)["beta_decay_weight"] == 1.0
    with pytest.raises(ValueError, match="Unknown search variant"):
        SearchConfig(variant="gdas").validate()
    with pytest.raises(ValueError, match="alpha_warmup_epochs"):
        SearchConfig(variant="pc_darts", epochs=3, alpha_warmup_epochs=3).validate()
    with pytest.raises(ValueError, match="multiple of partial_k"):
        SearchConfig(variant="pc_darts", channels=6).validate()
    with pytest.raises(ValueError, match="needs variant='pc_darts'"):
        SearchConfig(partial_k=2).validate()


def test_pc_darts_search_end_to_end_with_the_darts_op_set(tmp_path):
    """(The study's tiny grid, tests/test_study.py, runs pc_darts with the aca op set.)"""
    from aca_keras.data import loading as data

    ops = "darts"
    bundle = data.load("digits")
    arrays = bundle.x_train[:96], bundle.y_train[:96]
    model = search(arrays, run_dir=tmp_path / "run", variant="pc_darts", ops=ops, epochs=2,
                   cells=3, channels=C, nodes=1, batch_size=16, eval_cells=3,
                   eval_channels=C, score_batches=1, seed=5, verbose=0, allocator="none",
                   hessian_every=0)
    architecture = model.architecture
    assert architecture.provenance["variant"] == "pc_darts"
    assert architecture.provenance["partial_k"] == K
    assert architecture.provenance["alpha_warmup_epochs"] == 1
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert config["variant"] == "pc_darts" and config["partial_k"] == K
    records = [json.loads(line)
               for line in (tmp_path / "run" / "alphas.jsonl").read_text().splitlines()]
    assert "edge_weights" in records[0]
    # epoch 1 was warm-up: the alphas are still the initial ones; epoch 2 trained them
    keras.utils.set_random_seed(5)
    init = SearchNetwork(bundle.input_shape, bundle.num_classes, cells=3, channels=C, nodes=1,
                         ops=ops, partial_k=K, edge_normalization=True)
    np.testing.assert_allclose(records[0]["alphas"]["normal"], init.alpha_normal.numpy(),
                               rtol=1e-6)
    assert records[1]["alphas"] != records[0]["alphas"]
    assert architecture.normal.channels == (C, C)  # allocator none: plain DARTS edges


# ------------------------------------------------------------- variants as objects (issue 38)


def test_cli_variant_help_lists_the_registered_variants():
    """aca-search's --help spells the variants (their registry imports TensorFlow); it must
    list exactly the registered ones, in order."""
    from aca_keras.cli.search import VARIANTS, build_parser

    assert list(VARIANTS) == variants.list_variants()
    text = " ".join(build_parser().format_help().split())
    for name in VARIANTS:
        assert name in text
    assert "--perturbation-epsilon" in text


def _configured(name: str, epochs: int = 50, **settings):
    spec = variants.get_variant(name)
    return spec.configure(variants.resolve_settings(name, epochs, **settings), epochs=epochs,
                          steps_per_epoch=2, seed=0)


def test_the_built_in_variants_are_objects_with_the_search_hooks():
    net = SearchNetwork(input_shape=(8, 8, 3), num_classes=4, cells=3, channels=4, nodes=2)
    darts = _configured("darts")
    assert darts.network_arguments() == {"partial_k": 1, "edge_normalization": False}
    assert darts.compile_arguments() == {"alpha_warmup": False, "variant": darts}
    assert darts.callbacks(net) == [] and darts.extra_alpha_loss(net) is None
    assert not darts.transforms_alphas

    pc = _configured("pc_darts")
    assert pc.network_arguments() == {"partial_k": 4, "edge_normalization": True}
    assert pc.compile_arguments()["alpha_warmup"] is True
    [warmup] = pc.callbacks(net)
    assert isinstance(warmup, variants.AlphaWarmup) and warmup.warmup_epochs == 15
    assert pc.extra_alpha_loss(net) is None and not pc.transforms_alphas

    beta = _configured("beta_darts", epochs=5)
    [ramp] = beta.callbacks(net)
    assert isinstance(ramp, variants.BetaDecaySchedule) and (ramp.weight, ramp.epochs) == (1.0, 5)
    net.beta_decay_lambda.assign(0.5)
    expected = 0.5 * sum(np.mean(np.log(np.exp(a).sum(axis=-1)))
                         for a in (net.alpha_normal.numpy(), net.alpha_reduce.numpy()))
    np.testing.assert_allclose(float(beta.extra_alpha_loss(net)), expected, rtol=1e-6)
    assert not beta.transforms_alphas
    # an explicit weight of 0 switches the regulariser off, as before
    assert _configured("beta_darts", beta_decay_weight=0.0).extra_alpha_loss(net) is None

    assert variants.get_variant("sdarts_rs").transforms_alphas
    for name in variants.list_variants():  # every built-in names its source
        assert variants.get_variant(name).source


def test_the_beta_darts_variant_steps_exactly_as_the_beta_decay_flag():
    """The regulariser as the variant's extra loss gives the numbers the compile flag gave."""
    x_w, y_w = _batch(8)
    x_a, y_a = _batch(9)
    alphas = []
    for kwargs in ({"beta_decay": True}, {"variant": _configured("beta_darts", epochs=3)}):
        keras.utils.set_random_seed(1)
        net = SearchNetwork(input_shape=(8, 8, 3), num_classes=4, cells=3, channels=4,
                            nodes=2)
        net.compile(**kwargs)
        net.beta_decay_lambda.assign(0.8)
        net.architect.alpha_step(x_w, y_w, x_a, y_a)
        alphas.append([a.numpy() for a in net.alpha_variables])
    for a, b in zip(*alphas):
        np.testing.assert_array_equal(a, b)


def test_a_new_variant_is_one_subclass_whose_hooks_the_step_calls():
    from dataclasses import dataclass

    from aca_keras.models.variant import SearchVariant

    @dataclass(frozen=True)
    class Doubled(SearchVariant):  # an extra loss and an alpha transform, nothing else
        name: str = "test_doubled"

        def extra_alpha_loss(self, network):
            return 0.25 * keras.ops.sum(network.alpha_normal ** 2)

        def alpha_transform(self, network, op_weights, phase):
            return op_weights if phase == "alpha" else tuple(2.0 * w for w in op_weights)

    variants.register_variant(Doubled())
    try:
        assert "test_doubled" in variants.list_variants()
        assert variants.resolve_settings("test_doubled", 3) == {
            "partial_k": 1, "alpha_warmup_epochs": 0, "beta_decay_weight": 0.0}
        variant = variants.get_variant("test_doubled").configure({}, epochs=3)
        net = SearchNetwork(input_shape=(8, 8, 3), num_classes=4, cells=3, channels=4,
                            nodes=2)
        net.compile(variant=variant)
        net.alpha_normal.assign(np.full(net.alpha_normal.shape, 0.5))
        np.testing.assert_allclose(float(net.architect.extra_alpha_loss()),
                                   0.25 * 0.25 * net.alpha_normal.shape[0] * 7, rtol=1e-6)
        x, y = _batch(10)
        doubled = tuple(2.0 * w for w in net.op_weights())
        expected = net.loss_and_logits(x, y, op_weights=doubled)[0].numpy()
        plain = net.loss_and_logits(x, y)[0].numpy()
        np.testing.assert_allclose(net.architect.loss_and_logits(x, y, "weight")[0].numpy(),
                                   expected, rtol=1e-6)
        np.testing.assert_allclose(net.architect.loss_and_logits(x, y, "alpha")[0].numpy(),
                                   plain, rtol=1e-6)
        assert abs(expected - plain) > 1e-6
    finally:
        variants.unregister_variant("test_doubled")


def test_variant_owned_settings_are_refused_for_other_variants():
    assert variants.own_settings() == {"perturbation_epsilon": ["sdarts_rs"]}
    with pytest.raises(ValueError, match="needs variant='sdarts_rs'"):
        variants.resolve_settings("pc_darts", 3, perturbation_epsilon=0.1)
    with pytest.raises(ValueError, match="No search variant has the setting 'warp'"):
        variants.resolve_settings("darts", 3, warp=1)
    assert variants.VariantSpec is variants.SearchVariant
