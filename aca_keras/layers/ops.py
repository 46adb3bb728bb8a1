"""The DARTS operation registry and its Keras layers.

One registry serves the search supernet (``affine=False``) and the derived network
(``affine=True``). Every operation is created by :func:`create_op` from its registered name,
an input and an output channel count (which may differ: the ACA builder asks an operation for
only its ``k_e`` important channels) and a stride (1 or 2). BatchNorm synchronisation across
replicas is an explicit argument too (``sync_batch_norm``, default ``False``): every layer
that builds BatchNorm takes it, stores it and returns it from ``get_config``.

Channel conventions:

* convolutions map ``channels_in`` to any ``channels_out``;
* pools act channel-wise, so they take ``channels_out <= channels_in`` and pool the first
  ``channels_out`` input channels; they have no parameters beyond their BatchNorm;
* ``skip_connect`` is the identity at stride 1 (the first ``channels_out`` channels) and a
  :class:`FactorizedReduce` at stride 2;
* ``none`` is :class:`Zero`.
"""

from __future__ import annotations

import contextlib
import contextvars
import inspect
import weakref
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import keras
import tensorflow as tf

from aca_keras import _internals as internals
from aca_keras.errors import UnknownOperationError
from aca_keras.registry import Registry
from aca_keras.space.op_sets import (  # noqa: F401  (the op sets, re-exported here)
    ACA_OPS,
    DARTS_OPS,
    OP_SETS,
    RDARTS_OPS,
    declare_operation,
    forget_operation,
    is_parametric,
    resolve_op_set,
)

_PACKAGE = "aca_keras"

# PyTorch's BatchNorm2d defaults (momentum 0.1 there is 0.9 here), as in the DARTS papers.
BN_MOMENTUM = 0.9
BN_EPSILON = 1e-5


_GRAPH_CONSTANTS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


_CENTRED_STRIDE2: contextvars.ContextVar[bool] = contextvars.ContextVar("centred_stride2",
                                                                       default=True)


@contextlib.contextmanager
def stride2_padding(centred: bool = True):
    """Within this context, stride-2 separable convolutions and pools built without an
    explicit ``centred`` argument centre their windows as DARTS does (``True``, the default)
    or use TensorFlow's ``"same"`` padding of aca_keras 0.1.0 (``False``); see
    :class:`DilConv`. Models saved by 0.1.0 are rebuilt under ``False``."""
    token = _CENTRED_STRIDE2.set(bool(centred))
    try:
        yield
    finally:
        _CENTRED_STRIDE2.reset(token)


_MOVING_STATISTICS_FROZEN: contextvars.ContextVar[bool] = contextvars.ContextVar(
    "moving_statistics_frozen", default=False)


@contextlib.contextmanager
def moving_statistics_frozen(frozen: bool = True):
    """While a function is traced within this context, :class:`BatchNormalization` layers in
    training mode still normalise with the batch statistics but leave their moving
    statistics as they are. Used when a supernet cell's forward pass is computed a second
    time in the backward pass (``SearchNetwork.compile(recompute=True)``): that batch must
    not be counted twice."""
    token = _MOVING_STATISTICS_FROZEN.set(bool(frozen))
    try:
        yield
    finally:
        _MOVING_STATISTICS_FROZEN.reset(token)


def _centred(value: bool | None) -> bool:
    return _CENTRED_STRIDE2.get() if value is None else bool(value)


def _graph_constant(value: float, channels: int) -> tf.Tensor:
    """A float32 vector of ``channels`` times ``value``, created once per graph being traced
    (a supernet step has over a thousand non-affine BatchNorm calls that would each add their
    own constants); a fresh tensor when executing eagerly."""
    if tf.executing_eagerly():
        return tf.constant(value, tf.float32, shape=(channels,))
    graph = tf.compat.v1.get_default_graph()
    cache = _GRAPH_CONSTANTS.setdefault(graph, {})
    key = (value, channels)
    if key not in cache:
        cache[key] = tf.constant(value, tf.float32, shape=(channels,))
    return cache[key]


def _renorm(layer: keras.layers.BatchNormalization) -> bool:
    """Whether ``layer`` uses batch renormalisation (Keras 3.14 added ``renorm``; earlier
    Keras 3 releases have no such attribute and no renormalisation)."""
    return bool(getattr(layer, "renorm", False))


