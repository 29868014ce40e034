"""Selection on large nets without ``n x n`` work per wave (issue 14).

Above :data:`cj_runner.core.strategies.COVARIANCE_MAX_N` nodes, ``infogain`` and
``grade_boundary`` keep only the score variances (the diagonal model of
:mod:`cj_runner.core.strategies`): one more comparison of ``(i, j)`` lowers the weighted
trace by

    gain(i, j) = w (g_i v_i^2 + g_j v_j^2) / (1 + w (v_i + v_j)),   w = p_ij (1 - p_ij),

and a pair of two nodes not used yet in the wave keeps its gain while other pairs are
taken. Evaluating it for every candidate pair costs ``O(n^2)`` per wave (two million
pairs at ``n = 2,000``). :func:`diagonal_select` evaluates it on a *shortlist* instead:
every candidate pair with at least one endpoint among the ``R`` nodes of largest own
term ``g_i v_i^2`` (``R = max(4 k, 48)`` for a wave of ``k`` pairs; ties by a seeded
random key), ``O(R n)`` pairs, and takes node-disjoint pairs greedily by gain as the
dense diagonal model does (of each shortlisted node only its ``2 k + 1`` best partners
are ranked, which cannot change the greedy's choices). A pair of two nodes outside the
shortlist has both own terms among the smaller ones; the gain lost is measured in
``tests/core/test_large_nets.py`` against the full evaluation (``shortlist=None``):
at least 99% of the wave's total gain. When the shortlist runs out of node-disjoint
pairs before the wave is full, it doubles until it holds every node, which is then the
full evaluation (e.g. a wave as large as the net).

:func:`random_complement` draws uniformly random candidate edges of a complement-form
:class:`~cj_runner.core.candidates.CandidateGraph` by rejection (an edge is a candidate
unless compared or in flight, which on large nets is almost every edge).
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
import scipy.special

from cj_runner.core.candidates import CandidateGraph

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]
Edge = tuple[int, int]

SHORTLIST_MIN = 48
"""Fewest nodes on the shortlist of :func:`diagonal_select` (at least 4 per pair asked)."""

_MAX_REJECTIONS = 64  # random_complement: draws per wanted edge before enumerating


def _pq(diff: npt.ArrayLike) -> FloatArray:
    p = scipy.special.expit(np.asarray(diff, dtype=np.float64))
    return np.asarray(p * (1.0 - p), dtype=np.float64)


def _gains(scores: FloatArray, v: FloatArray, g: FloatArray, rows: IntArray) -> FloatArray:
    """The gain of every pair ``(rows[r], j)``: ``len(rows) x n``.

    ``w (o_i + o_j) / (1 + w (v_i + v_j))`` with ``o = g v^2`` is computed as
    ``(o_i + o_j) / (1 / w + v_i + v_j)``, where ``1 / w = 2 + e^d + e^-d`` for
    ``d = s_i - s_j``: with ``e^s`` taken once per node, each entry costs a few products
    and sums and no exponential (this block is most of a wave's selection on large nets).
    Scores are clipped to +-300 so no product overflows; there ``w`` is ~1e-130 anyway.
    """
    grow = np.exp(np.clip(scores, -300.0, 300.0))
    shrink = 1.0 / grow
    own = g * v * v
    inverse_w = np.multiply.outer(grow[rows], shrink)
    inverse_w += np.multiply.outer(shrink[rows], grow)
    inverse_w += (2.0 + v[rows])[:, None] + v[None, :]
    gains = own[rows][:, None] + own[None, :]
    gains /= inverse_w
    return gains


def _row_block(graph: CandidateGraph, rows: IntArray) -> npt.NDArray[np.bool_]:
    """The candidate rows of ``rows`` as a ``len(rows) x n`` boolean block."""
    return np.stack([graph.base_row(r) for r in rows.tolist()])


def diagonal_select(
    graph: CandidateGraph,
    scores: FloatArray,
    variances: FloatArray,
    weights: FloatArray,
    k: int,
    rng: np.random.Generator,
    shortlist: int | None = SHORTLIST_MIN,
) -> list[Edge] | None:
    """Greedy largest gain of the diagonal model over a complement-form candidate graph.

    Args:
        graph: the candidates (complement form: every pair not compared, not in flight).
        scores: current scores.
        variances: the score variances ``v`` (pending calls already counted).
        weights: per node weight ``g`` (ones for ``infogain``).
        k: pairs wanted.
        rng: the wave's generator (node random keys for ties).
        shortlist: the smallest shortlist (module docstring); ``None`` evaluates every
            candidate pair (the reference the shortlist is measured against).

    Returns:
        ``k`` node-disjoint edges ``(lo, hi)`` in the order chosen, or ``None`` when
        fewer than ``k`` disjoint pairs exist among all candidates (the caller then
        fills the wave with the overlap rule of the dense path).
    """
    n = graph.n
    node_tie = rng.random(n)
    own = weights * variances * variances
    size = n if shortlist is None else min(n, max(4 * k, shortlist))
    while True:
        rows = _largest(own, node_tie, size)
        chosen = _disjoint_greedy(graph, rows, scores, variances, weights, node_tie, k)
        if len(chosen) >= k:
            return chosen
        if size >= n:
            return None
        size = min(n, 2 * size)


def _largest(own: FloatArray, node_tie: FloatArray, size: int) -> IntArray:
    """The ``size`` nodes of largest ``own`` (ties by larger ``node_tie``), in that order:
    ``np.lexsort((-node_tie, -own))[:size]`` without sorting every node."""
    n = own.size
    if size >= n:
        return np.lexsort((-node_tie, -own))
    threshold = own[np.argpartition(-own, size - 1)[size - 1]]  # the size-th largest
    above = np.flatnonzero(own > threshold)
    tied = np.flatnonzero(own == threshold)
    tied = tied[np.argsort(-node_tie[tied], kind="stable")[: size - above.size]]
    chosen = np.concatenate([above, tied])
    return chosen[np.lexsort((-node_tie[chosen], -own[chosen]))]


def _disjoint_greedy(
    graph: CandidateGraph,
    rows: IntArray,
    scores: FloatArray,
    v: FloatArray,
    g: FloatArray,
    node_tie: FloatArray,
    k: int,
) -> list[Edge]:
    """Node-disjoint pairs with an endpoint in ``rows``, by decreasing gain.

    The gain of a pair of unused nodes does not change as other pairs are taken, so the
    greedy takes pairs in one pass down the gains. When the ``j``-th pair is taken at
    most ``2 (j - 1)`` nodes are used, so the best free partner of a row is among its
    ``2 k - 1`` best partners: only those are ranked. Gains within ``1e-9`` (relative)
    are ordered by the nodes' seeded random keys, never by node index.
    """
    block = _row_block(graph, rows)
    key = _gains(scores, v, g, rows)
    key *= (1.0 + 1e-9 * node_tie[rows])[:, None] + 1e-9 * node_tie[None, :]
    key[~block] = -np.inf
    per_row = min(key.shape[1], 2 * k + 1)
    if per_row < key.shape[1]:
        best = np.argpartition(-key, per_row - 1, axis=1)[:, :per_row]
    else:
        best = np.broadcast_to(np.arange(key.shape[1]), key.shape)
    r_idx = np.repeat(np.arange(rows.size), best.shape[1])
    partners = best.ravel()
    values = key[r_idx, partners]
    keep = np.isfinite(values)
    r_idx, partners, values = r_idx[keep], partners[keep], values[keep]
    ranked = np.argsort(-values, kind="stable")
    used = np.zeros(graph.n, dtype=np.bool_)
    chosen: list[Edge] = []
    row_nodes = rows[r_idx]
    for e in ranked.tolist():
        i, j = int(row_nodes[e]), int(partners[e])
        if used[i] or used[j]:
            continue
        chosen.append((i, j) if i < j else (j, i))
        used[i] = used[j] = True
        if len(chosen) >= k:
            break
    return chosen


def random_complement(
    graph: CandidateGraph,
    k: int,
    rng: np.random.Generator,
    cap: int | None = None,
    weight: npt.NDArray[np.float64] | None = None,
) -> list[Edge] | None:
    """``k`` distinct uniformly random candidate edges of a complement-form graph.

    Draws ordered node pairs and keeps the candidates (rejection sampling is uniform
    over the candidates); ``None`` when too many draws were rejected (a nearly complete
    net), so the caller enumerates the candidates instead. With ``weight`` (one value
    ``> 0`` per node) each node is drawn with probability proportional to its weight, so
    an edge is drawn in proportion to ``weight[x] * weight[y]`` (``ANCHOR_WEIGHT``).
    """
    n = graph.n
    uses = np.zeros(n, dtype=np.int64)
    chosen: list[Edge] = []
    seen: set[Edge] = set()
    budget = _MAX_REJECTIONS * max(k, 1)
    p = None if weight is None else np.asarray(weight, dtype=np.float64) / float(np.sum(weight))
    while len(chosen) < k and budget > 0:
        size = (2 * (k - len(chosen)) + 8, 2)
        draws = rng.integers(0, n, size=size) if p is None else rng.choice(n, size=size, p=p)
        for x, y in draws.tolist():
            budget -= 1
            if budget <= 0:
                break
            e = (x, y) if x < y else (y, x)
            if x == y or e in seen or not graph.has(x, y):
                continue
            if cap is not None and (uses[x] >= cap or uses[y] >= cap):
                continue
            seen.add(e)
            chosen.append(e)
            uses[x] += 1
            uses[y] += 1
            if len(chosen) >= k:
                break
    return chosen if len(chosen) >= k else None
