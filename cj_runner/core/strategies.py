"""Matching strategies: which candidate edges go into a wave.

A strategy only chooses *edges* (unordered pairs); :mod:`cj_runner.core.pairing` builds
the candidate set for the mode (coverage, resampling, audit) beforehand and orients the
chosen edges afterwards with the fair complement rule, so every strategy gets the same
candidate rules and the same A/B fairness for free.

Interface: a strategy is a function ``(problem, k, rng) -> list[(lo, hi)]`` that returns
at most ``k`` distinct edges, in the order they were chosen, all of them candidates of
``problem`` and, when ``problem.node_cap`` is set, with no node more than ``node_cap``
times. It must draw all randomness from ``rng`` and never break ties by node id. New
strategies (issue 8: ``infogain``, ``grade_boundary``) are added to :data:`REGISTRY`.

Shipped strategies:

* ``balanced`` (default, spec §6): greedy, node first. Within the lowest tier of edge
  counts (resampling: "edges compared least often"), while node-disjoint pairs remain it
  takes the node with the fewest comparisons (ties: fewest free partners left, which
  keeps the wave's matching large; in resampling then the largest ``|A - B|``; then a
  seeded random key) and pairs it with the free partner with the fewest comparisons,
  then (coverage) the closest current score, then the partner that leaves both nodes'
  A/B positions most even once oriented, then the fewest free partners, then a seeded
  random key. When no disjoint pair is left, a short augmenting-path repair (swap one
  chosen pair for two) makes the disjoint part as large as it can, and the rest of the
  wave goes to the pairs whose nodes were used least in it. Counts include the pairs
  already chosen in the wave.
* ``swiss``: like ``balanced`` but the partner is the closest current score first, then
  the fewest comparisons (Pollitt's Swiss pairing: nearest score among the least compared).
* ``random``: uniformly random candidate edges (respecting the resampling node cap).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

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
            diagonal is ``False``. Strategies must not modify it.
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
        grade_uncertainty: per node weight in ``[0, 1]`` (``grade_boundary``), when known.
    """

    n_nodes: int
    candidates: BoolMatrix
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


Strategy = Callable[[SelectionProblem, int, np.random.Generator], list[Edge]]

_Keys = tuple[npt.NDArray[np.generic], ...]


def _argmin_lex(idx: IntArray, keys: tuple[npt.NDArray[np.generic], ...]) -> int:
    """The element of ``idx`` with the smallest keys (``np.lexsort`` order: last is primary)."""
    return int(idx[np.lexsort(keys)[0]])