@keras.saving.register_keras_serializable(package=_PACKAGE)
class BatchNormalization(keras.layers.BatchNormalization):
    """``BatchNormalization`` computed with TensorFlow's fused kernel.

    Same variables, configuration and results as the stock layer (it *is* one, so files stay
    interchangeable), but one fused op forward and one backward instead of about 36 and 90:
    the supernet's step graph gets much smaller, faster to trace and to run. It keeps the
    stock class name, so `.keras` files saved with either load with either. Falls back to
    the stock computation for anything the fused kernel does not cover (float64, masks,
    renorm, a channel axis other than the last of a 4-D tensor, synchronized statistics
    across replicas outside a replica's step).

    ``synchronized=True`` (the stock argument, see :func:`batch_norm`) matters only in a
    replica context with several replicas: there a training step normalises with the global
    batch's statistics. Outside any strategy (one replica) a synchronised layer computes
    exactly what an unsynchronised one does, with the fused kernel, so a model trained on
    several replicas and reloaded on one device runs as fast as any other.
    """

    def _fusable(self, inputs, mask) -> bool:
        return (mask is None and not _renorm(self)
                and (not self.synchronized or _single_replica())
                and len(inputs.shape) == 4
                and self.axis in (3, -1)
                and tf.as_dtype(inputs.dtype) in (tf.float32, tf.float16, tf.bfloat16))

    def _synchronized_call(self, inputs, context):
        """Training step under a multi-replica strategy (``synchronized=True``): the batch
        statistics of the *global* batch, from one all-reduce of (sum, sum of squares, count)
        per layer, so every replica normalises and tracks exactly as one device would."""
        x = tf.cast(inputs, tf.float32)
        channels = x.shape[-1]
        count = tf.cast(tf.reduce_prod(tf.shape(x)[:-1]), tf.float32)
        stats = context.all_reduce(tf.distribute.ReduceOp.SUM, tf.concat(
            [tf.reduce_sum(x, [0, 1, 2]), tf.reduce_sum(tf.square(x), [0, 1, 2]),
             tf.reshape(count, (1,))], axis=0))
        total = stats[-1]
        mean = stats[:channels] / total
        variance = tf.maximum(stats[channels:2 * channels] / total - tf.square(mean), 0.0)
        scale = tf.cast(self.gamma, tf.float32) if self.scale else None
        offset = tf.cast(self.beta, tf.float32) if self.center else None
        outputs = tf.nn.batch_normalization(x, mean, variance, offset, scale, self.epsilon)
        unbiased = variance * total / tf.maximum(total - 1.0, 1.0)  # as the fused kernel
        m = self.momentum
        if not _MOVING_STATISTICS_FROZEN.get():
            self.moving_mean.assign(self.moving_mean * m + mean * (1.0 - m))
            self.moving_variance.assign(self.moving_variance * m + unbiased * (1.0 - m))
        return tf.cast(outputs, self.compute_dtype)

    def call(self, inputs, training=None, mask=None, output_scale=None):
        """The stock call; ``output_scale`` (optional, one value per channel) multiplies the
        normalised output, inside the fused kernel where it runs (a supernet's grouped edges
        weight each candidate's output by its alphas this way: no separate product of the
        activations, and the alphas' gradient comes out of the kernel's scale gradient)."""
        if output_scale is None:
            return self._normalise(inputs, training, mask, None)
        if not self._fusable(inputs, mask):  # (also every multi-replica synchronised call)
            outputs = self._normalise(inputs, training, mask, None)
            return outputs * tf.cast(output_scale, outputs.dtype)
        return self._normalise(inputs, training, mask, output_scale)

    def _normalise(self, inputs, training, mask, output_scale):
        if (training and self.trainable and self.synchronized and mask is None
                and not _renorm(self) and len(inputs.shape) == 4 and self.axis in (3, -1)):
            context = tf.distribute.get_replica_context()
            if context is not None and context.num_replicas_in_sync > 1:
                return self._synchronized_call(inputs, context)
        if not self._fusable(inputs, mask):
            if not (training and _MOVING_STATISTICS_FROZEN.get()):
                return super().call(inputs, training=training, mask=mask)
            # the stock computation updates the statistics itself: put them back
            kept = [tf.identity(v) for v in (self.moving_mean, self.moving_variance)]
            outputs = super().call(inputs, training=training, mask=mask)
            for variable, value in zip((self.moving_mean, self.moving_variance), kept):
                variable.assign(value)
            return outputs
        channels = inputs.shape[-1]
        scale = self.gamma if self.scale else _graph_constant(1.0, channels)
        offset = self.beta if self.center else _graph_constant(0.0, channels)
        scale = tf.cast(scale, tf.float32)
        offset = tf.cast(offset, tf.float32)
        if output_scale is not None:
            weights = tf.cast(output_scale, tf.float32)
            scale = weights if not self.scale else scale * weights
            if self.center:
                offset = offset * weights
        if training and self.trainable:
            # the kernel also updates the moving statistics, with the unbiased batch variance
            # (as PyTorch tracks it): moving = momentum * moving + (1 - momentum) * batch
            outputs, mean, variance = tf.compat.v1.nn.fused_batch_norm(
                inputs, scale, offset, mean=tf.cast(self.moving_mean, tf.float32),
                variance=tf.cast(self.moving_variance, tf.float32), epsilon=self.epsilon,
                is_training=True, exponential_avg_factor=1.0 - self.momentum)
            if not _MOVING_STATISTICS_FROZEN.get():
                self.moving_mean.assign(tf.cast(mean, self.moving_mean.dtype))
                self.moving_variance.assign(tf.cast(variance, self.moving_variance.dtype))
        else:
            outputs, _, _ = tf.compat.v1.nn.fused_batch_norm(
                inputs, scale, offset, mean=tf.cast(self.moving_mean, tf.float32),
                variance=tf.cast(self.moving_variance, tf.float32), epsilon=self.epsilon,
                is_training=False)
        return tf.cast(outputs, self.compute_dtype)


