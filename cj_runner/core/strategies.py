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
* ``infogain``: greedy information gain under the Laplace approximation of the current
  fit. The score covariance ``C`` is the inverse of the Bradley-Terry information
  ``sum_edges n_ij p_ij (1 - p_ij) x x^T + lambda I`` (``x = e_i - e_j``,
  ``p_ij = sigmoid(s_i - s_j)``, counts of successful *and in-flight* comparisons, so
  pending calls are counted as if answered). One more comparison of ``(i, j)`` lowers
  ``trace(C)`` by ``w ||C x||^2 / (1 + w x^T C x)`` with ``w = p_ij (1 - p_ij)``
  (Sherman-Morrison): A-optimal sequential design (Atkinson, Donev & Tobias 2007, ch. 10;
  for pairwise comparisons Pfeiffer et al. 2012, "Adaptive polling for information
  aggregation", and Chen et al. 2013, "Pairwise ranking aggregation in a crowdsourced
  setting"). The wave is built greedily: the candidate edge of largest gain among nodes
  not yet used in the wave, ``C`` updated by the rank-one formula after each choice
  (the chosen pair counts as pending), then, once no disjoint pair is left, the largest
  gain among the pairs whose nodes were used least. Up to
  :data:`COVARIANCE_MAX_N` nodes ``C`` is exact; above it only its diagonal is kept,
  approximated by ``1 / (information_i + lambda)``, and the gain becomes
  ``w (v_i^2 + v_j^2) / (1 + w (v_i + v_j))``; a coverage wave then ranks only the
  pairs of a shortlist of the least known nodes (:mod:`cj_runner.core.large_nets`), so
  no ``n x n`` work is done per wave. Ties (e.g. before the first fit) go to a seeded
  random key.
* ``grade_boundary``: ``infogain`` on a weighted trace, ``trace(W C)`` with
  ``W = diag(grade_uncertainty)``: the gain of an edge is
  ``w (C x)^T W (C x) / (1 + w x^T C x)``, so comparisons go to the nodes whose
  projected grade is least certain (the workflow computes the weights with
  :func:`grade_weights`); without weights it is ``infogain``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import scipy.linalg
import scipy.special

from cj_runner.core.candidates import CandidateGraph
from cj_runner.core.large_nets import diagonal_select, random_complement
from cj_runner.core.models import Mode
from cj_runner.core.projection import calibrate, grade_probabilities

BoolMatrix = npt.NDArray[np.bool_]
FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]
Edge = tuple[int, int]

COVARIANCE_MAX_N = 200
"""``infogain`` / ``grade_boundary`` keep the full score covariance up to this many nodes
(one ``n x n`` inverse per wave, ``O(n^2)`` per chosen pair); above it, the diagonal."""

_MIN_PRECISION = 1e-3  # keeps the Laplace covariance finite with prior_precision = 0
_TIE_RTOL = 1e-9  # gains this close to the best are ties (seeded random key)


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
    """Uniformly random distinct candidate edges, skipping any that breaks the node cap."""
    graph = problem.graph
    if graph is not None and graph.complement and problem.node_cap is None:
        fast = random_complement(graph, k, rng)
        if fast is not None:
            return fast
    if graph is not None and not graph.complement:
        lo, hi = graph.edges()[:, 0], graph.edges()[:, 1]
    else:
        lo, hi = np.nonzero(np.triu(problem.candidate_matrix(), k=1))
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


# --------------------------------------------------------------------------- adaptive


