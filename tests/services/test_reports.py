"""Report builders on hand-made batches: exact values, edge cases, invariants."""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cj_runner.core.models import Mode
from cj_runner.core.reliability import MISFIT_Z_THRESHOLD
from cj_runner.errors import UserError
from cj_runner.services.html_report import SECTION_IDS, render_html
from cj_runner.services.reports import (
    FAILED_BATCH,
    NO_ANCHORS,
    NOT_FINISHED,
    Z95,
    BatchData,
    coverage_report,
    fairness_report,
    grades_report,
    parse_mode,
    ranking_report,
    report_columns,
    report_rows,
)
from cj_runner.storage.repository import AssignmentRecord, BatchRecord, NodeRecord

NOW = datetime(2025, 1, 1, tzinfo=UTC)

# (a, b, winner, mode) of successful comparisons
Row = tuple[int, int, str, str]


def attempt(
    slot: int,
    a: int,
    b: int,
    winner: str | None = None,
    *,
    mode: str = "coverage",
    wave: int = 1,
    status: str = "success",
    error_kind: str | None = None,
    attempt_no: int = 1,
) -> dict[str, Any]:
    """One stored attempt row, as ``load_attempts`` returns it."""
    return {
        "slot": slot,
        "attempt": attempt_no,
        "a_idx": a,
        "b_idx": b,
        "winner": winner,
        "mode": mode,
        "wave": wave,
        "status": status,
        "error_kind": error_kind,
        "cached": False,
    }


def make_data(
    n: int,
    rows: Sequence[Row] = (),
    *,
    extra_attempts: Sequence[dict[str, Any]] = (),
    anchors: dict[int, str] | None = None,
    scores: Sequence[float | None] | None = None,
    se: Sequence[float | None] | None = None,
    fit: dict[int, tuple[float | None, float | None]] | None = None,
    state: dict[str, Any] | None = None,
    extra: dict[str, Any] | None = None,
    waves: Sequence[dict[str, Any]] = (),
    projections: Sequence[dict[str, Any]] = (),
    status: str = "COMPLETED",
    assignment: AssignmentRecord | None = None,
    settings_json: dict[str, Any] | None = None,
    plan: dict[str, Any] | None = None,
) -> BatchData:
    """A BatchData with ``n`` nodes ``e0..e{n-1}`` (anchors named ``a<i>``)."""
    anchors = anchors or {}
    attempts = [attempt(i + 1, a, b, w, mode=m) for i, (a, b, w, m) in enumerate(rows)]
    attempts += list(extra_attempts)
    nodes = [
        NodeRecord(
            idx=i,
            essay_id=f"a{i}" if i in anchors else f"e{i}",
            is_anchor=i in anchors,
            known_grade=anchors.get(i),
            checksum=f"{i:064d}",
            text="",
            metadata={},
            score=scores[i] if scores is not None else None,
            se=se[i] if se is not None else None,
            comparison_count=0,
            a_count=0,
            b_count=0,
            infit=(fit or {}).get(i, (None, None))[0],
            outfit=(fit or {}).get(i, (None, None))[1],
        )
        for i in range(n)
    ]
    base_state: dict[str, Any] = {
        "total_budget": 100,
        "calls_sent": len(attempts),
        "max_possible_pairs": n * (n - 1) // 2,
        "resampling_pass_count": 0,
        "ssr": None,
        "order_effect": None,
        "order_effect_se": None,
        "extra_json": extra or {},
    }
    base_state.update(state or {})
    batch = BatchRecord(
        id="b1",
        name="named",
        assignment_id=assignment.id if assignment else None,
        status=status,
        stop_reason="budget",
        seed=1,
        settings=settings_json or {},
        judge={},
        judge_name="mock",
        inventory="",
        plan=plan or {},
        created_at=NOW,
        finished_at=NOW,
        state=base_state,
    )
    return BatchData(
        batch=batch,
        nodes=nodes,
        attempts=attempts,
        waves=list(waves),
        projections=list(projections),
        assignment=assignment,
    )


# ---------------------------------------------------------------- fairness


