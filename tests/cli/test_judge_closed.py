"""Every path that builds a judge closes its HTTP clients, also when the run cannot start.

Each HTTP client our code opens is recorded (a subclass of httpx's own client put in its
place; our code is not patched) and must be closed when the command ends. A judge and its
provider batch API opened by ``open_judge`` are closed when the body raises; a panel whose
second judge's key is not set leaves no client open (``build_judge``, ``cj-run execute``);
a batch stored with a panel in batch-API mode (refused by profile validation today, see
tests/cli/test_panel_batch.py) is refused by ``cj-run resume`` and ``cj-run worker`` with
one line, exit 2, and leaves no client open. On a real SQLite file.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import httpx
import pytest

from cj_runner.errors import ConfigError
from cj_runner.judges.config import PANEL_BATCH_REFUSED, JudgeConfig
from cj_runner.judges.registry import build_judge, open_judge
from tests.cli.helpers import REGULAR24, dump_tables, query, run, write_profile
from tests.cli.test_check_before_spending import closed_port_url

KEY_ENV = "CJ_TEST_CLOSED_KEY"
UNSET_ENV = "CJ_TEST_CLOSED_UNSET"  # never set
SETTINGS = {"MAX_PAIRWISE_COMPARISONS": 24, "USE_ANCHORS": False, "SEED": 3}


@pytest.fixture
def clients(monkeypatch: pytest.MonkeyPatch) -> list[httpx.AsyncClient]:
    """Every httpx.AsyncClient built while the test runs."""
    opened: list[httpx.AsyncClient] = []

    class Recorded(httpx.AsyncClient):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            opened.append(self)

    monkeypatch.setattr(httpx, "AsyncClient", Recorded)
    monkeypatch.setenv(KEY_ENV, "sk-closed-test")
    monkeypatch.delenv(UNSET_ENV, raising=False)
    return opened


def _member(name: str, key_env: str = KEY_ENV) -> dict[str, Any]:
    return {
        "share": 0.5,
        "judge": {
            "kind": "openai_compatible",
            "name": name,
            "model": "m1",
            "base_url": closed_port_url(),  # never asked: the run stops before any call
            "api_key_env": key_env,
        },
    }


def panel(**extra: Any) -> dict[str, Any]:
    """Two OpenAI-compatible judges as a panel (``extra``: more fields of the panel)."""
    return {
        "kind": "openai_compatible",
        "name": "pb",
        "panel": [_member("a"), _member("b")],
        **extra,
    }


def _one_error_line(stderr: str) -> str:
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1, stderr
    assert "Traceback" not in stderr
    return lines[0]


def _all_closed(clients: list[httpx.AsyncClient]) -> None:
    assert [c.is_closed for c in clients] == [True] * len(clients)


async def test_open_judge_closes_the_judge_and_its_batch_api_when_the_body_raises(
    clients: list[httpx.AsyncClient],
) -> None:
    config = JudgeConfig.model_validate({**_member("solo")["judge"], "batch": True})
    with pytest.raises(RuntimeError, match="body failed"):
        async with open_judge(config) as (_judge, batch_api):
            assert batch_api is not None
            raise RuntimeError("body failed")
    assert len(clients) >= 2  # the judge's client and the batch API's
    _all_closed(clients)


def stored_batch_panel(tmp_path: Path) -> tuple[Path, str]:
    """A cohort of one class queued with a panel, its stored judge then set to batch-API
    mode: what a database written before the profile check holds."""
    cohort_csv = tmp_path / "cohort.csv"
    cohort_csv.write_text(f"class_id,inventory\nall,{REGULAR24}\n", encoding="utf-8")
    profile = write_profile(tmp_path / "p.yaml", SETTINGS, panel())
    db = tmp_path / "cj.db"
    queued = run(
        ["enqueue", str(cohort_csv), "--cohort", "y7", "--profile", str(profile), "--db", str(db)]
    )
    assert queued.exit_code == 0, queued.output
    ((batch_id,),) = query(db, "SELECT batch_id FROM cohort_queue")
    with sqlite3.connect(db) as conn:
        conn.execute(
            "UPDATE batches SET judge_json = json_set(judge_json, '$.batch', json('true'))"
        )
    return db, batch_id


def stored_error(batch_id: str) -> str:
    return (
        f"error: invalid judge profile batch {batch_id}: judge: field 'batch': "
        f"{PANEL_BATCH_REFUSED}"
    )


def test_resume_of_a_stored_batch_mode_panel_is_refused(
    tmp_path: Path, clients: list[httpx.AsyncClient]
) -> None:
    db, batch_id = stored_batch_panel(tmp_path)
    before = dump_tables(db)
    result = run(["resume", batch_id, "--db", str(db)])
    assert result.exit_code == 2, result.output
    assert _one_error_line(result.stderr) == stored_error(batch_id)
    _all_closed(clients)
    assert dump_tables(db) == before


def test_worker_gives_a_stored_batch_mode_panel_back(
    tmp_path: Path, clients: list[httpx.AsyncClient]
) -> None:
    db, batch_id = stored_batch_panel(tmp_path)
    result = run(["worker", "--db", str(db)])
    assert result.exit_code == 2, result.output
    # the worker's own progress lines, then the one error line
    assert result.stderr.splitlines()[1:] == [
        f"y7/all ({batch_id}): claimed",
        stored_error(batch_id),
    ]
    assert "Traceback" not in result.stderr
    _all_closed(clients)
    assert query(db, "SELECT claimed_by FROM cohort_queue") == [(None,)]
    assert query(
        db,
        "SELECT calls_sent, status FROM batch_state JOIN batches ON id = batch_id",
    ) == [(0, "CREATED")]


def test_a_panel_whose_second_judge_has_no_key_leaves_no_client_open(
    clients: list[httpx.AsyncClient],
) -> None:
    config = JudgeConfig.model_validate(
        {
            "kind": "mock",
            "name": "p2",
            "panel": [_member("a"), _member("b", key_env=UNSET_ENV)],
        }
    )
    with pytest.raises(ConfigError, match=UNSET_ENV):
        build_judge(config)
    assert [c.is_closed for c in clients] == [True] * len(clients)


def test_a_panel_of_judges_is_checked_before_anything_is_written(
    tmp_path: Path, clients: list[httpx.AsyncClient]
) -> None:
    """``--judge A --judge B`` (a panel; its own kind is the mock's): B's key is not set.
    Refused before the database is opened, as a single judge's missing key is (the
    panel's judges were not checked before, and the batch was stored CREATED)."""
    paths = []
    for member in (_member("a"), _member("b", key_env=UNSET_ENV)):
        paths.append(write_judge(tmp_path / f"{member['judge']['name']}.yaml", member["judge"]))
    db = tmp_path / "cj.db"
    panel = ["--judge", str(paths[0]), "--judge", str(paths[1])]
    result = run(
        ["execute", "-i", str(REGULAR24), *panel, "--max-comparisons", "20", "--db", str(db)]
    )
    assert result.exit_code == 2, result.output
    assert _one_error_line(result.stderr) == (
        f"error: judge 'b' needs an API key in the environment variable {UNSET_ENV}, "
        "which is not set"
    )
    assert not db.exists()
    assert [c.is_closed for c in clients] == [True] * len(clients)


def write_judge(path: Path, config: dict[str, Any]) -> Path:
    """A judge profile YAML."""
    import yaml

    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    return path
