"""The adaptive strategies ``infogain`` and ``grade_boundary`` (the package docstring
describes both) and the Laplace approximation they use: :func:`laplace_covariance`,
:func:`laplace_variances`, :func:`grade_weights`."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
import scipy.linalg
import scipy.special

from cj_runner.core.large_nets import diagonal_select
from cj_runner.core.projection import calibrate, grade_probabilities
from cj_runner.core.strategies.problem import (
    Edge,
    FloatArray,
    IntArray,
    SelectionProblem,
)

COVARIANCE_MAX_N = 200
"""``infogain`` / ``grade_boundary`` keep the full score covariance up to this many nodes
(one ``n x n`` inverse per wave, ``O(n^2)`` per chosen pair); above it, the diagonal."""

_MIN_PRECISION = 1e-3  # keeps the Laplace covariance finite with prior_precision = 0
_TIE_RTOL = 1e-9  # gains this close to the best are ties (seeded random key)


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
    """Greedy largest expected reduction of ``trace(W C)`` (module docstring).

    ``problem.node_weight`` (``ANCHOR_WEIGHT``) multiplies ``W``, and a node of weight
    ``K`` may appear ``ceil(K)`` times in the wave's node-disjoint phase (exact model
    only; above :data:`COVARIANCE_MAX_N` nodes the weight enters the gain alone).
    """
    n = problem.n_nodes
    graph = problem.graph
    if problem.node_weight is not None:
        node_weight = np.asarray(problem.node_weight, dtype=np.float64)
        weights = node_weight if weights is None else weights * node_weight
        slots = np.ceil(node_weight).astype(np.int64)
    else:
        slots = np.ones(n, dtype=np.int64)
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
        free = alive & (uses[lo] < slots[lo]) & (uses[hi] < slots[hi])
        if free.any():
            pool = np.flatnonzero(free)
        else:  # no disjoint pair left: the pairs whose nodes were used least
            load = uses[lo] / slots[lo] + uses[hi] / slots[hi]
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
