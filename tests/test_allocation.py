"""Tests of aca_keras.allocation: Otsu's threshold, the allocators, allocate()."""

from __future__ import annotations

import numpy as np
import pytest

from aca_keras.channels import allocation
from aca_keras.channels.allocation import (
    ChannelScores,
    UnknownAllocatorError,
    adaptive_threshold,
    allocate,
    get_allocator,
    list_allocators,
    log_scores,
    otsu_threshold,
    register_allocator,
)
from aca_keras.errors import ArchitectureError
from aca_keras.registry import Registry
from aca_keras.space.architecture import Architecture
from aca_keras.space.genotype import Genotype

C = 8
ACA = ("none", "max_pool_3x3", "avg_pool_3x3", "sep_conv_3x3", "sep_conv_5x5",
       "dil_conv_3x3", "dil_conv_5x5")


@pytest.fixture(autouse=True)
def _seed_and_clear():
    """Overrides conftest's fixture: no Keras objects are built here, and its per-test
    ``clear_session`` (a full garbage collection) would dominate the run time."""
    yield


# ------------------------------------------------------------------------------------ Otsu


def between_class_variance(values: np.ndarray, t: float) -> float:
    """Direct definition: w0 * w1 * (mu0 - mu1)^2 for the split at ``t``."""
    low, high = values[values <= t], values[values > t]
    if low.size == 0 or high.size == 0:
        return 0.0
    w0, w1 = low.size / values.size, high.size / values.size
    return w0 * w1 * (low.mean() - high.mean()) ** 2


def brute_force_best(values: np.ndarray) -> float:
    """Best between-class variance over every threshold between distinct values."""
    u = np.unique(values)
    return max(between_class_variance(values, t) for t in (u[:-1] + u[1:]) / 2)


@pytest.mark.parametrize("seed", range(8))
def test_otsu_matches_brute_force_on_random_data(seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(2, 200))
    values = rng.normal(size=n) * rng.uniform(0.1, 10) + rng.uniform(-5, 5)
    if seed % 2:
        values = np.round(values, 1)  # repeated values
    if np.unique(values).size < 2:
        pytest.skip("degenerate draw")
    t = otsu_threshold(values)
    best = brute_force_best(values)
    assert between_class_variance(values, t) == pytest.approx(best, rel=1e-10, abs=1e-12)
    # the threshold lies strictly between two data values (a real cut)
    assert values.min() <= t < values.max()
    assert not np.any(values == t)
    # equivalently, it minimises the within-class variance (total = within + between)
    low, high = values[values <= t], values[values > t]
    within = (low.size * low.var() + high.size * high.var()) / values.size
    assert within == pytest.approx(values.var() - best, rel=1e-8, abs=1e-10)
    # no threshold on a fine grid does better
    grid = np.linspace(values.min(), values.max(), 2001)
    assert max(between_class_variance(values, g) for g in grid) <= best * (1 + 1e-10)


def test_otsu_bimodal_and_small_cases():
    rng = np.random.default_rng(1)
    low = rng.normal(-4, 0.3, size=50)
    high = rng.normal(3, 0.3, size=30)
    t = otsu_threshold(np.concatenate([high, low]))
    assert low.max() < t < high.min()
    assert otsu_threshold([1.0, 3.0]) == 2.0
    assert otsu_threshold([0.0, 0.0, 0.0, 10.0]) == 5.0
    # equal variance on both cuts: the lowest cut wins
    assert otsu_threshold([0.0, 1.0, 2.0]) == 0.5
    for bad in ([], [1.0], [2.0, 2.0, 2.0], [1.0, np.inf]):
        with pytest.raises(ValueError):
            otsu_threshold(bad)


def test_log_scores_guard_zeros():
    logs = log_scores([np.array([0.0, 1.0]), np.array([2.0, 4.0])])
    assert np.all(np.isfinite(np.concatenate(logs)))
    assert logs[0][1] == pytest.approx(0.0, abs=1e-9)
    assert logs[0][0] == pytest.approx(np.log(4.0 * allocation.LOG_EPS_RELATIVE))
    assert [a.tolist() for a in log_scores([np.zeros(3)])] == [[0.0, 0.0, 0.0]]
    with pytest.raises(ArchitectureError, match=">= 0"):
        log_scores([np.array([1.0, -1.0])])


