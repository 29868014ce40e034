"""Judge health through `cj-run execute` (issue 13 item 6): a judge that always answers
"A" gets a summary that says the results carry no signal and no grades; a sane mock judge
gets no warning."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import pytest

from tests.cli.helpers import REGULAR24, register_example_anchors, report, run, write_profile

SETTINGS = {"MAX_PAIRWISE_COMPARISONS": 160, "SEED": 3, "RETRY_BASE_DELAY_S": 0.0}


@pytest.fixture(scope="module")
def db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("health") / "cj.db"
    register_example_anchors(path)
    return path


def execute(db: Path, tmp_path: Path, judge: dict[str, object], name: str) -> dict[str, object]:
    profile = write_profile(tmp_path / f"{name}.yaml", SETTINGS, {"kind": "mock", **judge})
    args = ["execute", "-i", str(REGULAR24), "--assignment-id", "phones"]
    args += ["--profile", str(profile), "--batch-name", name, "--db", str(db), "--json"]
    result = run(args)
    assert result.exit_code == 0, result.output
    summary: dict[str, object] = json.loads(result.stdout)
    return summary


def test_a_judge_that_always_answers_a_carries_no_signal(db: Path, tmp_path: Path) -> None:
    summary = execute(db, tmp_path, {"position_bias": 1.0, "seed": 3}, "always-a")
    health = summary["judge_health"]
    assert isinstance(health, dict)
    assert health["status"] == "no_signal" and health["signal"] is False
    assert summary["judge_signal"] is False
    n = summary["successful_comparisons"]  # the default infogain may stop on stability
    assert any(f"picked position A in {n} of {n}" in r for r in health["reasons"])
    grades = summary["grades"]
    assert isinstance(grades, dict)
    assert grades["projected"] is False and grades["distribution"] == {}
    assert "the judge carries no usable signal" in grades["deferred_reason"]
    assert grades["warnings"] == []  # no anchor warnings about contradictions of noise

    table = report(["summary", "always-a", "--db", str(db)])
    assert table.exit_code == 0, table.output
    assert "NO USABLE SIGNAL" in table.stdout and "trustworthy" in table.stdout
    grades_table = report(["grades", "always-a", "--db", str(db)])
    assert "NO USABLE SIGNAL" in " ".join(grades_table.stdout.split())

    graded = json.loads(report(["grades", "always-a", "--db", str(db), "--format", "json"]).stdout)
    assert graded["projected"] is False and graded["judge_health"]["status"] == "no_signal"
    assert all(s["projected_grade"] is None for s in graded["students"])
    ranking_csv = report(["ranking", "always-a", "--db", str(db), "--format", "csv"]).stdout
    rows = list(csv.DictReader(io.StringIO(ranking_csv)))
    assert rows and {r["judge_signal"] for r in rows} == {"False"}
    page = report(["html", "always-a", "--db", str(db), "-o", str(tmp_path / "r.html")])
    assert page.exit_code == 0, page.output
    assert "The judge carries no usable signal." in (tmp_path / "r.html").read_text()


def test_a_sane_judge_gets_no_warning(db: Path, tmp_path: Path) -> None:
    summary = execute(db, tmp_path, {"noise": 1.0, "position_bias": 0.03, "seed": 3}, "sane")
    health = summary["judge_health"]
    assert isinstance(health, dict)
    assert health["status"] == "ok" and health["reasons"] == []
    assert summary["judge_signal"] is True
    grades = summary["grades"]
    assert isinstance(grades, dict) and grades["projected"] is True
    table = report(["summary", "sane", "--db", str(db)])
    assert "NO USABLE SIGNAL" not in table.stdout and "provisional" not in table.stdout