def test_fairness_counts_complements_and_never_in_positions() -> None:
    rows: list[Row] = [
        (0, 1, "A", "coverage"),
        (0, 1, "B", "resampling"),  # (0, 1) twice, never as (1, 0): missing complement
        (2, 1, "A", "coverage"),
        (1, 2, "B", "resampling"),  # asked both ways, node 2 won both: no flip
    ]
    r = fairness_report(make_data(4, rows), max_skew=0.5)
    by_id = {n["essay_id"]: n for n in r["nodes"]}
    assert (by_id["e0"]["a_count"], by_id["e0"]["b_count"], by_id["e0"]["skew"]) == (2, 0, 1.0)
    assert (by_id["e1"]["a_count"], by_id["e1"]["b_count"]) == (1, 3)
    assert by_id["e1"]["skew"] == pytest.approx(0.5)
    assert by_id["e3"]["skew"] is None  # no comparison: no skew (not nan: valid JSON)
    assert r["missing_complement"] == [
        {"essays": ["e0", "e1"], "comparisons": 2, "asked_as": ["e0", "e1"]}
    ]
    assert r["never_in_a"] == ["e3"]
    assert r["never_in_b"] == ["e0", "e3"]
    assert r["flip_rate"] == 0.0 and r["flip_edges"] == 1
    assert r["position_a_wins"] == 2 and r["position_a_share"] == 0.5
    low, high = r["position_a_ci95"]
    assert 0 < low < 0.5 < high < 1
    # strictly above the threshold: 0.5 is not above 0.5
    assert r["nodes_above_max_skew"] == ["e0"]
    json.dumps(r, allow_nan=False)


def test_fairness_flip_rate_counts_changed_winners() -> None:
    # edge (0,1): e0 wins as A, then e1 wins as A: the order changed the winner
    rows: list[Row] = [(0, 1, "A", "coverage"), (1, 0, "A", "resampling")]
    r = fairness_report(make_data(2, rows))
    assert r["flip_rate"] == 1.0 and r["flip_edges"] == 1
    assert r["position_a_share"] == 1.0


def test_fairness_mode_filter_and_whole_batch_order_effect() -> None:
    rows: list[Row] = [
        (0, 1, "A", "coverage"),
        (1, 2, "A", "coverage"),
        (1, 0, "B", "resampling"),
    ]
    data = make_data(3, rows, state={"order_effect": 0.2, "order_effect_se": 0.1})
    cov = fairness_report(data, mode=Mode.COVERAGE)
    res = fairness_report(data, mode=Mode.RESAMPLING)
    assert (cov["mode"], cov["comparisons"], res["comparisons"]) == ("coverage", 2, 1)
    assert [n["a_count"] for n in res["nodes"]] == [0, 1, 0]
    assert cov["order_effect"] == res["order_effect"] == 0.2
    assert fairness_report(data)["mode"] is None


def test_fairness_ignores_failed_attempts_and_empty_batches() -> None:
    failed = [attempt(1, 0, 1, status="failed", error_kind="refused")]
    r = fairness_report(make_data(2, extra_attempts=failed), max_skew=0.0)
    assert r["comparisons"] == 0
    assert r["position_a_share"] is None and r["position_a_ci95"] is None
    assert r["flip_rate"] is None
    assert r["nodes_above_max_skew"] == []
    json.dumps(r, allow_nan=False)


def test_parse_mode() -> None:
    assert parse_mode(None) is None
    assert parse_mode("resampling") is Mode.RESAMPLING
    with pytest.raises(UserError, match="--mode"):
        parse_mode("both")


# ---------------------------------------------------------------- coverage