# ------------------------------------------------------------------------------ allocators


def bimodal_cell(rng: np.random.Generator) -> list[np.ndarray]:
    """3 edges: all important, half important, none important."""
    hi = lambda n: rng.uniform(0.5, 2.0, size=n)       # noqa: E731
    lo = lambda n: rng.uniform(1e-5, 4e-5, size=n)     # noqa: E731
    return [hi(C), np.concatenate([lo(3), hi(5)])[rng.permutation(C)], lo(C)]


def test_adaptive_bimodal_split_reaches_0_and_C():
    rng = np.random.default_rng(0)
    scores = bimodal_cell(rng)
    assert get_allocator("adaptive")(scores, [0.3, 0.2, 0.1], C) == [C, 5, 0]
    # log scores: a common scale factor changes nothing
    assert get_allocator("adaptive")([s * 1e6 for s in scores], [1, 1, 1], C) == [C, 5, 0]
    t = adaptive_threshold(scores)
    assert np.log(4e-5) < t < np.log(0.5)


def test_adaptive_degenerate_cases_keep_everything():
    adaptive = get_allocator("adaptive")
    assert adaptive([np.full(C, 0.7)] * 3, [1, 1, 1], C) == [C, C, C]
    assert adaptive([np.zeros(C)] * 2, [1, 1], C) == [C, C]
    assert adaptive_threshold([np.full(C, 0.7)]) is None
    # exact zeros are finite after the guard and fall in the unimportant group
    s = [np.r_[np.zeros(4), np.ones(4)], np.ones(C)]
    assert adaptive(s, [1, 1], C) == [4, C]
    with pytest.raises(ArchitectureError, match="shape"):
        adaptive([np.ones(C - 1)], [1], C)


def test_fixed_alpha_none_rules():
    scores = [np.ones(16)] * 4
    w = [0.5, 0.25, 0.1, 0.0]
    assert get_allocator("fixed")(scores, w, 16) == [4, 4, 4, 4]
    assert get_allocator("fixed")(scores, w, 16, k=3) == [5] * 4
    assert get_allocator("fixed")(scores, w, 16, k=1) == [16] * 4
    assert get_allocator("fixed")(scores, w, 3, k=4) == [0] * 4
    with pytest.raises(ArchitectureError, match="k must be"):
        get_allocator("fixed")(scores, w, 16, k=0)
    # 16 * [1, .5, .2, 0] = [16, 8, 3.2, 0]
    assert get_allocator("alpha")(scores, w, 16) == [16, 8, 3, 0]
    assert get_allocator("alpha")(scores[:2], [1.0, 0.25], 10) == [10, 3]  # 2.5 rounds up
    with pytest.raises(ArchitectureError, match="every operation weight is 0"):
        get_allocator("alpha")(scores[:2], [0.0, 0.0], 16)
    assert get_allocator("none")(scores, w, 16) == [16] * 4


@pytest.mark.parametrize("method", ["adaptive", "fixed", "alpha", "none"])
def test_k_always_in_range(method):
    rng = np.random.default_rng(7)
    fn = get_allocator(method)
    for _ in range(25):
        c = int(rng.integers(1, 40))
        edges = int(rng.integers(1, 9))
        scores = [rng.lognormal(sigma=3, size=c) * (rng.random(c) > 0.2) for _ in range(edges)]
        weights = list(rng.random(edges) + 1e-3)
        k = fn(scores, weights, c)
        assert len(k) == edges
        assert all(type(x) is int and 0 <= x <= c for x in k)


def test_registry():
    assert list_allocators()[:4] == ["adaptive", "fixed", "alpha", "none"]
    with pytest.raises(UnknownAllocatorError, match="Registered allocators: adaptive") as info:
        get_allocator("otsu")
    assert isinstance(info.value, KeyError) and isinstance(info.value, ValueError)
    assert "Unknown allocator 'otsu'" in str(info.value)
    with pytest.raises(ValueError, match="already registered"):
        register_allocator("fixed")(lambda s, w, c: [c] * len(s))


