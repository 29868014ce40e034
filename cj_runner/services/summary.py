"""The one-screen summary of a batch, built from the store (used by `execute`, `resume`
and `cj-report summary`)."""

from __future__ import annotations

from collections import Counter
from typing import Any

from cj_runner.core.fairness import fairness_metrics
from cj_runner.core.models import Mode, Outcome
from cj_runner.core.posterior import LEGACY_INTERVAL_LABEL
from cj_runner.services.stop_check import STOP_CHECK_KEY, stop_detail
from cj_runner.storage import Store
from cj_runner.storage import repository as repo
from cj_runner.storage.provider_jobs import job_summary

TOP_N = 5


SummaryInputs = tuple[
    repo.BatchRecord,
    list[repo.NodeRecord],
    list[dict[str, Any]],
    list[dict[str, Any]],
    list[Outcome],
]
"""What :func:`build_summary` reads: batch, nodes, attempts, projections, outcomes."""


def outcomes_from_attempts(attempts: list[dict[str, Any]]) -> list[Outcome]:
    """The successful comparisons among stored attempts, in slot order."""
    return [
        Outcome(
            a=r["a_idx"], b=r["b_idx"], winner=r["winner"], mode=Mode(r["mode"]), wave=r["wave"]
        )
        for r in attempts
        if r["status"] == "success"
    ]


def _cache_sources(attempts: list[dict[str, Any]]) -> dict[str, int]:
    """How many answers came from the cache, by the batch that paid for them (most first;
    ``"unknown"`` for answers cached before the source was recorded)."""
    sources = Counter(
        r["cache_source"] or "unknown" for r in attempts if r["status"] == "success" and r["cached"]
    )
    return dict(sorted(sources.items(), key=lambda item: (-item[1], item[0])))


def unknown_cost_calls(attempts: list[dict[str, Any]]) -> int:
    """Calls sent whose answer never came (``lost``: in flight at a crash or a stop, or
    waiting in a provider job when the batch was finalized), with no tokens reported: the
    provider may have billed them, so their cost is unknown. A call of a provider job
    that was never submitted (``not_submitted``) was not sent and is not counted."""
    return sum(
        1
        for r in attempts
        if r["status"] == "lost"
        and r["error_kind"] != "not_submitted"
        and r["tokens_in"] is None
        and r["tokens_out"] is None
    )


def cost_note(cost_usd: float, unknown: int) -> str | None:
    """What the cost shown is when some calls' cost is unknown (``None`` when none is)."""
    if not unknown:
        return None
    calls = "call" if unknown == 1 else "calls"
    return (
        f"cost ≥ ${cost_usd:.4f}: {unknown} {calls} with unknown cost (sent, answer never "
        "received; the provider may have billed them)"
    )


def is_provisional(status: str, nodes: list[repo.NodeRecord]) -> bool:
    """Scores of a batch that did not finish (interrupted, or crashed while running) are
    provisional: they come from the comparisons so far and will change on resume."""
    return status not in ("COMPLETED", "FAILED") and any(x.score is not None for x in nodes)


def spread_fields(extra: dict[str, Any]) -> dict[str, Any]:
    """The spread ``tau`` of the posterior whose scores and intervals the reports show, its
    95% interval and what it is (:attr:`cj_runner.core.posterior.ScorePosterior.tau`);
    ``None`` for a batch not scored, or scored before reports showed it."""
    post = extra.get("posterior") or {}
    return {
        "tau": post.get("tau"),
        "tau_ci95_low": post.get("tau_low"),
        "tau_ci95_high": post.get("tau_high"),
        "tau_label": post.get("tau_label"),
    }


def _duration_s(batch: repo.BatchRecord) -> float | None:
    if batch.finished_at is None:
        return None
    return round((batch.finished_at - batch.created_at).total_seconds(), 3)


