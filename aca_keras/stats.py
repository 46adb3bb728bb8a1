"""Statistics for comparing classifiers measured on the same images.

Pure Python and NumPy: importing it loads neither TensorFlow nor SciPy (the package
itself is installed with TensorFlow). Shared by the zoo's metric check
(:func:`aca_keras.zoo.verify`), the collapse study (``studies/collapse.py``) and the zoo's
CIFAR-10 entry tool (``zoo/tools/make_cifar10_entries.py``):

- :func:`wilson_interval`: the Wilson score interval of one accuracy;
- :func:`discordant_counts` and :func:`mcnemar_exact`: the exact McNemar test of two
  classifiers on the same images, from their per-image correctness;
- :func:`binomial_two_sided`: the exact two-sided binomial test at p = 1/2 it rests on.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np

#: ``z`` of a two-sided 95 % normal interval (the 0.975 quantile of the standard normal).
Z_95 = 1.959963984540054

__all__ = ["Z_95", "McNemar", "binomial_two_sided", "discordant_counts", "mcnemar_exact",
           "wilson_interval"]


def wilson_interval(correct: int, total: int, z: float = Z_95) -> tuple[float, float]:
    """The Wilson score interval of the proportion ``correct / total``.

    ``z`` is the number of standard deviations (the default gives a 95 % interval). The
    result is clipped to ``[0, 1]``; ``total`` must be positive and ``0 <= correct <= total``.
    """
    if total < 1:
        raise ValueError(f"total must be positive, got {total}")
    if not 0 <= correct <= total:
        raise ValueError(f"correct must lie in [0, total], got {correct} of {total}")
    p = correct / total
    z2 = z * z
    centre = (p + z2 / (2 * total)) / (1 + z2 / total)
    half = z / (1 + z2 / total) * math.sqrt(p * (1 - p) / total + z2 / (4 * total * total))
    return max(0.0, centre - half), min(1.0, centre + half)


def binomial_two_sided(k: int, n: int) -> float:
    """The two-sided p-value of ``k`` successes in ``n`` trials under Binomial(n, 1/2).

    Twice the smaller tail, at most 1, summed in exact integer arithmetic, so it stays exact
    for the tens of thousands of trials a test set gives. ``n = 0`` gives 1.
    """
    if n < 0 or not 0 <= k <= n:
        raise ValueError(f"need 0 <= k <= n, got k = {k}, n = {n}")
    if n == 0:
        return 1.0
    term = tail = 1  # C(n, 0); then C(n, i + 1) = C(n, i) (n - i) / (i + 1), exactly
    for i in range(min(k, n - k)):
        term = term * (n - i) // (i + 1)
        tail += term
    return min(1.0, 2 * tail / 2**n)


class McNemar(NamedTuple):
    """The exact McNemar test of classifiers A and B on the same images."""

    b: int
    """Images only A classifies right."""
    c: int
    """Images only B classifies right."""
    p_value: float
    """Two-sided: ``b`` tested against Binomial(b + c, 1/2)."""


def discordant_counts(correct_a, correct_b) -> tuple[int, int]:
    """``(b, c)``: the images only A gets right and those only B gets right.

    ``correct_a`` and ``correct_b`` are per-image booleans (any shape, the same for both,
    e.g. seeds x images). Raises ``ValueError`` when the shapes differ (unpaired results).
    """
    a = np.asarray(correct_a, dtype=bool)
    b = np.asarray(correct_b, dtype=bool)
    if a.shape != b.shape:
        raise ValueError(f"unpaired correctness arrays: {a.shape} vs {b.shape}; measure both "
                         "classifiers on the same images")
    return int(np.sum(a & ~b)), int(np.sum(~a & b))


def mcnemar_exact(correct_a, correct_b) -> McNemar:
    """The exact McNemar test of two classifiers from their per-image correctness.

    Only the discordant images count: ``b`` (A right, B wrong) and ``c`` (the reverse); under
    the null hypothesis of equal accuracy ``b`` is Binomial(b + c, 1/2).
    """
    b, c = discordant_counts(correct_a, correct_b)
    return McNemar(b, c, binomial_two_sided(b, b + c))