def test_coverage_components_failures_and_degrees() -> None:
    rows: list[Row] = [(0, 1, "A", "coverage"), (1, 0, "A", "resampling"), (2, 3, "B", "coverage")]
    extra = [
        attempt(10, 0, 2, status="retried", error_kind="timeout"),
        attempt(10, 0, 2, status="failed", error_kind="timeout", attempt_no=2),
        attempt(11, 1, 3, status="lost", error_kind="lost"),
        attempt(12, 4, 3, status="retried", error_kind="rate_limit"),
    ]
    waves = [
        {
            "wave": 1,
            "mode": "coverage",
            "size": 4,
            "successes": 2,
            "calls_sent": 6,
            "max_score_change": None,
            "ssr": float("nan"),
            "decision": "REQUEST_MORE_COMPARISONS",
            "reason": "coverage",
        }
    ]
    data = make_data(
        5,
        rows,
        extra_attempts=extra,
        waves=waves,
        state={"total_budget": 10, "calls_sent": 8, "resampling_pass_count": 1},
        settings_json={
            "MIN_RESAMPLING_NET_SIZE": 10,
            "MAX_RESAMPLING_PASSES_FOR_SMALL_NET": 2,
            "SCORE_STABILITY_THRESHOLD": 0.05,
        },
    )
    r = coverage_report(data)
    assert r["max_possible_pairs"] == 10
    assert r["successful_pairs_count"] == 2
    assert r["coverage_fraction"] == pytest.approx(0.2)
    assert r["unique_coverage_complete"] is False
    assert r["component_count"] == 3
    assert r["components"] == [["e0", "e1"], ["e2", "e3"], ["e4"]]
    assert r["comparisons_per_node"] == {"min": 0, "median": 1.0, "max": 2}
    assert r["degree_distribution"] == [
        {"comparisons": 0, "nodes": 1},
        {"comparisons": 1, "nodes": 2},
        {"comparisons": 2, "nodes": 2},
    ]
    assert r["failures_by_kind"] == {
        "lost": {"attempts": 1, "retried": 0, "failed": 0, "lost": 1, "other": 0},
        "rate_limit": {"attempts": 1, "retried": 1, "failed": 0, "lost": 0, "other": 0},
        "timeout": {"attempts": 2, "retried": 1, "failed": 1, "lost": 0, "other": 0},
    }
    assert (r["successful_comparisons"], r["failed_comparisons"]) == (3, 1)
    assert r["successes_by_mode"] == {"coverage": 2, "resampling": 1}
    assert (r["calls_sent"], r["total_budget"], r["budget_left"]) == (8, 10, 2)
    assert r["budget_used_fraction"] == pytest.approx(0.8)
    # no plan stored: the net class and the cap come from the settings
    assert (r["is_small_net"], r["resampling_pass_cap"]) == (True, 2)
    assert r["score_stability_threshold"] == 0.05
    assert r["waves"][0]["ssr"] is None  # nan is not JSON
    json.dumps(r, allow_nan=False)
    rows_csv = report_rows("coverage", r)
    assert [list(x) for x in rows_csv] == [report_columns("coverage", r)]


def test_coverage_prefers_the_stored_plan() -> None:
    data = make_data(
        3,
        plan={"is_small_net": False, "max_resampling_passes": 1},
        settings_json={"MIN_RESAMPLING_NET_SIZE": 10},
    )
    r = coverage_report(data)
    assert (r["is_small_net"], r["resampling_pass_cap"]) == (False, 1)


# ---------------------------------------------------------------- ranking


def test_ranking_order_intervals_misfits_and_unscored_nodes() -> None:
    rows: list[Row] = [(0, 1, "A", "coverage"), (2, 0, "B", "coverage")]
    data = make_data(
        4,
        rows,
        anchors={2: "C"},
        scores=[1.0, -0.5, -0.5, None],
        se=[0.5, 0.4, 0.3, None],
        fit={0: (1.0, 1.2), 1: (1.5, 0.9), 2: (math.nan, 0.8)},
        state={"ssr": 0.8},
        projections=[
            {
                "node_idx": 0,
                "projected_grade": "B",
                "confidence": 0.6,
                "expected_index": 1.2,
                "probabilities": {},
                "deferred_reason": None,
            }
        ],
    )
    r = ranking_report(data)
    assert [x["essay_id"] for x in r["rows"]] == ["e0", "e1", "a2", "e3"]
    assert [x["rank"] for x in r["rows"]] == [1, 2, 3, None]  # ties: node order
    top = r["rows"][0]
    assert top["ci95_low"] == pytest.approx(1.0 - Z95 * 0.5)
    assert top["ci95_high"] == pytest.approx(1.0 + Z95 * 0.5)
    assert (top["comparisons"], top["wins"], top["projected_grade"]) == (2, 2, "B")
    anchor = r["rows"][2]
    assert (anchor["is_anchor"], anchor["known_grade"], anchor["infit"]) == (True, "C", None)
    assert r["misfits"] == ["e1"]  # infit 1.5 > 1.3
    assert r["rows"][3]["score"] is None and r["rows"][3]["ci95_low"] is None
    assert r["ssr"] == 0.8 and r["misfit_threshold"] == 1.3
    json.dumps(r, allow_nan=False)