class _Greedy:
    """Mutable state of one greedy wave: remaining candidates, uses in this wave.

    ``tier`` holds the candidates of the current edge-count level that can still be
    taken (not chosen, both nodes under the cap); ``deg`` its row sums; ``fdeg`` for
    every node the number of its ``tier`` partners not used yet in this wave; ``d`` the
    ``A - B`` of every node as the orientation step will leave it. All are kept up to
    date in O(n) per pair taken.
    """

    def __init__(self, problem: SelectionProblem, rng: np.random.Generator) -> None:
        n = problem.n_nodes
        self.problem = problem
        self.uses = np.zeros(n, dtype=np.int64)
        self.tie = rng.random(n)
        self.chosen: list[Edge] = []
        self.level: int | None = None
        self.base = problem.candidates
        self.tier = problem.candidates.copy()
        self.deg = np.zeros(n, dtype=np.int64)
        self.fdeg = np.zeros(n, dtype=np.int64)
        self.d = self._initial_imbalance()

    def _initial_imbalance(self) -> IntArray:
        imb = self.problem.imbalance
        if imb is None:
            return np.zeros(self.problem.n_nodes, dtype=np.int64)
        return np.array(imb, dtype=np.int64, copy=True)

    def balance_after(self, u: int, partners: IntArray) -> IntArray:
        """Larger ``|A - B|`` of ``u`` and each partner once their pair is oriented."""
        du, dv = self.d[u], self.d[partners]
        side = (
            np.zeros(partners.size, dtype=np.int64)
            if self.problem.next_a is None
            else self.problem.next_a[u, partners].astype(np.int64)
        )
        u_in_a = np.maximum(np.abs(du + 1), np.abs(dv - 1))
        u_in_b = np.maximum(np.abs(du - 1), np.abs(dv + 1))
        best = np.where(side > 0, u_in_a, np.where(side < 0, u_in_b, np.minimum(u_in_a, u_in_b)))
        return np.asarray(best, dtype=np.int64)

    def counts(self) -> FloatArray:
        return self.problem.node_counts + self.uses

    def levels(self) -> list[int | None]:
        """Edge-count levels of the candidates, least compared first."""
        ec = self.problem.edge_counts
        if ec is None:
            return [None]
        return [int(t) for t in np.unique(ec[self.problem.candidates])]

    def enter_level(self, level: int | None) -> None:
        """Make ``level`` the current tier and rebuild the bookkeeping (O(n^2))."""
        ec = self.problem.edge_counts
        self.level = level
        if level is None or ec is None:
            self.base = self.problem.candidates
        else:
            self.base = self.problem.candidates & (ec == level)
        tier = self.base.copy()
        self.d = self._initial_imbalance()  # replayed: the augmenting step may swap pairs
        for a, b in self.chosen:
            tier[a, b] = tier[b, a] = False
            self._track_orientation(a, b)
        cap = self.problem.node_cap
        if cap is not None:
            full = self.uses >= cap
            tier[full, :] = False
            tier[:, full] = False
        self.tier = tier
        self.deg = tier.sum(axis=1).astype(np.int64)
        free = self.uses == 0
        self.fdeg = (tier & free[None, :]).sum(axis=1).astype(np.int64)

    def take(self, u: int, v: int) -> None:
        """Add edge (u, v) to the wave and update the bookkeeping in O(n)."""
        self.chosen.append((u, v) if u < v else (v, u))
        self._track_orientation(u, v)
        self.tier[u, v] = self.tier[v, u] = False
        self.deg[u] -= 1
        self.deg[v] -= 1
        cap = self.problem.node_cap
        for x in (u, v):
            if self.uses[x] == 0:
                self.fdeg -= self.tier[:, x]
            self.uses[x] += 1
            if cap is not None and self.uses[x] >= cap:
                self.deg -= self.tier[:, x]
                self.tier[x, :] = False
                self.tier[:, x] = False
                self.deg[x] = 0

    def _track_orientation(self, u: int, v: int) -> None:
        """Follow ``A - B`` through the wave as the orientation step will set it."""
        nxt = self.problem.next_a
        side = 0 if nxt is None else int(nxt[u, v])
        if side == 0:
            a_key = max(abs(self.d[u] + 1), abs(self.d[v] - 1))
            b_key = max(abs(self.d[u] - 1), abs(self.d[v] + 1))
            side = 1 if a_key < b_key else (-1 if b_key < a_key else 0)
        self.d[u] += side
        self.d[v] -= side


_PartnerKeys = Callable[[_Greedy, int, IntArray, FloatArray], _Keys]
"""Sort keys (``np.lexsort`` order: last is primary) for the partners of node ``u``,
given the greedy state, ``u``, the candidate partners and the node counts in the wave."""


def _greedy_select(
    problem: SelectionProblem, k: int, rng: np.random.Generator, partner_keys: _PartnerKeys
) -> list[Edge]:
    """Node-first greedy selection shared by ``balanced`` and ``swiss``."""
    g = _Greedy(problem, rng)
    for level in g.levels():
        if len(g.chosen) >= k:
            break
        g.enter_level(level)
        start = len(g.chosen)
        _disjoint_phase(g, k, partner_keys)
        if len(g.chosen) < k and _augment(g, start, k):
            g.enter_level(level)
        _overlap_phase(g, k, partner_keys)
    return g.chosen


def _disjoint_phase(g: _Greedy, k: int, partner_keys: _PartnerKeys) -> None:
    """Take node-disjoint pairs (both nodes unused in this wave) while any is left."""
    while len(g.chosen) < k:
        free = g.uses == 0
        cand = np.flatnonzero(free & (g.fdeg > 0))
        if cand.size == 0:
            return
        counts = g.counts()
        u_keys: _Keys = (g.tie[cand], g.fdeg[cand], counts[cand])
        if g.problem.mode is Mode.RESAMPLING:
            # resampling: the complement rule fixes orientations; among nodes with
            # equally few free partners the most unbalanced one chooses first, while
            # partners that even it out are still free
            u_keys = (g.tie[cand], -np.abs(g.d[cand]), g.fdeg[cand], counts[cand])
        u = _argmin_lex(cand, u_keys)
        partners = np.flatnonzero(g.tier[u] & free)
        g.take(u, _argmin_lex(partners, partner_keys(g, u, partners, counts)))


