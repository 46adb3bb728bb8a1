"""Evaluation-stage training of a derived network (DARTS's recipe), with checkpoint/resume.

The implementation lives in :mod:`aca_keras.training.trainer` (the loop, checkpoints, run
directories) and :mod:`aca_keras.training.compiling` (the losses and metrics, shared with the
tuner); this package exports their public names (:class:`L2SGD` lives in
:mod:`aca_keras.optimizers`). The run directory's file names are
:class:`aca_keras.io.run_dir.RunDir`'s."""

from __future__ import annotations

from aca_keras.optimizers import L2SGD
from aca_keras.training.compiling import compile_derived
from aca_keras.training.trainer import TrainResult, effective_cutout, evaluate, train, train_run

__all__ = ["L2SGD", "TrainResult", "compile_derived", "effective_cutout", "evaluate", "train",
           "train_run"]
