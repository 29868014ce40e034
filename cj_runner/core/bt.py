"""Bradley-Terry scores with standard errors and an optional order effect.

Model (Bradley & Terry 1952; the position term is the "home advantage" of Agresti 2002,
§10.6, and the ``eta`` of R's ``sirt::btm``): for a comparison that shows node ``a`` in
position A and node ``b`` in position B,

    logit P(A wins) = theta_a - theta_b + eta,        eta = 0 unless ``order_effect``.

:func:`fit_bt` maximises the log-posterior

    sum_k w_k [y_k log p_k + (1 - y_k) log(1 - p_k)] - (lambda / 2) (|theta|^2 + eta^2)

with a weak Gaussian prior (ridge) of precision ``lambda`` (:data:`DEFAULT_PRIOR_PRECISION`)
by damped Newton iterations. The Hessian of the log-likelihood in ``theta`` is a weighted
graph Laplacian with edge weights ``w p (1 - p)``; it is solved densely (Cholesky) for small
batches and by Jacobi-preconditioned conjugate gradients on a ``scipy.sparse`` matrix for
large ones, so nothing loops over comparisons in Python. Because every comparison adds the
same amount to one node's gradient as it takes from the other's, the optimum of the ridge
objective has ``sum(theta) = 0``: the scores come out centred without a constraint.

Standard errors come from the observed Fisher information ``H`` (the negative Hessian of the
log-posterior) under the sum-to-zero constraint: the covariance of the centred scores is
``P H^-1 P`` with ``P = I - 11'/n`` (for ``lambda = 0`` this is the Moore-Penrose inverse of
the Laplacian). Up to :data:`EXACT_COVARIANCE_MAX_N` nodes the full matrix is computed;
above it the variances use the Gaussian belief propagation approximation documented in
:func:`fit_bt`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import scipy.linalg
import scipy.linalg.lapack
import scipy.sparse
import scipy.sparse.csgraph
import scipy.sparse.linalg
import scipy.special
from numpy.typing import ArrayLike, NDArray

from cj_runner.core.gabp import laplacian_bp

FloatArray = NDArray[np.float64]
IntArray = NDArray[np.intp]

DEFAULT_PRIOR_PRECISION: float = 0.01
"""Default ridge: a N(0, 10^2) prior on every score (and on the order effect).

Essay qualities in comparative-judgement studies spread over a few logits (score standard
deviations of 1-3 logits are typical), so a prior standard deviation of 10 logits is far
wider than any plausible scale: it moves a well-measured score by well under 1% of its
standard error, yet keeps a node that won (or lost) every comparison finite, a few logits
beyond its opponents, and places the components of a disconnected comparison graph at a
common mean of 0 with very wide standard errors instead of failing.
"""

EXACT_COVARIANCE_MAX_N: int = 2000
"""Largest number of nodes for which the full covariance matrix (and exact SEs) is computed.

