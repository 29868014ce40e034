"""Reliability and fit statistics of a Bradley-Terry scale.

* Scale separation reliability (SSR), the comparative-judgement analogue of Cronbach's
  alpha (Pollitt 2012; Verhavert et al. 2018), computed as in R's ``sirt::btm``
  (``mle.rel``) and ``eRm::SepRel``.
* Infit and outfit mean-squares per node or per judge (Wright & Masters 1982, ch. 5), as in
  ``sirt::btm``'s ``btm_fit`` and Pollitt's (2012) judge and essay misfit, and their
  standardised forms (``ZSTD``: the Wilson-Hilferty cube-root transform of the mean-square,
  as in Rasch practice), which are what a node is flagged on.
* The share of comparisons won by position A, with a Wilson (1927) 95% interval.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import scipy.special
from numpy.typing import ArrayLike, NDArray

FloatArray = NDArray[np.float64]

MISFIT_THRESHOLD: float = 1.3
"""Mean-square above which a node or judge is flagged by :func:`flag_misfits` (judges).

1.3 is the upper end of the "reasonable" mean-square range 0.7-1.3 of Wright, Linacre,
Gustafson & Martin-Löf (1994), "Reasonable mean-square fit values", Rasch Measurement
Transactions 8(3):370 (also Bond & Fox 2015). A raw mean-square alone is a poor flag for
nodes: its spread depends on how many comparisons a node has and how lopsided they were
(one upset in 36 against a far weaker essay gives an outfit of 20), so nodes are flagged
on the standardised statistics instead (:func:`flag_standardized_misfits`).
"""

MISFIT_Z_THRESHOLD: float = 1.6
"""Standardised infit (ZSTD) above which a node is flagged as misfitting (one-sided: only
underfit, noise beyond the model, harms the scale).

Chosen by simulation (``cj_runner.services.misfit_sim``; figures in docs/statistics.md):
with the final fit's scores the infit ZSTD is conservative (its SD is about 0.8 under the
model, because the scores were fitted to the same comparisons), so the conventional 2.0
would miss most erratic essays. With the default check pairs (``MISFIT_CHECK_SHARE``,
:mod:`cj_runner.core.misfit_checks`) 1.6 keeps false alarms under 5% of nodes with a
judge that follows the model exactly and catches an essay judged at random in 80% of
batches or more at 20 comparisons per essay; 1.5, the limit before check pairs were on by
default, gave false alarms of 5.0-5.5% with them in the hardest cells. The outfit ZSTD is
shown but not flagged on: the maximum-likelihood scale is stretched at its ends, so one
upset of an extreme essay gives it a large outfit even when the judge follows the model
(false alarms 7-13% of nodes at any useful limit).
"""

MISFIT_MIN_COMPARISONS: int = 8
"""Fewest comparisons a node needs before it can be flagged: below this the cube-root
approximation of the mean-square's distribution is too rough (a single upset dominates)."""

_Z95 = 1.959963984540054  # standard normal 97.5% quantile


def scale_separation_reliability(scores: ArrayLike, se: ArrayLike) -> float:
    """Scale separation reliability (SSR) of a set of scores.

    ``SSR = (var(scores) - mean(se^2)) / var(scores)``: the share of the observed variance
    of the scores that is not measurement error. ``var`` is the sample variance (``n - 1``
    denominator), as in ``sirt::btm`` (``mle.rel = 1 - mean(se^2) / var(theta)``) and
    ``eRm::SepRel``; the CJ literature calls it SSR (Pollitt 2012; Verhavert, Bouwer,
    Donche & De Maeyer 2019, "A meta-analysis on the reliability of comparative judgement",
    Assessment in Education 26(5)).

    Args:
        scores: Bradley-Terry scores (logits).
        se: their standard errors.

    Returns:
        The SSR (at most 1; it is negative when the errors exceed the spread of the scores,
        i.e. the scale separates nothing). ``nan`` with fewer than two scores or when all
        scores are equal.

    Raises:
        ValueError: the arrays differ in length or hold non-finite values.
    """
    theta = np.asarray(scores, dtype=np.float64)
    errors = np.asarray(se, dtype=np.float64)
    if theta.ndim != 1 or theta.shape != errors.shape:
        raise ValueError("scores and se must be vectors of the same length")
    if not (np.all(np.isfinite(theta)) and np.all(np.isfinite(errors))):
        raise ValueError("scores and se must be finite")
    if theta.size < 2:
        return math.nan
    observed = float(np.var(theta, ddof=1))
    if observed == 0.0:
        return math.nan
    return (observed - float(np.mean(errors**2))) / observed


