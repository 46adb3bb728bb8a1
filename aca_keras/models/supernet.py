"""The DARTS search supernet and its bi-level optimisation under ``model.fit``.

:class:`SearchNetwork` owns the architecture weights (one alpha matrix per cell type, created
with ``add_weight`` so they are saved with the model); the cells receive the softmaxed alphas
as call arguments and own none. The softmax is computed once per cell type per forward pass,
and the ``none`` operation is never run (its output is zero).

Each ``train_step`` receives ``((x_w, y_w), (x_a, y_a))``: a weight-train batch and an
alpha-validation batch. It first updates the alphas on the validation batch (first order by
default; ``order=2`` uses the unrolled DARTS hypergradient with a finite-difference
Hessian-vector product), then the weights on the training batch.

Search variants (:mod:`aca_keras.searching.variants`; the object,
:class:`~aca_keras.models.variant.SearchVariant`, says what to pass here): ``partial_k > 1``
makes every mixed edge a PC-DARTS partial-channel edge, ``edge_normalization=True`` adds the
PC-DARTS betas (trained with the alphas), ``compile(alpha_warmup=True)`` lets the
``alpha_frozen`` flag skip the architecture step, ``compile(variant=)`` hands the variant's
hooks (alpha transform, extra architecture loss) to the bi-level step, and
``call(op_weights=)`` runs a forward pass with given mixing weights instead of the softmax of
the alphas (how the step applies the alpha transform).
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import gc
from collections.abc import Callable, Mapping, Sequence

import keras
import numpy as np
import tensorflow as tf

from aca_keras import _internals as internals
from aca_keras import distribute as dist
from aca_keras.layers import ops as ops_lib
from aca_keras.layers.channels import ChannelShuffle
from aca_keras.layers.preprocessing import preprocessing_layers
from aca_keras.models import grouped as grouped_lib
from aca_keras.models.bilevel import BilevelOptimizer
from aca_keras.models.variant import SearchVariant
from aca_keras.optimizers import MomentumSGD
from aca_keras.space.genotype import Genotype, derive_genotype
from aca_keras.space.topology import node_slices, num_edges_for, reduction_indices

_PACKAGE = "aca_keras"

#: how a supernet stores and computes its mixed edges: ``"grouped"`` (default: the edges
#: into one node computed together, weights stored per node and stride, see
#: :mod:`aca_keras.models.grouped`) or ``"per_edge"`` (one :class:`MixedEdge` layer per
#: edge: how supernets saved before the grouped layout store their weights; kept to load
#: and resume those)
LAYOUTS = ("grouped", "per_edge")


def check_layout(layout: str) -> str:
    """``layout`` if it is one of :data:`LAYOUTS`, else a ``ValueError`` naming them."""
    if layout not in LAYOUTS:
        raise ValueError(f"Unknown supernet layout {layout!r}; use one of {list(LAYOUTS)} "
                         "('grouped' unless you load a supernet saved in the per-edge layout).")
    return layout


@dataclasses.dataclass(frozen=True)
class EdgeView:
    """One mixed edge of a search cell, in either layout: its op set, the op-set columns of
    its candidates (``op_indices``; the ``none`` operation has none), its stride, and
    ``weights()``: ``{"<op>.<variable>": variable or view}`` (see
    :class:`~aca_keras.models.grouped.VariableView`), each with ``numpy()``, ``assign()``
    and ``shape`` as a per-edge operation's variable."""

    ops: tuple
    op_indices: tuple
    stride: int
    _weights: Callable = dataclasses.field(repr=False, compare=False)

    def weights(self) -> dict:
        return self._weights()


def node_softmax(beta, nodes: int):
    """Softmax of the edge logits ``beta`` (shape ``(num_edges,)``, DARTS edge order) over
    the incoming edges of each intermediate node (PC-DARTS's edge normalisation)."""
    parts = [keras.ops.softmax(beta[a:b], axis=0) for a, b in node_slices(nodes)]
    return keras.ops.concatenate(parts, axis=0)


@dataclasses.dataclass
class EdgeTap:
    """Observes, and optionally replaces, one candidate's weighted output ``a = w * op(x)``
    in a forward pass of :class:`SearchNetwork` (``network(x, taps=...)``).

    Attributes:
        transform: ``None``, or ``transform(x, a, w) -> a'`` giving the term used instead of
            ``a`` (``x``: the operation's input, ``w``: its softmax weight).
        captured: each call appends ``(x, a, w)``, ``a`` after ``transform``; watch ``a`` with
            a ``GradientTape`` to get ``dL/da``.
    """

    transform: Callable | None = None
    captured: list = dataclasses.field(default_factory=list)


