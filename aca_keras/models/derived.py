"""The static derived network of an ACA architecture (DARTS evaluation network).

:func:`build_model` turns an :class:`~aca_keras.space.architecture.Architecture` into a
:class:`DerivedNetwork`: a Keras *functional* model (a functional subclass in the keras-hub
style: its constructor wires the graph with the functional API and its config is its
constructor arguments), so it saves as ``.keras``, exports, and trains with ``fit``.

Macro structure (DARTS's evaluation network):

* ``layers.preprocessing.preprocessing_layers(mean, std)``: the model takes raw pixels (0-255);
* stem: 3x3 convolution to ``stem_multiplier * C`` channels (no bias) and BatchNorm;
* ``cells`` cells; the cells at :func:`~aca_keras.space.topology.reduction_indices` are reduction
  cells and double the width. A cell preprocesses its two inputs (``FactorizedReduce`` on
  input 0 when the previous cell reduced, else ReLU-Conv1x1-BN; ReLU-Conv1x1-BN on input 1),
  sums the kept edges into each intermediate node, and concatenates the ``concat`` states;
* global average pooling and ``Dense(num_classes)`` named ``logits``;
* with ``auxiliary=True``, DARTS's auxiliary head after the last reduction cell (2/3 depth),
  output ``aux_logits``; the model then has two outputs ``[logits, aux_logits]``.

**ACA edges.** A kept edge with operation ``o``, ``k_e`` and cell width ``C_cell`` keeps
``k = round_half_up(k_e / reference_channels * C_cell)`` channels (clamped to ``0..C_cell``)
and outputs ``concat([o(x) on k channels, passthrough(x) on C_cell - k channels])``: the
passthrough is the last ``C_cell - k`` input channels at stride 1 (a :class:`ChannelSlice`, no
parameters) and a ``FactorizedReduce(C_cell - k)`` at stride 2. ``k = C_cell`` is a plain
DARTS edge (the operation alone), ``k = 0`` a skip connection (the passthrough alone).

**Drop path** (DARTS): a :class:`DropPath` layer after every operation output except a
stride-1 ``skip_connect`` (an identity), never on the passthrough. It zeroes whole samples
with probability ``p`` in training and scales the kept ones by ``1 / (1 - p)``; it is the
identity at inference and is not part of :meth:`DerivedNetwork.inference_model`. ``p`` is held
in a variable (not a model weight): :meth:`DerivedNetwork.set_drop_path_rate` changes it
without retracing; it starts at ``drop_path``.
"""

from __future__ import annotations

import os
import zipfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import keras

from aca_keras import optimizers as _optimizers  # noqa: F401  (registers L2SGD: trained.keras)
from aca_keras.errors import ArchitectureError, RunDirError
from aca_keras.io.run_dir import RunDir
from aca_keras.layers import ops as ops_lib
from aca_keras.layers.drop_path import DropPath, check_rate
from aca_keras.layers.preprocessing import preprocessing_layers
from aca_keras.space.architecture import Architecture, CellSpec, EdgeSpec
from aca_keras.space.topology import reduction_indices

__all__ = [
    "DerivedNetwork",
    "DropPath",
    "EdgeLayers",
    "build_model",
    "count_flops",
    "edge_width",
    "load_model",
]

_PACKAGE = "aca_keras"

AUX_HIDDEN = 128
AUX_FEATURES = 768


def edge_width(k_e: int, reference_channels: int, cell_channels: int) -> int:
    """Channels ``k`` an edge's operation produces in a cell of width ``cell_channels``.

    ``k = round(k_e / reference_channels * cell_channels)`` with halves rounded up (exact
    integer arithmetic), clamped to ``0..cell_channels``.
    """
    k = (2 * k_e * cell_channels + reference_channels) // (2 * reference_channels)
    return max(0, min(cell_channels, int(k)))


# ------------------------------------------------------------------------------ drop path