def laplace_covariance(
    comparisons: npt.ArrayLike, scores: npt.ArrayLike, prior_precision: float
) -> FloatArray:
    """Covariance of the centred Bradley-Terry scores under the Laplace approximation.

    The information of the ridge fit at ``scores`` is ``L + lambda I``, ``L`` the graph
    Laplacian with edge weights ``n_ij p_ij (1 - p_ij)``, ``p_ij = sigmoid(s_i - s_j)``
    (Bradley & Terry 1952; the same matrix as :func:`cj_runner.core.bt.fit_bt`, order
    effect left out). Its inverse, projected on the sum-to-zero subspace, is returned.

    Args:
        comparisons: ``n x n`` symmetric counts of comparisons per edge (may be fractional).
        scores: the current scores.
        prior_precision: the ridge ``lambda`` (floored at ``1e-3`` so that a disconnected
            graph gives large, finite variances).

    Returns:
        The ``n x n`` covariance ``P (L + lambda I)^-1 P``, ``P = I - 11'/n``.
    """
    s = np.asarray(scores, dtype=np.float64)
    n = s.size
    counts = np.asarray(comparisons, dtype=np.float64)
    lam = max(float(prior_precision), _MIN_PRECISION)
    weight = counts * _pq(s[:, None] - s[None, :])
    # L + lambda I + 11'/n has the same inverse on the centred subspace and maps 1 to
    # (lambda + 1) 1, so subtracting 11' / (n (1 + lambda)) leaves the centred covariance
    mat = -weight + 1.0 / n
    mat[np.diag_indices(n)] += weight.sum(axis=1) - np.diag(weight) + lam
    factor = scipy.linalg.cho_factor(mat, check_finite=False)
    cov = scipy.linalg.cho_solve(factor, np.eye(n), check_finite=False) - 1.0 / (n * (1.0 + lam))
    return np.asarray((cov + cov.T) / 2.0, dtype=np.float64)


def laplace_variances(
    comparisons: npt.ArrayLike, scores: npt.ArrayLike, prior_precision: float
) -> FloatArray:
    """Score variances: exact (:func:`laplace_covariance`) up to :data:`COVARIANCE_MAX_N`
    nodes, else the diagonal approximation ``1 / (information_i + lambda)``."""
    s = np.asarray(scores, dtype=np.float64)
    if s.size <= COVARIANCE_MAX_N:
        return np.asarray(np.diag(laplace_covariance(comparisons, s, prior_precision)))
    counts = np.asarray(comparisons, dtype=np.float64)
    info = (counts * _pq(s[:, None] - s[None, :])).sum(axis=1)
    return np.asarray(1.0 / (info + max(float(prior_precision), _MIN_PRECISION)))


def grade_weights(
    scores: npt.ArrayLike,
    variances: npt.ArrayLike,
    anchor_nodes: npt.ArrayLike,
    anchor_indices: npt.ArrayLike,
    n_grades: int,
    floor: float = 0.05,
) -> FloatArray | None:
    """Per-node weights for ``grade_boundary``: how likely a node's projected grade is to
    change.

    Students get ``floor + 1 - max_k P_k``, with ``P_k`` the grade probabilities of
    :func:`cj_runner.core.projection.grade_probabilities` (uniform priors) at the current
    boundaries; the floor keeps every student in play. A boundary's score is set by the
    anchors around it (with one anchor per grade it is their midpoint, variance
    ``(v_a + v_b) / 4``), so each of the two anchors nearest to boundary ``k`` (one below,
    one above) gets a quarter of the summed weight of the students whose nearest boundary
    is ``k``: the weighted trace then approximates ``sum_i u_i Var(s_i - b_k(i))``.

    Args:
        scores: current scores of all nodes.
        variances: their variances (e.g. :func:`laplace_variances`).
        anchor_nodes: node indices of the anchors.
        anchor_indices: their known grade indices (0 = lowest).
        n_grades: grades on the scale.
        floor: the smallest student weight.

    Returns:
        One weight ``>= 0`` per node, or ``None`` when the anchors give no boundaries (fewer
        than two distinct grades, or a flat calibration).
    """
    s = np.asarray(scores, dtype=np.float64)
    anchors = np.asarray(anchor_nodes, dtype=np.intp)
    idx = np.asarray(anchor_indices, dtype=np.float64)
    if anchors.size < 2 or np.unique(idx).size < 2 or n_grades < 2:
        return None
    calibration = calibrate(s[anchors], idx, n_grades)
    if calibration is None:
        return None
    cuts = calibration[1]
    sd = np.sqrt(np.maximum(np.asarray(variances, dtype=np.float64), 0.0))
    probs = grade_probabilities(s, sd, cuts, np.ones(n_grades))
    weights = floor + 1.0 - probs.max(axis=1)
    is_anchor = np.zeros(s.size, dtype=bool)
    is_anchor[anchors] = True
    students = np.flatnonzero(~is_anchor)
    weights[anchors] = 0.0
    nearest = np.argmin(np.abs(s[students, None] - cuts[None, :]), axis=1)
    a_scores = s[anchors]
    for k, cut in enumerate(cuts):
        mass = float(weights[students[nearest == k]].sum()) / 4.0
        below, above = anchors[a_scores <= cut], anchors[a_scores > cut]
        for side in (below, above):
            if side.size:
                weights[side[np.argmin(np.abs(s[side] - cut))]] += mass
    return np.asarray(weights, dtype=np.float64)


