"""Evaluation-stage training of a derived network (DARTS's recipe), with checkpoint/resume.

The implementation lives in :mod:`aca_keras.training.trainer`; this package exports its public
names (:class:`L2SGD` lives in :mod:`aca_keras.optimizers`). The run directory's file names
are :class:`aca_keras.io.run_dir.RunDir`'s."""

from __future__ import annotations

from aca_keras.optimizers import L2SGD
from aca_keras.training.trainer import TrainResult, effective_cutout, evaluate, train, train_run

__all__ = ["L2SGD", "TrainResult", "effective_cutout", "evaluate", "train", "train_run"]
