"""Optimisers for the search and the training: Keras's SGD with a fused momentum update, and
SGD with coupled L2 weight decay (the evaluation-stage training's).

The DARTS supernet has well over a thousand weight tensors, and Keras's SGD builds about eight
graph operations per tensor and step for its momentum update. :class:`MomentumSGD` applies the
same rule with TensorFlow's fused ``ResourceApplyKerasMomentum`` kernel, one operation per
tensor, which makes the step graph smaller to trace and to instantiate (the first step of a
search) without changing what is computed. :class:`L2SGD` adds PyTorch's coupled weight
decay and a global-norm clip of the summed gradient under a ``tf.distribute`` strategy.

Both are registered Keras objects (``aca_keras>MomentumSGD``, ``aca_keras>L2SGD``), so saved
``.keras`` files that hold them load once this module is imported.
"""

from __future__ import annotations

import keras
import tensorflow as tf

from aca_keras import _internals as internals
from aca_keras import distribute as dist

__all__ = ["L2SGD", "MomentumSGD", "momentum_of"]

_PACKAGE = "aca_keras"


def momentum_of(optimizer: keras.optimizers.Optimizer, variable: keras.Variable
                ) -> keras.Variable | None:
    """The momentum buffer ``optimizer`` keeps for ``variable``, or ``None`` when it keeps
    none (momentum 0, or an optimiser without SGD's ``momentums``, such as Adam).

    Works for ``keras.optimizers.SGD`` and its subclasses (:class:`MomentumSGD`,
    :class:`L2SGD`), looks through a ``LossScaleOptimizer`` to its ``inner_optimizer``, and
    accepts, inside ``update_step`` under a ``tf.distribute`` strategy, a replica's component
    of a variable. The optimiser must have been built on a list holding ``variable``.
    """
    inner = getattr(optimizer, "inner_optimizer", optimizer)  # loss scaling
    momentums = getattr(inner, "momentums", None)
    if not momentums or not getattr(inner, "momentum", 0):
        return None
    return momentums[internals.variable_index(inner, variable)]


@keras.saving.register_keras_serializable(package=_PACKAGE)
class MomentumSGD(keras.optimizers.SGD):
    """Keras ``SGD`` whose momentum update runs as one fused TensorFlow kernel per variable.

    The rule is Keras's (and PyTorch's, with ``dampening=0``): ``m = momentum * m - lr * g``,
    then ``w = w + m``. Arguments, variables, configuration and checkpoints are those of
    ``keras.optimizers.SGD``. Falls back to Keras's update for ``momentum=0``, Nesterov
    momentum and sparse gradients.
    """

    def update_step(self, gradient, variable, learning_rate):
        if (self.momentum == 0 or self.nesterov or isinstance(gradient, tf.IndexedSlices)
                or not isinstance(variable, tf.Variable)):
            return super().update_step(gradient, variable, learning_rate)
        momentum = momentum_of(self, variable)
        dtype = variable.dtype
        tf.raw_ops.ResourceApplyKerasMomentum(
            var=variable.handle, accum=momentum.value.handle,
            lr=tf.cast(learning_rate, dtype), grad=tf.cast(gradient, dtype),
            momentum=tf.cast(self.momentum, dtype), use_locking=False, use_nesterov=False)


def _clip_summed_gradient(optimizer: L2SGD, grads: list, keras_clip) -> list:
    """L2SGD's gradient clipping (see :func:`aca_keras._internals.clips_gradients_with`).

    Keras clips each replica's gradient before summing them across replicas; under a
    strategy the global norm must be that of the summed gradient: sum here, clip, and hand on
    1/replicas of it (Keras's own sum then restores the clipped total). Keras's clipping
    everywhere else."""
    context = tf.distribute.get_replica_context()
    if (optimizer.global_clipnorm and context is not None
            and context.num_replicas_in_sync > 1):
        total = dist.all_reduce_sum(grads)
        clipped, _ = tf.clip_by_global_norm(total, optimizer.global_clipnorm)
        count = float(context.num_replicas_in_sync)
        return [None if g is None else g / count for g in clipped]
    return keras_clip(grads)


@keras.saving.register_keras_serializable(package=_PACKAGE)
@internals.clips_gradients_with(_clip_summed_gradient)
class L2SGD(MomentumSGD):
    """SGD with coupled L2 weight decay, as ``torch.optim.SGD(weight_decay=...)``.

    ``l2 * w`` is added to each (already clipped) gradient before the momentum update, so the
    decay goes through the momentum buffer. All other arguments are Keras SGD's.

    Args:
        l2: the coupled weight decay coefficient (DARTS: 3e-4).
    """

    def __init__(self, learning_rate=0.01, momentum: float = 0.0, l2: float = 0.0, **kwargs):
        super().__init__(learning_rate=learning_rate, momentum=float(momentum), **kwargs)
        if l2 < 0:
            raise ValueError(f"l2 must be >= 0, got {l2}")
        self.l2 = float(l2)

    def update_step(self, gradient, variable, learning_rate):
        if self.l2:
            gradient = keras.ops.add(
                keras.ops.cast(gradient, variable.dtype),
                keras.ops.multiply(keras.ops.cast(self.l2, variable.dtype), variable))
        super().update_step(gradient, variable, learning_rate)

    def get_config(self):
        return {**super().get_config(), "l2": self.l2}
