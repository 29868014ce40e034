"""Report builders (spec §9): fairness, coverage, ranking and grades of a stored batch.

Each builder turns the stored batch into plain dicts and lists (JSON-ready: no numpy
types, ``None`` instead of ``nan``); the CLI prints them as tables, JSON or CSV and the
HTML report draws them. Nothing here prints. Key sets are part of the contract (they are
documented in docs/reports.md and pinned by a test): add keys, never rename them.

Everything is recomputed from the stored attempts (one row per judge call), not from the
node counters, so ``fairness --mode`` can filter by phase and the reports agree with the
comparisons actually stored. The order effect, its SE and the SSR are the final fit's
values stored on the batch state (the whole batch, whatever the mode filter).
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass
from functools import cached_property
from statistics import median
from typing import Any

import numpy as np

from cj_runner.core.coverage import connected_components, degree_per_node
from cj_runner.core.fairness import fairness_metrics, nodes_above
from cj_runner.core.models import Mode, Outcome, edge
from cj_runner.core.posterior import LEGACY_INTERVAL_LABEL
from cj_runner.core.reliability import (
    MISFIT_MIN_COMPARISONS,
    MISFIT_THRESHOLD,
    MISFIT_Z_THRESHOLD,
    flag_misfits,
    flag_standardized_misfits,
)
from cj_runner.errors import UserError
from cj_runner.services.summary import is_provisional, outcomes_from_attempts
from cj_runner.storage import Store
from cj_runner.storage import repository as repo

__all__ = [
    "REPORT_KINDS",
    "BatchData",
    "build_report",
    "coverage_report",
    "fairness_report",
    "grades_report",
    "load_batch_data",
    "parse_mode",
    "ranking_report",
    "report_columns",
    "report_rows",
]

REPORT_KINDS: tuple[str, ...] = ("fairness", "coverage", "ranking", "grades")
"""The tabular reports; ``summary`` and ``html`` are built elsewhere."""

Z95 = 1.959963984540054
"""Standard normal 97.5% quantile: the 95% interval of a score is ``score ± Z95 * SE``."""


NO_ANCHORS = "the batch has no anchors"
NOT_FINISHED = "the batch has not been scored yet"
FAILED_BATCH = "the batch failed: no grades are projected for a failed batch"


@dataclass(frozen=True)
class BatchData:
    """Everything the reports read from the store for one batch."""

    batch: repo.BatchRecord
    nodes: list[repo.NodeRecord]
    attempts: list[dict[str, Any]]
    waves: list[dict[str, Any]]
    projections: list[dict[str, Any]]
    assignment: repo.AssignmentRecord | None

    @cached_property
    def outcomes(self) -> list[Outcome]:
        """The successful comparisons, in slot order (built once)."""
        return outcomes_from_attempts(self.attempts)

    @property
    def extra(self) -> dict[str, Any]:
        """The batch state's ``extra_json`` (final fit details, projection info)."""
        return dict(self.batch.state.get("extra_json") or {})

    def essay_id(self, idx: int) -> str:
        """The essay id of node ``idx``."""
        return self.nodes[idx].essay_id


async def load_batch_data(store: Store, batch_ref: str) -> BatchData:
    """Load the batch named by id or name, with its nodes, attempts, waves, projections."""
    batch = await repo.find_batch(store, batch_ref)
    assignment = (
        await repo.get_assignment(store, batch.assignment_id) if batch.assignment_id else None
    )
    return BatchData(
        batch=batch,
        nodes=await repo.load_nodes(store, batch.id),
        attempts=await repo.load_attempts(store, batch.id),
        waves=await repo.load_waves(store, batch.id),
        projections=await repo.load_projections(store, batch.id),
        assignment=assignment,
    )


# ---------------------------------------------------------------- helpers


def _num(value: Any) -> float | None:
    """A finite float, or ``None`` (JSON has no ``nan``)."""
    if value is None:
        return None
    out = float(value)
    return out if math.isfinite(out) else None


def _header(data: BatchData) -> dict[str, Any]:
    b = data.batch
    return {
        "batch_id": b.id,
        "batch_name": b.name,
        "status": b.status,
        "stop_reason": b.stop_reason,
        "provisional": is_provisional(b.status, data.nodes),
        "judge_health": data.extra.get("judge_health"),
    }