@dataclass
class EdgeLayers:
    """The layers of one kept edge in a built :class:`DerivedNetwork`.

    Attributes:
        edge: the edge's spec.
        stride: 1, or 2 for edges from the cell inputs of a reduction cell.
        channels: the cell width ``C_cell``.
        k: channels the operation produces (``edge_width``).
        op: the operation layer (``None`` when ``k = 0``).
        drop_path: the :class:`DropPath` after ``op`` (``None`` for no op or an identity).
        passthrough: the passthrough layer (``None`` when ``k = C_cell``, or when ``k = 0``
            at stride 1: the edge is the input itself).
        concat: the layer joining op and passthrough outputs (``None`` unless both exist).
    """

    edge: EdgeSpec
    stride: int
    channels: int
    k: int
    op: keras.layers.Layer | None = None
    drop_path: DropPath | None = None
    passthrough: keras.layers.Layer | None = None
    concat: keras.layers.Layer | None = None

    @property
    def layers(self) -> list[keras.layers.Layer]:
        """The edge's layers that exist."""
        return [layer for layer in (self.op, self.drop_path, self.passthrough, self.concat)
                if layer is not None]


@dataclass
class _CellLayers:
    spec: CellSpec
    reduction: bool
    channels: int
    preprocess0: keras.layers.Layer
    preprocess1: keras.layers.Layer
    edges: list[EdgeLayers]
    node_adds: list[keras.layers.Layer | None]
    concat: keras.layers.Layer | None


@dataclass
class _Wiring:
    """All layers of the network in wiring order. Held outside Keras's attribute tracking:
    the layers are tracked through the functional graph."""

    preprocess: list[keras.layers.Layer]
    stem_conv: keras.layers.Layer
    stem_bn: keras.layers.Layer
    cells: list[_CellLayers]
    global_pool: keras.layers.Layer
    classifier: keras.layers.Layer
    aux_after: int
    aux_layers: list[keras.layers.Layer] = field(default_factory=list)
    inference: keras.Model | None = None


