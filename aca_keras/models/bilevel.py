"""DARTS's bi-level optimisation of a search supernet (pt.darts's ``Architect``).

:class:`BilevelOptimizer` holds the step's settings and computes one search step on a
:class:`~aca_keras.models.supernet.SearchNetwork`: the architecture step on an
alpha-validation batch (first order, or DARTS's unrolled second-order hypergradient with a
finite-difference Hessian-vector product; the beta-decay regulariser; the warm-up freeze),
then the weight step on a weight-train batch (global-norm clip, coupled weight decay). The
network owns the variables and the two optimisers; ``SearchNetwork.compile`` creates its
``architect`` and ``train_step`` calls :meth:`BilevelOptimizer.step`, so ``model.fit``
drives the search.

A search variant (:class:`~aca_keras.models.variant.SearchVariant`, ``variant=``) changes the
step through two hooks: ``alpha_transform`` (the mixing weights a forward pass uses: phase
``"weight"`` for the weight step's forward pass, ``"alpha"`` for every forward pass of the
architecture step) and ``extra_alpha_loss`` (a regulariser of the architecture step).
"""

from __future__ import annotations

import keras
import tensorflow as tf

from aca_keras import distribute as dist
from aca_keras.models.variant import SearchVariant, beta_decay_loss
from aca_keras.optimizers import momentum_of

__all__ = ["BilevelOptimizer"]


def _clip_and_decay(grads, variables, clip_norm: float | None, weight_decay: float) -> list:
    """``clip(g) + weight_decay * w`` for every gradient: the global-norm clip of
    ``tf.clip_by_global_norm`` (scale ``clip / max(norm, clip)``) and PyTorch's coupled weight
    decay, with one scale and one decay constant for all tensors (fewer graph operations than
    ``tf.clip_by_global_norm`` plus a decay per tensor)."""
    grads = list(grads)
    if clip_norm is not None:
        norm = tf.linalg.global_norm(grads)
        scale = clip_norm / tf.maximum(norm, clip_norm)
        scales = {dtype: tf.cast(scale, dtype) for dtype in {g.dtype for g in grads}}
        grads = [g * scales[g.dtype] for g in grads]
    if weight_decay:
        decays = {dtype: tf.constant(weight_decay, dtype) for dtype in {v.dtype for v in variables}}
        grads = [g + decays[v.dtype] * v for g, v in zip(grads, variables)]
    return grads


def _zero_unconnected(grads, variables) -> tuple[list, list[bool]]:
    """``grads`` with a zero gradient for each variable the loss does not depend on (``None``
    from the tape: the normal-cell alphas of a supernet whose cells are all reduction cells,
    ``cells <= 2``), and which variables were connected. Unconnected variables stay put: the
    callers add no weight decay or regulariser to them."""
    connected = [g is not None for g in grads]
    return ([g if g is not None else tf.zeros_like(v) for g, v in zip(grads, variables)],
            connected)


