"""Every path that builds a judge closes its HTTP clients, also when the run cannot start.

A real configuration that builds a judge and then fails: a panel profile with
``batch: true`` (two OpenAI-compatible judges; a panel has no provider batch API, so
``build_batch_api`` raises ConfigError after the judges' clients were opened), and a panel
whose second judge's key is not set. Each HTTP client our code opens is recorded (a
subclass of httpx's own client put in its place; our code is not patched) and must be
closed when the command ends: ``cj-run execute``, ``cj-run resume``, ``cj-run worker``
(one line, exit 2) and ``build_judge`` itself. On a real SQLite file.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest

from cj_runner.errors import ConfigError
from cj_runner.judges.config import JudgeConfig
from cj_runner.judges.registry import build_judge
from tests.cli.helpers import REGULAR24, query, run, write_profile
from tests.cli.test_check_before_spending import closed_port_url

KEY_ENV = "CJ_TEST_CLOSED_KEY"
UNSET_ENV = "CJ_TEST_CLOSED_UNSET"  # never set
SETTINGS = {"MAX_PAIRWISE_COMPARISONS": 24, "USE_ANCHORS": False, "SEED": 3}
PANEL_ERROR = "error: judge pb: batch: true needs an OpenAI or Anthropic judge"


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


def batch_panel() -> dict[str, Any]:
    """Two OpenAI-compatible judges as a panel in batch-API mode."""
    return {
        "kind": "openai_compatible",
        "name": "pb",
        "batch": True,
        "panel": [_member("a"), _member("b")],
    }


def _one_error_line(stderr: str) -> str:
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1, stderr
    assert "Traceback" not in stderr
    return lines[0]


def _all_closed(clients: list[httpx.AsyncClient]) -> None:
    assert clients, "no judge client was built: the configuration did not reach the judge"
    assert [c.is_closed for c in clients] == [True] * len(clients)


def test_execute_closes_the_judge_and_writes_nothing(
    tmp_path: Path, clients: list[httpx.AsyncClient]
) -> None:
    profile = write_profile(tmp_path / "p.yaml", SETTINGS, batch_panel())
    db = tmp_path / "cj.db"
    result = run(["execute", "-i", str(REGULAR24), "--profile", str(profile), "--db", str(db)])
    assert result.exit_code == 2, result.output
    assert _one_error_line(result.stderr) == PANEL_ERROR
    _all_closed(clients)
    # refused before the database is opened: no batch left CREATED that cannot run
    assert not db.exists()


def _queued(tmp_path: Path) -> tuple[Path, str]:
    """A cohort of one class queued with the batch-mode panel (enqueue builds no judge)."""
    cohort_csv = tmp_path / "cohort.csv"
    cohort_csv.write_text(f"class_id,inventory\nall,{REGULAR24}\n", encoding="utf-8")
    profile = write_profile(tmp_path / "p.yaml", SETTINGS, batch_panel())
    db = tmp_path / "cj.db"
    queued = run(
        ["enqueue", str(cohort_csv), "--cohort", "y7", "--profile", str(profile), "--db", str(db)]
    )
    assert queued.exit_code == 0, queued.output
    ((batch_id,),) = query(db, "SELECT batch_id FROM cohort_queue")
    return db, batch_id


def test_resume_closes_the_judge(tmp_path: Path, clients: list[httpx.AsyncClient]) -> None:
    db, batch_id = _queued(tmp_path)
    result = run(["resume", batch_id, "--db", str(db)])
    assert result.exit_code == 2, result.output
    assert _one_error_line(result.stderr) == PANEL_ERROR
    _all_closed(clients)
    assert query(db, "SELECT calls_sent FROM batch_state") == [(0,)]


def test_worker_closes_the_judge_and_gives_the_batch_back(
    tmp_path: Path, clients: list[httpx.AsyncClient]
) -> None:
    db, batch_id = _queued(tmp_path)
    result = run(["worker", "--db", str(db)])
    assert result.exit_code == 2, result.output
    # the worker's own progress lines, then the one error line
    assert result.stderr.splitlines()[1:] == [f"y7/all ({batch_id}): claimed", PANEL_ERROR]
    assert "Traceback" not in result.stderr
    _all_closed(clients)
    assert query(db, "SELECT claimed_by FROM cohort_queue") == [(None,)]
    assert query(db, "SELECT calls_sent FROM batch_state") == [(0,)]


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
