"""The DARTS search supernet and its bi-level optimisation under ``model.fit``.

:class:`SearchNetwork` owns the architecture weights (one alpha matrix per cell type, created
with ``add_weight`` so they are saved with the model); the cells receive the softmaxed alphas
as call arguments and own none. The softmax is computed once per cell type per forward pass,
and the ``none`` operation is never run (its output is zero).

Each ``train_step`` receives ``((x_w, y_w), (x_a, y_a))``: a weight-train batch and an
alpha-validation batch. It first updates the alphas on the validation batch (first order by
default; ``order=2`` uses the unrolled DARTS hypergradient with a finite-difference
Hessian-vector product), then the weights on the training batch.
"""

from __future__ import annotations

from collections.abc import Sequence

import keras
import numpy as np
import tensorflow as tf

from aca_keras import ops as ops_lib
from aca_keras.genotype import Genotype, derive_genotype

_PACKAGE = "aca_keras"


def num_edges(nodes: int) -> int:
    """Edges in a cell with ``nodes`` intermediate nodes (node j has 2 + j inputs)."""
    return sum(2 + j for j in range(nodes))


def reduction_indices(cells: int) -> tuple[int, ...]:
    """Indices of the reduction cells: at 1/3 and 2/3 of the depth (DARTS's rule)."""
    return tuple(sorted({cells // 3, 2 * cells // 3}))


@keras.saving.register_keras_serializable(package=_PACKAGE)
class MixedEdge(keras.layers.Layer):
    """A DARTS mixed edge: the softmax-weighted sum of every candidate operation."""

    def __init__(self, ops: Sequence[str], channels: int, stride: int = 1, **kwargs):
        super().__init__(**kwargs)
        self.ops = tuple(ops)
        self.channels = channels
        self.stride = stride
        # 'none' contributes w * 0 = 0, so it is never created nor run.
        self.op_indices = tuple(i for i, op in enumerate(self.ops) if op != "none")
        self.candidates = [
            ops_lib.create_op(self.ops[i], channels, channels, stride, affine=False)
            for i in self.op_indices
        ]
        self.clear_probe()

    def set_probe(self, position: int, captured: list, scale=None) -> None:
        """Record the weighted output ``w * op(x)`` of candidate ``position`` into
        ``captured`` on every call (eager use: channel scoring), optionally multiplying it by a
        per-channel ``scale`` first. Not tracked by Keras; not saved."""
        object.__setattr__(self, "_probe", (position, captured, scale))

    def clear_probe(self) -> None:
        """Stop recording (see :meth:`set_probe`)."""
        object.__setattr__(self, "_probe", None)

    def build(self, input_shape):
        for layer in self.candidates:
            if not layer.built:
                layer.build(input_shape)
        self.built = True

    def call(self, inputs, weights, training=None):
        out = None
        for position, (i, layer) in enumerate(zip(self.op_indices, self.candidates)):
            term = weights[i] * _call_op(layer, inputs, training)
            if self._probe is not None and self._probe[0] == position:
                if self._probe[2] is not None:
                    term = term * self._probe[2]
                self._probe[1].append(term)
            out = term if out is None else out + term
        return out

    def compute_output_shape(self, input_shape):
        return self.candidates[0].compute_output_shape(input_shape)

    def get_config(self):
        return {**super().get_config(), "ops": list(self.ops), "channels": self.channels,
                "stride": self.stride}


def _call_op(layer, x, training):
    if isinstance(layer, (keras.layers.Identity, ops_lib.ChannelSlice)):
        return layer(x)
    return layer(x, training=training)


@keras.saving.register_keras_serializable(package=_PACKAGE)
class SearchCell(keras.layers.Layer):
    """A search cell: two preprocessed inputs, ``nodes`` intermediate nodes, each the sum of
    mixed edges from all earlier states, and the concatenation of the intermediate nodes."""

    def __init__(self, ops: Sequence[str], channels: int, reduction: bool = False,
                 reduction_prev: bool = False, nodes: int = 4, **kwargs):
        super().__init__(**kwargs)
        self.ops = tuple(ops)
        self.channels = channels
        self.reduction = reduction
        self.reduction_prev = reduction_prev
        self.nodes = nodes
        if reduction_prev:
            self.preprocess0 = ops_lib.FactorizedReduce(channels, affine=False)
        else:
            self.preprocess0 = ops_lib.ReLUConvBN(channels, 1, 1, affine=False)
        self.preprocess1 = ops_lib.ReLUConvBN(channels, 1, 1, affine=False)
        self.edges = []
        for node in range(nodes):
            for source in range(2 + node):
                stride = 2 if reduction and source < 2 else 1
                self.edges.append(MixedEdge(self.ops, channels, stride))
        self.concat = keras.layers.Concatenate(axis=-1)

    def build(self, input_shape):
        shape0, shape1 = input_shape
        self.preprocess0.build(shape0)
        self.preprocess1.build(shape1)
        state_shape = self.preprocess1.compute_output_shape(shape1)
        reduced = self.edges[0].compute_output_shape(state_shape) if self.reduction else state_shape
        index = 0
        for node in range(self.nodes):
            for source in range(2 + node):
                self.edges[index].build(state_shape if source < 2 else reduced)
                index += 1
        self.built = True

    def call(self, inputs, weights, training=None):
        s0, s1 = inputs
        states = [self.preprocess0(s0, training=training), self.preprocess1(s1, training=training)]
        index = 0
        for _ in range(self.nodes):
            total = None
            for h in states:
                out = self.edges[index](h, weights[index], training=training)
                total = out if total is None else total + out
                index += 1
            states.append(total)
        return self.concat(states[2:])

    def get_config(self):
        return {**super().get_config(), "ops": list(self.ops), "channels": self.channels,
                "reduction": self.reduction, "reduction_prev": self.reduction_prev,
                "nodes": self.nodes}


@keras.saving.register_keras_serializable(package=_PACKAGE)
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
        mean, std: per-channel normalisation statistics on the 0-1 scale.
    """

    def __init__(self, input_shape: Sequence[int], num_classes: int, cells: int = 8,
                 channels: int = 16, nodes: int = 4, stem_multiplier: int = 3,
                 ops: str | Sequence[str] = "aca", mean: Sequence[float] | None = None,
                 std: Sequence[float] | None = None, **kwargs):
        super().__init__(**kwargs)
        from aca_keras.data import preprocessing_layers

        self.image_shape = tuple(int(d) for d in input_shape)
        if len(self.image_shape) != 3:
            raise ValueError(f"input_shape must be (height, width, channels), got {input_shape}")
        self.num_classes = int(num_classes)
        self.cells = int(cells)
        self.channels = int(channels)
        self.nodes = int(nodes)
        self.stem_multiplier = int(stem_multiplier)
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
        self.stem_bn = ops_lib.batch_norm(affine=True)
        reductions = reduction_indices(self.cells)
        self.search_cells = []
        c_cur = channels
        reduction_prev = False
        for i in range(self.cells):
            reduction = i in reductions
            if reduction:
                c_cur *= 2
            self.search_cells.append(SearchCell(self.op_names, c_cur, reduction, reduction_prev,
                                                nodes, name=f"cell_{i}"))
            reduction_prev = reduction
        self.global_pool = keras.layers.GlobalAveragePooling2D()
        self.classifier = keras.layers.Dense(num_classes)

        shape = (num_edges(self.nodes), len(self.op_names))
        init = keras.initializers.RandomNormal(stddev=1e-3)
        self.alpha_normal = self.add_weight(shape=shape, initializer=init, name="alpha_normal")
        self.alpha_reduce = self.add_weight(shape=shape, initializer=init, name="alpha_reduce")

        self.order = 1
        self.weight_decay = 3e-4
        self.alpha_weight_decay = 1e-3
        self.grad_clip = 5.0
        self.unrolled_eps = 0.01
        self.alpha_optimizer = None
        self._trackers = {
            name: keras.metrics.Mean(name=name) for name in
            ("loss", "accuracy", "alpha_loss", "alpha_accuracy")
        }

    # ---------------------------------------------------------------------------------- forward

    def ensure_built(self) -> None:
        """Create all variables by running the model once on a dummy batch."""
        if not self.built:
            self(keras.ops.zeros((1,) + self.image_shape))

    def call(self, inputs, training=None):
        x = inputs
        for layer in self.preprocess:
            x = layer(x)
        s0 = s1 = self.stem_bn(self.stem_conv(x), training=training)
        w_normal, w_reduce = self.edge_weights()
        for cell in self.search_cells:
            weights = w_reduce if cell.reduction else w_normal
            s0, s1 = s1, cell((s0, s1), weights, training=training)
        return self.classifier(self.global_pool(s1))

    def edge_weights(self):
        """Softmax of each alpha row: the mixing weights ``(normal, reduce)`` used in ``call``.

        Computed once per forward pass for all edges of a cell type."""
        return (keras.ops.softmax(self.alpha_normal, axis=-1),
                keras.ops.softmax(self.alpha_reduce, axis=-1))

    # ----------------------------------------------------------------------------- variables

    @property
    def alpha_variables(self) -> list:
        """The architecture weights ``[alpha_normal, alpha_reduce]``."""
        return [self.alpha_normal, self.alpha_reduce]

    @property
    def weight_variables(self) -> list:
        """All trainable variables except the alphas."""
        alpha_ids = {id(v) for v in self.alpha_variables}
        return [v for v in self.trainable_variables if id(v) not in alpha_ids]

    def alphas(self) -> dict[str, np.ndarray]:
        """Current alpha logits as numpy arrays."""
        return {"normal": keras.ops.convert_to_numpy(self.alpha_normal),
                "reduce": keras.ops.convert_to_numpy(self.alpha_reduce)}

    def genotype(self) -> Genotype:
        """The genotype derived from the current alphas by the DARTS rule."""
        a = self.alphas()
        return derive_genotype(a["normal"], a["reduce"], self.op_names)

    # -------------------------------------------------------------------------------- compile

    def compile(self, optimizer=None, alpha_optimizer=None, *, order: int = 1,
                weight_decay: float = 3e-4, alpha_weight_decay: float = 1e-3,
                grad_clip: float | None = 5.0, unrolled_eps: float = 0.01, loss=None,
                jit_compile: bool = False, **kwargs):
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
        """
        if order not in (1, 2):
            raise ValueError(f"order must be 1 or 2, got {order}")
        if optimizer is None:
            optimizer = keras.optimizers.SGD(learning_rate=0.025, momentum=0.9)
        if alpha_optimizer is None:
            alpha_optimizer = keras.optimizers.Adam(learning_rate=3e-4, beta_1=0.5, beta_2=0.999)
        if loss is None:
            loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
        super().compile(optimizer=optimizer, loss=loss, jit_compile=jit_compile, **kwargs)
        self.alpha_optimizer = alpha_optimizer
        self.order = order
        self.weight_decay = float(weight_decay)
        self.alpha_weight_decay = float(alpha_weight_decay)
        self.grad_clip = None if grad_clip is None else float(grad_clip)
        self.unrolled_eps = float(unrolled_eps)
        # Build everything now so that no variable is created while train_step is traced.
        self.ensure_built()
        self.optimizer.build(self.weight_variables)
        self.alpha_optimizer.build(self.alpha_variables)

    def get_compile_config(self):
        if self.alpha_optimizer is None:
            return None
        return {
            "optimizer": keras.optimizers.serialize(self.optimizer),
            "alpha_optimizer": keras.optimizers.serialize(self.alpha_optimizer),
            "order": self.order, "weight_decay": self.weight_decay,
            "alpha_weight_decay": self.alpha_weight_decay, "grad_clip": self.grad_clip,
            "unrolled_eps": self.unrolled_eps,
        }

    def compile_from_config(self, config):
        config = dict(config)
        optimizer = keras.optimizers.deserialize(config.pop("optimizer"))
        alpha_optimizer = keras.optimizers.deserialize(config.pop("alpha_optimizer"))
        self.compile(optimizer, alpha_optimizer, **config)

    @property
    def metrics(self):
        return list(self._trackers.values())

    # --------------------------------------------------------------------------- train step

    def _loss(self, x, y, training=True):
        logits = self(x, training=training)
        loss = self.loss(y, logits)
        return loss, logits

    def _accuracy(self, y, logits):
        y = keras.ops.cast(keras.ops.reshape(y, (-1,)), "int32")
        pred = keras.ops.cast(keras.ops.argmax(logits, axis=-1), "int32")
        return keras.ops.mean(keras.ops.cast(keras.ops.equal(pred, y), "float32"))

    def alpha_gradients(self, x_w, y_w, x_a, y_a):
        """Gradient for the alphas: first order, or the unrolled second-order hypergradient.

        Returns ``(gradients, validation_loss, validation_logits)``.
        """
        if self.order == 1:
            with tf.GradientTape() as tape:
                loss, logits = self._loss(x_a, y_a)
            return tape.gradient(loss, self.alpha_variables), loss, logits
        return self._unrolled_gradients(x_w, y_w, x_a, y_a)

    def _momentum(self, variable):
        optimizer = self.optimizer
        momentums = getattr(optimizer, "momentums", None)
        if not momentums or not getattr(optimizer, "momentum", 0):
            return None
        return momentums[optimizer._get_variable_index(variable)]

    def virtual_step(self, x_w, y_w):
        """One virtual SGD step on the weights (in place), as the real optimiser would take it
        without clipping: ``w' = w + mu * m - xi * (dL_train/dw + weight_decay * w)`` with the
        optimiser's current learning rate ``xi`` and momentum buffer ``m``. Returns ``xi``."""
        weights = self.weight_variables
        with tf.GradientTape() as tape:
            loss, _ = self._loss(x_w, y_w)
        grads = tape.gradient(loss, weights)
        xi = keras.ops.cast(self.optimizer.learning_rate, weights[0].dtype)
        mu = float(getattr(self.optimizer, "momentum", 0.0) or 0.0)
        for v, g in zip(weights, grads):
            step = -xi * (g + self.weight_decay * v)
            m = self._momentum(v)
            if m is not None:
                step = step + mu * keras.ops.cast(m, v.dtype)
            v.assign_add(step)
        return xi

    def _unrolled_gradients(self, x_w, y_w, x_a, y_a):
        weights = self.weight_variables
        alphas = self.alpha_variables
        backup = [tf.identity(v) for v in weights]
        xi = self.virtual_step(x_w, y_w)
        with tf.GradientTape() as tape:
            val_loss, val_logits = self._loss(x_a, y_a)
        grads = tape.gradient(val_loss, weights + alphas)
        dw, dalpha = grads[: len(weights)], grads[len(weights):]
        # Finite-difference Hessian-vector product d2 L_train / (d alpha d w) . dw
        norm = tf.linalg.global_norm(dw)
        eps = self.unrolled_eps / (norm + 1e-12)

        def alpha_grad_at(sign):
            for v, w0, d in zip(weights, backup, dw):
                v.assign(w0 + sign * eps * d)
            with tf.GradientTape() as t:
                loss, _ = self._loss(x_w, y_w)
            return t.gradient(loss, alphas)

        plus = alpha_grad_at(1.0)
        minus = alpha_grad_at(-1.0)
        for v, w0 in zip(weights, backup):
            v.assign(w0)
        hyper = [da - xi * (p - m) / (2.0 * eps) for da, p, m in zip(dalpha, plus, minus)]
        return hyper, val_loss, val_logits

    def alpha_step(self, x_w, y_w, x_a, y_a):
        """Update the alphas on the alpha-validation batch; returns ``(loss, logits)``.

        First order uses only ``(x_a, y_a)``; second order also unrolls a virtual weight step
        on ``(x_w, y_w)`` (the weights are restored afterwards)."""
        grads, loss, logits = self.alpha_gradients(x_w, y_w, x_a, y_a)
        if self.alpha_weight_decay:
            grads = [g + self.alpha_weight_decay * a for g, a in zip(grads, self.alpha_variables)]
        self.alpha_optimizer.apply_gradients(zip(grads, self.alpha_variables))
        return loss, logits

    def weight_step(self, x_w, y_w):
        """Update the weights (not the alphas) on the weight-train batch."""
        weights = self.weight_variables
        with tf.GradientTape() as tape:
            loss, logits = self._loss(x_w, y_w)
        grads = tape.gradient(loss, weights)
        if self.grad_clip is not None:
            grads, _ = tf.clip_by_global_norm(grads, self.grad_clip)
        if self.weight_decay:
            grads = [g + self.weight_decay * v for g, v in zip(grads, weights)]
        self.optimizer.apply_gradients(zip(grads, weights))
        return loss, logits

    def train_step(self, data):
        (x_w, y_w), (x_a, y_a) = data
        alpha_loss, alpha_logits = self.alpha_step(x_w, y_w, x_a, y_a)
        loss, logits = self.weight_step(x_w, y_w)
        self._trackers["loss"].update_state(loss)
        self._trackers["accuracy"].update_state(self._accuracy(y_w, logits))
        self._trackers["alpha_loss"].update_state(alpha_loss)
        self._trackers["alpha_accuracy"].update_state(self._accuracy(y_a, alpha_logits))
        return {name: t.result() for name, t in self._trackers.items()}

    def test_step(self, data):
        x, y = data[0], data[1]
        loss, logits = self._loss(x, y, training=False)
        self._trackers["loss"].update_state(loss)
        self._trackers["accuracy"].update_state(self._accuracy(y, logits))
        return {name: self._trackers[name].result() for name in ("loss", "accuracy")}

    def get_config(self):
        return {
            "input_shape": list(self.image_shape), "num_classes": self.num_classes,
            "cells": self.cells, "channels": self.channels, "nodes": self.nodes,
            "stem_multiplier": self.stem_multiplier, "ops": self.ops,
            "mean": list(self.mean), "std": list(self.std), "name": self.name,
        }
