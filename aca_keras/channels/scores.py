"""Channel scores: what channel importance produces and channel allocation consumes."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from aca_keras.errors import ArchitectureError

__all__ = ["ChannelScores", "check_weight"]


@dataclass(frozen=True, eq=False)
class ChannelScores:
    """Per-channel importance scores of the kept edges of both cell types.

    Attributes:
        normal: one array of shape ``(C,)`` per kept edge, in ``Architecture.normal.edges``
            order. Stored as read-only float64 copies.
        reduce: the same for the reduction cell.
        normal_weights: the chosen operation's softmax weight per kept normal edge.
        reduce_weights: the same for the reduction cell.
        scorer: name of the scorer that produced the scores.
        pooling: name of the rule that combined the occurrences of a cell type.
        divide_weight: whether each edge's scores were divided by its operation's weight.

    Compared by identity (it holds arrays).
    """

    normal: tuple[np.ndarray, ...]
    reduce: tuple[np.ndarray, ...]
    normal_weights: tuple[float, ...]
    reduce_weights: tuple[float, ...]
    scorer: str = "taylor"
    pooling: str = "index"
    divide_weight: bool = False

    def __post_init__(self) -> None:
        for cell in ("normal", "reduce"):
            arrays = tuple(_score_array(s, f"{cell}[{k}]")
                           for k, s in enumerate(getattr(self, cell)))
            weights = tuple(check_weight(w, f"{cell}_weights[{k}]")
                            for k, w in enumerate(getattr(self, f"{cell}_weights")))
            if len(weights) != len(arrays):
                raise ArchitectureError(
                    f"ChannelScores has {len(arrays)} {cell} score arrays but {len(weights)} "
                    f"{cell}_weights; give one operation weight per kept edge.")
            object.__setattr__(self, cell, arrays)
            object.__setattr__(self, f"{cell}_weights", weights)
        if not isinstance(self.scorer, str):
            raise ArchitectureError(f"scorer must be a name, got {self.scorer!r}")


def _score_array(scores: Any, where: str) -> np.ndarray:
    try:
        a = np.array(scores, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise ArchitectureError(f"channel scores {where} must be numeric: {exc}") from None
    if a.ndim != 1 or a.size == 0:
        raise ArchitectureError(
            f"channel scores {where} must have shape (C,), got shape {a.shape}")
    if not np.all(np.isfinite(a)):
        raise ArchitectureError(
            f"channel scores {where} contain NaN or Inf; the scored supernet or batches are "
            "broken (check the search run for divergence).")
    a.setflags(write=False)
    return a


def check_weight(w: Any, where: str) -> float:
    """A finite, non-negative operation weight as a float (else :class:`ArchitectureError`)."""
    try:
        value = float(w)
    except (TypeError, ValueError):
        raise ArchitectureError(f"{where} must be a number, got {w!r}") from None
    if not math.isfinite(value) or value < 0:
        raise ArchitectureError(f"{where} must be finite and >= 0, got {value}")
    return value
