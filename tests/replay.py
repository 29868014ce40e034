"""A replay server for tests: realistic provider answers on 127.0.0.1 (port 0).

The answer shapes follow the official SDKs' types (openai 3.x ``ChatCompletion``,
``CompletionUsage`` with ``prompt_tokens_details.cached_tokens`` and
``completion_tokens_details.reasoning_tokens``, ``ChatCompletionMessage.tool_calls``;
anthropic 2.x ``Message`` with ``thinking``/``text``/``tool_use`` blocks, ``Usage`` with
``cache_read_input_tokens``, ``stop_reason``; the error envelopes ``{"error": {"message",
"type", "param", "code"}}`` and ``{"type": "error", "error": {"type", "message"},
"request_id"}``). A *case* is a function of the received request (and how many came
before it) returning the reply; the server records every request and the usage it
reported, so tests can compare what was billed with what the runner stored.
"""

from __future__ import annotations

import hashlib
import json
import re
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any


@dataclass(frozen=True)
class Received:
    """One request as the server saw it."""

    path: str
    headers: dict[str, str]
    body: dict[str, Any]
    index: int  # 0-based, in arrival order


@dataclass
class Reply:
    """What to answer: status, JSON (or text) body, headers; ``usage`` is what the reply
    bills (input, output, cached), recorded by the server."""

    status: int
    body: dict[str, Any] | str
    headers: dict[str, str] = field(default_factory=dict)
    usage: tuple[int, int, int] = (0, 0, 0)


Case = Callable[[Received], Reply]

_ESSAY = re.compile(r"<essay_([ab])>\n(.*?)\n</essay_\1>", re.DOTALL)


def verdict_for(received: Received) -> dict[str, Any]:
    """A verdict that depends on the essays only (the longer essay wins; ties: A)."""
    messages = received.body.get("messages", [])
    text = "\n".join(str(m.get("content", "")) for m in messages if isinstance(m, dict))
    essays = {m.group(1): m.group(2) for m in _ESSAY.finditer(text)}
    a, b = essays.get("a", ""), essays.get("b", "")
    winner = "A" if len(a) >= len(b) else "B"
    digest = hashlib.sha256((a + "|" + b).encode()).digest()
    return {
        "winner": winner,
        "confidence": 1 + digest[0] % 5,
        "justification": f"Essay {winner} develops its argument further.",
    }


# ---------------------------------------------------------------- OpenAI shapes


def openai_completion(
    received: Received,
    *,
    content: str | None = None,
    finish_reason: str = "stop",
    prompt_tokens: int = 900,
    completion_tokens: int = 60,
    cached_tokens: int = 0,
    reasoning_tokens: int = 0,
    tool_call: bool = False,
) -> Reply:
    """A ``chat.completion`` (``content`` defaults to the verdict's JSON)."""
    answer = json.dumps(verdict_for(received))
    message: dict[str, Any] = {
        "role": "assistant",
        "content": answer if content is None and not tool_call else content,
        "refusal": None,
        "annotations": [],
    }
    if tool_call:
        message["tool_calls"] = [
            {
                "id": "call_8NfWcVbHz2",
                "type": "function",
                "function": {"name": "record_verdict", "arguments": answer},
            }
        ]
    body = {
        "id": f"chatcmpl-replay{received.index}",
        "object": "chat.completion",
        "created": 1764460800,
        "model": received.body.get("model", "model"),
        "choices": [
            {"index": 0, "message": message, "logprobs": None, "finish_reason": finish_reason}
        ],
        "usage": {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
            "prompt_tokens_details": {"cached_tokens": cached_tokens, "audio_tokens": 0},
            "completion_tokens_details": {
                "reasoning_tokens": reasoning_tokens,
                "audio_tokens": 0,
                "accepted_prediction_tokens": 0,
                "rejected_prediction_tokens": 0,
            },
        },
        "service_tier": "default",
        "system_fingerprint": "fp_replay",
    }
    return Reply(200, body, usage=(prompt_tokens, completion_tokens, cached_tokens))