Inverting the dense ``n x n`` information matrix costs about ``n^3`` flops (~0.3 s at
``n = 2000`` on two cores) and ``8 n^2`` bytes; above this size ``covariance`` is ``None``
and the standard errors use the documented approximation of :func:`fit_bt`.
"""

_DENSE_SOLVE_MAX_N = 300  # Newton steps use a dense Cholesky up to here, sparse CG above.
_MAX_NEWTON_ITERATIONS = 200
_STEP_TOLERANCE = 1e-9  # converged when no score would move by more than this
_CG_RTOL = 1e-10
_F_NOISE = 1e-12  # relative rounding noise of the summed objective


class MLENotFoundError(ValueError):
    """The maximum likelihood estimate does not exist (or is not unique) for these data.

    Raised by :func:`fit_bt` with ``prior_precision=0`` when some group of nodes never lost
    (or never won) against the rest, a node has no comparisons, or the order effect cannot
    be separated from the scores. A ``prior_precision > 0`` always gives a finite fit.
    """


@dataclass(frozen=True, eq=False)
class BTFit:
    """Result of :func:`fit_bt`; arrays are read-only.

    Attributes:
        scores: log-abilities (logits), one per node, centred to mean 0.
        se: standard error of each score under the sum-to-zero constraint; exact up to
            :data:`EXACT_COVARIANCE_MAX_N` nodes, approximated above; ``None`` only when the
            fit was called with ``compute_se=False``.
        covariance: ``n x n`` covariance of the centred scores, or ``None`` when ``n`` exceeds
            :data:`EXACT_COVARIANCE_MAX_N` or ``compute_se=False``.
        log_likelihood: log-likelihood of the data at the estimate (the prior excluded).
        order_effect: the position-A logit shift ``eta`` (``None`` unless fitted).
        order_effect_se: its standard error (``None`` unless fitted with SEs).
        iterations: Newton iterations taken (0 when the start was already the optimum).
    """

    scores: FloatArray
    se: FloatArray | None
    covariance: FloatArray | None
    log_likelihood: float
    order_effect: float | None
    order_effect_se: float | None
    iterations: int


@dataclass(frozen=True)
class _Data:
    """Comparisons aggregated by ordered pair, plus the unordered-edge structure."""

    n: int
    a: IntArray  # node in position A, one entry per distinct ordered pair
    b: IntArray  # node in position B
    wins: FloatArray  # weighted wins of position A
    total: FloatArray  # total weight
    edge_of_pair: IntArray  # index into (lo, hi) of each ordered pair's unordered edge
    lo: IntArray
    hi: IntArray


def _sum_by(index: IntArray, values: FloatArray, size: int) -> FloatArray:
    """``out[k] = sum(values[index == k])`` for ``k < size`` (a vectorised scatter-add)."""
    return np.bincount(index, weights=values, minlength=size).astype(np.float64, copy=False)


def _as_index_array(values: ArrayLike, name: str, n_items: int) -> IntArray:
    arr = np.asarray(values)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be one-dimensional, got shape {arr.shape}")
    if arr.size == 0:
        return np.zeros(0, dtype=np.intp)
    if arr.dtype.kind not in "iu":
        raise ValueError(f"{name} must hold integer node indices, got dtype {arr.dtype}")
    if arr.min() < 0 or arr.max() >= n_items:
        raise ValueError(f"{name} holds a node index outside 0..{n_items - 1}")
    return arr.astype(np.intp, copy=False)


def _prepare(
    n_items: int,
    first: ArrayLike,
    second: ArrayLike,
    first_won: ArrayLike,
    weights: ArrayLike | None,
) -> _Data:
    """Validate the comparisons and aggregate them by ordered pair."""
    if isinstance(n_items, bool) or not isinstance(n_items, int | np.integer) or n_items < 1:
        raise ValueError(f"n_items must be a positive integer, got {n_items!r}")
    n = int(n_items)
    a = _as_index_array(first, "first", n)
    b = _as_index_array(second, "second", n)
    y = np.asarray(first_won, dtype=np.float64)
    m = a.size
    if b.size != m or y.shape != (m,):
        raise ValueError("first, second and first_won must have the same length")
    if np.any(a == b):
        raise ValueError("a comparison of a node with itself (first == second)")
    if not np.all((y >= 0.0) & (y <= 1.0)):
        raise ValueError("first_won must be true/false (or a share between 0 and 1)")
    if weights is None:
        w = np.ones(m)
    else:
        w = np.asarray(weights, dtype=np.float64)
        if w.shape != (m,):
            raise ValueError("weights must have one entry per comparison")
        if not np.all(np.isfinite(w) & (w >= 0.0)):
            raise ValueError("weights must be finite and non-negative")
    keep = w > 0
    a, b, y, w = a[keep], b[keep], y[keep], w[keep]

    pair_key, pair_index = np.unique(a * n + b, return_inverse=True)
    pa, pb = np.divmod(pair_key, n)
    wins = _sum_by(pair_index, w * y, pair_key.size)
    total = _sum_by(pair_index, w, pair_key.size)
    lo, hi = np.minimum(pa, pb), np.maximum(pa, pb)
    edge_key, edge_of_pair = np.unique(lo * n + hi, return_inverse=True)
    elo, ehi = np.divmod(edge_key, n)
    return _Data(
        n=n,
        a=pa.astype(np.intp),
        b=pb.astype(np.intp),
        wins=wins,
        total=total,
        edge_of_pair=edge_of_pair.astype(np.intp),
        lo=elo.astype(np.intp),
        hi=ehi.astype(np.intp),
    )


_last_prepared: tuple[int, tuple[Any, ...], _Data, _Structure] | None = None


def _frozen(values: ArrayLike) -> bool:
    """An array no one can change behind our back: read-only and owning its data."""
    return isinstance(values, np.ndarray) and not values.flags.writeable and values.flags.owndata


def _prepared(
    n_items: int,
    first: ArrayLike,
    second: ArrayLike,
    first_won: ArrayLike,
    weights: ArrayLike | None,
) -> tuple[_Data, _Structure]:
    """:func:`_prepare` and the sparse layout, reused for the very same read-only arrays.

    A batch's per-wave refit and its pair selection fit the same comparisons with
    different priors; :meth:`cj_runner.core.workflow.WorkflowState.comparison_arrays`
    hands both the same read-only arrays, so they are validated and aggregated once.
    """
    global _last_prepared
    arrays = (first, second, first_won)
    reuse = weights is None and all(_frozen(x) for x in arrays)
    last = _last_prepared
    if (
        reuse
        and last is not None
        and last[0] == n_items
        and all(x is y for x, y in zip(last[1], arrays, strict=True))
    ):
        return last[2], last[3]
    data = _prepare(n_items, first, second, first_won, weights)
    structure = (
        _structure(data)
        if data.n > _DENSE_SOLVE_MAX_N
        else _Structure(np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.intp))
    )
    if reuse:
        _last_prepared = (n_items, arrays, data, structure)
    return data, structure


@dataclass(frozen=True)
class _Point:
    """Parameters and the per-pair quantities computed from them.

    ``d = theta_a - theta_b + eta`` and ``q = 1 - p = expit(-d)`` (computed directly, so it
    keeps full precision when ``p`` is close to 1). The log-likelihood is
    ``sum(y log p + (w - y) log(1 - p)) = sum(y d + w log q)``; an overflowing trial step
    gives ``-inf``.
    """

    theta: FloatArray
    eta: float
    d: FloatArray
    q: FloatArray
    log_likelihood: float


def _point(data: _Data, theta: FloatArray, eta: float) -> _Point:
    d = np.asarray(theta[data.a] - theta[data.b] + eta, dtype=np.float64)
    q = np.asarray(scipy.special.expit(-d), dtype=np.float64)
    with np.errstate(divide="ignore"):
        loglik = float(np.sum(data.wins * d) + np.sum(data.total * np.log(q)))
    return _Point(theta, eta, d, q, loglik)


class _Information:
    """The theta block of the information matrix plus ``11'/n``, ready to be solved.

    ``M = L + lambda I + 11'/n`` where ``L`` is the Laplacian with edge weights ``c``. On
    vectors orthogonal to ``1`` it acts like the information matrix; along ``1`` it is
    ``(lambda + 1)``, so it is positive definite whenever the graph is connected or
    ``lambda > 0``.
    """

    def __init__(
        self,
        data: _Data,
        structure: _Structure,
        c: FloatArray,
        lam: float,
        adjacency: Any = None,
    ) -> None:
        """``adjacency``: a CSR matrix of ``structure``'s layout whose values this system
        may overwrite (one per Newton fit, reused by its iterations: building a sparse
        matrix costs more than a conjugate-gradient iteration)."""
        self.n = data.n
        self.lam = lam
        self.c = c
        self.degree = _sum_by(data.lo, c, data.n) + _sum_by(data.hi, c, data.n)
        self.diag = self.degree + lam
        self._data = data
        self._structure = structure
        self._factor: FloatArray | None = None
        self._sparse: Any = None
        self._reusable = adjacency

    def dense(self) -> FloatArray:
        """The matrix ``M`` as a dense array."""
        n = self.n
        off = _sum_by(self._data.lo * n + self._data.hi, self.c, n * n).reshape(n, n)
        mat = -(off + off.T) + 1.0 / n
        mat[np.diag_indices(n)] += self.diag
        return mat

    def _cholesky(self) -> FloatArray:
        """Upper Cholesky factor of ``M`` (LAPACK ``potrf``; the lower triangle is junk)."""
        if self._factor is None:
            factor, info = scipy.linalg.lapack.dpotrf(self.dense(), lower=False, clean=False)
            if info != 0:
                raise RuntimeError(f"information matrix is not positive definite (potrf {info})")
            self._factor = np.asarray(factor, dtype=np.float64)
        return self._factor

    def solve(self, rhs: FloatArray, rtol: float = _CG_RTOL, centred: bool = False) -> FloatArray:
        """Solve ``M x = rhs``: exactly (dense) or by CG to relative residual ``rtol``.

        ``centred``: ``rhs`` is orthogonal to ``1`` and the caller centres the solution, so
        with a prior the CG may leave out ``11'/n`` (one product less per iteration)."""
        if self.n <= _DENSE_SOLVE_MAX_N:
            x, info = scipy.linalg.lapack.dpotrs(self._cholesky(), rhs, lower=False)
            if info != 0:
                raise RuntimeError(f"LAPACK potrs failed with info={info}")
            return np.asarray(x, dtype=np.float64)
        # stopping early (maxiter) still gives a descent direction; the Newton line
        # search and the outer iteration take care of the rest
        return _pcg(
            self._adjacency(),
            self.diag,
            rhs,
            rtol,
            max(1000, 10 * self.n),
            rank_one=not (centred and self.lam > 0),
        )

    @property
    def iterative(self) -> bool:
        """Solved by conjugate gradients (above :data:`_DENSE_SOLVE_MAX_N` nodes)."""
        return self.n > _DENSE_SOLVE_MAX_N

    def _adjacency(self) -> Any:
        if self._sparse is None:
            s = self._structure
            if self._reusable is not None:
                np.take(self.c, s.src, out=self._reusable.data)
                self._sparse = self._reusable
            else:
                self._sparse = scipy.sparse.csr_array(
                    (self.c[s.src], s.indices, s.indptr), shape=(self.n, self.n)
                )
        return self._sparse

    def solve_bordered(
        self, h: FloatArray, corner: float, rhs: FloatArray, rhs_last: float, rtol: float
    ) -> tuple[FloatArray, float]:
        """Solve ``[[M, h], [h', corner]] [x; y] = [rhs; rhs_last]`` by conjugate gradients
        (iterative systems only): the Newton direction with an order effect in one solve,
        where block elimination takes two (``M^-1 g`` and ``M^-1 h``) and, measured on
        adaptive batches of 2,000 essays, about twice the matrix products."""
        x = _pcg(
            self._adjacency(),
            self.diag,
            np.append(rhs, rhs_last),
            rtol,
            max(1000, 10 * self.n),
            border=(h, corner),
            rank_one=False,
        )
        return x[:-1], float(x[-1])

    def inverse(self) -> FloatArray:
        """``M^-1`` as a dense matrix (LAPACK ``potri`` on the Cholesky factor)."""
        upper, info = scipy.linalg.lapack.dpotri(self._cholesky(), lower=False)
        if info != 0:
            raise RuntimeError(f"LAPACK potri failed with info={info}")
        inv = np.triu(upper)
        inv += np.triu(inv, 1).T
        return np.asarray(inv, dtype=np.float64)

    def approximate_variances(self) -> FloatArray:
        """Gaussian belief propagation estimate of the score variances (see :func:`fit_bt`
        and :func:`cj_runner.core.gabp.laplacian_bp`)."""
        # A tiny floor keeps a tree-shaped graph finite when lambda = 0 (its Laplacian is
        # singular); it adds at most 1 / (n * floor) to a variance.
        lam = max(self.lam, DEFAULT_PRIOR_PRECISION)
        return laplacian_bp(self.n, self._data.lo, self._data.hi, self.c, lam).variances


