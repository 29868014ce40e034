"""Final scoring of a batch: fit with SEs and order effect, reliability, misfit, grades."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

import numpy as np
from numpy.typing import ArrayLike

from cj_runner.config import Settings
from cj_runner.core.bt import BTFit, fit_bt
from cj_runner.core.continuation import StopReason
from cj_runner.core.coverage import connected_components
from cj_runner.core.fairness import fairness_metrics
from cj_runner.core.health import JudgeHealth, judge_health, null_likelihood_ratio_p
from cj_runner.core.models import GradeScale, Mode, Outcome, edge
from cj_runner.core.posterior import (
    INTERVAL_LABEL,
    MLE_INTERVAL_LABEL,
    ScorePosterior,
    score_posterior,
)
from cj_runner.core.projection import ProjectionResult, project_grades
from cj_runner.core.reliability import (
    MISFIT_MIN_COMPARISONS,
    MISFIT_Z_THRESHOLD,
    position_a_win_share,
    scale_separation_reliability,
    standardized_fit,
)
from cj_runner.core.robust import DENSE_MAX_N, robust_reliability
from cj_runner.core.workflow import WorkflowState
from cj_runner.storage import Store
from cj_runner.storage import repository as repo
from cj_runner.storage.scores_codec import SCORES_KEY


def _finite(value: float | None) -> float | None:
    if value is None:
        return None
    value = float(value)
    return value if np.isfinite(value) else None


def final_fit(
    n: int,
    first: ArrayLike,
    second: ArrayLike,
    first_won: ArrayLike,
    settings: Settings,
    init: np.ndarray | None = None,
) -> BTFit:
    """The batch's final Bradley-Terry fit (with SEs; order effect when set and estimable)."""
    f = np.asarray(first, dtype=np.int64)
    s = np.asarray(second, dtype=np.int64)
    w = np.asarray(first_won, dtype=bool)
    # the order effect is only identified when A and B positions vary across nodes
    order = bool(settings.FIT_ORDER_EFFECT and len(f) >= 2)
    return fit_bt(
        n,
        f,
        s,
        w,
        order_effect=order,
        prior_precision=settings.BT_PRIOR_PRECISION,
        init=init,
        compute_se=True,
        # exact SEs need the dense n x n inverse: up to DENSE_MAX_N nodes (the sparse
        # approximation above is within 0.1% on average, docs/statistics.md)
        exact_se=n <= DENSE_MAX_N,
    )


def final_posterior(
    n: int,
    first: ArrayLike,
    second: ArrayLike,
    first_won: ArrayLike,
    settings: Settings,
    seed: int = 0,
) -> ScorePosterior:
    """The scores and intervals users are shown: the hierarchical posterior
    (:mod:`cj_runner.core.posterior`, seeded), order effect as in :func:`final_fit`."""
    f = np.asarray(first, dtype=np.int64)
    order = bool(settings.FIT_ORDER_EFFECT and len(f) >= 2)
    return score_posterior(n, f, second, first_won, order_effect=order, seed=seed)


SSR_INFLATED_NOTE = (
    "SSR of the maximum likelihood scores: pairing on current scores ({strategy}) inflates it"
)


def ssr_note(settings: Settings) -> str | None:
    """Why SSR overstates the reliability under this design, or ``None`` (random pairs)."""
    strategy = str(settings.MATCHING_STRATEGY)
    return None if strategy == "random" else SSR_INFLATED_NOTE.format(strategy=strategy)


def anchors_connected(n: int, edges: Sequence[tuple[int, int]], is_anchor: Sequence[bool]) -> bool:
    """Whether every student shares a connected component with at least one anchor."""
    anchor_set = {i for i, a in enumerate(is_anchor) if a}
    for component in connected_components(n, edges):
        members = set(component)
        has_student = any(not is_anchor[i] for i in members)
        if has_student and not (members & anchor_set):
            return False
    return True