def _residuals(
    n_items: int,
    first: ArrayLike,
    second: ArrayLike,
    first_won: ArrayLike,
    scores: ArrayLike,
    order_effect: float,
) -> tuple[NDArray[np.intp], NDArray[np.intp], FloatArray, FloatArray]:
    """Validated indices, squared residuals and model variances, one per comparison."""
    a = np.asarray(first)
    b = np.asarray(second)
    y = np.asarray(first_won, dtype=np.float64)
    theta = np.asarray(scores, dtype=np.float64)
    if theta.shape != (n_items,):
        raise ValueError("scores must hold one score per node")
    if a.ndim != 1 or a.shape != b.shape or a.shape != y.shape:
        raise ValueError("first, second and first_won must be vectors of the same length")
    if a.size and (a.dtype.kind not in "iu" or b.dtype.kind not in "iu"):
        raise ValueError("first and second must hold integer node indices")
    a = a.astype(np.intp)
    b = b.astype(np.intp)
    if a.size and (min(a.min(), b.min()) < 0 or max(a.max(), b.max()) >= n_items):
        raise ValueError(f"a node index is outside 0..{n_items - 1}")
    if not np.all((y >= 0.0) & (y <= 1.0)):
        raise ValueError("first_won must be true/false (or a share between 0 and 1)")
    p = scipy.special.expit(theta[a] - theta[b] + order_effect)
    variance = p * (1.0 - p)
    # From either node's side the residual has the same square and the same variance.
    return a, b, (y - p) ** 2, variance


def _mean_squares(
    groups: list[NDArray[np.intp]], size: int, squared: FloatArray, variance: FloatArray
) -> tuple[FloatArray, FloatArray]:
    count = np.zeros(size)
    z2 = np.zeros(size)
    sq = np.zeros(size)
    var = np.zeros(size)
    with np.errstate(divide="ignore", invalid="ignore"):
        standardized = squared / variance
    for index in groups:
        count += np.bincount(index, minlength=size)
        z2 += np.bincount(index, weights=standardized, minlength=size)
        sq += np.bincount(index, weights=squared, minlength=size)
        var += np.bincount(index, weights=variance, minlength=size)
    with np.errstate(divide="ignore", invalid="ignore"):
        outfit = np.where(count > 0, z2 / np.where(count > 0, count, 1.0), np.nan)
        infit = np.where(count > 0, sq / np.where(var > 0, var, np.nan), np.nan)
    return infit.astype(np.float64), outfit.astype(np.float64)


def infit_outfit(
    n_items: int,
    first: ArrayLike,
    second: ArrayLike,
    first_won: ArrayLike,
    scores: ArrayLike,
    order_effect: float = 0.0,
) -> tuple[FloatArray, FloatArray]:
    """Infit and outfit mean-square of every node (Wright & Masters 1982).

    For a comparison ``k`` with model probability ``p_k = expit(theta_A - theta_B + eta)``
    that position A wins and outcome ``y_k``, the residual is ``y_k - p_k`` and its model
    variance ``W_k = p_k (1 - p_k)`` (the same, up to sign, from either node's side). Over
    the comparisons ``k`` a node took part in:

    * outfit = ``mean_k (y_k - p_k)^2 / W_k`` (unweighted: sensitive to surprising outcomes
      against far-away opponents),
    * infit = ``sum_k (y_k - p_k)^2 / sum_k W_k`` (information-weighted).

    Both have expectation 1 under the model; this is ``sirt::btm``'s ``btm_fit``.

    Args:
        n_items: number of nodes.
        first: node in position A per comparison.
        second: node in position B per comparison.
        first_won: whether A won (or a share in ``[0, 1]``).
        scores: fitted scores, one per node.
        order_effect: the fitted position-A effect ``eta`` (0 if none was fitted).

    Returns:
        ``(infit, outfit)``, arrays of length ``n_items``; ``nan`` for a node without
        comparisons (and outfit ``inf`` in the degenerate case of a certain outcome).
    """
    a, b, squared, variance = _residuals(n_items, first, second, first_won, scores, order_effect)
    return _mean_squares([a, b], n_items, squared, variance)


