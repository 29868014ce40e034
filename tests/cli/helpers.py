"""Helpers for CLI tests: run the real typer apps, read the SQLite file back."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any

import typer
from typer.testing import CliRunner, Result

from cj_runner.cli.anchors import app as anchors_app
from cj_runner.cli.report import app as report_app
from cj_runner.cli.run import app as run_app

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"
LOWER5 = EXAMPLES / "lower5" / "manifest.csv"
REGULAR24 = EXAMPLES / "regular24" / "manifest.csv"
ANCHORS = EXAMPLES / "anchors"

_runner = CliRunner()


def invoke(app: typer.Typer, args: list[str]) -> Result:
    """Run a command; exceptions inside surface as failures with their traceback."""
    return _runner.invoke(app, args, catch_exceptions=False)


def run(args: list[str]) -> Result:
    return invoke(run_app, args)


def anchors(args: list[str]) -> Result:
    return invoke(anchors_app, args)


def report(args: list[str]) -> Result:
    return invoke(report_app, args)


def execute_json(db: Path, args: list[str]) -> dict[str, Any]:
    """``cj-run execute --json``; returns the summary object."""
    result = run(["execute", "--db", str(db), "--json", *args])
    assert result.exit_code in (0, 1), result.output
    data: dict[str, Any] = json.loads(result.stdout)
    return data


def register_example_anchors(db: Path, assignment: str = "phones") -> None:
    result = anchors(
        [
            "register",
            str(ANCHORS),
            "--assignment-id",
            assignment,
            "--grade-scale",
            "eng5",
            "--instructions",
            str(EXAMPLES / "assignment" / "instructions.md"),
            "--student-prompt",
            str(EXAMPLES / "assignment" / "student_prompt.md"),
            "--rubric",
            str(EXAMPLES / "assignment" / "rubric.md"),
            "--db",
            str(db),
        ]
    )
    assert result.exit_code == 0, result.output


def query(db: Path, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    with sqlite3.connect(db) as conn:
        return list(conn.execute(sql, params))


def dump_tables(db: Path) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of every table (to prove a refused command changed nothing)."""
    if not db.exists():
        return {}
    with sqlite3.connect(db) as conn:
        tables = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")]
        return {t: sorted(conn.execute(f"SELECT * FROM {t}"), key=repr) for t in tables}


def write_profile(path: Path, settings: dict[str, Any], judge: dict[str, Any]) -> Path:
    """A CJ profile YAML with these settings and an inline judge."""
    import yaml

    path.write_text(
        yaml.safe_dump({"name": path.stem, "settings": settings, "judge": judge}),
        encoding="utf-8",
    )
    return path
