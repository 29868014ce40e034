"""The candidate edges of one wave without an ``n x n`` matrix (issue 14).

The greedy strategies (``balanced``, ``swiss``) only ever look at one row of the
candidate matrix at a time, plus per-node counts. A :class:`CandidateGraph` gives them
exactly that, in two forms:

* **complement** (coverage mode): every pair is a candidate except the ones listed per
  node (edges already compared, edges with a call in flight). Batches of thousands of
  essays compare each node with a few dozen others, so the exceptions are few: a row
  costs ``O(n)``, the per-node counts ``O(n)``, and nothing grows with the comparisons.
* **explicit** (resampling mode, or a dense matrix given by a caller): the candidate
  edges are listed, each with its count of earlier comparisons (the levels of the
  greedy) and the side the complement rule fixes for it.

The workflow keeps the per-node neighbour sets and degrees across waves
(:class:`cj_runner.core.workflow.WorkflowState`), updated as answers arrive.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence

import numpy as np
import numpy.typing as npt

BoolArray = npt.NDArray[np.bool_]
IntArray = npt.NDArray[np.int64]

_EMPTY = np.zeros(0, dtype=np.int64)


class CandidateGraph:
    """Candidate edges of one wave, level by level (see the module docstring)."""

    def __init__(
        self,
        n_nodes: int,
        *,
        blocked: Sequence[Collection[int]] | None = None,
        blocked_extra: Mapping[int, Collection[int]] | None = None,
        blocked_degree: IntArray | None = None,
        edges: IntArray | None = None,
        edge_counts: IntArray | None = None,
        sides: Mapping[tuple[int, int], int] | None = None,
    ) -> None:
        self.n = n_nodes
        self.complement = blocked is not None
        self._blocked = blocked
        self._extra = blocked_extra or {}
        if self.complement:
            assert blocked_degree is not None
            self._base_deg = (n_nodes - 1) - np.asarray(blocked_degree, dtype=np.int64)
        self._edges = _EMPTY.reshape(0, 2) if edges is None else np.asarray(edges, np.int64)
        self._counts = None if edge_counts is None else np.asarray(edge_counts, np.int64)
        self._sides = sides or {}
        self._level_edges = self._edges
        self._adj: list[IntArray] = []
        self._level_set: set[tuple[int, int]] = set()
        if not self.complement:
            self.set_level(None)

    # ------------------------------------------------------------ constructors

    @classmethod
    def complement_of(
        cls,
        n_nodes: int,
        neighbours: Sequence[Collection[int]],
        degree: IntArray,
        also_blocked: Collection[tuple[int, int]] = (),
    ) -> CandidateGraph:
        """Every pair except ``neighbours`` (per node) and the edges ``also_blocked``."""
        extra: dict[int, list[int]] = {}
        deg = np.array(degree, dtype=np.int64, copy=True)
        for lo, hi in also_blocked:
            if hi in neighbours[lo]:
                continue
            extra.setdefault(lo, []).append(hi)
            extra.setdefault(hi, []).append(lo)
            deg[lo] += 1
            deg[hi] += 1
        return cls(n_nodes, blocked=neighbours, blocked_extra=extra, blocked_degree=deg)

    @classmethod
    def from_dense(
        cls,
        candidates: BoolArray,
        edge_counts: npt.NDArray[np.integer] | None = None,
        next_a: npt.NDArray[np.integer] | None = None,
    ) -> CandidateGraph:
        """The explicit form of a symmetric boolean candidate matrix."""
        lo, hi = np.nonzero(np.triu(candidates, k=1))
        edges = np.column_stack([lo, hi]).astype(np.int64)
        counts = None if edge_counts is None else np.asarray(edge_counts)[lo, hi]
        sides: dict[tuple[int, int], int] = {}
        if next_a is not None:
            fwd = np.asarray(next_a)[lo, hi]
            for i in np.flatnonzero(fwd):
                u, v, s = int(lo[i]), int(hi[i]), int(fwd[i])
                sides[(u, v)] = s
                sides[(v, u)] = -s
        return cls(candidates.shape[0], edges=edges, edge_counts=counts, sides=sides)

    # ------------------------------------------------------------ levels

    def levels(self) -> list[int | None]:
        """Edge-count levels of the candidates, least compared first."""
        if self.complement or self._counts is None:
            return [None]
        return [int(t) for t in np.unique(self._counts)]

    def set_level(self, level: int | None) -> None:
        """Restrict the base candidates to the edges compared ``level`` times."""
        if self.complement:
            return
        edges = self._edges
        if level is not None and self._counts is not None:
            edges = edges[self._counts == level]
        self._level_edges = edges
        self._level_set = {(int(a), int(b)) for a, b in edges.tolist()}
        ends = np.concatenate([edges[:, 0], edges[:, 1]])
        others = np.concatenate([edges[:, 1], edges[:, 0]])
        order = np.argsort(ends, kind="stable")
        bounds = np.searchsorted(ends[order], np.arange(self.n + 1))
        sorted_others = others[order]
        self._adj = [sorted_others[bounds[i] : bounds[i + 1]] for i in range(self.n)]
        self._deg = np.diff(bounds).astype(np.int64)

    # ------------------------------------------------------------ queries

    def base_degree(self) -> IntArray:
        """Candidates of every node at the current level (a fresh array)."""
        if self.complement:
            return self._base_deg.copy()
        return self._deg.copy()

    def base_row(self, x: int) -> BoolArray:
        """Candidate partners of ``x`` at the current level (a fresh array)."""
        if self.complement:
            assert self._blocked is not None
            row = np.ones(self.n, dtype=np.bool_)
            row[x] = False
            nb = self._blocked[x]
            if nb:
                row[np.fromiter(nb, dtype=np.int64, count=len(nb))] = False
            extra = self._extra.get(x)
            if extra:
                row[np.asarray(extra, dtype=np.int64)] = False
            return row
        row = np.zeros(self.n, dtype=np.bool_)
        row[self._adj[x]] = True
        return row

    def has(self, x: int, y: int) -> bool:
        """Whether ``(x, y)`` is a base candidate at the current level."""
        if x == y:
            return False
        if self.complement:
            assert self._blocked is not None
            return y not in self._blocked[x] and y not in self._extra.get(x, ())
        return ((x, y) if x < y else (y, x)) in self._level_set

    def side(self, u: int, v: int) -> int:
        """``+1`` when the complement rule puts ``u`` in position A, ``-1`` in B, else 0."""
        return self._sides.get((u, v), 0)

    def sides(self, u: int, partners: IntArray) -> IntArray:
        """:meth:`side` of ``u`` against every partner."""
        if not self._sides:
            return np.zeros(partners.size, dtype=np.int64)
        get = self._sides.get
        return np.fromiter(
            (get((u, int(v)), 0) for v in partners), dtype=np.int64, count=partners.size
        )

    def edges(self) -> IntArray:
        """The explicit candidate edges ``(lo, hi)`` of every level (explicit form only)."""
        return self._edges