def parse_mode(value: str | None) -> Mode | None:
    """``--mode`` as a :class:`Mode` (``None`` = every mode); :class:`UserError` if unknown."""
    if value is None or value == "":
        return None
    try:
        return Mode(value)
    except ValueError:
        allowed = ", ".join(m.value for m in Mode)
        raise UserError(f"--mode must be one of {allowed}; got {value!r}") from None


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
            "skew": _num(m.skew[node.idx]),
        }
        for node in data.nodes
    ]
    return {
        **_header(data),
        "mode": mode.value if mode is not None else None,
        "comparisons": m.comparisons,
        "max_skew": m.max_skew,
        "mean_skew": m.mean_skew,
        "max_skew_threshold": max_skew,
        "nodes_above_max_skew": [data.essay_id(i) for i in above],
        "never_in_a": [data.essay_id(i) for i in m.never_in_a],
        "never_in_b": [data.essay_id(i) for i in m.never_in_b],
        "missing_complement": missing,
        "flip_rate": _num(m.flip_rate),
        "flip_edges": m.flip_edges,
        "position_a_wins": m.position_a_wins,
        "position_a_share": _num(m.position_a_share),
        "position_a_ci95": [ci[0], ci[1]] if ci is not None else None,
        "order_effect": _num(state.get("order_effect")),
        "order_effect_se": _num(state.get("order_effect_se")),
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
        **_header(data),
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
        "score_stability_threshold": _num(data.batch.settings.get("SCORE_STABILITY_THRESHOLD")),
        "component_count": len(components),
        "components": [[data.essay_id(i) for i in c] for c in components],
        "waves": [
            {
                "wave": w["wave"],
                "mode": w["mode"],
                "size": w["size"],
                "successes": w["successes"],
                "calls_sent": w["calls_sent"],
                "max_score_change": _num(w["max_score_change"]),
                "ssr": _num(w["ssr"]),
                "decision": w["decision"],
                "reason": w["reason"],
            }
            for w in data.waves
        ],
    }


# ---------------------------------------------------------------- ranking


def _grade_of_student(data: BatchData) -> dict[int, str | None]:
    return {int(p["node_idx"]): p["projected_grade"] for p in data.projections}


def _misfits(
    data: BatchData, degrees: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray, dict[str, Any]]:
    """Standardised infit/outfit per node, the misfit flags and the rule that made them.

    Batches scored before the standardised statistics were stored are flagged on the raw
    mean-squares, as they were then.
    """
    n = len(data.nodes)
    stored = data.extra.get("misfit") or {}
    nan = np.full(n, np.nan)

    def vector(key: str) -> np.ndarray:
        values = stored.get(key)
        if not isinstance(values, list) or len(values) != n:
            return nan
        return np.array([np.nan if v is None else float(v) for v in values], dtype=float)

    infit_z, outfit_z = vector("infit_z"), vector("outfit_z")
    if stored and not np.all(np.isnan(infit_z)):
        threshold = float(stored.get("threshold", MISFIT_Z_THRESHOLD))
        least = int(stored.get("min_comparisons", MISFIT_MIN_COMPARISONS))
        flags = flag_standardized_misfits(infit_z, degrees, threshold, least)
        rule = {"statistic": "infit_zstd", "threshold": threshold, "min_comparisons": least}
        return infit_z, outfit_z, flags, rule
    infit = np.array([np.nan if x.infit is None else x.infit for x in data.nodes], dtype=float)
    outfit = np.array([np.nan if x.outfit is None else x.outfit for x in data.nodes], dtype=float)
    flags = flag_misfits(infit, outfit) if n else np.zeros(0, dtype=bool)
    rule = {"statistic": "mean_square", "threshold": MISFIT_THRESHOLD, "min_comparisons": 1}
    return infit_z, outfit_z, flags, rule


def interval_label(data: BatchData) -> str | None:
    """What the shown ``score``, ``se`` and 95% interval are (``None``: not scored)."""
    if not any(x.score is not None for x in data.nodes):
        return None
    return str(data.extra.get("interval") or LEGACY_INTERVAL_LABEL)


def _mle(data: BatchData) -> tuple[dict[str, Any], list[Any], list[Any]]:
    mle = dict(data.extra.get("mle") or {})
    n = len(data.nodes)
    scores = list(mle.get("scores") or [None] * n)
    se = list(mle.get("se") or [None] * n)
    return mle, scores, se


