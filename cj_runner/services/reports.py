"""Report builders (spec §9): fairness, coverage, ranking and grades of a stored batch.

Each builder turns the stored batch into plain dicts and lists (JSON-ready: no numpy
types, ``None`` instead of ``nan``); the CLI prints them as tables, JSON or CSV and the
HTML report draws them. Nothing here prints. Key sets are part of the contract (they are
documented in docs/reports.md and pinned by a test): add keys, never rename them.

Everything is recomputed from the stored attempts (one row per judge call), not from the
node counters, so ``fairness --mode`` can filter by phase and the reports agree with the
comparisons actually stored. The order effect, its SE and the SSR are the final fit's
values stored on the batch state (the whole batch, whatever the mode filter).

This module dispatches and flattens (CSV rows) and re-exports the builders from where they
live: :mod:`~cj_runner.services.report_data` (the loaded batch, shared helpers),
:mod:`~cj_runner.services.report_design` (fairness, coverage) and
:mod:`~cj_runner.services.report_scores` (ranking, grades).
"""

from __future__ import annotations

from typing import Any

from cj_runner.services.report_data import (
    FAILED_BATCH,
    NO_ANCHORS,
    NOT_FINISHED,
    Z95,
    BatchData,
    load_batch_data,
    parse_mode,
)
from cj_runner.services.report_design import coverage_report, fairness_report
from cj_runner.services.report_scores import grades_report, interval_label, ranking_report
from cj_runner.storage import Store

__all__ = [
    "FAILED_BATCH",
    "NOT_FINISHED",
    "NO_ANCHORS",
    "REPORT_KINDS",
    "Z95",
    "BatchData",
    "build_report",
    "coverage_report",
    "fairness_report",
    "grades_report",
    "interval_label",
    "load_batch_data",
    "parse_mode",
    "ranking_report",
    "report_columns",
    "report_rows",
]

REPORT_KINDS: tuple[str, ...] = ("fairness", "coverage", "ranking", "grades")
"""The tabular reports; ``summary`` and ``html`` are built elsewhere."""


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