def _pcg(
    adj: Any,
    diag: FloatArray,
    rhs: FloatArray,
    rtol: float,
    maxiter: int,
    border: tuple[FloatArray, float] | None = None,
    rank_one: bool = True,
) -> FloatArray:
    """Solve ``(diag - adj + 11'/n) x = rhs`` by Jacobi-preconditioned conjugate gradients.

    The textbook iteration (Saad 2003, "Iterative methods for sparse linear systems",
    Algorithm 9.1), stopped at ``|r| <= rtol |rhs|``; written out because the per-call
    overhead of ``scipy.sparse.linalg.cg`` dominated the per-wave refits of large batches.
    With ``border = (h, corner)`` the matrix gains a last row and column ``[h', corner]``
    (``rhs`` and the solution one entry longer). ``rank_one=False`` leaves out ``11'/n``:
    with a prior (``diag`` above the degrees) the matrix is positive definite without it,
    and for a right-hand side orthogonal to ``1`` (a centred fit's gradient, ``h``) only
    the solution's mean changes, which the caller removes.
    """
    n = diag.size
    b = np.asarray(rhs, dtype=np.float64).ravel()
    inv_m = 1.0 / (diag + 1.0 / n) if rank_one else 1.0 / diag
    if border is not None:
        h, corner = border
        inv_m = np.append(inv_m, 1.0 / corner)
    x = np.zeros(b.size)
    r = b.copy()
    target = rtol * float(np.sqrt(b @ b))
    if target == 0.0:
        return x
    z = inv_m * r
    p = z.copy()
    rz = float(r @ z)
    for _ in range(maxiter):
        if border is None:
            ap = diag * p - adj @ p
            if rank_one:
                ap += p.sum() / n
        else:
            head, last = p[:n], p[n]
            ap = np.empty_like(p)
            ap[:n] = diag * head - adj @ head + h * last
            if rank_one:
                ap[:n] += head.sum() / n
            ap[n] = h @ head + corner * last
        alpha = rz / float(p @ ap)
        x += alpha * p
        r -= alpha * ap
        if float(np.sqrt(r @ r)) <= target:
            break
        z = inv_m * r
        rz_new = float(r @ z)
        p *= rz_new / rz
        p += z
        rz = rz_new
    return x


