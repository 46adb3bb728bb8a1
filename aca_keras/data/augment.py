"""Batch augmentation from stateless random ops: pad-and-crop, horizontal flip, cutout.

Every draw comes from a key passed in (:mod:`aca_keras.data.pipelines` derives it from
``(seed, epoch, step in epoch)``), so the same key gives the same augmented batch.
"""

from __future__ import annotations

import tensorflow as tf

__all__ = ["augment_batch", "crop_padding"]


def crop_padding(height: int, width: int) -> int:
    """Pixels of zero padding on each side for pad-and-crop: an eighth of the shorter side,
    at least 1 (4 for 32x32 images, as DARTS pads CIFAR)."""
    return max(1, min(height, width) // 8)


def augment_batch(x: tf.Tensor, key: tf.Tensor, pad: int, flip: bool, cutout: int) -> tf.Tensor:
    """Pad-and-crop, horizontal flip and cutout of a batch, all from stateless ops."""
    batch, height, width = int(x.shape[0]), int(x.shape[1]), int(x.shape[2])
    keys = tf.random.experimental.stateless_split(key, 5)
    if pad:
        padded = tf.pad(x, [[0, 0], [pad, pad], [pad, pad], [0, 0]])
        dy = tf.random.stateless_uniform([batch], seed=keys[0], minval=0, maxval=2 * pad + 1,
                                         dtype=tf.int32)
        dx = tf.random.stateless_uniform([batch], seed=keys[1], minval=0, maxval=2 * pad + 1,
                                         dtype=tf.int32)
        rows = dy[:, None] + tf.range(height)[None, :]
        cols = dx[:, None] + tf.range(width)[None, :]
        x = tf.gather(padded, rows, axis=1, batch_dims=1)
        x = tf.gather(x, cols, axis=2, batch_dims=1)
    if flip:
        mirror = tf.random.stateless_uniform([batch], seed=keys[2]) < 0.5
        x = tf.where(mirror[:, None, None, None], tf.reverse(x, axis=[2]), x)
    if cutout:
        cy = tf.random.stateless_uniform([batch], seed=keys[3], minval=0, maxval=height,
                                         dtype=tf.int32)
        cx = tf.random.stateless_uniform([batch], seed=keys[4], minval=0, maxval=width,
                                         dtype=tf.int32)
        top = cy - cutout // 2
        left = cx - cutout // 2
        r = tf.range(height)[None, :]
        c = tf.range(width)[None, :]
        in_rows = (r >= top[:, None]) & (r < top[:, None] + cutout)
        in_cols = (c >= left[:, None]) & (c < left[:, None] + cutout)
        hole = in_rows[:, :, None] & in_cols[:, None, :]
        x = tf.where(hole[..., None], tf.zeros_like(x), x)
    return x
