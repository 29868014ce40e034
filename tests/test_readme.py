"""The README's commands work as written, and the settings reference is complete."""

from __future__ import annotations

import csv
import io
import json
import re
import shlex
import sqlite3
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cj_runner.cli.anchors import app as anchors_app
from cj_runner.cli.report import app as report_app
from cj_runner.cli.run import app as run_app
from cj_runner.config import setting_names, settings_markdown_table
from cj_runner.core.bt import fit_bt

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text(encoding="utf-8")
SETTINGS_DOC = (ROOT / "docs" / "settings.md").read_text(encoding="utf-8")
APPS = {"cj-run": run_app, "cj-anchors": anchors_app, "cj-report": report_app}


def marked_command(marker: str) -> str:
    match = re.search(rf"<!-- {marker} -->\s*```bash\n(.+?)\n```", README, re.DOTALL)
    assert match, f"README has no {marker}"
    return match.group(1).strip()


def test_readme_has_the_two_commands_and_ci_runs_them() -> None:
    example = marked_command("example-command")
    tests = marked_command("test-command")
    assert example.startswith("python3 -m venv .venv && . .venv/bin/activate && pip install -e .")
    assert tests.endswith("pytest -q")
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    assert 'pip install --quiet -e ".[dev]"' in ci
    assert "\npytest -q\n" in ci
    for step in example.split(" && ")[3:]:
        first = shlex.split(step)[0]
        assert first in APPS
        # CI runs the same cj-* steps (it may wrap long lines)
        assert " ".join(shlex.split(step)[:2]) in ci.replace("\\\n", " ")


def test_readme_example_command_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(ROOT)
    monkeypatch.setenv("CJ_DB", str(tmp_path / "readme.db"))
    runner = CliRunner()
    steps = marked_command("example-command").split(" && ")[3:]
    for step in steps:
        argv = shlex.split(step)
        result = runner.invoke(APPS[argv[0]], argv[1:], catch_exceptions=False)
        assert result.exit_code == 0, (step, result.output)
    assert "COMPLETED" in result.output
    assert "grades" in result.output
    _the_example_exports_one_row_per_attempt_in_bradleyterry2_layout(tmp_path / "readme.db")


def _the_example_exports_one_row_per_attempt_in_bradleyterry2_layout(db: Path) -> None:
    """`cj-report comparisons --format csv` of the example: one row per judge call; the
    columns essay_a, essay_b, win_a, win_b are BradleyTerry2's id1, id2, win1, win2 with
    no join, and fitting them with the project's BT gives the batch's scores."""
    runner = CliRunner()
    listing = runner.invoke(run_app, ["list", "--format", "json"], catch_exceptions=False)
    batch_id = json.loads(listing.stdout)[0]["batch_id"]
    out = runner.invoke(report_app, ["comparisons", batch_id], catch_exceptions=False)
    assert out.exit_code == 0, out.output
    rows = list(csv.DictReader(io.StringIO(out.stdout)))
    with sqlite3.connect(db) as con:
        calls = con.execute(
            "SELECT calls_sent FROM batch_state WHERE batch_id = ?", (batch_id,)
        ).fetchone()[0]
        stored = con.execute(
            "SELECT COUNT(*) FROM comparisons WHERE batch_id = ?", (batch_id,)
        ).fetchone()[0]
        settings = json.loads(
            con.execute("SELECT settings_json FROM batches WHERE id = ?", (batch_id,)).fetchone()[0]
        )
    assert len(rows) == stored  # one row per attempt
    # every call sent; waves planned ahead (spec §5a) may leave a comparison cancelled,
    # never sent, when retries used the last of the budget first
    assert sum(1 for r in rows if r["status"] != "cancelled") == calls
    assert len({(r["slot"], r["attempt"]) for r in rows}) == len(rows)
    assert any(r["status"] != "success" for r in rows)  # failed attempts are rows too
    won = [r for r in rows if r["status"] == "success"]
    # BradleyTerry2: BTm(cbind(win_a, win_b), essay_a, essay_b): the columns as they are
    layout = [(r["essay_a"], r["essay_b"], int(r["win_a"]), int(r["win_b"])) for r in won]
    assert all(w1 + w2 == 1 for _, _, w1, w2 in layout)
    assert all(r["winner"] == (r["essay_a"] if r["win_a"] == "1" else r["essay_b"]) for r in won)
    ranking = runner.invoke(
        report_app, ["ranking", batch_id, "--format", "json"], catch_exceptions=False
    )
    rows_json = json.loads(ranking.stdout)["rows"]
    scores = {row["essay_id"]: row["mle_score"] for row in rows_json}  # the MLE fields
    ids = sorted(scores)
    index = {essay: i for i, essay in enumerate(ids)}
    fit = fit_bt(
        len(ids),
        [index[a] for a, _, _, _ in layout],
        [index[b] for _, b, _, _ in layout],
        [w1 == 1 for _, _, w1, _ in layout],
        order_effect=bool(settings["FIT_ORDER_EFFECT"]),
        prior_precision=float(settings["BT_PRIOR_PRECISION"]),
    )
    for essay, i in index.items():
        assert fit.scores[i] == pytest.approx(scores[essay], abs=1e-4), essay


def test_every_setting_is_documented_in_docs_settings() -> None:
    for name in setting_names():
        assert f"`{name}`" in SETTINGS_DOC, name
    assert settings_markdown_table().strip() in SETTINGS_DOC


def test_the_readme_is_a_short_guide_that_links_every_reference_page() -> None:
    assert len(README.splitlines()) <= 300
    for page in sorted((ROOT / "docs").glob("*.md")):
        if page.name != "README.md":
            assert f"(docs/{page.name}" in README, page.name
        assert f"({page.name})" in (ROOT / "docs" / "README.md").read_text(encoding="utf-8") or (
            page.name == "README.md"
        ), page.name
