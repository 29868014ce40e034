"""What a strategy sees (:class:`SelectionProblem`) and what it is (:data:`Strategy`)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from cj_runner.core.candidates import CandidateGraph
from cj_runner.core.models import Mode

BoolMatrix = npt.NDArray[np.bool_]
FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]
Edge = tuple[int, int]


@dataclass(frozen=True)
class SelectionProblem:
    """Everything a strategy may look at when it chooses the edges of one wave.

    Attributes:
        n_nodes: nodes in the batch.
        candidates: ``n x n`` symmetric boolean matrix, ``True`` where the edge may be
            chosen in this wave (mode rules and in-flight edges already applied); the
            diagonal is ``False``. Strategies must not modify it. ``None`` when ``graph``
            is given (the greedy strategies never need the matrix).
        node_counts: per node, successful comparisons so far (``A + B``).
        scores: current BT scores (zeros before the first fit).
        mode: the mode the candidates were built for.
        edge_counts: ``n x n`` symmetric matrix of successful comparisons per edge, or
            ``None`` when every candidate has the same count (coverage mode).
        node_cap: most appearances of one node in this wave, or ``None`` for no cap.
        imbalance: per node ``A - B`` before the wave.
        next_a: ``n x n``, for a candidate edge ``(u, v)``: ``+1`` when the complement
            rule will put ``u`` in position A, ``-1`` in B, ``0`` when it is free
            (resampling; ``None`` in coverage, where every edge is free).
        in_flight: ``n x n`` symmetric boolean matrix of edges with a call under way
            (never candidates; ``infogain`` counts them as pending information).
        se: standard errors of the scores, when known (adaptive strategies).
        grade_uncertainty: per node weight ``>= 0`` (``grade_boundary``), when known.
        comparisons: ``n x n`` symmetric matrix of successful comparisons per edge (both
            orientations, every mode), for the adaptive strategies; ``None`` counts as
            no comparison yet.
        prior_precision: ridge of the Bradley-Terry fit (the Laplace approximation of
            ``infogain`` and ``grade_boundary`` uses it).
        graph: the same candidates (levels and complement sides included) without an
            ``n x n`` matrix; the greedy strategies work on it.
        node_weight: per node selection weight ``>= 1`` (``ANCHOR_WEIGHT`` on the anchors),
            or ``None``: every node alike. ``random`` draws an edge in proportion to the
            product of its nodes' weights; ``infogain`` and ``grade_boundary`` multiply
            a node's term of the trace by its weight and let a node of weight ``K`` appear
            ``ceil(K)`` times in a wave's node-disjoint phase; ``balanced`` and ``swiss``
            ignore it.
    """

    n_nodes: int
    candidates: BoolMatrix | None
    node_counts: FloatArray
    scores: FloatArray
    mode: Mode = Mode.COVERAGE
    edge_counts: IntArray | None = None
    node_cap: int | None = None
    imbalance: IntArray | None = None
    next_a: npt.NDArray[np.int8] | None = None
    in_flight: BoolMatrix | None = None
    se: FloatArray | None = None
    grade_uncertainty: FloatArray | None = None
    comparisons: IntArray | None = None
    prior_precision: float = 0.01
    graph: CandidateGraph | None = None
    node_weight: FloatArray | None = None

    def candidate_graph(self) -> CandidateGraph:
        """The candidates as a :class:`CandidateGraph` (``graph``, else from the matrices)."""
        if self.graph is not None:
            return self.graph
        assert self.candidates is not None
        return CandidateGraph.from_dense(self.candidates, self.edge_counts, self.next_a)

    def candidate_matrix(self) -> BoolMatrix:
        """The candidates as an ``n x n`` matrix (built from ``graph`` when not given)."""
        if self.candidates is not None:
            return self.candidates
        assert self.graph is not None
        return np.stack([self.graph.base_row(x) for x in range(self.n_nodes)])


Strategy = Callable[[SelectionProblem, int, np.random.Generator], list[Edge]]
