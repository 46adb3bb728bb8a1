"""The run directory: the one place that knows its file names.

A search (:func:`aca_keras.search`) writes a run directory; ``aca-train`` adds the trained
model and its history; ``aca-export`` and the zoo read it. Every module asks a
:class:`RunDir` for a file instead of spelling its name.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class RunDir:
    """Paths of the files of one run directory (nothing is read or created here).

    Attributes:
        path: the directory.
    """

    path: Path

    # search
    CONFIG = "config.json"
    HISTORY = "history.csv"
    ALPHAS = "alphas.jsonl"
    CHECKPOINT = "checkpoint.npz"
    GENOTYPE = "genotype.json"
    ARCHITECTURE = "architecture.json"
    MODEL = "model.keras"
    CELL_PICTURES = {"normal": "cell_normal.png", "reduce": "cell_reduce.png"}
    ALPHAS_PICTURE = "alphas.png"
    COLLAPSE_PICTURE = "collapse.png"
    # evaluation-stage training
    TRAIN_CONFIG = "train_config.json"
    TRAIN_HISTORY = "train_history.csv"
    TRAIN_RESULT = "train_result.json"
    TRAIN_CHECKPOINT_DIR = "train_checkpoint"
    TRAINED_MODEL = "trained.keras"
    # deployment
    EXPORT_DIR = "export"

    def __init__(self, path: str | os.PathLike) -> None:
        object.__setattr__(self, "path", Path(path))

    def __fspath__(self) -> str:
        return os.fspath(self.path)

    # ------------------------------------------------------------------------------ search

    @property
    def config(self) -> Path:
        """Every setting of the search (``SearchConfig``), the seed and the versions."""
        return self.path / self.CONFIG

    @property
    def history(self) -> Path:
        """Per-epoch search metrics (CSV, epochs from 1)."""
        return self.path / self.HISTORY

    @property
    def alphas(self) -> Path:
        """One JSON line per search epoch: alphas, genotype, metrics, collapse monitor."""
        return self.path / self.ALPHAS

    @property
    def checkpoint(self) -> Path:
        """The search's exact checkpoint (all variables and optimiser states)."""
        return self.path / self.CHECKPOINT

    def snapshot(self, epoch: int) -> Path:
        """A copy of the search checkpoint taken after ``epoch`` (studies)."""
        return self.path / f"checkpoint-e{int(epoch)}.npz"

    @property
    def genotype(self) -> Path:
        return self.path / self.GENOTYPE

    @property
    def architecture(self) -> Path:
        return self.path / self.ARCHITECTURE

    @property
    def model(self) -> Path:
        """The derived model as built by the search (untrained)."""
        return self.path / self.MODEL

    def cell_picture(self, cell: str) -> Path:
        return self.path / self.CELL_PICTURES[cell]

    @property
    def alphas_picture(self) -> Path:
        return self.path / self.ALPHAS_PICTURE

    @property
    def collapse_picture(self) -> Path:
        return self.path / self.COLLAPSE_PICTURE

    # ---------------------------------------------------------------------------- training

    @property
    def train_config(self) -> Path:
        return self.path / self.TRAIN_CONFIG

    @property
    def train_history(self) -> Path:
        return self.path / self.TRAIN_HISTORY

    @property
    def train_result(self) -> Path:
        return self.path / self.TRAIN_RESULT

    @property
    def train_checkpoint_dir(self) -> Path:
        return self.path / self.TRAIN_CHECKPOINT_DIR

    @property
    def train_checkpoint(self) -> Path:
        return self.train_checkpoint_dir / self.CHECKPOINT

    @property
    def trained_model(self) -> Path:
        return self.path / self.TRAINED_MODEL

    # -------------------------------------------------------------------------- deployment

    @property
    def export_dir(self) -> Path:
        """Where ``aca-export RUN_DIR`` writes its files by default."""
        return self.path / self.EXPORT_DIR

    # ------------------------------------------------------------------------------ queries

    def holds_search(self) -> bool:
        """Whether a search was started here (its ``config.json`` exists)."""
        return self.config.is_file()

    def best_model(self) -> Path | None:
        """The trained model when there is one, else the search's model, else ``None``."""
        for path in (self.trained_model, self.model):
            if path.is_file():
                return path
        return None
