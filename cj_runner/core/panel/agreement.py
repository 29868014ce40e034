"""Agreement between judges and with the scale: consensus agreement, position bias in
percentage points, Cohen's kappa."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import scipy.linalg
import scipy.special
from numpy.typing import ArrayLike

from cj_runner.core.panel.fit import PanelComparisons, PanelFit
from cj_runner.core.reliability import (
    Proportion,
    wilson_interval,
)

KAPPA_MIN_SHARED_EDGES: int = 5
"""Fewest edges two judges must share before their kappa is reported (else ``nan``)."""

_Z95 = 1.959963984540054


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
