"""The reports on the comparison design: fairness (A/B positions) and coverage (the
comparison graph, the waves, the failures)."""

from __future__ import annotations

from collections import Counter
from statistics import median
from typing import Any

import numpy as np

from cj_runner.core.coverage import connected_components, degree_per_node
from cj_runner.core.fairness import fairness_metrics, nodes_above
from cj_runner.core.models import Mode, edge
from cj_runner.services.report_data import BatchData, header, num

# ---------------------------------------------------------------- fairness


def fairness_report(
    data: BatchData, *, mode: Mode | None = None, max_skew: float | None = None
) -> dict[str, Any]:
    """Positional fairness: A/B counts and skew per node, complements, flips, A-win share.

    Args:
        data: the loaded batch.
        mode: only the comparisons of this phase count (``None``: all of them).
        max_skew: when given, ``nodes_above_max_skew`` lists the nodes whose skew is
            strictly above it (the CLI exits 1 when the list is not empty).
    """
    outcomes = data.outcomes
    n = len(data.nodes)
    m = fairness_metrics(n, outcomes, mode)
    state = data.batch.state
    per_edge: Counter[tuple[int, int]] = Counter(
        (o.a, o.b) for o in outcomes if mode is None or o.mode == mode
    )
    missing = []
    for lo, hi in m.missing_complement:
        forward, backward = per_edge[(lo, hi)], per_edge[(hi, lo)]
        first, second = (lo, hi) if forward else (hi, lo)
        missing.append(
            {
                "essays": [data.essay_id(lo), data.essay_id(hi)],
                "comparisons": forward + backward,
                "asked_as": [data.essay_id(first), data.essay_id(second)],
            }
        )
    above = nodes_above(m.skew, max_skew) if max_skew is not None else []
    ci = m.position_a_ci95
    nodes = [
        {
            "essay_id": node.essay_id,
            "is_anchor": node.is_anchor,
            "a_count": int(m.a_counts[node.idx]),
            "b_count": int(m.b_counts[node.idx]),
            "comparisons": int(m.a_counts[node.idx] + m.b_counts[node.idx]),
            "skew": num(m.skew[node.idx]),
        }
        for node in data.nodes
    ]
    return {
        **header(data),
        "mode": mode.value if mode is not None else None,
        "comparisons": m.comparisons,
        "max_skew": m.max_skew,
        "mean_skew": m.mean_skew,
        "max_skew_threshold": max_skew,
        "nodes_above_max_skew": [data.essay_id(i) for i in above],
        "never_in_a": [data.essay_id(i) for i in m.never_in_a],
        "never_in_b": [data.essay_id(i) for i in m.never_in_b],
        "missing_complement": missing,
        "flip_rate": num(m.flip_rate),
        "flip_edges": m.flip_edges,
        "position_a_wins": m.position_a_wins,
        "position_a_share": num(m.position_a_share),
        "position_a_ci95": [ci[0], ci[1]] if ci is not None else None,
        "order_effect": num(state.get("order_effect")),
        "order_effect_se": num(state.get("order_effect_se")),
        "nodes": nodes,
    }


# ---------------------------------------------------------------- coverage

_FAILURE_STATUSES = ("retried", "failed", "lost")


def _failures_by_kind(attempts: list[dict[str, Any]]) -> dict[str, dict[str, int]]:
    """Attempts that ended in an error, by error kind and attempt status."""
    out: dict[str, dict[str, int]] = {}
    for row in attempts:
        kind = row.get("error_kind")
        if not kind:
            continue
        cell = out.setdefault(
            str(kind), {"attempts": 0, "retried": 0, "failed": 0, "lost": 0, "other": 0}
        )
        cell["attempts"] += 1
        status = row["status"]
        cell[status if status in _FAILURE_STATUSES else "other"] += 1
    return dict(sorted(out.items()))


def _pass_cap(data: BatchData) -> tuple[bool | None, int | None]:
    """(small net?, resampling pass cap) from the stored plan, else the settings."""
    plan, settings = data.batch.plan, data.batch.settings
    small = plan.get("is_small_net")
    if small is None and "MIN_RESAMPLING_NET_SIZE" in settings:
        students = sum(1 for n in data.nodes if not n.is_anchor)
        small = students <= int(settings["MIN_RESAMPLING_NET_SIZE"])
    cap = plan.get("max_resampling_passes")
    if cap is None and small is not None:
        key = (
            "MAX_RESAMPLING_PASSES_FOR_SMALL_NET"
            if small
            else "MAX_RESAMPLING_PASSES_FOR_REGULAR_BATCH"
        )
        cap = settings.get(key)
    return (None if small is None else bool(small)), (None if cap is None else int(cap))


def coverage_report(data: BatchData) -> dict[str, Any]:
    """Coverage of the comparison graph, budget use, failures and the per-wave history."""
    state = data.batch.state
    outcomes = data.outcomes
    n = len(data.nodes)
    pairs = [(o.a, o.b) for o in outcomes]
    degrees = degree_per_node(n, pairs) if n else np.zeros(0, dtype=np.int64)
    components = connected_components(n, pairs)
    max_pairs = int(state.get("max_possible_pairs") or n * (n - 1) // 2)
    distinct = len({edge(a, b) for a, b in pairs})
    small, cap = _pass_cap(data)
    budget = int(state.get("total_budget") or 0)
    sent = int(state.get("calls_sent") or 0)
    statuses = Counter(r["status"] for r in data.attempts)
    by_mode = Counter(o.mode.value for o in outcomes)
    degree_counts = Counter(int(d) for d in degrees)
    return {
        **header(data),
        "nodes": n,
        "students": sum(1 for x in data.nodes if not x.is_anchor),
        "anchors": sum(1 for x in data.nodes if x.is_anchor),
        "max_possible_pairs": max_pairs,
        "successful_pairs_count": distinct,
        "coverage_fraction": distinct / max_pairs if max_pairs else None,
        "unique_coverage_complete": max_pairs > 0 and distinct == max_pairs,
        "resampling_pass_count": int(state.get("resampling_pass_count") or 0),
        "resampling_pass_cap": cap,
        "is_small_net": small,
        "total_budget": budget,
        "calls_sent": sent,
        "budget_left": max(budget - sent, 0),
        "budget_used_fraction": sent / budget if budget else None,
        "successful_comparisons": statuses.get("success", 0),
        "failed_comparisons": statuses.get("failed", 0),
        "successes_by_mode": dict(sorted(by_mode.items())),
        "failures_by_kind": _failures_by_kind(data.attempts),
        "comparisons_per_node": {
            "min": int(degrees.min()) if n else None,
            "median": float(median(degrees.tolist())) if n else None,
            "max": int(degrees.max()) if n else None,
        },
        "degree_distribution": [
            {"comparisons": k, "nodes": degree_counts[k]} for k in sorted(degree_counts)
        ],
        "score_stability_threshold": num(data.batch.settings.get("SCORE_STABILITY_THRESHOLD")),
        "component_count": len(components),
        "components": [[data.essay_id(i) for i in c] for c in components],
        "waves": [
            {
                "wave": w["wave"],
                "mode": w["mode"],
                "size": w["size"],
                "successes": w["successes"],
                "calls_sent": w["calls_sent"],
                "max_score_change": num(w["max_score_change"]),
                "ssr": num(w["ssr"]),
                "decision": w["decision"],
                "reason": w["reason"],
            }
            for w in data.waves
        ],
    }
