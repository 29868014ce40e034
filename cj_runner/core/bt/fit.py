"""The fit API: :func:`fit_bt` and its result :class:`BTFit`; :func:`max_score_change`."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike

from cj_runner.core.bt.data import DEFAULT_PRIOR_PRECISION, FloatArray, _prepared
from cj_runner.core.bt.existence import _check_mle_exists
from cj_runner.core.bt.newton import _STEP_TOLERANCE, _eta_elimination, _newton
from cj_runner.core.bt.solver import _CG_RTOL

EXACT_COVARIANCE_MAX_N: int = 2000
"""Largest number of nodes for which the full covariance matrix (and exact SEs) is computed.

Inverting the dense ``n x n`` information matrix costs about ``n^3`` flops (~0.3 s at
``n = 2000`` on two cores) and ``8 n^2`` bytes; above this size ``covariance`` is ``None``
and the standard errors use the documented approximation of :func:`fit_bt`.
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
