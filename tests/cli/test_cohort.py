"""Cohorts on SQLite through the real CLI: `cj-run enqueue`, one `cj-run worker`, a dead
worker's batch taken over, `cj-report cohort` in every format, and bad input refused with
nothing enqueued."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import pytest

from tests.cli.helpers import (
    EXAMPLES,
    dump_tables,
    query,
    register_example_anchors,
    report,
    run,
    write_profile,
)

SETTINGS = {
    "MAX_PAIRWISE_COMPARISONS": 30,
    "COMPARISONS_PER_STABILITY_CHECK_ITERATION": 10,
    "MAX_CONCURRENT_REQUESTS": 4,
    "SEED": 7,
}
JUDGE = {"kind": "mock", "name": "mock-cohort", "model": "mock-judge-1", "seed": 7}


def _essays() -> list[Path]:
    return sorted((EXAMPLES / "regular24").glob("*.txt"))


@pytest.fixture
def cohort(tmp_path: Path) -> Path:
    """Two class folders of five essays and one class as a manifest with inline texts."""
    root = tmp_path / "cohort"
    essays = _essays()
    for name, chosen in (("7A", essays[0:5]), ("7B", essays[5:10])):
        (root / name).mkdir(parents=True)
        for path in chosen:
            shutil.copyfile(path, root / name / path.name)
    with (root / "7C.csv").open("w", encoding="utf-8", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["essay_id", "text"])
        for path in essays[10:15]:
            writer.writerow([path.stem, path.read_text(encoding="utf-8")])
    (root / "notes.txt").write_text("not a class", encoding="utf-8")
    return root


@pytest.fixture
def db(tmp_path: Path) -> Path:
    path = tmp_path / "cj.db"
    register_example_anchors(path)
    return path


def _enqueue(db: Path, source: Path, *extra: str) -> list[str]:
    profile = write_profile(db.parent / "cohort_profile.yaml", SETTINGS, JUDGE)
    return [
        "enqueue", str(source), "--cohort", "y7", "--assignment-id", "phones",
        "--profile", str(profile), "--db", str(db), *extra,
    ]  # fmt: skip


def test_one_worker_drains_the_queue_and_the_report_shows_the_cohort(
    db: Path, cohort: Path
) -> None:
    queued = run(_enqueue(db, cohort))
    assert queued.exit_code == 0, queued.output
    assert "cohort y7: 3 batch(es) queued, 15 students" in queued.stdout
    assert query(db, "SELECT class_id, claimed_by FROM cohort_queue ORDER BY id") == [
        ("7A", None),
        ("7B", None),
        ("7C", None),
    ]
    waiting = json.loads(report(["cohort", "--db", str(db), "-f", "json"]).stdout)
    assert waiting["counts"] == {"done": 0, "failed": 0, "running": 0, "queued": 3}

    worked = run(["worker", "--db", str(db)])
    assert worked.exit_code == 0, worked.output
    rows = query(
        db,
        "SELECT q.class_id, b.name, b.status, q.claims, b.lock_owner FROM cohort_queue q "
        "JOIN batches b ON b.id = q.batch_id ORDER BY q.id",
    )
    assert rows == [
        ("7A", "y7/7A", "COMPLETED", 1, None),
        ("7B", "y7/7B", "COMPLETED", 1, None),
        ("7C", "y7/7C", "COMPLETED", 1, None),
    ]
    # a second worker finds nothing to do
    again = run(["worker", "--db", str(db)])
    assert again.exit_code == 0 and "0 batch(es) run" in again.output

    data = json.loads(report(["cohort", "y7", "--db", str(db), "-f", "json"]).stdout)
    assert list(data) == ["cohort", "classes", "counts", "grade_scale", "overall", "per_class"]
    assert data["counts"] == {"done": 3, "failed": 0, "running": 0, "queued": 0}
    assert data["grade_scale"] == ["F", "E", "D", "C", "B", "A"]
    for c in data["per_class"]:
        assert c["students"] == 5 and sum(c["grades"].values()) == 5
        assert c["calls_sent"] == 30 and c["ssr"] is not None and c["success_rate"] == 1.0
    overall = data["overall"]
    assert overall["students"] == 15 and overall["calls_sent"] == 90
    assert sum(overall["grades"].values()) == 15
    for g in data["grade_scale"]:
        assert overall["grades"][g] == sum(c["grades"][g] for c in data["per_class"])

    out = report(["cohort", "--db", str(db), "-f", "csv"]).stdout.splitlines()
    header = out[0].split(",")
    assert header[:3] == ["class_id", "batch_id", "state"] and header[-1] == "grade_A"
    assert [line.split(",")[0] for line in out[1:]] == ["7A", "7B", "7C"]
    table = report(["cohort", "--db", str(db)]).stdout
    assert "3 classes - 3 done, 0 failed, 0 running, 0 queued" in table


def test_a_dead_workers_batch_is_taken_over(db: Path, cohort: Path) -> None:
    """A claim whose heartbeat is older than --stale-after, with its batch half run and
    locked by the dead process, is taken over and finished by the next worker."""
    assert run(_enqueue(db, cohort)).exit_code == 0
    first = query(db, "SELECT batch_id FROM cohort_queue ORDER BY id LIMIT 1")[0][0]
    dead = "otherhost:4242:deadbeef"
    import sqlite3

    with sqlite3.connect(db) as conn:
        conn.execute(
            "UPDATE cohort_queue SET claimed_by = ?, claims = 1, claimed_at = "
            "'2020-01-01 00:00:00', heartbeat_at = '2020-01-01 00:00:00' WHERE batch_id = ?",
            (dead, first),
        )
        conn.execute(
            "UPDATE batches SET status = 'RUNNING', lock_owner = ?, "
            "lock_heartbeat = '2020-01-01 00:00:00' WHERE id = ?",
            (dead, first),
        )
    counts = json.loads(report(["cohort", "--db", str(db), "-f", "json"]).stdout)["counts"]
    assert counts == {"done": 0, "failed": 0, "running": 1, "queued": 2}
    worked = run(["worker", "--db", str(db), "--stale-after", "60"])
    assert worked.exit_code == 0, worked.output
    assert f"y7/7A ({first}): taken over from {dead} (no heartbeat)" in worked.output
    rows = query(
        db, "SELECT b.status, q.claims FROM cohort_queue q JOIN batches b ON b.id = q.batch_id"
    )
    assert rows == [("COMPLETED", 2), ("COMPLETED", 1), ("COMPLETED", 1)]


def _write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


@pytest.mark.parametrize(
    ("case", "expected"),
    [
        ("missing_folder", "cohort folder or CSV not found"),
        ("unknown_profile", "unknown profile 'no_such_profile'"),
        ("empty_csv", "the cohort CSV lists no classes"),
        ("duplicate_csv", "row 3: duplicate class id '7A' (also row 2)"),
        ("duplicate_folder", "duplicate class id '7A'"),
        ("bad_class", "7C.csv: missing column 'essay_id'"),
        ("missing_inventory", "row 2, field 'inventory'"),
        ("twice", "cohort 'y7' already has class '7A' queued (and 2 more)"),
    ],
)
def test_bad_input_enqueues_nothing(
    db: Path, cohort: Path, tmp_path: Path, case: str, expected: str
) -> None:
    source = cohort
    extra: list[str] = []
    if case == "missing_folder":
        source = tmp_path / "nowhere"
    elif case == "unknown_profile":
        extra = ["--profile", "no_such_profile"]
    elif case == "empty_csv":
        source = _write(tmp_path / "cohort.csv", "class_id,inventory\n")
    elif case == "duplicate_csv":
        source = _write(tmp_path / "cohort.csv", "class_id,inventory\n7A,cohort/7A\n7A,cohort/7B\n")
    elif case == "duplicate_folder":
        _write(cohort / "7A.csv", "essay_id,text\na,some text\nb,other text\n")
    elif case == "bad_class":
        _write(cohort / "7C.csv", "id,text\na,some text\n")
    elif case == "missing_inventory":
        source = _write(tmp_path / "cohort.csv", "class_id,inventory\n7A,cohort/none\n")
    elif case == "twice":
        assert run(_enqueue(db, cohort)).exit_code == 0
    before = dump_tables(db)
    result = run(_enqueue(db, source, *extra))
    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and expected in lines[0], lines
    assert dump_tables(db) == before


def test_a_cohort_csv_enqueues_its_rows(db: Path, cohort: Path, tmp_path: Path) -> None:
    source = _write(
        tmp_path / "cohort.csv", "class_id,inventory\nred,cohort/7B\nblue,cohort/7C.csv\n"
    )
    queued = run(_enqueue(db, source, "--json"))
    assert queued.exit_code == 0, queued.output
    data = json.loads(queued.stdout)
    assert [b["class_id"] for b in data["batches"]] == ["red", "blue"]
    assert data["queued"] == 2 and data["students"] == 10
    assert query(db, "SELECT name FROM batches WHERE name LIKE 'y7/%' ORDER BY name") == [
        ("y7/blue",),
        ("y7/red",),
    ]


def test_a_worker_without_the_judges_key_gives_the_batch_back_and_stops(
    db: Path, cohort: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    assert run(_enqueue(db, cohort, "--judge", "openai")).exit_code == 0
    worked = run(["worker", "--db", str(db), "--quiet"])
    assert worked.exit_code == 2
    assert worked.output.strip().splitlines() == [
        "error: judge 'openai' needs an API key in the environment variable OPENAI_API_KEY, "
        "which is not set"
    ]
    assert query(db, "SELECT claimed_by, claims FROM cohort_queue ORDER BY id") == [
        (None, 1),
        (None, 0),
        (None, 0),
    ]
    assert query(db, "SELECT count(*) FROM comparisons") == [(0,)]


def test_failed_classes_are_reported_as_failed(db: Path, cohort: Path) -> None:
    refusing = {**JUDGE, "errors": {"refused": 1.0}}
    profile = write_profile(db.parent / "refusing.yaml", SETTINGS, refusing)
    queued = run(
        ["enqueue", str(cohort), "--cohort", "bad", "--assignment-id", "phones",
         "--profile", str(profile), "--db", str(db)]
    )  # fmt: skip
    assert queued.exit_code == 0, queued.output
    assert run(["worker", "--db", str(db), "--cohort", "bad"]).exit_code == 0
    data = json.loads(report(["cohort", "bad", "--db", str(db), "-f", "json"]).stdout)
    assert data["counts"] == {"done": 0, "failed": 3, "running": 0, "queued": 0}
    assert {c["status"] for c in data["per_class"]} == {"FAILED"}
    assert all(c["success_rate"] == 0.0 for c in data["per_class"])
