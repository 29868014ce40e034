"""Anchor draws in the order of their known grades (rule 3a of :mod:`cj_runner.core.projection`).

An anchor's known grade says where its true quality sits relative to the other anchors: every
anchor of a lower grade is below every anchor of a higher grade. Grade projection draws the
anchors' scores from their joint posterior ``N(m_a, Sigma_aa)`` restricted to that order (a
truncated multivariate normal), the posterior of a model in which anchors are essays like the
students whose grades agree with their true order. Unrestricted draws (the rule before) also
count draws in which the anchors come out reversed, whose isotonic fits pool the reversed
anchors and move the outer boundaries outward (docs/statistics.md, "Anchor draws in grade
order").

The draws come from a Gibbs sampler (Geweke 1991): each coordinate in turn from its
conditional normal truncated to the interval its neighbours in grade allow, by the inverse
CDF. Many chains run side by side (one per draw, vectorised), each started from an
unrestricted draw, put in grade order by sorting where it was not, and run for
:data:`ORDERED_SWEEPS` sweeps; chains started from the posterior itself need few sweeps
(measured in tests/core/test_grade_draws.py against the exact truncated normal).
"""

from __future__ import annotations

import math

import numpy as np
import scipy.special
from numpy.typing import NDArray

FloatArray = NDArray[np.float64]

ORDERED_SWEEPS = 20
"""Gibbs sweeps over the anchors of each chain."""


def in_grade_order(x: FloatArray, idx: FloatArray) -> NDArray[np.bool_]:
    """Which columns of anchor draws ``x`` (anchors x draws) keep every anchor of a lower
    grade at or below every anchor of a higher grade."""
    ok = np.ones(x.shape[1], dtype=bool)
    for g in np.unique(idx)[:-1]:
        ok &= x[idx == g].max(axis=0) <= x[idx > g].min(axis=0)
    return ok


def truncated_normal(
    mu: FloatArray, sd: float, lo: FloatArray, hi: FloatArray, rng: np.random.Generator
) -> FloatArray:
    """``N(mu, sd^2)`` truncated to ``[lo, hi]``, by the inverse CDF computed in the lower
    tail (an interval above the mean is mirrored), so that far tails keep their precision."""
    a, b = (lo - mu) / sd, (hi - mu) / sd
    flip = a > 0
    a2, b2 = np.where(flip, -b, a), np.where(flip, -a, b)
    pa, pb = scipy.special.ndtr(a2), scipy.special.ndtr(b2)
    u = pa + rng.random(mu.shape) * (pb - pa)
    z = scipy.special.ndtri(np.clip(u, 1e-300, 1.0 - 1e-16))
    z = np.clip(z, a2, b2)
    # rounding in mu + sd * z can step just outside the interval
    return np.asarray(np.clip(mu + sd * np.where(flip, -z, z), lo, hi), dtype=np.float64)


def ordered_anchor_draws(
    mean: FloatArray,
    covariance: FloatArray,
    idx: FloatArray,
    rng: np.random.Generator,
    draws: int,
    sweeps: int = ORDERED_SWEEPS,
) -> FloatArray:
    """Draws of ``N(mean, covariance)`` restricted to anchor scores in grade order.

    Args:
        mean: the anchors' posterior means.
        covariance: their posterior covariance (``k x k``).
        idx: their known grade indices.
        rng: the random generator.
        draws: how many draws (parallel chains).
        sweeps: Gibbs sweeps of each chain.

    Returns:
        An array ``(k, draws)``, every column in grade order.
    """
    k = mean.size
    values, vectors = np.linalg.eigh(covariance)
    root = vectors * np.sqrt(np.maximum(values, 0.0))
    x = mean[:, None] + root @ rng.standard_normal((k, draws))
    ok = in_grade_order(x, idx)
    if not ok.all():
        ranked = np.empty_like(x)
        ranked[np.lexsort((np.arange(k), idx))] = np.sort(x, axis=0)
        x = np.where(ok[None, :], x, ranked)
    scale = max(float(np.mean(np.diag(covariance))), 1e-12)
    precision = np.linalg.inv(covariance + 1e-9 * scale * np.eye(k))
    diagonal = not np.any(precision - np.diag(np.diag(precision)))  # independent anchors
    lower = [idx < idx[i] for i in range(k)]
    higher = [idx > idx[i] for i in range(k)]
    none_below, none_above = np.full(draws, -np.inf), np.full(draws, np.inf)
    for _ in range(sweeps):
        for i in range(k):
            if diagonal:
                cond_mean = np.full(draws, mean[i])
            else:
                dev = x - mean[:, None]
                pull = precision[i] @ dev - precision[i, i] * dev[i]
                cond_mean = mean[i] - pull / precision[i, i]
            lo = x[lower[i]].max(axis=0) if lower[i].any() else none_below
            hi = x[higher[i]].min(axis=0) if higher[i].any() else none_above
            x[i] = truncated_normal(cond_mean, 1.0 / math.sqrt(precision[i, i]), lo, hi, rng)
    return np.asarray(x, dtype=np.float64)
