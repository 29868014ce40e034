"""The information matrix of a Bradley-Terry fit and its solvers.

:class:`_Information` is the ``theta`` block of the information matrix (a weighted graph
Laplacian plus the prior), solved densely by Cholesky for small batches and for large
ones by :func:`_pcg`, Jacobi-preconditioned conjugate gradients on the CSR layout of
:mod:`cj_runner.core.bt.data`; it also gives the exact covariance and the belief-propagation
variances of :func:`cj_runner.core.bt.fit_bt`.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import scipy.linalg.lapack
import scipy.sparse

from cj_runner.core.bt.data import (
    DEFAULT_PRIOR_PRECISION,
    FloatArray,
    _Data,
    _iterative,
    _Structure,
    _sum_by,
)
from cj_runner.core.gabp import laplacian_bp

_CG_RTOL = 1e-10


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
        if not _iterative(self.n):
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
        return _iterative(self.n)

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
