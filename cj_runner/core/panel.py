"""Several judges on one scale: per-judge order effects, judge misfit, agreement, kappa.

Model (the judge-specific "home advantage" of a Bradley-Terry panel, as R's ``sirt::btm``
fits one ``eta`` per judge group when asked): for comparison ``k`` made by judge ``j``
showing node ``a`` in position A and node ``b`` in position B,

    logit P(A wins) = theta_a - theta_b + eta_j.

Every judge shares the essays' scores ``theta``; each has its own position-A logit shift
``eta_j``. :func:`fit_panel` maximises the log-likelihood minus the same weak ridge
``lambda / 2 (|theta|^2 + |eta|^2)`` as :func:`cj_runner.core.bt.fit_bt` (with a single
judge it gives exactly ``fit_bt``'s estimate), by damped Newton steps on the dense
``(n + J)``-square information matrix (a few hundred nodes at most in a panel batch;
:data:`PANEL_MAX_NODES` bounds it).

On top of the fit, per judge (all pure, data in, data out):

* infit/outfit mean-squares and their standardised forms (ZSTD, Wilson-Hilferty) over the
  judge's comparisons, with the judge's own order effect in the model (Wright & Masters
  1982; Pollitt 2012 for judge misfit in comparative judgement); a judge is flagged when
  its infit ZSTD exceeds :data:`JUDGE_MISFIT_Z_THRESHOLD` over at least
  :data:`JUDGE_MISFIT_MIN_COMPARISONS` comparisons;
* agreement with the consensus: the share of its decisions won by the node the fitted
  scale ranks higher (Wilson 95% interval);
* its position bias in percentage points: the average marginal effect of ``eta_j`` on
  P(A wins) over its comparisons, with the interval from ``eta_j``'s;
* Cohen's (1960) kappa between every two judges on the edges both judged.

:func:`reliability_without` refits with a judge's comparisons excluded or down-weighted and
reports the scale separation reliability before and after.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import scipy.linalg
import scipy.special
from numpy.typing import ArrayLike, NDArray

from cj_runner.core.bt import DEFAULT_PRIOR_PRECISION
from cj_runner.core.reliability import (
    Proportion,
    scale_separation_reliability,
    wilson_hilferty_z,
    wilson_interval,
)
from cj_runner.core.robust import empirical_bayes_fit

FloatArray = NDArray[np.float64]
IntArray = NDArray[np.intp]

__all__ = [
    "JUDGE_MISFIT_MIN_COMPARISONS",
    "JUDGE_MISFIT_Z_THRESHOLD",
    "KAPPA_MIN_SHARED_EDGES",
    "PANEL_MAX_NODES",
    "JudgeFit",
    "JudgeMisfit",
    "Kappa",
    "PanelComparisons",
    "PanelFit",
    "PositionBias",
    "ReliabilityChange",
    "cohen_kappa",
    "consensus_agreement",
    "fit_panel",
    "flag_judges",
    "held_out_probabilities",
    "judge_fit",
    "judge_misfit",
    "misfit_weights",
    "pairwise_kappa",
    "position_bias_pp",
    "reliability_without",
]

JUDGE_MISFIT_Z_THRESHOLD: float = 2.0
"""Infit ZSTD above which a judge is flagged as misfitting (one-sided: only noise beyond
the model harms the scale). A judge has many more comparisons than an essay and its
comparisons are a small part of what fixed the scores, so its ZSTD is close to standard
normal under the model and the conventional 2.0 applies (false alarms measured in
docs/panels.md)."""

JUDGE_MISFIT_MIN_COMPARISONS: int = 20
"""Fewest comparisons a judge needs before it can be flagged (below this a handful of
upsets dominates the mean-square)."""

KAPPA_MIN_SHARED_EDGES: int = 5
"""Fewest edges two judges must share before their kappa is reported (else ``nan``)."""

PANEL_MAX_NODES: int = 2000
"""Largest number of nodes :func:`fit_panel` accepts (its dense ``(n + J)^2`` solve costs
about ``(n + J)^3`` flops)."""

_MIN_CONSENSUS_JUDGES = 2  # a judge is flagged only against the scale of two or more others
_MAX_NEWTON_ITERATIONS = 200
_STEP_TOLERANCE = 1e-9
_Z95 = 1.959963984540054


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


@dataclass(frozen=True)
class JudgeFit:
    """Per-judge infit/outfit mean-squares, their ZSTDs and comparison counts."""

    infit: FloatArray
    outfit: FloatArray
    infit_z: FloatArray
    outfit_z: FloatArray
    count: NDArray[np.int64]


def _eta_given_scores(d0: FloatArray, y: FloatArray, lam: float) -> float:
    """The order effect of one judge with the scores held fixed (1-D Newton, ridge ``lam``)."""
    eta = 0.0
    for _ in range(100):
        p = scipy.special.expit(d0 + eta)
        grad = float(np.sum(y - p)) - lam * eta
        info = float(np.sum(p * (1.0 - p))) + lam
        step = grad / info
        eta += step
        if abs(step) <= _STEP_TOLERANCE:
            break
    return eta


def held_out_probabilities(
    data: PanelComparisons,
    *,
    order_effect: bool = True,
    prior_precision: float = DEFAULT_PRIOR_PRECISION,
    weights: ArrayLike | None = None,
) -> FloatArray:
    """P(A wins) of every comparison as predicted without its own judge.

    For each judge: the scores are fitted on the other judges' comparisons
    (:func:`fit_panel` with the empirical-Bayes prior ``N(0, tau^2)`` of
    :func:`cj_runner.core.robust.empirical_bayes_fit`: the weak-ridge scale is stretched,
    most under adaptive pairing, and would make every held-out judge look noisy), then
    the judge's own order effect on its comparisons with those scores held fixed. The
    prediction integrates the held-out scores' uncertainty (``Var(d)`` of the score
    difference, from the fit's covariance) by the probit approximation
    ``expit(d / sqrt(1 + pi Var(d) / 8))`` (MacKay 1992), so a judge who follows the
    model has residuals of the size the model says even when the other judges pin the
    scale loosely. A judge who answers at random cannot pull the scale towards itself
    this way (in-sample, an erratic judge with a third of the comparisons shrinks the
    scale and hides part of its own noise).

    Args:
        data: the comparisons.
        order_effect: fit order effects.
        prior_precision: ridge precision.
        weights: per-comparison weights of the fits (0 leaves a comparison out of every
            fit, e.g. a judge already flagged); each judge's own comparisons are always
            left out of its fit.

    Returns:
        One probability per comparison (in-sample ones when only one judge has
        comparisons).
    """
    base = np.ones(data.first.size) if weights is None else np.asarray(weights, dtype=np.float64)
    p = np.empty(data.first.size)
    present = np.unique(data.judge)
    if present.size < 2:
        fit = fit_panel(
            data, weights=base, order_effect=order_effect, prior_precision=prior_precision
        )
        return _probabilities(data, fit)
    for k in present:
        mine = data.judge == k
        keep = ~mine & (base > 0)
        tau = empirical_bayes_fit(
            data.n_items, data.first[keep], data.second[keep], data.first_won[keep]
        ).prior_sd
        others = fit_panel(
            data,
            weights=np.where(mine, 0.0, base),
            order_effect=order_effect,
            prior_precision=prior_precision,
            score_prior_precision=1.0 / tau**2,
        )
        a, b = data.first[mine], data.second[mine]
        d0 = others.scores[a] - others.scores[b]
        cov = others.covariance
        var_d = np.maximum(cov[a, a] + cov[b, b] - 2.0 * cov[a, b], 0.0)
        shrink = 1.0 / np.sqrt(1.0 + np.pi * var_d / 8.0)
        y = data.first_won[mine]
        eta = _eta_given_scores(d0, y, prior_precision) if order_effect else 0.0
        p[mine] = scipy.special.expit((d0 + eta) * shrink)
    return p


def judge_fit(
    data: PanelComparisons,
    fit: PanelFit | None = None,
    *,
    probabilities: FloatArray | None = None,
) -> JudgeFit:
    """Infit and outfit of every judge, raw and standardised.

    Residuals ``y_k - p_k`` with ``p_k`` from the panel fit (the judge's own order effect
    included), or the given ``probabilities`` (e.g. :func:`held_out_probabilities`), and
    model variance ``W_k = p_k (1 - p_k)``, pooled over each judge's comparisons: infit
    ``= sum (y - p)^2 / sum W``, outfit ``= mean (y - p)^2 / W``; their model SDs ``q``
    and the Wilson-Hilferty ZSTD are those of
    :func:`cj_runner.core.reliability.standardized_fit` (Wright & Masters 1982, ch. 5).

    Args:
        data: the comparisons.
        fit: their :func:`fit_panel` (needed unless ``probabilities`` is given).
        probabilities: P(A wins) per comparison to use instead of the fit's.

    Returns:
        A :class:`JudgeFit` (``nan`` for a judge without comparisons).
    """
    size = data.n_judges
    if probabilities is None:
        if fit is None:
            raise ValueError("judge_fit needs a fit or the probabilities")
        p = _probabilities(data, fit)
    else:
        p = np.asarray(probabilities, dtype=np.float64)
    if p.shape != data.first_won.shape:
        raise ValueError("probabilities must hold one entry per comparison")
    w = p * (1.0 - p)
    sq = (data.first_won - p) ** 2
    j = data.judge
    count = np.bincount(j, minlength=size).astype(np.float64)
    sum_w = np.bincount(j, w, size)
    sum_sq = np.bincount(j, sq, size)
    with np.errstate(divide="ignore", invalid="ignore"):
        sum_z2 = np.bincount(j, sq / w, size)
        sum_inv = np.bincount(j, 1.0 / w, size)
        seen = count > 0
        infit = np.where(seen & (sum_w > 0), sum_sq / sum_w, np.nan)
        outfit = np.where(seen, sum_z2 / np.where(seen, count, 1.0), np.nan)
        q_in = np.sqrt(np.maximum(np.bincount(j, w - 4 * w * w, size), 0.0)) / sum_w
        q_out = np.sqrt(np.maximum(sum_inv - 4 * count, 0.0)) / count
    return JudgeFit(
        infit=infit,
        outfit=outfit,
        infit_z=wilson_hilferty_z(infit, np.where(seen, q_in, np.nan)),
        outfit_z=wilson_hilferty_z(outfit, np.where(seen, q_out, np.nan)),
        count=count.astype(np.int64),
    )


def flag_judges(
    stats: JudgeFit,
    threshold: float = JUDGE_MISFIT_Z_THRESHOLD,
    min_comparisons: int = JUDGE_MISFIT_MIN_COMPARISONS,
) -> NDArray[np.bool_]:
    """Which judges misfit: infit ZSTD above ``threshold`` over ``min_comparisons`` or more.

    Args:
        stats: :func:`judge_fit`.
        threshold: the ZSTD limit (default :data:`JUDGE_MISFIT_Z_THRESHOLD`).
        min_comparisons: fewest comparisons for a flag.

    Returns:
        A boolean array, one per judge (``nan`` is never flagged).
    """
    with np.errstate(invalid="ignore"):
        high = stats.infit_z > threshold
    return np.asarray(high & (stats.count >= min_comparisons), dtype=np.bool_)


@dataclass(frozen=True)
class JudgeMisfit:
    """Held-out fit statistics of every judge and which judges were flagged.

    ``stats`` are each flagged judge's figures when it was flagged and every other
    judge's figures on the scale without the flagged judges; ``order`` lists the flagged
    judges in the order they were flagged."""

    stats: JudgeFit
    flagged: NDArray[np.bool_]
    order: tuple[int, ...]


def judge_misfit(
    data: PanelComparisons,
    *,
    threshold: float = JUDGE_MISFIT_Z_THRESHOLD,
    min_comparisons: int = JUDGE_MISFIT_MIN_COMPARISONS,
    order_effect: bool = True,
    prior_precision: float = DEFAULT_PRIOR_PRECISION,
) -> JudgeMisfit:
    """Flag misfitting judges one at a time on held-out infit ZSTDs.

    Each round computes every unflagged judge's infit against the scale of the other
    unflagged judges (:func:`held_out_probabilities`, :func:`judge_fit`); the judge with
    the largest ZSTD above ``threshold`` (over at least ``min_comparisons``) is flagged and
    left out of the next round's scales; it stops when no judge is above, or when fewer
    than three unflagged judges remain: with two, each is measured only against the
    other, and which of them disagrees cannot be told (their ZSTDs are still reported,
    nothing is flagged). One at a time,
    because an erratic judge's noise also loosens the scale the others are measured on
    (the same reason Rasch practice removes the worst misfit first and re-estimates).

    Args:
        data: the comparisons.
        threshold: the ZSTD limit (:data:`JUDGE_MISFIT_Z_THRESHOLD`).
        min_comparisons: fewest comparisons for a flag.
        order_effect: fit per-judge order effects.
        prior_precision: ridge precision.

    Returns:
        A :class:`JudgeMisfit`.
    """
    size = data.n_judges
    flagged = np.zeros(size, dtype=bool)
    order: list[int] = []
    fields = {k: np.full(size, np.nan) for k in ("infit", "outfit", "infit_z", "outfit_z")}
    count = np.bincount(data.judge, minlength=size).astype(np.int64)
    while True:
        weights = np.where(flagged[data.judge], 0.0, 1.0)
        p = held_out_probabilities(
            data, order_effect=order_effect, prior_precision=prior_precision, weights=weights
        )
        stats = judge_fit(data, probabilities=p)
        candidates = flag_judges(stats, threshold, min_comparisons) & ~flagged
        for name, values in fields.items():
            current = getattr(stats, name)
            values[~flagged] = current[~flagged]
        if not candidates.any() or (~flagged).sum() < _MIN_CONSENSUS_JUDGES + 1:
            break
        worst = int(np.nanargmax(np.where(candidates, stats.infit_z, -np.inf)))
        flagged[worst] = True
        order.append(worst)
    return JudgeMisfit(JudgeFit(**fields, count=count), flagged, tuple(order))


def consensus_agreement(data: PanelComparisons, scores: ArrayLike) -> list[Proportion]:
    """Share of each judge's decisions that agree with the fitted order (Wilson 95%).

    A decision agrees when the node it preferred has the higher score; a comparison of
    two nodes with equal scores counts half.

    Args:
        data: the comparisons.
        scores: the fitted scores (e.g. :attr:`PanelFit.scores`).

    Returns:
        One :class:`~cj_runner.core.reliability.Proportion` per judge.
    """
    theta = np.asarray(scores, dtype=np.float64)
    if theta.shape != (data.n_items,):
        raise ValueError("scores must hold one score per node")
    diff = theta[data.first] - theta[data.second]
    expected_a = np.where(diff > 0, 1.0, np.where(diff < 0, 0.0, 0.5))
    agree = 1.0 - np.abs(data.first_won - expected_a)
    agree = np.where(diff == 0, 0.5, agree)
    count = np.bincount(data.judge, minlength=data.n_judges)
    agreed = np.bincount(data.judge, agree, data.n_judges)
    return [wilson_interval(float(agreed[k]), int(count[k])) for k in range(data.n_judges)]


@dataclass(frozen=True)
class PositionBias:
    """A judge's position bias as a probability shift (percentage points / 100).

    ``shift`` is the average over the judge's comparisons of ``expit(d_k + eta) -
    expit(d_k)``, ``d_k`` the score difference; ``low``/``high`` map the ends of eta's
    95% interval the same way (the shift is monotone in eta)."""

    shift: float
    low: float
    high: float


def position_bias_pp(data: PanelComparisons, fit: PanelFit, judge: int) -> PositionBias | None:
    """The average marginal effect of judge ``judge``'s order effect on P(A wins).

    Args:
        data: the comparisons.
        fit: their :func:`fit_panel` with order effects.
        judge: the judge index.

    Returns:
        A :class:`PositionBias`, or ``None`` when the judge has no comparisons or no
        order effect was fitted.
    """
    mine = data.judge == judge
    eta = float(fit.order_effects[judge])
    se = float(fit.order_effect_se[judge])
    if not mine.any() or not math.isfinite(se):
        return None
    d = fit.scores[data.first[mine]] - fit.scores[data.second[mine]]
    base = scipy.special.expit(d)

    def shift(value: float) -> float:
        return float(np.mean(scipy.special.expit(d + value) - base))

    return PositionBias(shift(eta), shift(eta - _Z95 * se), shift(eta + _Z95 * se))


@dataclass(frozen=True)
class Kappa:
    """Cohen's kappa of two judges over the edges both judged (``nan`` below
    :data:`KAPPA_MIN_SHARED_EDGES` shared edges or when chance agreement is 1)."""

    judge_a: int
    judge_b: int
    shared_edges: int
    agreement: float
    kappa: float


def cohen_kappa(rater_a: ArrayLike, rater_b: ArrayLike) -> float:
    """Cohen's (1960) kappa of two raters' binary labels on the same items.

    ``kappa = (p_o - p_e) / (1 - p_e)``, ``p_o`` the observed agreement and ``p_e`` the
    agreement expected from the raters' marginal shares.

    Returns:
        Kappa, or ``nan`` with no items or when ``p_e == 1`` (both raters constant and equal).
    """
    x = np.asarray(rater_a, dtype=bool)
    y = np.asarray(rater_b, dtype=bool)
    if x.shape != y.shape or x.ndim != 1:
        raise ValueError("two label vectors of the same length are needed")
    if x.size == 0:
        return math.nan
    p_o = float(np.mean(x == y))
    pa, pb = float(np.mean(x)), float(np.mean(y))
    p_e = pa * pb + (1 - pa) * (1 - pb)
    if p_e >= 1.0:
        return math.nan
    return (p_o - p_e) / (1.0 - p_e)


def pairwise_kappa(data: PanelComparisons, min_shared: int = KAPPA_MIN_SHARED_EDGES) -> list[Kappa]:
    """Cohen's kappa for every two judges on the edges both judged.

    Each judge's decision on an edge ``{u, v}`` (``u < v``) is "``u`` won"; when a judge
    judged an edge more than once, its first comparison counts (the order of ``data``).

    Args:
        data: the comparisons.
        min_shared: fewest shared edges for a kappa (else ``nan``).

    Returns:
        One :class:`Kappa` per pair of judges ``a < b`` that share at least one edge.
    """
    lo = np.minimum(data.first, data.second)
    hi = np.maximum(data.first, data.second)
    lo_won = np.where(data.first == lo, data.first_won, 1.0 - data.first_won) >= 0.5
    first_of: list[dict[tuple[int, int], bool]] = [{} for _ in range(data.n_judges)]
    for k in range(data.first.size):
        first_of[int(data.judge[k])].setdefault((int(lo[k]), int(hi[k])), bool(lo_won[k]))
    out: list[Kappa] = []
    for ja in range(data.n_judges):
        for jb in range(ja + 1, data.n_judges):
            shared = sorted(first_of[ja].keys() & first_of[jb].keys())
            if not shared:
                continue
            x = np.array([first_of[ja][e] for e in shared])
            y = np.array([first_of[jb][e] for e in shared])
            kappa = cohen_kappa(x, y) if len(shared) >= min_shared else math.nan
            out.append(Kappa(ja, jb, len(shared), float(np.mean(x == y)), kappa))
    return out


def misfit_weights(stats: JudgeFit, flagged: NDArray[np.bool_], action: str) -> FloatArray:
    """Per-judge weights for a refit: ``"exclude"`` gives flagged judges weight 0,
    ``"downweight"`` gives them ``1 / infit`` (a noisier judge counts less, as in
    information weighting), ``"keep"`` gives every judge 1.

    Raises:
        ValueError: an unknown action.
    """
    weights = np.ones(flagged.size)
    if action == "keep":
        return weights
    if action == "exclude":
        weights[flagged] = 0.0
    elif action == "downweight":
        infit = np.where(np.isfinite(stats.infit), stats.infit, 1.0)
        weights[flagged] = 1.0 / np.maximum(infit[flagged], 1.0)
    else:
        raise ValueError(f"unknown misfit action {action!r} (keep, downweight or exclude)")
    return weights


@dataclass(frozen=True)
class ReliabilityChange:
    """Scale separation reliability of the panel fit with every judge and after the
    given judge weights (exclusion or down-weighting), and both fits."""

    ssr_all: float
    ssr_after: float
    judge_weights: FloatArray
    fit_all: PanelFit
    fit_after: PanelFit


def reliability_without(
    data: PanelComparisons,
    judge_weights: ArrayLike,
    *,
    order_effect: bool = True,
    prior_precision: float = DEFAULT_PRIOR_PRECISION,
    students: ArrayLike | None = None,
    fit_all: PanelFit | None = None,
) -> ReliabilityChange:
    """Refit with per-judge weights and compare the SSR with the unweighted panel fit.

    Args:
        data: the comparisons.
        judge_weights: one weight per judge (:func:`misfit_weights`).
        order_effect: fit per-judge order effects.
        prior_precision: ridge precision.
        students: node indices the SSR is taken over (default all nodes).
        fit_all: the unweighted fit if already computed.

    Returns:
        A :class:`ReliabilityChange`.
    """
    jw = np.asarray(judge_weights, dtype=np.float64)
    if jw.shape != (data.n_judges,):
        raise ValueError("judge_weights must hold one weight per judge")
    full = fit_all or fit_panel(data, order_effect=order_effect, prior_precision=prior_precision)
    after = fit_panel(
        data, weights=jw[data.judge], order_effect=order_effect, prior_precision=prior_precision
    )
    idx = np.arange(data.n_items) if students is None else np.asarray(students, dtype=np.intp)

    def ssr(f: PanelFit) -> float:
        return scale_separation_reliability(f.scores[idx], f.se[idx])

    return ReliabilityChange(ssr(full), ssr(after), jw, full, after)
