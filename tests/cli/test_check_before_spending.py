"""Check before spending: the judge's key variable and server are checked by `dry-run`
and `plan --check` (one free GET /models); a run whose first calls cannot connect stops at
once naming the URL; `--verbose` / `--log-file` write a per-call log without keys."""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from tests.cli.helpers import LOWER5, query, run, write_profile

KEY = "sk-planted-0123456789-SECRET"


class _Models(BaseHTTPRequestHandler):
    status = 200
    seen: list[dict[str, str]] = []  # noqa: RUF012

    def do_GET(self) -> None:
        type(self).seen.append(
            {"path": self.path, **{k.lower(): v for k, v in self.headers.items()}}
        )
        body = json.dumps({"data": [{"id": "m1"}, {"id": "m2"}]}).encode()
        if self.status != 200:
            body = json.dumps({"error": {"message": "invalid api key"}}).encode()
        self.send_response(self.status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_POST(self) -> None:
        self.send_response(500)
        self.end_headers()

    def log_message(self, *_: Any) -> None:
        pass


@pytest.fixture
def models_server() -> Iterator[tuple[str, type[_Models]]]:
    handler = type("Handler", (_Models,), {"seen": [], "status": 200})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/v1", handler
    finally:
        server.shutdown()
        server.server_close()


def closed_port_url() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}/v1"


def judge_profile(tmp_path: Path, base_url: str, key_env: str | None = "CJ_TEST_KEY") -> Path:
    path = tmp_path / "judge.yaml"
    lines = [
        "kind: openai_compatible",
        "name: testjudge",
        "model: m1",
        f"base_url: {base_url}",
        f"api_key_env: {key_env}" if key_env else "api_key_env: null",
        "timeout_s: 5",
    ]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def test_dry_run_refuses_a_missing_key_naming_the_variable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    result = run(
        ["dry-run", "--inventory", str(LOWER5), "--judge", "openai", "-o", str(tmp_path / "out")]
    )
    assert result.exit_code == 2
    assert "OPENAI_API_KEY" in result.output
    assert not (tmp_path / "out").exists()


def test_plan_check_reports_the_key_and_the_server_without_the_key(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, models_server: tuple[str, type[_Models]]
) -> None:
    url, handler = models_server
    monkeypatch.setenv("CJ_TEST_KEY", KEY)
    profile = judge_profile(tmp_path, url)
    result = run(["plan", "--inventory", str(LOWER5), "--judge", str(profile), "--check"])
    assert result.exit_code == 0, result.output
    assert "CJ_TEST_KEY is set" in result.output
    assert f"GET {url}/models answered 200" in result.output
    assert KEY not in result.output
    assert handler.seen == [handler.seen[0]] and handler.seen[0]["path"] == "/v1/models"
    assert handler.seen[0]["authorization"] == f"Bearer {KEY}"  # the key was sent, not shown
    as_json = run(
        ["plan", "--inventory", str(LOWER5), "--judge", str(profile), "--check", "--format", "json"]
    )
    assert any("answered 200" in line for line in json.loads(as_json.stdout)["judge_check"])


def test_a_refused_key_is_an_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, models_server: tuple[str, type[_Models]]
) -> None:
    url, handler = models_server
    handler.status = 401
    monkeypatch.setenv("CJ_TEST_KEY", KEY)
    profile = judge_profile(tmp_path, url)
    result = run(
        ["dry-run", "--inventory", str(LOWER5), "--judge", str(profile), "-o", str(tmp_path / "o")]
    )
    assert result.exit_code == 2
    assert "refused the key in CJ_TEST_KEY (HTTP 401" in result.output
    assert KEY not in result.output


def test_an_unreachable_server_is_named_by_the_check(tmp_path: Path) -> None:
    url = closed_port_url()
    profile = judge_profile(tmp_path, url, key_env=None)
    result = run(["plan", "--inventory", str(LOWER5), "--judge", str(profile), "--check"])
    assert result.exit_code == 2
    assert f"cannot reach {url}/models" in " ".join(result.output.split())