def _augment(g: _Greedy, start: int, k: int) -> bool:
    """Grow the disjoint pairs chosen since ``start`` with length-3 augmenting paths.

    Called when no pair of two unused nodes is left. For unused nodes ``u`` and ``w``
    and a pair ``(x, y)`` chosen in this tier with ``u-x`` and ``y-w`` candidates of the
    tier, ``(x, y)`` is replaced by ``(u, x)`` and ``(y, w)``: one more node-disjoint
    pair, every other pair kept. Returns whether anything changed (the caller then
    rebuilds the bookkeeping).
    """
    cap = g.problem.node_cap
    if cap is not None and cap > 1:
        return False  # with a cap above 1 the overlap phase fills the wave instead
    changed = False
    improved = True
    while improved and len(g.chosen) < k:
        improved = False
        free_idx = np.flatnonzero(g.uses == 0)
        if free_idx.size < 2:
            break
        for pos in range(start, len(g.chosen)):
            x, y = g.chosen[pos]
            px = free_idx[g.base[x, free_idx]]
            py = free_idx[g.base[y, free_idx]]
            if px.size == 0 or py.size == 0:
                continue
            pair = _distinct_pick(px, py, g.tie)
            if pair is None:
                continue
            u, w = pair
            g.chosen[pos] = (u, x) if u < x else (x, u)
            g.chosen.append((y, w) if y < w else (w, y))
            g.uses[u] += 1
            g.uses[w] += 1
            improved = changed = True
            break
    return changed


def _distinct_pick(px: IntArray, py: IntArray, tie: FloatArray) -> tuple[int, int] | None:
    """Random-key-first ``u`` in ``px`` and ``w`` in ``py`` with ``u != w``, if any."""
    px = px[np.argsort(tie[px])]
    py = py[np.argsort(tie[py])]
    u = int(px[0])
    for w in py:
        if int(w) != u:
            return u, int(w)
    if px.size > 1:
        return int(px[1]), int(py[0])
    return None


def _overlap_phase(g: _Greedy, k: int, partner_keys: _PartnerKeys) -> None:
    """Fill the wave with pairs whose nodes were used least in it (no disjoint pair left)."""
    while len(g.chosen) < k and g.deg.any():
        load = np.where(g.tier, g.uses[:, None] + g.uses[None, :], np.iinfo(np.int64).max)
        best = load.min()
        rows = g.tier & (load == best)
        cand = np.flatnonzero(rows.any(axis=1))
        counts = g.counts()
        u = _argmin_lex(cand, (g.tie[cand], counts[cand], g.uses[cand]))
        partners = np.flatnonzero(rows[u])
        g.take(u, _argmin_lex(partners, partner_keys(g, u, partners, counts)))


def _balanced_keys(g: _Greedy, u: int, partners: IntArray, counts: FloatArray) -> _Keys:
    # coverage: fewest comparisons, then closest score (then the most even A/B
    # positions, which matters before the first fit); resampling: fewest comparisons,
    # then the pair that keeps the A/B positions of both nodes most even
    p = g.problem
    balance = g.balance_after(u, partners)
    if p.mode is Mode.RESAMPLING:
        return (g.tie[partners], g.fdeg[partners], balance, counts[partners])
    dist = np.abs(p.scores[partners] - p.scores[u])
    return (g.tie[partners], g.fdeg[partners], balance, dist, counts[partners])


def _swiss_keys(g: _Greedy, u: int, partners: IntArray, counts: FloatArray) -> _Keys:
    dist = np.abs(g.problem.scores[partners] - g.problem.scores[u])
    return (g.tie[partners], g.fdeg[partners], counts[partners], dist)


def balanced(problem: SelectionProblem, k: int, rng: np.random.Generator) -> list[Edge]:
    """Spec §6 selection: fewest comparisons first, then close scores, seeded ties."""
    return _greedy_select(problem, k, rng, _balanced_keys)


def swiss(problem: SelectionProblem, k: int, rng: np.random.Generator) -> list[Edge]:
    """Swiss pairing: least compared node, partner with the nearest current score."""
    return _greedy_select(problem, k, rng, _swiss_keys)


def random_edges(problem: SelectionProblem, k: int, rng: np.random.Generator) -> list[Edge]:
    """Uniformly random distinct candidate edges, skipping any that breaks the node cap."""
    lo, hi = np.nonzero(np.triu(problem.candidates, k=1))
    if lo.size == 0 or k <= 0:
        return []
    cap = problem.node_cap
    if cap is None:
        take = rng.choice(lo.size, size=min(k, lo.size), replace=False)
        return [(int(lo[i]), int(hi[i])) for i in take]
    uses = np.zeros(problem.n_nodes, dtype=np.int64)
    chosen: list[Edge] = []
    for i in rng.permutation(lo.size):
        a, b = int(lo[i]), int(hi[i])
        if uses[a] < cap and uses[b] < cap:
            chosen.append((a, b))
            uses[a] += 1
            uses[b] += 1
            if len(chosen) >= k:
                break
    return chosen


REGISTRY: dict[str, Strategy] = {
    "balanced": balanced,
    "random": random_edges,
    "swiss": swiss,
}
