"""Selection and per-wave fits on large nets without ``n x n`` work (issue 14)."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest
import scipy.special
from hypothesis import given, settings
from hypothesis import strategies as st

import cj_runner.core.evidence as evidence
import cj_runner.core.robust as robust
from cj_runner.config import Settings, continuation_limits
from cj_runner.core.bt import fit_bt
from cj_runner.core.candidates import CandidateGraph
from cj_runner.core.large_nets import _pq, diagonal_select, random_complement
from cj_runner.core.models import Mode
from cj_runner.core.pairing import PairingState, select_pairs
from cj_runner.core.strategies import COVARIANCE_MAX_N, SelectionProblem
from cj_runner.core.workflow import WorkflowState


def history(n: int, m: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    gen = np.random.default_rng(seed)
    truth = gen.normal(0, 1.5, n)
    a = gen.integers(0, n, m)
    b = (a + gen.integers(1, n, m)) % n
    won = gen.random(m) < 1 / (1 + np.exp(-(truth[a] - truth[b])))
    return a, b, won, truth


def complement(n: int, a: np.ndarray, b: np.ndarray) -> CandidateGraph:
    nbrs: list[set[int]] = [set() for _ in range(n)]
    for x, y in zip(a.tolist(), b.tolist(), strict=True):
        nbrs[x].add(y)
        nbrs[y].add(x)
    return CandidateGraph.complement_of(n, nbrs, np.array([len(s) for s in nbrs]))


def wave_gain(pairs: list[tuple[int, int]], s: np.ndarray, v: np.ndarray, g: np.ndarray) -> float:
    lo = np.array([p[0] for p in pairs])
    hi = np.array([p[1] for p in pairs])
    w = _pq(s[lo] - s[hi])
    return float(np.sum(w * (g[lo] * v[lo] ** 2 + g[hi] * v[hi] ** 2) / (1 + w * (v[lo] + v[hi]))))


@settings(max_examples=25, deadline=None)
@given(
    n=st.integers(COVARIANCE_MAX_N + 1, 700),
    cpe=st.integers(0, 8),
    k=st.integers(1, 30),
    weighted=st.booleans(),
    seed=st.integers(0, 2**31),
)
def test_shortlist_keeps_the_gain_of_the_full_evaluation(
    n: int, cpe: int, k: int, weighted: bool, seed: int
) -> None:
    a, b, won, _ = history(n, n * cpe // 2, seed)
    graph = complement(n, a, b)
    gen = np.random.default_rng(seed + 1)
    if a.size:
        fit = fit_bt(n, a, b, won, prior_precision=0.5, compute_se=False)
        s = np.asarray(fit.scores)
        w = _pq(s[a] - s[b])
        v = 1.0 / (np.bincount(a, w, n) + np.bincount(b, w, n) + 0.5)
    else:
        s, v = np.zeros(n), np.full(n, 2.0)
    g = gen.random(n) + 0.05 if weighted else np.ones(n)
    short = diagonal_select(graph, s, v, g, k, np.random.default_rng(seed))
    full = diagonal_select(graph, s, v, g, k, np.random.default_rng(seed), shortlist=None)
    assert short is not None and full is not None
    nodes = [x for p in short for x in p]
    assert len(short) == k and len(set(nodes)) == 2 * k  # node-disjoint
    assert all(graph.has(x, y) for x, y in short)  # candidates only
    # the full evaluation is itself greedy: the shortlist may even beat it, never lose much
    assert wave_gain(short, s, v, g) >= 0.99 * wave_gain(full, s, v, g)
    # seeded: the same generator state gives the same wave
    assert diagonal_select(graph, s, v, g, k, np.random.default_rng(seed)) == short


def test_shortlist_takes_the_single_best_pair_first() -> None:
    n = 400
    s = np.zeros(n)
    v = np.ones(n)
    v[[17, 350]] = 5.0  # the two least known nodes: their pair gains the most
    graph = CandidateGraph.complement_of(n, [set() for _ in range(n)], np.zeros(n, np.int64))
    pairs = diagonal_select(graph, s, v, np.ones(n), 3, np.random.default_rng(0))
    assert pairs is not None and pairs[0] == (17, 350)


def test_a_wave_larger_than_the_shortlist_still_fills_disjoint_pairs() -> None:
    n = COVARIANCE_MAX_N + 2
    graph = CandidateGraph.complement_of(n, [set() for _ in range(n)], np.zeros(n, np.int64))
    pairs = diagonal_select(
        graph, np.zeros(n), np.ones(n), np.ones(n), n // 2, np.random.default_rng(1)
    )
    assert pairs is not None and len({x for p in pairs for x in p}) == n


def state_for(
    n: int, a: np.ndarray, b: np.ndarray, in_flight: frozenset[tuple[int, int]] = frozenset()
) -> PairingState:
    oc: dict[tuple[int, int], tuple[int, int]] = {}
    ac = np.zeros(n, np.int64)
    bc = np.zeros(n, np.int64)
    for x, y in zip(a.tolist(), b.tolist(), strict=True):
        lo, hi = min(x, y), max(x, y)
        f, r = oc.get((lo, hi), (0, 0))
        oc[(lo, hi)] = (f + 1, r) if x == lo else (f, r + 1)
        ac[x] += 1
        bc[y] += 1
    return PairingState(n, np.zeros(n), ac, bc, oc, in_flight=in_flight)


@pytest.mark.parametrize("strategy", ["infogain", "grade_boundary", "random"])
@pytest.mark.parametrize("mode", [Mode.COVERAGE, Mode.AUDIT])
def test_large_nets_never_build_the_candidate_matrix(
    strategy: str, mode: Mode, monkeypatch: pytest.MonkeyPatch
) -> None:
    n = 600
    a, b, _, _ = history(n, 1500, 3)
    flying = frozenset({(0, 1), (2, 5)})
    state = state_for(n, a, b, flying)

    def refuse(self: SelectionProblem) -> np.ndarray:
        raise AssertionError("dense candidate matrix built")

    monkeypatch.setattr(SelectionProblem, "candidate_matrix", refuse)
    pairs = select_pairs(state, mode, 12, np.random.default_rng(0), strategy)
    edges = [p.edge for p in pairs]
    assert len(edges) == len(set(edges)) == 12
    assert not set(edges) & flying
    if mode is Mode.COVERAGE:
        assert not set(edges) & set(state.orientation_counts)
    assert select_pairs(state, mode, 12, np.random.default_rng(0), strategy) == pairs


def test_pending_calls_lower_the_variance_they_will_inform() -> None:
    n = 300
    free = PairingState(n, np.zeros(n), np.zeros(n, np.int64), np.zeros(n, np.int64), {})
    flying = PairingState(
        n,
        np.zeros(n),
        np.zeros(n, np.int64),
        np.zeros(n, np.int64),
        {},
        in_flight=frozenset({(i, i + 1) for i in range(0, n - 10, 2)}),
    )
    # every node but the last ten has a call in flight: the wave goes to the last ten
    pairs = select_pairs(flying, Mode.COVERAGE, 5, np.random.default_rng(0), "infogain")
    assert {x for p in pairs for x in (p.a, p.b)} == set(range(n - 10, n))
    assert len(select_pairs(free, Mode.COVERAGE, 5, np.random.default_rng(0), "infogain")) == 5


def test_random_complement_is_uniform_over_the_candidates() -> None:
    n = 6
    nbrs: list[set[int]] = [set() for _ in range(n)]
    nbrs[0].add(1)
    nbrs[1].add(0)
    graph = CandidateGraph.complement_of(n, nbrs, np.array([1, 1, 0, 0, 0, 0]))
    counts: Counter[tuple[int, int]] = Counter()
    gen = np.random.default_rng(5)
    for _ in range(4000):
        got = random_complement(graph, 1, gen)
        assert got is not None
        counts[got[0]] += 1
    assert (0, 1) not in counts and len(counts) == 14
    assert max(counts.values()) / min(counts.values()) < 1.4  # 4000/14 ~ 286 each


def test_random_complement_gives_up_on_a_nearly_complete_net() -> None:
    n = 40
    nbrs = [set(range(n)) - {i} for i in range(n)]
    nbrs[0].discard(1)
    nbrs[1].discard(0)
    graph = CandidateGraph.complement_of(n, nbrs, np.array([len(s) for s in nbrs]))
    assert random_complement(graph, 2, np.random.default_rng(0)) is None


# --------------------------------------------------------------------------- fits


def test_a_looser_tolerance_stays_within_it_and_the_default_is_exact() -> None:
    n = 600
    a, b, won, _ = history(n, 3000, 9)
    exact = fit_bt(n, a, b, won, order_effect=True, compute_se=False)
    loose = fit_bt(n, a, b, won, order_effect=True, compute_se=False, tolerance=1e-6)
    assert np.max(np.abs(np.asarray(exact.scores) - loose.scores)) < 1e-5
    assert exact.order_effect is not None and loose.order_effect is not None
    assert abs(exact.order_effect - loose.order_effect) < 1e-5
    with pytest.raises(ValueError, match="tolerance"):
        fit_bt(n, a, b, won, tolerance=0.0)


def test_approximate_variances_on_request_are_close_to_the_exact_ones() -> None:
    n = 500
    a, b, won, _ = history(n, 5000, 4)
    exact = fit_bt(n, a, b, won)
    approx = fit_bt(n, a, b, won, exact_se=False)
    assert exact.covariance is not None and approx.covariance is None
    assert exact.se is not None and approx.se is not None
    ratio = np.asarray(approx.se) / exact.se
    assert abs(float(np.mean(ratio)) - 1) < 0.01 and np.max(np.abs(ratio - 1)) < 0.05


def workflow(n: int, strategy: str = "infogain") -> WorkflowState:
    limits = continuation_limits(Settings(SCORE_STABILITY_THRESHOLD=0.0, MAX_ITERATIONS=10_000))
    return WorkflowState(
        n_nodes=n,
        n_students=n,
        total_budget=10**6,
        limits=limits,
        wave_size=12,
        strategy=strategy,
        seed=3,
        order_effect=True,
    )


def run_waves(
    wf: WorkflowState, truth: np.ndarray, waves: int, gen: np.random.Generator
) -> list[tuple[int, int]]:
    asked = []
    for _ in range(waves):
        pairs = wf.plan_wave()
        for p in pairs:
            wf.count_call()
            p_a = 1 / (1 + np.exp(-(truth[p.a] - truth[p.b])))
            wf.record_success(p.a, p.b, "A" if gen.random() < p_a else "B", key=len(wf.keys))
        wf.end_wave(wf.waves_completed + 1, [(p.a, p.b) for p in pairs])
        asked += [(p.a, p.b) for p in pairs]
    return asked


def test_large_net_prior_spread_follows_a_doubling_schedule(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    n = 250
    truth = np.random.default_rng(0).normal(0, 1.5, n)
    calls: list[int] = []
    original = robust.empirical_bayes_prior_sd

    def counted(n_items: int, first: np.ndarray, *rest: np.ndarray) -> float:
        calls.append(len(first))
        return original(n_items, first, *rest)

    monkeypatch.setattr("cj_runner.core.workflow.selection.empirical_bayes_prior_sd", counted)
    wf = workflow(n)
    asked = run_waves(wf, truth, 20, np.random.default_rng(1))
    assert len(asked) == 240
    # tau from the first 2^j comparisons: 8, 16, 32, 64, 128 (12, 24, ... 228 so far)
    assert calls == [8, 16, 32, 64, 128]
    # the same seed and answers give the same batch
    monkeypatch.setattr("cj_runner.core.workflow.selection.empirical_bayes_prior_sd", original)
    again = run_waves(workflow(n), truth, 20, np.random.default_rng(1))
    assert again == asked


def test_large_batches_finalize_without_dense_matrices(monkeypatch: pytest.MonkeyPatch) -> None:
    from cj_runner.core import posterior

    n = robust.DENSE_MAX_N + 50
    a, b, won, _ = history(n, 8 * n, 6)
    sparse = posterior.mixture_posterior(n, a, b, won, order_effect=True)
    reliability = robust.robust_reliability(n, a, b, won, seed=1)
    assert sparse.covariance is None
    monkeypatch.setattr(posterior, "DENSE_MAX_N", 10 * n)
    monkeypatch.setattr(evidence, "_DENSE_EVIDENCE_MAX_N", 10 * n)
    monkeypatch.setattr(robust, "DENSE_MAX_N", 10 * n)
    dense = posterior.mixture_posterior(n, a, b, won, order_effect=True)
    assert dense.covariance is not None
    # the approximation moves the figures users see by little
    assert abs(np.log(sparse.tau / dense.tau)) < 0.1
    assert np.max(np.abs(np.asarray(sparse.scores) - dense.scores)) < 0.05
    assert np.max(np.abs(np.asarray(sparse.se) / dense.se - 1)) < 0.05
    exact = robust.robust_reliability(n, a, b, won, seed=1)
    assert reliability.value is not None and exact.value is not None
    assert abs(reliability.value - exact.value) < 0.03


@settings(max_examples=50, deadline=None)
@given(
    seed=st.integers(0, 2**31),
    spread=st.sampled_from([0.1, 2.0, 40.0]),
    n=st.integers(2, 60),
)
def test_gains_match_the_textbook_formula(seed: int, spread: float, n: int) -> None:
    from cj_runner.core.large_nets import _gains

    gen = np.random.default_rng(seed)
    s = gen.normal(0, spread, n)
    v = gen.uniform(0.01, 5.0, n)
    g = gen.uniform(0.0, 2.0, n)
    rows = gen.choice(n, size=min(n, 7), replace=False)
    d = s[rows, None] - s[None, :]
    w = scipy.special.expit(d) * scipy.special.expit(-d)  # p (1 - p) without cancellation
    expected = w * (g[rows, None] * v[rows, None] ** 2 + g * v**2)
    expected /= 1.0 + w * (v[rows, None] + v[None, :])
    got = _gains(s, v, g, rows)
    assert np.all(np.isfinite(got))
    np.testing.assert_allclose(got, expected, rtol=1e-9, atol=1e-300)
    # beyond +-300 logits the scores are clipped: gains stay finite and non-negative
    far = _gains(s * 100.0, v, g, rows)
    assert np.all(np.isfinite(far)) and np.all(far >= 0.0)


@settings(max_examples=30, deadline=None)
@given(
    keys=st.lists(st.integers(0, 50), min_size=0, max_size=60, unique=True),
    cuts=st.lists(st.integers(0, 60), max_size=4),
)
def test_comparison_arrays_follow_the_keys_as_the_lists_grow(
    keys: list[int], cuts: list[int]
) -> None:
    n = 8
    wf = workflow(n)
    gen = np.random.default_rng(len(keys))
    seen: list[tuple[int, int, bool, int]] = []
    stops = sorted({min(c, len(keys)) for c in cuts} | {len(keys)})
    done = 0
    for stop in stops:
        for key in keys[done:stop]:
            a = int(gen.integers(n))
            b = (a + 1 + int(gen.integers(n - 1))) % n
            won = bool(gen.random() < 0.5)
            wf.record_success(a, b, "A" if won else "B", key=key)
            seen.append((key, a, b, won))
        done = stop
        first, second, first_won = wf.comparison_arrays()
        expected = sorted(seen)  # keys are unique: key order
        assert first.tolist() == [e[1] for e in expected]
        assert second.tolist() == [e[2] for e in expected]
        assert first_won.tolist() == [e[3] for e in expected]
        assert not first.flags.writeable


@settings(max_examples=60, deadline=None)
@given(
    values=st.lists(st.sampled_from([0.0, 0.5, 1.0, 2.0, 3.5]), min_size=1, max_size=80),
    size=st.integers(1, 90),
    seed=st.integers(0, 2**31),
)
def test_largest_nodes_match_the_full_sort(values: list[float], size: int, seed: int) -> None:
    from cj_runner.core.large_nets import _largest

    own = np.array(values)  # few distinct values: many ties at the boundary
    tie = np.random.default_rng(seed).random(own.size)
    expected = np.lexsort((-tie, -own))[:size]
    assert _largest(own, tie, size).tolist() == expected.tolist()


def test_per_wave_fits_stop_well_within_the_stability_threshold() -> None:
    from cj_runner.core.workflow import EXACT_WAVE_SE_MAX_N, WAVE_TOLERANCE

    def tolerance(n: int, threshold: float) -> float:
        limits = continuation_limits(Settings(SCORE_STABILITY_THRESHOLD=threshold))
        state = WorkflowState(n_nodes=n, n_students=n, total_budget=10, limits=limits, wave_size=12)
        return state._wave_tolerance()

    big = EXACT_WAVE_SE_MAX_N + 1
    assert tolerance(big, 0.05) == WAVE_TOLERANCE == 1e-4
    assert tolerance(big, 0.0) == WAVE_TOLERANCE  # stability off
    assert tolerance(big, 0.002) == pytest.approx(2e-5)
    assert tolerance(EXACT_WAVE_SE_MAX_N, 0.05) == 1e-9  # small nets: exact per-wave fits
