"""The evidence for the spread of the essays, ``log p(answers | tau)``, and its maximum.

The qualities get a hierarchical prior ``N(0, tau^2)`` on the centred scores (``k = n - 1``
free dimensions). With ``m`` the posterior mode (the ridge fit of
:func:`cj_runner.core.bt.fit_bt` with precision ``lambda = 1 / tau^2``) and ``H`` the
Bradley-Terry information at ``m`` on the centred subspace, the Laplace approximation of
the marginal likelihood is, up to a constant (MacKay 1992, "Bayesian interpolation",
Neural Computation 4(3)),

    log L(m) - lambda |m|^2 / 2 - log det(H + lambda I) / 2 + k log(lambda) / 2.

``log det`` is computed densely (Cholesky) up to :data:`DENSE_MAX_N` nodes and above by
the Bethe approximation of Gaussian belief propagation
(:func:`cj_runner.core.gabp.laplacian_bp`, ``O(comparisons)`` per evaluation, exact on
trees; tests/core/test_evidence.py measures it against the dense one).

**Second order.** The Laplace approximation itself underestimates ``tau`` when each essay
has few comparisons and those are against close opponents (adaptive designs): on
``infogain`` designs of 500 essays at 10 comparisons per essay it gives ``tau`` 0.4-0.7
where the truth is 1.66 and the Gibbs sampler's posterior spread 1.5-1.7
(docs/statistics.md); at 250-350 essays 0.9-1.8 where the second-order evidence gives
1.2-2.0 (truth 1.64). Above :data:`SECOND_ORDER_MIN_N` nodes the evidence adds the next
term of the Laplace expansion (Shun & McCullagh 1995, "Laplace approximation of
high-dimensional integrals", JRSS B 57(4); for binary mixed models Raudenbush, Yang &
Yosef 2000, JCGS 9(1)). Each comparison's log-likelihood depends on the parameters only
through ``d = theta_a - theta_b``, with third and fourth derivatives ``l3 = -q (1 - 2p)``
and ``l4 = -q (1 - 6q)`` (``q = p (1 - p)``), so with ``s_k = Var(d_k)`` and ``S_kl =
Cov(d_k, d_l)`` under the Laplace posterior the term is

    sum_k l4_k s_k^2 / 8 + sum_kl l3_k s_k S_kl s_l l3_l / 8 + sum_kl l3_k l3_l S_kl^3 / 12.

The first sum is per compared pair; the second is ``z' Sigma z / 8`` with ``z = sum_k
l3_k s_k x_k`` (one linear solve); the third keeps the pairs of comparisons of the same
two essays, where ``S_kl = ± s_k`` (the rest, between different pairs, is small: it
moved ``tau`` by 1-3% in the dense measurements). The ``s_k`` come from the same
belief-propagation run as the log determinant (pairwise beliefs, exact on trees).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import scipy.linalg
import scipy.sparse
import scipy.sparse.linalg
import scipy.special
from numpy.typing import NDArray

from cj_runner.core.bt import BTFit, fit_bt
from cj_runner.core.gabp import laplacian_bp

__all__ = [
    "CLOSE_PAIRING_STRATEGIES",
    "DENSE_MAX_N",
    "LEVERAGE_MAX",
    "RELIABILITY_SECOND_ORDER_MIN_N",
    "SECOND_ORDER_MIN_N",
    "SELECTION_SECOND_ORDER_MIN_N",
    "reliability_second_order",
    "upper_log_tau",
]

FloatArray = NDArray[np.float64]

DENSE_MAX_N = 400
"""Largest batch (nodes) whose evidence uses the dense log determinant and whose
posterior keeps its full covariance (``O(n^3)`` per evaluation, some twenty evaluations
per fit); above it the evidence uses the Bethe log determinant and the variances the
belief-propagation approximation of :func:`cj_runner.core.bt.fit_bt`, so finalizing a
2,000-essay batch takes about a second (docs/performance.md). The Gibbs sampler of
:mod:`cj_runner.core.posterior` stops at the same size."""

SECOND_ORDER_MIN_N = 200
"""The evidence of batches with more nodes than this carries the second-order term
(module docstring) by default (``_Evidence(second_order=None)``): the empirical-Bayes fit
pair selection uses up to 200 nodes, the Gibbs sampler's start
(``ScorePosterior.evidence_tau``) and, above :data:`DENSE_MAX_N` nodes, the Laplace
mixture users see and its ``tau``. Between 200 and 400 nodes the plain evidence put the
robust reliability 0.045-0.08 below the true one on average at 10 comparisons per essay
under ``infogain``; with the term 0.01-0.03 (docs/statistics.md, "Between 200 and 400
nodes"). Up to 200 nodes the plain evidence stays for pair selection and the sampler's
start, so the shown scores there are unchanged; the robust reliability has its own
threshold, :data:`RELIABILITY_SECOND_ORDER_MIN_N`, and pair selection above 200 nodes
:data:`SELECTION_SECOND_ORDER_MIN_N`."""

RELIABILITY_SECOND_ORDER_MIN_N = 50
"""The robust reliability's evidence (:func:`cj_runner.core.robust.robust_reliability`,
and with it the ``TARGET_RELIABILITY`` stop and judge health) carries the second-order
term above this many nodes. At 75-150 nodes the plain evidence put the robust reliability
0.11-0.12 below the true one on average at 10 comparisons per essay under ``infogain``
(RMS 0.15-0.24); with the term 0.03-0.06 (RMS 0.07-0.11), and no measured cell got worse,
at a fixed budget or at a ``TARGET_RELIABILITY`` stop. At 50 nodes the term lowered the
error at a fixed budget but raised it at the stop (RMS 0.055 -> 0.084 under
``infogain``: the stop came earlier and more often below the target), so up to 50 nodes
the plain evidence stays (docs/statistics.md, "Reliability"). Pair selection and the
Gibbs sampler's start, and with them the shown scores, keep the plain evidence up to
:data:`SECOND_ORDER_MIN_N` nodes."""

SELECTION_SECOND_ORDER_MIN_N = DENSE_MAX_N
"""Pair selection above 200 nodes (:func:`cj_runner.core.robust.empirical_bayes_prior_sd`)
takes ``tau`` from the evidence with the second-order term only above this many nodes.
Between 200 and 400 nodes the plain evidence's ``tau`` is low (0.1-0.2 for most of an
``infogain`` batch, where the truth is 1.64), but measured against the unbiased one
(docs/decisions.md) that design was not worse: ``r^2`` with the truth -0.003 to +0.009,
and its answers identify the spread of the essays, where ``infogain`` with the unbiased
``tau`` pairs close essays, the evidence for ``tau`` turns flat between 0.1 and 2, and
in some batches the shown intervals covered 37-67%."""

CLOSE_PAIRING_STRATEGIES: tuple[str, ...] = ("balanced", "swiss")
"""Strategies under which the robust reliability keeps the plain evidence up to
:data:`SECOND_ORDER_MIN_N` nodes, as before :data:`RELIABILITY_SECOND_ORDER_MIN_N` was
lowered. With close-score pairing the reliability at a ``TARGET_RELIABILITY=0.8`` stop
already sat above the true one at 100 nodes, and the second-order term raised it further
(12 paired batches each: ``balanced`` +0.026 -> +0.050, ``swiss`` +0.053 -> +0.089, the
batches stopping 1.5-1.9 comparisons per essay earlier), which is the direction a stop
must not err in (docs/statistics.md, "Reliability")."""


def reliability_second_order(n_items: int, strategy: str | None = None) -> bool:
    """Whether the robust reliability of a batch of ``n_items`` nodes paired by
    ``strategy`` takes the evidence with the second-order term: above
    :data:`RELIABILITY_SECOND_ORDER_MIN_N` nodes, or above :data:`SECOND_ORDER_MIN_N`
    under the :data:`CLOSE_PAIRING_STRATEGIES` (``None``: a strategy not named there)."""
    if strategy in CLOSE_PAIRING_STRATEGIES:
        return n_items > SECOND_ORDER_MIN_N
    return n_items > RELIABILITY_SECOND_ORDER_MIN_N


LEVERAGE_MAX = 0.25
"""The second-order term is trusted up to the ``tau`` at which the mean leverage of the
compared pairs, ``count q Var(d)`` (the share of a difference's posterior precision that
its own comparisons supply), reaches this value; :func:`_maximise` and the mixture grid
of :mod:`cj_runner.core.posterior` stop there (module docstring)."""

_DENSE_EVIDENCE_MAX_N = DENSE_MAX_N
_GRID: tuple[float, ...] = tuple(np.linspace(math.log(0.1), math.log(10.0), 9))
_CG_RTOL = 1e-8


class _Evidence:
    """The log evidence as a function of ``log tau`` (module docstring), cached per value.

    ``dense``: dense log determinant (default: up to :data:`DENSE_MAX_N` nodes).
    ``second_order``: add the second-order term (default: above
    :data:`SECOND_ORDER_MIN_N` nodes).
    """

    def __init__(
        self,
        n: int,
        a: NDArray[np.int64],
        b: NDArray[np.int64],
        y: NDArray[np.bool_],
        dense: bool | None = None,
        second_order: bool | None = None,
    ) -> None:
        self.n, self.a, self.b, self.y = n, a, b, y
        self._cache: dict[float, tuple[float, FloatArray, float]] = {}
        self._init: FloatArray | None = None
        self._dense = n <= _DENSE_EVIDENCE_MAX_N if dense is None else dense
        self._second_order = n > SECOND_ORDER_MIN_N if second_order is None else second_order
        edges, self._edge_counts = np.unique(
            np.minimum(a, b) * n + np.maximum(a, b), return_counts=True
        )
        self._lo, self._hi = np.divmod(edges, n)

    def fit(self, log_tau: float) -> BTFit:
        """The posterior at ``tau = exp(log_tau)``, with SEs; the covariance (exact SEs)
        with the dense evidence, the approximate SEs of ``fit_bt`` otherwise."""
        init = self._evaluate(log_tau)[1]
        return fit_bt(
            self.n,
            self.a,
            self.b,
            self.y,
            prior_precision=math.exp(-2.0 * log_tau),
            init=init,
            exact_se=self._dense,
        )

    def __call__(self, log_tau: float) -> float:
        return self._evaluate(log_tau)[0]

    @property
    def second_order(self) -> bool:
        """Whether the evidence carries the second-order term."""
        return self._second_order

    def leverage(self, log_tau: float) -> float:
        """Mean leverage of the compared pairs at ``tau`` (0 without the second-order term)."""
        return self._evaluate(log_tau)[2]

    def _evaluate(self, log_tau: float) -> tuple[float, FloatArray, float]:
        key = round(log_tau, 6)
        if key not in self._cache:
            lam = math.exp(-2.0 * log_tau)
            fit = fit_bt(
                self.n,
                self.a,
                self.b,
                self.y,
                prior_precision=lam,
                init=self._init,
                compute_se=False,
            )
            m = np.asarray(fit.scores)
            self._init = m
            weight = self._edge_weights(m)
            if self._dense:
                log_det_info, spread, solve = self._dense_terms(weight, lam)
            else:
                log_det_info, spread, solve = self._sparse_terms(weight, lam)
            value = (
                fit.log_likelihood
                - lam * float(m @ m) / 2.0
                - 0.5 * log_det_info
                + 0.5 * (self.n - 1) * math.log(lam)
            )
            leverage = 0.0
            if self._second_order and self._lo.size:
                variance = spread()
                value += self._second_order_term(m, variance, solve)
                leverage = float(np.mean(weight * variance))
            self._cache[key] = (float(value), m, leverage)
        return self._cache[key]

    def _edge_weights(self, m: FloatArray) -> FloatArray:
        """The information ``count p (1 - p)`` of every compared pair of nodes at ``m``."""
        p = scipy.special.expit(m[self._lo] - m[self._hi])
        return np.asarray(self._edge_counts * p * (1.0 - p), dtype=np.float64)

    def _dense_terms(
        self, weight: FloatArray, lam: float
    ) -> tuple[float, Callable[[], FloatArray], Callable[[FloatArray], FloatArray]]:
        """Dense Cholesky: ``log det`` of ``H + lambda I`` on the centred subspace, the
        variances of the compared differences, and a solve with ``H + lambda I``."""
        n, lo, hi = self.n, self._lo, self._hi
        # H + lambda I + 11'/n has eigenvalue (1 + lambda) along 1, the rest as wanted
        mat = np.full((n, n), 1.0 / n)
        mat[lo, hi] -= weight
        mat[hi, lo] -= weight
        degree = np.bincount(lo, weights=weight, minlength=n) + np.bincount(
            hi, weights=weight, minlength=n
        )
        mat[np.diag_indices(n)] += degree + lam
        factor = scipy.linalg.cholesky(mat, lower=True, check_finite=False)
        log_det = 2.0 * float(np.sum(np.log(np.diag(factor)))) - math.log1p(lam)

        def solve(rhs: FloatArray) -> FloatArray:
            x = scipy.linalg.cho_solve((factor, True), rhs, check_finite=False)
            return np.asarray(x, dtype=np.float64)

        def spread() -> FloatArray:
            # the inverse from the factor (LAPACK potri, lower triangle only: lo < hi):
            # about half the work of solving for the identity
            inv, info = scipy.linalg.lapack.dpotri(factor, lower=1)
            if info != 0:
                inv = solve(np.eye(n))
            return np.asarray(inv[lo, lo] + inv[hi, hi] - 2.0 * inv[hi, lo], dtype=np.float64)

        return log_det, spread, solve

    def _sparse_terms(
        self, weight: FloatArray, lam: float
    ) -> tuple[float, Callable[[], FloatArray], Callable[[FloatArray], FloatArray]]:
        """As :meth:`_dense_terms` in ``O(comparisons)``: the Bethe log determinant of
        ``H + lambda I`` minus ``log lambda`` (its eigenvalue along ``1``), the pairwise
        beliefs' variances, and conjugate gradients."""
        n, lo, hi = self.n, self._lo, self._hi
        bp = laplacian_bp(n, lo, hi, weight, lam)

        def solve(rhs: FloatArray) -> FloatArray:
            adj = scipy.sparse.coo_array(
                (
                    np.concatenate([weight, weight]),
                    (np.concatenate([lo, hi]), np.concatenate([hi, lo])),
                ),
                shape=(n, n),
            ).tocsr()
            diag = adj.sum(axis=1) + lam
            mat = scipy.sparse.diags_array(diag) - adj
            jacobi = scipy.sparse.diags_array(1.0 / diag)
            x, _ = scipy.sparse.linalg.cg(mat, rhs, rtol=_CG_RTOL, M=jacobi, maxiter=10 * n)
            return np.asarray(x, dtype=np.float64)

        return bp.log_det - math.log(lam), lambda: bp.difference_variances, solve

    def _second_order_term(
        self, m: FloatArray, spread: FloatArray, solve: Callable[[FloatArray], FloatArray]
    ) -> float:
        """The second-order term of the Laplace expansion (module docstring), per compared
        pair of nodes (oriented ``lo -> hi``) with ``spread`` the variance of its difference."""
        n, lo, hi, count = self.n, self._lo, self._hi, self._edge_counts
        p = scipy.special.expit(m[lo] - m[hi])
        q = p * (1.0 - p)
        l3 = -count * q * (1.0 - 2.0 * p)  # summed over the pair's comparisons
        l4 = -count * q * (1.0 - 6.0 * q)
        u = l3 * spread
        z = np.asarray(
            np.bincount(lo, weights=u, minlength=n) - np.bincount(hi, weights=u, minlength=n),
            dtype=np.float64,
        )
        quartic = float(np.sum(l4 * np.square(spread))) / 8.0
        cubic_cross = float(z @ solve(z)) / 8.0 if np.any(z) else 0.0
        cubic_same = float(np.sum(np.square(l3) * spread**3)) / 12.0
        return quartic + cubic_cross + cubic_same

    def curvature_se(self, best: float, step: float = 0.1) -> float:
        """``1 / sqrt(-d2)``, ``d2`` the second difference of the evidence at ``best``."""
        d2 = (self(best + step) - 2.0 * self(best) + self(best - step)) / step**2
        return 1.0 / math.sqrt(-d2) if d2 < 0 else math.inf


