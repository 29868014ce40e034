"""Pairs asked of two judges on purpose (a panel's ``PANEL_DOUBLE_SHARE``): how many per
wave, which pairs, which two judges, and how a wave plan holds them."""

from __future__ import annotations

import math
from collections import Counter

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cj_runner.core.continuation import ContinuationLimits
from cj_runner.core.models import Mode, edge
from cj_runner.core.panel_design import (
    assign_doubles,
    double_count,
    judge_pair_order,
    judge_pairs,
)
from cj_runner.core.workflow import WorkflowState


@given(
    size=st.integers(0, 60),
    share=st.floats(0.0, 1.0, allow_nan=False),
    seed=st.integers(0, 2**31),
)
def test_double_count_stays_within_the_wave(size: int, share: float, seed: int) -> None:
    n = double_count(size, share, np.random.default_rng(seed))
    expected = size * share / (1 + share)
    assert 0 <= n <= size // 2
    assert math.floor(expected) - 1 <= n <= math.ceil(expected)  # one rounding draw


def test_double_count_averages_to_the_share_of_pairs() -> None:
    rng = np.random.default_rng(3)
    counts = [double_count(12, 0.15, rng) for _ in range(4000)]
    doubles = sum(counts)
    pairs = 12 * len(counts) - doubles
    assert doubles / pairs == pytest.approx(0.15, abs=0.01)


def test_double_count_refuses_a_share_out_of_range() -> None:
    with pytest.raises(ValueError):
        double_count(12, 1.5, np.random.default_rng(0))


@given(n_judges=st.integers(2, 7), seed=st.integers(0, 2**31))
def test_the_judge_pair_round_holds_every_pair_of_judges_once(n_judges: int, seed: int) -> None:
    order = judge_pair_order(n_judges, seed)
    assert sorted(order) == judge_pairs(n_judges)
    assert len(order) == n_judges * (n_judges - 1) // 2
    assert order == judge_pair_order(n_judges, seed)  # seeded


@given(
    n_pairs=st.integers(1, 40),
    n_doubles=st.integers(0, 40),
    n_judges=st.integers(2, 6),
    start=st.integers(0, 100),
    seed=st.integers(0, 2**31),
)
def test_doubles_are_distinct_pairs_each_asked_of_two_different_judges(
    n_pairs: int, n_doubles: int, n_judges: int, start: int, seed: int
) -> None:
    order = judge_pair_order(n_judges, seed)
    out = assign_doubles(n_pairs, n_doubles, order, start, np.random.default_rng(seed))
    assert len(out) == min(n_pairs, n_doubles)
    indices = [index for index, _, _ in out]
    assert indices == sorted(set(indices))
    assert all(0 <= index < n_pairs for index in indices)
    for k, (_, first, second) in enumerate(out):
        assert first != second
        assert tuple(sorted((first, second))) == order[(start + k) % len(order)]


@settings(max_examples=30, deadline=None)
@given(n_judges=st.integers(2, 5), seed=st.integers(0, 2**31), waves=st.integers(1, 20))
def test_every_two_judges_share_the_same_number_of_doubles_to_one(
    n_judges: int, seed: int, waves: int
) -> None:
    """Going round the pairs of judges across waves of any size balances them exactly."""
    rng = np.random.default_rng(seed)
    order = judge_pair_order(n_judges, seed)
    planned = 0
    by_pair: Counter[tuple[int, int]] = Counter()
    for _ in range(waves):
        n = int(rng.integers(0, 5))
        for _, first, second in assign_doubles(10, n, order, planned, rng):
            by_pair[(min(first, second), max(first, second))] += 1
        planned += n
    counts = [by_pair[p] for p in judge_pairs(n_judges)]
    assert sum(counts) == planned
    assert max(counts) - min(counts) <= 1


def _state(n_judges: int, share: float, budget: int = 500, seed: int = 5) -> WorkflowState:
    return WorkflowState(
        n_nodes=24,
        n_students=24,
        total_budget=budget,
        limits=ContinuationLimits(0.8, 12, 0.0, 50, 2, 1),
        wave_size=12,
        strategy="balanced",
        seed=seed,
        n_judges=n_judges,
        double_share=share,
    )


