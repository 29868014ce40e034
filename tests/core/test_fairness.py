"""Positional fairness (spec §9)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from cj_runner.core.fairness import fairness_metrics, nodes_above, skew
from cj_runner.core.models import Mode, Outcome


def test_skew_values_and_nan_for_unseen_nodes() -> None:
    s = skew([8, 3, 0, 0], [8, 1, 2, 0])
    assert s[:3].tolist() == [0.0, 0.5, 1.0]
    assert math.isnan(s[3])


def test_nodes_above_ignores_nan() -> None:
    assert nodes_above([0.0, 0.5, float("nan"), 0.2], 0.2) == [1]


def test_balanced_batch() -> None:
    # every edge of 3 nodes asked both ways
    outcomes = [
        Outcome(0, 1, "A"),
        Outcome(1, 0, "B"),
        Outcome(1, 2, "A"),
        Outcome(2, 1, "B"),
        Outcome(0, 2, "B"),
        Outcome(2, 0, "A"),
    ]
    m = fairness_metrics(3, outcomes)
    assert m.a_counts.tolist() == [2, 2, 2]
    assert m.b_counts.tolist() == [2, 2, 2]
    assert m.max_skew == 0.0
    assert m.mean_skew == 0.0
    assert m.never_in_a == [] and m.never_in_b == []
    assert m.missing_complement == []
    # the same node won in both orders on every edge: no flip
    assert m.flip_rate == 0.0
    assert m.flip_edges == 3
    assert m.comparisons == 6
    assert m.position_a_wins == 3
    assert m.position_a_share == 0.5


def test_missing_complement_and_never_in_positions() -> None:
    outcomes = [
        Outcome(0, 1, "A"),
        Outcome(0, 1, "B"),  # (0, 1) twice, never as (1, 0)
        Outcome(2, 1, "A"),  # once only: not "missing"
    ]
    m = fairness_metrics(4, outcomes)
    assert m.missing_complement == [(0, 1)]
    assert m.never_in_a == [1, 3]
    assert m.never_in_b == [0, 2, 3]
    assert m.max_skew == 1.0
    assert math.isnan(m.skew[3])
    assert m.flip_rate is None
    assert m.flip_edges == 0


def test_flip_rate_counts_winner_changes_with_order() -> None:
    outcomes = [
        # edge (0, 1): position A always wins -> the winner changes with the order
        Outcome(0, 1, "A"),
        Outcome(1, 0, "A"),
        # edge (2, 3): node 3 wins both ways -> no flip
        Outcome(2, 3, "B"),
        Outcome(3, 2, "A"),
    ]
    m = fairness_metrics(4, outcomes)
    assert m.flip_edges == 2
    assert m.flip_rate == pytest.approx(0.5)


def test_flip_rate_for_edges_asked_more_than_twice() -> None:
    # (0, 1) asked twice as (0, 1) (node 0 wins once) and once as (1, 0) (node 0 wins):
    # p = 1/2, q = 1 -> chance of different winners = 1/2 * 0 + 1/2 * 1 = 0.5
    outcomes = [Outcome(0, 1, "A"), Outcome(0, 1, "B"), Outcome(1, 0, "B")]
    m = fairness_metrics(2, outcomes)
    assert m.flip_edges == 1
    assert m.flip_rate == pytest.approx(0.5)
    assert m.missing_complement == []


def test_mode_filter() -> None:
    outcomes = [
        Outcome(0, 1, "A", Mode.COVERAGE, 0),
        Outcome(1, 0, "A", Mode.RESAMPLING, 1),
    ]
    cov = fairness_metrics(2, outcomes, mode=Mode.COVERAGE)
    assert cov.a_counts.tolist() == [1, 0]
    assert cov.comparisons == 1
    res = fairness_metrics(2, outcomes, mode=Mode.RESAMPLING)
    assert res.a_counts.tolist() == [0, 1]


def test_empty_batch() -> None:
    m = fairness_metrics(3, [])
    assert m.max_skew == 0.0 and m.mean_skew == 0.0
    assert m.never_in_a == [0, 1, 2]
    assert m.position_a_share is None and m.position_a_ci95 is None


def test_rejects_outside_nodes() -> None:
    with pytest.raises(ValueError):
        fairness_metrics(2, [Outcome(0, 2, "A")])
    with pytest.raises(ValueError):
        fairness_metrics(2, [Outcome(1, 1, "A")])


@given(
    st.integers(2, 8).flatmap(
        lambda n: st.tuples(
            st.just(n),
            st.lists(
                st.tuples(
                    st.integers(0, n - 1), st.integers(0, n - 1), st.sampled_from(["A", "B"])
                ).filter(lambda t: t[0] != t[1]),
                max_size=40,
            ),
        )
    )
)
def test_fairness_properties(case: tuple[int, list[tuple[int, int, str]]]) -> None:
    n, rows = case
    outcomes = [Outcome(a, b, w) for a, b, w in rows]  # type: ignore[arg-type]
    m = fairness_metrics(n, outcomes)
    assert int(m.a_counts.sum()) == int(m.b_counts.sum()) == len(rows)
    seen = ~np.isnan(m.skew)
    assert np.all((m.skew[seen] >= 0) & (m.skew[seen] <= 1))
    assert 0.0 <= m.mean_skew <= m.max_skew <= 1.0
    if m.flip_rate is not None:
        assert 0.0 <= m.flip_rate <= 1.0
    if m.position_a_ci95 is not None and m.position_a_share is not None:
        lo, hi = m.position_a_ci95
        assert lo <= m.position_a_share <= hi
    # swapping every pair's order and its winner swaps A and B counts
    mirrored = [Outcome(o.b, o.a, "B" if o.winner == "A" else "A") for o in outcomes]
    mm = fairness_metrics(n, mirrored)
    assert mm.a_counts.tolist() == m.b_counts.tolist()
    assert mm.missing_complement == m.missing_complement
    assert mm.flip_rate == m.flip_rate
