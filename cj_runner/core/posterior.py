"""The scores users are shown: a hierarchical Bayesian posterior of the Bradley-Terry model.

Why not the maximum likelihood estimate with its Fisher standard errors? Adaptive pair
selection (``balanced``, ``swiss``, ``infogain``, ``grade_boundary`` all pair essays whose
current scores are close) stretches the ML scale: at n = 100 and 12 comparisons per
essay the ``score ± 1.96 SE`` intervals cover the true scores 25-60% of the time (the
calibration benchmark, ``benchmarks/bench_calibration.py``). The likelihood does not
depend on how the pairs were chosen when the choice used only earlier answers, so a
posterior stays valid under any such design (Rubin 1976; Mislevy & Wu 1996); what it needs
is a prior that matches how essays spread.

Model: ``theta_i ~ N(0, tau^2)`` (centred), the Bradley-Terry likelihood with the optional
order effect ``eta``, and a half-Cauchy hyperprior on ``tau`` with scale :data:`HYPER_SCALE`
logits (Gelman 2006, "Prior distributions for variance parameters in hierarchical models",
Bayesian Analysis 1(3)). :func:`score_posterior` computes it

* up to :data:`GIBBS_MAX_N` nodes by Polya-Gamma Gibbs sampling (:func:`gibbs_posterior`,
  seeded), which integrates over ``tau`` exactly up to Monte Carlo error;
* above, by a mixture (:func:`mixture_posterior`): for every ``tau`` on a small grid
  around the empirical-Bayes maximum of the Laplace evidence (:mod:`cj_runner.core.robust`)
  the Laplace approximation ``N(m_tau, Sigma_tau)`` (the ridge fit with precision
  ``1 / tau^2``, ``eta`` with the same ridge), mixed with weights ``evidence(tau) x
  hyperprior(tau)``. The plain Laplace evidence underestimates ``tau`` when the
  comparisons are between close essays; above
  :data:`cj_runner.core.evidence.SECOND_ORDER_MIN_N` (200) nodes the evidence carries its
  second-order term, which brought the intervals of ``infogain`` batches of 500-1,000
  essays at 10 comparisons per essay from 85-89% to 94-95% coverage (docs/statistics.md);
  up to :data:`GIBBS_MAX_N` nodes the mixture is only the sampler's start.

The shown interval is ``mean ± 1.96 SD`` of the posterior (:data:`INTERVAL_LABEL`). The
spread ``tau`` reports show is that of the same posterior (:attr:`ScorePosterior.tau`):
the sampler's posterior mean with the 2.5-97.5% quantiles of its draws
(:data:`TAU_GIBBS_LABEL`), or above :data:`GIBBS_MAX_N` nodes the maximum of the evidence
the mixture is centred on (:data:`TAU_EVIDENCE_LABEL`). The evidence's maximum is kept
under its own name, :attr:`ScorePosterior.evidence_tau` (up to :data:`GIBBS_MAX_N`
nodes only the sampler's start).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import scipy.linalg
from numpy.typing import ArrayLike, NDArray

from cj_runner.core.bt import fit_bt
from cj_runner.core.evidence import DENSE_MAX_N, _Evidence, _maximise, upper_log_tau

__all__ = [
    "HYPER_SCALE",
    "INTERVAL_LABEL",
    "LEGACY_INTERVAL_LABEL",
    "MLE_INTERVAL_LABEL",
    "TAU_EVIDENCE_LABEL",
    "TAU_GIBBS_LABEL",
    "ScorePosterior",
    "gibbs_posterior",
    "mixture_posterior",
    "polya_gamma",
    "score_posterior",
]

FloatArray = NDArray[np.float64]

HYPER_SCALE = 2.5
"""Scale (logits) of the half-Cauchy hyperprior on the spread ``tau`` of the essays."""

GRID_POINTS = 7
"""Values of ``tau`` the posterior is mixed over."""

GRID_WIDTH = 2.5
"""The grid spans the evidence maximum ± this many standard errors of ``log tau``."""

_LOG_TAU_LIMITS = (math.log(0.05), math.log(20.0))
_DEFAULT_LOG_TAU_SE = 1.0  # when the evidence is flat at its maximum

INTERVAL_LABEL = "95% posterior interval (hierarchical Bayes, mean ± 1.96 posterior SD)"
"""What the shown interval is, for every report."""

MLE_INTERVAL_LABEL = "maximum likelihood ± 1.96 Fisher SE (not valid under adaptive pairing)"
"""What the ``mle_*`` fields are."""

LEGACY_INTERVAL_LABEL = "maximum likelihood ± 1.96 Fisher SE (scored before posterior intervals)"
"""What a batch scored before the posterior became what reports show holds."""

TAU_GIBBS_LABEL = "posterior mean (Gibbs sampler), 95% interval of its draws"
"""What :attr:`ScorePosterior.tau` is up to :data:`GIBBS_MAX_N` nodes."""

TAU_EVIDENCE_LABEL = "empirical Bayes (evidence maximum), 95% interval exp(log τ ± 1.96 SE)"
"""What :attr:`ScorePosterior.tau` is above :data:`GIBBS_MAX_N` nodes (the mixture)."""


@dataclass(frozen=True, eq=False)
class ScorePosterior:
    """Posterior means and SDs of the scores (and the order effect) under the
    hierarchical prior of the module docstring.

    Attributes:
        scores: posterior means, centred to mean 0.
        se: posterior standard deviations.
        covariance: the posterior covariance (``None`` above
            :data:`cj_runner.core.robust.DENSE_MAX_N` nodes).
        order_effect: posterior mean of the position-A logit shift (``None`` unless fitted).
        order_effect_se: its posterior SD.
        tau: the spread of the essays under this posterior, the one reports show: the
            Gibbs sampler's posterior mean of ``tau``, or for the mixture the evidence's
            maximum (``evidence_tau``); ``tau_label`` says which.
        tau_low: the lower end of its 95% interval (``nan`` when unknown).
        tau_high: the upper end.
        tau_label: what ``tau`` and its interval are (:data:`TAU_GIBBS_LABEL` or
            :data:`TAU_EVIDENCE_LABEL`).
        evidence_tau: the empirical-Bayes (evidence-maximising) ``tau``: the mixture's
            centre, and the Gibbs sampler's start (``nan`` when sampled without a start).
        evidence_log_tau_se: the standard error of ``log tau`` from the evidence's
            curvature.
    """

    scores: FloatArray
    se: FloatArray
    covariance: FloatArray | None
    order_effect: float | None
    order_effect_se: float | None
    tau: float
    tau_low: float
    tau_high: float
    tau_label: str
    evidence_tau: float
    evidence_log_tau_se: float


def _log_half_cauchy(log_tau: FloatArray, scale: float) -> FloatArray:
    """Log density of a half-Cauchy ``tau`` expressed in ``log tau`` (Jacobian included)."""
    tau = np.exp(log_tau)
    return np.asarray(log_tau - np.log1p(np.square(tau / scale)), dtype=np.float64)


def tau_grid(best: float, log_tau_se: float, points: int = GRID_POINTS) -> FloatArray:
    """The ``log tau`` values the posterior is mixed over (sorted, distinct, clipped)."""
    se = log_tau_se if math.isfinite(log_tau_se) and log_tau_se > 0 else _DEFAULT_LOG_TAU_SE
    se = min(se, _DEFAULT_LOG_TAU_SE)
    grid = np.linspace(best - GRID_WIDTH * se, best + GRID_WIDTH * se, max(1, points))
    return np.unique(np.clip(grid, *_LOG_TAU_LIMITS))


def mixture_weights(log_evidence: FloatArray, log_tau: FloatArray, scale: float) -> FloatArray:
    """Normalised weights ``evidence x hyperprior`` of the grid points."""
    log_w = np.asarray(log_evidence, dtype=np.float64) + _log_half_cauchy(log_tau, scale)
    w = np.exp(log_w - np.max(log_w))
    return np.asarray(w / w.sum(), dtype=np.float64)


def score_posterior(
    n_items: int,
    first: ArrayLike,
    second: ArrayLike,
    first_won: ArrayLike,
    *,
    order_effect: bool = False,
    seed: int = 0,
    method: str = "auto",
) -> ScorePosterior:
    """The posterior users are shown (module docstring).

    ``method``: ``"gibbs"`` (:func:`gibbs_posterior`, seeded by ``seed``, started from the
    mixture), ``"mixture"`` (:func:`mixture_posterior`), or ``"auto"``: Gibbs up to
    :data:`GIBBS_MAX_N` nodes, the mixture above.
    """
    if method not in ("auto", "gibbs", "mixture"):
        raise ValueError(f"unknown posterior method {method!r}")
    mixture = mixture_posterior(n_items, first, second, first_won, order_effect=order_effect)
    if method == "mixture" or (method == "auto" and n_items > GIBBS_MAX_N):
        return mixture
    rng = np.random.default_rng([seed, 0x5C0BE5])
    return gibbs_posterior(
        n_items, first, second, first_won, rng, order_effect=order_effect, start=mixture
    )


def mixture_posterior(
    n_items: int,
    first: ArrayLike,
    second: ArrayLike,
    first_won: ArrayLike,
    *,
    order_effect: bool = False,
    points: int = GRID_POINTS,
    hyper_scale: float = HYPER_SCALE,
) -> ScorePosterior:
    """The Laplace posterior mixed over ``tau`` (module docstring).

    Args:
        n_items: nodes.
        first: node in position A per successful comparison.
        second: node in position B.
        first_won: whether position A won.
        order_effect: also estimate the position-A logit shift.
        points: values of ``tau`` mixed over (1 = plain empirical Bayes).
        hyper_scale: scale of the half-Cauchy hyperprior on ``tau``.

    Returns:
        A :class:`ScorePosterior`. Without comparisons the scores are 0 with the prior's SD.

    Raises:
        ValueError: malformed comparisons (as :func:`cj_runner.core.bt.fit_bt`).
    """
    a = np.asarray(first, dtype=np.int64)
    b = np.asarray(second, dtype=np.int64)
    y = np.asarray(first_won, dtype=bool)
    evidence = _Evidence(n_items, a, b, y)
    best = _maximise(evidence)
    log_se = evidence.curvature_se(best)
    grid = tau_grid(best, log_se, points) if points > 1 else np.array([best])
    # the second-order evidence is not trusted above this (cj_runner.core.evidence)
    grid = np.unique(np.minimum(grid, max(upper_log_tau(evidence), best)))
    weights = mixture_weights(np.array([evidence(float(g)) for g in grid]), grid, hyper_scale)
    order = bool(order_effect and a.size >= 2)
    dense = n_items <= DENSE_MAX_N
    mean = np.zeros(n_items)
    second_moment = np.zeros((n_items, n_items)) if dense else np.zeros(n_items)
    eta_mean = eta_second = 0.0
    init = None
    for g, w in zip(grid, weights, strict=True):
        fit = fit_bt(
            n_items,
            a,
            b,
            y,
            order_effect=order,
            prior_precision=math.exp(-2.0 * g),
            init=init,
            exact_se=dense,
        )
        init = fit.scores
        m = np.asarray(fit.scores)
        assert fit.se is not None
        mean += w * m
        if dense:
            assert fit.covariance is not None
            second_moment += w * (np.asarray(fit.covariance) + np.outer(m, m))
        else:
            second_moment += w * (np.square(fit.se) + np.square(m))
        if order:
            assert fit.order_effect is not None and fit.order_effect_se is not None
            eta_mean += w * fit.order_effect
            eta_second += w * (fit.order_effect_se**2 + fit.order_effect**2)
    covariance: FloatArray | None
    if dense:
        covariance = second_moment - np.outer(mean, mean)
        covariance = 0.5 * (covariance + covariance.T)
        variance = np.diag(covariance).copy()
        covariance.setflags(write=False)
    else:
        covariance = None
        variance = second_moment - np.square(mean)
    se = np.sqrt(np.maximum(variance, 0.0))
    mean -= mean.mean()
    mean.setflags(write=False)
    se.setflags(write=False)
    half = 1.96 * log_se if math.isfinite(log_se) else math.nan
    return ScorePosterior(
        scores=mean,
        se=se,
        covariance=covariance,
        order_effect=eta_mean if order else None,
        order_effect_se=math.sqrt(max(eta_second - eta_mean**2, 0.0)) if order else None,
        tau=math.exp(best),
        tau_low=math.exp(best - half),
        tau_high=math.exp(best + half),
        tau_label=TAU_EVIDENCE_LABEL,
        evidence_tau=math.exp(best),
        evidence_log_tau_se=log_se,
    )


# ---------------------------------------------------------------- Gibbs sampler

GIBBS_MAX_N = 400
"""Largest batch (nodes) sampled by :func:`gibbs_posterior`; larger ones use the mixture."""

GIBBS_BURN_IN = 300
GIBBS_DRAWS = 1000
ETA_PRIOR_SD = 1.0
"""Prior SD (logits) of the order effect in the Gibbs sampler."""

_PG_TERMS = 20
_SCALE_MOVES = 5  # Metropolis moves of the common scale per sweep
_SCALE_STEP = 0.15  # their proposal SD in log scale


def _log_likelihood(psi: FloatArray, y: FloatArray) -> float:
    """Bradley-Terry log-likelihood of outcomes ``y`` at linear predictors ``psi``."""
    return float(np.sum(y * psi - np.logaddexp(0.0, psi)))


def _scale_moves(
    theta: FloatArray,
    eta: float,
    tau2: float,
    a: NDArray[np.int64],
    b: NDArray[np.int64],
    y: FloatArray,
    hyper_scale: float,
    rng: np.random.Generator,
) -> tuple[FloatArray, float]:
    """Metropolis moves ``(theta, tau) -> (g theta, g tau)`` (parameter expansion, Liu & Wu
    1999): the direction along which the scores and their spread are confounded when the
    comparisons say little about the spread, and plain Gibbs sweeps crawl. With the
    half-Cauchy ``p(tau)`` integrated over the auxiliary variable, the acceptance ratio is
    ``L(g theta) / L(theta) x p(g tau) / p(tau) x g``."""
    diff = theta[a] - theta[b]
    tau = math.sqrt(tau2)
    current = _log_likelihood(diff + eta, y)
    log_scale = 0.0
    for _ in range(_SCALE_MOVES):
        step = float(rng.normal(0.0, _SCALE_STEP))
        g = math.exp(log_scale + step)
        proposal = _log_likelihood(g * diff + eta, y)
        old_tau, new_tau = tau * math.exp(log_scale), tau * g
        log_ratio = (
            proposal
            - current
            - math.log1p((new_tau / hyper_scale) ** 2)
            + math.log1p((old_tau / hyper_scale) ** 2)
            + step
        )
        if math.log(float(rng.random()) + 1e-300) < log_ratio:
            log_scale += step
            current = proposal
    g = math.exp(log_scale)
    return theta * g, tau2 * g * g


def polya_gamma(c: FloatArray, rng: np.random.Generator, terms: int = _PG_TERMS) -> FloatArray:
    """Approximate draws of ``PG(1, c)`` (Polson, Scott & Windle 2013).

    The infinite sum ``1 / (2 pi^2) sum_k g_k / ((k - 1/2)^2 + c^2 / (4 pi^2))`` with
    ``g_k ~ Exp(1)`` is cut after ``terms`` terms and the rest replaced by its mean, so the
    mean is exact (``tanh(c / 2) / (2 c)``) and the variance nearly so.
    """
    c = np.abs(np.asarray(c, dtype=np.float64))
    d2 = np.square(c / (2.0 * math.pi))[:, None]
    k = (np.arange(1, terms + 1) - 0.5)[None, :]
    denom = np.square(k) + d2
    head = rng.standard_exponential((c.size, terms)) / denom
    small = c < 1e-6
    safe = np.where(small, 1.0, c)
    exact_mean = np.where(small, 0.25, np.tanh(safe / 2.0) / (2.0 * safe))
    head_mean = np.sum(1.0 / denom, axis=1) / (2.0 * math.pi**2)
    return np.asarray(
        np.sum(head, axis=1) / (2.0 * math.pi**2) + np.maximum(exact_mean - head_mean, 0.0),
        dtype=np.float64,
    )


def gibbs_posterior(
    n_items: int,
    first: ArrayLike,
    second: ArrayLike,
    first_won: ArrayLike,
    rng: np.random.Generator,
    *,
    order_effect: bool = False,
    hyper_scale: float = HYPER_SCALE,
    burn_in: int = GIBBS_BURN_IN,
    draws: int = GIBBS_DRAWS,
    start: ScorePosterior | None = None,
) -> ScorePosterior:
    """The hierarchical posterior by Polya-Gamma Gibbs sampling (Polson, Scott & Windle
    2013, "Bayesian inference for logistic models using Polya-Gamma latent variables",
    JASA 108(504)), exact up to Monte Carlo error where the Laplace evidence of the
    mixture underestimates the spread ``tau`` (few comparisons of close essays).

    Steps per sweep: ``omega_k ~ PG(1, theta_a - theta_b + eta)`` per comparison; the
    scores and ``eta`` jointly from their Gaussian full conditional (prior
    ``N(0, tau^2)`` per score, ``N(0, ETA_PRIOR_SD^2)`` for ``eta``); ``tau^2`` from its
    inverse-gamma conditional under the half-Cauchy hyperprior (the auxiliary-variable
    scheme of Makalic & Schmidt 2016, IEEE Signal Processing Letters 23(1)). Each draw of
    the scores is centred. ``start`` (e.g. :func:`score_posterior`) sets the first state.
    """
    a = np.asarray(first, dtype=np.int64)
    b = np.asarray(second, dtype=np.int64)
    y = np.asarray(first_won, dtype=np.float64)
    n, m = n_items, a.size
    order = bool(order_effect and m >= 2)
    dim = n + 1 if order else n
    kappa = y - 0.5
    r = np.bincount(a, kappa, n) - np.bincount(b, kappa, n)
    rhs = np.concatenate([r, [kappa.sum()]]) if order else r
    theta = np.zeros(n) if start is None else np.asarray(start.scores, dtype=np.float64).copy()
    eta = float(start.order_effect or 0.0) if (order and start is not None) else 0.0
    tau2 = (start.evidence_tau if start is not None else 1.0) ** 2
    nu = 1.0
    ab = a * n + b
    ba = b * n + a
    aa = a * (n + 1)
    bb = b * (n + 1)
    keep_theta = np.empty((max(1, draws), n))
    keep_eta = np.empty(max(1, draws))
    keep_tau = np.empty(max(1, draws))
    for sweep in range(burn_in + max(1, draws)):
        psi = theta[a] - theta[b] + eta
        omega = polya_gamma(psi, rng) if m else np.zeros(0)
        flat = (
            np.bincount(aa, omega, n * n)
            + np.bincount(bb, omega, n * n)
            - np.bincount(ab, omega, n * n)
            - np.bincount(ba, omega, n * n)
        )
        q = np.zeros((dim, dim))
        q[:n, :n] = flat.reshape(n, n)
        q[np.arange(n), np.arange(n)] += 1.0 / tau2
        if order:
            col = np.bincount(a, omega, n) - np.bincount(b, omega, n)
            q[:n, n] = col
            q[n, :n] = col
            q[n, n] = omega.sum() + 1.0 / ETA_PRIOR_SD**2
        factor = scipy.linalg.cholesky(q, lower=True, check_finite=False)
        mean = scipy.linalg.cho_solve((factor, True), rhs, check_finite=False)
        noise = scipy.linalg.solve_triangular(
            factor.T, rng.standard_normal(dim), lower=False, check_finite=False
        )
        state = mean + noise
        theta = state[:n]
        eta = float(state[n]) if order else 0.0
        tau2 = 1.0 / rng.gamma((n + 1) / 2.0, 1.0 / (1.0 / nu + 0.5 * float(theta @ theta)))
        if m:
            theta, tau2 = _scale_moves(theta, eta, tau2, a, b, y, hyper_scale, rng)
        nu = 1.0 / rng.gamma(1.0, 1.0 / (1.0 / hyper_scale**2 + 1.0 / tau2))
        if sweep >= burn_in:
            keep_theta[sweep - burn_in] = theta - theta.mean()
            keep_eta[sweep - burn_in] = eta
            keep_tau[sweep - burn_in] = math.sqrt(tau2)
    scores = keep_theta.mean(axis=0)
    covariance = np.cov(keep_theta, rowvar=False).reshape(n, n)
    se = np.sqrt(np.maximum(np.diag(covariance), 0.0))
    for arr in (scores, covariance, se):
        arr.setflags(write=False)
    return ScorePosterior(
        scores=scores,
        se=se,
        covariance=covariance,
        order_effect=float(keep_eta.mean()) if order else None,
        order_effect_se=float(keep_eta.std(ddof=1)) if order else None,
        tau=float(keep_tau.mean()),
        tau_low=float(np.quantile(keep_tau, 0.025)),
        tau_high=float(np.quantile(keep_tau, 0.975)),
        tau_label=TAU_GIBBS_LABEL,
        evidence_tau=start.evidence_tau if start is not None else math.nan,
        evidence_log_tau_se=start.evidence_log_tau_se if start is not None else math.nan,
    )
