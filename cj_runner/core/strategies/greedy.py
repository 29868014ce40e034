"""The greedy, node-first strategies ``balanced`` and ``swiss``, and ``random``
(the package docstring describes each)."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import numpy.typing as npt

from cj_runner.core.large_nets import random_complement
from cj_runner.core.models import Mode
from cj_runner.core.strategies.problem import (
    BoolMatrix,
    Edge,
    FloatArray,
    IntArray,
    SelectionProblem,
)

_Keys = tuple[npt.NDArray[np.generic], ...]


def _argmin_lex(idx: IntArray, keys: tuple[npt.NDArray[np.generic], ...]) -> int:
    """The element of ``idx`` with the smallest keys (``np.lexsort`` order: last is primary).

    The same element as ``idx[np.lexsort(keys)[0]]`` (first position among full ties),
    found by narrowing to the minimum of each key in turn: ``O(len(idx))`` instead of a sort.
    """
    pos = np.arange(idx.size)
    for key in reversed(keys):
        values = np.asarray(key)[pos]
        pos = pos[values == values.min()]
        if pos.size == 1:
            break
    return int(idx[pos[0]])


class _Greedy:
    """Mutable state of one greedy wave: remaining candidates, uses in this wave.

    The candidates of the current edge-count level that can still be taken (not chosen,
    both nodes under the cap) form the *tier*; it is never stored as a matrix: a row is
    built on demand from the :class:`~cj_runner.core.candidates.CandidateGraph`, the
    chosen edges and the capped nodes. ``deg`` holds the tier's row sums; ``fdeg`` for
    every node the number of its tier partners not used yet in this wave; ``d`` the
    ``A - B`` of every node as the orientation step will leave it. All are kept up to
    date in O(n) per pair taken.
    """

    def __init__(self, problem: SelectionProblem, rng: np.random.Generator) -> None:
        n = problem.n_nodes
        self.problem = problem
        self.graph = problem.candidate_graph()
        self.uses = np.zeros(n, dtype=np.int64)
        self.tie = rng.random(n)
        self.chosen: list[Edge] = []
        self.chosen_nbrs: dict[int, list[int]] = {}
        self.level: int | None = None
        self.capped = np.zeros(n, dtype=np.bool_)
        self.deg = np.zeros(n, dtype=np.int64)
        self.fdeg = np.zeros(n, dtype=np.int64)
        self.d = self._initial_imbalance()

    def _initial_imbalance(self) -> IntArray:
        imb = self.problem.imbalance
        if imb is None:
            return np.zeros(self.problem.n_nodes, dtype=np.int64)
        return np.array(imb, dtype=np.int64, copy=True)

    def row(self, x: int) -> BoolMatrix:
        """Tier partners of ``x`` (a fresh array)."""
        if self.capped[x]:
            return np.zeros(self.problem.n_nodes, dtype=np.bool_)
        r = self._uncapped_row(x)
        if self.capped.any():
            r &= ~self.capped
        return r

    def _uncapped_row(self, x: int) -> BoolMatrix:
        r = self.graph.base_row(x)
        nb = self.chosen_nbrs.get(x)
        if nb:
            r[nb] = False
        return r

    def tier_matrix(self) -> BoolMatrix:
        """The whole tier as an ``n x n`` matrix (only once no disjoint pair is left)."""
        return np.stack([self.row(x) for x in range(self.problem.n_nodes)])

    def balance_after(self, u: int, partners: IntArray) -> IntArray:
        """Larger ``|A - B|`` of ``u`` and each partner once their pair is oriented."""
        du, dv = self.d[u], self.d[partners]
        side = self.graph.sides(u, partners)
        u_in_a = np.maximum(np.abs(du + 1), np.abs(dv - 1))
        u_in_b = np.maximum(np.abs(du - 1), np.abs(dv + 1))
        best = np.where(side > 0, u_in_a, np.where(side < 0, u_in_b, np.minimum(u_in_a, u_in_b)))
        return np.asarray(best, dtype=np.int64)

    def counts(self) -> FloatArray:
        return self.problem.node_counts + self.uses

    def levels(self) -> list[int | None]:
        """Edge-count levels of the candidates, least compared first."""
        return self.graph.levels()

    def enter_level(self, level: int | None) -> None:
        """Make ``level`` the current tier and rebuild the bookkeeping (O(n) per pair chosen)."""
        graph = self.graph
        self.level = level
        graph.set_level(level)
        self.d = self._initial_imbalance()  # replayed: the augmenting step may swap pairs
        self.chosen_nbrs = {}
        for a, b in self.chosen:
            self._track_orientation(a, b)
            self.chosen_nbrs.setdefault(a, []).append(b)
            self.chosen_nbrs.setdefault(b, []).append(a)
        deg = graph.base_degree()
        for a, b in self.chosen:
            if graph.has(a, b):
                deg[a] -= 1
                deg[b] -= 1
        cap = self.problem.node_cap
        self.capped = np.zeros(self.problem.n_nodes, dtype=np.bool_)
        if cap is not None:
            full = np.flatnonzero(self.uses >= cap)
            for c in full.tolist():
                deg -= self._uncapped_row(c)
            self.capped[full] = True
            deg[full] = 0
        self.deg = deg
        fdeg = deg.copy()
        for u in np.flatnonzero(self.uses > 0).tolist():
            fdeg -= self.row(u)
        self.fdeg = fdeg

    def take(self, u: int, v: int) -> None:
        """Add edge (u, v) to the wave and update the bookkeeping in O(n)."""
        self.chosen.append((u, v) if u < v else (v, u))
        self.chosen_nbrs.setdefault(u, []).append(v)
        self.chosen_nbrs.setdefault(v, []).append(u)
        self._track_orientation(u, v)
        self.deg[u] -= 1
        self.deg[v] -= 1
        cap = self.problem.node_cap
        for x in (u, v):
            if self.uses[x] == 0:
                self.fdeg -= self.row(x)
            self.uses[x] += 1
            if cap is not None and self.uses[x] >= cap and not self.capped[x]:
                self.deg -= self.row(x)
                self.capped[x] = True
                self.deg[x] = 0

    def _track_orientation(self, u: int, v: int) -> None:
        """Follow ``A - B`` through the wave as the orientation step will set it."""
        side = self.graph.side(u, v)
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
        partners = np.flatnonzero(g.row(u) & free)
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
            px = free_idx[g.graph.base_row(x)[free_idx]]
            py = free_idx[g.graph.base_row(y)[free_idx]]
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
        tier = g.tier_matrix()
        load = np.where(tier, g.uses[:, None] + g.uses[None, :], np.iinfo(np.int64).max)
        best = load.min()
        rows = tier & (load == best)
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
    """Uniformly random distinct candidate edges, skipping any that breaks the node cap.

    With ``problem.node_weight`` the edges are drawn one after another without
    replacement, each with probability proportional to the product of its nodes' weights
    among the edges left (exponential keys, Efraimidis & Spirakis 2006): a node of weight
    ``K`` is in about ``K`` times as many pairs as a node of weight 1.
    """
    graph = problem.graph
    weight = problem.node_weight
    if graph is not None and graph.complement and problem.node_cap is None:
        fast = random_complement(graph, k, rng, weight=weight)
        if fast is not None:
            return fast
    if graph is not None and not graph.complement:
        lo, hi = graph.edges()[:, 0], graph.edges()[:, 1]
    else:
        lo, hi = np.nonzero(np.triu(problem.candidate_matrix(), k=1))
    if lo.size == 0 or k <= 0:
        return []
    cap = problem.node_cap
    if weight is not None:
        order = np.argsort(rng.exponential(size=lo.size) / (weight[lo] * weight[hi]))
    elif cap is None:
        take = rng.choice(lo.size, size=min(k, lo.size), replace=False)
        return [(int(lo[i]), int(hi[i])) for i in take]
    else:
        order = rng.permutation(lo.size)
    if cap is None:
        return [(int(lo[i]), int(hi[i])) for i in order[:k]]
    uses = np.zeros(problem.n_nodes, dtype=np.int64)
    chosen: list[Edge] = []
    for i in order:
        a, b = int(lo[i]), int(hi[i])
        if uses[a] < cap and uses[b] < cap:
            chosen.append((a, b))
            uses[a] += 1
            uses[b] += 1
            if len(chosen) >= k:
                break
    return chosen
