"""Help text renders cleanly with the installed typer; `cj-run list` never cuts ids."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Callable
from pathlib import Path

import pytest
from typer.testing import Result

from tests.cli.helpers import LOWER5, execute_json, report, run

LONG_NAME = "autumn-term-year-9-argumentative-essays-second-marking-round"


@pytest.mark.parametrize(
    ("invoke", "args"),
    [
        (run, ["resume", "--help"]),
        (run, ["execute", "--help"]),
        (run, ["list", "--help"]),
        (report, ["comparisons", "--help"]),
    ],
)
def test_help_has_no_type_tags_on_flags_and_plain_argument_names(
    invoke: Callable[[list[str]], Result], args: list[str]
) -> None:
    result = invoke(args)
    assert result.exit_code == 0
    assert "<bool>" not in result.output
    assert "{batch}" not in result.output and "{inventory}" not in result.output
    assert "--help" in result.output


def test_argument_usage_reads_batch() -> None:
    result = run(["resume", "--help"])
    assert "[OPTIONS] BATCH" in result.output


def test_help_explains_cj_profiles_and_judge_profiles() -> None:
    text = " ".join(run(["--help"]).output.split())
    assert "CJ profile (--profile" in text
    assert "judge profile (--judge" in text
    assert "--judge overrides the CJ profile's judge" in text


def test_list_never_cuts_ids_or_names(tmp_path: Path) -> None:
    db = tmp_path / "cj.db"
    summary = execute_json(
        db,
        [
            "--inventory",
            str(LOWER5),
            "--profile",
            "mock_lower5",
            "--batch-name",
            LONG_NAME,
            "--max-comparisons",
            "10",
        ],
    )
    table = run(["list", "--db", str(db)])  # not a terminal: 80 columns
    assert table.exit_code == 0
    assert summary["batch_id"] in table.output
    assert LONG_NAME in table.output
    rows = list(
        csv.DictReader(io.StringIO(run(["list", "--db", str(db), "--format", "csv"]).stdout))
    )
    assert [(r["batch_id"], r["name"]) for r in rows] == [(summary["batch_id"], LONG_NAME)]
    listed = json.loads(run(["list", "--db", str(db), "--format", "json"]).stdout)
    assert listed[0]["batch_id"] == summary["batch_id"]


def test_format_json_is_the_summary_of_json_and_errors_are_json_too(tmp_path: Path) -> None:
    db = tmp_path / "cj.db"
    args = ["--inventory", str(LOWER5), "--profile", "mock_lower5", "--max-comparisons", "10"]
    by_format = run(["execute", "--db", str(db), *args, "--format", "json"])
    by_alias = run(["execute", "--db", str(db), *args, "--json"])
    assert by_format.exit_code == by_alias.exit_code == 0
    assert list(json.loads(by_format.stdout)) == list(json.loads(by_alias.stdout))
    for invoke, argv in (
        (run, ["resume", "nope", "--db", str(db), "--format", "json"]),
        (run, ["resume", "nope", "--db", str(db), "--json"]),
        (run, ["list", "--db", str(tmp_path / "missing.db"), "--format", "json"]),
        (report, ["ranking", "nope", "--db", str(db), "--format", "json"]),
        (report, ["comparisons", "nope", "--db", str(db), "--format", "jsonl"]),
    ):
        result = invoke(argv)
        assert result.exit_code == 2, argv
        error = json.loads(result.stdout)
        assert error["exit_code"] == 2 and error["error"], argv
        assert result.stderr.startswith("error: ")
    plain = run(["resume", "nope", "--db", str(db)])  # the JSON choice does not linger
    assert plain.exit_code == 2 and plain.stdout == ""