@dataclass(frozen=True)
class _Structure:
    """CSR layout of the symmetric adjacency of the unordered edges (fixed per fit)."""

    indptr: NDArray[np.int64]
    indices: NDArray[np.int64]
    src: IntArray  # edge index of each stored entry


def _structure(data: _Data) -> _Structure:
    n_edges = data.lo.size
    rows = np.concatenate([data.lo, data.hi])
    cols = np.concatenate([data.hi, data.lo])
    # The edges are distinct, so a COO -> CSR conversion (a counting sort in C) carrying the
    # edge index as its value yields the CSR layout and each entry's edge at once.
    layout = scipy.sparse.coo_array(
        (np.concatenate([np.arange(n_edges), np.arange(n_edges)]).astype(np.float64), (rows, cols)),
        shape=(data.n, data.n),
    ).tocsr()
    return _Structure(
        indptr=layout.indptr.astype(np.int64),
        indices=layout.indices.astype(np.int64),
        src=layout.data.astype(np.intp),
    )


def _describe(nodes: IntArray) -> str:
    shown = ", ".join(str(int(i)) for i in nodes[:10])
    return f"[{shown}{', ...' if nodes.size > 10 else ''}]"


def _check_mle_exists(data: _Data, order_effect: bool) -> None:
    """Raise :class:`MLENotFoundError` when the unpenalised MLE does not exist."""
    n = data.n
    hint = "; fit with prior_precision > 0 instead"
    if n == 1:
        if order_effect:
            raise MLENotFoundError("the order effect cannot be estimated without comparisons")
        return
    node_weight = _sum_by(data.a, data.total, n) + _sum_by(data.b, data.total, n)
    isolated = np.flatnonzero(node_weight == 0)
    if isolated.size:
        raise MLENotFoundError(
            "maximum likelihood estimate does not exist: nodes "
            f"{_describe(isolated)} have no comparisons{hint}"
        )
    # Zermelo (1929) / Ford (1957): the MLE exists iff the graph with an arc loser -> winner
    # for every outcome is strongly connected.
    a_won = data.wins > 0
    b_won = data.total - data.wins > 0
    losers = np.concatenate([data.b[a_won], data.a[b_won]])
    winners = np.concatenate([data.a[a_won], data.b[b_won]])
    graph = scipy.sparse.csr_array((np.ones(losers.size), (losers, winners)), shape=(n, n))
    n_comp, label = scipy.sparse.csgraph.connected_components(
        graph, directed=True, connection="strong"
    )
    if n_comp > 1:
        lost_outside = np.zeros(n_comp, dtype=bool)
        across = label[losers] != label[winners]
        lost_outside[label[losers][across]] = True
        group = int(np.flatnonzero(~lost_outside)[0])
        raise MLENotFoundError(
            "maximum likelihood estimate does not exist: nodes "
            f"{_describe(np.flatnonzero(label == group))} never lost a comparison to a node "
            "outside this group, so their scores would grow without bound (the win/loss "
            f"graph is not strongly connected){hint}"
        )
    if order_effect:
        _check_order_effect_bounded(data, hint)


