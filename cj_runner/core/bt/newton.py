"""The damped Newton iterations of a Bradley-Terry fit.

The objective (the negative log-posterior), its gradient and each pair's information side
by side, the Newton direction (the order effect by block elimination, or in one bordered
solve for loose fits of large batches), and :func:`_newton`, the iteration with Armijo
backtracking.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse
import scipy.special

from cj_runner.core.bt.data import (
    FloatArray,
    _Data,
    _iterative,
    _Structure,
    _sum_by,
)
from cj_runner.core.bt.existence import MLENotFoundError
from cj_runner.core.bt.solver import _CG_RTOL, _Information

_MAX_NEWTON_ITERATIONS = 200
_STEP_TOLERANCE = 1e-9  # converged when no score would move by more than this
_F_NOISE = 1e-12  # relative rounding noise of the summed objective


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
        if _iterative(data.n)
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
