"""A panel in batch-API mode is refused where the profile is read, before anything is stored.

The executor sends a panel's calls one at a time to its judges (``build_batch_api`` has no
batch API for a panel), so neither a panel's own ``batch: true`` nor a member's can be
honoured: the first used to pass profile validation and be refused only when the batch ran
(``cj-run enqueue`` queued such batches), the second was ignored and the calls billed at the
synchronous price. Both are refused by profile validation: one line naming the profile and
the field, exit 2, no database written or changed. Through ``cj-run`` on a real SQLite file.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from cj_runner.judges.config import PANEL_BATCH_REFUSED, JudgeConfig
from tests.cli.helpers import REGULAR24, dump_tables, query, run, write_profile
from tests.cli.test_check_before_spending import closed_port_url

KEY_ENV = "CJ_TEST_PANEL_BATCH_KEY"
SETTINGS = {"MAX_PAIRWISE_COMPARISONS": 24, "USE_ANCHORS": False, "SEED": 3}


@pytest.fixture(autouse=True)
def _key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(KEY_ENV, "sk-panel-batch-test")


def judge(name: str, **extra: Any) -> dict[str, Any]:
    """An OpenAI-compatible judge that is never asked (a closed port)."""
    return {
        "kind": "openai_compatible",
        "name": name,
        "model": "m1",
        "base_url": closed_port_url(),
        "api_key_env": KEY_ENV,
        **extra,
    }


def panel(*, batch: bool = False, member_batch: bool = False) -> dict[str, Any]:
    return {
        "kind": "openai_compatible",
        "name": "pb",
        **({"batch": True} if batch else {}),
        "panel": [
            {"share": 0.5, "judge": judge("a")},
            {"share": 0.5, "judge": judge("b", **({"batch": True} if member_batch else {}))},
        ],
    }


#: the panel's own batch: true, and one member's
CASES = [
    pytest.param(panel(batch=True), "batch", id="panel"),
    pytest.param(panel(member_batch=True), "panel.1.judge.batch", id="member"),
]


def one_line(stderr: str) -> str:
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1, stderr
    assert "Traceback" not in stderr
    return lines[0]


def refusal(source: str, field: str) -> str:
    return f"error: invalid judge profile {source}: field '{field}': {PANEL_BATCH_REFUSED}"


@pytest.mark.parametrize(("config", "field"), CASES)
def test_execute_refuses_it_before_the_database_is_opened(
    tmp_path: Path, config: dict[str, Any], field: str
) -> None:
    profile = write_profile(tmp_path / "p.yaml", SETTINGS, config)
    db = tmp_path / "cj.db"
    result = run(["execute", "-i", str(REGULAR24), "--profile", str(profile), "--db", str(db)])
    assert result.exit_code == 2, result.output
    assert one_line(result.stderr) == refusal(f"profile {profile}: judge", field)
    assert not db.exists()
    # plan reads the same profile: refused the same way
    planned = run(["plan", "-i", str(REGULAR24), "--profile", str(profile)])
    assert planned.exit_code == 2, planned.output
    assert one_line(planned.stderr) == refusal(f"profile {profile}: judge", field)


@pytest.mark.parametrize(("config", "field"), CASES)
def test_enqueue_refuses_it_and_the_queue_is_unchanged(
    tmp_path: Path, config: dict[str, Any], field: str
) -> None:
    cohort_csv = tmp_path / "cohort.csv"
    cohort_csv.write_text(f"class_id,inventory\nall,{REGULAR24}\n", encoding="utf-8")
    db = tmp_path / "cj.db"
    # a database with a cohort already queued (a panel without batch mode is fine)
    good = write_profile(tmp_path / "good.yaml", SETTINGS, panel())
    queued = run(
        ["enqueue", str(cohort_csv), "--cohort", "y6", "--profile", str(good), "--db", str(db)]
    )
    assert queued.exit_code == 0, queued.output
    before = dump_tables(db)
    assert len(before["cohort_queue"]) == 1
    profile = write_profile(tmp_path / "p.yaml", SETTINGS, config)
    result = run(
        ["enqueue", str(cohort_csv), "--cohort", "y7", "--profile", str(profile), "--db", str(db)]
    )
    assert result.exit_code == 2, result.output
    assert one_line(result.stderr) == refusal(f"profile {profile}: judge", field)
    assert dump_tables(db) == before
    assert query(db, "SELECT count(*) FROM batches") == [(1,)]


def test_judge_flags_are_refused_the_same_way(tmp_path: Path) -> None:
    """``--judge A --judge B`` makes a panel: with ``--batch-api``, or with a judge profile
    in batch mode, it is refused before the database is opened."""
    paths = {}
    for name, extra in (("a", {}), ("b", {}), ("bb", {"batch": True})):
        paths[name] = tmp_path / f"{name}.yaml"
        paths[name].write_text(yaml.safe_dump(judge(name, **extra)), encoding="utf-8")
    db = tmp_path / "cj.db"
    base = ["execute", "-i", str(REGULAR24), "--max-comparisons", "20", "--db", str(db)]
    flag = run([*base, "--judge", str(paths["a"]), "--judge", str(paths["b"]), "--batch-api"])
    assert flag.exit_code == 2, flag.output
    assert one_line(flag.stderr) == f"error: --batch-api: {PANEL_BATCH_REFUSED}"
    member = run([*base, "--judge", str(paths["a"]), "--judge", str(paths["bb"])])
    assert member.exit_code == 2, member.output
    assert one_line(member.stderr) == refusal("--judge", "panel.1.judge.batch")
    assert not db.exists()


def test_one_provider_judge_keeps_batch_mode_and_a_panel_without_it_validates() -> None:
    assert JudgeConfig.model_validate(judge("solo", batch=True)).batch is True
    checked = JudgeConfig.model_validate(panel())
    assert not checked.batch and not any(m.judge.batch for m in checked.panel)