def _pq(diff: npt.ArrayLike) -> FloatArray:
    p = scipy.special.expit(np.asarray(diff, dtype=np.float64))
    return np.asarray(p * (1.0 - p), dtype=np.float64)


class _ExactModel:
    """Full covariance ``C`` and ``G = C W C``; a chosen pair is a rank-one update."""

    def __init__(self, counts: FloatArray, s: FloatArray, lam: float, g: FloatArray) -> None:
        self.g = g
        self.C = laplace_covariance(counts, s, lam)
        self.G = (self.C * g[None, :]) @ self.C

    def gains(self, lo: IntArray, hi: IntArray, w: FloatArray) -> FloatArray:
        c, gm = self.C, self.G
        spread = c[lo, lo] + c[hi, hi] - 2.0 * c[lo, hi]
        reduction = gm[lo, lo] + gm[hi, hi] - 2.0 * gm[lo, hi]
        return np.asarray(w * reduction / (1.0 + w * spread), dtype=np.float64)

    def add(self, i: int, j: int, w: float) -> None:
        # Sherman-Morrison: C' = C - c u u', u = C x; then G' = C' W C'
        u = self.C[:, i] - self.C[:, j]
        c = w / (1.0 + w * (u[i] - u[j]))
        gu = self.g * u
        v = self.C @ gu
        self.G -= c * (np.outer(u, v) + np.outer(v, u)) - (c * c * float(u @ gu)) * np.outer(u, u)
        self.C -= c * np.outer(u, u)


class _DiagonalModel:
    """Only the variances ``v``; a chosen pair updates ``v_i`` and ``v_j``."""

    def __init__(self, v: FloatArray, g: FloatArray) -> None:
        self.v = v.copy()
        self.g = g

    def gains(self, lo: IntArray, hi: IntArray, w: FloatArray) -> FloatArray:
        v, g = self.v, self.g
        reduction = g[lo] * v[lo] ** 2 + g[hi] * v[hi] ** 2
        return np.asarray(w * reduction / (1.0 + w * (v[lo] + v[hi])), dtype=np.float64)

    def add(self, i: int, j: int, w: float) -> None:
        c = w / (1.0 + w * (self.v[i] + self.v[j]))
        self.v[i] -= c * self.v[i] ** 2
        self.v[j] -= c * self.v[j] ** 2


