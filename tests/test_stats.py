"""aca_keras.stats: exact McNemar, binomial and Wilson values checked by hand and by SciPy."""

from __future__ import annotations

import math

import numpy as np
import pytest

from aca_keras import stats


def test_binomial_two_sided_small_values_by_hand():
    assert stats.binomial_two_sided(0, 0) == 1.0
    assert stats.binomial_two_sided(3, 6) == 1.0  # 2 * 42 / 64 > 1, capped
    assert stats.binomial_two_sided(6, 12) == 1.0
    assert stats.binomial_two_sided(0, 10) == pytest.approx(2 / 1024)
    assert stats.binomial_two_sided(10, 10) == pytest.approx(2 / 1024)
    # 2 * P(X <= 2), X ~ Binomial(12, 1/2)
    assert stats.binomial_two_sided(2, 12) == pytest.approx(2 * (1 + 12 + 66) / 4096)


def test_binomial_two_sided_is_exact_for_large_n_and_matches_scipy():
    # scipy.stats.binomtest(2400, 4900).pvalue = 0.157270969765770
    assert stats.binomial_two_sided(2500, 4900) == pytest.approx(0.15727096976577, rel=1e-12)
    assert stats.binomial_two_sided(2400, 4900) == stats.binomial_two_sided(2500, 4900)
    scipy_stats = pytest.importorskip("scipy.stats")
    for k, n in [(1, 7), (40, 100), (450, 1000), (4900, 10_000), (120, 300)]:
        expected = scipy_stats.binomtest(k, n, 0.5).pvalue
        assert stats.binomial_two_sided(k, n) == pytest.approx(expected, rel=1e-9), (k, n)


def test_binomial_two_sided_rejects_impossible_counts():
    with pytest.raises(ValueError, match="0 <= k <= n"):
        stats.binomial_two_sided(5, 4)
    with pytest.raises(ValueError, match="0 <= k <= n"):
        stats.binomial_two_sided(-1, 4)


def test_mcnemar_from_correctness_by_hand():
    # 10 images only A gets right, 2 only B, 50 both, 38 neither
    a = np.array([1] * 10 + [0] * 2 + [1] * 50 + [0] * 38, dtype=bool)
    b = np.array([0] * 10 + [1] * 2 + [1] * 50 + [0] * 38, dtype=bool)
    result = stats.mcnemar_exact(a, b)
    expected = 2 * sum(math.comb(12, k) for k in range(3)) / 2**12
    assert (result.b, result.c) == (10, 2)
    assert result.p_value == pytest.approx(expected) == pytest.approx(0.0386, abs=1e-4)
    swapped = stats.mcnemar_exact(b, a)
    assert (swapped.b, swapped.c, swapped.p_value) == (2, 10, result.p_value)
    assert stats.mcnemar_exact(a, a) == (0, 0, 1.0)
    # seeds x images: the discordant images of every seed count together
    two = stats.mcnemar_exact(np.stack([a, a]), np.stack([b, a]))
    assert (two.b, two.c) == (10, 2)


def test_mcnemar_refuses_unpaired_results():
    with pytest.raises(ValueError, match="unpaired"):
        stats.mcnemar_exact([True, False], [True, False, True])


def test_wilson_interval_by_hand():
    z = stats.Z_95
    centre = (0.8 + z * z / 20) / (1 + z * z / 10)
    half = z / (1 + z * z / 10) * math.sqrt(0.8 * 0.2 / 10 + z * z / 400)
    assert stats.wilson_interval(8, 10) == pytest.approx((centre - half, centre + half))
    assert stats.wilson_interval(8, 10) == pytest.approx((0.49016, 0.94332), abs=1e-5)
    low, high = stats.wilson_interval(0, 20)
    assert low == 0.0 and 0.0 < high < 0.2
    assert stats.wilson_interval(20, 20)[1] == 1.0
    # wider with more sigmas, narrower with more images
    assert stats.wilson_interval(8, 10, z=3.0)[0] < stats.wilson_interval(8, 10)[0]
    assert stats.wilson_interval(800, 1000)[0] > stats.wilson_interval(8, 10)[0]


def test_wilson_interval_rejects_bad_counts():
    with pytest.raises(ValueError, match="total must be positive"):
        stats.wilson_interval(0, 0)
    with pytest.raises(ValueError, match=r"\[0, total\]"):
        stats.wilson_interval(11, 10)


def test_stats_imports_no_tensorflow():
    import subprocess
    import sys

    code = ("import sys; import aca_keras.stats; "
            "print('tensorflow' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True)
    assert out.stdout.strip() == "False"
