"""The convergence harness: the workflow's own selection, continuation and scoring on
synthetic nets, in memory, with a simulated judge (no database, no asyncio).

It drives :class:`cj_runner.core.workflow.WorkflowState` exactly as the executor does,
so what it shows about stop reasons, waves and accuracy holds for real batches with a
judge of the same accuracy.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import numpy as np
from scipy import stats

from cj_runner.config import Settings
from cj_runner.core.bt import BTFit
from cj_runner.core.continuation import Decision
from cj_runner.core.workflow import (
    RobustReliabilityFn,
    WaveEnd,
    WorkflowState,
    exhausted_decision,
)
from cj_runner.services.workflow_setup import workflow_from_settings


@dataclass(frozen=True)
class SimulatedJudge:
    """A judge with latent true scores: P(A wins) = sigmoid((t_a - t_b) / noise) + bias.

    ``bias`` is a probability shift towards position A (clipped to [0, 1]), as in the mock
    judge; ``error_rate`` is the chance that a comparison fails for good.
    """

    true_scores: np.ndarray
    noise: float = 1.0
    position_bias: float = 0.0
    error_rate: float = 0.0

    def p_a_wins(self, a: int, b: int) -> float:
        diff = float(self.true_scores[a] - self.true_scores[b])
        p = 1.0 / (1.0 + math.exp(-diff / self.noise)) if self.noise > 0 else float(diff > 0)
        return min(1.0, max(0.0, p + self.position_bias))

    def judge(self, a: int, b: int, rng: np.random.Generator) -> str | None:
        """``"A"``, ``"B"``, or ``None`` for a failed comparison."""
        if self.error_rate and rng.random() < self.error_rate:
            return None
        return "A" if rng.random() < self.p_a_wins(a, b) else "B"


@dataclass
class WaveRecord:
    """One wave of a harness run, with accuracy against the truth."""

    wave: int
    mode: str
    size: int
    comparisons: int
    calls: int
    max_score_change: float | None
    ssr: float | None
    spearman: float
    decision: str
    reason: str
    robust_reliability: float | None = None
    robust_reliability_sd: float | None = None


@dataclass
class HarnessResult:
    """A whole harness run."""

    stop_reason: str
    status: str
    waves: int
    comparisons: int
    calls_sent: int
    spearman: float
    kendall: float
    history: list[WaveRecord] = field(default_factory=list)
    final_fit: BTFit | None = None
    workflow: WorkflowState | None = None
    true_reliability: float = float("nan")
    robust_reliability: float | None = None


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman rank correlation (nan when undefined)."""
    if len(a) < 2 or np.ptp(a) == 0 or np.ptp(b) == 0:
        return float("nan")
    return float(stats.spearmanr(a, b).statistic)


def kendall(a: np.ndarray, b: np.ndarray) -> float:
    """Kendall's tau-b (nan when undefined)."""
    if len(a) < 2 or np.ptp(a) == 0 or np.ptp(b) == 0:
        return float("nan")
    return float(stats.kendalltau(a, b).statistic)