def _check_order_effect_bounded(data: _Data, hint: str) -> None:
    """LP test: is there a direction (v, c) that raises no outcome's fit and some strictly?

    Outcome k with A winning is non-decreasing along ``(v, c)`` iff ``v_a - v_b + c >= 0``.
    If a direction makes all such terms >= 0 with a positive sum, the log-likelihood
    increases for ever along it and the MLE does not exist (Albert & Anderson 1984).
    """
    n = data.n
    a_won = data.wins > 0
    b_won = data.total - data.wins > 0
    rows_a = np.concatenate([data.a[a_won], data.a[b_won]])
    rows_b = np.concatenate([data.b[a_won], data.b[b_won]])
    sign = np.concatenate([np.ones(a_won.sum()), -np.ones(b_won.sum())])
    k = sign.size
    r = np.arange(k)
    # constraint: -sign * (v_a - v_b + c) <= 0
    a_ub = scipy.sparse.csr_array(
        (
            np.concatenate([-sign, sign, -sign]),
            (np.concatenate([r, r, r]), np.concatenate([rows_a, rows_b, np.full(k, n)])),
        ),
        shape=(k, n + 1),
    )
    objective = np.asarray(a_ub.sum(axis=0)).ravel()  # minimise -sum_k sign_k (...)
    from scipy.optimize import linprog  # here: importing it costs every report ~0.2 s

    result = linprog(objective, A_ub=a_ub, b_ub=np.zeros(k), bounds=(-1.0, 1.0), method="highs")
    if result.status == 0 and -result.fun > 1e-7:
        raise MLENotFoundError(
            "maximum likelihood estimate with an order effect does not exist: the outcomes "
            "can be fitted ever better by pushing the position-A effect (and scores) towards "
            f"infinity, e.g. position A (or B) won every comparison{hint}"
        )