def test_a_batch_keeps_the_misfit_limit_it_was_scored_with() -> None:
    # infit z 1.55 is above the limit of batches scored before check pairs were on by
    # default (1.5) and below today's: each batch is flagged by its stored limit
    misfit = {"statistic": "infit_zstd", "min_comparisons": 1, "outfit_z": [0.0, 0.0, 0.0]}
    rows: list[Row] = [(0, 1, "A", "coverage"), (1, 2, "A", "coverage"), (0, 2, "B", "coverage")]
    flagged = {}
    for limit in (1.5, MISFIT_Z_THRESHOLD):
        data = make_data(
            3,
            rows,
            scores=[0.0, 0.0, 0.0],
            se=[0.5, 0.5, 0.5],
            extra={"misfit": {**misfit, "threshold": limit, "infit_z": [1.55, 0.0, 0.0]}},
        )
        r = ranking_report(data)
        assert r["misfit_threshold"] == limit
        flagged[limit] = r["misfits"]
    assert MISFIT_Z_THRESHOLD > 1.55
    assert flagged == {1.5: ["e0"], MISFIT_Z_THRESHOLD: []}


# ---------------------------------------------------------------- grades

SCALE = AssignmentRecord(id="asg", grade_scale="abc", grades=("C", "B", "A"))


def test_grades_projection_bands_and_expected_grade() -> None:
    projection = {
        "deferred_reason": None,
        "boundaries": {"C|B": -0.5, "B|A": 0.5},
        "warnings": ["anchor a3 (B) scores above anchor a4 (A)"],
        "anchors": [
            {"node": 3, "grade": "B", "score": 0.7, "fitted_index": 1.5},
            {"node": 2, "grade": "C", "score": -1.0, "fitted_index": 0.0},
            {"node": 4, "grade": "A", "score": 0.6, "fitted_index": 1.5},
        ],
    }
    probs = {"C": 0.1, "B": 0.3, "A": 0.6}
    data = make_data(
        5,
        anchors={2: "C", 3: "B", 4: "A"},
        scores=[1.0, -2.0, -1.0, 0.7, 0.6],
        se=[0.3] * 5,
        extra={"projection": projection},
        assignment=SCALE,
        projections=[
            {
                "node_idx": 1,
                "projected_grade": "C",
                "confidence": 0.9,
                "expected_index": 0.2,
                "probabilities": {"C": 0.9, "B": 0.08, "A": 0.02},
                "deferred_reason": None,
            },
            {
                "node_idx": 0,
                "projected_grade": "A",
                "confidence": 0.6,
                "expected_index": 1.5,
                "probabilities": probs,
                "deferred_reason": None,
            },
        ],
    )
    r = grades_report(data)
    assert r["projected"] is True and r["deferred_reason"] is None
    assert (r["grade_scale"], r["grades"]) == ("abc", ["C", "B", "A"])
    assert r["boundaries"] == [
        {"lower": "C", "upper": "B", "score": -0.5},
        {"lower": "B", "upper": "A", "score": 0.5},
    ]
    # anchors by score; the band is where the boundaries put the anchor's score
    assert [(a["essay_id"], a["grade"], a["band"]) for a in r["anchors"]] == [
        ("a2", "C", "C"),
        ("a4", "A", "A"),
        ("a3", "B", "A"),
    ]
    assert r["warnings"] == projection["warnings"]
    # students by score, highest first; expected grade = nearest grade to the index
    assert [s["essay_id"] for s in r["students"]] == ["e0", "e1"]
    assert r["students"][0]["expected_grade"] == "A"  # round(1.5) = 2
    assert r["students"][1]["expected_grade"] == "C"
    assert r["distribution"] == {"C": 1, "A": 1}
    rows = report_rows("grades", r)
    assert list(rows[0]) == report_columns("grades", r)
    assert (rows[0]["p_C"], rows[0]["p_B"], rows[0]["p_A"]) == (0.1, 0.3, 0.6)


@pytest.mark.parametrize(
    ("anchors", "status", "extra", "reason"),
    [
        ({}, "COMPLETED", {}, NO_ANCHORS),
        ({1: "A"}, "FAILED", {}, FAILED_BATCH),
        ({1: "A"}, "RUNNING", {}, NOT_FINISHED),
        (
            {1: "A"},
            "COMPLETED",
            {"projection": {"deferred_reason": "fewer than two distinct anchor grades"}},
            "fewer than two distinct anchor grades",
        ),
    ],
)
def test_grades_deferred_reasons(
    anchors: dict[int, str], status: str, extra: dict[str, Any], reason: str
) -> None:
    r = grades_report(make_data(3, anchors=anchors, status=status, extra=extra))
    assert r["projected"] is False
    assert r["deferred_reason"] == reason
    assert report_rows("grades", r) == []


