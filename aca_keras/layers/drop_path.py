"""Drop path (DARTS): randomly drops a whole operation output per example in training."""

from __future__ import annotations

import keras

from aca_keras import distribute as dist

_PACKAGE = "aca_keras"


@keras.saving.register_keras_serializable(package=_PACKAGE)
class DropPath(keras.layers.Layer):
    """Per-sample drop path (DARTS): in training, each sample of the batch is zeroed with
    probability ``rate`` and kept samples are scaled by ``1 / (1 - rate)``; the identity when
    ``training`` is false.

    The current rate lives in a scalar variable that is *not* a layer weight (so it is neither
    counted as a parameter nor saved): :meth:`set_rate` changes it between steps without
    retracing. ``rate`` is the initial value.

    Args:
        rate: initial drop probability, ``0 <= rate < 1``.
        seed: seed of the layer's random generator (``None``: from the global Keras seed).
    """

    def __init__(self, rate: float = 0.0, seed: int | None = None, **kwargs):
        super().__init__(**kwargs)
        check_rate(rate)
        self.rate = float(rate)
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed)
        # Not tracked by Keras (object.__setattr__): the rate is schedule state, not a weight.
        object.__setattr__(self, "_rate_variable", keras.Variable(
            self.rate, dtype="float32", trainable=False, name="drop_path_rate"))

    @property
    def current_rate(self) -> float:
        """The drop probability now in use."""
        return float(keras.ops.convert_to_numpy(self._rate_variable))

    def set_rate(self, rate: float) -> None:
        """Set the drop probability (``0 <= rate < 1``)."""
        check_rate(rate)
        self._rate_variable.assign(float(rate))

    def call(self, inputs, training=None):
        if not training:
            return inputs
        keep = 1.0 - keras.ops.cast(self._rate_variable, inputs.dtype)
        rank = len(inputs.shape)
        batch = keras.ops.shape(inputs)[0]
        # Under a tf.distribute strategy every replica draws the masks of the whole global
        # batch (same seed state) and keeps its own slice: the masks a single device draws.
        replica, replicas = dist.replica_position()
        shape = (batch * replicas,) + (1,) * (rank - 1)
        noise = keras.random.uniform(shape, seed=self.seed_generator, dtype=inputs.dtype)
        if replicas > 1:
            noise = noise[replica * batch:(replica + 1) * batch]
        mask = keras.ops.cast(noise < keep, inputs.dtype)
        return inputs * (mask / keep)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "rate": self.rate, "seed": self.seed}


def check_rate(rate: float) -> None:
    if not 0.0 <= float(rate) < 1.0:
        raise ValueError(f"drop path rate must satisfy 0 <= rate < 1, got {rate}")


# -------------------------------------------------------------------------- the network


