"""Channel layers: ShuffleNet's channel shuffle (PC-DARTS's partial-channel edges)."""

from __future__ import annotations

import keras
import numpy as np

_PACKAGE = "aca_keras"


def shuffle_permutation(channels: int, groups: int) -> np.ndarray:
    """The channel permutation of :class:`ChannelShuffle`: output channel ``i`` is input
    channel ``perm[i]``. Input channels are viewed as ``(groups, channels // groups)``, the two
    axes are swapped and flattened, so input channel ``g * (channels // groups) + j`` goes to
    output position ``j * groups + g``."""
    if groups < 1 or channels % groups:
        raise ValueError(f"channels ({channels}) must be a multiple of groups ({groups})")
    return np.arange(channels).reshape(groups, channels // groups).T.reshape(-1)


@keras.saving.register_keras_serializable(package=_PACKAGE)
class ChannelShuffle(keras.layers.Layer):
    """ShuffleNet's channel shuffle of an NHWC tensor with ``groups`` groups (a permutation).

    Args:
        groups: number of groups; the channel count must be a multiple of it.
    """

    def __init__(self, groups: int, **kwargs):
        super().__init__(**kwargs)
        if groups < 1:
            raise ValueError(f"groups must be >= 1, got {groups}")
        self.groups = groups

    def build(self, input_shape):
        channels = input_shape[-1]
        if channels is not None and channels % self.groups:
            raise ValueError(f"ChannelShuffle: {channels} channels are not a multiple of "
                             f"groups={self.groups}")
        self.built = True

    def call(self, inputs):
        if self.groups == 1:
            return inputs
        shape = keras.ops.shape(inputs)
        channels = inputs.shape[-1]
        x = keras.ops.reshape(inputs, (shape[0], shape[1], shape[2], self.groups,
                                       channels // self.groups))
        x = keras.ops.transpose(x, (0, 1, 2, 4, 3))
        return keras.ops.reshape(x, (shape[0], shape[1], shape[2], channels))

    def compute_output_shape(self, input_shape):
        return tuple(input_shape)

    def get_config(self):
        return {**super().get_config(), "groups": self.groups}