@keras.saving.register_keras_serializable(package=_PACKAGE)
class DerivedNetwork(keras.Model):
    """The derived (evaluation) network of an ACA architecture; see the module docstring.

    A functional model: inputs ``images`` (raw pixels, ``input_shape``), outputs ``logits``,
    or ``[logits, aux_logits]`` when ``auxiliary`` is true (for training, with loss weights
    1 and ``auxiliary_weight``). :meth:`inference_model` gives images -> logits without the
    auxiliary head and drop path, for evaluation and export.

    Args:
        architecture: an :class:`Architecture` or its dict (``Architecture.to_dict``).
        input_shape: image shape ``(H, W, channels)``.
        num_classes: number of classes.
        cells: number of cells (reduction cells at 1/3 and 2/3 of the depth).
        channels: initial cell width C.
        nodes: intermediate nodes per cell; ``None`` takes them from the architecture (a
            given value must match both cells).
        stem_multiplier: the stem outputs ``stem_multiplier * channels`` channels.
        auxiliary: add the auxiliary head (second output ``aux_logits``).
        auxiliary_weight: the auxiliary loss weight used by training (stored, not applied by
            the model itself).
        drop_path: the drop path probability the training schedule ramps up to; also the
            initial rate of the :class:`DropPath` layers.
        mean: per-channel normalisation mean on the 0-1 scale (default 0.5).
        std: per-channel normalisation standard deviation on the 0-1 scale (default 0.5).
        name: model name.
        centred_stride2: stride-2 convolutions and pools centre their windows as DARTS does
            (see :class:`~aca_keras.layers.ops.DilConv`); models saved by aca_keras 0.1.0 load
            with ``False``, the padding their weights were trained with.
        sync_batch_norm: every BatchNorm layer synchronises its statistics across replicas
            (global-batch statistics under a strategy with several replicas; see
            :func:`aca_keras.distribute.synchronize_batch_norm`). :func:`aca_keras.train`
            sets it for the strategy it trains under. ``False`` by default and for models
            saved without the key; on one device it changes nothing.
    """

    def __init__(self, architecture: Architecture | Mapping[str, Any],
                 input_shape: Sequence[int], num_classes: int, cells: int = 20,
                 channels: int = 36, nodes: int | None = None, stem_multiplier: int = 3,
                 auxiliary: bool = True, auxiliary_weight: float = 0.4,
                 drop_path: float = 0.2, mean: Sequence[float] | None = None,
                 std: Sequence[float] | None = None, name: str | None = None,
                 centred_stride2: bool = True, sync_batch_norm: bool = False, **kwargs):

        # === Arguments ===
        arch = _as_architecture(architecture)
        image_shape = tuple(int(d) for d in input_shape)
        if len(image_shape) != 3 or min(image_shape) < 1:
            raise ValueError(
                f"input_shape must be (height, width, channels) with positive sizes, got "
                f"{tuple(input_shape)}")
        if int(num_classes) < 1 or int(cells) < 1 or int(channels) < 1:
            raise ValueError(
                f"num_classes, cells and channels must be >= 1, got {num_classes}, {cells}, "
                f"{channels}")
        if int(stem_multiplier) < 1:
            raise ValueError(f"stem_multiplier must be >= 1, got {stem_multiplier}")
        if nodes is not None and (nodes != arch.normal.nodes or nodes != arch.reduce.nodes):
            raise ArchitectureError(
                f"nodes={nodes} does not match the architecture (normal cell: "
                f"{arch.normal.nodes} nodes, reduction cell: {arch.reduce.nodes}); leave "
                "nodes=None to take them from the architecture.")
        check_rate(drop_path)
        in_channels = image_shape[-1]
        mean = tuple(float(m) for m in (mean if mean is not None else [0.5] * in_channels))
        std = tuple(float(s) for s in (std if std is not None else [0.5] * in_channels))
        if len(mean) != in_channels or len(std) != in_channels:
            raise ValueError(f"mean and std need one value per image channel ({in_channels}), "
                             f"got {len(mean)} and {len(std)}")

        # === Layers ===
        with ops_lib.stride2_padding(centred_stride2):
            wiring = _make_layers(arch, image_shape, int(num_classes), int(cells),
                                  int(channels), int(stem_multiplier), bool(auxiliary),
                                  float(drop_path), preprocessing_layers(mean, std),
                                  bool(sync_batch_norm))

        # === Functional model ===
        images = keras.Input(shape=image_shape, name="images")
        logits, aux_logits = _wire(wiring, images, training_graph=True)
        outputs = [logits, aux_logits] if auxiliary else logits
        super().__init__(inputs=images, outputs=outputs, name=name, **kwargs)

        # === Config ===
        self.architecture = arch
        self.image_shape = image_shape
        self.num_classes = int(num_classes)
        self.cells = int(cells)
        self.channels = int(channels)
        self.nodes = arch.normal.nodes if nodes is None else int(nodes)
        self.stem_multiplier = int(stem_multiplier)
        self.auxiliary = bool(auxiliary)
        self.auxiliary_weight = float(auxiliary_weight)
        self.drop_path = float(drop_path)
        self.mean = mean
        self.std = std
        self.centred_stride2 = bool(centred_stride2)
        self.sync_batch_norm = bool(sync_batch_norm)
        object.__setattr__(self, "_wiring", wiring)  # untracked: see _Wiring

    # ------------------------------------------------------------------------- accessors

    def inference_model(self) -> keras.Model:
        """``keras.Model(images, logits)`` sharing this model's layers, without the auxiliary
        head and without drop path layers (what evaluation and export use). Cached."""
        wiring = self._wiring
        if wiring.inference is None:
            images = keras.Input(shape=self.image_shape, name="images")
            logits, _ = _wire(wiring, images, training_graph=False)
            wiring.inference = keras.Model(images, logits, name=f"{self.name}_inference")
        return wiring.inference

    def edge_layers(self, cell: int, edge: int) -> EdgeLayers:
        """The layers of edge ``edge`` (index in the cell spec's edge order) of cell ``cell``."""
        return self._wiring.cells[cell].edges[edge]

    def cell_channels(self) -> list[int]:
        """The width ``C_cell`` of every cell."""
        return [c.channels for c in self._wiring.cells]

    @property
    def reduction_cells(self) -> tuple[int, ...]:
        """Indices of the reduction cells."""
        return reduction_indices(self.cells)

    @property
    def drop_path_layers(self) -> list[DropPath]:
        """Every :class:`DropPath` layer of the network."""
        return [e.drop_path for c in self._wiring.cells for e in c.edges
                if e.drop_path is not None]

    def set_drop_path_rate(self, rate: float) -> None:
        """Set the drop path probability of every edge (``0 <= rate < 1``); no retracing."""
        check_rate(rate)
        for layer in self.drop_path_layers:
            layer.set_rate(rate)

    @property
    def drop_path_rate(self) -> float:
        """The drop path probability now in use (``drop_path`` until changed)."""
        layers = self.drop_path_layers
        return layers[0].current_rate if layers else 0.0

    def flops(self, batch_size: int = 1) -> int:
        """Multiply-adds of the inference graph for ``batch_size`` images
        (see :func:`count_flops`)."""
        return count_flops(self, batch_size=batch_size)

    def size(self) -> dict[str, int]:
        """``{"parameters": ..., "multiply_adds": ...}`` of the inference graph (no auxiliary
        head): Keras ``count_params`` of :meth:`inference_model` (every weight, BatchNorm's
        moving mean and variance included, as the trainer reports) and :meth:`flops` for one
        image."""
        return {"parameters": int(self.inference_model().count_params()),
                "multiply_adds": int(self.flops())}

    def get_config(self):
        return {
            "architecture": self.architecture.to_dict(),
            "input_shape": list(self.image_shape),
            "num_classes": self.num_classes,
            "cells": self.cells,
            "channels": self.channels,
            "nodes": self.nodes,
            "stem_multiplier": self.stem_multiplier,
            "auxiliary": self.auxiliary,
            "auxiliary_weight": self.auxiliary_weight,
            "drop_path": self.drop_path,
            "mean": list(self.mean),
            "std": list(self.std),
            "name": self.name,
            "trainable": self.trainable,
            "centred_stride2": self.centred_stride2,
            "sync_batch_norm": self.sync_batch_norm,
        }

    @classmethod
    def from_config(cls, config, custom_objects=None):
        # models saved by aca_keras 0.1.0 (no key) keep TF's "same" stride-2 padding
        return cls(**{"centred_stride2": False, **config})


