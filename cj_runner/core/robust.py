"""A design-robust reliability of Bradley-Terry scores (issue 8).

The usual figure, scale separation reliability (SSR, :mod:`cj_runner.core.reliability`),
assumes the classical error model ``estimate = truth + independent error``. Adaptive pair
selection breaks it: the pairs asked depend on earlier answers, the estimates spread
further than the truth plus their standard errors, and SSR overstates the reliability
(Bramley 2015; Bramley & Vitello 2019, "The effect of adaptivity on the reliability
coefficient in adaptive comparative judgement", Assessment in Education 26(1);
Crompvoets, Béguin & Sijtsma 2020, "Adaptive pairwise comparison for educational
measurement", Journal of Educational and Behavioral Statistics 45(3)).

:func:`robust_reliability` offers two estimates of the quantity users care about, the
squared correlation between the reported scores and the latent ("true") qualities:

``posterior`` (the default, and the one the stopping rule uses)
    The likelihood of the answers does not depend on how the pairs were chosen when the
    choice only used earlier answers: the design is *ignorable* for likelihood-based and
    Bayesian inference (Rubin 1976; Berger & Wolpert 1988, "The likelihood principle";
    for adaptive testing Mislevy & Wu 1996, ETS RR-96-30). So a Bayesian posterior of the
    qualities stays valid under any adaptive design, where frequentist figures such as
    SSR do not. The qualities get a hierarchical prior ``N(0, tau^2)``, ``tau`` set by
    empirical Bayes: it maximises the Laplace approximation of the marginal likelihood
    (MacKay 1992, "Bayesian interpolation"), above 50 nodes with its second-order term
    (Shun & McCullagh 1995; ``RELIABILITY_SECOND_ORDER_MIN_N`` in
    :mod:`cj_runner.core.evidence`), on a grid refined by Brent's method (see
    :func:`empirical_bayes_fit`). The estimate is the posterior expectation of
    ``corr(reported scores, qualities)^2``, by Monte Carlo over draws from the Laplace
    posterior ``N(m, Sigma)``. Its weak point is ``tau``: a strongly adaptive design
    compares near neighbours, whose answers say little about how far apart the essays
    are; uniformly random audit pairs (``AUDIT_SHARE``) supply that information.
``split_half``
    Comparisons are split at random into two halves, each half is fitted on its own,
    the two score vectors are correlated (Pearson) and stepped up to full length with the
    Spearman-Brown formula ``2 r / (1 + r)``, averaged over several random splits
    (Verhavert, Bouwer, Donche & De Maeyer 2019, "A meta-analysis on the reliability of
    comparative judgement", Assessment in Education 26(5); Crompvoets et al. 2020 discuss
    its bias). Both halves share the adaptive design, so this one is inflated too; it is
    kept for comparison (docs/performance.md gives the measured figures).

When comparisons are marked as held-out audits (``modes`` equal to ``"audit"``: uniformly
random pairs), the detail also reports how often the audits agree with the order fitted
without them, next to the agreement the model predicts.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import scipy.linalg
import scipy.special
from numpy.typing import ArrayLike, NDArray

from cj_runner.core import evidence as evidence_module
from cj_runner.core.bt import DEFAULT_PRIOR_PRECISION, BTFit, fit_bt
from cj_runner.core.evidence import DENSE_MAX_N, _Evidence, _maximise
from cj_runner.core.reliability import scale_separation_reliability

__all__ = [
    "DENSE_MAX_N",
    "METHODS",
    "EmpiricalBayesFit",
    "RobustReliability",
    "empirical_bayes_fit",
    "empirical_bayes_prior_sd",
    "robust_reliability",
    "spearman_brown",
]

FloatArray = NDArray[np.float64]

METHODS: tuple[str, ...] = ("posterior", "split_half")
"""Accepted ``method`` names of :func:`robust_reliability`."""

DEFAULT_SAMPLES = 400
"""Posterior draws of the Monte Carlo expectation (its own SD is about 0.002 at 0.8)."""

DEFAULT_SPLITS = 10
"""Random splits averaged by ``split_half``."""

_AUDIT = "audit"


@dataclass(frozen=True)
class RobustReliability:
    """A design-robust reliability and how it was obtained.

    Attributes:
        value: the estimate, or ``None`` when it cannot be computed (too few nodes or
            comparisons).
        method: the method (one of :data:`METHODS`).
        detail: supporting figures, e.g. ``ssr`` (of the same scores), ``prior_sd`` and
            ``posterior_sd`` (posterior), ``splits`` (split-half), ``audit_n``,
            ``audit_agreement``, ``audit_expected_agreement`` (when audits exist).
    """

    value: float | None
    method: str
    detail: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True, eq=False)
class EmpiricalBayesFit:
    """The Bradley-Terry posterior under the empirical-Bayes prior ``N(0, prior_sd^2)``.

    Attributes:
        fit: the ridge fit with precision ``1 / prior_sd^2`` (posterior mode ``m``,
            Laplace covariance ``Sigma``, SEs).
        prior_sd: ``tau``, the spread of the qualities that maximises the evidence.
        log_prior_sd_se: the standard error of ``log tau`` from the curvature of the log
            evidence at its maximum (``inf`` when flat): a large value means the
            comparisons say little about the spread of the qualities, as under strongly
            adaptive designs without audits, and the robust reliability is then uncertain.
        second_order: whether that evidence carried the second-order term (``None``: not
            recorded; :func:`robust_reliability` then takes the fit as given).
    """

    fit: BTFit
    prior_sd: float
    log_prior_sd_se: float
    second_order: bool | None = None


def empirical_bayes_fit(
    n_items: int,
    first: ArrayLike,
    second: ArrayLike,
    first_won: ArrayLike,
    *,
    second_order: bool | None = None,
) -> EmpiricalBayesFit:
    """Bradley-Terry fit with a hierarchical ``N(0, tau^2)`` prior, ``tau`` by empirical Bayes.

    ``tau`` maximises the Laplace approximation of the marginal likelihood (MacKay 1992,
    "Bayesian interpolation", Neural Computation 4(3); above
    :data:`cj_runner.core.evidence.SECOND_ORDER_MIN_N` nodes with its second-order term)
    over a grid of ``tau`` from 0.1 to 10 logits, refined by a bounded Brent search.
    Because the likelihood does not depend on how the pairs were chosen, this posterior
    (mode, covariance, SEs) stays calibrated under adaptive pair selection, where the
    weak-ridge fit spreads out and its SEs are too small.

    Args:
        n_items: nodes.
        first: node in position A per comparison.
        second: node in position B.
        first_won: whether position A won.
        second_order: whether the evidence carries the second-order term (default: above
            :data:`cj_runner.core.evidence.SECOND_ORDER_MIN_N` nodes, as pair selection
            and the sampler's start take it; :func:`robust_reliability` asks for it above
            :data:`cj_runner.core.evidence.RELIABILITY_SECOND_ORDER_MIN_N` nodes).

    Returns:
        An :class:`EmpiricalBayesFit`.
    """
    evidence = _Evidence(
        n_items,
        np.asarray(first, dtype=np.int64),
        np.asarray(second, dtype=np.int64),
        np.asarray(first_won, dtype=bool),
        second_order=second_order,
    )
    log_tau = _maximise(evidence)
    return EmpiricalBayesFit(
        fit=evidence.fit(log_tau),
        prior_sd=math.exp(log_tau),
        log_prior_sd_se=evidence.curvature_se(log_tau),
        second_order=evidence.second_order,
    )


def empirical_bayes_prior_sd(
    n_items: int, first: ArrayLike, second: ArrayLike, first_won: ArrayLike
) -> float:
    """``tau`` for pair selection on large nets: as :func:`empirical_bayes_fit`, without
    the final fit.

    The evidence takes the sparse (Bethe) log determinant of :mod:`cj_runner.core.evidence`
    (``O(comparisons)`` per evaluation) at every size, where :func:`empirical_bayes_fit`
    takes the dense one up to :data:`DENSE_MAX_N` nodes; it adds the second-order term
    above :data:`cj_runner.core.evidence.SELECTION_SECOND_ORDER_MIN_N` nodes (why not from
    200 nodes, as :func:`empirical_bayes_fit`: that constant's docstring). Pair selection
    on large nets (:class:`cj_runner.core.workflow.WorkflowState`) calls it on a doubling
    schedule of comparisons.
    """
    evidence = _Evidence(
        n_items,
        np.asarray(first, dtype=np.int64),
        np.asarray(second, dtype=np.int64),
        np.asarray(first_won, dtype=bool),
        dense=False,
        second_order=n_items > evidence_module.SELECTION_SECOND_ORDER_MIN_N,
    )
    return math.exp(_maximise(evidence))


def spearman_brown(r: float, factor: float = 2.0) -> float:
    """Spearman-Brown prophecy: the reliability of a test ``factor`` times as long.

    ``factor r / (1 + (factor - 1) r)`` (Spearman 1910; Brown 1910).
    """
    return factor * r / (1.0 + (factor - 1.0) * r)


def robust_reliability(
    n_items: int,
    first: ArrayLike,
    second: ArrayLike,
    first_won: ArrayLike,
    *,
    modes: Sequence[str] | None = None,
    seed: int = 0,
    prior_precision: float = DEFAULT_PRIOR_PRECISION,
    nodes: Sequence[int] | None = None,
    method: str = "posterior",
    samples: int = DEFAULT_SAMPLES,
    splits: int = DEFAULT_SPLITS,
    posterior: EmpiricalBayesFit | None = None,
    strategy: str | None = None,
) -> RobustReliability:
    """The design-robust reliability of the Bradley-Terry scores of these comparisons.

    Args:
        n_items: nodes in the batch.
        first: node in position A per successful comparison.
        second: node in position B.
        first_won: whether position A won.
        modes: the mode of each comparison (``"coverage"``, ``"resampling"``,
            ``"audit"``); audits add the agreement figures to ``detail``.
        seed: seeds the Monte Carlo draws and the random splits.
        prior_precision: ridge of the *reported* fit (the scores whose reliability is
            estimated), as in :func:`cj_runner.core.bt.fit_bt`.
        nodes: the nodes the correlation is taken over (e.g. the students, anchors left
            out); default all.
        method: ``"posterior"`` (default) or ``"split_half"`` (module docstring).
        samples: posterior draws (``posterior``).
        splits: random splits averaged (``split_half``).
        posterior: :func:`empirical_bayes_fit` of the same comparisons, if already
            computed (``posterior``); used only if its evidence is the one the
            reliability takes (the second-order term above
            :data:`cj_runner.core.evidence.RELIABILITY_SECOND_ORDER_MIN_N` nodes; a fit
            that does not record it is used as given), else the reliability fits its own.
        strategy: the matching strategy that chose the pairs; under ``balanced`` and
            ``swiss`` the second-order term starts above 200 nodes
            (:func:`cj_runner.core.evidence.reliability_second_order`).

    Returns:
        A :class:`RobustReliability`; ``value`` is ``None`` with fewer than 3 nodes in
        ``nodes`` or fewer than 2 comparisons.

    Raises:
        ValueError: an unknown method, or malformed comparisons (as :func:`fit_bt`).
    """
    if method not in METHODS:
        raise ValueError(f"unknown reliability method {method!r}; choose one of {METHODS}")
    a = np.asarray(first, dtype=np.int64)
    b = np.asarray(second, dtype=np.int64)
    y = np.asarray(first_won, dtype=bool)
    subset = np.arange(n_items) if nodes is None else np.asarray(nodes, dtype=np.intp)
    if subset.size < 3 or a.size < 2:
        return RobustReliability(None, method, {})
    rng = np.random.default_rng(seed)
    reported = fit_bt(
        n_items, a, b, y, prior_precision=prior_precision, exact_se=n_items <= DENSE_MAX_N
    )
    assert reported.se is not None
    detail: dict[str, float] = {"comparisons": float(a.size)}
    ssr = scale_separation_reliability(reported.scores[subset], reported.se[subset])
    if math.isfinite(ssr):
        detail["ssr"] = ssr
    if modes is not None:
        detail.update(_audit_detail(n_items, a, b, y, modes, prior_precision))
    if method == "posterior":
        wanted = evidence_module.reliability_second_order(n_items, strategy)
        if posterior is not None and posterior.second_order in (None, wanted):
            eb = posterior
        else:
            eb = empirical_bayes_fit(n_items, a, b, y, second_order=wanted)
        value = _posterior(eb, reported.scores, subset, rng, samples, detail)
    else:
        value = _split_half(n_items, a, b, y, prior_precision, subset, rng, splits, detail)
    return RobustReliability(value, method, detail)


def _posterior(
    eb: EmpiricalBayesFit,
    reported: FloatArray,
    subset: NDArray[np.intp],
    rng: np.random.Generator,
    samples: int,
    detail: dict[str, float],
) -> float | None:
    """Posterior expectation of ``corr(reported, truth)^2`` under the empirical-Bayes prior."""
    fit = eb.fit
    assert fit.se is not None
    detail["prior_sd"] = eb.prior_sd
    detail["log_prior_sd_se"] = eb.log_prior_sd_se
    mean = np.asarray(fit.scores)[subset]
    draws = rng.standard_normal((subset.size, max(1, samples)))
    if fit.covariance is not None:
        cov = np.asarray(fit.covariance)[np.ix_(subset, subset)]
        spread = _sqrt_psd(cov) @ draws
    else:  # very large batches: independent errors with the approximate SEs
        spread = np.asarray(fit.se)[subset, None] * draws
    truth = mean[:, None] + spread
    x = reported[subset] - reported[subset].mean()
    truth -= truth.mean(axis=0, keepdims=True)
    x_norm = float(np.linalg.norm(x))
    t_norm = np.linalg.norm(truth, axis=0)
    if x_norm == 0.0 or not np.all(t_norm > 0):
        return None
    r2 = np.square((x @ truth) / (x_norm * t_norm))
    detail["posterior_sd"] = float(np.std(r2))
    return float(np.mean(r2))


def _sqrt_psd(cov: FloatArray) -> FloatArray:
    """A matrix ``L`` with ``L L' = cov`` for a positive semi-definite ``cov``."""
    jitter = 1e-10 * max(float(np.mean(np.diag(cov))), 1e-12)
    try:
        return np.asarray(
            scipy.linalg.cholesky(cov + jitter * np.eye(cov.shape[0]), lower=True),
            dtype=np.float64,
        )
    except scipy.linalg.LinAlgError:  # e.g. the centred covariance of every node
        values, vectors = scipy.linalg.eigh(cov)
        return np.asarray(vectors * np.sqrt(np.maximum(values, 0.0)), dtype=np.float64)


def _split_half(
    n: int,
    a: NDArray[np.int64],
    b: NDArray[np.int64],
    y: NDArray[np.bool_],
    prior_precision: float,
    subset: NDArray[np.intp],
    rng: np.random.Generator,
    splits: int,
    detail: dict[str, float],
) -> float | None:
    """Mean Spearman-Brown-corrected correlation of the fits of two random halves."""
    values = []
    m = a.size
    for _ in range(max(1, splits)):
        half = rng.permutation(m) < m // 2
        one = fit_bt(
            n, a[half], b[half], y[half], prior_precision=prior_precision, compute_se=False
        )
        two = fit_bt(
            n, a[~half], b[~half], y[~half], prior_precision=prior_precision, compute_se=False
        )
        s1, s2 = np.asarray(one.scores)[subset], np.asarray(two.scores)[subset]
        if np.ptp(s1) == 0 or np.ptp(s2) == 0:
            continue
        r = float(np.corrcoef(s1, s2)[0, 1])
        values.append(spearman_brown(r) if r > -1.0 else -1.0)
    detail["splits"] = float(len(values))
    if not values:
        return None
    detail["split_sd"] = float(np.std(values))
    return float(np.mean(values))


def _audit_detail(
    n: int,
    a: NDArray[np.int64],
    b: NDArray[np.int64],
    y: NDArray[np.bool_],
    modes: Sequence[str],
    prior_precision: float,
) -> dict[str, float]:
    """Agreement of the audits with the order fitted without them, and its prediction."""
    is_audit = np.asarray([str(m) == _AUDIT for m in modes], dtype=bool)
    if is_audit.shape != a.shape:
        raise ValueError("modes must hold one entry per comparison")
    n_audit = int(is_audit.sum())
    if n_audit == 0 or n_audit == a.size:
        return {"audit_n": float(n_audit)} if n_audit else {}
    rest = ~is_audit
    fit = fit_bt(n, a[rest], b[rest], y[rest], prior_precision=prior_precision, compute_se=False)
    s = np.asarray(fit.scores)
    diff = s[a[is_audit]] - s[b[is_audit]]
    predicted_a = diff > 0
    agree = np.where(diff == 0, 0.5, (predicted_a == y[is_audit]).astype(float))
    p = scipy.special.expit(np.abs(diff))
    return {
        "audit_n": float(n_audit),
        "audit_agreement": float(np.mean(agree)),
        "audit_expected_agreement": float(np.mean(p)),
    }