async def build_summary(
    store: Store, batch_ref: str, loaded: SummaryInputs | None = None
) -> dict[str, Any]:
    """The summary object printed by ``execute --json`` and ``cj-report summary``.

    ``loaded`` (batch, nodes, attempts, projections, outcomes) saves loading them again
    when the caller already has them (the HTML report)."""
    if loaded is None:
        batch = await repo.find_batch(store, batch_ref)
        nodes = await repo.load_nodes(store, batch.id)
        attempts = await repo.load_attempts(store, batch.id)
        projections = await repo.load_projections(store, batch.id)
        outcomes = outcomes_from_attempts(attempts)
    else:
        batch, nodes, attempts, projections, outcomes = loaded
    state = batch.state
    extra = dict(state.get("extra_json") or {})
    fairness = fairness_metrics(len(nodes), outcomes)
    successes = sum(1 for r in attempts if r["status"] == "success")
    failures = sum(1 for r in attempts if r["status"] == "failed")
    finished = successes + failures
    failure_kinds = Counter(
        r["error_kind"] for r in attempts if r["status"] in ("failed", "retried", "lost")
    )
    ranked = sorted(
        (n for n in nodes if n.score is not None), key=lambda n: n.score or 0.0, reverse=True
    )
    by_idx = {n.idx: n for n in nodes}
    grade_counts = Counter(p["projected_grade"] for p in projections if p["projected_grade"])
    projection_info = extra.get("projection") or {}
    plan = batch.plan
    provider_jobs = await job_summary(store, batch.id) if batch.judge.get("batch") else {}
    return {
        "batch_id": batch.id,
        "batch_name": batch.name,
        "status": batch.status,
        "stop_reason": batch.stop_reason,
        "stop_detail": stop_detail(extra.get(STOP_CHECK_KEY)),
        "judge_error": extra.get("judge_error"),
        "provisional": is_provisional(batch.status, nodes),
        "seed": batch.seed,
        "judge": batch.judge_name,
        "model": batch.judge.get("model"),
        "students": sum(1 for n in nodes if not n.is_anchor),
        "anchors": sum(1 for n in nodes if n.is_anchor),
        "total_budget": state["total_budget"],
        "calls_sent": state["calls_sent"],
        "successful_comparisons": successes,
        "failed_comparisons": failures,
        "success_rate": round(successes / finished, 6) if finished else None,
        "attempt_errors": dict(sorted(failure_kinds.items())),
        "cache_hits": sum(1 for r in attempts if r["status"] == "success" and r["cached"]),
        "cache_sources": _cache_sources(attempts),
        "waves": state["iteration"],
        "resampling_pass_count": state["resampling_pass_count"],
        "max_possible_pairs": state["max_possible_pairs"],
        "successful_pairs_count": state["successful_pairs_count"],
        "unique_coverage_complete": bool(state["unique_coverage_complete"]),
        "interval": extra.get("interval") or (LEGACY_INTERVAL_LABEL if ranked else None),
        **spread_fields(extra),
        "ssr": state.get("ssr"),
        "ssr_note": extra.get("ssr_note"),
        "robust_reliability": (extra.get("robust_reliability") or {}).get("value"),
        "robust_reliability_sd": (extra.get("robust_reliability") or {}).get("posterior_sd"),
        "robust_reliability_method": (extra.get("robust_reliability") or {}).get("method"),
        "reliability_warning": extra.get("reliability_warning"),
        "error": extra.get("error"),
        "order_effect": state.get("order_effect"),
        "order_effect_se": state.get("order_effect_se"),
        "position_a_share": extra.get("position_a_share"),
        "judge_health": extra.get("judge_health"),
        "judge_signal": (extra.get("judge_health") or {}).get("signal"),
        "max_skew": fairness.max_skew,
        "mean_skew": fairness.mean_skew,
        "tokens_in": state["tokens_in"],
        "tokens_out": state["tokens_out"],
        "tokens_cached": sum(int(r.get("tokens_cached") or 0) for r in attempts if not r["cached"]),
        "cost_usd": round(float(state["cost_usd"] or 0.0), 6),
        "unknown_cost_calls": unknown_cost_calls(attempts),
        "cost_note": cost_note(float(state["cost_usd"] or 0.0), unknown_cost_calls(attempts)),
        **_batch_api_cost(batch.judge, float(state["cost_usd"] or 0.0), provider_jobs),
        "estimated_cost_usd": plan.get("estimated_cost_usd"),
        "estimated_input_tokens": plan.get("estimated_input_tokens"),
        "estimated_output_tokens": plan.get("estimated_output_tokens"),
        "duration_s": _duration_s(batch),
        "top": [
            {
                "rank": rank,
                "essay_id": n.essay_id,
                "score": n.score,
                "se": n.se,
                "is_anchor": n.is_anchor,
                "known_grade": n.known_grade,
            }
            for rank, n in enumerate(ranked[:TOP_N], start=1)
        ],
        "grades": {
            "deferred_reason": projection_info.get("deferred_reason"),
            "distribution": dict(sorted(grade_counts.items())),
            "warnings": projection_info.get("warnings", []),
            "projected": len(grade_counts) > 0,
        },
        "never_in_a": [by_idx[i].essay_id for i in fairness.never_in_a],
        "never_in_b": [by_idx[i].essay_id for i in fairness.never_in_b],
    }


def _batch_api_cost(judge: dict[str, Any], cost_usd: float, jobs: dict[str, int]) -> dict[str, Any]:
    """Batch-API mode: what the same answers would have cost synchronously and what the
    batch discount saved (nothing for a synchronous batch)."""
    if not judge.get("batch"):
        return {}
    factor = 1.0 - float(judge.get("batch_discount") or 0.0)
    sync = cost_usd / factor if factor > 0 else cost_usd
    return {
        "batch_api": True,
        "provider_jobs": sum(jobs.values()),
        "sync_cost_usd": round(sync, 6),
        "saved_usd": round(sync - cost_usd, 6),
    }