def projection_for(
    fit: ScorePosterior,
    nodes: Sequence[repo.NodeRecord],
    edges: Sequence[tuple[int, int]],
    scale: GradeScale,
    seed: int = 0,
) -> ProjectionResult:
    """Grade projection of the students from the anchors of this batch, with the joint
    uncertainty of anchors and students (posterior covariance, seeded Monte Carlo)."""
    is_anchor = [n.is_anchor for n in nodes]
    anchors = [n.idx for n in nodes if n.is_anchor]
    # Without a covariance (large batches) the variances stand for the diagonal one: rule 3a
    # reads them without forming an n x n matrix (800 MB at 10,000 nodes).
    covariance = fit.covariance if fit.covariance is not None else np.square(fit.se)
    return project_grades(
        fit.scores,
        fit.se,
        anchor_nodes=anchors,
        anchor_grades=[str(nodes[i].known_grade) for i in anchors],
        student_nodes=[n.idx for n in nodes if not n.is_anchor],
        scale=scale,
        connected=anchors_connected(len(nodes), edges, is_anchor),
        covariance=covariance,
        seed=seed,
        labels=[n.essay_id for n in nodes],
    )


NO_SIGNAL_DEFERRAL = "the judge carries no usable signal"


def batch_judge_health(
    n: int,
    first: ArrayLike,
    second: ArrayLike,
    first_won: ArrayLike,
    modes: Sequence[str],
    fit: BTFit,
    robust_value: float | None,
) -> JudgeHealth:
    """The judge-health verdict of a batch's successful comparisons and final fit."""
    f = np.asarray(first, dtype=np.int64)
    s = np.asarray(second, dtype=np.int64)
    w = np.asarray(first_won, dtype=bool)
    outcomes = [
        Outcome(a=int(a), b=int(b), winner="A" if won else "B", mode=Mode(mode), wave=0)
        for a, b, won, mode in zip(f, s, w, modes, strict=True)
    ]
    metrics = fairness_metrics(n, outcomes)
    edges = sorted({edge(int(a), int(b)) for a, b in zip(f, s, strict=True)})
    df = sum(len(c) - 1 for c in connected_components(n, edges))
    p_value = null_likelihood_ratio_p(fit.log_likelihood, int(w.sum()), int(w.size), df)
    return judge_health(
        position_a_wins=int(w.sum()),
        comparisons=int(w.size),
        flip_rate=metrics.flip_rate,
        flip_edges=metrics.flip_edges,
        null_p_value=p_value,
        robust_reliability=robust_value,
    )


