"""What a user notices: re-registration says what changed, folder inventories say what
they skip, a student essay identical to an anchor is warned about, `resume
--max-comparisons` changes the budget (never below the calls already sent)."""

from __future__ import annotations

import json
import shutil
import socket
from pathlib import Path

from tests.cli.helpers import ANCHORS, LOWER5, anchors, query, run, write_profile

EXAMPLES = ANCHORS.parent


def register(db: Path, *extra: str, source: Path = ANCHORS) -> str:
    result = anchors(
        [
            "register",
            str(source),
            "--assignment-id",
            "phones",
            "--grade-scale",
            "eng5",
            "--db",
            str(db),
            *extra,
        ]
    )
    assert result.exit_code == 0, result.output
    return " ".join(result.output.split())


def test_re_registration_reports_what_changed(tmp_path: Path) -> None:
    db = tmp_path / "cj.db"
    rubric = EXAMPLES / "assignment" / "rubric.md"
    first = register(db, "--rubric", str(rubric))
    assert "8 anchor(s) added" in first and "updated" not in first
    assert "updated" not in register(db, "--rubric", str(rubric))  # the same: nothing
    other = tmp_path / "rubric2.md"
    other.write_text("A different rubric.\n", encoding="utf-8")
    changed = register(db, "--rubric", str(other))
    assert "0 anchor(s) added, 8 unchanged, 0 removed; updated: rubric" in changed
    # a subset without --replace keeps the others and says so
    subset = tmp_path / "subset"
    subset.mkdir()
    (subset / "anchors.csv").write_text("file,grade\nanchor_01.txt,C\n", encoding="utf-8")
    shutil.copy2(ANCHORS / "anchor_01.txt", subset / "anchor_01.txt")
    kept = register(db, source=subset)
    assert "7 registered anchor(s) of phones are not in this manifest and were kept" in kept
    # a new grade needs --replace and is reported
    (subset / "anchors.csv").write_text("file,grade\nanchor_01.txt,B\n", encoding="utf-8")
    regraded = register(db, "--replace", source=subset)
    assert "updated: grade of anchor_01.txt C -> B" in regraded
    assert "7 removed" in regraded


def test_folder_inventory_warns_about_skipped_files_and_takes_any_case(tmp_path: Path) -> None:
    folder = tmp_path / "essays"
    folder.mkdir()
    (folder / "anna.txt").write_text("Phones distract students in class.\n", encoding="utf-8")
    (folder / "ben.TXT").write_text("Phones help students learn.\n", encoding="utf-8")
    (folder / "cleo.Md").write_text("Schools should decide for themselves.\n", encoding="utf-8")
    (folder / "draft.docx").write_bytes(b"PK\x03\x04")
    (folder / "notes.pdf").write_bytes(b"%PDF")
    (folder / ".hidden.txt").write_text("not an essay\n", encoding="utf-8")
    result = run(["plan", "--inventory", str(folder), "--format", "json"])
    assert result.exit_code == 0, result.output
    plan = json.loads(result.stdout)
    assert plan["students"] == 3
    assert any(
        "skipped 2 file(s) that are not .txt or .md: draft.docx, notes.pdf" in w
        for w in plan["warnings"]
    )


def test_a_student_essay_identical_to_an_anchor_is_warned_about(tmp_path: Path) -> None:
    db = tmp_path / "cj.db"
    register(db)
    folder = tmp_path / "essays"
    folder.mkdir()
    shutil.copy2(ANCHORS / "anchor_03.txt", folder / "copied.txt")
    (folder / "own.txt").write_text("An essay of my own about phones.\n", encoding="utf-8")
    result = run(
        [
            "plan",
            "--inventory",
            str(folder),
            "--assignment-id",
            "phones",
            "--db",
            str(db),
            "--format",
            "json",
        ]
    )
    assert result.exit_code == 0, result.output
    warnings = json.loads(result.stdout)["warnings"]
    assert any(
        "essay 'copied' has the same text as anchor 'anchor_03.txt' (grade B)" in w
        for w in warnings
    )


def test_resume_changes_the_budget_but_never_below_the_calls_sent(tmp_path: Path) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    judge = tmp_path / "judge.yaml"
    judge.write_text(
        f"kind: openai_compatible\nname: down\nmodel: m\nbase_url: http://127.0.0.1:{port}/v1\n"
        "api_key_env: null\ntimeout_s: 5\n",
        encoding="utf-8",
    )
    profile = write_profile(
        tmp_path / "cj.yaml",
        {"MAX_CONCURRENT_REQUESTS": 1, "RETRY_BASE_DELAY_S": 0, "RETRY_MAX_DELAY_S": 0},
        {"kind": "mock"},
    )
    db = tmp_path / "cj.db"
    first = run(
        [
            "execute",
            "--inventory",
            str(LOWER5),
            "--profile",
            str(profile),
            "--judge",
            str(judge),
            "--db",
            str(db),
            "--batch-name",
            "down",
            "--max-comparisons",
            "30",
        ]
    )
    assert first.exit_code == 2  # the server is down: stopped after a few calls
    ((sent, budget),) = query(db, "SELECT calls_sent, total_budget FROM batch_state")
    assert 0 < sent < 30 and budget == 30
    too_low = run(["resume", "down", "--db", str(db), "--max-comparisons", str(sent - 1)])
    assert too_low.exit_code == 2
    assert f"already sent {sent} call(s)" in " ".join(too_low.output.split())
    assert query(db, "SELECT total_budget FROM batch_state") == [(30,)]
    raised = run(["resume", "down", "--db", str(db), "--max-comparisons", "50"])
    assert "budget 30 -> 50 calls" in " ".join(raised.output.split())
    assert query(db, "SELECT total_budget FROM batch_state") == [(50,)]
