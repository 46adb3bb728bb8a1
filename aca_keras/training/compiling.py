"""How a derived network is compiled for training: the one recipe that :func:`aca_keras.train`
and the keras-tuner hypermodel (:mod:`aca_keras.tuning.hypermodel`) share.

* sparse categorical cross-entropy on the logits;
* with the auxiliary head (outputs ``[logits, aux_logits]``), DARTS's weighted sum
  ``loss = CE(logits) + auxiliary_weight * CE(aux_logits)``;
* the main output's accuracy, logged as ``logits_accuracy`` with and without the auxiliary
  head (``val_logits_accuracy`` on validation data);
* the optimiser's variables created at once (``optimizer.build``), so that a checkpoint or
  saved weights restore it whole before the first step.
"""

from __future__ import annotations

from typing import Any

import keras

__all__ = ["ACCURACY", "compile_derived"]

#: The name under which the main output's accuracy is logged (with and without the auxiliary
#: head).
ACCURACY = "logits_accuracy"


def compile_derived(model: Any, optimizer: keras.optimizers.Optimizer,
                    auxiliary_weight: float | None = None,
                    jit_compile: bool | str = False) -> Any:
    """Compile a :class:`~aca_keras.models.derived.DerivedNetwork` for training.

    Args:
        model: the derived network (``model.auxiliary`` tells whether it has the auxiliary
            head, output ``aux_logits``).
        optimizer: the weight optimiser (e.g. :class:`~aca_keras.optimizers.L2SGD`); it is
            built on the model's trainable variables.
        auxiliary_weight: weight of the auxiliary loss; ``None`` takes the model's
            ``auxiliary_weight`` (0.4 by default). Ignored without the auxiliary head.
        jit_compile: passed to ``model.compile`` (``False``, ``True`` or ``"auto"``).

    Returns:
        ``model``, compiled.
    """
    if getattr(model, "auxiliary", False):
        weight = float(model.auxiliary_weight if auxiliary_weight is None else auxiliary_weight)
        model.compile(
            optimizer=optimizer,
            loss={"logits": keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  "aux_logits": keras.losses.SparseCategoricalCrossentropy(from_logits=True)},
            loss_weights={"logits": 1.0, "aux_logits": weight},
            # Keras prefixes the output name: logged as logits_accuracy
            metrics={"logits": [keras.metrics.SparseCategoricalAccuracy(name="accuracy")]},
            jit_compile=jit_compile)
    else:
        model.compile(
            optimizer=optimizer,
            loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
            metrics=[keras.metrics.SparseCategoricalAccuracy(name=ACCURACY)],
            jit_compile=jit_compile)
    optimizer.build(model.trainable_variables)
    return model
