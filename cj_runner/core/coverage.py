"""Coverage metadata and comparison-graph helpers (spec §4, §9).

``max_possible_pairs`` (nC2 over all nodes, anchors included) only drives coverage and
small-net semantics: it is never a cap or a denominator of completion, which is always
the call budget.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components as _cc

__all__ = [
    "CoverageMetrics",
    "connected_components",
    "coverage_metrics",
    "degree_per_node",
    "expected_coverage_waves",
    "max_possible_pairs",
    "planned_comparisons",
]


def max_possible_pairs(n_nodes: int) -> int:
    """nC2: the number of distinct edges between ``n_nodes`` nodes."""
    if n_nodes < 0:
        raise ValueError(f"n_nodes must be >= 0, got {n_nodes}")
    return n_nodes * (n_nodes - 1) // 2


@dataclass(frozen=True)
class CoverageMetrics:
    """Coverage metadata of a batch (spec §4)."""

    max_possible_pairs: int
    successful_pairs_count: int
    unique_coverage_complete: bool


def _edges(n_nodes: int, edges: Iterable[tuple[int, int]]) -> npt.NDArray[np.int64]:
    """Edges as an ``(m, 2)`` array of ``(lo, hi)``, checked against the batch."""
    arr = np.array([(a, b) for a, b in edges], dtype=np.int64).reshape(-1, 2)
    if arr.size:
        lo = np.minimum(arr[:, 0], arr[:, 1])
        hi = np.maximum(arr[:, 0], arr[:, 1])
        if lo.min() < 0 or hi.max() >= n_nodes:
            raise ValueError(f"an edge names a node outside 0..{n_nodes - 1}")
        if np.any(lo == hi):
            raise ValueError("an edge joins a node to itself")
        arr = np.column_stack([lo, hi])
    return arr


def coverage_metrics(n_nodes: int, successful_edges: Iterable[tuple[int, int]]) -> CoverageMetrics:
    """Coverage of a batch from the edges of its successful comparisons.

    Args:
        n_nodes: nodes in the batch, anchors included.
        successful_edges: one entry per successful comparison or per edge, in either
            orientation; repeats are counted once.

    Returns:
        ``max_possible_pairs`` = nC2, ``successful_pairs_count`` = distinct edges,
        ``unique_coverage_complete`` = whether every edge has a successful comparison.
    """
    arr = _edges(n_nodes, successful_edges)
    distinct = int(np.unique(arr[:, 0] * n_nodes + arr[:, 1]).size) if arr.size else 0
    total = max_possible_pairs(n_nodes)
    return CoverageMetrics(
        max_possible_pairs=total,
        successful_pairs_count=distinct,
        unique_coverage_complete=distinct == total,
    )


def connected_components(n_nodes: int, edges: Iterable[tuple[int, int]]) -> list[list[int]]:
    """Connected components of the comparison graph.

    Args:
        n_nodes: nodes in the batch; a node with no edge is a component of its own.
        edges: edges in either orientation (repeats allowed).

    Returns:
        Components as sorted lists of node indices, largest first, then by smallest
        node. A connected batch gives one component.
    """
    if n_nodes == 0:
        return []
    arr = _edges(n_nodes, edges)
    graph = coo_matrix(
        (np.ones(len(arr), dtype=np.int8), (arr[:, 0], arr[:, 1])), shape=(n_nodes, n_nodes)
    )
    _, labels = _cc(graph, directed=False)
    groups: dict[int, list[int]] = {}
    for node, label in enumerate(labels.tolist()):
        groups.setdefault(label, []).append(node)
    return sorted(groups.values(), key=lambda c: (-len(c), c[0]))


def degree_per_node(
    n_nodes: int, edges_with_multiplicity: Iterable[tuple[int, int]]
) -> npt.NDArray[np.int64]:
    """Comparisons per node: every occurrence of an edge counts once for both nodes."""
    arr = _edges(n_nodes, edges_with_multiplicity)
    return np.bincount(arr.ravel(), minlength=n_nodes).astype(np.int64)


def expected_coverage_waves(
    n_nodes: int, total_budget: int, wave_size: int, double_share: float = 0.0
) -> int:
    """Waves the coverage phase takes: ``ceil(min(nC2 * (1 + d), budget) / wave_size)``.

    Assumes every call succeeds; the wave size is
    ``COMPARISONS_PER_STABILITY_CHECK_ITERATION``; ``d`` is a panel's share of pairs also
    asked of a second judge (each such pair takes two calls of a wave).
    """
    if wave_size <= 0:
        raise ValueError(f"wave_size must be positive, got {wave_size}")
    calls = max_possible_pairs(n_nodes) * (1.0 + max(double_share, 0.0))
    return math.ceil(min(calls, max(total_budget, 0)) / wave_size)


def planned_comparisons(n_nodes: int, total_budget: int, max_passes: int) -> int:
    """Comparisons a batch makes when every call succeeds and nothing stops it early.

    Coverage (nC2) plus ``max_passes`` resampling passes of nC2 each, capped by the budget.
    """
    return min(max(total_budget, 0), max_possible_pairs(n_nodes) * (1 + max(max_passes, 0)))
