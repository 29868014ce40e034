"""Issue 2 through the real CLI: install-level behaviour, anchors, plan, and every bad
input of spec §2 refused with one line, exit code 2 and an unchanged database."""

from __future__ import annotations

import json
import subprocess
import sys
from math import comb
from pathlib import Path

import pytest

from cj_runner import __version__
from tests.cli.helpers import (
    ANCHORS,
    LOWER5,
    REGULAR24,
    anchors,
    dump_tables,
    register_example_anchors,
    run,
)


def test_version_and_module_entry_point() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "cj_runner", "--version"], capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == f"cj-runner {__version__}"


def test_every_command_and_option_has_help() -> None:
    import typer.main

    from cj_runner.cli import anchors as anchors_cli
    from cj_runner.cli import report as report_cli
    from cj_runner.cli import run as run_cli

    for app in (run_cli.app, anchors_cli.app, report_cli.app):
        group = typer.main.get_command(app)
        for name, command in group.commands.items():  # type: ignore[attr-defined]
            assert command.help, f"{name} has no help"
            for param in command.params:
                if param.param_type_name == "option":
                    assert param.help, f"{name} {param.name} has no help"


def test_register_twice_changes_nothing_and_list_shows_grades(tmp_path: Path) -> None:
    db = tmp_path / "cj.db"
    register_example_anchors(db)
    before = dump_tables(db)
    register_example_anchors(db)
    assert dump_tables(db) == before
    result = anchors(["list", "--format", "json", "--db", str(db)])
    assert result.exit_code == 0
    rows = json.loads(result.stdout)
    assert sorted(r["grade"] for r in rows) == sorted("FEDDCBBA")
    assert {r["assignment_id"] for r in rows} == {"phones"}


def test_plan_json_on_regular24(tmp_path: Path) -> None:
    db = tmp_path / "cj.db"
    register_example_anchors(db)
    before = dump_tables(db)
    result = run(
        [
            "plan",
            "--inventory",
            str(REGULAR24),
            "--assignment-id",
            "phones",
            "--format",
            "json",
            "--db",
            str(db),
        ]
    )
    assert result.exit_code == 0, result.output
    plan = json.loads(result.stdout)
    assert plan["students"] == 24
    assert plan["anchors"] == 8
    assert plan["anchors_by_grade"] == {"F": 1, "E": 1, "D": 2, "C": 1, "B": 2, "A": 1}
    assert plan["nodes"] == 32
    assert plan["max_possible_pairs"] == comb(32, 2)
    assert plan["total_budget"] == 300
    assert plan["is_small_net"] is False
    assert plan["estimated_cost_usd"] == 0
    assert plan["estimated_input_tokens"] > 0
    assert dump_tables(db) == before  # plan writes nothing


def test_plan_with_a_priced_judge_estimates_cost(tmp_path: Path) -> None:
    result = run(
        [
            "plan",
            "--inventory",
            str(LOWER5),
            "--judge",
            "openai",
            "--format",
            "json",
            "--max-comparisons",
            "40",
        ]
    )
    assert result.exit_code == 0, result.output
    plan = json.loads(result.stdout)
    assert plan["estimated_cost_usd"] > 0
    assert plan["total_budget"] == 40


