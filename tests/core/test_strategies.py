"""The adaptive matching strategies (issue 8): ``infogain`` and ``grade_boundary``."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cj_runner.core.bt import fit_bt
from cj_runner.core.models import Mode, PlannedPair
from cj_runner.core.pairing import (
    STRATEGIES,
    PairingState,
    orientation_matrix,
    resampling_node_cap,
    select_pairs,
)
from cj_runner.core.strategies import (
    COVARIANCE_MAX_N,
    grade_weights,
    laplace_covariance,
    laplace_variances,
)

ADAPTIVE = ("infogain", "grade_boundary")
OC = dict[tuple[int, int], tuple[int, int]]


def rng(seed: int = 0) -> np.random.Generator:
    return np.random.default_rng(seed)


def state_from(
    n: int,
    oc: OC,
    scores: np.ndarray | None = None,
    *,
    in_flight: set[tuple[int, int]] | None = None,
    pass_remaining: set[tuple[int, int]] | None = None,
    weights: np.ndarray | None = None,
    prior_precision: float = 0.01,
) -> PairingState:
    a = np.zeros(n, dtype=np.int64)
    b = np.zeros(n, dtype=np.int64)
    for (lo, hi), (fwd, rev) in oc.items():
        a[lo] += fwd
        b[hi] += fwd
        a[hi] += rev
        b[lo] += rev
    return PairingState(
        n_nodes=n,
        scores=np.zeros(n) if scores is None else scores,
        a_counts=a,
        b_counts=b,
        orientation_counts=oc,
        in_flight=frozenset(in_flight or ()),
        pass_remaining=frozenset(pass_remaining or ()),
        grade_uncertainty=weights,
        prior_precision=prior_precision,
    )


def random_history(n: int, m: int, seed: int) -> tuple[OC, np.ndarray]:
    """``m`` random comparisons: orientation counts and the scores fitted to them."""
    gen = rng(seed)
    truth = gen.normal(0, 1.5, n)
    first = gen.integers(0, n, m)
    second = (first + gen.integers(1, n, m)) % n
    won = gen.random(m) < 1 / (1 + np.exp(-(truth[first] - truth[second])))
    oc: OC = {}
    for x, y in zip(first.tolist(), second.tolist(), strict=True):
        lo, hi = min(x, y), max(x, y)
        fwd, rev = oc.get((lo, hi), (0, 0))
        oc[(lo, hi)] = (fwd + 1, rev) if x == lo else (fwd, rev + 1)
    fit = fit_bt(n, first, second, won, compute_se=False)
    return oc, np.asarray(fit.scores)


def counts_matrix(n: int, oc: OC) -> np.ndarray:
    om = orientation_matrix(n, oc)
    return (om + om.T).astype(float)


def trace_after(counts: np.ndarray, scores: np.ndarray, extra: list[tuple[int, int]]) -> float:
    c = counts.copy()
    for i, j in extra:
        c[i, j] += 1
        c[j, i] += 1
    return float(np.trace(laplace_covariance(c, scores, 0.01)))


def nodes_of(pairs: list[PlannedPair]) -> list[int]:
    return [x for p in pairs for x in (p.a, p.b)]


# --------------------------------------------------------------------------- registry


def test_adaptive_strategies_are_registered() -> None:
    assert set(ADAPTIVE) <= set(STRATEGIES)


# --------------------------------------------------------------------------- the model


def test_laplace_covariance_is_the_fit_covariance() -> None:
    gen = rng(3)
    n, m = 12, 80
    first = gen.integers(0, n, m)
    second = (first + gen.integers(1, n, m)) % n
    won = gen.random(m) < 0.6
    fit = fit_bt(n, first, second, won, prior_precision=0.05)
    counts = np.zeros((n, n))
    np.add.at(counts, (first, second), 1)
    counts += counts.T
    cov = laplace_covariance(counts, np.asarray(fit.scores), 0.05)
    assert fit.covariance is not None
    np.testing.assert_allclose(cov, fit.covariance, atol=1e-8)
    np.testing.assert_allclose(cov.sum(axis=1), 0.0, atol=1e-9)  # centred


def test_laplace_variances_switch_to_the_diagonal_above_the_threshold() -> None:
    n = COVARIANCE_MAX_N + 1
    counts = np.zeros((n, n))
    counts[0, 1] = counts[1, 0] = 4
    v = laplace_variances(counts, np.zeros(n), 0.01)
    assert v.shape == (n,)
    assert v[0] == pytest.approx(1 / (4 * 0.25 + 0.01))
    assert v[2] == pytest.approx(1 / 0.01)


# --------------------------------------------------------------------------- infogain


def test_infogain_first_pair_maximises_the_trace_reduction() -> None:
    n = 9
    oc, scores = random_history(n, 30, seed=1)
    counts = counts_matrix(n, oc)
    state = state_from(n, oc, scores)
    pairs = select_pairs(state, Mode.COVERAGE, 3, rng(0), "infogain")
    base = trace_after(counts, scores, [])
    candidates = [(i, j) for i in range(n) for j in range(i + 1, n) if counts[i, j] == 0]
    gain = {e: base - trace_after(counts, scores, [e]) for e in candidates}
    first = pairs[0].edge
    assert gain[first] == pytest.approx(max(gain.values()), rel=1e-6)
    # the second pair is the best disjoint one with the first counted as pending
    after_first = trace_after(counts, scores, [first])
    disjoint = [e for e in candidates if not set(e) & set(first)]
    gain2 = {e: after_first - trace_after(counts, scores, [first, e]) for e in disjoint}
    assert gain2[pairs[1].edge] == pytest.approx(max(gain2.values()), rel=1e-6)


def test_infogain_counts_in_flight_pairs_as_pending() -> None:
    n = 10
    oc, scores = random_history(n, 25, seed=4)
    flying = next((i, j) for i in range(n) for j in range(i + 1, n) if (i, j) not in oc)
    with_flight = select_pairs(
        state_from(n, oc, scores, in_flight={flying}), Mode.COVERAGE, 4, rng(2), "infogain"
    )
    assert flying not in [p.edge for p in with_flight]
    # the same selection as if the in-flight call had been answered (minus that edge)
    answered = dict(oc)
    answered[flying] = (1, 0)
    pretend = state_from(n, answered, scores)
    a_counts = pretend.a_counts - np.eye(n, dtype=np.int64)[flying[0]]
    b_counts = pretend.b_counts - np.eye(n, dtype=np.int64)[flying[1]]
    pretend = PairingState(n, scores, a_counts, b_counts, answered, prior_precision=0.01)
    assert [p.edge for p in select_pairs(pretend, Mode.COVERAGE, 4, rng(2), "infogain")] == [
        p.edge for p in with_flight
    ]


def test_infogain_prefers_the_least_known_nodes() -> None:
    # nodes 0-5 compared many times, 6-9 never: the first pairs go to the unknown ones
    n = 10
    oc: OC = {(i, j): (3, 3) for i in range(6) for j in range(i + 1, 6)}
    pairs = select_pairs(state_from(n, oc), Mode.COVERAGE, 2, rng(0), "infogain")
    assert {x for p in pairs for x in (p.a, p.b)} == {6, 7, 8, 9}


def test_grade_boundary_follows_the_weights() -> None:
    n = 12
    oc, scores = random_history(n, 40, seed=5)
    weights = np.full(n, 0.01)
    weights[[2, 7]] = 1.0
    pairs = select_pairs(
        state_from(n, oc, scores, weights=weights), Mode.COVERAGE, 2, rng(0), "grade_boundary"
    )
    assert {2, 7} <= set(nodes_of(pairs))


def test_grade_boundary_without_weights_is_infogain() -> None:
    n = 11
    oc, scores = random_history(n, 30, seed=6)
    state = state_from(n, oc, scores)
    for seed in range(3):
        assert select_pairs(state, Mode.COVERAGE, 5, rng(seed), "grade_boundary") == select_pairs(
            state, Mode.COVERAGE, 5, rng(seed), "infogain"
        )


@pytest.mark.parametrize("strategy", ADAPTIVE)
def test_large_nets_use_the_diagonal_and_fill_disjoint_waves(strategy: str) -> None:
    n = 500
    gen = rng(0)
    oc, scores = random_history(n, 1500, seed=7)
    weights = gen.random(n) if strategy == "grade_boundary" else None
    state = state_from(n, oc, scores, weights=weights)
    pairs = select_pairs(state, Mode.COVERAGE, 200, rng(1), strategy)
    nodes = nodes_of(pairs)
    assert len(pairs) == 200
    assert len(nodes) == len(set(nodes))
    assert all(p.edge not in oc for p in pairs)


def test_large_nets_overlap_once_no_disjoint_pair_is_left() -> None:
    n = COVARIANCE_MAX_N + 2
    pairs = select_pairs(state_from(n, {}), Mode.COVERAGE, n, rng(3), "infogain")
    uses = Counter(nodes_of(pairs))
    assert len(pairs) == n
    assert len(uses) == n and max(uses.values()) == 2  # a perfect matching first


# --------------------------------------------------------------------------- invariants


@st.composite
def cases(draw: st.DrawFn) -> tuple[PairingState, Mode, int, str, int]:
    n = draw(st.integers(2, 12))
    edges = [(i, j) for i in range(n) for j in range(i + 1, n)]
    oc: OC = {
        e: (draw(st.integers(0, 2)), draw(st.integers(0, 2))) for e in edges if draw(st.booleans())
    }
    compared = [e for e, v in oc.items() if sum(v)]
    scores = np.asarray(draw(st.lists(st.floats(-4, 4), min_size=n, max_size=n)))
    weights = (
        np.asarray(draw(st.lists(st.floats(0, 1), min_size=n, max_size=n)))
        if draw(st.booleans())
        else None
    )
    state = state_from(
        n,
        oc,
        scores,
        in_flight={e for e in edges if draw(st.integers(0, 8)) == 0},
        pass_remaining={e for e in compared if draw(st.booleans())},
        weights=weights,
        prior_precision=draw(st.sampled_from([0.0, 0.01, 1.0])),
    )
    mode = draw(st.sampled_from([Mode.COVERAGE, Mode.RESAMPLING]))
    return (
        state,
        mode,
        draw(st.integers(1, 14)),
        draw(st.sampled_from(ADAPTIVE)),
        draw(st.integers(0, 2**31)),
    )


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(cases())
def test_adaptive_invariants(case: tuple[PairingState, Mode, int, str, int]) -> None:
    state, mode, wave, strategy, seed = case
    pairs = select_pairs(state, mode, wave, rng(seed), strategy)
    edges = [p.edge for p in pairs]
    compared = {e for e, v in state.orientation_counts.items() if sum(v)}
    assert all(p.a != p.b for p in pairs)
    assert len(set(edges)) == len(edges) <= wave
    assert not set(edges) & set(state.in_flight)
    uses = Counter(nodes_of(pairs))
    if mode is Mode.RESAMPLING:
        # never a new edge, only the pass, each node at most the cap
        assert set(edges) <= set(state.pass_remaining) & compared
        assert max(uses.values(), default=0) <= resampling_node_cap(wave, state.n_nodes)
    else:
        assert not set(edges) & compared
        # a node repeats only once no disjoint candidate pair is left
        if len(uses) < 2 * len(pairs):
            free = [
                (i, j)
                for i in range(state.n_nodes)
                for j in range(i + 1, state.n_nodes)
                if (i, j) not in compared
                and (i, j) not in state.in_flight
                and i not in uses
                and j not in uses
            ]
            assert not free
    # seeded: the same generator state gives the same wave
    assert select_pairs(state, mode, wave, rng(seed), strategy) == pairs


@pytest.mark.parametrize("strategy", ADAPTIVE)
def test_different_seeds_break_ties_differently(strategy: str) -> None:
    state = state_from(12, {})
    waves = {tuple(select_pairs(state, Mode.COVERAGE, 4, rng(s), strategy)) for s in range(10)}
    assert len(waves) > 1


# --------------------------------------------------------------------------- grade weights


def test_grade_weights_favour_students_near_a_boundary_and_the_anchors() -> None:
    # anchors 0..3 (grades 0..3) at -3, -1, 1, 3: boundaries at -2, 0, 2
    scores = np.array([-3.0, -1.0, 1.0, 3.0, 0.05, -0.9, 2.9, -2.02])
    variances = np.full(scores.size, 0.25)
    w = grade_weights(scores, variances, [0, 1, 2, 3], [0, 1, 2, 3], 4)
    assert w is not None
    assert w[4] > w[5]  # on the boundary 0 vs. in the middle of a band
    assert w[7] > w[6]
    assert np.all(w[4:] >= 0.05)
    assert np.all(w[:4] > 0)  # every anchor sits next to a boundary with students


def test_grade_weights_need_two_grades() -> None:
    scores = np.array([0.0, 1.0, 2.0])
    assert grade_weights(scores, np.ones(3), [0, 1], [1, 1], 3) is None
    assert grade_weights(scores, np.ones(3), [0], [0], 3) is None