def test_a_run_that_cannot_connect_stops_at_once(tmp_path: Path) -> None:
    url = closed_port_url()
    judge = judge_profile(tmp_path, url, key_env=None)
    profile = write_profile(
        tmp_path / "cj.yaml",
        {
            "MAX_PAIRWISE_COMPARISONS": 40,
            "MAX_CONCURRENT_REQUESTS": 2,
            "RETRY_BASE_DELAY_S": 0,
            "RETRY_MAX_DELAY_S": 0,
        },
        {"kind": "mock"},
    )
    db = tmp_path / "cj.db"
    log = tmp_path / "calls.log"
    result = run(
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
            "--log-file",
            str(log),
        ]
    )
    assert result.exit_code == 2, result.output
    text = " ".join(result.output.split())
    assert f"cannot reach the judge at {url}/chat/completions" in text
    assert "connection failed" in text
    ((status, sent),) = query(
        db, "SELECT b.status, s.calls_sent FROM batches b JOIN batch_state s ON s.batch_id = b.id"
    )
    assert status == "INTERRUPTED"
    assert sent < 10  # not the whole budget of 40
    lines = log.read_text(encoding="utf-8").splitlines()
    calls = [line for line in lines if " slot=" in line]
    assert calls and all("kind=connection" in line for line in calls)


def test_log_file_has_one_line_per_call_and_never_the_key(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    db = tmp_path / "cj.db"
    log = tmp_path / "calls.log"
    result = run(
        [
            "execute",
            "--inventory",
            str(LOWER5),
            "--profile",
            "mock_lower5",
            "--db",
            str(db),
            "--log-file",
            str(log),
            "--quiet",
        ]
    )
    assert result.exit_code == 0, result.output
    calls = [line for line in log.read_text(encoding="utf-8").splitlines() if " slot=" in line]
    ((sent,),) = query(db, "SELECT calls_sent FROM batch_state")
    assert len(calls) == sent == 40
    assert all(" status=success " in line and " attempt=1 " in line for line in calls)
    assert KEY not in log.read_text(encoding="utf-8")


def panel_profile(tmp_path: Path, base_url: str) -> Path:
    """A panel of two OpenAI-compatible judges with their own key variables."""
    path = tmp_path / "panel.yaml"
    members = []
    for name, key_env, model in (("first", "CJ_TEST_KEY", "m1"), ("second", "CJ_TEST_KEY2", "m2")):
        members += [
            "  - judge:",
            "      kind: openai_compatible",
            f"      name: {name}",
            f"      model: {model}",
            f"      base_url: {base_url}",
            f"      api_key_env: {key_env}",
            "      timeout_s: 5",
        ]
    path.write_text("kind: mock\nname: two-models\npanel:\n" + "\n".join(members) + "\n")
    return path


def test_dry_run_and_plan_check_every_member_of_a_panel(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, models_server: tuple[str, type[_Models]]
) -> None:
    url, handler = models_server
    profile = panel_profile(tmp_path, url)
    monkeypatch.setenv("CJ_TEST_KEY", KEY)
    monkeypatch.delenv("CJ_TEST_KEY2", raising=False)
    out = tmp_path / "out"
    result = run(["dry-run", "--inventory", str(LOWER5), "--judge", str(profile), "-o", str(out)])
    assert result.exit_code == 2  # the second member's key is missing: nothing written
    assert "CJ_TEST_KEY2" in result.output and "second" in result.output
    assert "Traceback" not in result.output and not out.exists()
    monkeypatch.setenv("CJ_TEST_KEY2", KEY + "-2")
    handler.seen.clear()
    result = run(["plan", "--inventory", str(LOWER5), "--judge", str(profile), "--check"])
    assert result.exit_code == 0, result.output
    output = " ".join(result.output.split())
    assert "first: key: CJ_TEST_KEY is set" in output
    assert "second: key: CJ_TEST_KEY2 is set" in output
    assert f"second: server: GET {url}/models answered 200" in output
    assert "second: warning: model 'm2'" not in output  # m2 is in the server's list
    assert KEY not in result.output
    assert [s["authorization"] for s in handler.seen] == [f"Bearer {KEY}", f"Bearer {KEY}-2"]
    result = run(["dry-run", "--inventory", str(LOWER5), "--judge", str(profile), "-o", str(out)])
    assert result.exit_code == 0, result.output
    assert len(handler.seen) == 4  # dry-run checked both members again
    envelope = json.loads((out / "envelope.json").read_text(encoding="utf-8"))
    assert [(m["judge"], m["model"]) for m in envelope["panel"]] == [
        ("first", "m1"),
        ("second", "m2"),
    ]
    assert {p["judge"] for p in envelope["first_wave"]} <= {"first", "second"}
    handler.status = 401  # a member whose key is refused stops the check, named
    result = run(["plan", "--inventory", str(LOWER5), "--judge", str(profile), "--check"])
    assert result.exit_code == 2
    assert "judge first:" in result.output and "HTTP 401" in result.output
