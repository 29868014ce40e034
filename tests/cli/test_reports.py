"""`cj-report` on batches made by the real CLI with the mock judge: every report in every
format, pinned JSON keys, the fairness gate on a fair and on a biased batch."""

from __future__ import annotations

import csv
import io
import json
import sqlite3
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from cj_runner.core.posterior import TAU_GIBBS_LABEL, score_posterior
from tests.cli.helpers import (
    LOWER5,
    REGULAR24,
    execute_json,
    query,
    register_example_anchors,
    report,
)

KINDS = ("fairness", "coverage", "ranking", "grades")

# ---------------------------------------------------------------- pinned JSON keys
# The JSON of every report is a public contract (docs/reports.md). Adding a key means
# updating the docs and these lists; renaming or removing one breaks users' scripts.

HEADER = [
    "batch_id",
    "batch_name",
    "status",
    "stop_reason",
    "stop_detail",
    "provisional",
    "judge_health",
]
KEYS: dict[str, list[str]] = {
    "fairness": [
        *HEADER,
        "mode",
        "comparisons",
        "max_skew",
        "mean_skew",
        "max_skew_threshold",
        "nodes_above_max_skew",
        "never_in_a",
        "never_in_b",
        "missing_complement",
        "flip_rate",
        "flip_edges",
        "position_a_wins",
        "position_a_share",
        "position_a_ci95",
        "order_effect",
        "order_effect_se",
        "nodes",
    ],
    "coverage": [
        *HEADER,
        "nodes",
        "students",
        "anchors",
        "max_possible_pairs",
        "successful_pairs_count",
        "coverage_fraction",
        "unique_coverage_complete",
        "resampling_pass_count",
        "resampling_pass_cap",
        "is_small_net",
        "total_budget",
        "calls_sent",
        "budget_left",
        "budget_used_fraction",
        "successful_comparisons",
        "failed_comparisons",
        "successes_by_mode",
        "failures_by_kind",
        "comparisons_per_node",
        "degree_distribution",
        "score_stability_threshold",
        "component_count",
        "components",
        "waves",
    ],
    "ranking": [
        *HEADER,
        "interval",
        "mle_interval",
        "tau",
        "tau_ci95_low",
        "tau_ci95_high",
        "tau_label",
        "ssr",
        "ssr_note",
        "robust_reliability",
        "robust_reliability_method",
        "robust_reliability_sd",
        "reliability_warning",
        "order_effect",
        "order_effect_se",
        "mle_order_effect",
        "mle_order_effect_se",
        "misfit_threshold",
        "misfits",
        "misfit_statistic",
        "misfit_min_comparisons",
        "rows",
    ],
    "grades": [
        *HEADER,
        "assignment_id",
        "grade_scale",
        "grades",
        "interval",
        "probability_method",
        "projected",
        "deferred_reason",
        "distribution",
        "boundaries",
        "anchors",
        "warnings",
        "students",
    ],
}
FAIRNESS_NODE = ["essay_id", "is_anchor", "a_count", "b_count", "comparisons", "skew"]
MISSING_COMPLEMENT = ["essays", "comparisons", "asked_as"]
WAVE = [
    "wave",
    "mode",
    "size",
    "successes",
    "calls_sent",
    "max_score_change",
    "ssr",
    "decision",
    "reason",
]
FAILURE_KIND = ["attempts", "retried", "failed", "lost", "other"]
PER_NODE = ["min", "median", "max"]
DEGREE = ["comparisons", "nodes"]
RANKING_ROW = [
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
]
BOUNDARY = ["lower", "upper", "score"]
ANCHOR = ["essay_id", "grade", "score", "se", "fitted_index", "band"]
STUDENT = [
    "essay_id",
    "score",
    "se",
    "projected_grade",
    "confidence",
    "expected_index",
    "expected_grade",
    "probabilities",
    "deferred_reason",
]
CSV_COLUMNS = {
    "fairness": FAIRNESS_NODE,
    "coverage": WAVE,
    "ranking": RANKING_ROW,
    "grades": [k for k in STUDENT if k != "probabilities"],
}
# the summary belongs to `cj-run execute`; these keys must stay (more may be added)
SUMMARY_KEYS = {
    "batch_id",
    "batch_name",
    "status",
    "stop_reason",
    "total_budget",
    "calls_sent",
    "successful_comparisons",
    "failed_comparisons",
    "success_rate",
    "max_possible_pairs",
    "successful_pairs_count",
    "unique_coverage_complete",
    "resampling_pass_count",
    "ssr",
    "order_effect",
    "order_effect_se",
    "position_a_share",
    "max_skew",
    "mean_skew",
    "top",
    "grades",
}


