"""The ``sdarts_rs`` search variant: SDARTS-RS, DARTS with randomly smoothed architecture weights.

Source: Xiangning Chen and Cho-Jui Hsieh, "Stabilizing Differentiable Architecture Search via
Perturbation-based Regularization", ICML 2020 (arXiv:2002.05283), the random-smoothing form
(SDARTS-RS); the authors' code is https://github.com/xiangning-chen/SmoothDARTS
(``sota/cnn/train_search.py``, ``Random_alpha``, ``Network.clip``).

**The rule.** SDARTS-RS trains the weights on the expected training loss under a random
perturbation of the architecture, ``min_w E_{delta ~ U[-epsilon, epsilon]} L_train(w, A +
delta)``, one sample of ``delta`` per step, and updates the architecture exactly as DARTS does,
on the unperturbed architecture. ``A`` is the softmaxed alphas: the mixing weights of the mixed
edges. The perturbation smooths the validation loss landscape in the alphas (the paper shows
it implicitly regularises the Hessian norm), which keeps DARTS from collapsing onto
parameter-free operations.

**What is implemented.** In each search step, in the order of :mod:`aca_keras.models.bilevel`
(architecture step, then weight step):

* the architecture step (first or second order) is DARTS's, on the unperturbed alphas;
* the weight step's forward pass uses, for each cell type, the mixing weights
  ``W = clip(softmax(alpha) + delta)``, ``delta = epsilon * U``, ``U`` uniform on
  ``[-1, 1]`` of the shape of the alphas, drawn anew in every step, where ``clip`` is the
  authors' ``Network.clip``: clamp each entry to ``[0, 1]``, then divide each edge's row by its
  sum (a row that clamps to all zeros becomes one-hot at its largest perturbed entry). No
  gradient flows into the alphas through ``W`` (the weight step updates the weights only);
* inference, evaluation (``test_step``), the collapse monitor, channel scoring and the
  derivation of the genotype use the unperturbed alphas: only the weight step is perturbed.

``epsilon`` follows the authors' code (the ``--epsilon_alpha`` schedule of
``train_search.py``): in epoch ``e`` (0-based) of ``E``,
``epsilon_e = 0.03 + (perturbation_epsilon - 0.03) * e / E``, with ``perturbation_epsilon``
0.3 by default (their ``--epsilon_alpha``); a ``perturbation_epsilon`` below 0.03 is used
as a constant. The epoch is ``iterations // steps_per_epoch`` of the weight optimiser, so a
resumed search continues the schedule. The noise is drawn statelessly from the pair
``(seed, iterations)`` (``tf.random.stateless_uniform``, ``minval=-1, maxval=1``, one draw of
shape ``(2, num_edges, num_ops)`` for the normal and the reduction cell): the same seed gives
the same search, a resumed one included, and every replica of a distributed search draws the
same noise. The clip and the schedule come from the authors' code, not from the paper's
text; the edge-normalisation betas of PC-DARTS are not perturbed (this variant has none).

The paper's other variant, SDARTS-ADV (an adversarial perturbation found by projected gradient
ascent), is not implemented.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

import keras
import numpy as np
import tensorflow as tf

from aca_keras.models.variant import SearchVariant

__all__ = ["DEFAULT_PERTURBATION_EPSILON", "START_EPSILON", "SDARTSRandomSmoothing",
           "smoothing_clip"]

#: the end of the epsilon ramp (the authors' ``--epsilon_alpha``)
DEFAULT_PERTURBATION_EPSILON = 0.3
#: epsilon in the first epoch (the authors' code)
START_EPSILON = 0.03


def smoothing_clip(perturbed):
    """The authors' ``Network.clip`` of perturbed mixing weights ``(..., num_ops)``: clamp to
    ``[0, 1]``, divide each row by its sum; a row of zeros becomes one-hot at the row's
    largest perturbed entry."""
    clipped = tf.clip_by_value(perturbed, 0.0, 1.0)
    total = tf.reduce_sum(clipped, axis=-1, keepdims=True)
    fallback = tf.one_hot(tf.argmax(perturbed, axis=-1), tf.shape(perturbed)[-1],
                          dtype=perturbed.dtype)
    clipped = tf.where(total > 0, clipped, fallback)
    return clipped / tf.where(total > 0, total, tf.ones_like(total))


@keras.saving.register_keras_serializable(package="aca_keras")
@dataclass(frozen=True)
class SDARTSRandomSmoothing(SearchVariant):
    """SDARTS-RS (Chen & Hsieh, ICML 2020): the weight step sees ``clip(softmax(alpha) +
    delta)``, ``delta ~ U[-epsilon, epsilon]``; see the module docstring for the exact rule.

    Own setting: ``perturbation_epsilon`` (the end of the per-epoch epsilon ramp, default
    :data:`DEFAULT_PERTURBATION_EPSILON`; ``0 < perturbation_epsilon <= 1``).
    """

    name: str = "sdarts_rs"
    description: str = ("SDARTS-RS: the weight step sees alphas perturbed by uniform noise "
                        "(random smoothing)")
    source: str = ("Chen & Hsieh, ICML 2020, 'Stabilizing Differentiable Architecture Search "
                   "via Perturbation-based Regularization'")

    own_settings: ClassVar[Mapping[str, Any]] = {
        "perturbation_epsilon": DEFAULT_PERTURBATION_EPSILON}

    def check_settings(self, settings: Mapping[str, Any]) -> None:
        value = settings["perturbation_epsilon"]
        if (isinstance(value, bool) or not isinstance(value, (int, float))
                or not np.isfinite(value) or not 0 < value <= 1):
            raise ValueError(f"perturbation_epsilon must be a number in (0, 1] (the largest "
                             f"perturbation of a softmaxed alpha), got {value!r}")

    def epsilon(self, epoch):
        """``epsilon`` in epoch ``epoch`` (0-based; a number or a tensor): the ramp from
        :data:`START_EPSILON` to ``perturbation_epsilon`` over ``epochs`` epochs."""
        end = float(self.setting("perturbation_epsilon", DEFAULT_PERTURBATION_EPSILON))
        start = min(START_EPSILON, end)
        epochs = int(self.setting("epochs", 1))
        return start + (end - start) * epoch / epochs

    def noise(self, shape, iteration, dtype="float32"):
        """``U``: uniform on ``[-1, 1]`` of ``shape``, drawn from ``(seed, iteration)``."""
        seed = tf.stack([tf.constant(int(self.setting("seed", 0)), tf.int64),
                         tf.cast(iteration, tf.int64)])
        return tf.random.stateless_uniform(shape, seed=seed, minval=-1.0, maxval=1.0,
                                           dtype=dtype)

    def alpha_transform(self, network, op_weights: tuple, phase: str) -> tuple:
        """The weight step (``phase == "weight"``): ``clip(softmax(alpha) + epsilon * U)``
        for both cell types; the architecture step: unchanged."""
        if phase != "weight":
            return op_weights
        iteration = tf.cast(tf.convert_to_tensor(network.optimizer.iterations), tf.int64)
        steps = self.setting("steps_per_epoch")
        if steps and self.setting("epochs"):
            epoch = tf.cast(iteration // int(steps), tf.float32)
            epsilon = self.epsilon(epoch)
        else:  # not bound to a search's schedule: the end value throughout
            epsilon = tf.constant(float(self.setting("perturbation_epsilon",
                                                     DEFAULT_PERTURBATION_EPSILON)))
        weights = tf.stack(list(op_weights))
        delta = tf.cast(epsilon, weights.dtype) * self.noise(tf.shape(weights), iteration,
                                                             weights.dtype)
        perturbed = tf.stop_gradient(smoothing_clip(weights + delta))
        return perturbed[0], perturbed[1]
