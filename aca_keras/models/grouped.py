"""Grouped mixed edges: all edges that enter one node of a search cell, computed at once.

Every candidate operation of the DARTS space is per-channel up to its 1x1 convolutions (ReLU,
pools, depthwise convolutions, BatchNorm), so the ``E`` edges that enter one node with one
stride can be computed as one wide operation: their inputs are concatenated along channels
(edge ``e`` owns channels ``e*C:(e+1)*C``), each candidate runs once with the edges' weights
stacked, and the 1x1 convolutions become one batched matrix product (edge-wise, ``(E, C_in,
C_out)``). The alphas then weight each edge's slice of each candidate's output, exactly as
the per-edge sum does. The supernet's step graph gets about a third of the operations and a
third of the weight tensors (see ``benchmarks/README.md``, "Grouped edges").

Storage is per group (per node and stride); :meth:`EdgeGroup.edge_weights` gives per-edge
views (:class:`VariableView`) with the shapes and names of a per-edge operation's variables,
which read and write the grouped storage. Channel scoring, the PyTorch parity tests and the
checkpoint conversion work on those views.

Operations registered by users (and ``skip_connect`` at stride 2, ``noise``) have no grouped
form: :class:`PerEdgeOperation` runs one layer per edge on the group's channel slices, so any
registered operation can be searched.
"""

from __future__ import annotations

from collections.abc import Sequence

import keras
import numpy as np
import tensorflow as tf

from aca_keras.layers import ops as ops_lib
from aca_keras.layers.channels import ChannelShuffle

_PACKAGE = "aca_keras"

__all__ = ["EdgeGroup", "GroupedDilConv", "GroupedPoolBN", "GroupedSepConv",
           "PerEdgeOperation", "VariableView", "create_grouped_op"]


class VariableView:
    """One edge's part of a grouped variable: ``variable[index]`` along ``axis``, shown in
    the shape a per-edge layer's variable has (``shape``). ``numpy()`` reads it and
    ``assign(value)`` writes it (the rest of the grouped variable is left as it is)."""

    def __init__(self, variable, axis: int, start: int, stop: int, shape: Sequence[int],
                 name: str):
        self.variable = variable
        self.axis = int(axis)
        self.start = int(start)
        self.stop = int(stop)
        self.shape = tuple(int(s) for s in shape)
        self.name = name

    @property
    def dtype(self):
        return self.variable.dtype

    @property
    def path(self) -> str:
        return f"{self.variable.path}[{self.name}]"

    def _index(self) -> tuple:
        index = [slice(None)] * len(self.variable.shape)
        index[self.axis] = slice(self.start, self.stop)
        return tuple(index)

    def numpy(self) -> np.ndarray:
        return self.part(keras.ops.convert_to_numpy(self.variable))

    def part(self, array) -> np.ndarray:
        """This view's part of ``array``, an array shaped as the whole variable (its
        gradient, an optimiser slot), in the view's shape."""
        return np.asarray(array)[self._index()].reshape(self.shape)

    def assign(self, value) -> None:
        full = keras.ops.convert_to_numpy(self.variable).copy()
        part = full[self._index()]
        full[self._index()] = np.asarray(value, dtype=full.dtype).reshape(part.shape)
        self.variable.assign(full)

    def __repr__(self) -> str:
        return f"VariableView({self.path}, shape={self.shape})"


class _WholeVariable(VariableView):
    """A whole variable shown as a view (the per-edge layers of :class:`PerEdgeOperation`)."""

    def __init__(self, variable, name: str):
        self.variable = variable
        self.shape = tuple(int(s) for s in variable.shape)
        self.name = name

    def numpy(self) -> np.ndarray:
        return keras.ops.convert_to_numpy(self.variable)

    def part(self, array) -> np.ndarray:
        return np.asarray(array).reshape(self.shape)

    def assign(self, value) -> None:
        self.variable.assign(np.asarray(value, dtype=self.variable.dtype).reshape(self.shape))


class _EdgewiseInitializer(keras.initializers.Initializer):
    """Initialises each edge's slice of a grouped variable as ``base`` initialises a
    per-edge variable of shape ``edge_shape`` (the fans, and so the scale, are a single
    edge's), then stacks the slices along ``axis`` (a new leading axis with ``stack``)."""

    def __init__(self, base, edges: int, edge_shape: Sequence[int], axis: int,
                 stack: bool = False):
        self.base = keras.initializers.get(base)
        self.edges = int(edges)
        self.edge_shape = tuple(edge_shape)
        self.axis = int(axis)
        self.stack = bool(stack)

    def __call__(self, shape, dtype=None):
        parts = [self.base(self.edge_shape, dtype=dtype) for _ in range(self.edges)]
        if self.stack:
            value = keras.ops.stack([keras.ops.reshape(p, shape[1:]) for p in parts], axis=0)
        else:
            value = keras.ops.concatenate(parts, axis=self.axis)
        return keras.ops.reshape(value, shape)