def build_model(architecture: Architecture | Mapping[str, Any], input_shape: Sequence[int],
                num_classes: int, *, cells: int = 20, channels: int = 36,
                nodes: int | None = None, stem_multiplier: int = 3, auxiliary: bool = True,
                auxiliary_weight: float = 0.4, drop_path: float = 0.2,
                mean: Sequence[float] | None = None, std: Sequence[float] | None = None,
                name: str | None = None, sync_batch_norm: bool = False) -> DerivedNetwork:
    """Build the derived network of ``architecture`` (see :class:`DerivedNetwork`).

    Defaults are DARTS's CIFAR-10 evaluation network: 20 cells, C = 36, auxiliary head
    (weight 0.4), drop path 0.2.
    """
    return DerivedNetwork(architecture, input_shape, num_classes, cells=cells,
                          channels=channels, nodes=nodes, stem_multiplier=stem_multiplier,
                          auxiliary=auxiliary, auxiliary_weight=auxiliary_weight,
                          drop_path=drop_path, mean=mean, std=std, name=name,
                          sync_batch_norm=sync_batch_norm)


def load_model(path: str | os.PathLike, compile: bool = True) -> DerivedNetwork:
    """Load a ``.keras`` file written by ``DerivedNetwork.save`` (no ``custom_objects``).

    Raises:
        RunDirError: no file at ``path``, or a file that is not a loadable ``.keras`` archive.
    """
    path = Path(path)
    if not path.is_file():
        raise RunDirError(f"No model file at {str(path)!r}; give the path of a .keras file "
                          f"written by DerivedNetwork.save (a run directory holds {RunDir.MODEL} "
                          f"and, after training, {RunDir.TRAINED_MODEL}).")
    if not zipfile.is_zipfile(path):  # Keras would report "File not found" for these
        raise RunDirError(f"{str(path)!r} is not a loadable .keras model file: it is not a zip "
                          "archive (corrupt, truncated, or not written by model.save). Save "
                          "the model again or restore the file.")
    try:
        return keras.saving.load_model(path, compile=compile)
    except (zipfile.BadZipFile, OSError, KeyError, ValueError, TypeError) as exc:
        raise RunDirError(f"{str(path)!r} is not a loadable .keras model file (corrupt or "
                          f"written by another program): {exc}") from exc


