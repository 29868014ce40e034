"""The continuation decision (spec §5): after every wave, one pure function says what
comes next and why.

:func:`decide` checks these rules in this order and returns the first that applies:

1. ``FINALIZE_FAILURE`` / ``success_rate``: once there are results (a wave has finished,
   or a comparison has a final outcome), no comparison succeeded or the success rate
   ``successes / finished_comparisons`` is below ``min_success_rate``. The rate counts
   comparisons, not attempts.
2. ``FINALIZE_SCORING`` / ``stability``: at least ``min_comparisons_for_stability_check``
   successes and the largest BT-score change since the previous fit is strictly below
   ``score_stability_threshold`` (a threshold of 0 switches the rule off).
3. ``FINALIZE_SCORING`` / ``target_reliability`` (issue 8, off when ``None``): at least
   ``min_comparisons_for_stability_check`` successes and the lower bound of the
   design-robust reliability, ``estimate - target_reliability_z * posterior SD``
   (:data:`TARGET_RELIABILITY_Z`), is ``>=`` the target (:func:`reliability_target_met`).
4. ``FINALIZE_SCORING`` / ``target_max_se`` (off when ``None``): at least
   ``min_comparisons_for_stability_check`` successes and the largest standard error is
   ``<=`` the target.
5. ``FINALIZE_SCORING`` / ``max_cost``  (off when ``None``): the money spent is ``>=`` the
   money budget.
6. ``FINALIZE_SCORING`` / ``budget``: calls sent ``>=`` ``total_budget``.
7. ``FINALIZE_SCORING`` / ``iterations``: waves completed ``>=`` ``max_iterations``.
8. ``REQUEST_MORE_COMPARISONS`` / ``coverage``: unique coverage is not complete.
9. ``RESAMPLE`` / ``resampling``: a pass is under way (continue it), or the pass count is
   below the cap of the net class (``max_passes_small_net`` or ``max_passes_regular``):
   a new pass starts (``starts_new_pass=True``; the caller stores the incremented count).
10. ``FINALIZE_SCORING`` / ``resampling_cap``: otherwise.

``exhausted`` (the chosen mode can produce no pair) and ``interrupted`` are decided by the
caller, which knows the pairs: see :func:`exhausted`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import StrEnum

__all__ = [
    "TARGET_RELIABILITY_Z",
    "Action",
    "ContinuationContext",
    "ContinuationLimits",
    "Decision",
    "StopReason",
    "decide",
    "exhausted",
    "reliability_lower_bound",
    "reliability_target_met",
]


TARGET_RELIABILITY_Z = 1.645
"""How many posterior SDs below its estimate the robust reliability's lower bound sits for
the ``TARGET_RELIABILITY`` stop (1.645: a one-sided 95% bound). A stop on the estimate
itself ends batches when the estimate is high (it has just crossed the target), and their
true reliability at the stop fell short of the target on average in half the cells
measured; with this bound the mean true reliability at the stop is at least the target in
every cell, by more than its Monte Carlo SE, at 33% more comparisons on average
(``benchmarks/bench_target_stop.py``; docs/statistics.md, "The ``TARGET_RELIABILITY``
stop: a lower bound")."""


class Action(StrEnum):
    """What the workflow does after a wave."""

    REQUEST_MORE_COMPARISONS = "REQUEST_MORE_COMPARISONS"
    RESAMPLE = "RESAMPLE"
    FINALIZE_SCORING = "FINALIZE_SCORING"
    FINALIZE_FAILURE = "FINALIZE_FAILURE"


class StopReason(StrEnum):
    """Why: stored on the batch as its stop reason when the action finalizes."""

    SUCCESS_RATE = "success_rate"
    STABILITY = "stability"
    BUDGET = "budget"
    ITERATIONS = "iterations"
    COVERAGE = "coverage"
    RESAMPLING = "resampling"
    RESAMPLING_CAP = "resampling_cap"
    EXHAUSTED = "exhausted"
    TARGET_RELIABILITY = "target_reliability"
    TARGET_MAX_SE = "target_max_se"
    MAX_COST = "max_cost"
    INTERRUPTED = "interrupted"
    JUDGE_UNAVAILABLE = "judge_unavailable"  # bad key, no quota, unknown model...
    FINALIZED_EARLY = "finalized_early"
    SCORING_ERROR = "scoring_error"


@dataclass(frozen=True)
class ContinuationLimits:
    """The settings the decision depends on (spec §3 names in upper case)."""

    min_success_rate: float
    min_comparisons_for_stability_check: int
    score_stability_threshold: float
    max_iterations: int
    max_passes_small_net: int
    max_passes_regular: int
    target_reliability: float | None = None
    target_reliability_z: float = TARGET_RELIABILITY_Z
    target_max_se: float | None = None
    max_cost_usd: float | None = None


@dataclass(frozen=True)
class ContinuationContext:
    """The state of a batch after a wave.

    Attributes:
        finished_comparisons: comparisons with a final outcome (success, or failure after
            retries); not attempts.
        successes: comparisons that succeeded (once each, even after retries).
        failures: comparisons that used up their retries.
        calls_sent: every attempt sent (the budget counter).
        total_budget: the batch's call budget.
        waves_completed: waves finished so far.
        max_possible_pairs: nC2 over all nodes.
        successful_pairs_count: distinct edges with at least one successful comparison.
        is_small_net: ``expected_essay_count <= MIN_RESAMPLING_NET_SIZE``.
        resampling_pass_count: resampling passes started.
        pass_in_progress: the current pass still has edges not asked in it.
        max_score_change: largest change of a node's BT score between the last two fits,
            ``None`` before there are two fits.
        robust_reliability: the design-robust reliability (issue 8), if computed.
        robust_reliability_sd: its posterior SD, if computed.
        max_se: the largest standard error of a score, if computed.
        cost_usd: money spent so far.
    """

    finished_comparisons: int
    successes: int
    failures: int
    calls_sent: int
    total_budget: int
    waves_completed: int
    max_possible_pairs: int
    successful_pairs_count: int
    is_small_net: bool
    resampling_pass_count: int
    pass_in_progress: bool
    max_score_change: float | None
    robust_reliability: float | None = None
    max_se: float | None = None
    cost_usd: float = 0.0
    robust_reliability_sd: float | None = None


@dataclass(frozen=True)
class Decision:
    """One decision: what to do, why, and whether a new resampling pass starts."""

    action: Action
    reason: StopReason
    starts_new_pass: bool = False

    @property
    def is_final(self) -> bool:
        """Whether the batch ends here."""
        return self.action in (Action.FINALIZE_SCORING, Action.FINALIZE_FAILURE)


def _finalize(reason: StopReason) -> Decision:
    return Decision(Action.FINALIZE_SCORING, reason)


def decide(ctx: ContinuationContext, limits: ContinuationLimits) -> Decision:
    """The continuation decision of spec §5, extended by the stopping rules of issue 8.

    Args:
        ctx: the batch after a wave.
        limits: the settings.

    Returns:
        The first rule that applies, in the order of the module docstring.
    """
    # 1. failure: judged once there are results, per comparison (not per attempt)
    if ctx.waves_completed >= 1 or ctx.finished_comparisons > 0:
        if ctx.successes <= 0 or ctx.finished_comparisons <= 0:
            return Decision(Action.FINALIZE_FAILURE, StopReason.SUCCESS_RATE)
        if ctx.successes / ctx.finished_comparisons < limits.min_success_rate:
            return Decision(Action.FINALIZE_FAILURE, StopReason.SUCCESS_RATE)
    enough = ctx.successes >= limits.min_comparisons_for_stability_check
    # 2. stability
    if (
        enough
        and ctx.max_score_change is not None
        and ctx.max_score_change < limits.score_stability_threshold
    ):
        return _finalize(StopReason.STABILITY)
    # 3-5. statistical stopping rules and the money budget (off when None)
    if (
        enough
        and limits.target_reliability is not None
        and reliability_target_met(
            ctx.robust_reliability,
            ctx.robust_reliability_sd,
            limits.target_reliability,
            limits.target_reliability_z,
        )
    ):
        return _finalize(StopReason.TARGET_RELIABILITY)
    if (
        enough
        and limits.target_max_se is not None
        and ctx.max_se is not None
        and ctx.max_se <= limits.target_max_se
    ):
        return _finalize(StopReason.TARGET_MAX_SE)
    if limits.max_cost_usd is not None and ctx.cost_usd >= limits.max_cost_usd:
        return _finalize(StopReason.MAX_COST)
    # 6-7. hard limits
    if ctx.calls_sent >= ctx.total_budget:
        return _finalize(StopReason.BUDGET)
    if ctx.waves_completed >= limits.max_iterations:
        return _finalize(StopReason.ITERATIONS)
    # 8. coverage first
    if ctx.successful_pairs_count < ctx.max_possible_pairs:
        return Decision(Action.REQUEST_MORE_COMPARISONS, StopReason.COVERAGE)
    # 9-10. resampling passes up to the cap of the net class
    if ctx.pass_in_progress:
        return Decision(Action.RESAMPLE, StopReason.RESAMPLING)
    cap = limits.max_passes_small_net if ctx.is_small_net else limits.max_passes_regular
    if ctx.resampling_pass_count < cap:
        return Decision(Action.RESAMPLE, StopReason.RESAMPLING, starts_new_pass=True)
    return _finalize(StopReason.RESAMPLING_CAP)


def reliability_lower_bound(value: float | None, sd: float | None, z: float) -> float | None:
    """The lower bound ``value - z * sd`` the ``TARGET_RELIABILITY`` stop checks.

    Args:
        value: the design-robust reliability (:func:`cj_runner.core.robust.robust_reliability`).
        sd: its posterior SD (the ``posterior_sd`` of that function's detail).
        z: how many SDs below the estimate the bound sits (0: the estimate itself).

    Returns:
        The bound, or ``None`` when there is no estimate, or when ``z > 0`` and there is no
        SD (a bound that cannot be computed is never taken as reached).
    """
    if value is None or not math.isfinite(value):
        return None
    if z == 0.0:
        return value
    if sd is None or not math.isfinite(sd):
        return None
    return value - z * sd


def reliability_target_met(value: float | None, sd: float | None, target: float, z: float) -> bool:
    """Whether the ``TARGET_RELIABILITY`` stop applies: the lower bound of
    :func:`reliability_lower_bound` is at least ``target``."""
    bound = reliability_lower_bound(value, sd, z)
    return bound is not None and bound >= target


def exhausted() -> Decision:
    """The decision when the mode :func:`decide` chose can produce no pair."""
    return _finalize(StopReason.EXHAUSTED)