def test_a_wave_holds_each_doubled_pair_and_its_complement_for_two_judges() -> None:
    wf = _state(3, 0.2)
    pairs = wf.plan_wave(1)
    judges = wf.wave_judges
    assert len(pairs) == 12 == len(judges) == len(wf.wave_modes)
    doubled = [k for k, j in enumerate(judges) if j is not None]
    n_double = len(doubled) // 2
    assert n_double == 2  # 12 * 0.2 / 1.2
    main, seconds = pairs[: 12 - n_double], pairs[12 - n_double :]
    assert len({p.edge for p in main}) == len(main)  # the pairs themselves are distinct
    for k, second in enumerate(seconds):
        first_index = next(i for i, p in enumerate(main) if p.edge == second.edge)
        first = main[first_index]
        assert (second.a, second.b) == (first.b, first.a)  # the complement
        j1, j2 = judges[first_index], judges[12 - n_double + k]
        assert j1 is not None and j2 is not None and j1 != j2
    assert all(m == Mode.COVERAGE for m in wf.wave_modes)
    assert wf.doubles_planned == n_double


def test_doubles_count_against_the_budget_and_the_calls_in_flight() -> None:
    wf = _state(3, 1.0, budget=9)
    pairs = wf.plan_wave(1)
    # 9 calls: 3.5 second asks expected, at most 9 // 2 = 4, so 5 pairs and 4 second asks
    assert len(pairs) == 9 and wf.doubles_planned == 4
    assert len({p.edge for p in pairs}) == 5
    pending = [(p.a, p.b) for p in pairs]
    assert wf.plan_wave(2, pending) == []  # the budget is planned out
    wf.total_budget = 12
    assert len(wf.plan_wave(2, pending)) == 3  # three calls left: 2 pairs, 1 second ask


@pytest.mark.parametrize("n_judges", [1, 3])
def test_without_doubles_a_panel_selects_exactly_as_one_judge(n_judges: int) -> None:
    plain, panel = _state(1, 0.0), _state(n_judges, 0.0)
    assert panel.plan_wave(1) == plain.plan_wave(1)
    assert panel.wave_judges == [None] * 12
    one_judge = _state(1, 0.5)  # a share with one judge changes nothing
    assert one_judge.plan_wave(1) == plain.plan_wave(1)


def test_the_same_seed_plans_the_same_doubles() -> None:
    a, b = _state(4, 0.3, seed=11), _state(4, 0.3, seed=11)
    for wave in (1, 2, 3):
        assert a.plan_wave(wave) == b.plan_wave(wave)
        assert a.wave_judges == b.wave_judges


def test_doubled_edges_leave_the_pass_like_any_asked_edge() -> None:
    wf = _state(2, 0.5)
    for a, b in [(0, 1), (2, 3), (4, 5)]:
        wf.record_success(a, b, "A")
    wf.mode = Mode.RESAMPLING
    wf.pass_remaining = {edge(0, 1), edge(2, 3), edge(4, 5)}
    pairs = wf.plan_wave(1)
    assert {p.edge for p in pairs} <= {edge(0, 1), edge(2, 3), edge(4, 5)}
    assert all(m == Mode.RESAMPLING for m in wf.wave_modes)
    wf.end_wave(1, [(p.a, p.b) for p in pairs])
    assert not wf.pass_remaining & {p.edge for p in pairs}


def test_audit_pairs_are_never_doubled_even_when_fewer_are_found() -> None:
    """Second asks double the wave's own pairs only; with audits asked (and however many
    the audit selection finds) every doubled pair is one of the mode's pairs."""
    for seed in range(20):
        wf = _state(3, 0.5, seed=seed)
        wf.audit_share = 0.3
        pairs = wf.plan_wave(1)
        audits = {p.edge for p, m in zip(pairs, wf.wave_modes, strict=True) if m == Mode.AUDIT}
        doubled = Counter(p.edge for p in pairs)
        assert audits
        assert all(doubled[e] == 1 for e in audits)
        assert any(n == 2 for n in doubled.values())
