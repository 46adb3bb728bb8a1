"""Evaluation-stage training of a derived network (DARTS's recipe), with checkpoint/resume.

The implementation lives in :mod:`aca_keras.training.trainer`; this package exports its public
names."""

from __future__ import annotations

from aca_keras.training.trainer import (  # noqa: F401
    CHECKPOINT_DIR,
    HISTORY_FILE,
    L2SGD,
    TRAINED_MODEL_FILE,
    TrainResult,
    effective_cutout,
    evaluate,
    train,
    train_run,
)

__all__ = ["CHECKPOINT_DIR", "HISTORY_FILE", "L2SGD", "TrainResult", "TRAINED_MODEL_FILE", "effective_cutout", "evaluate", "train", "train_run"]