def infit_outfit_by_group(
    n_groups: int,
    group: ArrayLike,
    first: ArrayLike,
    second: ArrayLike,
    first_won: ArrayLike,
    scores: ArrayLike,
    order_effect: float = 0.0,
) -> tuple[FloatArray, FloatArray]:
    """Infit and outfit mean-square per group of comparisons, e.g. per judge.

    Same residuals as :func:`infit_outfit`, pooled over the comparisons of each group
    (Pollitt 2012 uses judge infit to spot judges who disagree with the consensus).

    Args:
        n_groups: number of groups; ``group`` values are ``0..n_groups-1``.
        group: the group (judge) index of each comparison.
        first: node in position A per comparison.
        second: node in position B per comparison.
        first_won: whether A won (or a share in ``[0, 1]``).
        scores: fitted scores, one per node.
        order_effect: the fitted position-A effect ``eta``.

    Returns:
        ``(infit, outfit)`` of length ``n_groups``; ``nan`` for a group without comparisons.
    """
    theta = np.asarray(scores, dtype=np.float64)
    _, _, squared, variance = _residuals(theta.size, first, second, first_won, theta, order_effect)
    g = np.asarray(group)
    if g.shape != squared.shape:
        raise ValueError("group must hold one entry per comparison")
    if g.size and (g.dtype.kind not in "iu" or g.min() < 0 or g.max() >= n_groups):
        raise ValueError(f"group must hold integers in 0..{n_groups - 1}")
    return _mean_squares([g.astype(np.intp)], n_groups, squared, variance)


@dataclass(frozen=True)
class FitStatistics:
    """Infit/outfit mean-squares and their standardised forms, one entry per node.

    ``nan`` for a node without comparisons (``count == 0``); a ``z`` of 0 where the
    mean-square has no variance under the model (every comparison a coin toss).
    """

    infit: FloatArray
    outfit: FloatArray
    infit_z: FloatArray
    outfit_z: FloatArray
    count: NDArray[np.int64]


def wilson_hilferty_z(mean_square: ArrayLike, q: ArrayLike) -> FloatArray:
    """Standardise a mean-square by the Wilson-Hilferty cube-root transform.

    ``t = (MS^(1/3) - 1) (3 / q) + q / 3``, where ``q`` is the model standard deviation of
    the mean-square (Wilson & Hilferty 1931; Wright & Masters 1982, p. 100; Linacre's
    Winsteps ``ZSTD``). ``t`` is approximately standard normal under the model.

    Args:
        mean_square: the mean-squares.
        q: their model standard deviations (``q <= 1e-9`` gives ``t = 0``: a mean-square
            that cannot vary carries no evidence).

    Returns:
        The standardised values (``nan`` where the mean-square is ``nan``).
    """
    ms = np.asarray(mean_square, dtype=np.float64)
    sd = np.asarray(q, dtype=np.float64)
    ok = sd > 1e-9
    safe = np.where(ok, sd, 1.0)
    with np.errstate(invalid="ignore"):
        z = (np.cbrt(ms) - 1.0) * (3.0 / safe) + safe / 3.0
    return np.asarray(np.where(ok, z, np.where(np.isnan(ms), np.nan, 0.0)), dtype=np.float64)


