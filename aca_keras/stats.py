"""Statistics for comparing classifiers measured on the same images.

Pure Python and NumPy: importing it loads neither TensorFlow nor SciPy (the package
itself is installed with TensorFlow). Shared by the zoo's metric check
(:func:`aca_keras.zoo.verify`), the collapse study (``studies/collapse.py``) and the zoo's
CIFAR-10 entry tool (``zoo/tools/make_cifar10_entries.py``):

- :func:`wilson_interval`: the Wilson score interval of one accuracy;
- :func:`discordant_counts` and :func:`mcnemar_exact`: the exact McNemar test of two
  classifiers on the same images, from their per-image correctness;
- :func:`binomial_two_sided`: the exact two-sided binomial test at p = 1/2 it rests on;
- :func:`student_t_cdf`, :func:`student_t_quantile` and :func:`t_interval`: Student's t
  (integer degrees of freedom, exact) and the t-interval of a mean over a few values, such as
  one difference per seed;
- :func:`holm`: Holm's step-down adjustment of several p-values (a family-wise error rate
  over several candidates compared with one reference, as the allocation study does).
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np

#: ``z`` of a two-sided 95 % normal interval (the 0.975 quantile of the standard normal).
Z_95 = 1.959963984540054

__all__ = ["Z_95", "McNemar", "binomial_two_sided", "discordant_counts", "holm",
           "mcnemar_exact", "student_t_cdf", "student_t_quantile", "t_interval",
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


def _check_df(df) -> int:
    if isinstance(df, bool) or not isinstance(df, (int, np.integer)) or df < 1:
        raise ValueError(f"degrees of freedom must be a positive integer, got {df!r}")
    return int(df)


def student_t_cdf(t: float, df: int) -> float:
    """``P(T <= t)`` for Student's t with ``df`` (a positive integer) degrees of freedom.

    Exact: the finite series of Abramowitz and Stegun 26.7.3 (odd ``df``) and 26.7.4 (even
    ``df``) in ``theta = atan(|t| / sqrt(df))``, all of whose terms are positive.
    """
    df = _check_df(df)
    t = float(t)
    if math.isnan(t):
        raise ValueError("t is NaN")
    if t == 0.0:
        return 0.5
    theta = math.atan(abs(t) / math.sqrt(df))
    sin, cos = math.sin(theta), math.cos(theta)
    cos2 = cos * cos
    if df % 2:  # A = 2/pi [theta + sin (cos + 2/3 cos^3 + ... + 2.4..(df-3)/1.3..(df-2) cos^(df-2))]
        series = 0.0
        if df > 1:
            term = series = cos
            for k in range(1, (df - 1) // 2):
                term *= cos2 * (2 * k) / (2 * k + 1)
                series += term
        inside = 2.0 / math.pi * (theta + sin * series)
    else:  # A = sin [1 + 1/2 cos^2 + 1.3/2.4 cos^4 + ... + 1.3..(df-3)/2.4..(df-2) cos^(df-2)]
        term = series = 1.0
        for k in range(1, df // 2):
            term *= cos2 * (2 * k - 1) / (2 * k)
            series += term
        inside = sin * series
    inside = min(1.0, inside)  # A = P(|T| <= |t|)
    return 0.5 + 0.5 * inside if t > 0 else 0.5 - 0.5 * inside


def student_t_quantile(p: float, df: int) -> float:
    """The ``p`` quantile of Student's t with ``df`` (a positive integer) degrees of freedom:
    :func:`student_t_cdf` inverted by bisection to the last bits of a double.

    ``student_t_quantile(0.975, 2)`` is 4.3027, the factor of a 95 % interval over 3 values.
    """
    df = _check_df(df)
    p = float(p)
    if not 0.0 < p < 1.0:
        raise ValueError(f"p must lie strictly between 0 and 1, got {p}")
    if p == 0.5:
        return 0.0
    if p < 0.5:
        return -student_t_quantile(1.0 - p, df)
    low, high = 0.0, 1.0
    while student_t_cdf(high, df) < p:
        low, high = high, 2.0 * high
        if high > 1e300:
            raise ValueError(f"the {p} quantile of t with {df} degrees of freedom is out of range")
    for _ in range(2000):
        middle = 0.5 * (low + high)
        if middle in (low, high):
            break
        if student_t_cdf(middle, df) < p:
            low = middle
        else:
            high = middle
    return high


def t_interval(values, level: float = 0.95) -> tuple[float, float, float]:
    """``(mean, low, high)``: the Student-t interval of the mean of ``values``.

    ``mean +/- t * sd / sqrt(n)`` with the sample standard deviation (``n - 1`` in the
    denominator) and ``t`` the ``(1 + level) / 2`` quantile with ``n - 1`` degrees of freedom.
    It treats the values (e.g. one accuracy difference per seed) as the sample, so it holds
    their spread, whatever the number of test images behind each. Needs at least 2 finite
    values; identical values give a zero-width interval.
    """
    data = np.asarray(values, dtype=np.float64).ravel()
    if data.size < 2:
        raise ValueError(f"a t-interval needs at least 2 values, got {data.size}")
    if not np.all(np.isfinite(data)):
        raise ValueError("values must be finite")
    if not 0.0 < level < 1.0:
        raise ValueError(f"level must lie strictly between 0 and 1, got {level}")
    mean = float(data.mean())
    half = (student_t_quantile((1.0 + level) / 2.0, data.size - 1)
            * float(data.std(ddof=1)) / math.sqrt(data.size))
    return mean, mean - half, mean + half


def holm(p_values) -> list[float]:
    """Holm's step-down adjusted p-values, in the order given.

    With the ``m`` p-values sorted, ``p_(1) <= ... <= p_(m)``, the ``i``-th smallest is
    adjusted to ``max over j <= i of min(1, (m - j + 1) p_(j))``; rejecting every hypothesis
    whose adjusted p-value is below ``alpha`` keeps the family-wise error rate at ``alpha``
    (Holm 1979), whatever the dependence between the tests. Equal p-values get equal
    adjusted values. An empty sequence gives ``[]``.
    """
    values = [float(p) for p in p_values]
    for p in values:
        if not 0.0 <= p <= 1.0:  # NaN fails too
            raise ValueError(f"p-values must lie in [0, 1], got {p}")
    m = len(values)
    adjusted = [0.0] * m
    running = 0.0
    for rank, index in enumerate(sorted(range(m), key=lambda i: values[i])):
        running = max(running, min(1.0, (m - rank) * values[index]))
        adjusted[index] = running
    return adjusted
