"""The continuation decision (spec §5): every branch and the order between them."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cj_runner.core.continuation import (
    TARGET_RELIABILITY_Z,
    Action,
    ContinuationContext,
    ContinuationLimits,
    Decision,
    StopReason,
    decide,
    exhausted,
    reliability_lower_bound,
    reliability_target_met,
)

LIMITS = ContinuationLimits(
    min_success_rate=0.8,
    min_comparisons_for_stability_check=12,
    score_stability_threshold=0.05,
    max_iterations=50,
    max_passes_small_net=2,
    max_passes_regular=1,
)

# A regular batch of 24 nodes in the middle of coverage: nothing stops it.
BASE = ContinuationContext(
    finished_comparisons=48,
    successes=48,
    failures=0,
    calls_sent=48,
    total_budget=300,
    waves_completed=4,
    max_possible_pairs=276,
    successful_pairs_count=48,
    is_small_net=False,
    resampling_pass_count=0,
    pass_in_progress=False,
    max_score_change=0.5,
)

FAIL = Decision(Action.FINALIZE_FAILURE, StopReason.SUCCESS_RATE)
MORE = Decision(Action.REQUEST_MORE_COMPARISONS, StopReason.COVERAGE)
CONTINUE_PASS = Decision(Action.RESAMPLE, StopReason.RESAMPLING)
NEW_PASS = Decision(Action.RESAMPLE, StopReason.RESAMPLING, starts_new_pass=True)


def fin(reason: StopReason) -> Decision:
    return Decision(Action.FINALIZE_SCORING, reason)


COVERED = {"successful_pairs_count": 276}

CASES: list[tuple[str, dict[str, Any], dict[str, Any], Decision]] = [
    # ---- 1. success rate
    ("healthy coverage", {}, {}, MORE),
    (
        "rate below minimum",
        {"successes": 38, "failures": 10, "finished_comparisons": 48},
        {},
        FAIL,
    ),
    (
        "rate exactly at minimum passes",
        {"successes": 40, "failures": 10, "finished_comparisons": 50},
        {},
        MORE,
    ),
    (
        "no success after a wave",
        {"successes": 0, "failures": 12, "finished_comparisons": 12, "waves_completed": 1},
        {},
        FAIL,
    ),
    (
        "a wave finished but nothing came back",
        {"successes": 0, "failures": 0, "finished_comparisons": 0, "waves_completed": 1},
        {},
        FAIL,
    ),
    (
        "before the first wave nothing fails",
        {
            "successes": 0,
            "failures": 0,
            "finished_comparisons": 0,
            "waves_completed": 0,
            "calls_sent": 0,
            "successful_pairs_count": 0,
            "max_score_change": None,
        },
        {},
        MORE,
    ),
    (
        "rate counts comparisons, not attempts (retries spent budget)",
        {"successes": 45, "failures": 3, "finished_comparisons": 48, "calls_sent": 90},
        {},
        MORE,
    ),
    (
        "failure wins over stability",
        {"successes": 30, "failures": 18, "max_score_change": 0.0},
        {},
        FAIL,
    ),
    (
        "failure wins over budget",
        {"successes": 30, "failures": 18, "calls_sent": 300},
        {},
        FAIL,
    ),
    # ---- 2. stability
    ("stable", {"max_score_change": 0.01}, {}, fin(StopReason.STABILITY)),
    ("change equal to threshold is not stable", {"max_score_change": 0.05}, {}, MORE),
    ("no second fit yet", {"max_score_change": None}, {}, MORE),
    (
        "too few successes for stability",
        {"successes": 11, "finished_comparisons": 11, "calls_sent": 11, "max_score_change": 0.0},
        {},
        MORE,
    ),
    (
        "exactly the minimum of successes",
        {"successes": 12, "finished_comparisons": 12, "calls_sent": 12, "max_score_change": 0.0},
        {},
        fin(StopReason.STABILITY),
    ),
    (
        "threshold 0 switches stability off",
        {"max_score_change": 0.0},
        {"score_stability_threshold": 0.0},
        MORE,
    ),
    (
        "stability wins over budget",
        {"max_score_change": 0.01, "calls_sent": 300},
        {},
        fin(StopReason.STABILITY),
    ),
    (
        "stability wins over the statistical targets",
        {"max_score_change": 0.01, "robust_reliability": 0.95, "max_se": 0.1, "cost_usd": 9.0},
        {"target_reliability": 0.8, "target_max_se": 0.2, "max_cost_usd": 1.0},
        fin(StopReason.STABILITY),
    ),
    # ---- 3. target reliability: the lower bound estimate - z * SD (here z = 2)
    (
        "target reliability reached",
        {"robust_reliability": 0.87, "robust_reliability_sd": 0.03},
        {"target_reliability": 0.8, "target_reliability_z": 2.0},
        fin(StopReason.TARGET_RELIABILITY),
    ),
    (
        "target reliability reached exactly (bound 0.875 - 2 * 0.0375 = 0.8)",
        {"robust_reliability": 0.875, "robust_reliability_sd": 0.0375},
        {"target_reliability": 0.8, "target_reliability_z": 2.0},
        fin(StopReason.TARGET_RELIABILITY),
    ),
    (
        "the estimate reaches the target, its lower bound does not",
        {"robust_reliability": 0.85, "robust_reliability_sd": 0.03},
        {"target_reliability": 0.8, "target_reliability_z": 2.0},
        MORE,
    ),
    (
        "the estimate alone with z = 0 (the rule before)",
        {"robust_reliability": 0.81, "robust_reliability_sd": 0.03},
        {"target_reliability": 0.8, "target_reliability_z": 0.0},
        fin(StopReason.TARGET_RELIABILITY),
    ),
    (
        "target reliability not reached",
        {"robust_reliability": 0.79, "robust_reliability_sd": 0.0},
        {"target_reliability": 0.8, "target_reliability_z": 2.0},
        MORE,
    ),
    (
        "target reliability without an estimate",
        {"robust_reliability": None, "robust_reliability_sd": 0.01},
        {"target_reliability": 0.8, "target_reliability_z": 2.0},
        MORE,
    ),
    (
        "target reliability without its SD: no bound, no stop",
        {"robust_reliability": 0.99, "robust_reliability_sd": None},
        {"target_reliability": 0.8, "target_reliability_z": 2.0},
        MORE,
    ),
    (
        "target reliability off",
        {"robust_reliability": 0.99, "robust_reliability_sd": 0.0},
        {},
        MORE,
    ),
    (
        "target reliability needs the minimum of successes",
        {
            "successes": 5,
            "finished_comparisons": 5,
            "calls_sent": 5,
            "robust_reliability": 0.9,
            "robust_reliability_sd": 0.01,
        },
        {"target_reliability": 0.8, "target_reliability_z": 2.0},
        MORE,
    ),
    (
        "reliability before max se",
        {"robust_reliability": 0.9, "robust_reliability_sd": 0.01, "max_se": 0.1},
        {"target_reliability": 0.8, "target_reliability_z": 2.0, "target_max_se": 0.2},
        fin(StopReason.TARGET_RELIABILITY),
    ),
    # ---- 4. target max se
    ("max se reached", {"max_se": 0.2}, {"target_max_se": 0.2}, fin(StopReason.TARGET_MAX_SE)),
    ("max se not reached", {"max_se": 0.21}, {"target_max_se": 0.2}, MORE),
    ("max se without an estimate", {"max_se": None}, {"target_max_se": 0.2}, MORE),
    ("max se off", {"max_se": 0.01}, {}, MORE),
    (
        "max se needs the minimum of successes",
        {"successes": 5, "finished_comparisons": 5, "calls_sent": 5, "max_se": 0.1},
        {"target_max_se": 0.2},
        MORE,
    ),
    (
        "max se before cost",
        {"max_se": 0.1, "cost_usd": 5.0},
        {"target_max_se": 0.2, "max_cost_usd": 1.0},
        fin(StopReason.TARGET_MAX_SE),
    ),
    # ---- 5. money budget
    ("cost reached", {"cost_usd": 1.0}, {"max_cost_usd": 1.0}, fin(StopReason.MAX_COST)),
    ("cost below", {"cost_usd": 0.99}, {"max_cost_usd": 1.0}, MORE),
    ("cost off", {"cost_usd": 1e6}, {}, MORE),
    (
        "cost applies even below the stability minimum",
        {"successes": 5, "finished_comparisons": 5, "calls_sent": 5, "cost_usd": 2.0},
        {"max_cost_usd": 1.0},
        fin(StopReason.MAX_COST),
    ),
    (
        "cost before call budget",
        {"cost_usd": 2.0, "calls_sent": 300},
        {"max_cost_usd": 1.0},
        fin(StopReason.MAX_COST),
    ),
    # ---- 6. call budget
    ("budget reached", {"calls_sent": 300}, {}, fin(StopReason.BUDGET)),
    ("budget exceeded", {"calls_sent": 305}, {}, fin(StopReason.BUDGET)),
    ("one call left", {"calls_sent": 299}, {}, MORE),
    (
        "budget before iterations",
        {"calls_sent": 300, "waves_completed": 50},
        {},
        fin(StopReason.BUDGET),
    ),
    (
        "budget before resampling",
        {**COVERED, "calls_sent": 300, "pass_in_progress": True},
        {},
        fin(StopReason.BUDGET),
    ),
    # ---- 7. iterations
    ("iterations reached", {"waves_completed": 50}, {}, fin(StopReason.ITERATIONS)),
    ("iterations below", {"waves_completed": 49}, {}, MORE),
    (
        "iterations before coverage",
        {"waves_completed": 50, "successful_pairs_count": 10},
        {},
        fin(StopReason.ITERATIONS),
    ),
    (
        "iterations before a pass in progress",
        {**COVERED, "waves_completed": 60, "pass_in_progress": True},
        {},
        fin(StopReason.ITERATIONS),
    ),
    # ---- 8. coverage
    ("one edge left", {"successful_pairs_count": 275}, {}, MORE),
    (
        "coverage before resampling even with a pass flag",
        {"successful_pairs_count": 275, "pass_in_progress": True},
        {},
        MORE,
    ),
    # ---- 9. resampling
    ("coverage complete: first pass starts", COVERED, {}, NEW_PASS),
    (
        "pass in progress continues",
        {**COVERED, "resampling_pass_count": 1, "pass_in_progress": True},
        {},
        CONTINUE_PASS,
    ),
    (
        "pass in progress continues even at the cap",
        {**COVERED, "resampling_pass_count": 5, "pass_in_progress": True},
        {},
        CONTINUE_PASS,
    ),
    (
        "small net gets its own cap: second pass starts",
        {**COVERED, "is_small_net": True, "resampling_pass_count": 1},
        {},
        NEW_PASS,
    ),
    # ---- 10. resampling cap
    (
        "regular cap reached",
        {**COVERED, "resampling_pass_count": 1},
        {},
        fin(StopReason.RESAMPLING_CAP),
    ),
    (
        "small net cap reached",
        {**COVERED, "is_small_net": True, "resampling_pass_count": 2},
        {},
        fin(StopReason.RESAMPLING_CAP),
    ),
    (
        "no resampling at all",
        COVERED,
        {"max_passes_regular": 0, "max_passes_small_net": 0},
        fin(StopReason.RESAMPLING_CAP),
    ),
    (
        "regular cap does not apply to a small net",
        {**COVERED, "is_small_net": True, "resampling_pass_count": 1},
        {"max_passes_regular": 0},
        NEW_PASS,
    ),
    (
        "small cap does not apply to a regular batch",
        {**COVERED, "resampling_pass_count": 0},
        {"max_passes_small_net": 0},
        NEW_PASS,
    ),
    (
        "a single node: nothing to cover, nothing to resample",
        {"max_possible_pairs": 0, "successful_pairs_count": 0},
        {"max_passes_regular": 0},
        fin(StopReason.RESAMPLING_CAP),
    ),
]


@pytest.mark.parametrize(
    ("ctx_changes", "limit_changes", "expected"), [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
def test_decide_table(
    ctx_changes: dict[str, Any], limit_changes: dict[str, Any], expected: Decision
) -> None:
    ctx = replace(BASE, **ctx_changes)
    limits = replace(LIMITS, **limit_changes)
    assert decide(ctx, limits) == expected


def test_every_reason_from_decide_is_in_the_table() -> None:
    reasons = {c[3].reason for c in CASES}
    produced_elsewhere = {
        StopReason.EXHAUSTED,
        StopReason.INTERRUPTED,
        StopReason.JUDGE_UNAVAILABLE,  # the executor, on a fatal judge error
        StopReason.FINALIZED_EARLY,  # cj-run finalize
        StopReason.SCORING_ERROR,  # the executor, when a fit raises
    }
    assert reasons | produced_elsewhere == set(StopReason)
    assert {c[3].action for c in CASES} == set(Action)


def test_exhausted_and_is_final() -> None:
    assert exhausted() == fin(StopReason.EXHAUSTED)
    assert exhausted().is_final
    assert FAIL.is_final
    assert not MORE.is_final
    assert not NEW_PASS.is_final


def test_reason_values_are_the_stored_strings() -> None:
    assert StopReason.RESAMPLING_CAP.value == "resampling_cap"
    assert str(StopReason.SUCCESS_RATE) == "success_rate"
    assert [r.value for r in StopReason] == [
        "success_rate",
        "stability",
        "budget",
        "iterations",
        "coverage",
        "resampling",
        "resampling_cap",
        "exhausted",
        "target_reliability",
        "target_max_se",
        "max_cost",
        "interrupted",
        "judge_unavailable",
        "finalized_early",
        "scoring_error",
    ]


@given(
    finished=st.integers(0, 400),
    fail_share=st.floats(0, 1),
    extra_calls=st.integers(0, 100),
    budget=st.integers(1, 600),
    waves=st.integers(0, 80),
    nodes=st.integers(2, 40),
    covered_share=st.floats(0, 1),
    small=st.booleans(),
    passes=st.integers(0, 4),
    in_progress=st.booleans(),
    change=st.none() | st.floats(0, 2),
)
def test_decide_properties(
    finished: int,
    fail_share: float,
    extra_calls: int,
    budget: int,
    waves: int,
    nodes: int,
    covered_share: float,
    small: bool,
    passes: int,
    in_progress: bool,
    change: float | None,
) -> None:
    failures = int(finished * fail_share)
    successes = finished - failures
    total = nodes * (nodes - 1) // 2
    ctx = ContinuationContext(
        finished_comparisons=finished,
        successes=successes,
        failures=failures,
        calls_sent=finished + extra_calls,
        total_budget=budget,
        waves_completed=waves,
        max_possible_pairs=total,
        successful_pairs_count=int(total * covered_share),
        is_small_net=small,
        resampling_pass_count=passes,
        pass_in_progress=in_progress,
        max_score_change=change,
    )
    d = decide(ctx, LIMITS)
    # the budget is a hard limit: never ask for more once it is spent
    if ctx.calls_sent >= budget or waves >= LIMITS.max_iterations:
        assert d.is_final
    if d.action is Action.FINALIZE_FAILURE:
        assert successes == 0 or successes / max(finished, 1) < LIMITS.min_success_rate
    if d.action is Action.REQUEST_MORE_COMPARISONS:
        assert ctx.successful_pairs_count < total
    if d.action is Action.RESAMPLE:
        assert ctx.successful_pairs_count == total
        cap = LIMITS.max_passes_small_net if small else LIMITS.max_passes_regular
        assert d.starts_new_pass == (not in_progress)
        assert in_progress or passes < cap
    # pure: same input, same output
    assert decide(ctx, LIMITS) == d


_UNIT = st.floats(0, 1, allow_nan=False)
_SD = st.floats(0, 0.5, allow_nan=False)
_Z = st.floats(0, 4, allow_nan=False)


@given(value=_UNIT, sd=_SD, target=_UNIT, z=_Z)
def test_the_reliability_stop_is_its_lower_bound_against_the_target(
    value: float, sd: float, target: float, z: float
) -> None:
    """The stop applies exactly when ``value - z * sd >= target``: never when the bound
    is below the target, whatever the estimate."""
    ctx = replace(BASE, robust_reliability=value, robust_reliability_sd=sd)
    limits = replace(LIMITS, target_reliability=target, target_reliability_z=z)
    bound = reliability_lower_bound(value, sd, z)
    assert bound is not None and bound <= value
    stopped = decide(ctx, limits).reason == StopReason.TARGET_RELIABILITY
    assert stopped == (value - z * sd >= target) == reliability_target_met(value, sd, target, z)
    if bound < target:
        assert not stopped


@given(value=_UNIT, sd=_SD, target=_UNIT, z=_Z, more_z=_Z, less_sd=_SD, more_value=_UNIT)
def test_the_reliability_stop_is_monotone(
    value: float,
    sd: float,
    target: float,
    z: float,
    more_z: float,
    less_sd: float,
    more_value: float,
) -> None:
    """A stricter rule (larger z) never stops where a looser one does not; a smaller SD,
    a larger estimate or a lower target never turns a stop into no stop; z = 0 is the
    estimate against the target (the rule before the bound)."""
    met = reliability_target_met(value, sd, target, z)
    if reliability_target_met(value, sd, target, z + more_z):
        assert met
    if met:
        assert reliability_target_met(value, min(sd, less_sd), target, z)
        assert reliability_target_met(max(value, more_value), sd, target, z)
        assert reliability_target_met(value, sd, target * 0.9, z)
    assert reliability_target_met(value, sd, target, 0.0) == (value >= target)
    assert reliability_target_met(value, None, target, 0.0) == (value >= target)
    assert not reliability_target_met(None, sd, target, z)
    if z > 0:
        assert not reliability_target_met(value, None, target, z)


def test_the_default_z_is_the_products() -> None:
    assert LIMITS.target_reliability_z == TARGET_RELIABILITY_Z > 0