@keras.saving.register_keras_serializable(package=_PACKAGE)
class MixedEdge(keras.layers.Layer):
    """A DARTS mixed edge: the softmax-weighted sum of every candidate operation.

    With ``partial_k = K > 1`` it is a PC-DARTS partial-channel edge (see
    :mod:`aca_keras.searching.variants`): the candidates see only the first ``channels // K`` input
    channels and produce as many; the other channels bypass them (identity, or a
    parameter-free 2x2 max pool at stride 2), and the concatenation ``[ops, bypass]`` is
    channel-shuffled with ``K`` groups.

    ``sync_batch_norm``: the candidates' BatchNorm layers synchronise their statistics across
    replicas (see :func:`~aca_keras.layers.ops.batch_norm`); ``False`` for configs saved
    without the key.
    """

    def __init__(self, ops: Sequence[str], channels: int, stride: int = 1,
                 partial_k: int = 1, sync_batch_norm: bool = False, **kwargs):
        super().__init__(**kwargs)
        self.ops = tuple(ops)
        self.channels = channels
        self.stride = stride
        self.partial_k = int(partial_k)
        self.sync_batch_norm = bool(sync_batch_norm)
        grouped_lib.check_partial_k(channels, self.partial_k)
        op_channels = channels // self.partial_k
        # 'none' contributes w * 0 = 0, so it is never created nor run.
        self.op_indices = tuple(i for i, op in enumerate(self.ops) if op != "none")
        self.candidates = [
            ops_lib.create_op(self.ops[i], op_channels, op_channels, stride, affine=False,
                              sync_batch_norm=self.sync_batch_norm)
            for i in self.op_indices
        ]
        if self.partial_k > 1:
            self.split = ops_lib.ChannelSlice(0, op_channels)
            self.bypass = ops_lib.ChannelSlice(op_channels, channels)
            self.bypass_pool = (keras.layers.MaxPooling2D(2, strides=2, padding="same")
                                if stride == 2 else None)
            self.merge = keras.layers.Concatenate(axis=-1)
            self.shuffle = ChannelShuffle(self.partial_k)

    @property
    def stochastic(self) -> bool:
        """Whether a candidate draws random numbers in training (the ``noise`` op)."""
        return any(getattr(layer, "stochastic", False) for layer in self.candidates)

    @property
    def op_channels(self) -> int:
        """Channels the candidate operations see and produce (``channels // partial_k``)."""
        return self.channels // self.partial_k

    def build(self, input_shape):
        op_shape = tuple(input_shape[:-1]) + (self.op_channels,)
        for layer in self.candidates:
            if not layer.built:
                layer.build(op_shape)
        self.built = True

    def call(self, inputs, weights, training=None, taps=None):
        """``sum_k w_k * op_k(x)`` over the candidates (``weights``: one scalar per operation
        of the op set). ``taps`` (optional, see :class:`EdgeTap`): ``{position: EdgeTap}``
        to observe or replace the weighted output of candidate ``position`` (an index into
        :attr:`candidates`) in this call; used by channel scoring and its checks."""
        x = self.split(inputs) if self.partial_k > 1 else inputs
        if not taps and len(self.candidates) > 1:
            # sum_k w_k * op_k(x) as one contraction of the stacked outputs: a handful of
            # graph ops forward and backward instead of three to four per operation
            terms = tf.stack([grouped_lib.call_layer(layer, x, training) for layer in self.candidates])
            selected = tf.cast(tf.stack([weights[i] for i in self.op_indices]), terms.dtype)
            out = tf.tensordot(selected, terms, axes=1)
        else:
            out = None
            for position, (i, layer) in enumerate(zip(self.op_indices, self.candidates)):
                term = weights[i] * grouped_lib.call_layer(layer, x, training)
                tap = taps.get(position) if taps else None
                if tap is not None:
                    if tap.transform is not None:
                        term = tap.transform(x, term, weights[i])
                    tap.captured.append((x, term, weights[i]))
                out = term if out is None else out + term
        if self.partial_k > 1:
            rest = self.bypass(inputs)
            if self.bypass_pool is not None:
                rest = self.bypass_pool(rest)
            out = self.shuffle(self.merge([out, rest]))
        return out

    def compute_output_shape(self, input_shape):
        op_shape = tuple(input_shape[:-1]) + (self.op_channels,)
        shape = self.candidates[0].compute_output_shape(op_shape)
        return tuple(shape[:-1]) + (self.channels,)

    def get_config(self):
        return {**super().get_config(), "ops": list(self.ops), "channels": self.channels,
                "stride": self.stride, "partial_k": self.partial_k,
                "sync_batch_norm": self.sync_batch_norm}


@contextlib.contextmanager
def _grappler_disabled():
    """Switch TensorFlow's graph optimiser off while a function is instantiated, then restore
    the process-wide setting (it is read when a traced function is first run)."""
    before = tf.config.optimizer.get_experimental_options()
    tf.config.optimizer.set_experimental_options({"disable_meta_optimizer": True})
    try:
        yield
    finally:
        tf.config.optimizer.set_experimental_options(
            {"disable_meta_optimizer": before.get("disable_meta_optimizer", False)})


def _scalar_rows(weights) -> list[list]:
    """The weight matrix as rows of scalar tensors, from one unstack op (instead of one
    slice, and one slice gradient, per edge and operation)."""
    rows, columns = weights.shape
    flat = tf.unstack(keras.ops.reshape(weights, (-1,)))
    return [flat[r * columns:(r + 1) * columns] for r in range(rows)]


def _recomputed_cell(cell, s0, s1, weights, betas, training):
    """``cell((s0, s1), ...)`` whose inner activations are not kept for the backward pass:
    the backward pass runs the cell's forward pass again (``tf.recompute_grad``), trading
    one more forward computation for the memory of all the cell's intermediate tensors.
    The second pass leaves the BatchNorm moving statistics alone (the batch counts once)."""
    passes = []

    def forward(s0, s1, weights, *betas):
        again = bool(passes)
        passes.append(again)
        weights, edge_weights = cell.mixing_arguments(weights, betas[0] if betas else None)
        with ops_lib.moving_statistics_frozen(again):
            return cell((s0, s1), weights, training=training, edge_weights=edge_weights)

    return tf.recompute_grad(forward)(s0, s1, weights, *(() if betas is None else (betas,)))


