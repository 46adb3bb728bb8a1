"""One compile recipe for the derived network (:func:`aca_keras.training.compile_derived`),
used by :func:`aca_keras.train` and by the keras-tuner hypermodel: the compiled loss is the
hand-computed ``CE(logits) + auxiliary_weight * CE(aux_logits)`` (``CE(logits)`` without the
auxiliary head), the main accuracy is logged as ``logits_accuracy`` either way, and the
optimiser is built at once."""

from __future__ import annotations

import keras
import numpy as np
import pytest

from aca_keras.models.derived import build_model
from aca_keras.optimizers import L2SGD
from aca_keras.space.architecture import Architecture, CellSpec, EdgeSpec
from aca_keras.training import compile_derived
from aca_keras.training.compiling import ACCURACY

OPS = ("none", "max_pool_3x3", "avg_pool_3x3", "sep_conv_3x3", "sep_conv_5x5", "dil_conv_3x3",
       "dil_conv_5x5")
CELL = CellSpec((EdgeSpec(0, 0, "sep_conv_3x3", 2), EdgeSpec(0, 1, "max_pool_3x3", 4)), (2,))
ARCH = Architecture(CELL, CELL, 4, OPS)


def _model(auxiliary: bool, auxiliary_weight: float = 0.4):
    keras.utils.set_random_seed(3)
    return build_model(ARCH, (8, 8, 3), 5, cells=3, channels=4, auxiliary=auxiliary,
                       auxiliary_weight=auxiliary_weight, drop_path=0.0)


def _batch():
    rng = np.random.default_rng(4)
    return (rng.uniform(0, 255, (6, 8, 8, 3)).astype("float32"),
            rng.integers(0, 5, (6,)).astype("int32"))


def _cross_entropy(y, logits) -> float:
    logits = np.asarray(logits, np.float64)
    shifted = logits - logits.max(axis=1, keepdims=True)
    log_softmax = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
    return float(-log_softmax[np.arange(len(y)), y].mean())


@pytest.mark.parametrize("auxiliary_weight, expected_weight", [(0.3, 0.3), (None, 0.6)])
def test_auxiliary_loss_is_the_weighted_sum(auxiliary_weight, expected_weight):
    model = _model(auxiliary=True, auxiliary_weight=0.6)
    optimizer = L2SGD(learning_rate=0.01, momentum=0.9, l2=3e-4)
    assert compile_derived(model, optimizer, auxiliary_weight) is model
    assert optimizer.built and optimizer.variables  # built at once, for checkpoints
    x, y = _batch()
    logits, aux_logits = (keras.ops.convert_to_numpy(t) for t in model(x, training=False))
    results = model.evaluate(x, {"logits": y, "aux_logits": y}, batch_size=len(y), verbose=0,
                             return_dict=True)
    main, aux = _cross_entropy(y, logits), _cross_entropy(y, aux_logits)
    assert results["loss"] == pytest.approx(main + expected_weight * aux, rel=1e-5)
    assert results["logits_loss"] == pytest.approx(main, rel=1e-5)
    assert results["aux_logits_loss"] == pytest.approx(aux, rel=1e-5)
    accuracy = float(np.mean(np.argmax(logits, axis=1) == y))
    assert results[ACCURACY] == pytest.approx(accuracy)


def test_loss_without_the_auxiliary_head_is_the_logits_cross_entropy():
    model = _model(auxiliary=False)
    optimizer = L2SGD(learning_rate=0.01, momentum=0.9, l2=3e-4)
    compile_derived(model, optimizer, auxiliary_weight=0.7)  # ignored without the head
    assert optimizer.built
    x, y = _batch()
    logits = keras.ops.convert_to_numpy(model(x, training=False))
    results = model.evaluate(x, y, batch_size=len(y), verbose=0, return_dict=True)
    assert results["loss"] == pytest.approx(_cross_entropy(y, logits), rel=1e-5)
    assert sorted(results) == sorted(["loss", ACCURACY])  # the same name as with the head
    assert results[ACCURACY] == pytest.approx(float(np.mean(np.argmax(logits, 1) == y)))


def test_the_trainer_and_the_hypermodel_use_it(monkeypatch):
    from aca_keras.training import trainer
    from aca_keras.tuning import hypermodel

    assert trainer.compile_derived is compile_derived
    assert not hasattr(trainer, "_compile")  # no second copy of the recipe
    calls = []

    def spy(model, optimizer, auxiliary_weight=None, jit_compile=False):
        calls.append((model, auxiliary_weight))
        return compile_derived(model, optimizer, auxiliary_weight, jit_compile=jit_compile)

    monkeypatch.setattr(hypermodel, "compile_derived", spy)
    import keras_tuner as kt

    hm = hypermodel.DerivedHyperModel(ARCH, (8, 8, 3), 5, cells=3, channels=4, drop_path=0.0,
                                      learning_rate=0.01, weight_decay=3e-4,
                                      auxiliary_weight=0.2)
    model = hm.build(kt.HyperParameters())
    assert calls == [(model, 0.2)]
    assert hypermodel.OBJECTIVE == f"val_{ACCURACY}"