def ranking_report(data: BatchData) -> dict[str, Any]:
    """Nodes by score, with SE, 95% interval, comparisons, wins, infit/outfit and misfits.

    ``score``, ``se`` and ``ci95_*`` are the posterior's (``interval`` says so);
    ``mle_score`` and ``mle_se`` the maximum likelihood fit's (``mle_interval``).
    """
    state = data.batch.state
    robust = data.extra.get("robust_reliability") or {}
    mle, mle_scores, mle_se = _mle(data)
    outcomes = data.outcomes
    n = len(data.nodes)
    wins = np.zeros(n, dtype=np.int64)
    degrees = np.zeros(n, dtype=np.int64)
    for o in outcomes:
        wins[o.a if o.winner == "A" else o.b] += 1
        degrees[o.a] += 1
        degrees[o.b] += 1
    infit_z, outfit_z, misfit, rule = _misfits(data, degrees)
    projected = _grade_of_student(data)
    scored = sorted(
        (x for x in data.nodes if x.score is not None),
        key=lambda x: (-(x.score or 0.0), x.idx),
    )
    unscored = [x for x in data.nodes if x.score is None]
    rows = []
    for rank, node in [*enumerate(scored, start=1), *((None, x) for x in unscored)]:
        score, se = _num(node.score), _num(node.se)
        half = Z95 * se if se is not None else None
        rows.append(
            {
                "rank": rank,
                "essay_id": node.essay_id,
                "is_anchor": node.is_anchor,
                "known_grade": node.known_grade,
                "projected_grade": projected.get(node.idx),
                "score": score,
                "se": se,
                "ci95_low": score - half if score is not None and half is not None else None,
                "ci95_high": score + half if score is not None and half is not None else None,
                "mle_score": _num(mle_scores[node.idx]),
                "mle_se": _num(mle_se[node.idx]),
                "comparisons": int(degrees[node.idx]),
                "wins": int(wins[node.idx]),
                "infit": _num(node.infit),
                "outfit": _num(node.outfit),
                "misfit": bool(misfit[node.idx]),
                "infit_z": _num(infit_z[node.idx]),
                "outfit_z": _num(outfit_z[node.idx]),
            }
        )
    return {
        **_header(data),
        "interval": interval_label(data),
        "mle_interval": mle.get("label"),
        "ssr": _num(state.get("ssr")),
        "ssr_note": data.extra.get("ssr_note"),
        "robust_reliability": _num(robust.get("value")),
        "robust_reliability_method": robust.get("method"),
        "robust_reliability_sd": _num(robust.get("posterior_sd")),
        "reliability_warning": data.extra.get("reliability_warning"),
        "order_effect": _num(state.get("order_effect")),
        "order_effect_se": _num(state.get("order_effect_se")),
        "mle_order_effect": _num(mle.get("order_effect")),
        "mle_order_effect_se": _num(mle.get("order_effect_se")),
        "misfit_threshold": rule["threshold"],
        "misfits": [r["essay_id"] for r in rows if r["misfit"]],
        "misfit_statistic": rule["statistic"],
        "misfit_min_comparisons": rule["min_comparisons"],
        "rows": rows,
    }


# ---------------------------------------------------------------- grades


def _grade_list(data: BatchData, projection: dict[str, Any]) -> list[str]:
    """The scale's grades, lowest first: the assignment's, else from the stored results."""
    if data.assignment is not None:
        return list(data.assignment.grades)
    for p in data.projections:
        if p["probabilities"]:
            return list(p["probabilities"])
    grades: list[str] = []
    for key in projection.get("boundaries") or {}:
        for g in str(key).split("|"):
            if g not in grades:
                grades.append(g)
    return grades


def _band(score: float | None, boundaries: list[dict[str, Any]], grades: list[str]) -> str | None:
    """The grade whose band (between boundaries) holds ``score``."""
    if score is None or not boundaries or len(grades) != len(boundaries) + 1:
        return None
    k = sum(1 for b in boundaries if score > b["score"])
    return grades[k]


def _deferred_reason(data: BatchData, projection: dict[str, Any]) -> str | None:
    if projection:
        reason = projection.get("deferred_reason")
        return None if reason is None else str(reason)
    if not any(x.is_anchor for x in data.nodes):
        return NO_ANCHORS
    if data.batch.status == "FAILED":
        return FAILED_BATCH
    return NOT_FINISHED


def grades_report(data: BatchData) -> dict[str, Any]:
    """Projected grades with probabilities, the anchors' calibration and boundaries."""
    projection = dict(data.extra.get("projection") or {})
    grades = _grade_list(data, projection)
    boundaries = [
        {"lower": str(k).split("|")[0], "upper": str(k).split("|")[-1], "score": float(v)}
        for k, v in (projection.get("boundaries") or {}).items()
    ]
    by_idx = {x.idx: x for x in data.nodes}
    anchors = []
    for a in projection.get("anchors") or []:
        node = by_idx.get(int(a["node"]))
        score = _num(a.get("score"))
        fitted = _num(a.get("fitted_index"))
        anchors.append(
            {
                "essay_id": node.essay_id if node else str(a["node"]),
                "grade": a["grade"],
                "score": score,
                "se": _num(node.se) if node else None,
                "fitted_index": fitted,
                "band": _band(score, boundaries, grades),
            }
        )
    anchors.sort(key=lambda r: (r["score"] is None, r["score"] or 0.0))
    deferred = _deferred_reason(data, projection)
    students = []
    for p in data.projections:
        node = by_idx[int(p["node_idx"])]
        expected = _num(p["expected_index"])
        expected_grade = None
        if expected is not None and grades:
            # nearest grade, halves rounded up (Python's round() would round 2.5 to 2)
            expected_grade = grades[min(max(math.floor(expected + 0.5), 0), len(grades) - 1)]
        probabilities = {g: float(v) for g, v in (p["probabilities"] or {}).items()}
        students.append(
            {
                "essay_id": node.essay_id,
                "score": _num(node.score),
                "se": _num(node.se),
                "projected_grade": p["projected_grade"],
                "confidence": _num(p["confidence"]),
                "expected_index": expected,
                "expected_grade": expected_grade,
                "probabilities": probabilities,
                "deferred_reason": p["deferred_reason"],
            }
        )
    students.sort(key=lambda r: (r["score"] is None, -(r["score"] or 0.0)))
    distribution = Counter(s["projected_grade"] for s in students if s["projected_grade"])
    return {
        **_header(data),
        "assignment_id": data.batch.assignment_id,
        "grade_scale": data.assignment.grade_scale if data.assignment else None,
        "grades": grades,
        "interval": interval_label(data),
        "probability_method": projection.get("method"),
        "projected": deferred is None and any(s["projected_grade"] for s in students),
        "deferred_reason": deferred,
        "distribution": {g: distribution[g] for g in grades if distribution[g]},
        "boundaries": boundaries,
        "anchors": anchors,
        "warnings": [str(w) for w in projection.get("warnings") or []],
        "students": students,
    }


