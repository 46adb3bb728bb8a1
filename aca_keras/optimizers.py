"""Optimisers for the search and the training: Keras's SGD with a fused momentum update.

The DARTS supernet has well over a thousand weight tensors, and Keras's SGD builds about eight
graph operations per tensor and step for its momentum update. :class:`MomentumSGD` applies the
same rule with TensorFlow's fused ``ResourceApplyKerasMomentum`` kernel, one operation per
tensor, which makes the step graph smaller to trace and to instantiate (the first step of a
search) without changing what is computed.
"""

from __future__ import annotations

import keras
import tensorflow as tf

__all__ = ["MomentumSGD"]


@keras.saving.register_keras_serializable(package="aca_keras")
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
        momentum = self.momentums[self._get_variable_index(variable)]
        dtype = variable.dtype
        tf.raw_ops.ResourceApplyKerasMomentum(
            var=variable.handle, accum=momentum.value.handle,
            lr=tf.cast(learning_rate, dtype), grad=tf.cast(gradient, dtype),
            momentum=tf.cast(self.momentum, dtype), use_locking=False, use_nesterov=False)