def _no_signal_projection(
    nodes: Sequence[repo.NodeRecord], health: JudgeHealth
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Grades deferred because the judge carries no signal: the reason, one row a student."""
    reason = f"{NO_SIGNAL_DEFERRAL}: " + "; ".join(health.reasons)
    info = {"deferred_reason": reason, "boundaries": {}, "warnings": [], "anchors": []}
    rows: list[dict[str, Any]] = [
        {
            "node_idx": node.idx,
            "projected_grade": None,
            "confidence": None,
            "expected_index": None,
            "probabilities": {},
            "deferred_reason": reason,
        }
        for node in nodes
        if not node.is_anchor
    ]
    return info, rows


ROBUST_WARNING_MARGIN = 0.05
"""Warn when SSR exceeds the design-robust reliability by more than this."""


def _robust(
    n: int,
    nodes: Sequence[repo.NodeRecord],
    workflow: WorkflowState,
    settings: Settings,
    first: ArrayLike,
    second: ArrayLike,
    first_won: ArrayLike,
    ssr: float | None,
) -> dict[str, Any]:
    """The design-robust reliability of the students' scores, and the SSR warning."""
    students = [node.idx for node in nodes if not node.is_anchor]
    robust = robust_reliability(
        n,
        first,
        second,
        first_won,
        modes=workflow.comparison_modes(),
        seed=workflow.seed,
        prior_precision=settings.BT_PRIOR_PRECISION,
        nodes=students,
        strategy=settings.MATCHING_STRATEGY,
    )
    value = _finite(robust.value)
    out: dict[str, Any] = {
        "robust_reliability": {
            "value": value,
            "method": robust.method,
            "posterior_sd": _finite(robust.detail.get("posterior_sd")),
            "audit_comparisons": int(robust.detail.get("audit_n", 0)),
        },
        "ssr_note": ssr_note(settings),
    }
    if value is not None and ssr is not None and ssr - value > ROBUST_WARNING_MARGIN:
        out["reliability_warning"] = (
            f"SSR {ssr:.2f} exceeds the design-robust reliability {value:.2f} by more than "
            f"{ROBUST_WARNING_MARGIN}: adaptive pairing inflates SSR; trust the robust figure"
        )
    return out


async def fail_scoring(
    store: Store, batch_id: str, message: str, state_values: dict[str, Any]
) -> None:
    """Mark the batch FAILED because scoring raised (stop reason ``scoring_error``), with
    the error stored in the state (``extra_json.error``): it never stays RUNNING."""
    batch = await repo.find_batch(store, batch_id)
    extra = dict(batch.state.get("extra_json") or {})
    extra["error"] = message
    await repo.save_final(
        store,
        batch_id,
        status="FAILED",
        stop_reason=StopReason.SCORING_ERROR.value,
        state={**state_values, "extra_json": extra},
        nodes=[],
        projections=[],
    )


async def finalize_batch(
    store: Store,
    batch_id: str,
    *,
    nodes: Sequence[repo.NodeRecord],
    workflow: WorkflowState,
    settings: Settings,
    grade_scale: GradeScale | None,
    status: str,
    stop_reason: str,
    state_values: dict[str, Any],
    provisional: bool = False,
) -> None:
    """Fit, score, project and store the batch's final state in one transaction.

    With ``provisional`` (an interrupted batch) the same results are stored from the
    comparisons so far, marked ``provisional``, and the workflow's own scores
    (``extra_json.scores``, what a resume continues from) are left as they were.

    The scoring (:func:`final_results`: the Gibbs posterior, the grade Monte Carlo, the
    robust reliability) runs in a worker thread, so the event loop keeps serving the
    lock's heartbeat on big batches instead of blocking until the scores are done.
    """
    state, node_values, projections = await asyncio.to_thread(
        final_results,
        nodes=nodes,
        workflow=workflow,
        settings=settings,
        grade_scale=grade_scale,
        status=status,
        state_values=state_values,
        provisional=provisional,
    )
    await repo.save_final(
        store,
        batch_id,
        status=status,
        stop_reason=stop_reason,
        state=state,
        nodes=node_values,
        projections=projections,
    )


def final_results(
    *,
    nodes: Sequence[repo.NodeRecord],
    workflow: WorkflowState,
    settings: Settings,
    grade_scale: GradeScale | None,
    status: str,
    state_values: dict[str, Any],
    provisional: bool = False,
) -> tuple[dict[str, Any], list[dict[str, Any]], list[dict[str, Any]]]:
    """The batch's final state, node rows and grade rows from its comparisons (no I/O:
    :func:`finalize_batch` runs it in a worker thread and stores what it returns)."""
    n = len(nodes)
    state_values = dict(state_values)
    first, second, first_won = workflow.comparison_arrays()
    a_counts, b_counts = workflow.a_counts, workflow.b_counts
    init = workflow.scores if workflow.have_fit else None
    extra = dict(state_values.pop("extra_json", {}))
    node_values: list[dict[str, Any]] = []
    projections: list[dict[str, Any]] = []
    state: dict[str, Any] = dict(state_values)
    if len(first) > 0:
        fit = final_fit(n, first, second, first_won, settings, init)
        assert fit.se is not None
        f = np.asarray(first, dtype=np.int64)
        s = np.asarray(second, dtype=np.int64)
        w = np.asarray(first_won, dtype=bool)
        misfit = standardized_fit(n, f, s, w, fit.scores, fit.order_effect or 0.0)
        infit, outfit = misfit.infit, misfit.outfit
        share = position_a_win_share(w)
        state["ssr"] = _finite(scale_separation_reliability(fit.scores, fit.se))
        extra.update(_robust(n, nodes, workflow, settings, first, second, first_won, state["ssr"]))
        health = batch_judge_health(
            n,
            first,
            second,
            first_won,
            workflow.comparison_modes(),
            fit,
            extra["robust_reliability"]["value"],
        )
        extra["judge_health"] = health.as_dict()
        post = final_posterior(n, f, s, w, settings, workflow.seed)
        state["order_effect"] = _finite(post.order_effect)
        state["order_effect_se"] = _finite(post.order_effect_se)
        extra.update(
            interval=INTERVAL_LABEL,
            mle={
                "label": MLE_INTERVAL_LABEL,
                "scores": [float(x) for x in fit.scores],
                "se": [float(x) for x in fit.se],
                "order_effect": _finite(fit.order_effect),
                "order_effect_se": _finite(fit.order_effect_se),
            },
            posterior={
                # the spread of the posterior whose scores and intervals reports show
                "tau": _finite(post.tau),
                "tau_low": _finite(post.tau_low),
                "tau_high": _finite(post.tau_high),
                "tau_label": post.tau_label,
                # the evidence's maximum (the Gibbs sampler's start up to 400 nodes)
                "evidence_tau": _finite(post.evidence_tau),
                "evidence_log_tau_se": _finite(post.evidence_log_tau_se),
            },
        )
        if provisional:
            extra["provisional"] = True
        else:
            extra.pop(SCORES_KEY, None)  # the running batch's scores (packed): replaced
            extra["scores"] = [float(x) for x in fit.scores]
        extra.update(
            log_likelihood=float(fit.log_likelihood),
            misfit={
                "statistic": "infit_zstd",
                "threshold": MISFIT_Z_THRESHOLD,
                "min_comparisons": MISFIT_MIN_COMPARISONS,
                "infit_z": [_finite(x) for x in misfit.infit_z],
                "outfit_z": [_finite(x) for x in misfit.outfit_z],
            },
            position_a_share={
                "share": share.share,
                "low": share.low,
                "high": share.high,
                "n": share.n,
            },
        )
        comps = (a_counts + b_counts).astype(int)
        for node in nodes:
            i = node.idx
            node_values.append(
                {
                    "idx": i,
                    "score": float(post.scores[i]),
                    "se": float(post.se[i]),
                    "comparison_count": int(comps[i]),
                    "a_count": int(a_counts[i]),
                    "b_count": int(b_counts[i]),
                    "infit": _finite(infit[i]),
                    "outfit": _finite(outfit[i]),
                }
            )
        edges = sorted({edge(a, b) for a, b in zip(first, second, strict=True)})
        has_anchors = grade_scale is not None and any(n.is_anchor for n in nodes)
        if has_anchors and status != "FAILED" and not health.signal:
            extra["projection"], projections = _no_signal_projection(nodes, health)
        elif has_anchors and grade_scale is not None and status != "FAILED":
            result = projection_for(post, nodes, edges, grade_scale, workflow.seed)
            extra["projection"] = {
                "method": (
                    "joint Monte Carlo over the posterior of anchors (in grade order) and students"
                ),
                "deferred_reason": result.deferred_reason,
                "boundaries": result.boundaries,
                "warnings": result.warnings,
                "anchors": [
                    {
                        "node": a.node,
                        "grade": a.grade,
                        "score": a.score,
                        "fitted_index": a.fitted_index,
                    }
                    for a in result.anchors
                ],
            }
            by_node = {p.node: p for p in result.students}
            for node in nodes:
                if node.is_anchor:
                    continue
                p = by_node.get(node.idx)
                projections.append(
                    {
                        "node_idx": node.idx,
                        "projected_grade": p.grade if p else None,
                        "confidence": p.confidence if p else None,
                        "expected_index": p.expected_index if p else None,
                        "probabilities": dict(p.probabilities) if p else {},
                        "deferred_reason": None if p else result.deferred_reason,
                    }
                )
    state["extra_json"] = extra
    return state, node_values, projections