def openai_error(
    status: int,
    message: str,
    *,
    type: str = "invalid_request_error",
    param: str | None = None,
    code: str | None = None,
    headers: dict[str, str] | None = None,
) -> Reply:
    """An OpenAI error envelope."""
    body = {"error": {"message": message, "type": type, "param": param, "code": code}}
    return Reply(status, body, {"x-request-id": "req_replay", **(headers or {})})


# ---------------------------------------------------------------- Anthropic shapes


def anthropic_message(
    received: Received,
    *,
    blocks: list[dict[str, Any]] | None = None,
    stop_reason: str = "end_turn",
    input_tokens: int = 900,
    output_tokens: int = 60,
    cache_read: int = 0,
) -> Reply:
    """A ``message`` (``blocks`` default: the verdict as a tool call when tools were sent,
    else as JSON text)."""
    verdict = verdict_for(received)
    if blocks is None:
        if received.body.get("tools"):
            blocks = [
                {
                    "type": "tool_use",
                    "id": "toolu_01Replay",
                    "name": "record_verdict",
                    "input": verdict,
                }
            ]
            stop_reason = "tool_use"
        else:
            blocks = [{"type": "text", "text": json.dumps(verdict), "citations": None}]
    body = {
        "id": f"msg_01Replay{received.index}",
        "type": "message",
        "role": "assistant",
        "model": received.body.get("model", "model"),
        "content": blocks,
        "stop_reason": stop_reason,
        "stop_sequence": None,
        "usage": {
            "input_tokens": input_tokens - cache_read,
            "output_tokens": output_tokens,
            "cache_creation_input_tokens": 0,
            "cache_read_input_tokens": cache_read,
            "service_tier": "standard",
        },
    }
    return Reply(200, body, usage=(input_tokens, output_tokens, cache_read))


def anthropic_error(
    status: int, type: str, message: str, headers: dict[str, str] | None = None
) -> Reply:
    """An Anthropic error envelope."""
    body = {
        "type": "error",
        "error": {"type": type, "message": message},
        "request_id": "req_011Replay",
    }
    return Reply(status, body, {"request-id": "req_011Replay", **(headers or {})})


# ---------------------------------------------------------------- the server


class ReplayServer:
    """Serves ``case`` on ``127.0.0.1`` (port 0) until stopped; records every request."""

    def __init__(self, case: Case) -> None:
        self.case = case
        self.requests: list[Received] = []
        self.usage: list[tuple[int, int, int]] = []
        self._lock = threading.Lock()
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                length = int(self.headers.get("content-length") or 0)
                raw = self.rfile.read(length)
                try:
                    body = json.loads(raw)
                except ValueError:
                    body = {}
                with owner._lock:
                    received = Received(
                        path=self.path,
                        headers={k.lower(): v for k, v in self.headers.items()},
                        body=body if isinstance(body, dict) else {},
                        index=len(owner.requests),
                    )
                    owner.requests.append(received)
                reply = owner.case(received)
                with owner._lock:
                    owner.usage.append(reply.usage)
                data = (
                    reply.body.encode()
                    if isinstance(reply.body, str)
                    else json.dumps(reply.body).encode()
                )
                self.send_response(reply.status)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(data)))
                for name, value in reply.headers.items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(data)

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def root_url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    @property
    def url(self) -> str:
        """The OpenAI-style base URL (``.../v1``)."""
        return self.root_url + "/v1"

    def __enter__(self) -> ReplayServer:
        self._thread.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join()

    def billed(self, price_in: float, price_out: float, price_cached: float) -> float:
        """USD of every answer served, at the given per-million prices."""
        return (
            sum((i - c) * price_in + c * price_cached + o * price_out for i, o, c in self.usage)
            / 1e6
        )
