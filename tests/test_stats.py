"""aca_keras.stats: exact McNemar, binomial, Wilson and Student-t values checked by hand and by
SciPy."""

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


def test_student_t_cdf_by_hand():
    # df 1 is the Cauchy distribution: P(T <= t) = 1/2 + atan(t) / pi
    for t in (-3.0, -0.5, 0.0, 1.0, 12.0):
        assert stats.student_t_cdf(t, 1) == pytest.approx(0.5 + math.atan(t) / math.pi,
                                                          rel=1e-14)
    # df 2 has the closed form 1/2 + t / (2 sqrt(2 + t^2))
    for t in (-4.0, -1.0, 0.25, 2.0, 40.0):
        assert stats.student_t_cdf(t, 2) == pytest.approx(0.5 + t / (2 * math.sqrt(2 + t * t)),
                                                          rel=1e-14)
    # symmetric, and near the normal for many degrees of freedom
    assert stats.student_t_cdf(-1.3, 7) == pytest.approx(1 - stats.student_t_cdf(1.3, 7))
    assert stats.student_t_cdf(stats.Z_95, 100_000) == pytest.approx(0.975, abs=1e-5)


def test_student_t_quantile_matches_the_tables_and_scipy():
    # t_{0.975} of the printed tables (df 1, 2, 10, 30)
    assert stats.student_t_quantile(0.975, 1) == pytest.approx(12.706204736174698, rel=1e-12)
    assert stats.student_t_quantile(0.975, 2) == pytest.approx(4.302652729749464, rel=1e-12)
    assert stats.student_t_quantile(0.975, 10) == pytest.approx(2.228138851986274, rel=1e-12)
    assert stats.student_t_quantile(0.975, 30) == pytest.approx(2.042272456301238, rel=1e-12)
    assert stats.student_t_quantile(0.5, 4) == 0.0
    assert stats.student_t_quantile(0.025, 2) == -stats.student_t_quantile(0.975, 2)
    scipy_stats = pytest.importorskip("scipy.stats")
    for df in (1, 2, 3, 4, 5, 9, 29, 30, 101):
        for p in (0.6, 0.9, 0.975, 0.995, 0.9995):
            expected = scipy_stats.t.ppf(p, df)
            assert stats.student_t_quantile(p, df) == pytest.approx(expected, rel=1e-9), (p, df)


def test_t_interval_of_three_seed_differences_by_hand():
    # differences 1, 2, 3 points: mean 2, sd 1, half-width 4.3027 / sqrt(3) = 2.4841
    mean, low, high = stats.t_interval([1.0, 2.0, 3.0])
    assert mean == 2.0
    assert (high - mean) == pytest.approx(4.302652729749464 / math.sqrt(3), rel=1e-12)
    assert (low, high) == pytest.approx((-0.48414, 4.48414), abs=1e-5)
    # two values: t with 1 degree of freedom, sd = |a - b| / sqrt(2)
    mean, low, high = stats.t_interval([0.01, 0.03], level=0.95)
    assert high - mean == pytest.approx(12.706204736174698 * 0.01, rel=1e-12)
    assert stats.t_interval([0.5, 0.5, 0.5]) == (0.5, 0.5, 0.5)
    # a 50 % interval is narrower: t_{0.75, 2} = 0.8165 = sqrt(2/3)
    assert stats.t_interval([1.0, 2.0, 3.0], level=0.5)[2] == pytest.approx(
        2 + math.sqrt(2 / 3) / math.sqrt(3), rel=1e-12)


def test_t_helpers_reject_bad_arguments():
    with pytest.raises(ValueError, match="at least 2 values"):
        stats.t_interval([1.0])
    with pytest.raises(ValueError, match="positive integer"):
        stats.student_t_quantile(0.975, 0)
    with pytest.raises(ValueError, match="positive integer"):
        stats.student_t_cdf(1.0, 2.5)
    with pytest.raises(ValueError, match="strictly between 0 and 1"):
        stats.student_t_quantile(1.0, 3)


def test_holm_by_hand():
    # sorted: 0.005 x 4 = 0.02, 0.01 x 3 = 0.03, 0.03 x 2 = 0.06, 0.04 x 1 = 0.04 -> 0.06
    # (step-down: never below the adjusted value of a smaller p-value)
    assert stats.holm([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert stats.holm([0.5, 0.6]) == [1.0, 1.0]  # 2 x 0.5, capped at 1; then max(1, 0.6)
    assert stats.holm([0.02, 0.02]) == [0.04, 0.04]  # ties: the same adjusted value
    assert stats.holm([0.3]) == [0.3] and stats.holm([]) == []
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        stats.holm([0.1, float("nan")])
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        stats.holm([1.5])


def test_holm_matches_statsmodels():
    multitest = pytest.importorskip("statsmodels.stats.multitest")
    p = [0.001, 0.2, 0.013, 0.04, 0.04, 0.9, 0.0125]
    expected = multitest.multipletests(p, method="holm")[1]
    assert stats.holm(p) == pytest.approx(list(expected), rel=1e-12)
