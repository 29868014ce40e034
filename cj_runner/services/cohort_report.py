"""`cj-report cohort`: the state of a cohort's classes, their grades, cost and reliability."""

from __future__ import annotations

from collections import Counter
from typing import Any

from cj_runner.errors import NotFoundError, UserError
from cj_runner.storage import Store, queue

STATES = ("done", "failed", "running", "queued")
CLASS_COLUMNS = [
    "class_id",
    "batch_id",
    "state",
    "status",
    "stop_reason",
    "students",
    "calls_sent",
    "total_budget",
    "success_rate",
    "ssr",
    "robust_reliability",
    "cost_usd",
    "unknown_cost_calls",
    "tokens_in",
    "tokens_out",
    "worker",
    "claims",
]


def class_state(row: dict[str, Any]) -> str:
    """done (COMPLETED), failed (FAILED), running (claimed by a worker) or queued."""
    if row["status"] == "COMPLETED":
        return "done"
    if row["status"] == "FAILED":
        return "failed"
    return "running" if row["claimed_by"] else "queued"


def _grade_order(rows: list[dict[str, Any]]) -> list[str]:
    order: list[str] = []
    for row in rows:
        for grade in row["grades"]:
            if grade not in order:
                order.append(grade)
    seen = {g for row in rows for g in row["grade_counts"]}
    return order + sorted(seen - set(order))


def _class(row: dict[str, Any], grades: list[str]) -> dict[str, Any]:
    finished = int(row["successes"] or 0) + int(row["failures"] or 0)
    robust = (row["extra"].get("robust_reliability") or {}).get("value")
    counts = row["grade_counts"]
    return {
        "class_id": row["class_id"],
        "batch_id": row["batch_id"],
        "state": class_state(row),
        "status": row["status"],
        "stop_reason": row["stop_reason"],
        "students": row["plan"].get("students"),
        "calls_sent": int(row["calls_sent"] or 0),
        "total_budget": int(row["total_budget"] or 0),
        "success_rate": round(int(row["successes"] or 0) / finished, 6) if finished else None,
        "ssr": row["ssr"],
        "robust_reliability": robust,
        "cost_usd": round(float(row["cost_usd"] or 0.0), 6),
        "unknown_cost_calls": int(row["unknown_cost_calls"]),
        "tokens_in": int(row["tokens_in"] or 0),
        "tokens_out": int(row["tokens_out"] or 0),
        "worker": row["claimed_by"],
        "claims": int(row["claims"] or 0),
        "grades": {g: int(counts.get(g, 0)) for g in grades},
    }


async def resolve_cohort(store: Store, cohort: str | None) -> str:
    """The cohort named, or the only one in the database."""
    names = await queue.cohort_names(store)
    if cohort is not None:
        if cohort not in names:
            known = ", ".join(names[:10]) or "none"
            raise NotFoundError(f"no cohort {cohort!r} in this database (cohorts: {known})")
        return cohort
    if len(names) == 1:
        return names[0]
    if not names:
        raise NotFoundError("no cohort in this database (queue one with `cj-run enqueue`)")
    raise UserError(f"several cohorts in this database; name one: {', '.join(names[:10])}")


async def build_cohort_report(store: Store, cohort: str | None = None) -> dict[str, Any]:
    """Classes by state, per-class grade distribution, cost and reliability, and totals."""
    name = await resolve_cohort(store, cohort)
    rows = await queue.cohort_rows(store, name)
    grades = _grade_order(rows)
    classes = [_class(row, grades) for row in rows]
    states = Counter(c["state"] for c in classes)
    total_grades = Counter[str]()
    for c in classes:
        total_grades.update(c["grades"])
    done = [c for c in classes if c["state"] == "done"]
    ssrs = [c["ssr"] for c in done if c["ssr"] is not None]
    return {
        "cohort": name,
        "classes": len(classes),
        "counts": {state: states.get(state, 0) for state in STATES},
        "grade_scale": grades,
        "overall": {
            "students": sum(c["students"] or 0 for c in classes),
            "calls_sent": sum(c["calls_sent"] for c in classes),
            "cost_usd": round(sum(c["cost_usd"] for c in classes), 6),
            "unknown_cost_calls": sum(c["unknown_cost_calls"] for c in classes),
            "tokens_in": sum(c["tokens_in"] for c in classes),
            "tokens_out": sum(c["tokens_out"] for c in classes),
            "grades": {g: total_grades.get(g, 0) for g in grades},
            "ssr_mean": round(sum(ssrs) / len(ssrs), 6) if ssrs else None,
            "ssr_min": min(ssrs) if ssrs else None,
        },
        "per_class": classes,
    }


def cohort_csv_rows(report: dict[str, Any]) -> tuple[list[dict[str, Any]], list[str]]:
    """One row per class with a ``grade_<G>`` count column per grade; and the columns."""
    columns = CLASS_COLUMNS + [f"grade_{g}" for g in report["grade_scale"]]
    rows = []
    for c in report["per_class"]:
        row = {k: c[k] for k in CLASS_COLUMNS}
        row.update({f"grade_{g}": n for g, n in c["grades"].items()})
        rows.append(row)
    return rows, columns
