"""`cj-report comparisons`: every judge call as a row, in CSV, JSON and JSONL."""

from __future__ import annotations

import csv
import io
import json
from datetime import datetime
from pathlib import Path

import pytest

from cj_runner.services.export import COMPARISON_COLUMNS
from tests.cli.helpers import LOWER5, execute_json, query, report, write_profile


@pytest.fixture(scope="module")
def flaky(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """LOWER5 with a mock judge that times out now and then and has prices."""
    tmp = tmp_path_factory.mktemp("export")
    profile = write_profile(
        tmp / "flaky.yaml",
        {"MAX_PAIRWISE_COMPARISONS": 40, "RETRY_BASE_DELAY_S": 0, "RETRY_MAX_DELAY_S": 0},
        {
            "kind": "mock",
            "name": "flaky",
            "seed": 3,
            "errors": {"timeout": 0.2},
            "price_input_per_mtok": 2.0,
            "price_output_per_mtok": 10.0,
        },
    )
    db = tmp / "cj.db"
    summary = execute_json(
        db, ["--inventory", str(LOWER5), "--profile", str(profile), "--batch-name", "flaky"]
    )
    return db, summary["batch_id"]


def export(db: Path, *args: str) -> str:
    result = report(["comparisons", "flaky", "--db", str(db), *args])
    assert result.exit_code == 0, result.output
    return result.stdout


def test_csv_has_one_row_per_stored_attempt(flaky: tuple[Path, str]) -> None:
    db, batch_id = flaky
    rows = list(csv.DictReader(io.StringIO(export(db))))
    stored = query(
        db,
        "SELECT slot, attempt, status, tokens_in, tokens_out FROM comparisons "
        "WHERE batch_id = ? ORDER BY slot, attempt",
        (batch_id,),
    )
    assert [(int(r["slot"]), int(r["attempt"]), r["status"]) for r in rows] == [
        s[:3] for s in stored
    ]
    assert list(rows[0]) == list(COMPARISON_COLUMNS)
    failed = [r for r in rows if r["status"] != "success"]
    assert failed and all(r["error_kind"] == "timeout" for r in failed)
    assert all(r["winner"] == "" and r["win_a"] == "" for r in failed)
    for row, (_, _, status, t_in, t_out) in zip(rows, stored, strict=True):
        if status == "success":
            assert float(row["cost_usd"]) == pytest.approx((t_in * 2.0 + t_out * 10.0) / 1e6)
            assert row["winner"] == row["essay_a" if row["winner_position"] == "A" else "essay_b"]
            assert int(row["win_a"]) + int(row["win_b"]) == 1
            assert row["judge"] == "flaky" and row["justification"]
            sent = datetime.fromisoformat(row["sent_at"])
            assert sent.utcoffset() is not None
            assert datetime.fromisoformat(row["received_at"]) >= sent


def test_successful_keeps_one_row_per_answer(flaky: tuple[Path, str]) -> None:
    db, batch_id = flaky
    rows = list(csv.DictReader(io.StringIO(export(db, "--successful"))))
    ((successes,),) = query(db, "SELECT successes FROM batch_state WHERE batch_id = ?", (batch_id,))
    assert rows and all(r["status"] == "success" for r in rows)
    assert len(rows) == len({r["slot"] for r in rows}) == successes


def test_json_and_jsonl_hold_the_same_rows(flaky: tuple[Path, str]) -> None:
    db, batch_id = flaky
    whole = json.loads(export(db, "--format", "json"))
    assert list(whole)[:4] == ["batch_id", "batch_name", "status", "stop_reason"]
    assert whole["batch_id"] == batch_id and whole["columns"] == list(COMPARISON_COLUMNS)
    lines = [json.loads(line) for line in export(db, "--format", "jsonl").splitlines()]
    assert lines == whole["comparisons"]
    assert all(list(line) == list(COMPARISON_COLUMNS) for line in lines)
    assert any(line["win_a"] is None for line in lines)  # a failed attempt: null, not ""


def test_output_file_and_bad_format(flaky: tuple[Path, str], tmp_path: Path) -> None:
    db, _ = flaky
    target = tmp_path / "comparisons.csv"
    result = report(["comparisons", "flaky", "--db", str(db), "-o", str(target)])
    assert result.exit_code == 0
    assert target.read_text(encoding="utf-8").startswith("batch_id,wave,mode,")
    bad = report(["comparisons", "flaky", "--db", str(db), "--format", "table"])
    assert bad.exit_code == 2
    assert "csv, json or jsonl" in bad.output
