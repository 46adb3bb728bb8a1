"""The operation registry and its layers."""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf

from aca_keras.errors import UnknownOperationError
from aca_keras.layers import ops

X = np.random.default_rng(0).normal(size=(2, 9, 9, 8)).astype("float32")


def _trainable(layer) -> int:
    return int(sum(np.prod(v.shape) for v in layer.trainable_weights))


@pytest.mark.parametrize("name", ops.DARTS_OPS)
@pytest.mark.parametrize("stride", [1, 2])
@pytest.mark.parametrize("channels_out", [8, 3])
def test_every_op_gives_the_requested_shape(name, stride, channels_out):
    layer = ops.create_op(name, 8, channels_out, stride, affine=True)
    y = layer(X, training=True)
    side = 9 if stride == 1 else 5  # ceil(9 / 2): odd sizes work too
    assert tuple(y.shape) == (2, side, side, channels_out)
    assert np.all(np.isfinite(keras.ops.convert_to_numpy(y)))


def test_parameter_counts_match_the_darts_formulas():
    c = 8
    k3, k5 = 9, 25
    # SepConv: two (depthwise k*k*c + pointwise c*c + BN gamma/beta 2c)
    assert _built(ops.create_op("sep_conv_3x3", c, c)) == 2 * (k3 * c + c * c + 2 * c)
    assert _built(ops.create_op("sep_conv_5x5", c, c)) == 2 * (k5 * c + c * c + 2 * c)
    assert _built(ops.create_op("dil_conv_3x3", c, c)) == k3 * c + c * c + 2 * c
    # fewer output channels: only the last pointwise conv and BN shrink
    assert _built(ops.create_op("dil_conv_5x5", c, 3)) == k5 * c + c * 3 + 2 * 3
    # search mode (affine=False): pools and identity have no trainable weights at all
    for name in ("max_pool_3x3", "avg_pool_3x3", "skip_connect", "none"):
        assert _built(ops.create_op(name, c, c, 1, affine=False)) == 0
    # FactorizedReduce: two 1x1 convs to c/2 each
    assert _built(ops.create_op("skip_connect", c, c, 2, affine=False)) == 2 * c * (c // 2)


def _built(layer) -> int:
    layer(X, training=False)
    return _trainable(layer)


def test_skip_connect_is_exact_identity_at_stride_one():
    layer = ops.create_op("skip_connect", 8, 8, 1)
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(layer(X)), X)
    narrow = ops.create_op("skip_connect", 8, 3, 1)
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(narrow(X)), X[..., :3])


@pytest.mark.parametrize("name", ["max_pool_3x3", "avg_pool_3x3"])
def test_pools_act_channelwise_on_the_first_channels(name):
    layer = ops.create_op(name, 8, 3, 1, affine=False)
    base = keras.ops.convert_to_numpy(layer(X, training=False))
    bumped = X.copy()
    bumped[..., 5] += 10.0  # channel 5 is not among the 3 pooled ones
    np.testing.assert_array_equal(base, keras.ops.convert_to_numpy(layer(bumped, training=False)))
    bumped[..., 1] += 10.0
    changed = keras.ops.convert_to_numpy(layer(bumped, training=False)) != base
    assert changed[..., 1].any() and not changed[..., [0, 2]].any()


def test_avg_pool_excludes_padding():
    layer = ops.create_op("avg_pool_3x3", 1, 1, 1, affine=False)
    ones = np.ones((1, 4, 4, 1), "float32")
    layer(ones, training=False)
    layer.bn.moving_variance.assign(np.ones(1) - ops.BN_EPSILON)  # make BN the identity
    out = keras.ops.convert_to_numpy(layer(ones, training=False))
    np.testing.assert_allclose(out, 1.0, rtol=1e-6)  # corners average 4 ones, not 4/9


def test_zero_is_zero():
    out = keras.ops.convert_to_numpy(ops.create_op("none", 8, 4, 2)(X))
    assert out.shape == (2, 5, 5, 4) and not out.any()


def test_op_sets_and_registry_errors():
    assert ops.resolve_op_set("aca") == tuple(o for o in ops.DARTS_OPS if o != "skip_connect")
    assert ops.resolve_op_set("darts") == ops.DARTS_OPS
    assert ops.resolve_op_set(["none", "sep_conv_3x3"]) == ("none", "sep_conv_3x3")
    with pytest.raises(UnknownOperationError, match="Named sets"):
        ops.resolve_op_set("nasnet")
    with pytest.raises(UnknownOperationError, match="Registered operations"):
        ops.create_op("conv_7x7", 8)
    with pytest.raises(ValueError, match="duplicates"):
        ops.resolve_op_set(["sep_conv_3x3", "sep_conv_3x3"])
    with pytest.raises(ValueError, match="already registered"):
        ops.register_op("sep_conv_3x3")(lambda ci, co, s, a: None)
    with pytest.raises(ValueError, match="more channels"):
        ops.create_op("max_pool_3x3", 4, 8)(X[..., :4])
    with pytest.raises(ValueError, match="stride"):
        ops.create_op("sep_conv_3x3", 8, 8, 3)


