"""What pair selection knows about a batch before a wave (:class:`PairingState`), and the
successful comparisons per orientation of each edge as a live mapping
(:class:`OrientationCounts`) or a matrix (:func:`orientation_matrix`)."""

from __future__ import annotations

from collections.abc import Collection, Iterator, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt


@dataclass(frozen=True)
class PairingState:
    """What pair selection knows about a batch before a wave.

    Attributes:
        n_nodes: nodes in the batch (students and anchors), indices ``0..n-1``.
        scores: current BT scores (zeros before the first fit).
        a_counts: per node, successful comparisons in position A.
        b_counts: per node, successful comparisons in position B.
        orientation_counts: edge ``(lo, hi)`` -> (successful comparisons asked as
            ``(lo, hi)``, asked as ``(hi, lo)``); an edge is "compared" iff it is present
            with a positive sum.
        in_flight: edges with a call under way: never candidates.
        pass_remaining: resampling: edges of the current pass not yet asked in it.
        se: standard errors of the scores (adaptive strategies), optional.
        grade_uncertainty: per node weight ``>= 0`` (``grade_boundary``), optional; see
            :func:`cj_runner.core.strategies.grade_weights`.
        orientation_matrix: optional ``n x n`` integer matrix, ``[a, b]`` = successful
            comparisons asked as ``(a, b)``; when given it must agree with
            ``orientation_counts`` and is used instead of it to find compared edges
            (see :func:`orientation_matrix`).
        prior_precision: ridge of the Bradley-Terry fit (``infogain``, ``grade_boundary``).
        neighbours: optional, per node the nodes it has a successful comparison with
            (must agree with ``orientation_counts``), with ``degree`` their sizes; a
            caller that keeps them across waves (:class:`~cj_runner.core.workflow.
            WorkflowState`) saves rebuilding them, so a coverage wave of the greedy
            strategies costs ``O(n)`` per pair, whatever the comparisons so far.
        degree: ``len(neighbours[i])`` for every node (with ``neighbours``).
        node_weight: optional per node selection weight ``>= 1`` (``ANCHOR_WEIGHT`` on the
            anchors; :class:`~cj_runner.core.strategies.SelectionProblem` says how each
            strategy uses it); ``None``: every node alike. Audit pairs ignore it.
    """

    n_nodes: int
    scores: np.ndarray
    a_counts: np.ndarray
    b_counts: np.ndarray
    orientation_counts: Mapping[tuple[int, int], tuple[int, int]]
    in_flight: frozenset[tuple[int, int]] = frozenset()
    pass_remaining: frozenset[tuple[int, int]] = frozenset()
    se: np.ndarray | None = None
    grade_uncertainty: np.ndarray | None = None
    orientation_matrix: np.ndarray | None = None
    prior_precision: float = 0.01
    neighbours: Sequence[Collection[int]] | None = None
    degree: np.ndarray | None = None
    node_weight: np.ndarray | None = None


class OrientationCounts(Mapping[tuple[int, int], tuple[int, int]]):
    """``orientation_counts`` as a live view of per-ordered-pair counts (no copy per wave).

    ``ordered`` maps ``(a, b)`` to the successful comparisons asked as ``(a, b)``;
    ``edges`` is the set of compared edges ``(lo, hi)``. Both are read, never copied, so
    a caller that updates them as answers arrive hands selection an up-to-date mapping
    in ``O(1)``.
    """

    def __init__(
        self, ordered: Mapping[tuple[int, int], int], edges: Collection[tuple[int, int]]
    ) -> None:
        self._ordered = ordered
        self._edges = edges

    def __getitem__(self, key: tuple[int, int]) -> tuple[int, int]:
        if key not in self._edges:
            raise KeyError(key)
        lo, hi = key
        return self._ordered.get((lo, hi), 0), self._ordered.get((hi, lo), 0)

    def __iter__(self) -> Iterator[tuple[int, int]]:
        return iter(self._edges)

    def __len__(self) -> int:
        return len(self._edges)


def orientation_matrix(
    n_nodes: int, orientation_counts: Mapping[tuple[int, int], tuple[int, int]]
) -> npt.NDArray[np.int64]:
    """The ``n x n`` matrix form of ``orientation_counts``: ``[a, b]`` = asked as (a, b).

    A caller that keeps this matrix up to date (one increment per success) can pass it
    as :attr:`PairingState.orientation_matrix` to skip converting the mapping on every
    wave, which matters for batches of hundreds of nodes.
    """
    m = np.zeros((n_nodes, n_nodes), dtype=np.int64)
    for (lo, hi), (fwd, rev) in orientation_counts.items():
        m[lo, hi] += fwd
        m[hi, lo] += rev
    return m