# ---------------------------------------------------------------- batches


@dataclass(frozen=True)
class Batches:
    db: Path
    lower5: str  # batch id (named "lower5")
    regular: str  # batch id (named "regular")
    biased_db: Path  # a copy of db in which L5-01 is always in position A


def bias_orientation(src: Path, dst: Path, batch_id: str, node: int = 0) -> None:
    """Copy the database and rewrite the LOWER5 batch as if ``node`` had always been shown
    in position A.

    Every successful comparison that had the node in position B gets its positions swapped
    and its winner letter flipped, so the same essay still wins: the verdicts are the
    judge's, only the orientation is biased (what a runner without the fair complement
    rule could store). The node then has A = 16, B = 0, skew 1.0, and its four edges were
    each asked four times in one orientation only.
    """
    with sqlite3.connect(src) as source, sqlite3.connect(dst) as target:
        source.backup(target)
        target.execute(
            "UPDATE comparisons SET a_idx = b_idx, b_idx = a_idx, "
            "winner = CASE winner WHEN 'A' THEN 'B' ELSE 'A' END "
            "WHERE batch_id = ? AND status = 'success' AND b_idx = ?",
            (batch_id, node),
        )
    source.close()
    target.close()


@pytest.fixture(scope="module")
def batches(tmp_path_factory: pytest.TempPathFactory) -> Batches:
    """A LOWER5 small net and a regular batch with anchors, made once for the module."""
    tmp = tmp_path_factory.mktemp("reports")
    db = tmp / "cj.db"
    lower5 = execute_json(
        db,
        ["--inventory", str(LOWER5), "--profile", "mock_lower5", "--batch-name", "lower5"],
    )
    assert lower5["status"] == "COMPLETED"
    register_example_anchors(db)
    regular = execute_json(
        db,
        [
            "--inventory",
            str(REGULAR24),
            "--assignment-id",
            "phones",
            "--profile",
            "mock_generic_batch",
            "--max-comparisons",
            "200",
            "--batch-name",
            "regular",
        ],
    )
    assert regular["status"] == "COMPLETED"
    biased = tmp / "biased.db"
    bias_orientation(db, biased, lower5["batch_id"])
    return Batches(db, lower5["batch_id"], regular["batch_id"], biased)


def report_json(db: Path, *args: str) -> dict[str, Any]:
    result = report([*args, "--db", str(db), "--format", "json"])
    assert result.exit_code == 0, result.output
    data: dict[str, Any] = json.loads(result.stdout)
    return data


# ---------------------------------------------------------------- formats and keys


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("which", ["lower5", "regular"])
def test_json_keys_are_pinned(batches: Batches, kind: str, which: str) -> None:
    data = report_json(batches.db, kind, which)
    assert list(data) == KEYS[kind]
    assert data["batch_name"] == which
    if kind == "fairness":
        assert all(list(n) == FAIRNESS_NODE for n in data["nodes"])
        assert all(list(m) == MISSING_COMPLEMENT for m in data["missing_complement"])
    elif kind == "coverage":
        assert all(list(w) == WAVE for w in data["waves"]) and data["waves"]
        assert list(data["comparisons_per_node"]) == PER_NODE
        assert all(list(d) == DEGREE for d in data["degree_distribution"])
        assert all(list(f) == FAILURE_KIND for f in data["failures_by_kind"].values())
    elif kind == "ranking":
        assert all(list(r) == RANKING_ROW for r in data["rows"]) and data["rows"]
    else:
        assert all(list(b) == BOUNDARY for b in data["boundaries"])
        assert all(list(a) == ANCHOR for a in data["anchors"])
        assert all(list(s) == STUDENT for s in data["students"])


def test_nested_grade_keys_on_the_regular_batch(batches: Batches) -> None:
    # the loops above are empty for LOWER5 (no anchors): check they ran here
    data = report_json(batches.db, "grades", "regular")
    assert data["boundaries"] and data["anchors"] and data["students"]


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("which", ["lower5", "regular"])
def test_csv_is_the_main_table(batches: Batches, kind: str, which: str) -> None:
    result = report([kind, which, "--db", str(batches.db), "--format", "csv"])
    assert result.exit_code == 0, result.output
    reader = csv.DictReader(io.StringIO(result.stdout))
    rows = list(reader)
    data = report_json(batches.db, kind, which)
    columns = CSV_COLUMNS[kind]
    if kind == "grades":
        columns = columns + [f"p_{g}" for g in data["grades"]]
    assert reader.fieldnames == [*columns, "provisional", "judge_signal"]
    assert {(r["provisional"], r["judge_signal"]) for r in rows} <= {("False", "True")}
    table = {"fairness": "nodes", "coverage": "waves", "ranking": "rows", "grades": "students"}
    assert len(rows) == len(data[table[kind]])
    if kind == "ranking":
        assert [r["essay_id"] for r in rows] == [r["essay_id"] for r in data["rows"]]