def _write(path: Path, data: bytes | str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(data, str):
        path.write_text(data, encoding="utf-8")
    else:
        path.write_bytes(data)
    return path


def _inventory(tmp: Path, rows: list[tuple[str, bytes | str]]) -> Path:
    folder = tmp / "inv"
    lines = ["essay_id,path"]
    for essay_id, content in rows:
        _write(folder / f"{essay_id}.txt", content)
        lines.append(f"{essay_id},{essay_id}.txt")
    return _write(folder / "manifest.csv", "\n".join(lines) + "\n")


GOOD = "A short essay about phones in school with enough words to be real. " * 3


def _bad_inputs(tmp: Path) -> dict[str, tuple[list[str], str]]:
    """case -> (cj-run execute arguments, text the one-line error must contain)."""
    dup = _write(tmp / "dup.csv", f"essay_id,text\ne1,{GOOD}\ne1,{GOOD} again\n")
    missing_col = _write(tmp / "nocol.csv", f"id,text\ne1,{GOOD}\n")
    empty = _inventory(tmp / "empty", [("e1", GOOD), ("e2", "   \n")])
    not_utf8 = _inventory(tmp / "latin1", [("e1", GOOD), ("e2", "Smörgås".encode("latin-1"))])
    unreadable = _write(tmp / "gone.csv", "essay_id,path\ne1,missing.txt\ne2,missing2.txt\n")
    return {
        "duplicate essay id": (["--inventory", str(dup)], "duplicate essay id"),
        "missing manifest column": (["--inventory", str(missing_col)], "essay_id"),
        "empty essay": (["--inventory", str(empty)], "empty"),
        "not UTF-8": (["--inventory", str(not_utf8)], "UTF-8"),
        "unreadable essay": (["--inventory", str(unreadable)], "missing.txt"),
        "unknown profile": (["--inventory", str(LOWER5), "--profile", "nope"], "nope"),
        "unknown setting": (["--inventory", str(LOWER5), "--set", "NOPE=1"], "NOPE"),
        "budget <= 0": (
            ["--inventory", str(LOWER5), "--max-comparisons", "0"],
            "MAX_PAIRWISE_COMPARISONS",
        ),
        "setting out of range": (
            ["--inventory", str(LOWER5), "--set", "MIN_SUCCESS_RATE=1.5"],
            "MIN_SUCCESS_RATE",
        ),
        "assignment with no anchors": (
            ["--inventory", str(LOWER5), "--assignment-id", "empty-assignment"],
            "no anchors",
        ),
    }


CASES = [
    "duplicate essay id",
    "missing manifest column",
    "empty essay",
    "not UTF-8",
    "unreadable essay",
    "unknown profile",
    "unknown setting",
    "budget <= 0",
    "setting out of range",
    "assignment with no anchors",
]


@pytest.mark.parametrize("case", CASES)
def test_bad_input_is_refused_before_any_work(tmp_path: Path, case: str) -> None:
    db = tmp_path / "cj.db"
    register_example_anchors(db)
    # an assignment that exists but has no anchors (registered, then emptied)
    result = anchors(
        [
            "register",
            str(ANCHORS),
            "--assignment-id",
            "empty-assignment",
            "--grade-scale",
            "eng5",
            "--db",
            str(db),
        ]
    )
    assert result.exit_code == 0
    from tests.cli.helpers import query

    with __import__("sqlite3").connect(db) as conn:
        conn.execute("DELETE FROM anchors WHERE assignment_id='empty-assignment'")
    assert query(db, "SELECT COUNT(*) FROM anchors WHERE assignment_id='empty-assignment'") == [
        (0,)
    ]
    args, needle = _bad_inputs(tmp_path)[case]
    before = dump_tables(db)
    result = run(["execute", "--db", str(db), *args])
    assert result.exit_code == 2, result.output
    message = result.stderr.strip()
    assert message.startswith("error:"), message
    assert "\n" not in message, message  # one line
    assert needle in message, message
    assert "Traceback" not in result.output
    assert dump_tables(db) == before


def test_unknown_grade_for_the_scale_is_refused(tmp_path: Path) -> None:
    db = tmp_path / "cj.db"
    folder = tmp_path / "anchors"
    _write(folder / "a.txt", GOOD)
    _write(folder / "b.txt", GOOD + " more")
    _write(folder / "anchors.csv", "file,grade\na.txt,A\nb.txt,Z\n")
    register_example_anchors(db)
    before = dump_tables(db)
    result = anchors(
        ["register", str(folder), "--assignment-id", "x", "--grade-scale", "eng5", "--db", str(db)]
    )
    assert result.exit_code == 2
    assert "unknown grade 'Z'" in result.stderr and "anchors.csv" in result.stderr
    assert "row 3" in result.stderr
    assert dump_tables(db) == before
