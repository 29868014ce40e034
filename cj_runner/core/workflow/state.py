"""The workflow state machine (:class:`WorkflowState`): ending a wave, deciding, moving
to the next mode; the default robust-reliability hook."""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np

from cj_runner.core import evidence
from cj_runner.core.bt import BTFit, max_score_change
from cj_runner.core.continuation import (
    Action,
    ContinuationContext,
    Decision,
    StopReason,
    decide,
)
from cj_runner.core.models import Mode, edge
from cj_runner.core.reliability import scale_separation_reliability
from cj_runner.core.robust import robust_reliability
from cj_runner.core.workflow.record import EXACT_WAVE_SE_MAX_N, RobustReliabilityFn
from cj_runner.core.workflow.selection import _WorkflowSelection


@dataclass(frozen=True)
class WaveEnd:
    """What ending a wave produced."""

    decision: Decision
    max_score_change: float | None
    ssr: float | None
    fit: BTFit | None
    successes: int
    robust_reliability: float | None = None
    robust_reliability_sd: float | None = None


@dataclass
class WorkflowState(_WorkflowSelection):
    """Everything the workflow knows about a batch between judge calls.

    Attributes:
        n_nodes: nodes in the batch (students and anchors).
        n_students: student essays (anchors excluded), for the small-net rule.
        total_budget: most calls the batch may send.
        limits: the continuation settings.
        wave_size: ``COMPARISONS_PER_STABILITY_CHECK_ITERATION``.
        strategy: the matching strategy name.
        seed: the batch seed; wave ``k`` uses ``default_rng([seed, k])`` so a resumed
            batch selects exactly what an uninterrupted one would.
        prior_precision: ridge of the Bradley-Terry fit.
        min_resampling_net_size: ``MIN_RESAMPLING_NET_SIZE``.
        audit_share: ``AUDIT_SHARE``, the share of each wave spent on audit pairs.
        check_share: ``MISFIT_CHECK_SHARE``, the share of each wave spent on check pairs
            (:mod:`cj_runner.core.misfit_checks`).
        anchor_grades: anchor node -> known grade index (0 = lowest), for
            ``grade_boundary``.
        n_grades: grades on the scale, for ``grade_boundary``.
        robust_reliability_fn: computes the design-robust reliability after every fit
            (the ``TARGET_RELIABILITY`` rule needs it); see :func:`robust_reliability_hook`.
        wave_modes: the mode of every pair of the last planned wave, in order.
        selection_scores: fixed scores that selection uses instead of the fit (the
            benchmark's oracle: pairing on the true qualities); ``None`` in real batches.
        order_effect: the per-wave fits (progress, stability, SSR) include the order
            effect, as the final fit does with ``FIT_ORDER_EFFECT``.
        n_judges: judges of a panel batch (1: one judge, no second asks).
        double_share: ``PANEL_DOUBLE_SHARE``, the share of each wave's pairs also asked
            of a second judge (panels only).
        wave_judges: the judge index of every pair of the last planned wave, in order
            (``None``: the panel's seeded choice; set for doubled pairs and their
            second asks).
        doubles_planned: pairs asked of two judges in the waves planned so far (they go
            round the pairs of judges in turn; a resumed batch counts its stored ones).
        anchor_weight: ``ANCHOR_WEIGHT``, the selection weight of every anchor (1: an
            anchor is chosen like a student; see :meth:`node_weight`).
    """

    # ------------------------------------------------------------------ decisions

    def context(
        self,
        max_change: float | None,
        robust: float | None = None,
        max_se: float | None = None,
        robust_sd: float | None = None,
    ) -> ContinuationContext:
        """The continuation context of spec §5 for the batch as it stands."""
        return ContinuationContext(
            finished_comparisons=self.successes + self.failures,
            successes=self.successes,
            failures=self.failures,
            calls_sent=self.calls_sent,
            total_budget=self.total_budget,
            waves_completed=self.waves_completed,
            max_possible_pairs=self.max_possible_pairs,
            successful_pairs_count=self.successful_pairs_count,
            is_small_net=self.is_small_net,
            resampling_pass_count=self.pass_count,
            pass_in_progress=bool(self.pass_remaining),
            max_score_change=max_change,
            robust_reliability=robust,
            robust_reliability_sd=robust_sd,
            max_se=max_se,
            cost_usd=self.cost_usd,
        )

    def end_wave(self, wave_no: int, asked: Iterable[tuple[int, int]]) -> WaveEnd:
        """Close wave ``wave_no``: refit, decide, start a pass or switch mode."""
        self.waves_completed = wave_no
        if self.mode == Mode.RESAMPLING:
            self.pass_remaining.difference_update(edge(a, b) for a, b in asked)
        fit: BTFit | None = None
        max_change: float | None = None
        ssr: float | None = None
        max_se: float | None = None
        robust: float | None = None
        robust_sd: float | None = None
        if self.successes:
            need_se = self.n_nodes <= EXACT_WAVE_SE_MAX_N or self.limits.target_max_se is not None
            fit = self.fit(
                compute_se=need_se,
                order_effect=self.order_effect and self.successes >= 2,
                tolerance=self._wave_tolerance(),
            )
            if self.have_fit:
                max_change = max_score_change(self.scores, fit.scores)
            self.scores = np.asarray(fit.scores, dtype=float)
            self.have_fit = True
            if fit.se is not None:
                value = scale_separation_reliability(fit.scores, fit.se)
                ssr = value if math.isfinite(value) else None
                max_se = float(np.max(fit.se))
            if self.robust_reliability_fn is not None:
                robust, robust_sd = self.robust_reliability_fn(self, fit)
        decision = decide(self.context(max_change, robust, max_se, robust_sd), self.limits)
        self.apply(decision)
        return WaveEnd(
            decision=decision,
            max_score_change=max_change,
            ssr=ssr,
            fit=fit,
            successes=self.successes - self._wave_start_successes,
            robust_reliability=robust,
            robust_reliability_sd=robust_sd,
        )

    def apply(self, decision: Decision) -> None:
        """Follow a decision: start a resampling pass, or set the next wave's mode."""
        if decision.action == Action.RESAMPLE:
            if decision.starts_new_pass:
                self.pass_count += 1
                self.pass_remaining = set(self.edges)
            self.mode = Mode.RESAMPLING
        elif decision.action == Action.REQUEST_MORE_COMPARISONS:
            self.mode = Mode.COVERAGE


