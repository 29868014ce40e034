"""Judge health: does the judge carry usable signal? (spec §7; issue 13 item 6)

A pure verdict from the batch's figures. The judge is said to carry **no usable signal**
when any of these holds (thresholds are module constants, documented in
docs/statistics.md):

* **Position:** it picks one position almost always: the share of comparisons won by
  position A is above :data:`POSITION_SHARE_LIMIT` (or below ``1 -`` it) and its Wilson 95%
  interval lies entirely beyond :data:`POSITION_SHARE_EVIDENCE` (or below ``1 -`` it), so a
  handful of calls cannot trigger it.
* **Order flips:** on the edges asked both ways, the winner changes with the order at a
  rate of at least :data:`FLIP_RATE_LIMIT`, the Wilson interval of that rate lies above
  0.5 (what a coin-tossing judge gives), over at least :data:`MIN_FLIP_EDGES` edges.
* **Chance:** nothing shows that the essays differ at all: the likelihood-ratio test of
  "every essay equal" against the Bradley-Terry fit (order effect in both) has
  ``p >= CHANCE_P_VALUE``, and the design-robust reliability (when known) is below
  :data:`CHANCE_RELIABILITY`.

When the verdict is ``no_signal`` the batch's grades are not projected (deferred with the
reasons) and every summary and report says so.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import scipy.stats

from cj_runner.core.reliability import wilson_interval

__all__ = [
    "CHANCE_P_VALUE",
    "CHANCE_RELIABILITY",
    "FLIP_RATE_LIMIT",
    "MIN_FLIP_EDGES",
    "NO_SIGNAL",
    "OK",
    "POSITION_SHARE_EVIDENCE",
    "POSITION_SHARE_LIMIT",
    "JudgeHealth",
    "judge_health",
    "null_likelihood_ratio_p",
]

OK = "ok"
NO_SIGNAL = "no_signal"

POSITION_SHARE_LIMIT: float = 0.85
"""Share of wins by one position above which the judge is suspected of answering by
position (0.85: at most 30% of its answers can depend on the essays)."""

POSITION_SHARE_EVIDENCE: float = 0.75
"""The Wilson 95% interval of the share must lie beyond this too (20 of 20 calls for A is
enough: lower bound 0.84; 8 of 8 is not: 0.68)."""

FLIP_RATE_LIMIT: float = 0.8
"""Rate of winner changes with the order, on edges asked both ways, at which the answers
are taken to follow the position rather than the essays (a coin-tossing judge gives 0.5,
a consistent one less)."""

MIN_FLIP_EDGES: int = 5
"""Fewest edges asked both ways before the flip rate counts."""

CHANCE_P_VALUE: float = 0.05
"""The essays are taken to differ when the likelihood-ratio test of "all equal" rejects at
this level."""

CHANCE_RELIABILITY: float = 0.3
"""Design-robust reliability below which, with no evidence that the essays differ, the
judge is said to answer at chance (a coin-tossing judge gives 0.03-0.45 at 10-20
comparisons per essay)."""


@dataclass(frozen=True)
class JudgeHealth:
    """The verdict: ``status`` is :data:`OK` or :data:`NO_SIGNAL`; ``reasons`` says why
    (empty when ``ok``); ``checks`` holds the figures each test used (JSON-ready)."""

    status: str
    reasons: tuple[str, ...]
    checks: dict[str, float | int | None]

    @property
    def signal(self) -> bool:
        """Whether the judge carries usable signal."""
        return self.status == OK

    def as_dict(self) -> dict[str, object]:
        """The stable JSON form (``execute --json`` key ``judge_health``)."""
        return {
            "status": self.status,
            "signal": self.signal,
            "reasons": list(self.reasons),
            "checks": dict(self.checks),
        }


def null_likelihood_ratio_p(
    log_likelihood: float, position_a_wins: int, comparisons: int, df: int
) -> float | None:
    """P-value of the likelihood-ratio test that every essay is equal.

    The null model keeps only the order effect (position A wins with one fixed
    probability), so its maximum log-likelihood is ``k log(k/m) + (m-k) log(1 - k/m)`` for
    ``k`` wins by A in ``m`` comparisons; ``2 (LL_fit - LL_null)`` is compared with a
    chi-square on ``df`` degrees of freedom (the number of compared nodes minus the number
    of connected components). Wilks (1938).

    Args:
        log_likelihood: the Bradley-Terry fit's log-likelihood (order effect included).
        position_a_wins: ``k``.
        comparisons: ``m``.
        df: degrees of freedom.

    Returns:
        The p-value, or ``None`` when ``df < 1`` or there are no comparisons.
    """
    if df < 1 or comparisons <= 0:
        return None
    k, m = position_a_wins, comparisons
    null = sum(c * math.log(c / m) for c in (k, m - k) if c > 0)
    statistic = max(2.0 * (log_likelihood - null), 0.0)
    return float(scipy.stats.chi2.sf(statistic, df))


def judge_health(
    *,
    position_a_wins: int,
    comparisons: int,
    flip_rate: float | None = None,
    flip_edges: int = 0,
    null_p_value: float | None = None,
    robust_reliability: float | None = None,
) -> JudgeHealth:
    """Whether the judge carries usable signal (rules in the module docstring).

    Args:
        position_a_wins: successful comparisons won by position A.
        comparisons: successful comparisons.
        flip_rate: the fairness report's flip rate (``None``: no edge asked both ways).
        flip_edges: edges asked both ways.
        null_p_value: :func:`null_likelihood_ratio_p` (``None``: not tested).
        robust_reliability: the design-robust reliability (``None``: unknown).

    Returns:
        A :class:`JudgeHealth`.
    """
    if comparisons < 0 or not 0 <= position_a_wins <= comparisons:
        raise ValueError("need 0 <= position_a_wins <= comparisons")
    reasons: list[str] = []
    share = wilson_interval(position_a_wins, comparisons)
    if comparisons and (
        (share.share > POSITION_SHARE_LIMIT and share.low > POSITION_SHARE_EVIDENCE)
        or (share.share < 1 - POSITION_SHARE_LIMIT and share.high < 1 - POSITION_SHARE_EVIDENCE)
    ):
        side = "A" if share.share > 0.5 else "B"
        count = position_a_wins if side == "A" else comparisons - position_a_wins
        reasons.append(
            f"the judge picked position {side} in {count} of {comparisons} comparisons "
            f"(95% interval of the A share {share.low:.2f}-{share.high:.2f})"
        )
    if flip_rate is not None and flip_edges >= MIN_FLIP_EDGES:
        flips = wilson_interval(flip_rate * flip_edges, flip_edges)
        if flip_rate >= FLIP_RATE_LIMIT and flips.low > 0.5:
            reasons.append(
                f"the winner changed with the order on {flip_rate:.0%} of {flip_edges} "
                "pairs asked both ways"
            )
    chance = null_p_value is not None and null_p_value >= CHANCE_P_VALUE
    if chance and (robust_reliability is None or robust_reliability < CHANCE_RELIABILITY):
        assert null_p_value is not None
        reliability = (
            f", design-robust reliability {robust_reliability:.2f}"
            if robust_reliability is not None
            else ""
        )
        reasons.append(
            "nothing shows the essays differ: the judge's answers are what chance gives "
            f"(likelihood-ratio test p = {null_p_value:.2f}{reliability})"
        )
    checks: dict[str, float | int | None] = {
        "comparisons": comparisons,
        "position_a_share": None if comparisons == 0 else share.share,
        "position_a_low": share.low if comparisons else None,
        "position_a_high": share.high if comparisons else None,
        "flip_rate": flip_rate,
        "flip_edges": flip_edges,
        "null_p_value": null_p_value,
        "robust_reliability": robust_reliability,
    }
    return JudgeHealth(NO_SIGNAL if reasons else OK, tuple(reasons), checks)