# ---------------------------------------------------------------- HTML without data


def test_html_of_a_batch_without_comparisons_has_every_section() -> None:
    data = make_data(3, status="FAILED")
    summary = {
        "batch_id": "b1",
        "batch_name": None,
        "status": "FAILED",
        "stop_reason": "success_rate",
        "judge": "mock",
        "model": None,
        "students": 3,
        "anchors": 0,
        "total_budget": 10,
        "calls_sent": 3,
        "successful_comparisons": 0,
        "failed_comparisons": 3,
        "success_rate": 0.0,
        "successful_pairs_count": 0,
        "max_possible_pairs": 3,
        "resampling_pass_count": 0,
        "waves": 0,
        "ssr": None,
        "max_skew": 0.0,
        "position_a_share": None,
        "order_effect": None,
        "tokens_in": 0,
        "tokens_out": 0,
        "grades": {"deferred_reason": None, "projected": False},
    }
    page = render_html(
        summary,
        ranking_report(data),
        grades_report(data),
        fairness_report(data),
        coverage_report(data),
    )
    for section in SECTION_IDS:
        assert f'<section id="{section}">' in page
    assert page.count("No data to plot") == 2  # scores and convergence
    assert page.count("<img") == 2  # positions and degrees: zero counts are still drawn


def test_html_escapes_essay_ids() -> None:
    data = make_data(2, [(0, 1, "A", "coverage")], scores=[0.5, -0.5], se=[1.0, 1.0])
    nodes = [n if n.idx else replace(n, essay_id="<b>x</b>") for n in data.nodes]
    data = BatchData(
        batch=data.batch,
        nodes=nodes,
        attempts=data.attempts,
        waves=[],
        projections=[],
        assignment=None,
    )
    summary = {
        "batch_id": "b1",
        "batch_name": "<script>",
        "status": "COMPLETED",
        "stop_reason": "budget",
        "judge": "mock",
        "students": 2,
        "anchors": 0,
        "total_budget": 1,
        "calls_sent": 1,
        "successful_comparisons": 1,
        "failed_comparisons": 0,
        "success_rate": 1.0,
        "successful_pairs_count": 1,
        "max_possible_pairs": 1,
        "resampling_pass_count": 0,
        "waves": 1,
        "tokens_in": 0,
        "tokens_out": 0,
    }
    page = render_html(
        summary,
        ranking_report(data),
        grades_report(data),
        fairness_report(data),
        coverage_report(data),
    )
    assert "<b>x</b>" not in page and "&lt;b&gt;x&lt;/b&gt;" in page
    assert "&lt;script&gt;" in page and page.count("<script>") == 1  # only the sorter


# ---------------------------------------------------------------- invariants

comparisons = st.lists(
    st.tuples(
        st.integers(0, 5),
        st.integers(0, 5),
        st.sampled_from(["A", "B"]),
        st.sampled_from(["coverage", "resampling"]),
    ).filter(lambda t: t[0] != t[1]),
    max_size=40,
)


@settings(max_examples=60, deadline=None)
@given(rows=comparisons)
def test_reports_agree_with_each_other(rows: list[Row]) -> None:
    data = make_data(6, rows)
    fair = fairness_report(data)
    cov = coverage_report(data)
    rank = ranking_report(data)
    # positions: every comparison puts one node in A and one in B
    assert sum(n["a_count"] for n in fair["nodes"]) == len(rows)
    assert sum(n["b_count"] for n in fair["nodes"]) == len(rows)
    # the modes split the whole
    by_mode = [fairness_report(data, mode=m)["comparisons"] for m in Mode]
    assert sum(by_mode) == len(rows)
    # coverage: distinct edges, components partition the nodes
    assert cov["successful_pairs_count"] == len({(min(a, b), max(a, b)) for a, b, _, _ in rows})
    assert sorted(e for c in cov["components"] for e in c) == [f"e{i}" for i in range(6)]
    assert sum(d["nodes"] for d in cov["degree_distribution"]) == 6
    # comparisons per node are the same in every report
    fair_n = {n["essay_id"]: n["comparisons"] for n in fair["nodes"]}
    assert {r["essay_id"]: r["comparisons"] for r in rank["rows"]} == fair_n
    assert sum(r["wins"] for r in rank["rows"]) == len(rows)
    for report in (fair, cov, rank):
        json.dumps(report, allow_nan=False)
