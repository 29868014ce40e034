"""Pair generation (spec §6): candidates per mode, strategies, fair orientation, shapes."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cj_runner.core.continuation import (
    Action,
    ContinuationContext,
    ContinuationLimits,
    StopReason,
    decide,
)
from cj_runner.core.coverage import coverage_metrics, max_possible_pairs
from cj_runner.core.models import Mode, PlannedPair
from cj_runner.core.pairing import (
    STRATEGIES,
    PairingState,
    orient,
    orientation_matrix,
    resampling_node_cap,
    select_pairs,
)

OC = dict[tuple[int, int], tuple[int, int]]


def make_state(
    n: int,
    oc: OC | None = None,
    *,
    scores: list[float] | None = None,
    a: list[int] | None = None,
    b: list[int] | None = None,
    in_flight: set[tuple[int, int]] | None = None,
    pass_remaining: set[tuple[int, int]] | None = None,
) -> PairingState:
    """A state whose A/B counts follow ``oc`` unless given."""
    oc = dict(oc or {})
    a_counts = np.zeros(n, dtype=np.int64)
    b_counts = np.zeros(n, dtype=np.int64)
    for (lo, hi), (fwd, rev) in oc.items():
        a_counts[lo] += fwd
        b_counts[hi] += fwd
        a_counts[hi] += rev
        b_counts[lo] += rev
    return PairingState(
        n_nodes=n,
        scores=np.zeros(n) if scores is None else np.asarray(scores, dtype=float),
        a_counts=a_counts if a is None else np.asarray(a),
        b_counts=b_counts if b is None else np.asarray(b),
        orientation_counts=oc,
        in_flight=frozenset(in_flight or ()),
        pass_remaining=frozenset(pass_remaining or ()),
    )


def nodes_of(pairs: list[PlannedPair]) -> list[int]:
    return [x for p in pairs for x in (p.a, p.b)]


def is_disjoint(pairs: list[PlannedPair]) -> bool:
    nodes = nodes_of(pairs)
    return len(nodes) == len(set(nodes))


def rng(seed: int = 0) -> np.random.Generator:
    return np.random.default_rng(seed)


# --------------------------------------------------------------------------- basics


@pytest.mark.parametrize(
    ("wave", "n", "cap"),
    [(12, 24, 1), (12, 5, 5), (12, 25, 1), (12, 23, 2), (1, 500, 1), (0, 10, 1), (200, 100, 4)],
)
def test_resampling_node_cap(wave: int, n: int, cap: int) -> None:
    assert resampling_node_cap(wave, n) == cap


def test_resampling_node_cap_rejects_empty_batch() -> None:
    with pytest.raises(ValueError, match="n_nodes"):
        resampling_node_cap(12, 0)


def test_strategies_listed_and_unknown_rejected() -> None:
    assert {"balanced", "random", "swiss"} <= set(STRATEGIES)
    with pytest.raises(ValueError, match=r"unknown matching strategy 'nope'.*balanced.*random"):
        select_pairs(make_state(4), Mode.COVERAGE, 2, rng(), strategy="nope")


@pytest.mark.parametrize("n", [0, 1])
def test_no_pairs_without_two_nodes(n: int) -> None:
    assert select_pairs(make_state(n), Mode.COVERAGE, 5, rng()) == []


def test_zero_wave_gives_nothing() -> None:
    assert select_pairs(make_state(6), Mode.COVERAGE, 0, rng()) == []


def test_wrong_array_length_rejected() -> None:
    state = PairingState(3, np.zeros(4), np.zeros(3), np.zeros(3), {})
    with pytest.raises(ValueError, match="scores"):
        select_pairs(state, Mode.COVERAGE, 1, rng())


@pytest.mark.parametrize(
    ("remaining", "in_flight"),
    [({(0, 9)}, set()), (set(), {(2, 2)}), (set(), {(-1, 2)})],
)
def test_edges_outside_batch_rejected(
    remaining: set[tuple[int, int]], in_flight: set[tuple[int, int]]
) -> None:
    state = make_state(4, {(0, 1): (1, 0)}, pass_remaining=remaining, in_flight=in_flight)
    with pytest.raises(ValueError, match="outside the batch"):
        select_pairs(state, Mode.RESAMPLING, 2, rng())


@pytest.mark.parametrize("key", [(1, 0), (0, 4), (2, 2)])
def test_orientation_counts_keys_must_be_lo_hi_inside_batch(key: tuple[int, int]) -> None:
    state = PairingState(4, np.zeros(4), np.zeros(4), np.zeros(4), {key: (1, 0)})
    with pytest.raises(ValueError, match="orientation_counts"):
        select_pairs(state, Mode.COVERAGE, 2, rng())


# --------------------------------------------------------------------------- coverage


def test_coverage_wave_is_node_disjoint_and_spread() -> None:
    pairs = select_pairs(make_state(10), Mode.COVERAGE, 5, rng(3))
    assert len(pairs) == 5
    assert sorted(nodes_of(pairs)) == list(range(10))


def test_coverage_prefers_least_compared_nodes() -> None:
    # nodes 0 and 1 already have many comparisons; 2..5 none
    oc: OC = {(0, 1): (3, 3)}
    for seed in range(20):
        pairs = select_pairs(make_state(6, oc), Mode.COVERAGE, 2, rng(seed))
        assert set(nodes_of(pairs)) == {2, 3, 4, 5}


def test_coverage_least_compared_node_goes_first() -> None:
    # node 4 has no comparison; every other node has some: 4 must be in the first pair
    oc: OC = {(0, 1): (1, 0), (2, 3): (0, 1), (0, 2): (1, 0), (1, 3): (1, 0)}
    for seed in range(20):
        pairs = select_pairs(make_state(5, oc), Mode.COVERAGE, 1, rng(seed))
        assert 4 in (pairs[0].a, pairs[0].b)


def test_coverage_pairs_close_scores_among_equal_counts() -> None:
    scores = [0.0, 10.0, 5.0, 0.01, 10.01, 5.01]
    for seed in range(20):
        pairs = select_pairs(make_state(6, scores=scores), Mode.COVERAGE, 3, rng(seed))
        assert {p.edge for p in pairs} == {(0, 3), (1, 4), (2, 5)}


def test_coverage_counts_before_scores() -> None:
    # node 0 is least compared; its closest score (node 1) is heavily compared, so the
    # partner is the less compared node 2 even though its score is far
    oc: OC = {(1, 3): (2, 2), (1, 4): (1, 1), (2, 3): (1, 0), (2, 4): (0, 1), (3, 4): (1, 0)}
    state = make_state(5, oc, scores=[0.0, 0.01, 9.0, 5.0, 5.0])
    for seed in range(10):
        pairs = select_pairs(state, Mode.COVERAGE, 1, rng(seed))
        assert pairs[0].edge == (0, 2)


def test_coverage_skips_compared_and_in_flight_edges_but_retries_failed_ones() -> None:
    n = 4
    oc: OC = {(0, 1): (1, 0), (2, 3): (0, 0)}  # (2, 3) only failed: a candidate again
    state = make_state(n, oc, in_flight={(0, 2)})
    pairs = select_pairs(state, Mode.COVERAGE, 10, rng())
    assert {p.edge for p in pairs} == {(0, 3), (1, 2), (1, 3), (2, 3)}


def test_coverage_fills_wave_beyond_disjoint_pairs() -> None:
    pairs = select_pairs(make_state(5), Mode.COVERAGE, 12, rng(1))
    assert len(pairs) == 10
    assert len({p.edge for p in pairs}) == 10
    # the first pairs are disjoint while possible: 2 disjoint pairs on 5 nodes
    assert is_disjoint(pairs[:2])


def test_coverage_returns_empty_when_every_edge_is_compared_or_in_flight() -> None:
    oc: OC = {(0, 1): (1, 0), (0, 2): (0, 1)}
    state = make_state(3, oc, in_flight={(1, 2)})
    assert select_pairs(state, Mode.COVERAGE, 3, rng()) == []


def test_coverage_uses_augmenting_swap_to_stay_disjoint() -> None:
    # Candidates: path 0-1-2-3 (other edges compared). Greedy might take (1, 2) first;
    # the repair must turn it into (0, 1), (2, 3).
    oc: OC = {(0, 2): (1, 0), (0, 3): (0, 1), (1, 3): (1, 0)}
    for seed in range(30):
        pairs = select_pairs(make_state(4, oc), Mode.COVERAGE, 2, rng(seed))
        assert {p.edge for p in pairs} == {(0, 1), (2, 3)}


def test_coverage_ties_are_seeded_not_id_order() -> None:
    firsts = Counter(
        select_pairs(make_state(8), Mode.COVERAGE, 1, rng(seed))[0].edge for seed in range(60)
    )
    assert len(firsts) > 10
    assert firsts[(0, 1)] < 10


# --------------------------------------------------------------------------- resampling


def complete_oc(n: int, value: tuple[int, int] = (1, 0)) -> OC:
    return {(i, j): value for i in range(n) for j in range(i + 1, n)}


def test_resampling_only_pass_edges_minus_in_flight() -> None:
    oc = complete_oc(6)
    remaining = {(0, 1), (2, 3), (4, 5), (1, 4)}
    state = make_state(6, oc, pass_remaining=remaining, in_flight={(2, 3)})
    pairs = select_pairs(state, Mode.RESAMPLING, 12, rng())
    chosen = {p.edge for p in pairs}
    assert chosen <= remaining - {(2, 3)}
    assert chosen  # at least one


def test_resampling_never_asks_a_new_edge() -> None:
    oc: OC = {(0, 1): (1, 0), (2, 3): (1, 0), (1, 2): (0, 0)}
    # (0, 2) and (1, 2) have no successful comparison: never resampled
    state = make_state(4, oc, pass_remaining={(0, 1), (0, 2), (1, 2), (2, 3)})
    pairs = select_pairs(state, Mode.RESAMPLING, 12, rng())
    assert {p.edge for p in pairs} == {(0, 1), (2, 3)}


def test_resampling_empty_pass_gives_nothing() -> None:
    state = make_state(4, complete_oc(4))
    assert select_pairs(state, Mode.RESAMPLING, 4, rng()) == []


def test_resampling_prefers_least_compared_edges() -> None:
    oc = complete_oc(6, (1, 1))
    oc[(0, 1)] = (1, 0)
    oc[(2, 5)] = (0, 1)
    oc[(3, 4)] = (1, 0)
    state = make_state(6, oc, pass_remaining=set(oc))
    for seed in range(10):
        pairs = select_pairs(state, Mode.RESAMPLING, 3, rng(seed))
        assert {p.edge for p in pairs} == {(0, 1), (2, 5), (3, 4)}


def test_resampling_then_prefers_under_sampled_nodes() -> None:
    # every pass edge compared once; node 5 has extra comparisons outside the pass
    oc = complete_oc(6)
    state = make_state(
        6,
        oc,
        pass_remaining={e for e in oc if e != (4, 5)},
        a=[3, 3, 3, 3, 3, 9],
        b=[2, 2, 2, 2, 2, 9],
    )
    for seed in range(10):
        pairs = select_pairs(state, Mode.RESAMPLING, 1, rng(seed))
        assert 5 not in (pairs[0].a, pairs[0].b)


def test_resampling_node_cap_holds() -> None:
    n = 24
    state = make_state(n, complete_oc(n), pass_remaining=set(complete_oc(n)))
    pairs = select_pairs(state, Mode.RESAMPLING, 12, rng(5))
    assert len(pairs) == 12
    assert is_disjoint(pairs)  # cap = ceil(24 / 24) = 1


def test_resampling_cap_above_one_spreads_the_wave() -> None:
    n = 5
    state = make_state(n, complete_oc(n), pass_remaining=set(complete_oc(n)))
    pairs = select_pairs(state, Mode.RESAMPLING, 4, rng(2))  # cap = ceil(8/5) = 2
    uses = Counter(nodes_of(pairs))
    assert max(uses.values()) <= 2
    assert len(pairs) == 4


# --------------------------------------------------------------------------- audit


def test_audit_draws_any_edge_except_in_flight() -> None:
    oc = {(0, 1): (1, 0)}
    state = make_state(4, oc, in_flight={(2, 3)})
    seen: set[tuple[int, int]] = set()
    for seed in range(40):
        pairs = select_pairs(state, Mode.AUDIT, 2, rng(seed))
        edges = [p.edge for p in pairs]
        assert len(set(edges)) == len(edges) == 2
        seen.update(edges)
    assert seen == {(0, 1), (0, 2), (0, 3), (1, 2), (1, 3)}


def test_audit_ignores_strategy_but_checks_its_name() -> None:
    state = make_state(6)
    a = select_pairs(state, Mode.AUDIT, 3, rng(4), strategy="balanced")
    b = select_pairs(state, Mode.AUDIT, 3, rng(4), strategy="swiss")
    assert a == b


# --------------------------------------------------------------------------- orientation


def test_orientation_complement_rule() -> None:
    oc: OC = {(0, 1): (2, 1), (2, 3): (0, 1)}
    pairs = orient([(0, 1), (2, 3)], [5, 0, 0, 5], [0, 5, 5, 0], oc, rng())
    # (0, 1) asked as (0, 1) more often: next (1, 0), despite the imbalance of the nodes
    assert pairs == [PlannedPair(1, 0), PlannedPair(2, 3)]


def test_orientation_shrinks_larger_imbalance() -> None:
    # node 0: A-B = +3, node 1: -1: node 0 goes to B
    assert orient([(0, 1)], [3, 0], [0, 1], {}, rng()) == [PlannedPair(1, 0)]
    # node 0: A-B = -1, node 1: -2: node 1 goes to A
    assert orient([(0, 1)], [0, 0], [1, 2], {}, rng()) == [PlannedPair(1, 0)]
    # node 0: A-B = -2, node 1: +2: node 0 goes to A
    assert orient([(1, 0)], [0, 2], [2, 0], {(0, 1): (1, 1)}, rng()) == [PlannedPair(0, 1)]


def test_orientation_counts_update_within_the_wave() -> None:
    # all balanced at start: the first pair is a coin; every next pair with node 0 must
    # move it back towards balance
    for seed in range(20):
        pairs = orient([(0, 1), (0, 2), (0, 3), (0, 4)], [0] * 5, [0] * 5, {}, rng(seed))
        a0 = sum(p.a == 0 for p in pairs)
        assert a0 == 2
        assert (pairs[0].a == 0) != (pairs[1].a == 0)


def test_orientation_tie_is_a_seeded_coin() -> None:
    firsts = {orient([(0, 1)], [0, 0], [0, 0], {}, rng(s))[0].a for s in range(30)}
    assert firsts == {0, 1}
    assert orient([(0, 1)], [0, 0], [0, 0], {}, rng(7)) == orient(
        [(0, 1)], [0, 0], [0, 0], {}, rng(7)
    )


# --------------------------------------------------------------------------- in-memory runs


@dataclass
class SimResult:
    reason: StopReason
    a: np.ndarray
    b: np.ndarray
    oc: OC
    waves: list[tuple[Mode, list[PlannedPair]]] = field(default_factory=list)
    passes: int = 0

    @property
    def calls(self) -> int:
        return sum(len(p) for _, p in self.waves)


def simulate(
    n: int,
    budget: int,
    *,
    wave: int = 12,
    small_net: bool = False,
    passes_small: int = 2,
    passes_regular: int = 1,
    seed: int = 0,
    strategy: str = "balanced",
) -> SimResult:
    """The workflow loop in memory with a judge that always succeeds."""
    gen = rng(seed)
    limits = ContinuationLimits(
        min_success_rate=0.8,
        min_comparisons_for_stability_check=12,
        score_stability_threshold=0.0,
        max_iterations=10_000,
        max_passes_small_net=passes_small,
        max_passes_regular=passes_regular,
    )
    a = np.zeros(n, dtype=np.int64)
    b = np.zeros(n, dtype=np.int64)
    oc: OC = {}
    remaining: frozenset[tuple[int, int]] = frozenset()
    res = SimResult(StopReason.EXHAUSTED, a, b, oc)
    sent = 0
    while True:
        cov = coverage_metrics(n, [e for e, v in oc.items() if sum(v) > 0])
        ctx = ContinuationContext(
            finished_comparisons=sent,
            successes=sent,
            failures=0,
            calls_sent=sent,
            total_budget=budget,
            waves_completed=len(res.waves),
            max_possible_pairs=cov.max_possible_pairs,
            successful_pairs_count=cov.successful_pairs_count,
            is_small_net=small_net,
            resampling_pass_count=res.passes,
            pass_in_progress=bool(remaining),
            max_score_change=None,
        )
        decision = decide(ctx, limits)
        if decision.is_final:
            res.reason = decision.reason
            return res
        if decision.starts_new_pass:
            res.passes += 1
            remaining = frozenset(e for e, v in oc.items() if sum(v) > 0)
        mode = (
            Mode.COVERAGE if decision.action is Action.REQUEST_MORE_COMPARISONS else Mode.RESAMPLING
        )
        state = PairingState(n, np.zeros(n), a.copy(), b.copy(), dict(oc), pass_remaining=remaining)
        pairs = select_pairs(state, mode, min(wave, budget - sent), gen, strategy)
        if not pairs:
            res.reason = StopReason.EXHAUSTED
            return res
        res.waves.append((mode, pairs))
        for p in pairs:
            a[p.a] += 1
            b[p.b] += 1
            e = p.edge
            fwd, rev = oc.get(e, (0, 0))
            oc[e] = (fwd + 1, rev) if p.a == e[0] else (fwd, rev + 1)
            if mode is Mode.RESAMPLING:
                remaining = remaining - {e}
        sent += len(pairs)


@pytest.mark.parametrize("seed", range(4))
def test_shape_lower5(seed: int) -> None:
    res = simulate(5, 60, small_net=True, passes_small=3, seed=seed)
    assert res.reason is StopReason.RESAMPLING_CAP
    assert res.calls == 40
    assert res.passes == 3
    cov = [p for m, p in res.waves if m is Mode.COVERAGE]
    resampled = [p for m, p in res.waves if m is Mode.RESAMPLING]
    assert sum(map(len, cov)) == 10
    assert sum(map(len, resampled)) == 30
    assert res.a.tolist() == [8] * 5
    assert res.b.tolist() == [8] * 5
    assert all(fwd > 0 and rev > 0 for fwd, rev in res.oc.values())
    assert all(v == (2, 2) for v in res.oc.values())


@pytest.mark.parametrize("seed", range(3))
def test_shape_regular_24_budget_552(seed: int) -> None:
    res = simulate(24, 552, seed=seed)
    assert res.reason is StopReason.BUDGET
    modes = Counter(m for m, p in res.waves for _ in p)
    assert modes == {Mode.COVERAGE: 276, Mode.RESAMPLING: 276}
    assert res.a.tolist() == [23] * 24
    assert res.b.tolist() == [23] * 24
    assert all(v == (1, 1) for v in res.oc.values())
    coverage_waves = [p for m, p in res.waves if m is Mode.COVERAGE]
    pass_waves = [p for m, p in res.waves if m is Mode.RESAMPLING]
    assert len(coverage_waves) == 23
    # the pass takes several waves, each node-disjoint (cap 1), about 23 of them
    assert 23 <= len(pass_waves) <= 26
    assert all(is_disjoint(p) for p in pass_waves)
    # coverage waves are spread over many nodes
    assert sum(is_disjoint(p) for p in coverage_waves) >= 20


@pytest.mark.parametrize("seed", range(3))
def test_shape_regular_24_budget_288(seed: int) -> None:
    res = simulate(24, 288, seed=seed)
    assert res.reason is StopReason.BUDGET
    assert res.calls == 288
    assert ((res.a + res.b) == 24).all()
    last_mode, last = res.waves[-1]
    assert last_mode is Mode.RESAMPLING
    assert len(last) == 12


def test_shape_regular_24_is_reproducible() -> None:
    first = simulate(24, 300, seed=11)
    again = simulate(24, 300, seed=11)
    other = simulate(24, 300, seed=12)
    assert first.waves == again.waves
    assert first.waves != other.waves


@pytest.mark.parametrize("strategy", ["random", "swiss"])
def test_other_strategies_complete_coverage_and_a_pass(strategy: str) -> None:
    res = simulate(9, 72, seed=1, strategy=strategy)
    assert res.reason is StopReason.BUDGET
    assert len(res.oc) == max_possible_pairs(9)
    assert all(v == (1, 1) for v in res.oc.values())  # complement rule for every edge


@pytest.mark.parametrize(("n", "budget", "bound"), [(24, 300, 1), (24, 400, 2), (12, 100, 2)])
def test_budget_ending_mid_pass_keeps_balance_close(n: int, budget: int, bound: int) -> None:
    worst = []
    for seed in range(5):
        res = simulate(n, budget, seed=seed)
        assert res.calls == budget
        worst.append(int(np.abs(res.a - res.b).max()))
    assert max(worst) <= bound


# --------------------------------------------------------------------------- properties


@st.composite
def states(draw: st.DrawFn) -> tuple[PairingState, Mode, int, str, int]:
    n = draw(st.integers(2, 11))
    all_edges = [(i, j) for i in range(n) for j in range(i + 1, n)]
    oc: OC = {}
    for e in all_edges:
        if draw(st.booleans()):
            oc[e] = (draw(st.integers(0, 3)), draw(st.integers(0, 3)))
    compared = [e for e, v in oc.items() if sum(v) > 0]
    in_flight = {e for e in all_edges if draw(st.integers(0, 9)) == 0}
    remaining = {e for e in compared if draw(st.booleans())}
    if draw(st.booleans()):  # a stale pass may name edges never compared
        remaining |= {e for e in all_edges if draw(st.integers(0, 7)) == 0}
    scores = draw(st.lists(st.sampled_from([0.0, 0.5, 1.0, -2.0]), min_size=n, max_size=n))
    state = make_state(n, oc, scores=scores, in_flight=in_flight, pass_remaining=remaining)
    mode = draw(st.sampled_from(list(Mode)))
    wave = draw(st.integers(1, 14))
    strategy = draw(st.sampled_from(STRATEGIES))
    seed = draw(st.integers(0, 2**32 - 1))
    return state, mode, wave, strategy, seed


def candidate_edges(state: PairingState, mode: Mode) -> set[tuple[int, int]]:
    n = state.n_nodes
    everything = {(i, j) for i in range(n) for j in range(i + 1, n)}
    compared = {e for e, v in state.orientation_counts.items() if sum(v) > 0}
    if mode is Mode.COVERAGE:
        cands = everything - compared
    elif mode is Mode.RESAMPLING:
        cands = set(state.pass_remaining) & compared
    else:
        cands = everything
    return cands - set(state.in_flight)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(states())
def test_selection_invariants(case: tuple[PairingState, Mode, int, str, int]) -> None:
    state, mode, wave, strategy, seed = case
    pairs = select_pairs(state, mode, wave, rng(seed), strategy)
    edges = [p.edge for p in pairs]
    cands = candidate_edges(state, mode)
    assert len(pairs) <= wave
    assert all(p.a != p.b for p in pairs)
    assert len(set(edges)) == len(edges)
    assert set(edges) <= cands  # no in-flight edge, no new edge when resampling
    uses = Counter(nodes_of(pairs))
    left = cands - set(edges)
    if mode is Mode.RESAMPLING:
        cap = resampling_node_cap(wave, state.n_nodes)
        assert max(uses.values(), default=0) <= cap
        if len(pairs) < wave:  # maximal: nothing left fits under the cap
            assert all(uses[x] >= cap or uses[y] >= cap for x, y in left)
    elif len(pairs) < wave:
        assert not left  # coverage and audit take every candidate when the wave has room
    if (
        mode is Mode.COVERAGE
        and strategy != "random"
        and (len(pairs) < wave or len(uses) < 2 * len(pairs))
    ):
        # not disjoint (or not full): then no candidate joins two nodes left out of the wave
        assert all(x in uses or y in uses for x, y in left)
    # same seed, same wave
    assert select_pairs(state, mode, wave, rng(seed), strategy) == pairs


@settings(max_examples=60, deadline=None)
@given(st.integers(2, 9), st.integers(0, 1000), st.sampled_from(STRATEGIES))
def test_orientation_balance_after_coverage(n: int, seed: int, strategy: str) -> None:
    res = simulate(n, max_possible_pairs(n), seed=seed, strategy=strategy)
    assert len(res.oc) == max_possible_pairs(n)
    # the greedy fair orientation keeps every node close to balance
    assert int(np.abs(res.a - res.b).max()) <= 3


def test_different_seeds_can_differ() -> None:
    state = make_state(12)
    for mode in (Mode.COVERAGE, Mode.AUDIT):
        for strategy in STRATEGIES:
            waves = {tuple(select_pairs(state, mode, 4, rng(s), strategy)) for s in range(10)}
            assert len(waves) > 1


def test_orientation_matrix_gives_the_same_selection() -> None:
    gen = rng(9)
    n = 30
    oc: OC = {}
    for i in range(n):
        for j in range(i + 1, n):
            if gen.random() < 0.6:
                oc[(i, j)] = (int(gen.integers(0, 2)), int(gen.integers(0, 2)))
    base = make_state(n, oc, pass_remaining={e for e, v in oc.items() if sum(v)})
    fast = PairingState(
        n,
        base.scores,
        base.a_counts,
        base.b_counts,
        oc,
        pass_remaining=base.pass_remaining,
        orientation_matrix=orientation_matrix(n, oc),
    )
    for mode in (Mode.COVERAGE, Mode.RESAMPLING):
        assert select_pairs(base, mode, 12, rng(1)) == select_pairs(fast, mode, 12, rng(1))


@pytest.mark.parametrize("strategy", ["balanced", "swiss"])
def test_candidate_graph_selects_what_the_candidate_matrix_selects(strategy: str) -> None:
    # the greedy strategies run on a CandidateGraph (no n x n matrix per wave); the
    # matrix path builds the same problem densely: both must choose the same edges
    from cj_runner.core.pairing import _graph_problem, _problem
    from cj_runner.core.strategies import REGISTRY

    gen = rng(11)
    for _ in range(60):
        n = int(gen.integers(2, 30))
        oc: OC = {}
        for i in range(n):
            for j in range(i + 1, n):
                if gen.random() < 0.5:
                    oc[(i, j)] = (int(gen.integers(0, 3)), int(gen.integers(1, 3)))
        flying = {(i, j) for i in range(n) for j in range(i + 1, n) if gen.random() < 0.05}
        state = make_state(
            n,
            oc,
            scores=list(gen.normal(size=n)),
            in_flight=flying,
            pass_remaining={e for e in oc if gen.random() < 0.7},
        )
        k = int(gen.integers(1, 14))
        for mode in (Mode.COVERAGE, Mode.RESAMPLING):
            seed = int(gen.integers(1 << 30))
            sparse = REGISTRY[strategy](_graph_problem(state, mode, k), k, rng(seed))
            dense = REGISTRY[strategy](_problem(state, mode, k), k, rng(seed))
            assert sparse == dense


# --------------------------------------------------------------------------- large nets


def test_coverage_on_500_nodes_fills_disjoint_waves() -> None:
    # speed is measured in benchmarks/, not here: this checks behaviour at that size
    n = 500
    gen = rng(0)
    state = PairingState(n, gen.normal(size=n), np.zeros(n, int), np.zeros(n, int), {})
    small = select_pairs(state, Mode.COVERAGE, 12, gen)
    big = select_pairs(state, Mode.COVERAGE, 200, gen)
    assert len(small) == 12 and is_disjoint(small)
    assert len(big) == 200 and is_disjoint(big)


def test_mode_may_be_given_as_its_stored_string() -> None:
    state = make_state(6)
    assert select_pairs(state, "coverage", 3, rng(2)) == select_pairs(  # type: ignore[arg-type]
        state, Mode.COVERAGE, 3, rng(2)
    )
    with pytest.raises(ValueError):
        select_pairs(state, "bogus", 3, rng(2))  # type: ignore[arg-type]