@pytest.mark.parametrize("kind", KINDS)
def test_table_shows_the_report(batches: Batches, kind: str) -> None:
    result = report([kind, "regular", "--db", str(batches.db)])
    assert result.exit_code == 0, result.output
    out = result.stdout
    assert batches.regular in out
    expected = {
        "fairness": ["Fairness", "Positions per node", "A won", "order effect", "flip rate"],
        "coverage": ["Coverage", "Waves", "496", "calls", "stop reason: budget"],
        "ranking": ["Ranking", "SSR", "95% interval", "infit", "(anchor "],
        "grades": ["Grades", "Anchor calibration", "boundaries", "P(A)", "anchor:"],
    }[kind]
    for text in expected:
        assert text in out, text


def test_summary_in_every_format(batches: Batches) -> None:
    data = report_json(batches.db, "summary", "lower5")
    assert SUMMARY_KEYS.issubset(data)
    table = report(["summary", "lower5", "--db", str(batches.db)])
    assert table.exit_code == 0 and "resampling_cap" in table.stdout
    flat = report(["summary", "lower5", "--db", str(batches.db), "--format", "csv"])
    rows = list(csv.DictReader(io.StringIO(flat.stdout)))
    assert len(rows) == 1 and rows[0]["batch_id"] == batches.lower5
    assert "top" not in rows[0]  # nested fields stay in the JSON


@pytest.mark.parametrize("fmt", ["table", "json", "csv"])
def test_output_file(batches: Batches, tmp_path: Path, fmt: str) -> None:
    target = tmp_path / f"ranking.{fmt}"
    result = report(["ranking", "lower5", "--db", str(batches.db), "-f", fmt, "-o", str(target)])
    assert result.exit_code == 0, result.output
    assert result.stdout == ""
    text = target.read_text(encoding="utf-8")
    if fmt == "json":
        assert json.loads(text) == report_json(batches.db, "ranking", "lower5")
    elif fmt == "csv":
        assert text.startswith("rank,essay_id,")
    else:
        assert "Ranking" in text and "L5-03" in text
        assert "\x1b[" not in text  # plain text, no terminal colours


def test_batch_by_id_or_name(batches: Batches) -> None:
    by_id = report_json(batches.db, "coverage", batches.lower5)
    by_name = report_json(batches.db, "coverage", "lower5")
    assert by_id == by_name


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["ranking", "nope"], "no batch with id or name 'nope'"),
        (["ranking", "lower5", "--format", "xml"], "--format must be table, json or csv"),
        (["fairness", "lower5", "--mode", "both"], "--mode must be one of"),
        (["summary", "lower5", "--format", "yaml"], "--format must be table, json or csv"),
    ],
)
def test_bad_arguments_exit_2(batches: Batches, args: list[str], message: str) -> None:
    result = report([*args, "--db", str(batches.db)])
    assert result.exit_code == 2
    assert message in result.stderr
    assert "Traceback" not in result.output


def test_missing_database_exit_2(tmp_path: Path) -> None:
    result = report(["ranking", "x", "--db", str(tmp_path / "none.db")])
    assert result.exit_code == 2
    assert "no database" in result.stderr
    assert not (tmp_path / "none.db").exists()


# ---------------------------------------------------------------- LOWER5 content