@keras.saving.register_keras_serializable(package=_PACKAGE)
class SearchCell(keras.layers.Layer):
    """A search cell: two preprocessed inputs, ``nodes`` intermediate nodes, each the sum of
    mixed edges from all earlier states, and the concatenation of the intermediate nodes.

    ``layout`` (see :data:`LAYOUTS`): ``"grouped"`` computes the edges into each node as one
    :class:`~aca_keras.models.grouped.EdgeGroup` per stride (``groups``); ``"per_edge"``
    holds one :class:`MixedEdge` per edge (``edges``; configs saved without the key).
    :meth:`edge` gives either layout's edges with their weights.

    ``sync_batch_norm``: every BatchNorm of the cell (preprocessing and mixed edges)
    synchronises its statistics across replicas; ``False`` for configs saved without the
    key."""

    def __init__(self, ops: Sequence[str], channels: int, reduction: bool = False,
                 reduction_prev: bool = False, nodes: int = 4, partial_k: int = 1,
                 sync_batch_norm: bool = False, layout: str = "grouped", **kwargs):
        super().__init__(**kwargs)
        self.ops = tuple(ops)
        self.channels = channels
        self.reduction = reduction
        self.reduction_prev = reduction_prev
        self.nodes = nodes
        self.partial_k = int(partial_k)
        self.sync_batch_norm = bool(sync_batch_norm)
        self.layout = check_layout(layout)
        sync = self.sync_batch_norm
        if reduction_prev:
            self.preprocess0 = ops_lib.FactorizedReduce(channels, affine=False,
                                                        sync_batch_norm=sync)
        else:
            self.preprocess0 = ops_lib.ReLUConvBN(channels, 1, 1, affine=False,
                                                  sync_batch_norm=sync)
        self.preprocess1 = ops_lib.ReLUConvBN(channels, 1, 1, affine=False, sync_batch_norm=sync)
        self.edges = []
        self.groups = []
        self.group_layout = grouped_lib.group_layout(nodes, reduction)
        if self.layout == "per_edge":
            for node in range(nodes):
                for source in range(2 + node):
                    stride = 2 if reduction and source < 2 else 1
                    self.edges.append(MixedEdge(self.ops, channels, stride, self.partial_k,
                                                sync_batch_norm=sync))
        else:
            for node, first, sources, stride in self.group_layout:
                self.groups.append(grouped_lib.EdgeGroup(
                    self.ops, channels, sources, stride, self.partial_k,
                    sync_batch_norm=sync, name=f"node{node}_from{first}"))
        self.concat = keras.layers.Concatenate(axis=-1)

    @property
    def group_sizes(self) -> list[int]:
        """Edges per group, in edge order (grouped layout)."""
        return [sources for _, _, sources, _ in self.group_layout]

    def build(self, input_shape):
        shape0, shape1 = input_shape
        self.preprocess0.build(shape0)
        self.preprocess1.build(shape1)
        state_shape = self.preprocess1.compute_output_shape(shape1)
        reduced = (grouped_lib.strided_shape(state_shape, 2, state_shape[-1])
                   if self.reduction else state_shape)
        if self.layout == "per_edge":
            index = 0
            for node in range(self.nodes):
                for source in range(2 + node):
                    self.edges[index].build(state_shape if source < 2 else reduced)
                    index += 1
        else:
            for group, (_, first, sources, _) in zip(self.groups, self.group_layout):
                shape = state_shape if first < 2 else reduced
                group.build([shape] * sources)
        self.built = True

    @property
    def stochastic(self) -> bool:
        """Whether an edge draws random numbers in training (the ``noise`` op)."""
        return any(layer.stochastic for layer in (*self.edges, *self.groups))

    def mixing_arguments(self, weights, edge_weights=None):
        """The ``(weights, edge_weights)`` call arguments of this cell's layout from the
        ``(num_edges, num_ops)`` weight matrix and the ``(num_edges,)`` edge weights (or
        ``None``): scalars per edge (per-edge layout) or one row block per group (grouped).
        The same for every cell of one type and width, so the supernet makes them once per
        pass. Grouped: per group, the candidates' per-channel weights (the edge weights in
        them) and, for partial-channel edges only, the edge weights of the bypass."""
        if self.layout == "per_edge":
            return (_scalar_rows(weights),
                    None if edge_weights is None else tf.unstack(edge_weights))
        sizes = self.group_sizes
        scales = grouped_lib.channel_scales(weights, self.ops, self.channels // self.partial_k,
                                            edge_weights, sizes)
        return (scales, None if edge_weights is None or self.partial_k == 1
                else grouped_lib.split_rows(edge_weights, sizes))

    def edge(self, index: int) -> EdgeView:
        """Edge ``index`` (DARTS edge order) as an :class:`EdgeView`, in either layout."""
        total = num_edges_for(self.nodes)
        if not 0 <= index < total:
            raise IndexError(f"edge {index} is not in a cell of {total} edges")
        if self.layout == "per_edge":
            mixed = self.edges[index]
            return EdgeView(self.ops, mixed.op_indices, mixed.stride,
                            functools.partial(grouped_lib.per_edge_weights, mixed))
        start = 0
        for group in self.groups:
            if index < start + group.edges:
                local = index - start
                return EdgeView(self.ops, group.op_indices, group.stride,
                                functools.partial(group.edge_weights, local))
            start += group.edges
        raise AssertionError("unreachable")

    def call(self, inputs, weights, training=None, edge_weights=None, taps=None):
        """``weights``: the ``(num_edges, num_ops)`` operation weights, or what
        :meth:`mixing_arguments` makes of them; ``edge_weights`` (PC-DARTS edge
        normalisation, optional): per edge, a scalar multiplying its output in the node sum
        (a ``(num_edges,)`` tensor, or :meth:`mixing_arguments`' form); ``taps``
        (optional): ``{edge: {position: EdgeTap}}`` (see :class:`EdgeTap`)."""
        if taps and self.layout == "grouped":
            if isinstance(weights, (list, tuple)):
                raise TypeError("A grouped cell with taps needs the (num_edges, num_ops) "
                                "weight matrix, not mixing_arguments' prepared weights.")
            sizes = self.group_sizes
            weights = grouped_lib.split_rows(weights, sizes)
            if edge_weights is not None:
                edge_weights = grouped_lib.split_rows(edge_weights, sizes)
        elif not isinstance(weights, (list, tuple)):
            weights, edge_weights = self.mixing_arguments(weights, edge_weights)
        s0, s1 = inputs
        states = [self.preprocess0(s0, training=training), self.preprocess1(s1, training=training)]
        if self.layout == "grouped":
            return self._call_grouped(states, weights, edge_weights, training, taps)
        index = 0
        for _ in range(self.nodes):
            total = None
            for h in states:
                edge_taps = taps.get(index) if taps else None
                if edge_taps:
                    out = self.edges[index](h, weights[index], training=training, taps=edge_taps)
                else:
                    out = self.edges[index](h, weights[index], training=training)
                if edge_weights is not None:
                    out = edge_weights[index] * out
                total = out if total is None else total + out
                index += 1
            states.append(total)
        return self.concat(states[2:])

    def _call_grouped(self, states, blocks, edge_blocks, training, taps):
        start = 0
        pending = None  # the node being summed
        for g, (group, (node, first, sources, _)) in enumerate(zip(self.groups,
                                                                   self.group_layout)):
            local_taps = None
            if taps:
                local_taps = {e - start: t for e, t in taps.items()
                              if start <= e < start + sources and t}
            arguments = {"training": training}
            if edge_blocks is not None and edge_blocks[g] is not None:
                arguments["edge_weights"] = edge_blocks[g]
            if local_taps:
                arguments["taps"] = local_taps
            out = group(states[first:first + sources], blocks[g], **arguments)
            pending = out if pending is None else pending + out
            start += sources
            if g + 1 == len(self.groups) or self.group_layout[g + 1][0] != node:
                states.append(pending)
                pending = None
        return self.concat(states[2:])

    def get_config(self):
        return {**super().get_config(), "ops": list(self.ops), "channels": self.channels,
                "reduction": self.reduction, "reduction_prev": self.reduction_prev,
                "nodes": self.nodes, "partial_k": self.partial_k,
                "sync_batch_norm": self.sync_batch_norm, "layout": self.layout}

    @classmethod
    def from_config(cls, config):
        # configs saved before the grouped layout existed hold per-edge weights
        return cls(**{"layout": "per_edge", **config})