def check_partial_k(channels: int, partial_k: int) -> None:
    """A ``ValueError`` unless ``partial_k >= 1`` divides ``channels`` (PC-DARTS edges)."""
    if partial_k < 1 or channels % partial_k:
        raise ValueError(f"A partial-channel edge needs channels ({channels}) to be a "
                         f"multiple of partial_k ({partial_k}).")


def _out_size(size, stride: int):
    return None if size is None else -(-size // stride)


def strided_shape(input_shape, stride: int, channels: int) -> tuple:
    """An NHWC shape after a ``"same"``-padded ``stride`` with ``channels`` channels."""
    n, h, w, _ = tuple(input_shape)
    return (n, _out_size(h, stride), _out_size(w, stride), channels)


@keras.saving.register_keras_serializable(package=_PACKAGE)
class GroupedDilConv(keras.layers.Layer):
    """``edges`` :class:`~aca_keras.layers.ops.DilConv` operations side by side: ReLU, the
    depthwise (optionally dilated) convolution of all ``edges * channels_in`` channels, a
    per-edge 1x1 convolution (one batched matrix product), BatchNorm over all outputs.

    Variables: ``depthwise_kernel`` ``(k, k, edges * channels_in, 1)`` and
    ``pointwise_kernel`` ``(edges, channels_in, channels_out)``; the BatchNorm's statistics
    over ``edges * channels_out`` channels. Strides, padding and the centring of stride-2
    windows are :class:`~aca_keras.layers.ops.DilConv`'s."""

    def __init__(self, edges: int, channels_in: int, channels_out: int, kernel_size: int = 3,
                 stride: int = 1, dilation: int = 1, affine: bool = False,
                 centred: bool | None = None, sync_batch_norm: bool = False, **kwargs):
        super().__init__(**kwargs)
        self.edges = int(edges)
        self.channels_in = int(channels_in)
        self.channels_out = int(channels_out)
        self.kernel_size = int(kernel_size)
        self.stride = int(stride)
        self.dilation = int(dilation)
        self.affine = bool(affine)
        self.centred = ops_lib._centred(centred)
        self.sync_batch_norm = bool(sync_batch_norm)
        self.conv_stride = self.stride if self.dilation == 1 else 1
        self.explicit_pad = self.centred and self.conv_stride > 1
        self.subsample = self.dilation > 1 and self.stride > 1
        self.bn = ops_lib.batch_norm(self.affine, sync_batch_norm=self.sync_batch_norm)

    def build(self, input_shape):
        k, e, ci, co = self.kernel_size, self.edges, self.channels_in, self.channels_out
        self.depthwise_kernel = self.add_weight(
            shape=(k, k, e * ci, 1), name="depthwise_kernel",
            initializer=_EdgewiseInitializer("glorot_uniform", e, (k, k, ci, 1), axis=2))
        self.pointwise_kernel = self.add_weight(
            shape=(e, ci, co), name="pointwise_kernel",
            initializer=_EdgewiseInitializer("glorot_uniform", e, (1, 1, ci, co), axis=0,
                                             stack=True))
        self.bn.build(self.compute_output_shape(input_shape))
        self.built = True

    def call(self, inputs, training=None, activated=False, scale=None):
        """``activated``: ``inputs`` already went through the ReLU (an :class:`EdgeGroup`
        applies it once for all its convolutions); ``scale`` (optional, one value per output
        channel) multiplies the output, inside the BatchNorm kernel."""
        x = inputs if activated else tf.nn.relu(inputs)
        if self.explicit_pad:
            p = self.dilation * (self.kernel_size - 1) // 2
            x = tf.pad(x, [[0, 0], [p, p], [p, p], [0, 0]])
        kernel = tf.cast(self.depthwise_kernel, x.dtype)
        s, d = self.conv_stride, self.dilation
        padding = "VALID" if self.explicit_pad else "SAME"
        if d == 1:
            # the kernel itself, without tf.nn.depthwise_conv2d's wrapper constants
            x = _depthwise(x, kernel, s, padding)
        elif self.subsample:
            # a dilated convolution sampled at the even pixels sees only the even pixels:
            # it is the undilated convolution of the even pixels (a quarter of the work)
            x = _depthwise(x[:, ::self.stride, ::self.stride, :], kernel, 1, "SAME")
        else:
            x = _dilated_depthwise(x, kernel, d)
        x = _edgewise_matmul(x, tf.cast(self.pointwise_kernel, x.dtype), self.edges)
        return self.bn(x, training=training, output_scale=scale)

    def compute_output_shape(self, input_shape):
        return strided_shape(input_shape, self.stride, self.edges * self.channels_out)

    def edge_weights(self, edge: int, prefix: str = "") -> dict[str, VariableView]:
        """Views of one edge's variables, named as a :class:`~aca_keras.layers.ops.DilConv`'s
        (``depthwise.kernel``, ``pointwise.kernel``, ``bn.moving_mean``, ...)."""
        k, ci, co = self.kernel_size, self.channels_in, self.channels_out
        views = {
            f"{prefix}depthwise.kernel": VariableView(
                self.depthwise_kernel, 2, edge * ci, (edge + 1) * ci, (k, k, ci, 1),
                f"{prefix}depthwise.kernel"),
            f"{prefix}pointwise.kernel": VariableView(
                self.pointwise_kernel, 0, edge, edge + 1, (1, 1, ci, co),
                f"{prefix}pointwise.kernel"),
        }
        views.update(_bn_views(self.bn, edge, co, f"{prefix}bn."))
        return views

    def get_config(self):
        return {**super().get_config(), "edges": self.edges, "channels_in": self.channels_in,
                "channels_out": self.channels_out, "kernel_size": self.kernel_size,
                "stride": self.stride, "dilation": self.dilation, "affine": self.affine,
                "centred": self.centred, "sync_batch_norm": self.sync_batch_norm}


def _depthwise(x, kernel, stride: int, padding: str):
    return tf.raw_ops.DepthwiseConv2dNative(input=x, filter=kernel,
                                            strides=[1, stride, stride, 1], padding=padding)


def _dilated_depthwise(x, kernel, dilation: int):
    """A stride-1 ``"same"`` depthwise convolution with ``dilation``: the undilated
    convolution of each of the ``dilation ** 2`` pixel sub-grids (one space-to-batch, one
    kernel, one batch-to-space; the native kernel has no dilation on every device and
    dtype). Odd kernel sizes; sizes that ``dilation`` does not divide take TensorFlow's
    general wrapper."""
    _, h, w, _ = x.shape
    k = kernel.shape[0]
    if h is None or w is None or h % dilation or w % dilation or k % 2 == 0:
        return tf.nn.depthwise_conv2d(x, kernel, [1, 1, 1, 1], "SAME",
                                      dilations=(dilation, dilation))
    none = [[0, 0], [0, 0]]
    y = tf.space_to_batch(x, [dilation, dilation], none)
    y = _depthwise(y, kernel, 1, "SAME")
    return tf.batch_to_space(y, [dilation, dilation], none)


#: widest grouped 1x1 convolution (edges x input channels) computed with a block-diagonal
#: kernel; wider ones take a batched product (measured on the CPU: the zero blocks cost less
#: than the transposes up to about this width, more beyond; benchmarks/README.md)
BLOCK_DIAGONAL_MAX_WIDTH = 128


def _edgewise_matmul(x, kernel, edges: int):
    """``x`` ``(B, H, W, edges * C_in)`` times ``kernel`` ``(edges, C_in, C_out)``, edge by
    edge: ``(B, H, W, edges * C_out)``: a grouped 1x1 convolution (TensorFlow has no CPU
    gradient for grouped convolutions). Narrow groups take one 1x1 convolution with the
    block-diagonal kernel, wide ones a batched matrix product between two transposes."""
    if edges == 1:
        return tf.nn.conv2d(x, kernel[None], 1, "VALID")
    c_in, c_out = kernel.shape[1], kernel.shape[2]
    if edges * c_in <= BLOCK_DIAGONAL_MAX_WIDTH:
        eye = tf.constant(np.eye(edges), dtype=kernel.dtype)  # one constant (tf.eye: six ops)
        block = tf.reshape(tf.einsum("ecd,ef->ecfd", kernel, eye),
                           (1, 1, edges * c_in, edges * c_out))
        return tf.nn.conv2d(x, block, 1, "VALID")
    rows = tf.transpose(tf.reshape(x, (-1, edges, c_in)), (1, 0, 2))
    out = tf.transpose(tf.matmul(rows, kernel), (1, 0, 2))  # (rows, edges, C_out)
    return tf.reshape(out, _nhwc(x, edges * c_out))


def _nhwc(x, channels: int, *inner: int):
    """The shape ``(batch, H, W, *inner, channels)`` of ``x``'s rows and columns, static
    where ``x``'s are (a constant, not a shape computation, in the traced graph)."""
    _, h, w, _ = x.shape
    if h is not None and w is not None:
        return (-1, h, w, *inner, channels)
    shape = tf.shape(x)
    return tf.concat([shape[:3], [*inner, channels]], axis=0)


def _bn_views(bn, edge: int, channels: int, prefix: str) -> dict[str, VariableView]:
    views = {}
    for name in ("gamma", "beta", "moving_mean", "moving_variance"):
        variable = getattr(bn, name, None)
        if variable is not None:
            views[prefix + name] = VariableView(variable, 0, edge * channels,
                                                (edge + 1) * channels, (channels,),
                                                prefix + name)
    return views


@keras.saving.register_keras_serializable(package=_PACKAGE)
class GroupedSepConv(keras.layers.Layer):
    """``edges`` :class:`~aca_keras.layers.ops.SepConv` operations side by side: two
    :class:`GroupedDilConv` (the first with the stride)."""

    def __init__(self, edges: int, channels_in: int, channels_out: int, kernel_size: int = 3,
                 stride: int = 1, affine: bool = False, centred: bool | None = None,
                 sync_batch_norm: bool = False, **kwargs):
        super().__init__(**kwargs)
        self.edges = int(edges)
        self.channels_in = int(channels_in)
        self.channels_out = int(channels_out)
        self.kernel_size = int(kernel_size)
        self.stride = int(stride)
        self.affine = bool(affine)
        self.centred = ops_lib._centred(centred)
        self.sync_batch_norm = bool(sync_batch_norm)
        common = {"affine": self.affine, "centred": self.centred,
                  "sync_batch_norm": self.sync_batch_norm}
        self.first = GroupedDilConv(self.edges, self.channels_in, self.channels_in,
                                    self.kernel_size, self.stride, 1, **common)
        self.second = GroupedDilConv(self.edges, self.channels_in, self.channels_out,
                                     self.kernel_size, 1, 1, **common)

    def build(self, input_shape):
        self.first.build(input_shape)
        self.second.build(self.first.compute_output_shape(input_shape))
        self.built = True

    def call(self, inputs, training=None, activated=False, scale=None):
        """``activated``, ``scale``: as :meth:`GroupedDilConv.call`."""
        x = self.first(inputs, training=training, activated=activated)
        return self.second(x, training=training, scale=scale)

    def compute_output_shape(self, input_shape):
        return self.second.compute_output_shape(self.first.compute_output_shape(input_shape))

    def edge_weights(self, edge: int, prefix: str = "") -> dict[str, VariableView]:
        """Views of one edge's variables, named as a :class:`~aca_keras.layers.ops.SepConv`'s
        (``first.depthwise.kernel``, ..., ``second.bn.moving_variance``)."""
        return {**self.first.edge_weights(edge, f"{prefix}first."),
                **self.second.edge_weights(edge, f"{prefix}second.")}

    def get_config(self):
        return {**super().get_config(), "edges": self.edges, "channels_in": self.channels_in,
                "channels_out": self.channels_out, "kernel_size": self.kernel_size,
                "stride": self.stride, "affine": self.affine, "centred": self.centred,
                "sync_batch_norm": self.sync_batch_norm}


@keras.saving.register_keras_serializable(package=_PACKAGE)
class GroupedPoolBN(keras.layers.Layer):
    """``edges`` :class:`~aca_keras.layers.ops.PoolBN` operations side by side (a pool is
    channel-wise, so one pool and one BatchNorm over all channels)."""

    def __init__(self, pool: str, edges: int, channels: int, stride: int = 1,
                 affine: bool = False, centred: bool | None = None,
                 sync_batch_norm: bool = False, **kwargs):
        super().__init__(**kwargs)
        if pool not in ("max", "avg"):
            raise ValueError(f"pool must be 'max' or 'avg', got {pool!r}")
        self.pool = pool
        self.edges = int(edges)
        self.channels = int(channels)
        self.stride = int(stride)
        self.affine = bool(affine)
        self.centred = ops_lib._centred(centred)
        self.sync_batch_norm = bool(sync_batch_norm)
        self.bn = ops_lib.batch_norm(self.affine, sync_batch_norm=self.sync_batch_norm)

    def build(self, input_shape):
        self.bn.build(self.compute_output_shape(input_shape))
        self.built = True

    def call(self, inputs, training=None, scale=None):
        """``scale``: as :meth:`GroupedDilConv.call`."""
        subsample = self.centred and self.stride > 1
        strides = 1 if subsample else self.stride
        pool = tf.nn.max_pool2d if self.pool == "max" else tf.nn.avg_pool2d
        x = pool(inputs, 3, strides, "SAME")
        if subsample:
            x = x[:, ::self.stride, ::self.stride, :]
        return self.bn(x, training=training, output_scale=scale)

    def compute_output_shape(self, input_shape):
        return strided_shape(input_shape, self.stride, self.edges * self.channels)

    def edge_weights(self, edge: int, prefix: str = "") -> dict[str, VariableView]:
        """Views of one edge's BatchNorm variables, named as a PoolBN's (``bn.*``)."""
        return _bn_views(self.bn, edge, self.channels, f"{prefix}bn.")

    def get_config(self):
        return {**super().get_config(), "pool": self.pool, "edges": self.edges,
                "channels": self.channels, "stride": self.stride, "affine": self.affine,
                "centred": self.centred, "sync_batch_norm": self.sync_batch_norm}


@keras.saving.register_keras_serializable(package=_PACKAGE)
class PerEdgeOperation(keras.layers.Layer):
    """Any registered operation, one layer per edge, on the group's channel slices: the
    grouped form of an operation without a grouped implementation (user-registered
    operations, ``skip_connect`` at stride 2, ``noise``). Output: the edges' outputs
    concatenated along channels. ``skip_connect`` at stride 1 is the input itself."""

    def __init__(self, op: str, edges: int, channels_in: int, channels_out: int,
                 stride: int = 1, affine: bool = False, sync_batch_norm: bool = False,
                 **kwargs):
        super().__init__(**kwargs)
        self.op = op
        self.edges = int(edges)
        self.channels_in = int(channels_in)
        self.channels_out = int(channels_out)
        self.stride = int(stride)
        self.affine = bool(affine)
        self.sync_batch_norm = bool(sync_batch_norm)
        self.identity = (op == "skip_connect" and self.stride == 1
                         and self.channels_in == self.channels_out)
        self.layers = [] if self.identity else [
            ops_lib.create_op(op, self.channels_in, self.channels_out, self.stride,
                              self.affine, sync_batch_norm=self.sync_batch_norm)
            for _ in range(self.edges)]

    @property
    def stochastic(self) -> bool:
        return any(getattr(layer, "stochastic", False) for layer in self.layers)

    def build(self, input_shape):
        edge_shape = tuple(input_shape[:-1]) + (self.channels_in,)
        for layer in self.layers:
            if not layer.built:
                layer.build(edge_shape)
        self.built = True

    def call(self, inputs, training=None, scale=None):
        """``scale`` (optional, one value per output channel) multiplies the output."""
        if self.identity:
            out = inputs
        else:
            parts = tf.split(inputs, self.edges, axis=-1) if self.edges > 1 else [inputs]
            outs = [call_layer(layer, x, training) for layer, x in zip(self.layers, parts)]
            out = outs[0] if len(outs) == 1 else tf.concat(outs, axis=-1)
        return out if scale is None else out * tf.cast(scale, out.dtype)

    def compute_output_shape(self, input_shape):
        return strided_shape(input_shape, self.stride, self.edges * self.channels_out)

    def edge_weights(self, edge: int, prefix: str = "") -> dict[str, VariableView]:
        """The edge's own layer's variables (whole-variable views), by their paths inside
        that layer."""
        if self.identity:
            return {}
        views = {}
        for j, variable in enumerate(self.layers[edge].weights):
            name = f"{prefix}{j}.{variable.name}"
            views[name] = _WholeVariable(variable, name)
        return views

    def get_config(self):
        return {**super().get_config(), "op": self.op, "edges": self.edges,
                "channels_in": self.channels_in, "channels_out": self.channels_out,
                "stride": self.stride, "affine": self.affine,
                "sync_batch_norm": self.sync_batch_norm}


def call_layer(layer, x, training):
    """``layer(x)``, with ``training`` for the layers that take it (not Identity or a
    channel slice)."""
    if isinstance(layer, (keras.layers.Identity, ops_lib.ChannelSlice)):
        return layer(x)
    return layer(x, training=training)


#: built-in operations with a grouped form: ``name -> factory(edges, c_in, c_out, stride,
#: sync_batch_norm)``
_GROUPED = {
    "max_pool_3x3": lambda e, ci, co, s, sync: GroupedPoolBN("max", e, co, s,
                                                             sync_batch_norm=sync),
    "avg_pool_3x3": lambda e, ci, co, s, sync: GroupedPoolBN("avg", e, co, s,
                                                             sync_batch_norm=sync),
    "sep_conv_3x3": lambda e, ci, co, s, sync: GroupedSepConv(e, ci, co, 3, s,
                                                              sync_batch_norm=sync),
    "sep_conv_5x5": lambda e, ci, co, s, sync: GroupedSepConv(e, ci, co, 5, s,
                                                              sync_batch_norm=sync),
    "dil_conv_3x3": lambda e, ci, co, s, sync: GroupedDilConv(e, ci, co, 3, s, 2,
                                                              sync_batch_norm=sync),
    "dil_conv_5x5": lambda e, ci, co, s, sync: GroupedDilConv(e, ci, co, 5, s, 2,
                                                              sync_batch_norm=sync),
}


def create_grouped_op(name: str, edges: int, channels_in: int, channels_out: int,
                      stride: int = 1, sync_batch_norm: bool = False) -> keras.layers.Layer:
    """The grouped (search, ``affine=False``) form of operation ``name`` for ``edges``
    edges: the built-in grouped layer when the registered factory is still the built-in
    one, else a :class:`PerEdgeOperation` of the registered operation."""
    spec = ops_lib.get_op_spec(name)  # unknown names fail here, listing the registered ones
    factory = _GROUPED.get(name)
    if factory is not None and ops_lib.is_builtin_op(name, spec):
        return factory(edges, channels_in, channels_out, stride, bool(sync_batch_norm))
    return PerEdgeOperation(name, edges, channels_in, channels_out, stride,
                            sync_batch_norm=sync_batch_norm)


@keras.saving.register_keras_serializable(package=_PACKAGE)
class EdgeGroup(keras.layers.Layer):
    """The ``edges`` mixed edges that enter one node of a search cell with one stride,
    computed as one wide operation per candidate (see the module docstring).

    ``call(inputs, weights, edge_weights=None, training=None, taps=None)``: ``inputs`` the
    ``edges`` input states; ``weights`` ``(edges, len(ops))`` the mixing weights of the
    edges (a row per edge, a column per operation of the op set), or, prepared, the
    candidates' per-channel weights (:func:`channel_scales`, the edge weights already in
    them); ``edge_weights``
    ``(edges,)`` (PC-DARTS edge normalisation, optional) multiplies each edge's output.
    Returns ``sum_e edge_weights[e] * sum_k weights[e, k] * op_k(inputs[e])``, the node's
    share from these edges. With ``partial_k = K > 1`` every edge is a PC-DARTS
    partial-channel edge as :class:`~aca_keras.models.supernet.MixedEdge` defines it.
    ``taps``: ``{edge: {position: EdgeTap}}`` (``edge`` local to the group, ``position`` an
    index into the candidates, the op set without ``none``) as in
    :class:`~aca_keras.models.supernet.MixedEdge`.
    """

    def __init__(self, ops: Sequence[str], channels: int, edges: int, stride: int = 1,
                 partial_k: int = 1, sync_batch_norm: bool = False, **kwargs):
        super().__init__(**kwargs)
        self.ops = tuple(ops)
        self.channels = int(channels)
        self.edges = int(edges)
        self.stride = int(stride)
        self.partial_k = int(partial_k)
        self.sync_batch_norm = bool(sync_batch_norm)
        check_partial_k(self.channels, self.partial_k)
        c = self.op_channels
        self.op_indices = tuple(i for i, op in enumerate(self.ops) if op != "none")
        self.candidates = [create_grouped_op(self.ops[i], self.edges, c, c, self.stride,
                                             self.sync_batch_norm)
                           for i in self.op_indices]
        if self.partial_k > 1:
            self.shuffle = ChannelShuffle(self.partial_k)

    @property
    def op_channels(self) -> int:
        """Channels each candidate sees and produces per edge (``channels // partial_k``)."""
        return self.channels // self.partial_k

    @property
    def stochastic(self) -> bool:
        """Whether a candidate draws random numbers in training (the ``noise`` op)."""
        return any(getattr(layer, "stochastic", False) for layer in self.candidates)

    def build(self, input_shape):
        shape = tuple(input_shape[0])
        grouped = shape[:-1] + (self.edges * self.op_channels,)
        for layer in self.candidates:
            if not layer.built:
                layer.build(grouped)
        self.built = True

    def compute_output_shape(self, input_shape):
        return strided_shape(input_shape[0], self.stride, self.channels)

    def _op_inputs(self, inputs):
        c = self.op_channels
        parts = [x[..., :c] if self.partial_k > 1 else x for x in inputs]
        return parts, (parts[0] if len(parts) == 1 else tf.concat(parts, axis=-1))

    def _bypass(self, x):
        rest = x[..., self.op_channels:]
        if self.stride == 2:
            rest = tf.nn.max_pool2d(rest, 2, 2, "SAME")
        return rest

    def call(self, inputs, weights, edge_weights=None, training=None, taps=None):
        parts, grouped = self._op_inputs(list(inputs))
        if taps and (edge_weights is not None or isinstance(weights, (list, tuple))):
            # edge by edge (the terms a tap sees exclude the edge weights)
            outputs = self._candidate_outputs(grouped, training, [None] * len(self.candidates))
            return self._call_with_taps(inputs, parts, outputs, weights, edge_weights, taps)
        if isinstance(weights, (list, tuple)):  # prepared: the edge weights are in them
            scales = list(weights)
        else:
            scales = channel_scales(weights, self.ops, self.op_channels, edge_weights)
        # each candidate's output comes weighted (w_ek on edge e's channels, inside its
        # BatchNorm kernel): the node is their sum, summed over the edges
        outputs = self._candidate_outputs(grouped, training, scales)
        mixed = outputs[0] if len(outputs) == 1 else tf.add_n(outputs)
        if self.edges > 1:
            mixed = tf.reduce_sum(tf.reshape(mixed, _nhwc(mixed, self.op_channels, self.edges)), 3)
        if taps:
            mixed = mixed + self._tapped_corrections(parts, outputs, weights, taps)
        if self.partial_k == 1:
            return mixed
        rests = [self._bypass(x) for x in inputs]
        if edge_weights is not None:
            rests = [edge_weights[i] * r for i, r in enumerate(rests)]
        rest = tf.add_n(rests) if len(rests) > 1 else rests[0]
        return self.shuffle(tf.concat([mixed, rest], axis=-1))

    def _candidate_outputs(self, grouped, training, scales):
        activated = None
        outputs = []
        for layer, scale in zip(self.candidates, scales):
            arguments = {"training": training}
            if scale is not None:
                arguments["scale"] = scale
            if isinstance(layer, (GroupedDilConv, GroupedSepConv)):
                if activated is None:  # one ReLU for every convolution of the group
                    activated = tf.nn.relu(grouped)
                outputs.append(layer(activated, activated=True, **arguments))
            else:
                outputs.append(layer(grouped, **arguments))
        return outputs

    def _tapped_corrections(self, parts, outputs, weights, taps):
        """What the taps change in the node: for each tapped term ``a = w * op(x)`` (edge
        ``e``'s slice of a weighted candidate output), ``a' - a`` with ``a'`` the tap's
        replacement, a new tensor even without a transform, so that ``dL/da'`` is the
        gradient at the node, as in a per-edge edge."""
        c = self.op_channels
        total = None
        for e, edge_taps in sorted(taps.items()):
            for position, tap in sorted(edge_taps.items()):
                i = self.op_indices[position]
                w = weights[e, i]
                term = outputs[position][..., e * c:(e + 1) * c]
                replaced = (tf.identity(term) if tap.transform is None
                            else tap.transform(parts[e], term, w))
                tap.captured.append((parts[e], replaced, w))
                change = replaced - term
                total = change if total is None else total + change
        return total

    def _call_with_taps(self, inputs, parts, outputs, weights, edge_weights, taps):
        if isinstance(weights, (list, tuple)):
            raise TypeError("taps need the (edges, len(ops)) weight matrix, not prepared "
                            "channel weights")
        c = self.op_channels
        total = None
        for e, x in enumerate(parts):
            edge_taps = taps.get(e) or {}
            out = None
            for position, (i, y) in enumerate(zip(self.op_indices, outputs)):
                w = weights[e, i]
                term = w * y[..., e * c:(e + 1) * c]
                tap = edge_taps.get(position)
                if tap is not None:
                    if tap.transform is not None:
                        term = tap.transform(x, term, w)
                    tap.captured.append((x, term, w))
                out = term if out is None else out + term
            if self.partial_k > 1:
                out = self.shuffle(tf.concat([out, self._bypass(inputs[e])], axis=-1))
            if edge_weights is not None:
                out = edge_weights[e] * out
            total = out if total is None else total + out
        return total

    def edge_weights(self, edge: int) -> dict[str, VariableView]:
        """Views of edge ``edge``'s (local to the group) variables, named
        ``"<op>.<variable>"`` as the per-edge operation names them (for example
        ``"sep_conv_3x3.first.depthwise.kernel"``)."""
        if not 0 <= edge < self.edges:
            raise IndexError(f"edge {edge} is not in this group of {self.edges} edges")
        views = {}
        for i, layer in zip(self.op_indices, self.candidates):
            views.update(layer.edge_weights(edge, f"{self.ops[i]}."))
        return views

    def get_config(self):
        return {**super().get_config(), "ops": list(self.ops), "channels": self.channels,
                "edges": self.edges, "stride": self.stride, "partial_k": self.partial_k,
                "sync_batch_norm": self.sync_batch_norm}


def group_layout(nodes: int, reduction: bool) -> list[tuple[int, int, int, int]]:
    """The groups of a search cell: ``(node, first_source, sources, stride)`` per group, in
    DARTS edge order (node by node, sources in order). A normal cell has one group per node
    (all ``2 + node`` sources, stride 1); a reduction cell two per node after the first: the
    stride-2 edges from the cell's inputs and the stride-1 edges from earlier nodes."""
    groups = []
    for node in range(nodes):
        if reduction:
            groups.append((node, 0, 2, 2))
            if node:
                groups.append((node, 2, node, 1))
        else:
            groups.append((node, 0, 2 + node, 1))
    return groups


def split_rows(matrix, sizes: Sequence[int]) -> list:
    """``matrix`` split into consecutive row blocks of ``sizes`` (one op)."""
    return tf.split(matrix, list(sizes), axis=0) if len(sizes) > 1 else [matrix]


def channel_scales(weights, ops: Sequence[str], channels: int, edge_weights=None,
                   sizes: Sequence[int] | None = None) -> list:
    """Per candidate (the op set without ``none``), the per-channel weights of edges laid
    side by side: ``w[e, k]`` (times ``edge_weights[e]``) on edge ``e``'s ``channels``
    channels. ``weights``: ``(edges, len(ops))``. With ``sizes`` (edges per group), a list
    per group of those lists, made with one set of operations for all groups."""
    keep = [i for i, op in enumerate(ops) if op != "none"]
    if len(keep) != len(ops):
        weights = tf.gather(weights, keep, axis=1)
    if edge_weights is not None:
        weights = weights * tf.reshape(tf.cast(edge_weights, weights.dtype), (-1, 1))
    edges, k = weights.shape
    per_channel = tf.reshape(
        tf.broadcast_to(tf.reshape(tf.transpose(weights), (k, edges, 1)), (k, edges, channels)),
        (k, edges * channels))
    if sizes is None:
        return tf.unstack(per_channel)
    blocks = tf.split(per_channel, [n * channels for n in sizes], axis=1) if len(sizes) > 1 \
        else [per_channel]
    return [tf.unstack(block) for block in blocks]


def per_edge_weights(edge) -> dict:
    """``{"<op>.<variable>": variable}`` of a per-edge
    :class:`~aca_keras.models.supernet.MixedEdge`, named as :meth:`EdgeGroup.edge_weights`
    names the grouped views."""
    weights = {}
    for i, layer in zip(edge.op_indices, edge.candidates):
        weights.update(_layer_weights(layer, f"{edge.ops[i]}."))
    return weights


def _layer_weights(layer, prefix: str) -> dict:
    if isinstance(layer, ops_lib.SepConv):
        return {**_layer_weights(layer.first, f"{prefix}first."),
                **_layer_weights(layer.second, f"{prefix}second.")}
    if isinstance(layer, ops_lib.DilConv):
        return {f"{prefix}depthwise.kernel": layer.depthwise.kernel,
                f"{prefix}pointwise.kernel": layer.pointwise.kernel,
                **_bn_variables(layer.bn, f"{prefix}bn.")}
    if isinstance(layer, ops_lib.PoolBN):
        return _bn_variables(layer.bn, f"{prefix}bn.")
    return {f"{prefix}{j}.{v.name}": v for j, v in enumerate(layer.weights)}


def _bn_variables(bn, prefix: str) -> dict:
    return {prefix + name: getattr(bn, name)
            for name in ("gamma", "beta", "moving_mean", "moving_variance")
            if getattr(bn, name, None) is not None}