def test_registering_a_custom_op():
    name = "test_conv_1x1"
    ops.register_op(name, description="1x1 conv", overwrite=True)(
        lambda ci, co, s, a: ops.ReLUConvBN(co, 1, s, a))
    try:
        assert name in ops.list_ops()
        out = ops.create_op(name, 8, 5, 2)(X, training=False)
        assert tuple(out.shape) == (2, 5, 5, 5)
        assert ops.resolve_op_set(["none", name]) == ("none", name)
    finally:
        ops.unregister_op(name)
    assert name not in ops.list_ops()


@pytest.mark.parametrize("affine", [True, False])
def test_fused_batch_norm_matches_keras_batch_norm(affine):
    import tensorflow as tf

    x = tf.constant(np.random.default_rng(1).normal(2.0, 3.0, (4, 5, 5, 6)).astype("float32"))
    fused, stock = ops.batch_norm(affine), keras.layers.BatchNormalization(
        momentum=ops.BN_MOMENTUM, epsilon=ops.BN_EPSILON, center=affine, scale=affine)
    fused.build(x.shape)
    stock.build(x.shape)
    if affine:
        for layer in (fused, stock):
            layer.gamma.assign(np.linspace(0.5, 2.0, 6))
            layer.beta.assign(np.linspace(-1.0, 1.0, 6))
    for layer in (fused, stock):
        with tf.GradientTape() as tape:
            tape.watch(x)
            y = layer(x, training=True)
            loss = tf.reduce_sum(y * tf.range(6, dtype=tf.float32))
        layer.result = (y.numpy(), tape.gradient(loss, x).numpy())
    np.testing.assert_allclose(fused.result[0], stock.result[0], atol=1e-4)
    np.testing.assert_allclose(fused.result[1], stock.result[1], atol=1e-4)
    np.testing.assert_allclose(fused.moving_mean.numpy(), stock.moving_mean.numpy(), rtol=1e-5)
    # the fused kernel tracks the unbiased variance (n / (n - 1) times the biased one)
    n = 4 * 5 * 5
    biased = x.numpy().var(axis=(0, 1, 2))
    np.testing.assert_allclose(fused.moving_variance.numpy(),
                               0.9 + 0.1 * biased * n / (n - 1), rtol=1e-4)
    inference = fused(x, training=False).numpy()
    expected = (x.numpy() - fused.moving_mean.numpy()) / np.sqrt(
        fused.moving_variance.numpy() + ops.BN_EPSILON)
    if affine:
        expected = expected * fused.gamma.numpy() + fused.beta.numpy()
    np.testing.assert_allclose(inference, expected, atol=1e-4)


@pytest.mark.parametrize("name", ["sep_conv_3x3", "sep_conv_5x5", "max_pool_3x3",
                                  "avg_pool_3x3"])
def test_stride2_windows_are_centred_on_even_pixels_as_in_darts(name):
    """A stride-2 operation samples the stride-1 result at pixels 0, 2, 4, ... (PyTorch's
    symmetric padding); 0.1.0 models (``centred=False``, TF's "same") sample 1, 3, 5, ...
    Checked on the first depthwise stage / the pool, where the equality is exact."""
    x = tf.constant(np.random.default_rng(0).normal(size=(2, 8, 8, 4)).astype("float32"))
    centred = ops.create_op(name, 4, 4, stride=2, affine=False)
    flat = ops.create_op(name, 4, 4, stride=1, affine=False)
    centred.build(x.shape)
    flat.build(x.shape)
    if name.startswith("sep"):
        first, first_flat = centred.first, flat.first
        first_flat.depthwise.set_weights(first.depthwise.get_weights())

        def stage(op, inp):
            y = op.relu(inp)
            if op.pad is not None:
                y = op.pad(y)
            return op.depthwise(y)

        out, reference = stage(first, x), stage(first_flat, x)
        legacy = ops.DilConv.from_config({**first.get_config(), "centred": False})
        legacy.build(x.shape)
        legacy.depthwise.set_weights(first.depthwise.get_weights())
        old = stage(legacy, x)
    else:
        out, reference = centred.pooling(x), flat.pooling(x)
        if centred.subsample is not None:
            out = centred.subsample(out)
        legacy = ops.PoolBN.from_config({**centred.get_config(), "centred": False})
        old = legacy.pooling(x)
    np.testing.assert_allclose(out.numpy(), reference.numpy()[:, ::2, ::2], rtol=1e-5,
                               atol=1e-6)
    np.testing.assert_allclose(old.numpy(), reference.numpy()[:, 1::2, 1::2], rtol=1e-5,
                               atol=1e-6)
    # a config without the key (written by 0.1.0) loads with the old padding
    config = centred.get_config()
    del config["centred"]
    assert type(centred).from_config(config).centred is False
    assert centred.get_config()["centred"] is True