def standardized_fit(
    n_items: int,
    first: ArrayLike,
    second: ArrayLike,
    first_won: ArrayLike,
    scores: ArrayLike,
    order_effect: float = 0.0,
) -> FitStatistics:
    """Infit and outfit of every node, raw and standardised (Wright & Masters 1982, ch. 5).

    The mean-squares are those of :func:`infit_outfit`. For a binary outcome with model
    variance ``W = p (1 - p)`` the fourth central moment is ``C = W (1 - 3 W)``, so the
    model variances of the mean-squares over a node's ``N`` comparisons are

    * outfit: ``q^2 = sum_k (C_k / W_k^2) / N^2 - 1 / N = (sum_k 1 / W_k - 4 N) / N^2``,
    * infit: ``q^2 = sum_k (C_k - W_k^2) / (sum_k W_k)^2 = sum_k (W_k - 4 W_k^2) / (sum_k W_k)^2``,

    and each mean-square is standardised by :func:`wilson_hilferty_z`.

    Args:
        n_items: number of nodes.
        first: node in position A per comparison.
        second: node in position B per comparison.
        first_won: whether A won.
        scores: fitted scores, one per node.
        order_effect: the fitted position-A effect (0 if none was fitted).

    Returns:
        A :class:`FitStatistics`.
    """
    a, b, squared, variance = _residuals(n_items, first, second, first_won, scores, order_effect)
    return grouped_fit([a, b], n_items, squared, variance)


def grouped_fit(
    groups: Sequence[ArrayLike], size: int, squared: ArrayLike, variance: ArrayLike
) -> FitStatistics:
    """Infit and outfit mean-squares, their model SDs and ZSTDs, pooled per group.

    The steps of :func:`standardized_fit` (by node) and
    :func:`cj_runner.core.panel.misfit.judge_fit` (by judge): for a group's ``N``
    comparisons with squared residuals ``(y_k - p_k)^2`` and model variances ``W_k``,
    infit ``= sum (y - p)^2 / sum W``, outfit ``= mean (y - p)^2 / W``, their model SDs
    ``q`` (Wright & Masters 1982, ch. 5; the formulas in :func:`standardized_fit`), and
    the Wilson-Hilferty ZSTD (:func:`wilson_hilferty_z`).

    Args:
        groups: arrays of group indices in ``0..size-1``, one entry per comparison each;
            a comparison counts once in each array (by node: ``[first, second]``, so a
            comparison counts for both its nodes; by judge: ``[judge]``).
        size: number of groups.
        squared: ``(y_k - p_k)^2`` per comparison.
        variance: ``W_k = p_k (1 - p_k)`` per comparison.

    Returns:
        A :class:`FitStatistics` of length ``size`` (``nan`` for a group without
        comparisons).
    """
    index = [np.asarray(g, dtype=np.intp) for g in groups]
    sq = np.asarray(squared, dtype=np.float64)
    var = np.asarray(variance, dtype=np.float64)
    infit, outfit = _mean_squares(index, size, sq, var)
    with np.errstate(divide="ignore"):
        inverse_w = 1.0 / var
    count = np.zeros(size)
    sum_w = np.zeros(size)
    sum_inv = np.zeros(size)
    sum_c = np.zeros(size)
    for group in index:
        count += np.bincount(group, minlength=size)
        sum_w += np.bincount(group, weights=var, minlength=size)
        sum_inv += np.bincount(group, weights=inverse_w, minlength=size)
        sum_c += np.bincount(group, weights=var - 4.0 * var**2, minlength=size)
    seen = count > 0
    with np.errstate(divide="ignore", invalid="ignore"):
        q_out = np.sqrt(np.maximum(sum_inv - 4.0 * count, 0.0)) / np.where(seen, count, 1.0)
        q_in = np.sqrt(np.maximum(sum_c, 0.0)) / np.where(sum_w > 0, sum_w, 1.0)
    return FitStatistics(
        infit=infit,
        outfit=outfit,
        infit_z=wilson_hilferty_z(infit, np.where(seen, q_in, np.nan)),
        outfit_z=wilson_hilferty_z(outfit, np.where(seen, q_out, np.nan)),
        count=count.astype(np.int64),
    )