# compile() builds the model and both optimisers. Under a tf.distribute strategy Keras's
# pre-fit build would first reduce a sample batch across replicas, which fails for the nested
# search batch under MultiWorkerMirroredStrategy: skip it once compiled.
@keras.saving.register_keras_serializable(package=_PACKAGE)
@internals.symbolic_build_skipped_when(
    lambda model: model.built and model.alpha_optimizer is not None)
class SearchNetwork(keras.Model):
    """The DARTS search supernet with bi-level optimisation in ``train_step``.

    Args:
        input_shape: image shape ``(H, W, C)``; the model takes raw pixels (0-255).
        num_classes: number of classes.
        cells: number of cells (reductions at 1/3 and 2/3 of the depth).
        channels: initial channel count C.
        nodes: intermediate nodes per cell.
        stem_multiplier: the stem outputs ``stem_multiplier * C`` channels.
        ops: op set name (``"aca"``, ``"darts"``) or a list of registered operations.
        mean: per-channel normalisation mean on the 0-1 scale.
        std: per-channel normalisation standard deviation on the 0-1 scale.
        partial_k: PC-DARTS partial channels: mixed edges see ``C / partial_k`` channels
            (1: every channel, DARTS). ``channels`` must be a multiple of it.
        edge_normalization: PC-DARTS edge normalisation: the model owns ``beta_normal`` and
            ``beta_reduce`` (one logit per edge, softmaxed over each node's incoming edges,
            multiplying the edge outputs) and trains them with the alphas.
        sync_batch_norm: every BatchNorm layer synchronises its statistics across replicas
            (global-batch statistics under a strategy with several replicas; see
            :func:`aca_keras.distribute.synchronize_batch_norm`). ``False`` by default and
            for configs saved without the key.
        layout: how the mixed edges are stored and computed (see :data:`LAYOUTS`):
            ``"grouped"`` (default: the edges into one node as one wide operation per
            candidate, a step graph about a third the size) or ``"per_edge"`` (one layer per
            edge; configs saved without the key, so older supernets load as they were
            saved). Both compute the same numbers.

    Besides the architecture weights the model holds two non-trainable scalars set by
    callbacks (see :mod:`aca_keras.searching.variants`): ``alpha_frozen`` (1: the architecture step is
    skipped; used when compiled with ``alpha_warmup=True``) and ``beta_decay_lambda`` (the
    beta-decay weight; used when compiled with ``beta_decay=True``).
    """

    def __init__(self, input_shape: Sequence[int], num_classes: int, cells: int = 8,
                 channels: int = 16, nodes: int = 4, stem_multiplier: int = 3,
                 ops: str | Sequence[str] = "aca", mean: Sequence[float] | None = None,
                 std: Sequence[float] | None = None, partial_k: int = 1,
                 edge_normalization: bool = False, sync_batch_norm: bool = False,
                 layout: str = "grouped", **kwargs):
        super().__init__(**kwargs)

        self.layout = check_layout(layout)
        self.image_shape = tuple(int(d) for d in input_shape)
        if len(self.image_shape) != 3:
            raise ValueError(f"input_shape must be (height, width, channels), got {input_shape}")
        self.num_classes = int(num_classes)
        self.cells = int(cells)
        self.channels = int(channels)
        self.nodes = int(nodes)
        self.stem_multiplier = int(stem_multiplier)
        self.partial_k = int(partial_k)
        self.edge_normalization = bool(edge_normalization)
        self.sync_batch_norm = bool(sync_batch_norm)
        if self.partial_k < 1 or self.channels % self.partial_k:
            raise ValueError(f"channels ({channels}) must be a multiple of partial_k "
                             f"({partial_k}): each mixed edge sends channels / partial_k "
                             "channels through its operations.")
        self.ops = ops if isinstance(ops, str) else list(ops)
        self.op_names = ops_lib.resolve_op_set(ops)
        in_channels = self.image_shape[-1]
        self.mean = tuple(float(m) for m in (mean if mean is not None else [0.5] * in_channels))
        self.std = tuple(float(s) for s in (std if std is not None else [0.5] * in_channels))

        self.preprocess = preprocessing_layers(self.mean, self.std)
        for layer in self.preprocess:  # eagerly, so their constants live outside any graph
            layer.build((None,) + self.image_shape)
        self.stem_conv = keras.layers.Conv2D(stem_multiplier * channels, 3, padding="same",
                                             use_bias=False)
        self.stem_bn = ops_lib.batch_norm(affine=True, sync_batch_norm=self.sync_batch_norm)
        reductions = reduction_indices(self.cells)
        self.search_cells = []
        c_cur = channels
        reduction_prev = False
        for i in range(self.cells):
            reduction = i in reductions
            if reduction:
                c_cur *= 2
            self.search_cells.append(SearchCell(self.op_names, c_cur, reduction, reduction_prev,
                                                nodes, self.partial_k,
                                                sync_batch_norm=self.sync_batch_norm,
                                                layout=self.layout, name=f"cell_{i}"))
            reduction_prev = reduction
        self.global_pool = keras.layers.GlobalAveragePooling2D()
        self.classifier = keras.layers.Dense(num_classes)

        shape = (num_edges_for(self.nodes), len(self.op_names))
        init = keras.initializers.RandomNormal(stddev=1e-3)
        # never autocast: under a mixed policy they stay float32 (the variable dtype) and
        # their softmax is taken in float32
        self.alpha_normal = self.add_weight(shape=shape, initializer=init, name="alpha_normal",
                                            autocast=False)
        self.alpha_reduce = self.add_weight(shape=shape, initializer=init, name="alpha_reduce",
                                            autocast=False)
        self.beta_normal = self.beta_reduce = None
        if self.edge_normalization:
            self.beta_normal = self.add_weight(shape=shape[:1], initializer=init,
                                               name="beta_normal")
            self.beta_reduce = self.add_weight(shape=shape[:1], initializer=init,
                                               name="beta_reduce")
        self.alpha_frozen = self.add_weight(shape=(), initializer="zeros", trainable=False,
                                            name="alpha_frozen")
        self.beta_decay_lambda = self.add_weight(shape=(), initializer="zeros",
                                                 trainable=False, name="beta_decay_lambda")
        self.graph_optimizations = False
        self.recompute = False  # set by compile()
        self.alpha_optimizer = None
        self.architect: BilevelOptimizer | None = None  # set by compile()
        self._trackers = {
            name: keras.metrics.Mean(name=name) for name in
            ("loss", "accuracy", "alpha_loss", "alpha_accuracy")
        }

    # ---------------------------------------------------------------------------------- forward

    def ensure_built(self) -> None:
        """Create all variables by running the model once on a dummy batch."""
        if not self.built:
            self(keras.ops.zeros((1,) + self.image_shape))

    def call(self, inputs, training=None, taps: Mapping | None = None, op_weights=None):
        """Logits for raw images. ``taps`` (optional): ``{(cell, edge): {position: EdgeTap}}``
        observes or replaces candidate outputs in this pass (see :class:`EdgeTap`).
        ``op_weights`` (optional): the mixing weights ``(normal, reduce)``, each
        ``(num_edges, num_ops)``, used instead of :meth:`op_weights` (a search variant's
        alpha transform)."""
        x = inputs
        for layer in self.preprocess:
            x = layer(x)
        s0 = s1 = self.stem_bn(self.stem_conv(x), training=training)
        # softmax in float32, then cast to the compute dtype (bfloat16/float16 when mixed)
        mixing = self.op_weights() if op_weights is None else op_weights
        matrices = [keras.ops.cast(w, self.compute_dtype) for w in mixing]
        prepared = {}  # per cell type and width, the cells' weight arguments, made once
        b_normal = b_reduce = None
        if self.edge_normalization:
            b_normal, b_reduce = self.beta_weights()
        for index, cell in enumerate(self.search_cells):
            kind = int(cell.reduction)
            betas = b_reduce if cell.reduction else b_normal
            cell_taps = ({e: t for (c, e), t in taps.items() if c == index}
                         if taps else None)
            if self.recompute and training and not cell_taps and not cell.stochastic:
                out = _recomputed_cell(cell, s0, s1, matrices[kind], betas, training)
                s0, s1 = s1, out
                continue
            if cell_taps:  # the cell splits the raw weights itself (taps see w * op(x))
                out = cell((s0, s1), matrices[kind], training=training, edge_weights=betas,
                           taps=cell_taps)
                s0, s1 = s1, out
                continue
            key = (kind, cell.channels if cell.layout == "grouped" else 0)
            if key not in prepared:
                prepared[key] = cell.mixing_arguments(matrices[kind], betas)
            weights, edge_weights = prepared[key]
            out = cell((s0, s1), weights, training=training, edge_weights=edge_weights)
            s0, s1 = s1, out
        # logits in the variable dtype: float32 under mixed precision (a stable loss)
        return keras.ops.cast(self.classifier(self.global_pool(s1)), self.variable_dtype)

    def beta_weights(self):
        """PC-DARTS edge-normalisation weights ``(normal, reduce)``: the softmax of the betas
        over each node's incoming edges, shape ``(num_edges,)``; ``None`` without edge
        normalisation."""
        if not self.edge_normalization:
            return None
        return (node_softmax(self.beta_normal, self.nodes),
                node_softmax(self.beta_reduce, self.nodes))

    def op_weights(self):
        """Softmax of each alpha row: the mixing weights ``(normal, reduce)`` used in ``call``.

        Computed once per forward pass for all edges of a cell type."""
        return (keras.ops.softmax(self.alpha_normal, axis=-1),
                keras.ops.softmax(self.alpha_reduce, axis=-1))

    # ----------------------------------------------------------------------------- variables

    @property
    def alpha_variables(self) -> list:
        """The architecture weights ``[alpha_normal, alpha_reduce]``, followed by
        ``[beta_normal, beta_reduce]`` with edge normalisation."""
        betas = [self.beta_normal, self.beta_reduce] if self.edge_normalization else []
        return [self.alpha_normal, self.alpha_reduce, *betas]

    @property
    def weight_variables(self) -> list:
        """All trainable variables except the alphas."""
        alpha_ids = {id(v) for v in self.alpha_variables}
        return [v for v in self.trainable_variables if id(v) not in alpha_ids]

    def alphas(self) -> dict[str, np.ndarray]:
        """Current alpha logits as numpy arrays."""
        return {"normal": keras.ops.convert_to_numpy(self.alpha_normal),
                "reduce": keras.ops.convert_to_numpy(self.alpha_reduce)}

    def betas(self) -> dict[str, np.ndarray] | None:
        """Current edge-normalisation weights (node-wise softmax of the betas) as numpy
        arrays, or ``None`` without edge normalisation."""
        weights = self.beta_weights()
        if weights is None:
            return None
        return {"normal": keras.ops.convert_to_numpy(weights[0]),
                "reduce": keras.ops.convert_to_numpy(weights[1])}

    def genotype(self) -> Genotype:
        """The genotype derived from the current alphas (and edge-normalisation weights) by
        the DARTS rule."""
        a = self.alphas()
        b = self.betas() or {}
        return derive_genotype(a["normal"], a["reduce"], self.op_names,
                               edge_weights_normal=b.get("normal"),
                               edge_weights_reduce=b.get("reduce"))

    # -------------------------------------------------------------------------------- compile

    def compile(self, optimizer=None, alpha_optimizer=None, *, order: int = 1,
                weight_decay: float = 3e-4, alpha_weight_decay: float = 1e-3,
                grad_clip: float | None = 5.0, unrolled_eps: float = 0.01, loss=None,
                jit_compile: bool = False, alpha_warmup: bool = False,
                beta_decay: bool = False, graph_optimizations: bool = False,
                recompute: bool = False, variant: SearchVariant | None = None, **kwargs):
        """Configure the bi-level search.

        Args:
            optimizer: weight optimizer (default SGD lr 0.025, momentum 0.9).
            alpha_optimizer: alpha optimizer (default Adam lr 3e-4, betas 0.5/0.999).
            order: 1 (first order) or 2 (unrolled hypergradient).
            weight_decay: L2 on the weights, added to the clipped gradient (as PyTorch SGD).
            alpha_weight_decay: L2 on the alphas (as PyTorch Adam's weight_decay).
            grad_clip: global-norm clip of the weight gradient (None: no clip).
            unrolled_eps: finite-difference step of the second-order Hessian-vector product,
                ``eps = unrolled_eps / ||dw||`` (0.01 in DARTS).
            loss: defaults to sparse categorical cross-entropy on logits.
            jit_compile: XLA; off by default (much slower for these ops on CPU).
            graph_optimizations: run TensorFlow's graph optimiser (grappler) on the step
                function. Off by default: on the CPU it made neither the first step nor the
                later steps of the DARTS supernet faster (see benchmarks/README.md). Off is
                applied to every call of the step, so a resumed search computes exactly what
                an uninterrupted one does.
            alpha_warmup: the architecture step checks ``alpha_frozen`` and is skipped while
                it is 1 (set per epoch by :class:`aca_keras.searching.variants.AlphaWarmup`).
            beta_decay: add the beta-decay regulariser, weighted by ``beta_decay_lambda``
                (ramped by :class:`aca_keras.searching.variants.BetaDecaySchedule`), to the
                architecture step (the ``beta_darts`` variant's ``extra_alpha_loss`` adds the
                same regulariser).
            variant: a configured :class:`~aca_keras.models.variant.SearchVariant` whose
                hooks (``alpha_transform``, ``extra_alpha_loss``) the bi-level step calls;
                ``None``: plain DARTS. Saved with the compile settings.
            recompute: keep only each cell's inputs for the backward pass and compute the
                cell's forward pass again there (gradient checkpointing per cell): much less
                tensor memory for one more forward computation per step. The same
                gradients and BatchNorm statistics; cells holding a random operation
                (``noise``) are not recomputed.
        """
        if optimizer is None:
            optimizer = MomentumSGD(learning_rate=0.025, momentum=0.9)
        if alpha_optimizer is None:
            alpha_optimizer = keras.optimizers.Adam(learning_rate=3e-4, beta_1=0.5, beta_2=0.999)
        if loss is None:
            loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
        # The loss is kept outside Keras's compiled loss: train_step computes it itself, and an
        # unbuilt compiled loss makes fit under a tf.distribute strategy trace the model on the
        # packed batch ((x_w, y_w), (x_a, y_a)) to build it.
        super().compile(optimizer=optimizer, loss=None, jit_compile=jit_compile, **kwargs)
        self.loss = loss
        if (self.dtype_policy.name == "mixed_float16"
                and not isinstance(alpha_optimizer, keras.optimizers.LossScaleOptimizer)):
            # Keras wraps the weight optimiser itself (compile's auto_scale_loss)
            alpha_optimizer = keras.optimizers.LossScaleOptimizer(alpha_optimizer)
        self.alpha_optimizer = alpha_optimizer
        self.graph_optimizations = bool(graph_optimizations)
        self.recompute = bool(recompute)
        self.architect = BilevelOptimizer(
            self, order=order, weight_decay=weight_decay,
            alpha_weight_decay=alpha_weight_decay, grad_clip=grad_clip,
            unrolled_eps=unrolled_eps, alpha_warmup=alpha_warmup, beta_decay=beta_decay,
            variant=variant)
        # Build everything now so that no variable is created while train_step is traced.
        self.ensure_built()
        self.optimizer.build(self.weight_variables)
        self.alpha_optimizer.build(self.alpha_variables)

    def make_train_function(self, force=False):
        super().make_train_function(force)
        function = self.train_function
        if self.graph_optimizations or getattr(function, "_without_grappler", False):
            return function

        def train_function(iterator):
            # Every call, not only the first: TensorFlow instantiates parts of the step lazily
            # on later calls, and an instantiation with the optimiser on computes slightly
            # different numbers; a resumed run would then differ from an uninterrupted one.
            with _grappler_disabled():
                return function(iterator)

        train_function._without_grappler = True
        self.train_function = train_function
        return train_function

    def release_traced_functions(self) -> None:
        """Drop the traced train/test/predict functions (the search step's graph is the
        largest part of a search's memory), so that channel scoring and the derived network
        reuse that memory instead of adding to it. A later ``fit`` traces the step again."""
        self.train_function = self.test_function = self.predict_function = None
        gc.collect()

    def checkpoint_mismatch_hint(self, saved_paths: Sequence[str]) -> str | None:
        """How to load a checkpoint whose variables (``saved_paths``) do not match this
        supernet's, when it was written in the other edge layout; ``None`` otherwise
        (:func:`aca_keras.io.checkpoint.load_checkpoint` puts it in its error)."""
        per_edge = any("mixed_edge" in p for p in saved_paths)
        if self.layout == "grouped" and per_edge:
            return ("holds a supernet in the per-edge layout (aca_keras before the grouped "
                    "edges); build the supernet with layout='per_edge' to load it (a run "
                    "directory resumes so by itself, from its config.json), then, to continue "
                    "in the grouped layout, copy its weights into a grouped supernet with "
                    "aca_keras.models.supernet.copy_supernet_weights (optimiser state is not "
                    "carried over).")
        if self.layout == "per_edge" and not per_edge and any("/grouped_" in p
                                                              for p in saved_paths):
            return ("holds a supernet in the grouped layout; build the supernet with "
                    "layout='grouped' (the default) to load it.")
        return None

    def get_compile_config(self):
        if self.alpha_optimizer is None:
            return None
        return {
            "optimizer": keras.optimizers.serialize(self.optimizer),
            "alpha_optimizer": keras.optimizers.serialize(self.alpha_optimizer),
            **self.architect.settings(),
            "recompute": self.recompute,
        }

    def compile_from_config(self, config):
        config = dict(config)
        if isinstance(config.get("variant"), Mapping):
            config["variant"] = _deserialize_variant(config["variant"])
        optimizer = keras.optimizers.deserialize(config.pop("optimizer"))
        alpha_optimizer = keras.optimizers.deserialize(config.pop("alpha_optimizer"))
        self.compile(optimizer, alpha_optimizer, **config)

    @property
    def metrics(self):
        return list(self._trackers.values())

    # --------------------------------------------------------------------------- train step

    def loss_and_logits(self, x, y, training=True, op_weights=None):
        """``(loss, logits)`` of a batch (the search loss on raw images); ``op_weights`` as
        in :meth:`call`."""
        if op_weights is None:
            logits = self(x, training=training)
        else:
            logits = self(x, training=training, op_weights=op_weights)
        loss = self.loss(y, logits)
        return loss, logits

    def _accuracy(self, y, logits):
        y = keras.ops.cast(keras.ops.reshape(y, (-1,)), "int32")
        pred = keras.ops.cast(keras.ops.argmax(logits, axis=-1), "int32")
        return keras.ops.mean(keras.ops.cast(keras.ops.equal(pred, y), "float32"))

    def train_step(self, data):
        """One bi-level step (see :class:`~aca_keras.models.bilevel.BilevelOptimizer`) and
        the four running metrics."""
        (_, y_w), (_, y_a) = data
        loss, logits, alpha_loss, alpha_logits = self.architect.step(data)
        # under a strategy Keras divides each replica's loss by the replica count; the
        # metrics take the replica's own mean (and fit averages them over replicas)
        self._trackers["loss"].update_state(dist.unscaled_loss(loss))
        self._trackers["accuracy"].update_state(self._accuracy(y_w, logits))
        self._trackers["alpha_loss"].update_state(dist.unscaled_loss(alpha_loss))
        self._trackers["alpha_accuracy"].update_state(self._accuracy(y_a, alpha_logits))
        return dist.step_outputs({name: t.result() for name, t in self._trackers.items()})

    def test_step(self, data):
        x, y = data[0], data[1]
        loss, logits = self.loss_and_logits(x, y, training=False)
        self._trackers["loss"].update_state(loss)
        self._trackers["accuracy"].update_state(self._accuracy(y, logits))
        return {name: self._trackers[name].result() for name in ("loss", "accuracy")}

    def get_config(self):
        return {
            "input_shape": list(self.image_shape), "num_classes": self.num_classes,
            "cells": self.cells, "channels": self.channels, "nodes": self.nodes,
            "stem_multiplier": self.stem_multiplier, "ops": self.ops,
            "partial_k": self.partial_k, "edge_normalization": self.edge_normalization,
            "mean": list(self.mean), "std": list(self.std), "name": self.name,
            "sync_batch_norm": self.sync_batch_norm, "layout": self.layout,
        }

    @classmethod
    def from_config(cls, config):
        # supernets saved before the grouped layout existed hold per-edge weights
        return cls(**{"layout": "per_edge", **config})


