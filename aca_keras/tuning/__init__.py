"""keras-tuner integration: tune the evaluation stage and the search itself.

Two entry points, both plain keras-tuner (https://keras.io/keras_tuner/) objects:

* :class:`DerivedHyperModel` is a ``keras_tuner.HyperModel`` whose ``build(hp)`` builds the
  derived network of a fixed architecture (:func:`aca_keras.build_model`) with tunable
  evaluation settings (cells, channels, drop path, learning rate, weight decay, auxiliary loss
  weight) and compiles it with the DARTS evaluation optimiser. Any tuner (``RandomSearch``,
  ``BayesianOptimization``, ``Hyperband``) tunes it with ``tuner.search(x, y, ...)`` or with
  ``tf.data`` datasets. The objective is the main output's validation accuracy,
  :data:`OBJECTIVE` (``"val_logits_accuracy"``), with or without the auxiliary head.
* :class:`SearchTuner` is a ``keras_tuner.Tuner`` whose trials are whole ACA searches
  (:func:`aca_keras.search`) with tunable search settings (alpha learning rate, operation
  set, allocator, seed, and the search variant where
  :class:`~aca_keras.searching.config.SearchConfig` has one), each scored by a short
  training of its derived network
  (:func:`aca_keras.train`) on a validation split. Every trial writes a normal search run
  directory inside the tuner's project directory.

Every tunable setting is given the same way, as a constructor argument: ``None`` (the default
range), a fixed value, a ``(low, high)`` range or a list of choices (the table is in
:mod:`aca_keras.tuning.hyperparameters`).

Example::

    import keras_tuner as kt
    from aca_keras.tuning import DerivedHyperModel

    hypermodel = DerivedHyperModel(architecture, (32, 32, 3), 10, cells=(8, 14))
    tuner = kt.RandomSearch(hypermodel, objective=hypermodel.objective, max_trials=10)
    tuner.search(x_train, y_train, validation_split=0.2, epochs=20, batch_size=96)

Modules: :mod:`~aca_keras.tuning.hyperparameters` (the value forms above, as keras-tuner
hyperparameters), :mod:`~aca_keras.tuning.hypermodel` (:class:`DerivedHyperModel`),
:mod:`~aca_keras.tuning.space` (:class:`SearchSpace`), :mod:`~aca_keras.tuning.tuner`
(:class:`SearchTuner`).
"""

from __future__ import annotations

from aca_keras.tuning.hypermodel import OBJECTIVE, DerivedHyperModel
from aca_keras.tuning.space import SearchSpace, available_variants
from aca_keras.tuning.tuner import (
    DEFAULT_SEARCH_SETTINGS,
    DEFAULT_TRAIN_SETTINGS,
    SEARCH_OBJECTIVE,
    SearchTuner,
)

__all__ = ["DEFAULT_SEARCH_SETTINGS", "DEFAULT_TRAIN_SETTINGS", "OBJECTIVE", "SEARCH_OBJECTIVE",
           "DerivedHyperModel", "SearchSpace", "SearchTuner", "available_variants"]