def run_harness(
    judge: SimulatedJudge,
    settings: Settings,
    *,
    total_budget: int | None = None,
    n_students: int | None = None,
    seed: int = 0,
    on_wave: Callable[[WorkflowState, WaveEnd], None] | None = None,
    workflow: WorkflowState | None = None,
    anchor_grades: Mapping[int, int] | None = None,
    n_grades: int = 0,
    robust_fn: RobustReliabilityFn | None = None,
    selection_scores: np.ndarray | None = None,
    cost_per_call_usd: float = 0.0,
) -> HarnessResult:
    """Run one synthetic batch to its stop.

    Args:
        judge: the simulated judge (its ``true_scores`` fix the number of nodes).
        settings: the CJ settings (strategy, wave size, caps, stopping rules...).
        total_budget: the call budget (default ``MAX_PAIRWISE_COMPARISONS``).
        n_students: students among the nodes, for the small-net rule (default: the nodes
            not in ``anchor_grades``, as in a real batch).
        seed: the batch seed (selection) and the judge's draws.
        on_wave: called after every wave (metrics collection).
        workflow: a pre-built state (the arguments below are then ignored).
        anchor_grades: anchor node -> grade index (``grade_boundary``); the other nodes
            are the students.
        n_grades: grades on the scale.
        robust_fn: the robust-reliability hook; by default, when ``TARGET_RELIABILITY``
            is set, :func:`robust_reliability_hook` over the students, as the executor.
        selection_scores: pair on these fixed scores instead of the fit (the oracle:
            ``judge.true_scores`` with the ``swiss`` strategy).
        cost_per_call_usd: money each call sent costs (for ``MAX_COST_USD``).

    Spearman, Kendall and the true reliability (squared Pearson correlation of the scores
    with the truth) are taken over the students.
    """
    n = len(judge.true_scores)
    anchors = dict(anchor_grades or {})
    students = np.array([i for i in range(n) if i not in anchors], dtype=np.intp)
    wf = workflow or workflow_from_settings(
        settings,
        n_nodes=n,
        seed=seed,
        total_budget=total_budget or settings.MAX_PAIRWISE_COMPARISONS,
        anchor_grades=anchors,
        n_grades=n_grades,
        n_students=n_students,
        robust_fn=robust_fn,
        selection_scores=selection_scores,
    )
    truth = np.asarray(judge.true_scores, dtype=float)[students]
    judge_rng = np.random.default_rng([seed, 0xC0FFEE])
    history: list[WaveRecord] = []
    decision: Decision | None = None
    key = 0
    while decision is None or not decision.is_final:
        pairs = wf.plan_wave()
        if not pairs:
            decision = exhausted_decision()
            break
        mode = wf.mode.value
        for pair, pair_mode in zip(pairs, wf.wave_modes, strict=True):
            if wf.calls_sent >= wf.total_budget:
                break
            wf.count_call()
            wf.cost_usd += cost_per_call_usd
            key += 1
            winner = judge.judge(pair.a, pair.b, judge_rng)
            if winner is None:
                wf.record_failure()
            else:
                wf.record_success(pair.a, pair.b, winner, pair_mode.value, key=key)
        end = wf.end_wave(wf.waves_completed + 1, [(p.a, p.b) for p in pairs])
        decision = end.decision
        history.append(
            WaveRecord(
                wave=wf.waves_completed,
                mode=mode,
                size=len(pairs),
                comparisons=wf.successes,
                calls=wf.calls_sent,
                max_score_change=end.max_score_change,
                ssr=end.ssr,
                spearman=spearman(wf.scores[students], truth),
                decision=end.decision.action.value,
                reason=end.decision.reason.value,
                robust_reliability=end.robust_reliability,
                robust_reliability_sd=end.robust_reliability_sd,
            )
        )
        if on_wave is not None:
            on_wave(wf, end)
    final = (
        wf.fit(compute_se=True, order_effect=wf.order_effect and wf.successes >= 2)
        if wf.successes
        else None
    )
    scores = np.asarray(final.scores if final is not None else wf.scores)[students]
    last_robust = next(
        (h.robust_reliability for h in reversed(history) if h.robust_reliability is not None),
        None,
    )
    return HarnessResult(
        stop_reason=decision.reason.value,
        status="FAILED" if decision.action.value == "FINALIZE_FAILURE" else "COMPLETED",
        waves=wf.waves_completed,
        comparisons=wf.successes,
        calls_sent=wf.calls_sent,
        spearman=spearman(scores, truth),
        kendall=kendall(scores, truth),
        history=history,
        final_fit=final,
        workflow=wf,
        true_reliability=true_reliability(scores, truth),
        robust_reliability=last_robust,
    )


def true_reliability(scores: np.ndarray, truth: np.ndarray) -> float:
    """Squared Pearson correlation of the scores with the truth (nan when undefined)."""
    if len(scores) < 2 or np.ptp(scores) == 0 or np.ptp(truth) == 0:
        return float("nan")
    return float(np.corrcoef(scores, truth)[0, 1] ** 2)


def latent_sd_for_accuracy(q: float, samples: int = 200_000, seed: int = 0) -> float:
    """The SD of normal latent scores for which a noise-1 logistic judge is right on a
    random pair with probability ``q`` (found by bisection on a Monte Carlo estimate)."""
    rng = np.random.default_rng(seed)
    z = rng.standard_normal(samples) * math.sqrt(2.0)  # difference of two N(0, 1)

    def accuracy(sd: float) -> float:
        d = np.abs(z * sd)
        return float(np.mean(1.0 / (1.0 + np.exp(-d))))

    lo, hi = 1e-3, 20.0
    for _ in range(60):
        mid = (lo + hi) / 2
        if accuracy(mid) < q:
            lo = mid
        else:
            hi = mid
    return (lo + hi) / 2