# -------------------------------------------------------------------------------- allocate


def architecture() -> Architecture:
    # one kept edge per node, three nodes
    g = Genotype((("sep_conv_3x3", 0), ("max_pool_3x3", 1), ("dil_conv_3x3", 2)), (2, 3, 4),
                 (("avg_pool_3x3", 0), ("sep_conv_5x5", 1), ("sep_conv_3x3", 2)), (2, 3, 4),
                 edges_per_node=1)
    return Architecture.from_genotype(g, C, ACA, provenance={"variant": "darts"})


def channel_scores(seed: int = 0) -> ChannelScores:
    rng = np.random.default_rng(seed)
    return ChannelScores(normal=tuple(bimodal_cell(rng)), reduce=tuple(bimodal_cell(rng)),
                         normal_weights=(0.6, 0.3, 0.15), reduce_weights=(0.2, 0.4, 0.1),
                         scorer="magnitude")


def test_allocate_adaptive_records_provenance_and_scores():
    a = architecture()
    scores = channel_scores()
    b = allocate(a, scores)
    assert b.normal.channels == (C, 5, 0) and b.reduce.channels == (C, 5, 0)
    assert b.provenance == {"variant": "darts", "allocator": "adaptive",
                            "allocator_options": {}, "scorer": "magnitude",
                            "pooling": "index", "divide_weight": False}
    assert b.scores["normal"]["k"] == [C, 5, 0]
    assert b.scores["normal"]["threshold"] == pytest.approx(adaptive_threshold(scores.normal))
    assert b.scores["reduce"]["mean"][2] == pytest.approx(float(scores.reduce[2].mean()))
    assert b.scores["reduce"]["op_weight"] == [0.2, 0.4, 0.1]
    assert b.identity_channels == {"normal": 0 + 3 + 8, "reduce": 11}
    assert b.effective_skip_count == {"normal": 1, "reduce": 1}
    assert Architecture.from_json(b.to_json()) == b
    assert a.normal.channels == (C, C, C)  # input unchanged


def test_allocate_other_methods():
    a, scores = architecture(), channel_scores()
    f = allocate(a, scores, "fixed", k=2)
    assert f.normal.channels == (4, 4, 4) and f.provenance["allocator_options"] == {"k": 2}
    assert f.scores["normal"]["threshold"] is None
    assert allocate(a, scores, "alpha").normal.channels == (8, 4, 2)  # 8 * [1, .5, .25]
    assert allocate(a, scores, "alpha").reduce.channels == (4, 8, 2)  # 8 * [.5, 1, .25]
    assert allocate(a, scores, "none").normal.channels == (C, C, C)
    with pytest.raises(UnknownAllocatorError):
        allocate(a, scores, "otsu")
    with pytest.raises(TypeError):
        allocate(a, scores, "adaptive", k=2)  # adaptive has no options


def test_allocate_checks_scores_against_the_architecture():
    a, s = architecture(), channel_scores()
    short = ChannelScores(s.normal[:2], s.reduce, s.normal_weights[:2], s.reduce_weights)
    with pytest.raises(ArchitectureError, match="2 normal score arrays.*3 kept edges"):
        allocate(a, short)
    wide = ChannelScores(s.normal, s.reduce[:2] + (np.ones(C + 1),), s.normal_weights,
                         s.reduce_weights)
    with pytest.raises(ArchitectureError, match="9 channel scores but reference_channels is 8"):
        allocate(a, wide)
    with pytest.raises(ArchitectureError, match="one operation weight per kept edge"):
        ChannelScores(s.normal, s.reduce, s.normal_weights[:2], s.reduce_weights)
    with pytest.raises(ArchitectureError, match="NaN"):
        ChannelScores((np.full(C, np.nan),), (np.ones(C),), (1.0,), (1.0,))
    with pytest.raises(ArchitectureError, match="shape"):
        ChannelScores((np.ones((2, 4)),), (np.ones(C),), (1.0,), (1.0,))


