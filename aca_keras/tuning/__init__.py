"""keras-tuner integration: tune the evaluation stage and the search itself.

The implementation lives in :mod:`aca_keras.tuning.tuner`; this package exports its public
names."""

from __future__ import annotations

from aca_keras.tuning.tuner import (  # noqa: F401
    DEFAULT_SEARCH_SETTINGS,
    DEFAULT_TRAIN_SETTINGS,
    OBJECTIVE,
    SEARCH_OBJECTIVE,
    DerivedHyperModel,
    SearchSpace,
    SearchTuner,
    available_variants,
)

__all__ = ["DEFAULT_SEARCH_SETTINGS", "DEFAULT_TRAIN_SETTINGS", "OBJECTIVE", "SEARCH_OBJECTIVE", "DerivedHyperModel", "SearchSpace", "SearchTuner", "available_variants"]