def fit_bt(
    n_items: int,
    first: ArrayLike,
    second: ArrayLike,
    first_won: ArrayLike,
    weights: ArrayLike | None = None,
    *,
    order_effect: bool = False,
    prior_precision: float = DEFAULT_PRIOR_PRECISION,
    init: ArrayLike | None = None,
    compute_se: bool = True,
    exact_se: bool | None = None,
    tolerance: float = _STEP_TOLERANCE,
) -> BTFit:
    """Fit Bradley-Terry scores (and optionally an order effect) to pairwise comparisons.

    Model: ``logit P(A wins) = theta[first] - theta[second] + eta`` (Bradley & Terry 1952),
    with ``eta`` the position-A effect when ``order_effect`` is true and 0 otherwise. The
    estimate maximises the log-likelihood minus ``prior_precision / 2 * (|theta|^2 +
    eta^2)``, i.e. it is the posterior mode under independent ``N(0, 1 / prior_precision)``
    priors; with ``prior_precision = 0`` it is the plain maximum likelihood estimate under
    ``sum(theta) = 0``.

    Standard errors are ``sqrt(diag(P H^-1 P))`` where ``H`` is the observed information
    (negative Hessian of the log-posterior; for the order-effect fit, the ``theta`` block
    of the inverse of the joint information) and ``P = I - 11'/n`` the centring projection.
    Up to :data:`EXACT_COVARIANCE_MAX_N` nodes this is computed exactly from the dense
    inverse. Above it the variances come from Gaussian belief propagation on the
    comparison graph (Weiss & Freeman 2001): exact when the graph is a tree, and on
    random comparison graphs within about 0.1% of the exact SE on average and 3% for the
    worst 1% of nodes at 4 comparisons per node (0.7% at 10), where ``1 / sqrt`` of the
    diagonal of the information (``sirt::btm``'s SE) is 20% too small at 4 comparisons per
    node and 9% at 10 (see docs/statistics.md). With ``prior_precision = 0`` it uses
    :data:`DEFAULT_PRIOR_PRECISION` for this step, which only matters for long chain-like
    graphs. The order-effect SE is exact at every size (one extra conjugate-gradient
    solve).

    Args:
        n_items: number of nodes; node indices are ``0..n_items-1``.
        first: node shown in position A, one entry per comparison.
        second: node shown in position B.
        first_won: whether position A won (booleans; a share in ``[0, 1]`` counts as a
            fractional win, e.g. 0.5 for a tie).
        weights: optional non-negative weight (count) per comparison; zero drops it.
        order_effect: also fit the position-A logit shift ``eta``.
        prior_precision: ridge precision ``lambda`` (default :data:`DEFAULT_PRIOR_PRECISION`);
            0 for plain maximum likelihood.
        init: warm-start scores (length ``n_items``), e.g. the previous wave's fit.
        compute_se: set false to skip standard errors and covariance (faster refits).
        exact_se: ``False`` takes the approximate variances (no covariance) at every
            size, ``True`` the exact ones at every size; ``None`` (default) exact up to
            :data:`EXACT_COVARIANCE_MAX_N` nodes.
        tolerance: converged when no score would move by more than this (default
            ``1e-9``); the per-wave refits of large batches take ``1e-6``, which the
            stability check (a threshold of a few hundredths) and pair selection cannot
            tell apart, at a fraction of the conjugate-gradient work.

    Returns:
        A :class:`BTFit`.

    Raises:
        ValueError: malformed input (bad indices, self-comparisons, lengths, weights).
        MLENotFoundError: ``prior_precision == 0`` and the MLE does not exist or is not
            unique (a group of nodes never lost or never won against the others, a node
            without comparisons, or an order effect that cannot be estimated). With
            ``order_effect`` this check solves a linear programme (HiGHS), which takes
            seconds for ~100,000 comparisons; the default prior skips it.
        RuntimeError: the Newton iterations did not converge (not expected to happen).
    """
    lam = float(prior_precision)
    if not np.isfinite(lam) or lam < 0:
        raise ValueError(f"prior_precision must be finite and >= 0, got {prior_precision!r}")
    data, structure = _prepared(n_items, first, second, first_won, weights)
    n = data.n
    if lam == 0:
        _check_mle_exists(data, order_effect)

    if init is None:
        theta = np.zeros(n)
    else:
        theta = np.array(init, dtype=np.float64)
        if theta.shape != (n,) or not np.all(np.isfinite(theta)):
            raise ValueError("init must hold one finite score per node")
        theta -= theta.mean()
    if not tolerance > 0:
        raise ValueError(f"tolerance must be positive, got {tolerance!r}")
    result = _newton(data, structure, lam, order_effect, theta, tolerance)
    optimum = result.point

    se: FloatArray | None = None
    covariance: FloatArray | None = None
    eta_se: float | None = None
    if compute_se:
        z: FloatArray | None = None
        schur = 0.0
        if order_effect:
            _, z, schur = _eta_elimination(data, result.system, result.info, lam, _CG_RTOL)
            eta_se = float(np.sqrt(1.0 / schur))
        if exact_se if exact_se is not None else n <= EXACT_COVARIANCE_MAX_N:
            # M^-1 minus its component along 1 (exactly 1 / (n (1 + lambda)) there)
            covariance = result.system.inverse() - 1.0 / (n * (1.0 + lam))
            if n == 1:
                covariance[:] = 0.0  # a single centred score is exactly 0
            if z is not None:
                covariance += np.outer(z, z) / schur
            variance = np.diag(covariance).copy()
            covariance.setflags(write=False)
        else:
            variance = result.system.approximate_variances()
            if z is not None:
                variance += z * z / schur
        se = np.sqrt(np.maximum(variance, 0.0))
        se.setflags(write=False)
    scores = optimum.theta.copy()
    scores.setflags(write=False)
    return BTFit(
        scores=scores,
        se=se,
        covariance=covariance,
        log_likelihood=optimum.log_likelihood,
        order_effect=optimum.eta if order_effect else None,
        order_effect_se=eta_se,
        iterations=result.iterations,
    )