def test_lower5_fairness_coverage_ranking(batches: Batches) -> None:
    fair = report_json(batches.db, "fairness", "lower5")
    assert [(n["a_count"], n["b_count"], n["skew"]) for n in fair["nodes"]] == [(8, 8, 0.0)] * 5
    assert fair["comparisons"] == 40 and fair["max_skew"] == 0.0
    assert fair["missing_complement"] == [] and fair["never_in_a"] == []
    assert fair["flip_edges"] == 10 and 0.0 <= fair["flip_rate"] <= 1.0
    low, high = fair["position_a_ci95"]
    assert low <= fair["position_a_share"] <= high
    assert fair["order_effect"] is not None and fair["order_effect_se"] > 0

    cov = report_json(batches.db, "coverage", "lower5")
    assert (cov["max_possible_pairs"], cov["successful_pairs_count"]) == (10, 10)
    assert cov["unique_coverage_complete"] is True
    assert (cov["resampling_pass_count"], cov["resampling_pass_cap"]) == (3, 3)
    assert cov["is_small_net"] is True
    assert (cov["calls_sent"], cov["total_budget"]) == (40, 60)
    assert cov["comparisons_per_node"] == {"min": 16, "median": 16.0, "max": 16}
    assert cov["components"] == [["L5-01", "L5-02", "L5-03", "L5-04", "L5-05"]]
    assert [w["mode"] for w in cov["waves"]] == ["coverage"] + ["resampling"] * 3
    assert cov["waves"][-1]["reason"] == "resampling_cap" == cov["stop_reason"]
    assert cov["successes_by_mode"] == {"coverage": 10, "resampling": 30}

    rank = report_json(batches.db, "ranking", "lower5")
    rows = rank["rows"]
    assert [r["rank"] for r in rows] == [1, 2, 3, 4, 5]
    assert [r["score"] for r in rows] == sorted((r["score"] for r in rows), reverse=True)
    for r in rows:
        assert r["ci95_low"] == pytest.approx(r["score"] - 1.959963984540054 * r["se"])
        assert r["ci95_high"] == pytest.approx(r["score"] + 1.959963984540054 * r["se"])
        assert r["comparisons"] == 16
    assert sum(r["wins"] for r in rows) == 40
    assert rank["ssr"] is not None


def test_lower5_grades_are_deferred_without_anchors(batches: Batches) -> None:
    grades = report_json(batches.db, "grades", "lower5")
    assert grades["projected"] is False
    assert grades["deferred_reason"] == "the batch has no anchors"
    table = report(["grades", "lower5", "--db", str(batches.db)])
    assert "deferred: the batch has no anchors" in table.stdout


def test_fairness_mode_filter(batches: Batches) -> None:
    cov = report_json(batches.db, "fairness", "lower5", "--mode", "coverage")
    res = report_json(batches.db, "fairness", "lower5", "--mode", "resampling")
    assert (cov["mode"], cov["comparisons"]) == ("coverage", 10)
    assert (res["mode"], res["comparisons"]) == ("resampling", 30)
    assert all(n["comparisons"] == 4 for n in cov["nodes"])
    assert all((n["a_count"], n["b_count"]) == (6, 6) for n in res["nodes"])
    # coverage asks each edge once: no edge in both orientations yet
    assert cov["flip_edges"] == 0 and cov["flip_rate"] is None


# ---------------------------------------------------------------- the fairness gate


def test_max_skew_gate_passes_on_lower5(batches: Batches) -> None:
    result = report(["fairness", "--max-skew", "0.1", batches.lower5, "--db", str(batches.db)])
    assert result.exit_code == 0, result.output
    assert "no node above 0.1" in result.stdout


def test_max_skew_gate_fails_on_a_biased_batch(batches: Batches) -> None:
    db = batches.biased_db
    result = report(["fairness", "--max-skew", "0.1", batches.lower5, "--db", str(db)])
    assert result.exit_code == 1
    assert "A/B skew above 0.1" in result.stderr and "L5-01" in result.stderr
    assert "Positions per node" in result.stdout  # the report is printed before failing

    as_json = report(["fairness", "lower5", "--max-skew", "0.1", "--db", str(db), "-f", "json"])
    assert as_json.exit_code == 1
    data = json.loads(as_json.stdout)
    first = data["nodes"][0]
    assert (first["essay_id"], first["a_count"], first["b_count"]) == ("L5-01", 16, 0)
    assert first["skew"] == 1.0 and data["max_skew"] == 1.0
    assert "L5-01" in data["nodes_above_max_skew"] and data["max_skew_threshold"] == 0.1
    assert data["never_in_b"] == ["L5-01"]
    assert len(data["missing_complement"]) == 4
    assert all(m["asked_as"][0] == "L5-01" for m in data["missing_complement"])
    # without the gate the same report exits 0
    assert report(["fairness", "lower5", "--db", str(db)]).exit_code == 0


# ---------------------------------------------------------------- regular batch content