def _deserialize_variant(config: Mapping) -> SearchVariant:
    """The search variant of saved compile settings (Keras serialisation)."""
    try:
        return keras.saving.deserialize_keras_object(dict(config))
    except (TypeError, ValueError) as error:
        name = config.get("config", {}).get("name", config.get("class_name"))
        raise TypeError(
            f"The supernet was compiled with the search variant {name!r} of class "
            f"{config.get('class_name')!r}, which is not registered: import its module "
            f"({config.get('module')}) before loading the model.") from error


def copy_supernet_weights(source: SearchNetwork, target: SearchNetwork) -> None:
    """Copy every variable of ``source`` into ``target``, a supernet of the same settings in
    either layout (for example a supernet loaded in the per-edge layout into a grouped one):
    the mixed edges' weights edge by edge (:meth:`SearchCell.edge`), everything else (stem,
    cell preprocessing, classifier, alphas, BatchNorm statistics) in order.

    Raises ``ValueError`` when the two supernets differ in anything but the layout."""
    for network in (source, target):
        network.ensure_built()
    settings = {k: v for k, v in source.get_config().items() if k not in ("layout", "name")}
    other = {k: v for k, v in target.get_config().items() if k not in ("layout", "name")}
    if settings != other:
        changed = sorted(k for k in settings if settings[k] != other.get(k))
        raise ValueError(f"The supernets differ in {changed}; weights copy only between "
                         "supernets of the same settings.")
    assignments = []
    for cell_from, cell_to in zip(source.search_cells, target.search_cells):
        for index in range(num_edges_for(cell_from.nodes)):
            views_from = cell_from.edge(index).weights()
            views_to = cell_to.edge(index).weights()
            if views_from.keys() != views_to.keys():
                raise ValueError(f"Edge {index} of {cell_from.name} holds other variables in "
                                 "the two supernets.")
            assignments += [(views_to[name], views_from[name].numpy()) for name in views_from]
    rest_from, rest_to = _non_edge_variables(source), _non_edge_variables(target)
    if [tuple(v.shape) for v in rest_from] != [tuple(v.shape) for v in rest_to]:
        raise ValueError("The supernets' other variables differ in shape.")
    assignments += [(v_to, keras.ops.convert_to_numpy(v_from))
                    for v_from, v_to in zip(rest_from, rest_to)]
    for variable, value in assignments:  # every value was read first: nothing half-copied
        variable.assign(value)


def _non_edge_variables(network: SearchNetwork) -> list:
    edge_ids = set()
    for cell in network.search_cells:
        for layer in (*cell.edges, *cell.groups):
            edge_ids.update(id(v) for v in layer.weights)
    return [v for v in network.weights if id(v) not in edge_ids]