def upper_log_tau(evidence: _Evidence) -> float:
    """The largest ``log tau`` (at most the grid's top) at which the mean leverage stays
    within :data:`LEVERAGE_MAX` (linear interpolation between grid points); ``inf``
    without the second-order term (nothing to distrust)."""
    if not evidence.second_order:
        return math.inf
    previous: tuple[float, float] | None = None
    for g in _GRID:
        lev = evidence.leverage(g)
        if lev > LEVERAGE_MAX:
            if previous is None:
                return g
            g0, lev0 = previous
            return g0 + (g - g0) * (LEVERAGE_MAX - lev0) / (lev - lev0)
        previous = (g, lev)
    return _GRID[-1]


def _maximise(evidence: _Evidence) -> float:
    """``log tau`` of the largest evidence: a grid, then a bounded Brent search around it;
    never above :func:`upper_log_tau`."""
    top = min(upper_log_tau(evidence), _GRID[-1])
    grid = [g for g in _GRID if g < top] + [top]
    values = [evidence(g) for g in grid]
    k = int(np.argmax(values))
    lo = grid[max(k - 1, 0)]
    hi = grid[min(k + 1, len(grid) - 1)]
    if hi <= lo:
        return grid[k]
    from scipy.optimize import minimize_scalar  # here: importing it costs every report ~0.2 s

    result = minimize_scalar(
        lambda g: -evidence(float(g)), bounds=(lo, hi), method="bounded", options={"xatol": 0.02}
    )
    best = float(result.x)
    return best if evidence(best) >= values[k] else grid[k]