def _single_replica() -> bool:
    """True outside any strategy and in the replica context of a one-replica strategy."""
    context = tf.distribute.get_replica_context()
    return context is not None and context.num_replicas_in_sync == 1


def batch_norm(affine: bool, name: str | None = None,
               sync_batch_norm: bool = False) -> BatchNormalization:
    """BatchNorm with DARTS settings; ``affine=False`` drops gamma and beta (search).

    ``sync_batch_norm=True`` makes it ``synchronized``: under a strategy with several
    replicas its training statistics are those of the global batch (see
    ``docs/scaling.md``); :func:`aca_keras.distribute.synchronize_batch_norm` gives the value
    a run uses. The layers and models that build BatchNorm take the same argument and pass it
    down."""
    return BatchNormalization(momentum=BN_MOMENTUM, epsilon=BN_EPSILON, center=affine, scale=affine,
                              synchronized=bool(sync_batch_norm), name=name)


class _Chain(keras.layers.Layer):
    """A layer that applies a fixed list of sublayers in turn (created in ``__init__``)."""

    def _chain(self) -> Sequence[keras.layers.Layer]:
        raise NotImplementedError

    def build(self, input_shape):
        shape = input_shape
        for layer in self._chain():
            if not layer.built:
                layer.build(shape)
            shape = layer.compute_output_shape(shape)
        self.built = True

    def call(self, inputs, training=None):
        x = inputs
        for layer in self._chain():
            x = _call(layer, x, training)
        return x

    def compute_output_shape(self, input_shape):
        shape = input_shape
        for layer in self._chain():
            shape = layer.compute_output_shape(shape)
        return shape


class _CentredChain(_Chain):
    """A chain with a ``centred`` argument (stride-2 windows on the even pixels)."""

    @classmethod
    def from_config(cls, config):
        # configs written before ``centred`` existed (aca_keras 0.1.0) keep their padding
        return cls(**{"centred": False, **config})


def _call(layer: keras.layers.Layer, x, training):
    if isinstance(layer, (keras.layers.BatchNormalization, _Chain, FactorizedReduce)):
        return layer(x, training=training)
    return layer(x)


@keras.saving.register_keras_serializable(package=_PACKAGE)
class ChannelSlice(keras.layers.Layer):
    """Channels ``start:stop`` of an NHWC tensor (Keras has no slicing layer)."""

    def __init__(self, start: int, stop: int, **kwargs):
        super().__init__(**kwargs)
        if not 0 <= start < stop:
            raise ValueError(f"ChannelSlice needs 0 <= start < stop, got start={start}, stop={stop}")
        self.start = start
        self.stop = stop

    def call(self, inputs):
        return inputs[..., self.start : self.stop]

    def compute_output_shape(self, input_shape):
        return tuple(input_shape[:-1]) + (self.stop - self.start,)

    def get_config(self):
        return {**super().get_config(), "start": self.start, "stop": self.stop}