def _adaptive_select(
    problem: SelectionProblem, k: int, rng: np.random.Generator, weights: FloatArray | None
) -> list[Edge]:
    """Greedy largest expected reduction of ``trace(W C)`` (module docstring)."""
    n = problem.n_nodes
    graph = problem.graph
    if n > COVARIANCE_MAX_N and graph is not None and k > 0:
        # large nets: the variances come with the problem (pending calls counted)
        assert problem.se is not None
        g_large = np.ones(n) if weights is None else np.asarray(weights, dtype=np.float64)
        v_large = np.square(np.asarray(problem.se, dtype=np.float64))
        if graph.complement:
            fast = diagonal_select(graph, problem.scores, v_large, g_large, k, rng)
            if fast is not None:
                return fast
            lo, hi = np.nonzero(np.triu(problem.candidate_matrix(), k=1))
        else:
            lo, hi = graph.edges()[:, 0], graph.edges()[:, 1]
    else:
        lo, hi = np.nonzero(np.triu(problem.candidate_matrix(), k=1))
    if lo.size == 0 or k <= 0:
        return []
    tie = rng.random(lo.size)
    s = problem.scores
    lam = max(problem.prior_precision, _MIN_PRECISION)
    counts: FloatArray | None = None
    if graph is None or n <= COVARIANCE_MAX_N:
        raw = np.zeros((n, n)) if problem.comparisons is None else problem.comparisons
        counts = np.asarray(raw, dtype=np.float64)
        if problem.in_flight is not None and problem.in_flight.any():
            counts = counts + problem.in_flight  # pending calls count as answered
    g = np.ones(n) if weights is None else np.asarray(weights, dtype=np.float64)
    w = _pq(s[lo] - s[hi])
    model: _ExactModel | _DiagonalModel
    if n <= COVARIANCE_MAX_N:
        assert counts is not None
        model = _ExactModel(counts, s, lam, g)
    elif graph is not None:
        model = _DiagonalModel(v_large, g)
    elif problem.se is not None:
        model = _DiagonalModel(np.asarray(problem.se, dtype=np.float64) ** 2, g)
    else:
        assert counts is not None
        model = _DiagonalModel(laplace_variances(counts, s, lam), g)
    gains = model.gains(lo, hi, w)
    uses = np.zeros(n, dtype=np.int64)
    alive = np.ones(lo.size, dtype=bool)
    cap = problem.node_cap
    chosen: list[Edge] = []

    def take(e: int) -> None:
        i, j = int(lo[e]), int(hi[e])
        chosen.append((i, j))
        alive[e] = False
        uses[i] += 1
        uses[j] += 1
        if cap is not None:
            for x in (i, j):
                if uses[x] >= cap:
                    alive[(lo == x) | (hi == x)] = False
        model.add(i, j, float(w[e]))

    if isinstance(model, _DiagonalModel):
        # the gain of a pair of unused nodes does not change when other pairs are taken,
        # so the disjoint phase is one pass down the gains (ties: the random key)
        for e in np.lexsort((-tie, -gains)).tolist():
            if len(chosen) >= k:
                break
            if uses[lo[e]] == 0 and uses[hi[e]] == 0 and alive[e]:
                take(e)
        gains[alive] = model.gains(lo[alive], hi[alive], w[alive])
    while len(chosen) < k and alive.any():
        free = alive & (uses[lo] == 0) & (uses[hi] == 0)
        if free.any():
            pool = np.flatnonzero(free)
        else:  # no disjoint pair left: the pairs whose nodes were used least
            load = uses[lo] + uses[hi]
            pool = np.flatnonzero(alive & (load == load[alive].min()))
        best = gains[pool]
        top = float(best.max())
        near = pool[best >= top - _TIE_RTOL * abs(top)]
        e = int(near[np.argmax(tie[near])])
        i, j = int(lo[e]), int(hi[e])
        take(e)
        if len(chosen) >= k or not alive.any():
            break
        if isinstance(model, _ExactModel):
            gains[alive] = model.gains(lo[alive], hi[alive], w[alive])
        else:  # only the pairs of i and j changed
            upd = alive & ((lo == i) | (lo == j) | (hi == i) | (hi == j))
            gains[upd] = model.gains(lo[upd], hi[upd], w[upd])
    return chosen


def infogain(problem: SelectionProblem, k: int, rng: np.random.Generator) -> list[Edge]:
    """Largest expected reduction of the trace of the score covariance (module docstring)."""
    return _adaptive_select(problem, k, rng, None)


def grade_boundary(problem: SelectionProblem, k: int, rng: np.random.Generator) -> list[Edge]:
    """``infogain`` weighted by ``problem.grade_uncertainty`` (module docstring)."""
    return _adaptive_select(problem, k, rng, problem.grade_uncertainty)


REGISTRY: dict[str, Strategy] = {
    "balanced": balanced,
    "random": random_edges,
    "swiss": swiss,
    "infogain": infogain,
    "grade_boundary": grade_boundary,
}