def flag_standardized_misfits(
    infit_z: ArrayLike,
    count: ArrayLike,
    threshold: float = MISFIT_Z_THRESHOLD,
    min_comparisons: int = MISFIT_MIN_COMPARISONS,
) -> NDArray[np.bool_]:
    """Which nodes misfit: at least ``min_comparisons`` comparisons and an infit ZSTD above
    ``threshold`` (defaults :data:`MISFIT_Z_THRESHOLD`, :data:`MISFIT_MIN_COMPARISONS`).

    Args:
        infit_z: standardised infit per node (:func:`standardized_fit`).
        count: comparisons per node.
        threshold: the ZSTD limit.
        min_comparisons: fewest comparisons for a flag.

    Returns:
        A boolean array; ``nan`` is never flagged.
    """
    zi = np.asarray(infit_z, dtype=np.float64)
    n = np.asarray(count)
    if zi.shape != n.shape:
        raise ValueError("infit_z and count must have the same shape")
    with np.errstate(invalid="ignore"):
        high = zi > threshold
    return np.asarray(high & (n >= min_comparisons), dtype=np.bool_)


def flag_misfits(
    infit: ArrayLike, outfit: ArrayLike, threshold: float = MISFIT_THRESHOLD
) -> NDArray[np.bool_]:
    """Which nodes (or judges) misfit: infit or outfit above ``threshold``.

    Args:
        infit: infit mean-squares.
        outfit: outfit mean-squares.
        threshold: flagging limit, :data:`MISFIT_THRESHOLD` by default.

    Returns:
        A boolean array; ``nan`` (no comparisons) is never flagged.
    """
    inf_arr = np.asarray(infit, dtype=np.float64)
    out_arr = np.asarray(outfit, dtype=np.float64)
    if inf_arr.shape != out_arr.shape:
        raise ValueError("infit and outfit must have the same shape")
    with np.errstate(invalid="ignore"):
        return np.asarray((inf_arr > threshold) | (out_arr > threshold), dtype=np.bool_)


@dataclass(frozen=True)
class Proportion:
    """A share with its Wilson 95% interval; ``share`` is ``nan`` when ``n == 0``."""

    share: float
    low: float
    high: float
    n: int


def wilson_interval(successes: float, n: int) -> Proportion:
    """Wilson (1927) score interval for a binomial share, at 95%.

    ``(p + z^2/2n +/- z sqrt(p(1-p)/n + z^2/4n^2)) / (1 + z^2/n)`` with ``z = 1.96``; it stays
    inside ``[0, 1]`` and behaves well for small ``n`` and shares near 0 or 1 (Brown, Cai
    & DasGupta 2001).

    Args:
        successes: number of successes (may be fractional, e.g. half wins for ties).
        n: number of trials.

    Returns:
        A :class:`Proportion`; with ``n == 0`` the share is ``nan`` and the interval
        ``[0, 1]``.
    """
    if n < 0 or successes < 0 or successes > n:
        raise ValueError("need 0 <= successes <= n")
    if n == 0:
        return Proportion(share=math.nan, low=0.0, high=1.0, n=0)
    share = successes / n
    z2 = _Z95 * _Z95
    centre = (share + z2 / (2 * n)) / (1 + z2 / n)
    half = _Z95 * math.sqrt(share * (1 - share) / n + z2 / (4 * n * n)) / (1 + z2 / n)
    # At 0 or n successes the bound is exactly the share; clamping removes rounding.
    low = 0.0 if successes == 0 else min(share, max(0.0, centre - half))
    high = 1.0 if successes == n else max(share, min(1.0, centre + half))
    return Proportion(share=share, low=low, high=high, n=n)


def position_a_win_share(first_won: ArrayLike) -> Proportion:
    """Share of comparisons won by position A, with a Wilson 95% interval (spec §9).

    An unbiased judge gives about 0.5; an interval that excludes 0.5 is evidence of
    position bias.

    Args:
        first_won: whether position A won, one entry per successful comparison.

    Returns:
        A :class:`Proportion` (``share`` is ``nan`` when there are no comparisons).
    """
    y = np.asarray(first_won, dtype=np.float64).ravel()
    if not np.all((y >= 0.0) & (y <= 1.0)):
        raise ValueError("first_won must be true/false (or a share between 0 and 1)")
    return wilson_interval(float(np.sum(y)), int(y.size))