class BilevelOptimizer:
    """One DARTS search step on ``network`` (see the module docstring).

    Args:
        network: the compiled :class:`~aca_keras.models.supernet.SearchNetwork` (its
            ``optimizer`` updates the weights, its ``alpha_optimizer`` the alphas).
        order: 1 (first order) or 2 (unrolled hypergradient).
        weight_decay: L2 on the weights, added to the clipped gradient (as PyTorch SGD).
        alpha_weight_decay: L2 on the alphas (as PyTorch Adam's weight_decay).
        grad_clip: global-norm clip of the weight gradient (``None``: no clip).
        unrolled_eps: finite-difference step of the second-order Hessian-vector product,
            ``eps = unrolled_eps / ||dw||`` (0.01 in DARTS).
        alpha_warmup: skip the architecture step while ``network.alpha_frozen`` is 1.
        beta_decay: add the beta-decay regulariser weighted by ``network.beta_decay_lambda``
            (what the ``beta_darts`` variant's ``extra_alpha_loss`` adds; kept for compile
            settings saved before variants were objects).
        variant: a configured :class:`~aca_keras.models.variant.SearchVariant` whose hooks
            the step calls (``None``: plain DARTS).
    """

    def __init__(self, network, *, order: int = 1, weight_decay: float = 3e-4,
                 alpha_weight_decay: float = 1e-3, grad_clip: float | None = 5.0,
                 unrolled_eps: float = 0.01, alpha_warmup: bool = False,
                 beta_decay: bool = False, variant: SearchVariant | None = None):
        if order not in (1, 2):
            raise ValueError(f"order must be 1 or 2, got {order}")
        self.network = network
        self.order = int(order)
        self.weight_decay = float(weight_decay)
        self.alpha_weight_decay = float(alpha_weight_decay)
        self.grad_clip = None if grad_clip is None else float(grad_clip)
        self.unrolled_eps = float(unrolled_eps)
        self.alpha_warmup = bool(alpha_warmup)
        self.beta_decay = bool(beta_decay)
        self.variant = variant

    def settings(self) -> dict:
        """The constructor's settings (for ``SearchNetwork.get_compile_config``); the variant
        Keras-serialised (``None`` without one)."""
        return {"order": self.order, "weight_decay": self.weight_decay,
                "alpha_weight_decay": self.alpha_weight_decay, "grad_clip": self.grad_clip,
                "unrolled_eps": self.unrolled_eps, "alpha_warmup": self.alpha_warmup,
                "beta_decay": self.beta_decay,
                "variant": (None if self.variant is None
                            else keras.saving.serialize_keras_object(self.variant))}

    def loss_and_logits(self, x, y, phase: str):
        """``network.loss_and_logits(x, y)`` for a forward pass of ``phase`` (``"weight"`` or
        ``"alpha"``), with the variant's ``alpha_transform`` of the mixing weights when it
        has one."""
        if self.variant is None or not self.variant.transforms_alphas:
            return self.network.loss_and_logits(x, y)
        op_weights = self.variant.alpha_transform(self.network, self.network.op_weights(),
                                                  phase)
        return self.network.loss_and_logits(x, y, op_weights=op_weights)

    def extra_alpha_loss(self):
        """The regularisers of the architecture step: beta-decay (``beta_decay=True``) plus
        the variant's ``extra_alpha_loss``; ``None`` when there is none."""
        terms = []
        if self.beta_decay:
            terms.append(self.beta_decay_loss())
        if self.variant is not None:
            extra = self.variant.extra_alpha_loss(self.network)
            if extra is not None:
                terms.append(extra)
        if not terms:
            return None
        return terms[0] if len(terms) == 1 else keras.ops.sum(keras.ops.stack(terms))

    def step(self, data):
        """The architecture step, then the weight step, on ``((x_w, y_w), (x_a, y_a))``;
        returns ``(loss, logits, alpha_loss, alpha_logits)``."""
        (x_w, y_w), (x_a, y_a) = data
        if self.alpha_warmup:
            alpha_loss, alpha_logits = tf.cond(
                self.network.alpha_frozen > 0.5,
                lambda: self.frozen_alpha_step(x_a, y_a),
                lambda: self.alpha_step(x_w, y_w, x_a, y_a))
        else:
            alpha_loss, alpha_logits = self.alpha_step(x_w, y_w, x_a, y_a)
        loss, logits = self.weight_step(x_w, y_w)
        return loss, logits, alpha_loss, alpha_logits

    def alpha_gradients(self, x_w, y_w, x_a, y_a):
        """Gradient for the alphas: first order, or the unrolled second-order hypergradient.

        Returns ``(gradients, validation_loss, validation_logits)``.
        """
        if self.order == 1:
            with tf.GradientTape() as tape:
                loss, logits = self.loss_and_logits(x_a, y_a, "alpha")
            grads = dist.global_gradients(tape, loss, self.network.alpha_variables, self.network.alpha_optimizer)
            return grads, loss, logits
        return self.unrolled_gradients(x_w, y_w, x_a, y_a)

    def _momentum(self, variable):
        return momentum_of(self.network.optimizer, variable)

    def virtual_step(self, x_w, y_w):
        """One virtual SGD step on the weights (in place), as the real optimiser would take it
        without clipping: ``w' = w + mu * m - xi * (dL_train/dw + weight_decay * w)`` with the
        optimiser's current learning rate ``xi`` and momentum buffer ``m``. Returns ``xi``."""
        weights = self.network.weight_variables
        with tf.GradientTape() as tape:
            loss, _ = self.loss_and_logits(x_w, y_w, "alpha")
        # global (all-replica) gradient: every replica takes the same virtual step
        grads = dist.global_gradients(tape, loss, weights, self.network.alpha_optimizer)
        grads = _zero_unconnected(grads, weights)[0]
        xi = keras.ops.cast(self.network.optimizer.learning_rate, weights[0].dtype)
        inner = getattr(self.network.optimizer, "inner_optimizer", self.network.optimizer)
        mu = float(getattr(inner, "momentum", 0.0) or 0.0)
        for v, g in zip(weights, grads):
            step = -xi * (g + self.weight_decay * v)
            m = self._momentum(v)
            if m is not None:
                step = step + mu * keras.ops.cast(m, v.dtype)
            v.assign_add(step)
        return xi

    def unrolled_gradients(self, x_w, y_w, x_a, y_a):
        weights = self.network.weight_variables
        alphas = self.network.alpha_variables
        backup = [tf.identity(v) for v in weights]
        xi = self.virtual_step(x_w, y_w)
        with tf.GradientTape() as tape:
            val_loss, val_logits = self.loss_and_logits(x_a, y_a, "alpha")
        grads = dist.global_gradients(tape, val_loss, weights + alphas, self.network.alpha_optimizer)
        dw, dalpha = _zero_unconnected(grads[: len(weights)], weights)[0], grads[len(weights):]
        # Finite-difference Hessian-vector product d2 L_train / (d alpha d w) . dw
        norm = tf.linalg.global_norm(dw)
        eps = self.unrolled_eps / (norm + 1e-12)

        def alpha_grad_at(sign):
            for v, w0, d in zip(weights, backup, dw):
                v.assign(w0 + sign * eps * d)
            with tf.GradientTape() as t:
                loss, _ = self.loss_and_logits(x_w, y_w, "alpha")
            return dist.global_gradients(t, loss, alphas, self.network.alpha_optimizer)

        plus = alpha_grad_at(1.0)
        minus = alpha_grad_at(-1.0)
        for v, w0 in zip(weights, backup):
            v.assign(w0)
        # an alpha the loss does not depend on keeps no gradient (None) for alpha_step
        connected = [da is not None or p is not None for da, p in zip(dalpha, plus)]
        dalpha, plus, minus = (_zero_unconnected(g, alphas)[0] for g in (dalpha, plus, minus))
        hyper = [da - xi * (p - m) / (2.0 * eps) if c else None
                 for da, p, m, c in zip(dalpha, plus, minus, connected)]
        return hyper, val_loss, val_logits

    def alpha_step(self, x_w, y_w, x_a, y_a):
        """Update the alphas on the alpha-validation batch; returns ``(loss, logits)``.

        First order uses only ``(x_a, y_a)``; second order also unrolls a virtual weight step
        on ``(x_w, y_w)`` (the weights are restored afterwards)."""
        grads, loss, logits = self.alpha_gradients(x_w, y_w, x_a, y_a)
        # alphas of a cell type the supernet does not have get no gradient: they stay put
        grads, connected = _zero_unconnected(grads, self.network.alpha_variables)
        with tf.GradientTape() as tape:
            regulariser = self.extra_alpha_loss()
        if regulariser is not None:
            extra = tape.gradient(regulariser, self.network.alpha_variables)
            grads = [g if e is None or not c else g + e
                     for g, e, c in zip(grads, extra, connected)]
        if self.alpha_weight_decay:
            grads = [g + self.alpha_weight_decay * a if c else g
                     for g, a, c in zip(grads, self.network.alpha_variables, connected)]
        dist.apply_global_gradients(self.network.alpha_optimizer, grads, self.network.alpha_variables)
        return loss, logits

    def beta_decay_loss(self):
        """The beta-decay regulariser ``lambda * sum over cell types of mean over edges of
        logsumexp(alpha_e)`` (gradient: ``lambda * softmax(alpha_e) / edges``), with
        ``lambda = beta_decay_lambda``: :func:`aca_keras.models.variant.beta_decay_loss`."""
        return beta_decay_loss(self.network)

    def frozen_alpha_step(self, x_a, y_a):
        """The architecture step during warm-up: the validation forward pass only (for the
        ``alpha_*`` metrics and with the same BatchNorm updates), no update."""
        return self.loss_and_logits(x_a, y_a, "alpha")

    def weight_step(self, x_w, y_w):
        """Update the weights (not the alphas) on the weight-train batch."""
        weights = self.network.weight_variables
        with tf.GradientTape() as tape:
            loss, logits = self.loss_and_logits(x_w, y_w, "weight")
        # the global gradient (summed over replicas): clipping and decay see all of it
        grads = dist.global_gradients(tape, loss, weights, self.network.optimizer)
        grads = _zero_unconnected(grads, weights)[0]
        grads = _clip_and_decay(grads, weights, self.grad_clip, self.weight_decay)
        dist.apply_global_gradients(self.network.optimizer, grads, weights)
        return loss, logits