def test_custom_allocator_and_bad_results(monkeypatch):
    registry = Registry("allocator", allocation.UnknownAllocatorError)
    for name in allocation.list_allocators():
        registry.register(name, allocation.get_allocator(name))
    monkeypatch.setattr(allocation, "_ALLOCATORS", registry)  # the test's own copy

    @register_allocator("half_of_first")
    def half(edge_scores, op_weights, channels, *, offset=0):
        return [channels // 2 + offset] + [channels] * (len(edge_scores) - 1)

    assert "half_of_first" in list_allocators()
    b = allocate(architecture(), channel_scores(), "half_of_first", offset=1)
    assert b.normal.channels == (5, C, C)
    assert b.provenance["allocator"] == "half_of_first"
    register_allocator("too_many")(lambda s, w, c: [c + 1] * len(s))
    with pytest.raises(ArchitectureError, match="k_e = 9"):
        allocate(architecture(), channel_scores(), "too_many")
    register_allocator("too_few")(lambda s, w, c: [c])
    with pytest.raises(ArchitectureError, match="list of 3 integers"):
        allocate(architecture(), channel_scores(), "too_few")


# ------------------------------------------------ uniform and adaptive-typed (issue 35)


def test_uniform_meets_its_budget_exactly():
    uniform = get_allocator("uniform")
    scores = [np.arange(1.0, C + 1)] * 3  # any scores: uniform reads none of them
    w = [0.5, 0.3, 0.2]
    # B = 10 over E = 3: 10 // 3 = 3 each, 10 % 3 = 1 extra to the first edge
    assert uniform(scores, w, C, budget=10) == [4, 3, 3]
    assert uniform(scores, w, C, budget=11) == [4, 4, 3]  # 11 = 3 * 3 + 2
    assert uniform(scores, w, C, budget=12) == [4, 4, 4]  # E divides B
    assert uniform(scores, w, C, budget=1) == [1, 0, 0]
    assert uniform(scores, w, C, budget=0) == [0, 0, 0]
    assert uniform(scores, w, C, budget=23) == [8, 8, 7]
    assert uniform(scores, w, C, budget=24) == [C, C, C]
    # five edges of 16 channels, B = 37: 7 each and two extra
    five = [np.ones(16)] * 5
    assert uniform(five, [1] * 5, 16, budget=37) == [8, 8, 7, 7, 7]
    for budget in range(0, 5 * 16 + 1):
        k = uniform(five, [1] * 5, 16, budget=budget)
        assert sum(k) == budget and max(k) - min(k) <= 1
        assert all(type(x) is int and 0 <= x <= 16 for x in k)
    for bad in (-1, 25, 2.5, "10", True):
        with pytest.raises(ArchitectureError, match="budget must be an integer in 0..24"):
            uniform(scores, w, C, budget=bad)


def test_uniform_defaults_to_the_adaptive_total():
    rng = np.random.default_rng(0)
    scores = bimodal_cell(rng)  # adaptive: [8, 5, 0], 13 channels
    assert get_allocator("adaptive")(scores, [0.3, 0.2, 0.1], C) == [C, 5, 0]
    assert get_allocator("uniform")(scores, [0.3, 0.2, 0.1], C) == [5, 4, 4]  # 13 = 3*4 + 1
    # another reference allocator: alpha keeps 8 * [1, .5, .25] = [8, 4, 2], 14 channels
    assert get_allocator("uniform")(scores, [0.4, 0.2, 0.1], C, match="alpha") == [5, 5, 4]
    # nothing separates equal scores: adaptive keeps everything, so does its control
    assert get_allocator("uniform")([np.ones(C)] * 2, [1, 1], C) == [C, C]
    with pytest.raises(ArchitectureError, match="match='uniform'"):
        get_allocator("uniform")(scores, [1, 1, 1], C, match="uniform")
    with pytest.raises(UnknownAllocatorError):
        get_allocator("uniform")(scores, [1, 1, 1], C, match="otsu")


def typed_case() -> tuple[list[np.ndarray], list[str]]:
    """Two pools scored high and two convolutions scored low, on one cell type (C = 4).

    Log scores (the scores are e ** value):
      max_pool_3x3 [4, 4, 2, 2], avg_pool_3x3 [4, 2, 2, 4],
      sep_conv_3x3 [-4, -4, -8, -8], dil_conv_3x3 [-4, -8, -8, -8].
    """
    logs = [[4, 4, 2, 2], [4, 2, 2, 4], [-4, -4, -8, -8], [-4, -8, -8, -8]]
    return ([np.exp(np.array(v, dtype=np.float64)) for v in logs],
            ["max_pool_3x3", "avg_pool_3x3", "sep_conv_3x3", "dil_conv_3x3"])


def test_adaptive_typed_keeps_convolutions_where_pooled_adaptive_refills_them():
    scores, ops = typed_case()
    w = [0.2, 0.2, 0.3, 0.3]
    # Pooled: 16 log scores, 4 x 4, 4 x 2, 3 x -4, 5 x -8. Between-class variance of the
    # three cuts (w0 * w1 * (mu0 - mu1) ** 2):
    #   -8 | -4: mu0 = -8, mu1 = (16 + 8 - 12) / 11 = 12/11;    5/16 * 11/16 * 9.09**2 = 17.76
    #   -4 | 2:  mu0 = (-12 - 40) / 8 = -6.5, mu1 = 3;          1/2 * 1/2 * 9.5**2    = 22.56
    #    2 | 4:  mu0 = (8 - 52) / 12 = -11/3, mu1 = 4;          3/4 * 1/4 * 7.67**2   = 11.02
    # so the cut lies at (-4 + 2) / 2 = -1: pools whole, convolutions refilled.
    assert adaptive_threshold(scores) == pytest.approx(-1.0, abs=1e-6)  # eps: ~3e-9
    assert get_allocator("adaptive")(scores, w, 4) == [4, 4, 0, 0]
    # Typed: pools alone hold 4 x 4 and 4 x 2 (one cut, at 3): 2 channels each; the
    # convolutions alone hold 3 x -4 and 5 x -8 (one cut, at -6): 2 and 1 channels.
    thresholds = allocation.typed_thresholds(scores, ops)
    assert thresholds == {"parameter_free": pytest.approx(3.0, abs=1e-6),
                          "parametric": pytest.approx(-6.0, abs=1e-6)}
    assert get_allocator("adaptive-typed")(scores, w, 4, ops=ops) == [2, 2, 2, 1]
    # the capacity-matched control of the pooled split: 8 channels over 4 edges
    assert get_allocator("uniform")(scores, w, 4) == [2, 2, 2, 2]
    assert get_allocator("uniform")(scores, w, 4, ops=ops, match="adaptive-typed") == \
        [2, 2, 2, 1]  # 7 = 4 + 3: 1 each, 3 extra to the first edges -> [2, 2, 2, 1]


def test_adaptive_typed_kinds_and_degenerate_groups():
    typed = get_allocator("adaptive-typed")
    scores, ops = typed_case()
    # one kind only: the same as adaptive
    assert typed(scores[2:], [1, 1], 4, ops=ops[2:]) == get_allocator("adaptive")(
        scores[2:], [1, 1], 4) == [2, 1]
    # a kind whose scores are all equal keeps every channel; the other kind is split alone
    flat = [np.full(4, 7.0), np.full(4, 7.0), scores[2], scores[3]]
    assert typed(flat, [1] * 4, 4, ops=ops) == [4, 4, 2, 1]
    assert allocation.typed_thresholds(flat, ops)["parameter_free"] is None
    # a custom operation counts as parametric unless named parameter-free
    custom = ["max_pool_3x3", "avg_pool_3x3", "my_pool", "dil_conv_3x3"]
    assert allocation.operation_kinds(custom) == ["parameter_free", "parameter_free",
                                                  "parametric", "parametric"]
    assert allocation.operation_kinds(custom, parameter_free={"my_pool"}) == [
        "parametric", "parametric", "parameter_free", "parametric"]
    # pools {4,4,2,2, 4,2,2,4} and my_pool [-4,-4,-8,-8] as one kind: the cut at -1 (the
    # widest gap, as in the pooled case) leaves my_pool with nothing; dil_conv alone: 1
    both = {"max_pool_3x3", "avg_pool_3x3", "my_pool"}
    assert typed(scores, [1] * 4, 4, ops=custom, parameter_free=both) == [4, 4, 0, 1]
    with pytest.raises(ArchitectureError, match="needs the kept edges' operation names"):
        typed(scores, [1] * 4, 4)
    with pytest.raises(ArchitectureError, match="4 score arrays but 3 operation names"):
        typed(scores, [1] * 4, 4, ops=ops[:3])


@pytest.mark.parametrize("method", ["uniform", "adaptive-typed"])
def test_new_allocators_keep_k_in_range(method):
    rng = np.random.default_rng(3)
    fn = get_allocator(method)
    names = list(ACA[1:])
    for _ in range(25):
        c = int(rng.integers(1, 40))
        edges = int(rng.integers(1, 9))
        scores = [rng.lognormal(sigma=3, size=c) * (rng.random(c) > 0.2) for _ in range(edges)]
        ops = [names[int(i)] for i in rng.integers(0, len(names), size=edges)]
        k = fn(scores, list(rng.random(edges) + 1e-3), c, ops=ops)
        assert len(k) == edges and all(type(x) is int and 0 <= x <= c for x in k)
        if method == "uniform":
            assert sum(k) == sum(get_allocator("adaptive")(scores, [1] * edges, c))


def test_new_allocators_are_registered_after_the_first_four():
    assert list_allocators()[:6] == ["adaptive", "fixed", "alpha", "none", "uniform",
                                     "adaptive-typed"]


def test_allocate_passes_the_operations_to_allocators_that_take_them(monkeypatch):
    registry = Registry("allocator", allocation.UnknownAllocatorError)
    for name in allocation.list_allocators():
        registry.register(name, allocation.get_allocator(name))
    monkeypatch.setattr(allocation, "_ALLOCATORS", registry)
    seen = []

    @register_allocator("pools_only")
    def pools_only(edge_scores, op_weights, channels, *, ops):
        seen.append(list(ops))
        return [channels if op.endswith("pool_3x3") else 0 for op in ops]

    b = allocate(architecture(), channel_scores(), "pools_only")
    assert seen == [["sep_conv_3x3", "max_pool_3x3", "dil_conv_3x3"],
                    ["avg_pool_3x3", "sep_conv_5x5", "sep_conv_3x3"]]
    assert b.normal.channels == (0, C, 0) and b.reduce.channels == (C, 0, 0)
    with pytest.raises(ArchitectureError, match="do not give ops as an option"):
        allocate(architecture(), channel_scores(), "adaptive-typed", ops=["sep_conv_3x3"])
    assert allocation.accepts_ops(pools_only)
    assert not allocation.accepts_ops(get_allocator("adaptive"))
    assert not allocation.accepts_ops(lambda s, w, c, **options: [c] * len(s))


def test_allocate_uniform_and_adaptive_typed_record_their_figures():
    a, scores = architecture(), channel_scores()  # adaptive: normal and reduce [8, 5, 0]
    u = allocate(a, scores, "uniform")
    assert u.normal.channels == (5, 4, 4) and u.reduce.channels == (5, 4, 4)
    assert u.scores["normal"]["budget"] == 13 and u.scores["normal"]["threshold"] is None
    assert allocate(a, scores, "uniform", budget=4).normal.channels == (2, 1, 1)
    assert allocate(a, scores, "uniform", budget=4).provenance["allocator_options"] == {
        "budget": 4}
    t = allocate(a, scores, "adaptive-typed")
    # normal: sep_conv_3x3 (all high), max_pool_3x3 (5 high), dil_conv_3x3 (all low). The
    # pool is alone in its kind: its 3 low and 5 high channels split at their gap -> 5; the
    # two convolutions are split as in the pooled case (8 high, 8 low) -> 8 and 0.
    assert t.normal.channels == (C, 5, 0)
    assert set(t.scores["normal"]["thresholds"]) == {"parameter_free", "parametric"}
    assert Architecture.from_json(t.to_json()) == t