@keras.saving.register_keras_serializable(package=_PACKAGE)
class Subsample(keras.layers.Layer):
    """Keeps every ``stride``-th row and column (used where TF cannot stride a dilated conv)."""

    def __init__(self, stride: int, **kwargs):
        super().__init__(**kwargs)
        self.stride = stride

    def call(self, inputs):
        return inputs[:, :: self.stride, :: self.stride, :]

    def compute_output_shape(self, input_shape):
        n, h, w, c = input_shape
        s = self.stride
        return (n, None if h is None else -(-h // s), None if w is None else -(-w // s), c)

    def get_config(self):
        return {**super().get_config(), "stride": self.stride}


@keras.saving.register_keras_serializable(package=_PACKAGE)
class Zero(keras.layers.Layer):
    """The ``none`` operation: zeros of the output shape."""

    def __init__(self, channels_out: int, stride: int = 1, **kwargs):
        super().__init__(**kwargs)
        self.channels_out = channels_out
        self.stride = stride

    def call(self, inputs):
        z = inputs[:, :: self.stride, :: self.stride, :1] * 0.0
        return keras.ops.repeat(z, self.channels_out, axis=-1)

    def compute_output_shape(self, input_shape):
        n, h, w, _ = input_shape
        s = self.stride
        return (n, None if h is None else -(-h // s), None if w is None else -(-w // s), self.channels_out)

    def get_config(self):
        return {**super().get_config(), "channels_out": self.channels_out, "stride": self.stride}


@keras.saving.register_keras_serializable(package=_PACKAGE)
class Noise(keras.layers.Layer):
    """The ``noise`` operation of R-DARTS (Zela et al., ICLR 2020, search space S4).

    In training it discards its input and outputs standard normal noise of the output shape
    (``channels_out`` channels, the input's rows and columns taken every ``stride``-th): a
    useless candidate that a sound search never picks, which DARTS often does. In inference it
    outputs the noise's mean, zero, so a derived or exported model that holds it stays
    deterministic (exported files match Keras).
    """

    #: its training output is random: a supernet does not recompute a cell that holds it
    #: (``SearchNetwork.compile(recompute=True)``), which would draw other noise
    stochastic = True

    def __init__(self, channels_out: int, stride: int = 1, seed: int | None = None, **kwargs):
        super().__init__(**kwargs)
        self.channels_out = channels_out
        self.stride = stride
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed)

    def call(self, inputs, training=None):
        z = inputs[:, :: self.stride, :: self.stride, :1] * 0.0
        zeros = keras.ops.repeat(z, self.channels_out, axis=-1)
        if not training:
            return zeros
        return zeros + keras.random.normal(keras.ops.shape(zeros), dtype=zeros.dtype,
                                           seed=self.seed_generator)

    def compute_output_shape(self, input_shape):
        n, h, w, _ = input_shape
        s = self.stride
        return (n, None if h is None else -(-h // s), None if w is None else -(-w // s),
                self.channels_out)

    def get_config(self):
        return {**super().get_config(), "channels_out": self.channels_out,
                "stride": self.stride, "seed": self.seed}


@keras.saving.register_keras_serializable(package=_PACKAGE)
class ReLUConvBN(_Chain):
    """ReLU, convolution (no bias), BatchNorm.
    ``sync_batch_norm``: its BatchNorm synchronises its statistics across replicas (see
    :func:`batch_norm`); ``False`` (the default) for configs saved without the key.
    """

    def __init__(self, channels_out: int, kernel_size: int = 1, stride: int = 1,
                 affine: bool = True, sync_batch_norm: bool = False, **kwargs):
        super().__init__(**kwargs)
        self.channels_out = channels_out
        self.kernel_size = kernel_size
        self.stride = stride
        self.affine = affine
        self.sync_batch_norm = bool(sync_batch_norm)
        self.relu = keras.layers.ReLU()
        self.conv = keras.layers.Conv2D(channels_out, kernel_size, strides=stride, padding="same",
                                        use_bias=False)
        self.bn = batch_norm(affine, sync_batch_norm=self.sync_batch_norm)

    def _chain(self):
        return (self.relu, self.conv, self.bn)

    def get_config(self):
        return {**super().get_config(), "channels_out": self.channels_out,
                "kernel_size": self.kernel_size, "stride": self.stride, "affine": self.affine,
                "sync_batch_norm": self.sync_batch_norm}


@keras.saving.register_keras_serializable(package=_PACKAGE)
class DilConv(_CentredChain):
    """ReLU, depthwise (optionally dilated) conv, pointwise conv, BatchNorm.

    TensorFlow cannot combine a stride with a dilation in a depthwise convolution, so a strided
    dilated conv runs at stride 1 and is subsampled, which gives the same values.

    ``centred`` (default, or as :func:`stride2_padding` sets it when ``None``): a stride-2
    window is centred on the even pixels 0, 2, 4, ..., as
    in DARTS (PyTorch pads ``k // 2`` on every side) and as the other stride-2 operations of
    an edge sample. ``centred=False`` is TensorFlow's ``"same"`` padding, which pads only at
    the bottom and right for even sizes and so centres the windows on the odd pixels: the
    behaviour of aca_keras 0.1.0, kept for models saved by it (their configs have no
    ``centred`` key and load with ``False``).

    ``sync_batch_norm``: its BatchNorm synchronises its statistics across replicas (see
    :func:`batch_norm`); ``False`` (the default) for configs saved without the key.
    """

    def __init__(self, channels_out: int, kernel_size: int = 3, stride: int = 1,
                 dilation: int = 1, affine: bool = True, centred: bool | None = None,
                 sync_batch_norm: bool = False, **kwargs):
        super().__init__(**kwargs)
        self.channels_out = channels_out
        self.kernel_size = kernel_size
        self.stride = stride
        self.dilation = dilation
        self.affine = affine
        self.centred = _centred(centred)
        self.sync_batch_norm = bool(sync_batch_norm)
        strided_in_conv = stride if dilation == 1 else 1
        explicit_pad = self.centred and strided_in_conv > 1
        self.relu = keras.layers.ReLU()
        self.pad = (keras.layers.ZeroPadding2D(dilation * (kernel_size - 1) // 2)
                    if explicit_pad else None)
        self.depthwise = keras.layers.DepthwiseConv2D(
            kernel_size, strides=strided_in_conv, padding="valid" if explicit_pad else "same",
            dilation_rate=dilation, use_bias=False)
        self.subsample = Subsample(stride) if (dilation > 1 and stride > 1) else None
        self.pointwise = keras.layers.Conv2D(channels_out, 1, use_bias=False)
        self.bn = batch_norm(affine, sync_batch_norm=self.sync_batch_norm)

    def _chain(self):
        pad = (self.pad,) if self.pad is not None else ()
        middle = (self.subsample,) if self.subsample is not None else ()
        return (self.relu, *pad, self.depthwise, *middle, self.pointwise, self.bn)

    def get_config(self):
        return {**super().get_config(), "channels_out": self.channels_out,
                "kernel_size": self.kernel_size, "stride": self.stride,
                "dilation": self.dilation, "affine": self.affine, "centred": self.centred,
                "sync_batch_norm": self.sync_batch_norm}


@keras.saving.register_keras_serializable(package=_PACKAGE)
class SepConv(_CentredChain):
    """Two stacked :class:`DilConv` with dilation 1 (DARTS's separable convolution).
    ``sync_batch_norm``: their BatchNorms synchronise their statistics across replicas (see
    :func:`batch_norm`); ``False`` (the default) for configs saved without the key.
    """

    def __init__(self, channels_in: int, channels_out: int, kernel_size: int = 3, stride: int = 1,
                 affine: bool = True, centred: bool | None = None,
                 sync_batch_norm: bool = False, **kwargs):
        super().__init__(**kwargs)
        self.channels_in = channels_in
        self.channels_out = channels_out
        self.kernel_size = kernel_size
        self.stride = stride
        self.affine = affine
        self.centred = _centred(centred)
        self.sync_batch_norm = bool(sync_batch_norm)
        self.first = DilConv(channels_in, kernel_size, stride, 1, affine, self.centred,
                             sync_batch_norm=self.sync_batch_norm)
        self.second = DilConv(channels_out, kernel_size, 1, 1, affine, self.centred,
                              sync_batch_norm=self.sync_batch_norm)

    def _chain(self):
        return (self.first, self.second)

    def get_config(self):
        return {**super().get_config(), "channels_in": self.channels_in,
                "channels_out": self.channels_out, "kernel_size": self.kernel_size,
                "stride": self.stride, "affine": self.affine, "centred": self.centred,
                "sync_batch_norm": self.sync_batch_norm}


@keras.saving.register_keras_serializable(package=_PACKAGE)
class PoolBN(_CentredChain):
    """3x3 max or average pool (padding excluded from averages) and BatchNorm.

    Acts on the first ``channels_out`` input channels when fewer outputs are asked for.
    ``centred`` (default): at stride 2 the windows are centred on the even pixels, as in DARTS
    (a stride-1 pool, then every second row and column); ``False`` is TensorFlow's
    ``"same"`` stride-2 pool (odd pixels for even sizes), aca_keras 0.1.0's behaviour, kept
    for models saved by it (see :class:`DilConv`).

    ``sync_batch_norm``: its BatchNorm synchronises its statistics across replicas (see
    :func:`batch_norm`); ``False`` (the default) for configs saved without the key.
    """

    def __init__(self, pool: str, channels_out: int, stride: int = 1, affine: bool = True,
                 centred: bool | None = None, sync_batch_norm: bool = False, **kwargs):
        super().__init__(**kwargs)
        if pool not in ("max", "avg"):
            raise ValueError(f"pool must be 'max' or 'avg', got {pool!r}")
        self.pool = pool
        self.channels_out = channels_out
        self.stride = stride
        self.affine = affine
        self.centred = _centred(centred)
        self.sync_batch_norm = bool(sync_batch_norm)
        layer = keras.layers.MaxPooling2D if pool == "max" else keras.layers.AveragePooling2D
        subsample = self.centred and stride > 1
        self.pooling = layer(3, strides=1 if subsample else stride, padding="same")
        self.subsample = Subsample(stride) if subsample else None
        self.bn = batch_norm(affine, sync_batch_norm=self.sync_batch_norm)
        self.slice = None

    def build(self, input_shape):
        channels_in = input_shape[-1]
        if channels_in is not None and self.channels_out > channels_in:
            raise ValueError(
                f"A pooling operation cannot produce more channels ({self.channels_out}) than it "
                f"receives ({channels_in}); pools act channel-wise.")
        if channels_in is not None and self.channels_out < channels_in:
            self.slice = ChannelSlice(0, self.channels_out)
        super().build(input_shape)

    def _chain(self):
        head = (self.slice,) if self.slice is not None else ()
        sample = (self.subsample,) if self.subsample is not None else ()
        return (*head, self.pooling, *sample, self.bn)

    def get_config(self):
        return {**super().get_config(), "pool": self.pool, "channels_out": self.channels_out,
                "stride": self.stride, "affine": self.affine, "centred": self.centred,
                "sync_batch_norm": self.sync_batch_norm}


@keras.saving.register_keras_serializable(package=_PACKAGE)
class FactorizedReduce(keras.layers.Layer):
    """Halves the spatial size with two offset 1x1 stride-2 convolutions, concatenated.

    Works for odd sizes too: the offset path is padded so both paths give ``ceil(H / 2)``.

    ``sync_batch_norm``: its BatchNorm synchronises its statistics across replicas (see
    :func:`batch_norm`); ``False`` (the default) for configs saved without the key.
    """

    def __init__(self, channels_out: int, affine: bool = True, sync_batch_norm: bool = False,
                 **kwargs):
        super().__init__(**kwargs)
        if channels_out < 1:
            raise ValueError(f"FactorizedReduce needs channels_out >= 1, got {channels_out}")
        self.channels_out = channels_out
        self.affine = affine
        self.sync_batch_norm = bool(sync_batch_norm)
        first = (channels_out + 1) // 2
        second = channels_out - first
        self.relu = keras.layers.ReLU()
        self.conv_a = keras.layers.Conv2D(first, 1, strides=2, padding="same", use_bias=False)
        self.shift = keras.layers.ZeroPadding2D(((0, 1), (0, 1))) if second else None
        self.crop = keras.layers.Cropping2D(((1, 0), (1, 0))) if second else None
        self.conv_b = (keras.layers.Conv2D(second, 1, strides=2, padding="same", use_bias=False)
                       if second else None)
        self.concat = keras.layers.Concatenate(axis=-1) if second else None
        self.bn = batch_norm(affine, sync_batch_norm=self.sync_batch_norm)

    def build(self, input_shape):
        self.conv_a.build(input_shape)
        if self.conv_b is not None:
            self.conv_b.build(input_shape)
        n, h, w, _ = input_shape
        half = (n, None if h is None else -(-h // 2), None if w is None else -(-w // 2),
                self.channels_out)
        self.bn.build(half)
        self.built = True

    def call(self, inputs, training=None):
        x = self.relu(inputs)
        a = self.conv_a(x)
        if self.conv_b is None:
            return self.bn(a, training=training)
        b = self.conv_b(self.crop(self.shift(x)))
        return self.bn(self.concat([a, b]), training=training)

    def compute_output_shape(self, input_shape):
        n, h, w, _ = input_shape
        return (n, None if h is None else -(-h // 2), None if w is None else -(-w // 2),
                self.channels_out)

    def get_config(self):
        return {**super().get_config(), "channels_out": self.channels_out, "affine": self.affine,
                "sync_batch_norm": self.sync_batch_norm}


# --------------------------------------------------------------------------------------------
# Registry

#: ``factory(channels_in, channels_out, stride, affine, *, sync_batch_norm=False) -> Layer``.
#: A factory without the ``sync_batch_norm`` keyword (aca_keras 0.1.0's four arguments) is
#: still accepted; see :func:`create_op`.
OpFactory = Callable[..., keras.layers.Layer]


@dataclass(frozen=True)
class OpSpec:
    """A registered operation: its factory and metadata.

    ``takes_sync_batch_norm``: the factory accepts the ``sync_batch_norm`` keyword (set by
    :func:`register_op` from the factory's signature)."""

    name: str
    factory: OpFactory
    description: str = ""
    parametric: bool = True  # has weights of its own (see op_sets.operation_kind)
    channelwise: bool = False  # output channel c depends on input channel c only (pools, skip)
    takes_sync_batch_norm: bool = False


_OPERATIONS: Registry[OpSpec] = Registry(
    "operation", UnknownOperationError, "Register new ones with aca_keras.ops.register_op.")


def _accepts_sync_batch_norm(factory: OpFactory) -> bool:
    try:
        parameters = inspect.signature(factory).parameters.values()
    except (TypeError, ValueError):  # a callable without a signature: the four arguments
        return False
    return any(p.name == "sync_batch_norm" or p.kind is inspect.Parameter.VAR_KEYWORD
               for p in parameters)


def register_op(name: str, *, description: str = "", parametric: bool | None = None,
                channelwise: bool = False, overwrite: bool = False
                ) -> Callable[[OpFactory], OpFactory]:
    """Decorator registering ``factory(channels_in, channels_out, stride, affine, *,
    sync_batch_norm=False) -> Layer`` as operation ``name``.

    The factory passes ``sync_batch_norm`` to the BatchNorm layers it builds (see
    :func:`batch_norm`); a factory that takes only the first four arguments still works
    (see :func:`create_op`).

    ``parametric``: the operation's kind, recorded in the space-level table
    (:func:`aca_keras.space.op_sets.operation_kind`) that the architecture diagnostics and
    the collapse monitor read: ``True`` for an operation with weights (a convolution),
    ``False`` for a parameter-free one (a pool, an identity); ``None`` (default) keeps the
    kind already declared for the name (the built-in table,
    :data:`~aca_keras.space.op_sets.PARAMETER_FREE_OPS`, for the built-in operations) and
    makes a new operation parametric."""

    def decorator(factory: OpFactory) -> OpFactory:
        if parametric is not None and not isinstance(parametric, bool):
            raise TypeError(f"parametric must be True, False or None, got {parametric!r}")
        kind = is_parametric(name) if parametric is None else parametric
        _OPERATIONS.register(name, OpSpec(name, factory, description, kind,
                                          channelwise, _accepts_sync_batch_norm(factory)),
                             overwrite=overwrite)
        declare_operation(name, parametric=parametric)
        return factory

    return decorator


def unregister_op(name: str) -> OpSpec:
    """Remove a registered operation (custom operations in tests and notebooks)."""
    spec = _OPERATIONS.unregister(name)
    forget_operation(name)
    return spec


def list_ops() -> list[str]:
    """Names of all registered operations, in registration order."""
    return _OPERATIONS.names()


def get_op_spec(name: str) -> OpSpec:
    """The :class:`OpSpec` of a registered operation (:class:`UnknownOperationError`, listing
    the registered ones, for unknown names)."""
    return _OPERATIONS.get(name)


def create_op(name: str, channels_in: int, channels_out: int | None = None, stride: int = 1,
              affine: bool = True, sync_batch_norm: bool = False) -> keras.layers.Layer:
    """Create the Keras layer of operation ``name``.

    Args:
        name: a registered operation name (see :func:`list_ops`).
        channels_in: channels of the input tensor.
        channels_out: channels of the output (defaults to ``channels_in``).
        stride: 1 or 2.
        affine: BatchNorm with gamma and beta (``False`` in the search supernet).
        sync_batch_norm: the operation's BatchNorm layers synchronise their statistics
            across replicas (see :func:`batch_norm`). A factory registered without the
            ``sync_batch_norm`` keyword is called with the first four arguments and, when
            this is true, the BatchNorm layers its layer holds after construction are
            switched to ``synchronized``.
    """
    spec = get_op_spec(name)
    if stride not in (1, 2):
        raise ValueError(f"stride must be 1 or 2, got {stride}")
    channels_out = channels_in if channels_out is None else channels_out
    if channels_in < 1 or channels_out < 1:
        raise ValueError(f"channel counts must be >= 1, got {channels_in} -> {channels_out}")
    if spec.takes_sync_batch_norm:
        return spec.factory(channels_in, channels_out, stride, affine,
                            sync_batch_norm=bool(sync_batch_norm))
    layer = spec.factory(channels_in, channels_out, stride, affine)
    if sync_batch_norm:
        for sub in internals.sublayers(layer):
            if isinstance(sub, keras.layers.BatchNormalization):
                sub.synchronized = True
    return layer


register_op("none", description="zero (no connection)", channelwise=True)(
    lambda ci, co, s, a, sync_batch_norm=False: Zero(co, s))
register_op("max_pool_3x3", description="3x3 max pool + BN", channelwise=True)(
    lambda ci, co, s, a, sync_batch_norm=False: PoolBN(
        "max", co, s, a, sync_batch_norm=sync_batch_norm))
register_op("avg_pool_3x3", description="3x3 average pool + BN", channelwise=True)(
    lambda ci, co, s, a, sync_batch_norm=False: PoolBN(
        "avg", co, s, a, sync_batch_norm=sync_batch_norm))


@register_op("skip_connect", description="identity (FactorizedReduce at stride 2)",
             channelwise=True)
def _skip(ci: int, co: int, s: int, a: bool, sync_batch_norm: bool = False
          ) -> keras.layers.Layer:
    if s == 2:
        return FactorizedReduce(co, a, sync_batch_norm=sync_batch_norm)
    if co == ci:
        return keras.layers.Identity()
    if co < ci:
        return ChannelSlice(0, co)
    raise ValueError(f"skip_connect at stride 1 cannot widen {ci} to {co} channels")


register_op("sep_conv_3x3", description="2x (ReLU, 3x3 depthwise, 1x1, BN)")(
    lambda ci, co, s, a, sync_batch_norm=False: SepConv(ci, co, 3, s, a,
                                                        sync_batch_norm=sync_batch_norm))
register_op("sep_conv_5x5", description="2x (ReLU, 5x5 depthwise, 1x1, BN)")(
    lambda ci, co, s, a, sync_batch_norm=False: SepConv(ci, co, 5, s, a,
                                                        sync_batch_norm=sync_batch_norm))
register_op("dil_conv_3x3", description="ReLU, 3x3 depthwise dilation 2, 1x1, BN")(
    lambda ci, co, s, a, sync_batch_norm=False: DilConv(co, 3, s, 2, a,
                                                        sync_batch_norm=sync_batch_norm))
register_op("dil_conv_5x5", description="ReLU, 5x5 depthwise dilation 2, 1x1, BN")(
    lambda ci, co, s, a, sync_batch_norm=False: DilConv(co, 5, s, 2, a,
                                                        sync_batch_norm=sync_batch_norm))

register_op("noise", description="standard normal noise in training, zero in inference "
            "(R-DARTS S4)", channelwise=True)(
    lambda ci, co, s, a, sync_batch_norm=False: Noise(co, s))

#: the built-in operations' specs as registered above (the supernet's grouped edges use their
#: grouped forms only while a name still maps to its built-in factory)
_BUILTIN_SPECS: dict[str, OpSpec] = {name: get_op_spec(name) for name in list_ops()}


def is_builtin_op(name: str, spec: OpSpec | None = None) -> bool:
    """Whether operation ``name`` is registered with aca_keras's own factory (not
    overwritten by a user registration)."""
    spec = get_op_spec(name) if spec is None else spec
    return _BUILTIN_SPECS.get(name) is spec
