"""The reports on the scores: ranking (scores, intervals, misfit) and grades (the anchor
calibration and each student's grade probabilities)."""

from __future__ import annotations

import math
from collections import Counter
from typing import Any

import numpy as np

from cj_runner.core.posterior import LEGACY_INTERVAL_LABEL
from cj_runner.core.reliability import (
    MISFIT_MIN_COMPARISONS,
    MISFIT_THRESHOLD,
    MISFIT_Z_THRESHOLD,
    flag_misfits,
    flag_standardized_misfits,
)
from cj_runner.services.report_data import (
    FAILED_BATCH,
    NO_ANCHORS,
    NOT_FINISHED,
    Z95,
    BatchData,
    header,
    num,
)
from cj_runner.services.summary import spread_fields

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
        score, se = num(node.score), num(node.se)
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
                "mle_score": num(mle_scores[node.idx]),
                "mle_se": num(mle_se[node.idx]),
                "comparisons": int(degrees[node.idx]),
                "wins": int(wins[node.idx]),
                "infit": num(node.infit),
                "outfit": num(node.outfit),
                "misfit": bool(misfit[node.idx]),
                "infit_z": num(infit_z[node.idx]),
                "outfit_z": num(outfit_z[node.idx]),
            }
        )
    return {
        **header(data),
        "interval": interval_label(data),
        "mle_interval": mle.get("label"),
        **spread_fields(data.extra),
        "ssr": num(state.get("ssr")),
        "ssr_note": data.extra.get("ssr_note"),
        "robust_reliability": num(robust.get("value")),
        "robust_reliability_method": robust.get("method"),
        "robust_reliability_sd": num(robust.get("posterior_sd")),
        "reliability_warning": data.extra.get("reliability_warning"),
        "order_effect": num(state.get("order_effect")),
        "order_effect_se": num(state.get("order_effect_se")),
        "mle_order_effect": num(mle.get("order_effect")),
        "mle_order_effect_se": num(mle.get("order_effect_se")),
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
        score = num(a.get("score"))
        fitted = num(a.get("fitted_index"))
        anchors.append(
            {
                "essay_id": node.essay_id if node else str(a["node"]),
                "grade": a["grade"],
                "score": score,
                "se": num(node.se) if node else None,
                "fitted_index": fitted,
                "band": _band(score, boundaries, grades),
            }
        )
    anchors.sort(key=lambda r: (r["score"] is None, r["score"] or 0.0))
    deferred = _deferred_reason(data, projection)
    students = []
    for p in data.projections:
        node = by_idx[int(p["node_idx"])]
        expected = num(p["expected_index"])
        expected_grade = None
        if expected is not None and grades:
            # nearest grade, halves rounded up (Python's round() would round 2.5 to 2)
            expected_grade = grades[min(max(math.floor(expected + 0.5), 0), len(grades) - 1)]
        probabilities = {g: float(v) for g, v in (p["probabilities"] or {}).items()}
        students.append(
            {
                "essay_id": node.essay_id,
                "score": num(node.score),
                "se": num(node.se),
                "projected_grade": p["projected_grade"],
                "confidence": num(p["confidence"]),
                "expected_index": expected,
                "expected_grade": expected_grade,
                "probabilities": probabilities,
                "deferred_reason": p["deferred_reason"],
            }
        )
    students.sort(key=lambda r: (r["score"] is None, -(r["score"] or 0.0)))
    distribution = Counter(s["projected_grade"] for s in students if s["projected_grade"])
    return {
        **header(data),
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