# ---------------------------------------------------------------- dispatch and CSV rows


FAIRNESS_NODE_KEYS = ("essay_id", "is_anchor", "a_count", "b_count", "comparisons", "skew")
WAVE_KEYS = (
    "wave",
    "mode",
    "size",
    "successes",
    "calls_sent",
    "max_score_change",
    "ssr",
    "decision",
    "reason",
)
RANKING_ROW_KEYS = (
    "rank",
    "essay_id",
    "is_anchor",
    "known_grade",
    "projected_grade",
    "score",
    "se",
    "ci95_low",
    "ci95_high",
    "mle_score",
    "mle_se",
    "comparisons",
    "wins",
    "infit",
    "outfit",
    "misfit",
    "infit_z",
    "outfit_z",
)
GRADE_STUDENT_KEYS = (
    "essay_id",
    "score",
    "se",
    "projected_grade",
    "confidence",
    "expected_index",
    "expected_grade",
    "deferred_reason",
)


BATCH_FLAG_KEYS = ("provisional", "judge_signal")
"""Columns every CSV export ends with: the batch's provisional flag and whether the judge
carries usable signal (empty when not assessed), repeated on each row."""


def _table_columns(kind: str, report: dict[str, Any]) -> list[str]:
    if kind == "fairness":
        return list(FAIRNESS_NODE_KEYS)
    if kind == "coverage":
        return list(WAVE_KEYS)
    if kind == "ranking":
        return list(RANKING_ROW_KEYS)
    if kind == "grades":
        return [*GRADE_STUDENT_KEYS, *(f"p_{g}" for g in report["grades"])]
    raise ValueError(f"unknown report {kind!r}")


def report_columns(kind: str, report: dict[str, Any]) -> list[str]:
    """The CSV columns of a report's main table (see :func:`report_rows`)."""
    return [*_table_columns(kind, report), *BATCH_FLAG_KEYS]


def _batch_flags(report: dict[str, Any]) -> dict[str, Any]:
    health = report.get("judge_health") or {}
    return {
        "provisional": bool(report.get("provisional")),
        "judge_signal": health.get("signal"),
    }


def report_rows(kind: str, report: dict[str, Any]) -> list[dict[str, Any]]:
    """The main table of a report as flat rows (the CSV export).

    fairness: one row per node; coverage: one row per wave; ranking: one row per node;
    grades: one row per student, with a ``p_<grade>`` column per grade. Every row ends
    with :data:`BATCH_FLAG_KEYS`.
    """
    columns = report_columns(kind, report)
    if kind == "fairness":
        source = report["nodes"]
    elif kind == "coverage":
        source = report["waves"]
    elif kind == "ranking":
        source = report["rows"]
    else:
        source = [
            {**s, **{f"p_{g}": s["probabilities"].get(g) for g in report["grades"]}}
            for s in report["students"]
        ]
    flags = _batch_flags(report)
    return [{c: flags[c] if c in flags else r.get(c) for c in columns} for r in source]


async def build_report(store: Store, kind: str, batch_ref: str, **options: Any) -> dict[str, Any]:
    """Load the batch and build the report ``kind`` (one of :data:`REPORT_KINDS`)."""
    data = await load_batch_data(store, batch_ref)
    if kind == "fairness":
        return fairness_report(data, **options)
    if kind == "coverage":
        return coverage_report(data)
    if kind == "ranking":
        return ranking_report(data)
    if kind == "grades":
        return grades_report(data)
    raise ValueError(f"unknown report {kind!r}")