@dataclass(frozen=True)
class _NewtonResult:
    point: _Point  # the optimum
    iterations: int
    system: _Information  # information at the optimum
    info: FloatArray  # information of each pair at the optimum


def _objective(point: _Point, lam: float) -> float:
    """Negative log-posterior at ``point``."""
    theta, eta = point.theta, point.eta
    return -point.log_likelihood + 0.5 * lam * (float(np.sum(theta * theta)) + eta * eta)


def _derivatives(data: _Data, point: _Point, lam: float) -> tuple[FloatArray, float, FloatArray]:
    """Gradient of :func:`_objective` in ``theta`` and ``eta``, and each pair's information.

    With ``r_k = wins_k - total_k p_k`` (the derivative of the log-likelihood in ``d_k``),
    ``-dL/dtheta_a = -r_k``, ``-dL/dtheta_b = +r_k`` and ``-dL/deta = -sum r``; the
    information of pair ``k`` is ``total_k p_k (1 - p_k)``.
    """
    p = 1.0 - point.q
    resid = data.wins - data.total * p
    g_theta = _sum_by(data.b, resid, data.n) - _sum_by(data.a, resid, data.n)
    g_theta += lam * point.theta
    g_eta = -float(np.sum(resid)) + lam * point.eta
    return g_theta, g_eta, data.total * p * point.q


def _eta_elimination(
    data: _Data, system: _Information, info: FloatArray, lam: float, rtol: float
) -> tuple[FloatArray, FloatArray, float]:
    """``h`` (the theta-eta information), ``z = M^-1 h`` and eta's Schur complement.

    The Schur complement ``S = I_eta - h' M^-1 h`` is the information on eta given theta;
    ``Var(eta) = 1 / S``. ``S ~ 0`` means eta is confounded with the scores.
    """
    h = _sum_by(data.a, info, data.n) - _sum_by(data.b, info, data.n)
    z = system.solve(h, rtol)
    total_info = float(np.sum(info)) + lam
    schur = total_info - float(h @ z)
    if not schur > 1e-10 * total_info:
        raise MLENotFoundError(
            "the order effect cannot be separated from the scores (e.g. each pair was "
            "shown in one orientation only and the comparisons form no cycle); fit with "
            "prior_precision > 0 or without the order effect"
        )
    return h, z, schur


def _direction(
    data: _Data,
    system: _Information,
    gradient: tuple[FloatArray, float],
    info: FloatArray,
    lam: float,
    order_effect: bool,
    rtol: float,
    bordered: bool = False,
) -> tuple[FloatArray, float]:
    """Newton direction ``-H^-1 g`` in (theta, eta), theta centred; eta by block
    elimination, or with ``bordered`` (loose fits of large batches) in one solve."""
    g_theta, g_eta = gradient
    if order_effect and bordered and system.iterative and lam > 0:
        # the prior keeps eta's Schur complement >= lambda: the bordered matrix is
        # positive definite, and one solve gives both parts of the direction (only for
        # loose fits: solved to 1e-10 its conjugate gradients stall, where the two
        # solves of the block elimination do not)
        h = _sum_by(data.a, info, data.n) - _sum_by(data.b, info, data.n)
        solved, eta = system.solve_bordered(h, float(np.sum(info)) + lam, g_theta, g_eta, rtol)
        return -(solved - solved.mean()), -eta
    # a loose fit's gradient is orthogonal to 1 (its scores stay centred) and the
    # direction is centred below: its solve may leave out 11'/n
    step_theta = -system.solve(g_theta, rtol, centred=bordered and not order_effect)
    step_eta = 0.0
    if order_effect:
        h, z, schur = _eta_elimination(data, system, info, lam, rtol)
        step_eta = -(g_eta + float(h @ step_theta)) / schur
        step_theta -= z * step_eta
    return step_theta - step_theta.mean(), step_eta


