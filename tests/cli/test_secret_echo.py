"""A planted API key, echoed by a careless server in every way it can: in error bodies
(500, 429, 400), in refusals and in the justifications of good answers; verbatim,
upper-cased, lower-cased, base64, URL-safe base64, URL-encoded, after ``Bearer``, and
straddling the 300-character cut of an error message. Afterwards no 8-character substring
of the key (in any case), and no base64 form of it, is found anywhere: the database file
and its WAL, every report in every format, the HTML report, the dry-run envelope, the
batch list and everything the commands printed.
"""

from __future__ import annotations

import base64
import json
import uuid
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.cli.helpers import LOWER5, report, run
from tests.hostile_server import (
    HostileServer,
    Reply,
    answer_body,
    error_body,
    key_echoes,
    winner_of,
)

KEY = f"sk-PLANTED-{uuid.uuid4().hex}{uuid.uuid4().hex[:8]}"


def leaks(data: bytes) -> list[str]:
    """The 8-character pieces of the key (any case) and its base64 forms found in ``data``."""
    text = data.decode("utf-8", errors="replace")
    folded = text.casefold()
    found = {KEY[i : i + 8] for i in range(len(KEY) - 7) if KEY[i : i + 8].casefold() in folded}
    raw = KEY.encode()
    for offset in range(3):
        for encode in (base64.b64encode, base64.urlsafe_b64encode):
            middle = encode(b"\0" * offset + raw).decode()[4:-4]
            found |= {
                middle[i : i + 12] for i in range(len(middle) - 11) if middle[i : i + 12] in text
            }
    return sorted(found)


def script(number: int, request: dict[str, Any]) -> Reply | None:
    echoes = key_echoes(KEY)
    kind = number % 10
    if kind == 2:
        return Reply(status=500, body=error_body(f"internal error for {echoes}"))
    if kind == 4:  # the key straddles the 300-character cut of error messages
        return Reply(status=503, body=error_body("x" * 290 + KEY + " " + echoes))
    if kind == 6:
        return Reply(status=429, headers={"Retry-After": "0"}, body=error_body(echoes))
    if kind == 8:
        return Reply(body=answer_body(winner=winner_of(request), justification=echoes))
    if number == 13:  # an error of this call only (too long): not retried, the batch goes on
        return Reply(
            status=400,
            body=error_body(f"This model's maximum context length is 8192 tokens; {echoes}"),
        )
    return None


def test_no_piece_of_a_planted_key_is_stored_or_shown(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PLANTED_KEY", KEY)
    db = tmp_path / "cj.db"
    outputs: list[bytes] = []
    with HostileServer(script) as server:
        judge = {
            "kind": "openai_compatible",
            "name": "careless",
            "model": "careless-model",
            "base_url": server.url,
            "api_key_env": "PLANTED_KEY",
            "timeout_s": 30,
        }
        path = tmp_path / "judge.yaml"
        path.write_text(yaml.safe_dump(judge), encoding="utf-8")
        common = ["-i", str(LOWER5), "--profile", "mock_lower5", "--judge", str(path)]
        fast = ["--set", "RETRY_BASE_DELAY_S=0", "--set", "RETRY_MAX_DELAY_S=0"]
        result = run(["execute", *common, "--db", str(db), "--json", "--batch-name", "b", *fast])
        assert result.exit_code == 0, result.output
        outputs.append(result.output.encode())
        dry = run(["dry-run", *common, "--db", str(db), "-o", str(tmp_path / "envelope")])
        assert dry.exit_code == 0, dry.output
        outputs.append(dry.output.encode())
    # the server did receive the key, and echoed it
    assert all(h.get("authorization") == f"Bearer {KEY}" for h in server.headers)
    summary = json.loads(result.stdout)
    assert summary["attempt_errors"].get("server_error", 0) > 0
    listed = run(["list", "--db", str(db)])
    outputs.append(listed.output.encode())
    for kind in ("summary", "fairness", "coverage", "ranking", "grades"):
        for fmt in ("table", "json", "csv"):
            shown = report([kind, "b", "--format", fmt, "--db", str(db)])
            assert shown.exit_code in (0, 2), shown.output  # grades: no anchors, exit 2
            outputs.append(shown.output.encode())
    html = report(["html", "b", "--db", str(db), "-o", str(tmp_path / "report.html")])
    assert html.exit_code == 0, html.output
    files = [p for p in tmp_path.rglob("*") if p.is_file() and p.name != "judge.yaml"]
    assert db in files and (tmp_path / "report.html") in files
    assert any(p.parent.name == "envelope" for p in files)
    found = {str(p): leaks(p.read_bytes()) for p in files}
    found |= {f"output {i}": leaks(data) for i, data in enumerate(outputs)}
    assert {where: pieces for where, pieces in found.items() if pieces} == {}
    # the scrubbed texts are there, marked
    with __import__("sqlite3").connect(db) as conn:
        texts = [r[0] or "" for r in conn.execute("SELECT justification FROM comparisons")]
        messages = [r[0] or "" for r in conn.execute("SELECT error_message FROM comparisons")]
    assert any("***" in t for t in texts) and any("***" in m for m in messages)
