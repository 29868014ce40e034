"""Judge misfit: infit/outfit per judge (:func:`judge_fit`), held-out probabilities, the
flagging rule (:func:`judge_misfit`), and the refit without or with less of a judge
(:func:`misfit_weights`, :func:`reliability_without`)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.linalg
import scipy.special
from numpy.typing import ArrayLike, NDArray

from cj_runner.core.bt import DEFAULT_PRIOR_PRECISION
from cj_runner.core.panel.fit import (
    _STEP_TOLERANCE,
    FloatArray,
    PanelComparisons,
    PanelFit,
    _probabilities,
    fit_panel,
)
from cj_runner.core.reliability import grouped_fit, scale_separation_reliability
from cj_runner.core.robust import empirical_bayes_fit

JUDGE_MISFIT_Z_THRESHOLD: float = 2.0
"""Infit ZSTD above which a judge is flagged as misfitting (one-sided: only noise beyond
the model harms the scale). A judge has many more comparisons than an essay and its
comparisons are a small part of what fixed the scores, so its ZSTD is close to standard
normal under the model and the conventional 2.0 applies (false alarms measured in
docs/panels.md)."""

JUDGE_MISFIT_MIN_COMPARISONS: int = 20
"""Fewest comparisons a judge needs before it can be flagged (below this a handful of
upsets dominates the mean-square)."""

_MIN_CONSENSUS_JUDGES = 2  # a judge is flagged only against the scale of two or more others


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
    :func:`cj_runner.core.reliability.standardized_fit` (Wright & Masters 1982, ch. 5),
    computed by the same function (:func:`cj_runner.core.reliability.grouped_fit`)
    grouped by judge instead of by node.

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
    stats = grouped_fit([data.judge], size, (data.first_won - p) ** 2, p * (1.0 - p))
    return JudgeFit(stats.infit, stats.outfit, stats.infit_z, stats.outfit_z, stats.count)


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