def _newton(
    data: _Data,
    structure: _Structure,
    lam: float,
    order_effect: bool,
    theta: FloatArray,
    tolerance: float = _STEP_TOLERANCE,
) -> _NewtonResult:
    """Damped (inexact) Newton on the negative log-posterior.

    Newton directions with Armijo backtracking (Boyd & Vandenberghe 2004, §9.5); with the
    iterative solver each direction is solved to a relative accuracy ``min(0.1, |g| / |g0|)``
    (an Eisenstat-Walker forcing term), so early steps are cheap and the last ones exact.
    """
    # a looser tolerance also takes less accurate solves: an inexact Newton step still
    # converges to the optimum (the gradient is exact), only the stopping test is looser
    loose = tolerance > _STEP_TOLERANCE
    floor = 1e-3 if loose else _CG_RTOL
    point = _point(data, theta, 0.0)
    f_current = _objective(point, lam)
    adjacency = (
        scipy.sparse.csr_array(
            (np.zeros(structure.src.size), structure.indices, structure.indptr),
            shape=(data.n, data.n),
        )
        if data.n > _DENSE_SOLVE_MAX_N
        else None
    )
    g_first = 0.0
    iterations = 0
    while True:
        g_theta, g_eta, info = _derivatives(data, point, lam)
        g_norm = float(np.max(np.abs(g_theta), initial=0.0))
        if order_effect:
            g_norm = max(g_norm, abs(g_eta))
        g_first = g_first or g_norm
        rtol = max(floor, min(0.1, g_norm / g_first)) if g_first else floor
        system = _Information(
            data, structure, _sum_by(data.edge_of_pair, info, data.lo.size), lam, adjacency
        )

        gradient = (g_theta, g_eta)
        step_theta, step_eta = _direction(
            data, system, gradient, info, lam, order_effect, rtol, loose
        )
        largest = max(float(np.max(np.abs(step_theta), initial=0.0)), abs(step_eta))
        if largest <= tolerance and rtol > floor:
            # confirm convergence with an accurate solve
            step_theta, step_eta = _direction(
                data, system, gradient, info, lam, order_effect, floor, loose
            )
            largest = max(float(np.max(np.abs(step_theta), initial=0.0)), abs(step_eta))
        if largest <= tolerance:
            break
        if iterations >= _MAX_NEWTON_ITERATIONS:
            raise RuntimeError(f"Bradley-Terry fit did not converge in {iterations} iterations")
        slope = float(np.sum(g_theta * step_theta)) + g_eta * step_eta
        t = 1.0
        for _ in range(60):  # Armijo backtracking
            trial = _point(data, point.theta + t * step_theta, point.eta + t * step_eta)
            f_new = _objective(trial, lam)
            # The second test accepts a step whose effect on f is below rounding noise:
            # near the optimum the Armijo test can no longer be decided, and a full
            # Newton step is then exactly what converges.
            if f_new <= f_current + 1e-4 * t * slope or f_new - f_current <= _F_NOISE * abs(
                f_current
            ):
                break
            t *= 0.5
        else:
            break  # no decrease left at machine precision: this is the optimum
        point, f_current = trial, f_new
        iterations += 1
    return _NewtonResult(point, iterations, system, info)


def max_score_change(previous: ArrayLike, current: ArrayLike) -> float:
    """Largest absolute change of any node's score between two fits (stability, spec §5).

    Args:
        previous: scores of the earlier fit (one per node, same node order).
        current: scores of the later fit.

    Returns:
        ``max_i |current_i - previous_i|``; 0.0 when there are no nodes.

    Raises:
        ValueError: the two vectors differ in length or hold a non-finite value.
    """
    before = np.asarray(previous, dtype=np.float64)
    after = np.asarray(current, dtype=np.float64)
    if before.shape != after.shape or before.ndim != 1:
        raise ValueError("previous and current must be score vectors of the same length")
    if not (np.all(np.isfinite(before)) and np.all(np.isfinite(after))):
        raise ValueError("scores must be finite")
    return float(np.max(np.abs(after - before), initial=0.0))
