"""A real model in the loop (issue 12 item 10): `cj-run execute` on the LOWER5 example
against llama.cpp's OpenAI-compatible server (`python -m llama_cpp.server`) serving
SmolLM2-135M-Instruct (Q4_1), one call at a time, with a small budget.

It checks plumbing, not quality: at least 90% of the requests sent are answered (the judge
profile declares the `json_object` form llama.cpp's server takes, so no request is spent
learning that it refuses `json_schema`; the budget of 16 asks 15 comparisons and leaves a
call for a retry), and the tokens stored are exactly the ``usage`` the server reported,
read by a recording proxy between the runner and the server. Start the server with
``bash .ci/services.d/llama.sh start`` (`.ci/run` does) and export the
``CJ_TEST_LLAMA_URL`` it prints; without it the tier is skipped. What it measured is
written to stdout (``pytest -s``) and docs/judges.md.
"""

from __future__ import annotations

import json
import os
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.cli.helpers import LOWER5, query, run

LLAMA_URL = os.environ.get("CJ_TEST_LLAMA_URL", "")
BUDGET = 16

pytestmark = [
    pytest.mark.llama,
    pytest.mark.skipif(
        not LLAMA_URL,
        reason="CJ_TEST_LLAMA_URL is not set: start llama.cpp's server with "
        "`CJ_CI_LLAMA=1 bash .ci/services.d/llama.sh start` (needs the llama-cpp-python wheel)",
    ),
]


class _Proxy(ThreadingHTTPServer):
    daemon_threads = True
    upstream: str
    exchanges: list[dict[str, Any]]
    lock: threading.Lock


class _Forward(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Proxy

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet."""

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("content-length") or 0))
        target = self.server.upstream + self.path.removeprefix("/v1")
        request = urllib.request.Request(
            target, data=body, headers={"content-type": "application/json"}, method="POST"
        )
        started = time.monotonic()
        try:
            with urllib.request.urlopen(request, timeout=600) as answer:
                status, payload = answer.status, answer.read()
        except urllib.error.HTTPError as error:
            status, payload = error.code, error.read()
        seconds = time.monotonic() - started
        try:
            parsed = json.loads(payload)
        except ValueError:
            parsed = None
        with self.server.lock:
            self.server.exchanges.append(
                {"request": json.loads(body), "status": status, "body": parsed, "s": seconds}
            )
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)


@pytest.fixture
def proxy() -> Iterator[_Proxy]:
    server = _Proxy(("127.0.0.1", 0), _Forward)
    server.upstream = LLAMA_URL.rstrip("/")
    server.exchanges = []
    server.lock = threading.Lock()
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    yield server
    server.shutdown()
    thread.join()
    server.server_close()


def test_lower5_against_llama_cpp_with_smollm2(tmp_path: Path, proxy: _Proxy) -> None:
    judge = tmp_path / "smollm2.yaml"
    judge.write_text(
        yaml.safe_dump(
            {
                "kind": "openai_compatible",
                "name": "llama-cpp-smollm2",
                "model": "smollm2",
                # llama.cpp's server takes `json_object` + `schema` (and answers 500 to
                # `json_schema`): declared, so no request is spent learning it
                "structured_output": "json_object",
                "base_url": f"http://127.0.0.1:{proxy.server_address[1]}/v1",
                # a bounded answer (the json_object form caps the justification at
                # JUSTIFICATION_MAX_CHARS = 600 characters) is at most ~180 tokens
                "max_tokens": 256,
                "max_tokens_ceiling": 512,
                "timeout_s": 300,
            }
        ),
        encoding="utf-8",
    )
    db = tmp_path / "cj.db"
    started = time.monotonic()
    result = run(
        [
            "execute",
            "--db",
            str(db),
            "--json",
            "--inventory",
            str(LOWER5),
            "--judge",
            str(judge),
            "--max-comparisons",
            str(BUDGET),
            "--set",
            "MAX_CONCURRENT_REQUESTS=1",
            "--set",
            "USE_ANCHORS=false",
            "--set",
            "RETRY_BASE_DELAY_S=0.01",
            "--set",
            "SEED=11",  # the same pairs every run: the model answers deterministically
        ]
    )
    wall = time.monotonic() - started
    assert result.exit_code in (0, 1), result.output
    summary = json.loads(result.stdout)

    sent = summary["calls_sent"]
    answered = summary["successful_comparisons"]
    asked = answered + summary["failed_comparisons"]
    usage = [e["body"].get("usage") for e in proxy.exchanges if isinstance(e["body"], dict)]
    usage = [u for u in usage if isinstance(u, dict)]
    served_in = sum(int(u.get("prompt_tokens", 0)) for u in usage)
    served_out = sum(int(u.get("completion_tokens", 0)) for u in usage)
    stored = query(db, "SELECT sum(tokens_in), sum(tokens_out) FROM comparisons")[0]
    (answered_calls,) = query(
        db, "SELECT COUNT(*) FROM comparisons WHERE status = 'success' AND call_no IS NOT NULL"
    )[0]
    seconds = [e["s"] for e in proxy.exchanges if e["status"] == 200]
    measured = {
        "calls_sent": sent,
        "requests_at_server": len(proxy.exchanges),
        "comparisons": asked,
        "answered": answered,
        "answered_share": round(answered / asked, 3) if asked else None,
        "requests_answered": answered_calls,
        "requests_answered_share": round(answered_calls / sent, 3) if sent else None,
        "tokens_served": [served_in, served_out],
        "tokens_stored": list(stored),
        "seconds_per_call": round(sum(seconds) / len(seconds), 2) if seconds else None,
        "a_share": summary.get("position_a_share"),
        "status": summary["status"],
        "stop_reason": summary["stop_reason"],
        "errors": summary["attempt_errors"],
        "wall_s": round(wall, 1),
        "judge_health": summary["judge_health"],
    }
    print("\nllama.cpp tier:", json.dumps(measured))

    assert 0 < sent <= BUDGET
    assert len(proxy.exchanges) == sent, measured  # the server saw each call once
    assert summary["status"] == "COMPLETED", measured
    # >= 90% of the requests sent were answered (and so of the comparisons asked)
    assert answered_calls >= 0.9 * sent, measured
    assert answered >= 0.9 * asked, measured
    # the form is declared: no request learns what the server refuses
    assert "unsupported" not in summary["attempt_errors"], measured
    # every token the server reported is stored, and no other
    assert [served_in, served_out] == list(stored), measured
    assert summary["tokens_in"] == served_in and summary["tokens_out"] == served_out
    # a 135M model answers by position: the judge-health warning must say so
    assert summary["judge_health"]["signal"] is False, measured
