"""Coverage metadata and graph helpers (spec §4)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from cj_runner.core.coverage import (
    CoverageMetrics,
    connected_components,
    coverage_metrics,
    degree_per_node,
    expected_coverage_waves,
    max_possible_pairs,
    planned_comparisons,
)


@pytest.mark.parametrize(
    ("n", "pairs"), [(0, 0), (1, 0), (2, 1), (5, 10), (24, 276), (500, 124750)]
)
def test_max_possible_pairs(n: int, pairs: int) -> None:
    assert max_possible_pairs(n) == pairs


def test_max_possible_pairs_rejects_negative() -> None:
    with pytest.raises(ValueError):
        max_possible_pairs(-1)


def test_coverage_counts_distinct_edges_in_either_orientation() -> None:
    m = coverage_metrics(4, [(0, 1), (1, 0), (0, 1), (2, 3)])
    assert m == CoverageMetrics(6, 2, False)


def test_coverage_complete() -> None:
    edges = [(j, i) for i in range(5) for j in range(i + 1, 5)]
    assert coverage_metrics(5, edges) == CoverageMetrics(10, 10, True)


def test_coverage_of_nothing() -> None:
    assert coverage_metrics(3, []) == CoverageMetrics(3, 0, False)
    assert coverage_metrics(1, []).unique_coverage_complete


@pytest.mark.parametrize("bad", [[(0, 5)], [(2, 2)], [(-1, 0)]])
def test_coverage_rejects_bad_edges(bad: list[tuple[int, int]]) -> None:
    with pytest.raises(ValueError):
        coverage_metrics(5, bad)


def test_connected_components_order() -> None:
    comps = connected_components(7, [(5, 6), (0, 2), (2, 4), (4, 0)])
    assert comps == [[0, 2, 4], [5, 6], [1], [3]]
    assert connected_components(0, []) == []
    assert connected_components(3, [(0, 1), (1, 2)]) == [[0, 1, 2]]


def test_degree_counts_multiplicity() -> None:
    deg = degree_per_node(4, [(0, 1), (1, 0), (1, 2)])
    assert deg.tolist() == [2, 3, 1, 0]


@pytest.mark.parametrize(
    ("n", "budget", "wave", "waves"),
    [(24, 552, 12, 23), (24, 100, 12, 9), (5, 60, 12, 1), (500, 10000, 12, 834), (2, 5, 12, 1)],
)
def test_expected_coverage_waves(n: int, budget: int, wave: int, waves: int) -> None:
    assert expected_coverage_waves(n, budget, wave) == waves


def test_expected_coverage_waves_rejects_empty_wave() -> None:
    with pytest.raises(ValueError):
        expected_coverage_waves(5, 10, 0)


@pytest.mark.parametrize(
    ("n", "budget", "passes", "planned"),
    [(5, 60, 3, 40), (24, 552, 1, 552), (24, 288, 1, 288), (24, 1000, 1, 552), (24, 1000, 0, 276)],
)
def test_planned_comparisons(n: int, budget: int, passes: int, planned: int) -> None:
    assert planned_comparisons(n, budget, passes) == planned


@given(
    st.integers(1, 12).flatmap(
        lambda n: st.tuples(
            st.just(n),
            st.lists(
                st.tuples(st.integers(0, n - 1), st.integers(0, n - 1)).filter(
                    lambda e: e[0] != e[1]
                ),
                max_size=40,
            ),
        )
    )
)
def test_graph_properties(case: tuple[int, list[tuple[int, int]]]) -> None:
    n, edges = case
    comps = connected_components(n, edges)
    # a partition of the nodes; every edge inside one component
    flat = sorted(x for c in comps for x in c)
    assert flat == list(range(n))
    where = {x: i for i, c in enumerate(comps) for x in c}
    assert all(where[a] == where[b] for a, b in edges)
    deg = degree_per_node(n, edges)
    assert int(deg.sum()) == 2 * len(edges)
    m = coverage_metrics(n, edges)
    assert m.successful_pairs_count == len({(min(e), max(e)) for e in edges})
    assert m.successful_pairs_count <= m.max_possible_pairs
    assert m.unique_coverage_complete == (m.successful_pairs_count == max_possible_pairs(n))
    # a complete graph is one component
    if m.unique_coverage_complete and n > 0:
        assert len(comps) == 1
    assert isinstance(deg, np.ndarray)