# ------------------------------------------------------------------------------ building


def _as_architecture(architecture: Architecture | Mapping[str, Any]) -> Architecture:
    if isinstance(architecture, Architecture):
        return architecture
    if isinstance(architecture, Mapping):
        return Architecture.from_dict(architecture)
    raise ArchitectureError(
        f"architecture must be an Architecture or its dict, got {type(architecture).__name__}")


def _make_layers(arch: Architecture, image_shape: tuple[int, ...], num_classes: int,
                 cells: int, channels: int, stem_multiplier: int, auxiliary: bool,
                 drop_path: float, preprocess: list[keras.layers.Layer],
                 sync_batch_norm: bool = False) -> _Wiring:
    """Create every layer (no wiring), checking shapes statically as it goes; every
    BatchNorm gets ``sync_batch_norm``."""
    sync = sync_batch_norm
    height, width = image_shape[0], image_shape[1]
    c_stem = stem_multiplier * channels
    reductions = reduction_indices(cells)
    cell_layers = []
    c_cur = channels
    size_prev = (height, width)
    reduction_prev = False
    aux_after = 2 * cells // 3
    aux_size = (height, width)
    for i in range(cells):
        reduction = i in reductions
        if reduction:
            c_cur *= 2
        spec = arch.reduce if reduction else arch.normal
        prefix = f"cell_{i}"
        if reduction_prev:
            pre0 = ops_lib.FactorizedReduce(c_cur, affine=True, sync_batch_norm=sync,
                                            name=f"{prefix}_preprocess0")
        else:
            pre0 = ops_lib.ReLUConvBN(c_cur, 1, 1, affine=True, sync_batch_norm=sync,
                                      name=f"{prefix}_preprocess0")
        pre1 = ops_lib.ReLUConvBN(c_cur, 1, 1, affine=True, sync_batch_norm=sync,
                                  name=f"{prefix}_preprocess1")
        edges = []
        for e_index, edge in enumerate(spec.edges):
            stride = edge.stride(reduction)
            edges.append(_make_edge(edge, arch.reference_channels, c_cur, stride, drop_path,
                                    f"{prefix}_edge_{e_index}", sync))
        adds = []
        for node in range(spec.nodes):
            fan_in = sum(e.node == node for e in spec.edges)
            adds.append(keras.layers.Add(name=f"{prefix}_node_{node}") if fan_in > 1 else None)
        cell_size = size_prev
        if reduction:
            cell_size = tuple(-(-s // 2) for s in size_prev)
            bad = [s for s in spec.concat if s < 2]
            if bad:
                raise ArchitectureError(
                    f"the reduction cell concatenates input state(s) {bad}, which have twice "
                    "the spatial size of its intermediate nodes; a reduction cell may only "
                    "concatenate intermediate nodes (states >= 2).")
        concat = (keras.layers.Concatenate(axis=-1, name=f"{prefix}_output")
                  if len(spec.concat) > 1 else None)
        cell_layers.append(_CellLayers(spec, reduction, c_cur, pre0, pre1, edges, adds, concat))
        size_prev = cell_size
        reduction_prev = reduction
        if i == aux_after:
            aux_size = cell_size

    aux_layers = _make_aux_head(aux_size, num_classes, sync) if auxiliary else []
    return _Wiring(
        preprocess=list(preprocess),
        stem_conv=keras.layers.Conv2D(c_stem, 3, padding="same", use_bias=False,
                                      name="stem_conv"),
        stem_bn=ops_lib.batch_norm(affine=True, name="stem_bn", sync_batch_norm=sync),
        cells=cell_layers,
        global_pool=keras.layers.GlobalAveragePooling2D(name="global_pool"),
        classifier=keras.layers.Dense(num_classes, name="logits"),
        aux_after=aux_after,
        aux_layers=aux_layers,
    )


def _make_edge(edge: EdgeSpec, reference_channels: int, c_cell: int, stride: int,
               drop_path: float, prefix: str, sync_batch_norm: bool = False) -> EdgeLayers:
    k = edge_width(edge.channels, reference_channels, c_cell)
    layers = EdgeLayers(edge=edge, stride=stride, channels=c_cell, k=k)
    if k > 0:
        layers.op = ops_lib.create_op(edge.op, c_cell, k, stride, affine=True,
                                      sync_batch_norm=sync_batch_norm)
        is_identity = edge.op == "skip_connect" and stride == 1
        if not is_identity:
            layers.drop_path = DropPath(drop_path, name=f"{prefix}_drop_path")
    rest = c_cell - k
    if rest > 0:
        if stride == 2:
            layers.passthrough = ops_lib.FactorizedReduce(rest, affine=True,
                                                          sync_batch_norm=sync_batch_norm,
                                                          name=f"{prefix}_passthrough")
        elif k > 0:
            layers.passthrough = ops_lib.ChannelSlice(k, c_cell, name=f"{prefix}_passthrough")
        # k == 0 at stride 1: the edge is its input, no layer at all.
    if layers.op is not None and rest > 0:
        layers.concat = keras.layers.Concatenate(axis=-1, name=f"{prefix}_concat")
    return layers


def _make_aux_head(size: tuple[int, int], num_classes: int,
                   sync_batch_norm: bool = False) -> list[keras.layers.Layer]:
    """DARTS's AuxiliaryHeadCIFAR, adapted to any map size.

    ReLU, 5x5 average pool stride 3 (valid; a global average pool when the map is smaller
    than 5x5), 1x1 conv to 128, BN, ReLU, conv to 768 with a ``min(2, size)`` kernel (valid),
    BN, ReLU, global average pool (= DARTS's flatten on its 1x1 map), Dense(num_classes).
    """
    h, w = size
    if h >= 5 and w >= 5:
        pool = keras.layers.AveragePooling2D(5, strides=3, padding="valid", name="aux_pool")
        h, w = (h - 5) // 3 + 1, (w - 5) // 3 + 1
    else:
        pool = keras.layers.GlobalAveragePooling2D(keepdims=True, name="aux_pool")
        h, w = 1, 1
    return [
        keras.layers.ReLU(name="aux_relu0"),
        pool,
        keras.layers.Conv2D(AUX_HIDDEN, 1, use_bias=False, name="aux_conv1"),
        ops_lib.batch_norm(affine=True, name="aux_bn1", sync_batch_norm=sync_batch_norm),
        keras.layers.ReLU(name="aux_relu1"),
        keras.layers.Conv2D(AUX_FEATURES, (min(2, h), min(2, w)), padding="valid",
                            use_bias=False, name="aux_conv2"),
        ops_lib.batch_norm(affine=True, name="aux_bn2", sync_batch_norm=sync_batch_norm),
        keras.layers.ReLU(name="aux_relu2"),
        keras.layers.GlobalAveragePooling2D(name="aux_flatten"),
        keras.layers.Dense(num_classes, name="aux_logits"),
    ]


def _wire(wiring: _Wiring, images, training_graph: bool):
    """Connect the layers on ``images``; returns ``(logits, aux_logits or None)``.

    ``training_graph=False`` leaves out the drop path layers and the auxiliary head."""
    x = images
    for layer in wiring.preprocess:
        x = layer(x)
    s0 = s1 = wiring.stem_bn(wiring.stem_conv(x))
    aux_logits = None
    for i, cell in enumerate(wiring.cells):
        s0, s1 = s1, _wire_cell(cell, s0, s1, training_graph)
        if training_graph and wiring.aux_layers and i == wiring.aux_after:
            h = s1
            for layer in wiring.aux_layers:
                h = layer(h)
            aux_logits = h
    logits = wiring.classifier(wiring.global_pool(s1))
    return logits, aux_logits


def _wire_cell(cell: _CellLayers, s0, s1, training_graph: bool):
    states = [cell.preprocess0(s0), cell.preprocess1(s1)]
    for node in range(cell.spec.nodes):
        outs = [_wire_edge(e, states[e.edge.input], training_graph)
                for e in cell.edges if e.edge.node == node]
        add = cell.node_adds[node]
        states.append(add(outs) if add is not None else outs[0])
    chosen = [states[s] for s in cell.spec.concat]
    return cell.concat(chosen) if cell.concat is not None else chosen[0]


def _wire_edge(edge: EdgeLayers, x, training_graph: bool):
    parts = []
    if edge.op is not None:
        h = edge.op(x)
        if training_graph and edge.drop_path is not None:
            h = edge.drop_path(h)
        parts.append(h)
    if edge.passthrough is not None:
        parts.append(edge.passthrough(x))
    elif edge.op is None:
        parts.append(x)  # k = 0 at stride 1: identity
    return edge.concat(parts) if edge.concat is not None else parts[0]


# ----------------------------------------------------------------------------- counting


def count_flops(model: keras.Model, batch_size: int = 1) -> int:
    """Multiply-adds (MACs) of one forward pass, computed analytically from the layers.

    For a :class:`DerivedNetwork`, its :meth:`~DerivedNetwork.inference_model` is counted (no
    auxiliary head, no drop path). Counted: ``Conv2D`` (``H_out * W_out * k_h * k_w *
    C_in / groups * C_out``), ``DepthwiseConv2D`` (``H_out * W_out * k_h * k_w * C_in *
    depth_multiplier``), ``Dense`` (``inputs * units`` per position); dilation does not change
    the count, a strided dilated conv that ops.py runs at stride 1 then subsamples is counted
    at stride 1 (what is computed). Not counted: biases, BatchNorm (foldable into the
    preceding convolution at inference), activations, pooling, additions, concatenations,
    slicing and the input preprocessing. Nested layers of aca_keras ops are walked; a layer
    may also define ``flops(input_shape) -> int`` to count itself.

    Raises:
        ValueError: a layer with weights that this function does not know how to count.
    """
    if isinstance(model, DerivedNetwork):
        model = model.inference_model()
    total = 0
    for layer in model.layers:
        if isinstance(layer, keras.layers.InputLayer):
            continue
        node_input = layer.input
        if isinstance(node_input, (list, tuple)):
            shape = [tuple(t.shape) for t in node_input]
        else:
            shape = tuple(node_input.shape)
        total += _layer_macs(layer, shape)
    return int(total) * int(batch_size)


def _spatial_product(shape) -> int:
    out = 1
    for d in shape[1:-1]:
        out *= int(d)
    return out


def _layer_macs(layer: keras.layers.Layer, input_shape) -> int:
    if hasattr(layer, "flops") and callable(layer.flops) and not isinstance(layer, keras.Model):
        return int(layer.flops(input_shape))
    if isinstance(layer, keras.Model):
        return count_flops(layer)
    if isinstance(layer, keras.layers.DepthwiseConv2D):
        out = layer.compute_output_shape(input_shape)
        kh, kw = layer.kernel_size
        return _spatial_product(out) * kh * kw * int(input_shape[-1]) * layer.depth_multiplier
    if isinstance(layer, keras.layers.Conv2D) and not isinstance(layer, keras.layers.Conv2DTranspose):
        out = layer.compute_output_shape(input_shape)
        kh, kw = layer.kernel_size
        return (_spatial_product(out) * kh * kw * (int(input_shape[-1]) // layer.groups)
                * int(out[-1]))
    if isinstance(layer, keras.layers.Dense):
        return _spatial_product(tuple(input_shape)[:-1] + (1,)) * int(input_shape[-1]) * layer.units
    if isinstance(layer, ops_lib.FactorizedReduce):
        total = _layer_macs(layer.conv_a, input_shape)
        if layer.conv_b is not None:
            total += _layer_macs(layer.conv_b, input_shape)
        return total
    chain = getattr(layer, "_chain", None)
    if callable(chain):
        total, shape = 0, input_shape
        for sub in chain():
            total += _layer_macs(sub, shape)
            shape = sub.compute_output_shape(shape)
        return total
    if isinstance(layer, (keras.layers.BatchNormalization, keras.layers.Normalization)):
        return 0
    if layer.weights:
        raise ValueError(
            f"count_flops does not know how to count layer {layer.name!r} "
            f"({type(layer).__name__}); give it a flops(input_shape) method.")
    return 0
