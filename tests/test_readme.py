"""The README's commands work as written, and the settings reference is complete."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cj_runner.cli.anchors import app as anchors_app
from cj_runner.cli.report import app as report_app
from cj_runner.cli.run import app as run_app
from cj_runner.config import setting_names, settings_markdown_table

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
