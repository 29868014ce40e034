"""The panel fit: shared scores, one position-A effect per judge (:func:`fit_panel`),
its input :class:`PanelComparisons` and result :class:`PanelFit`."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import scipy.linalg
import scipy.special
from numpy.typing import ArrayLike, NDArray

from cj_runner.core.bt import DEFAULT_PRIOR_PRECISION

FloatArray = NDArray[np.float64]
IntArray = NDArray[np.intp]

PANEL_MAX_NODES: int = 2000
"""Largest number of nodes :func:`fit_panel` accepts (its dense ``(n + J)^2`` solve costs
about ``(n + J)^3`` flops)."""

_MAX_NEWTON_ITERATIONS = 200
_STEP_TOLERANCE = 1e-9


@dataclass(frozen=True)
class PanelComparisons:
    """Validated comparisons of a panel: node indices, judge index and outcome per entry."""

    n_items: int
    n_judges: int
    judge: IntArray
    first: IntArray
    second: IntArray
    first_won: FloatArray

    @classmethod
    def of(
        cls,
        n_items: int,
        n_judges: int,
        judge: ArrayLike,
        first: ArrayLike,
        second: ArrayLike,
        first_won: ArrayLike,
    ) -> PanelComparisons:
        """Validate and hold the arrays.

        Raises:
            ValueError: lengths differ, an index is out of range, a self-comparison, or an
                outcome outside ``[0, 1]``.
        """
        if n_items < 1 or n_judges < 1:
            raise ValueError("need at least one node and one judge")
        j = _indices(judge, "judge", n_judges)
        a = _indices(first, "first", n_items)
        b = _indices(second, "second", n_items)
        y = np.asarray(first_won, dtype=np.float64).ravel()
        if not (j.size == a.size == b.size == y.size):
            raise ValueError("judge, first, second and first_won must have the same length")
        if np.any(a == b):
            raise ValueError("a comparison of a node with itself (first == second)")
        if not np.all((y >= 0.0) & (y <= 1.0)):
            raise ValueError("first_won must be true/false (or a share between 0 and 1)")
        return cls(n_items, n_judges, j, a, b, y)

    def select(self, keep: NDArray[np.bool_]) -> PanelComparisons:
        """The comparisons where ``keep`` is true (same nodes and judges)."""
        return PanelComparisons(
            self.n_items,
            self.n_judges,
            self.judge[keep],
            self.first[keep],
            self.second[keep],
            self.first_won[keep],
        )


def _indices(values: ArrayLike, name: str, size: int) -> IntArray:
    arr = np.asarray(values).ravel()
    if arr.size == 0:
        return np.zeros(0, dtype=np.intp)
    if arr.dtype.kind not in "iu":
        raise ValueError(f"{name} must hold integer indices, got dtype {arr.dtype}")
    if arr.min() < 0 or arr.max() >= size:
        raise ValueError(f"{name} holds an index outside 0..{size - 1}")
    return arr.astype(np.intp)


@dataclass(frozen=True, eq=False)
class PanelFit:
    """Result of :func:`fit_panel`.

    Attributes:
        scores: centred scores (logits), one per node.
        se: their standard errors (sum-to-zero constraint, order effects integrated).
        covariance: ``n x n`` covariance of the centred scores.
        order_effects: ``eta_j`` per judge (zeros when fitted without order effects).
        order_effect_se: their standard errors (``nan`` without order effects).
        log_likelihood: log-likelihood at the estimate (prior excluded, weights applied).
        iterations: Newton iterations taken.
    """

    scores: FloatArray
    se: FloatArray
    covariance: FloatArray
    order_effects: FloatArray
    order_effect_se: FloatArray
    log_likelihood: float
    iterations: int


def fit_panel(
    data: PanelComparisons,
    *,
    weights: ArrayLike | None = None,
    order_effect: bool = True,
    prior_precision: float = DEFAULT_PRIOR_PRECISION,
    score_prior_precision: float | None = None,
) -> PanelFit:
    """Fit one Bradley-Terry scale with a position-A effect per judge (module docstring).

    Maximises ``sum_k w_k [y_k log p_k + (1 - y_k) log(1 - p_k)] - lambda / 2 (|theta|^2 +
    |eta|^2)`` with ``logit p_k = theta_a - theta_b + eta_j`` by damped Newton steps
    (Armijo backtracking, Boyd & Vandenberghe 2004 §9.5). The optimum has ``sum(theta) =
    0`` (each comparison adds to one node's gradient what it takes from the other's), and
    the covariance is the inverse of the information restricted to that subspace: the
    information plus ``11'/n`` on the score block is inverted and the score block centred
    (as in :func:`cj_runner.core.bt.fit_bt`).

    Args:
        data: the comparisons (:meth:`PanelComparisons.of`).
        weights: optional non-negative weight per comparison (0 drops it), e.g. from
            :func:`misfit_weights`.
        order_effect: fit ``eta_j`` per judge (else all zero).
        prior_precision: ridge precision ``lambda > 0``.
        score_prior_precision: a different precision for the scores' prior (e.g.
            ``1 / tau^2`` of an empirical-Bayes prior); default ``prior_precision``.

    Returns:
        A :class:`PanelFit`.

    Raises:
        ValueError: ``prior_precision <= 0``, bad weights, or more than
            :data:`PANEL_MAX_NODES` nodes.
        RuntimeError: Newton did not converge (not expected with ``lambda > 0``).
    """
    lam = float(prior_precision)
    lam_theta = lam if score_prior_precision is None else float(score_prior_precision)
    if not (math.isfinite(lam) and lam > 0 and math.isfinite(lam_theta) and lam_theta > 0):
        raise ValueError(f"prior_precision must be finite and > 0, got {prior_precision!r}")
    n, n_judges = data.n_items, data.n_judges
    if n > PANEL_MAX_NODES:
        raise ValueError(f"fit_panel takes at most {PANEL_MAX_NODES} nodes, got {n}")
    m = data.first.size
    w = np.ones(m) if weights is None else np.asarray(weights, dtype=np.float64).ravel()
    if w.shape != (m,) or not np.all(np.isfinite(w) & (w >= 0)):
        raise ValueError("weights must be finite, non-negative, one per comparison")
    # aggregate by (judge, first, second): the fit only needs wins and totals per cell
    key = (data.judge * n + data.first) * n + data.second
    cells, cell_of = np.unique(key, return_inverse=True)
    wins = np.bincount(cell_of, weights=w * data.first_won, minlength=cells.size)
    total = np.bincount(cell_of, weights=w, minlength=cells.size)
    jb, b = np.divmod(cells, n)
    j, a = np.divmod(jb, n)
    j, a, b = j.astype(np.intp), a.astype(np.intp), b.astype(np.intp)
    n_eta = n_judges if order_effect else 0
    size = n + n_eta

    def unpack(x: FloatArray) -> tuple[FloatArray, FloatArray]:
        eta = x[n:] if order_effect else np.zeros(n_judges)
        return x[:n], eta

    def evaluate(x: FloatArray) -> tuple[float, FloatArray, FloatArray]:
        theta, eta = unpack(x)
        d = theta[a] - theta[b] + eta[j]
        with np.errstate(divide="ignore"):
            loglik = float(np.sum(wins * d) + np.sum(total * np.log(scipy.special.expit(-d))))
        return loglik, d, np.asarray(scipy.special.expit(d), dtype=np.float64)

    precision = np.full(size, lam)
    precision[:n] = lam_theta

    def objective(x: FloatArray, loglik: float) -> float:
        return -loglik + 0.5 * float(x @ (precision * x))

    def derivatives(x: FloatArray, p: FloatArray) -> tuple[FloatArray, FloatArray]:
        resid = wins - total * p
        grad = precision * x
        grad[:n] += np.bincount(b, resid, n) - np.bincount(a, resid, n)
        if order_effect:
            grad[n:] -= np.bincount(j, resid, n_judges)
        c = total * p * (1.0 - p)
        info = np.zeros((size, size))
        np.add.at(info, (a, a), c)
        np.add.at(info, (b, b), c)
        np.add.at(info, (a, b), -c)
        np.add.at(info, (b, a), -c)
        if order_effect:
            np.add.at(info, (n + j, n + j), c)
            np.add.at(info, (a, n + j), c)
            np.add.at(info, (n + j, a), c)
            np.add.at(info, (b, n + j), -c)
            np.add.at(info, (n + j, b), -c)
        info[np.diag_indices(size)] += precision
        info[:n, :n] += 1.0 / n  # pins the direction 1 of the scores (it is not moved)
        return grad, info

    x = np.zeros(size)
    loglik, _, p = evaluate(x)
    f_current = objective(x, loglik)
    iterations = 0
    while True:
        grad, info = derivatives(x, p)
        factor = scipy.linalg.cho_factor(info)
        step = -scipy.linalg.cho_solve(factor, grad)
        step[:n] -= step[:n].mean()
        if float(np.max(np.abs(step), initial=0.0)) <= _STEP_TOLERANCE:
            break
        if iterations >= _MAX_NEWTON_ITERATIONS:
            raise RuntimeError(f"panel fit did not converge in {iterations} iterations")
        slope = float(grad @ step)
        t = 1.0
        for _ in range(60):
            trial = x + t * step
            trial_ll, _, trial_p = evaluate(trial)
            f_new = objective(trial, trial_ll)
            if f_new <= f_current + 1e-4 * t * slope or f_new - f_current <= 1e-12 * abs(f_current):
                break
            t *= 0.5
        else:
            break
        x, loglik, p, f_current = trial, trial_ll, trial_p, f_new
        iterations += 1

    inverse = scipy.linalg.cho_solve(factor, np.eye(size))
    cov = inverse[:n, :n]
    cov = cov - cov.mean(axis=0, keepdims=True)
    cov = cov - cov.mean(axis=1, keepdims=True)
    if n == 1:
        cov[:] = 0.0
    theta, eta = unpack(x)
    eta_se = (
        np.sqrt(np.maximum(np.diag(inverse)[n:], 0.0))
        if order_effect
        else np.full(n_judges, math.nan)
    )
    return PanelFit(
        scores=theta.copy(),
        se=np.sqrt(np.maximum(np.diag(cov), 0.0)),
        covariance=cov,
        order_effects=np.asarray(eta, dtype=np.float64).copy(),
        order_effect_se=np.asarray(eta_se, dtype=np.float64),
        log_likelihood=loglik,
        iterations=iterations,
    )


def _probabilities(data: PanelComparisons, fit: PanelFit) -> FloatArray:
    d = fit.scores[data.first] - fit.scores[data.second] + fit.order_effects[data.judge]
    return np.asarray(scipy.special.expit(d), dtype=np.float64)