def robust_reliability_hook(
    nodes: Sequence[int] | None = None, method: str = "posterior"
) -> RobustReliabilityFn:
    """A :data:`RobustReliabilityFn` for :attr:`WorkflowState.robust_reliability_fn`.

    It runs :func:`cj_runner.core.robust.robust_reliability` on the batch's successful
    comparisons (with their modes, the batch seed and the fit's ridge) over ``nodes``
    (e.g. the students; default all nodes), and returns its value and posterior SD
    (``posterior_sd``; ``None`` for ``split_half``, which has none).
    """
    subset = None if nodes is None else [int(i) for i in nodes]

    def hook(state: WorkflowState, fit: BTFit) -> tuple[float | None, float | None]:
        first, second, first_won = state.comparison_arrays()
        n = state.n_nodes
        result = robust_reliability(
            n,
            first,
            second,
            first_won,
            modes=state.comparison_modes(),
            seed=state.seed,
            prior_precision=state.prior_precision,
            nodes=subset,
            method=method,
            posterior=(
                state.posterior() if method == "posterior" and _shared(n, state.strategy) else None
            ),
            strategy=state.strategy,
        )
        return result.value, result.detail.get("posterior_sd")

    return hook


def _shared(n: int, strategy: str) -> bool:
    """Whether selection's empirical-Bayes posterior (:meth:`WorkflowState.posterior`)
    takes the evidence the robust reliability takes, so the reliability can reuse it:
    above :data:`cj_runner.core.evidence.SECOND_ORDER_MIN_N` nodes, where both carry the
    second-order term (below, selection keeps the plain evidence and the reliability
    fits its own)."""
    return (n > evidence.SECOND_ORDER_MIN_N) == evidence.reliability_second_order(n, strategy)


def exhausted_decision() -> Decision:
    """Stop: the chosen mode can produce no pair."""
    return Decision(Action.FINALIZE_SCORING, StopReason.EXHAUSTED)