def test_regular_batch_reports(batches: Batches) -> None:
    summary = report_json(batches.db, "summary", "regular")
    cov = report_json(batches.db, "coverage", "regular")
    assert (cov["nodes"], cov["students"], cov["anchors"]) == (32, 24, 8)
    assert cov["calls_sent"] == cov["total_budget"] == 200 == summary["calls_sent"]
    assert cov["successful_pairs_count"] < cov["max_possible_pairs"] == 496
    assert cov["is_small_net"] is False
    kinds = {k: v["attempts"] for k, v in cov["failures_by_kind"].items()}
    assert kinds == summary["attempt_errors"]
    assert cov["waves"][-1]["calls_sent"] == 200

    rank = report_json(batches.db, "ranking", "regular")
    anchors = [r for r in rank["rows"] if r["is_anchor"]]
    assert len(anchors) == 8 and all(a["known_grade"] for a in anchors)
    students = [r for r in rank["rows"] if not r["is_anchor"]]
    assert all(s["projected_grade"] for s in students)
    assert rank["misfits"] == [r["essay_id"] for r in rank["rows"] if r["misfit"]]
    assert rank["ssr"] == summary["ssr"]

    grades = report_json(batches.db, "grades", "regular")
    assert grades["projected"] is True and grades["deferred_reason"] is None
    assert grades["grades"] == ["F", "E", "D", "C", "B", "A"]
    assert [(b["lower"], b["upper"]) for b in grades["boundaries"]] == [
        ("F", "E"),
        ("E", "D"),
        ("D", "C"),
        ("C", "B"),
        ("B", "A"),
    ]
    scores = [b["score"] for b in grades["boundaries"]]
    assert scores == sorted(scores)
    assert len(grades["anchors"]) == 8 and len(grades["students"]) == 24
    assert sum(grades["distribution"].values()) == 24
    for s in grades["students"]:
        assert sum(s["probabilities"].values()) == pytest.approx(1.0)
        assert s["confidence"] == pytest.approx(max(s["probabilities"].values()))
        assert s["projected_grade"] == max(s["probabilities"], key=s["probabilities"].get)


def test_reports_show_the_samplers_tau(batches: Batches, tmp_path: Path) -> None:
    """The spread τ every report shows is that of the posterior whose scores they show:
    the Gibbs sampler's posterior mean, recomputed here from the stored comparisons with
    the batch's seed, not the evidence's maximum the sampler starts from (the two differ
    on this batch)."""
    (seed, settings_json), *_ = query(
        batches.db, "SELECT seed, settings_json FROM batches WHERE id = ?", (batches.regular,)
    )
    rows = query(
        batches.db,
        "SELECT a_idx, b_idx, winner FROM comparisons "
        "WHERE batch_id = ? AND status = 'success' ORDER BY slot",
        (batches.regular,),
    )
    n = query(batches.db, "SELECT count(*) FROM nodes WHERE batch_id = ?", (batches.regular,))[0][0]
    first = np.array([r[0] for r in rows])
    second = np.array([r[1] for r in rows])
    won = np.array([r[2] == "A" for r in rows])
    order = bool(json.loads(settings_json)["FIT_ORDER_EFFECT"])
    post = score_posterior(n, first, second, won, order_effect=order, seed=seed)
    assert post.tau_label == TAU_GIBBS_LABEL
    assert abs(post.tau - post.evidence_tau) > 0.05  # the two differ here
    ranking = report_json(batches.db, "ranking", "regular")
    # the same posterior as the shown scores (so the recomputation is the batch's own)
    shown = {r["essay_id"]: r["score"] for r in ranking["rows"]}
    ids = dict(
        query(batches.db, "SELECT idx, essay_id FROM nodes WHERE batch_id = ?", (batches.regular,))
    )
    np.testing.assert_allclose([shown[ids[i]] for i in range(n)], post.scores, atol=1e-12)
    assert ranking["tau"] == pytest.approx(post.tau, abs=1e-12)
    assert ranking["tau_ci95_low"] == pytest.approx(post.tau_low, abs=1e-12)
    assert ranking["tau_ci95_high"] == pytest.approx(post.tau_high, abs=1e-12)
    assert ranking["tau_ci95_low"] < ranking["tau"] < ranking["tau_ci95_high"]
    assert ranking["tau_label"] == TAU_GIBBS_LABEL
    summary = json.loads(
        report(["summary", "regular", "--db", str(batches.db), "--format", "json"]).stdout
    )
    assert summary["tau"] == ranking["tau"] and summary["tau_label"] == TAU_GIBBS_LABEL
    table = report(["ranking", "regular", "--db", str(batches.db)]).stdout
    assert f"τ {post.tau:.2f} [{post.tau_low:.2f}, {post.tau_high:.2f}]" in table
    target = tmp_path / "report.html"
    assert report(["html", "regular", "--db", str(batches.db), "-o", str(target)]).exit_code == 0
    page = target.read_text(encoding="utf-8")
    assert f"{post.tau:.2f} [{post.tau_low:.2f}, {post.tau_high:.2f}]" in page
    assert "posterior mean (Gibbs sampler)" in page
