"""Selection with node weights (``ANCHOR_WEIGHT``): every strategy's rules still hold,
weight 1 everywhere is the unweighted selection, and ``random`` draws a weighted node in
proportion to its weight."""

from __future__ import annotations

from collections import Counter

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cj_runner.core.models import Mode
from cj_runner.core.pairing import PairingState, resampling_node_cap, select_pairs
from cj_runner.core.strategies import COVARIANCE_MAX_N

OC = dict[tuple[int, int], tuple[int, int]]


def _state(
    n: int,
    oc: OC,
    scores: np.ndarray,
    weight: np.ndarray | None,
    in_flight: frozenset[tuple[int, int]] = frozenset(),
    pass_remaining: frozenset[tuple[int, int]] = frozenset(),
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
        scores=scores,
        a_counts=a,
        b_counts=b,
        orientation_counts=oc,
        in_flight=in_flight,
        pass_remaining=pass_remaining,
        node_weight=weight,
    )


@st.composite
def cases(draw: st.DrawFn) -> tuple[PairingState, Mode, int, str, int]:
    n = draw(st.integers(2, 12))
    edges = [(i, j) for i in range(n) for j in range(i + 1, n)]
    oc: OC = {
        e: (draw(st.integers(0, 2)), draw(st.integers(0, 2))) for e in edges if draw(st.booleans())
    }
    compared = [e for e, v in oc.items() if sum(v)]
    scores = np.asarray(draw(st.lists(st.floats(-4, 4), min_size=n, max_size=n)))
    weight = np.asarray(
        draw(st.lists(st.sampled_from([1.0, 1.5, 2.0, 3.0]), min_size=n, max_size=n))
    )
    state = _state(
        n,
        oc,
        scores,
        weight,
        in_flight=frozenset(e for e in edges if draw(st.integers(0, 8)) == 0),
        pass_remaining=frozenset(e for e in compared if draw(st.booleans())),
    )
    mode = draw(st.sampled_from([Mode.COVERAGE, Mode.RESAMPLING]))
    strategy = draw(st.sampled_from(["random", "infogain", "grade_boundary", "balanced"]))
    return state, mode, draw(st.integers(1, 14)), strategy, draw(st.integers(0, 2**31))


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(cases())
def test_weighted_selection_keeps_the_mode_rules(
    case: tuple[PairingState, Mode, int, str, int],
) -> None:
    state, mode, wave, strategy, seed = case
    pairs = select_pairs(state, mode, wave, np.random.default_rng(seed), strategy)
    edges = [p.edge for p in pairs]
    compared = {e for e, v in state.orientation_counts.items() if sum(v)}
    assert all(p.a != p.b for p in pairs)
    assert len(set(edges)) == len(edges) <= wave
    assert not set(edges) & set(state.in_flight)
    if mode is Mode.RESAMPLING:
        assert set(edges) <= set(state.pass_remaining) & compared
        uses = Counter(x for p in pairs for x in (p.a, p.b))
        assert max(uses.values(), default=0) <= resampling_node_cap(wave, state.n_nodes)
    else:
        assert not set(edges) & compared
        candidates = [
            (i, j)
            for i in range(state.n_nodes)
            for j in range(i + 1, state.n_nodes)
            if (i, j) not in compared and (i, j) not in state.in_flight
        ]
        assert len(edges) == min(wave, len(candidates))  # a weight never starves a wave
    assert select_pairs(state, mode, wave, np.random.default_rng(seed), strategy) == pairs


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(cases())
def test_weight_one_everywhere_is_the_unweighted_adaptive_selection(
    case: tuple[PairingState, Mode, int, str, int],
) -> None:
    state, mode, wave, strategy, seed = case
    if strategy not in ("infogain", "grade_boundary"):
        strategy = "infogain"
    ones = _state(
        state.n_nodes,
        dict(state.orientation_counts),
        state.scores,
        np.ones(state.n_nodes),
        state.in_flight,
        state.pass_remaining,
    )
    plain = _state(
        state.n_nodes,
        dict(state.orientation_counts),
        state.scores,
        None,
        state.in_flight,
        state.pass_remaining,
    )
    assert select_pairs(ones, mode, wave, np.random.default_rng(seed), strategy) == select_pairs(
        plain, mode, wave, np.random.default_rng(seed), strategy
    )


def _share_of_node(n: int, heavy: float, runs: int, wave: int) -> float:
    """How often node 0 (weight ``heavy``, the others 1) is in a random coverage pair."""
    weight = np.ones(n)
    weight[0] = heavy
    state = _state(n, {}, np.zeros(n), weight)
    hits = total = 0
    for seed in range(runs):
        for p in select_pairs(state, Mode.COVERAGE, wave, np.random.default_rng(seed), "random"):
            hits += 0 in (p.a, p.b)
            total += 1
    return hits / total


def test_random_draws_an_edge_in_proportion_to_its_nodes_weights() -> None:
    # one pair from 20 nodes: node 0 (weight 3) is in it with probability
    # 3 * 19 / (3 * 19 + C(19, 2)) = 0.25, against 19 / C(20, 2) = 0.10 unweighted
    assert abs(_share_of_node(20, 3.0, 3000, 1) - 0.25) < 0.025
    assert abs(_share_of_node(20, 1.0, 3000, 1) - 0.10) < 0.02


def test_random_large_nets_draw_weighted_nodes_too() -> None:
    # above COVARIANCE_MAX_N the rejection sampler draws nodes in proportion to weight:
    # node 0 (weight 3 among n - 1 of weight 1) is in about 3 * 2 / (n + 2) of the pairs
    n = COVARIANCE_MAX_N + 50
    share = _share_of_node(n, 3.0, 200, 40)
    assert abs(share - 6 / (n + 2)) < 0.01
    assert abs(_share_of_node(n, 1.0, 200, 40) - 2 / n) < 0.006
